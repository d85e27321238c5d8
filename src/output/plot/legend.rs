//! Legends: swatches, and placement in a corner of the plot that hides no data (or beside it).

use super::*;

/// A legend entry's swatch, drawn 24 px wide from its left middle point: a band rectangle, a
/// line and a marker, each optional.
#[derive(Debug, Clone, Copy)]
pub(super) struct Swatch {
    pub(super) colour: RGBColor,
    pub(super) line: bool,
    pub(super) dashed: bool,
    pub(super) band: bool,
    pub(super) marker: u32,
}

/// Adds pixel samples along a polyline (in data coordinates) to `out`, relative to the plot area.
pub(super) fn sample_path<DB: DrawingBackend>(
    chart: &Chart<DB>,
    pts: &[(f64, f64)],
    out: &mut Vec<(i32, i32)>,
) {
    let (bx, by) = chart.plotting_area().get_base_pixel();
    let px: Vec<(i32, i32)> = pts
        .iter()
        .map(|p| {
            let (x, y) = chart.backend_coord(p);
            (x - bx, y - by)
        })
        .collect();
    if let Some(&first) = px.first() {
        out.push(first);
    }
    for w in px.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (dx, dy) = (f64::from(b.0 - a.0), f64::from(b.1 - a.1));
        let n = ((dx * dx + dy * dy).sqrt() / 3.0).ceil().clamp(1.0, 2000.0) as i32;
        for k in 1..=n {
            let t = f64::from(k) / f64::from(n);
            out.push((a.0 + (dx * t).round() as i32, a.1 + (dy * t).round() as i32));
        }
    }
}

impl Swatch {
    /// Draws the swatch with its left middle point at `(x, y)` of `area`.
    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (x, y): (i32, i32),
    ) -> Msg<()> {
        let c = self.colour;
        let fill = |on: bool, alpha: f64| {
            if on {
                c.mix(alpha).filled()
            } else {
                TRANSPARENT.filled()
            }
        };
        let line = if self.line {
            c.stroke_width(2)
        } else {
            TRANSPARENT.stroke_width(0)
        };
        // A dash longer than the swatch draws a solid line.
        let (dash, gap) = if self.dashed { (6, 4) } else { (100, 1) };
        let element = EmptyElement::at((x, y))
            + Rectangle::new([(0, -7), (24, 7)], fill(self.band, 0.2))
            + DashedPathElement::new(vec![(0, 0), (24, 0)], dash, gap, line)
            + Circle::new((12, 0), self.marker, fill(self.marker > 0, 1.0));
        area.draw(&element).or_msg()
    }
}

/// A legend: labelled swatches in a box, measured before the chart is laid out and drawn on the
/// panel's area (plotters' own legend is clipped to the plot, so it cannot sit beside it).
#[derive(Debug, Clone)]
pub(super) struct Legend {
    pub(super) entries: Vec<(String, Swatch)>,
    pub(super) font_size: f64,
    pub(super) w: i32,
    pub(super) h: i32,
    pub(super) margin: i32,
    pub(super) line_h: i32,
    /// Width of the swatch column.
    pub(super) swatch_w: i32,
    /// Gap between the plot and a legend outside it.
    pub(super) gap: i32,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
    /// Right of the plot, top-aligned with it.
    Outside,
}

impl Legend {
    /// The legend of these entries (those with an empty label are left out), or `None` when
    /// nothing is labelled.
    pub(super) fn measure<DB: DrawingBackend>(
        area: &DrawingArea<DB, Shift>,
        entries: Vec<(&str, Swatch)>,
        sz: &Sizes,
    ) -> Msg<Option<Self>> {
        let entries: Vec<(String, Swatch)> = entries
            .into_iter()
            .filter(|(l, _)| !l.trim().is_empty())
            .map(|(l, s)| (l.to_string(), s))
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let style = font(sz.legend);
        let mut text_w = 0;
        for (l, _) in &entries {
            text_w = text_w.max(area.estimate_text_size(l, &style).or_msg()?.0 as i32);
        }
        let margin = (sz.legend * 0.55).ceil() as i32;
        let line_h = (sz.legend * 1.3).ceil() as i32;
        let swatch_w = 34;
        Ok(Some(Legend {
            w: margin + swatch_w + text_w + margin,
            h: margin + entries.len() as i32 * line_h + margin,
            entries,
            font_size: sz.legend,
            margin,
            line_h,
            swatch_w,
            gap: (sz.tick * 0.8).ceil() as i32,
        }))
    }

    /// Top-left corner of the box, relative to the plot area of size `plot`.
    pub(super) fn origin(&self, placement: Placement, (pw, ph): (u32, u32)) -> (i32, i32) {
        let (pw, ph) = (pw as i32, ph as i32);
        let inset = 6;
        match placement {
            Placement::UpperRight => (pw - self.w - inset, inset),
            Placement::UpperLeft => (inset, inset),
            Placement::LowerRight => (pw - self.w - inset, ph - self.h - inset),
            Placement::LowerLeft => (inset, ph - self.h - inset),
            Placement::Outside => (pw + self.gap, 0),
        }
    }

    /// The corner of a `plot`-sized area whose legend box covers the fewest `samples`, and how
    /// many it covers. Ties go to upper right, upper left, lower right, lower left.
    pub(super) fn corner(&self, plot: (u32, u32), samples: &[(i32, i32)]) -> (usize, Placement) {
        let mut best = (usize::MAX, Placement::UpperRight);
        for placement in [
            Placement::UpperRight,
            Placement::UpperLeft,
            Placement::LowerRight,
            Placement::LowerLeft,
        ] {
            let (x0, y0) = self.origin(placement, plot);
            let hidden = samples
                .iter()
                .filter(|&&(x, y)| {
                    x >= x0 - 4 && x <= x0 + self.w + 4 && y >= y0 - 4 && y <= y0 + self.h + 4
                })
                .count();
            if hidden < best.0 {
                best = (hidden, placement);
            }
        }
        best
    }

    /// Draws the legend on `area`, the area `chart` was built on.
    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        chart: &Chart<DB>,
        placement: Placement,
    ) -> Msg<()> {
        let plot = chart.plotting_area();
        let (bx, by) = plot.get_base_pixel();
        let (ax, ay) = area.get_base_pixel();
        let (ox, oy) = self.origin(placement, plot.dim_in_pixel());
        let (x0, y0) = (bx - ax + ox, by - ay + oy);
        let corners = [(x0, y0), (x0 + self.w, y0 + self.h)];
        area.draw(&Rectangle::new(corners, WHITE.mix(0.88).filled()))
            .or_msg()?;
        area.draw(&Rectangle::new(corners, LEGEND_BORDER.stroke_width(1)))
            .or_msg()?;
        let style = font(self.font_size).pos(Pos::new(HPos::Left, VPos::Center));
        for (k, (label, swatch)) in self.entries.iter().enumerate() {
            let y = y0 + self.margin + k as i32 * self.line_h + self.line_h / 2;
            swatch.draw(area, (x0 + self.margin, y))?;
            area.draw_text(label, &style, (x0 + self.margin + self.swatch_w, y))
                .or_msg()?;
        }
        Ok(())
    }
}

/// Builds the chart and places the legend: in the corner that hides no data, else outside on
/// the right when the plot keeps at least 60% of its width, else in the corner hiding least.
pub(super) fn lay_out<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    axes: &Axes,
    legend: Option<&Legend>,
    sz: &Sizes,
    samples: impl Fn(&Chart<'a, DB>) -> Vec<(i32, i32)>,
) -> Msg<(Chart<'a, DB>, Placement)> {
    let chart = axes.build(area, sz, 0)?;
    let Some(lg) = legend else {
        return Ok((chart, Placement::UpperRight));
    };
    let plot = chart.plotting_area().dim_in_pixel();
    let (hidden, corner) = lg.corner(plot, &samples(&chart));
    let room = (lg.w + lg.gap).max(0) as u32;
    if hidden == 0 || f64::from(plot.0.saturating_sub(room)) < 0.6 * f64::from(plot.0) {
        return Ok((chart, corner));
    }
    Ok((axes.build(area, sz, room)?, Placement::Outside))
}
