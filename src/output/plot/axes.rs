//! Axes: tick positions and labels, the plot area, its grid and reference line.

use super::*;

/// Tick label formatting with as many decimals as the tick step needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticks {
    /// Digits after the point (of the mantissa, in scientific notation).
    pub(super) decimals: usize,
    pub(super) scientific: bool,
    pub(super) zero: f64,
}

/// Digits after the point that `x` needs (at most `max`).
pub(super) fn decimals_for(x: f64, max: usize) -> usize {
    let mut d = 0;
    while d < max {
        let scaled = x * 10f64.powi(d as i32);
        if (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0) {
            break;
        }
        d += 1;
    }
    d
}

impl Ticks {
    pub(super) fn new((lo, hi): (f64, f64)) -> (Self, Vec<f64>) {
        let points = RangedCoordf64::from(lo..hi).key_points(N_TICKS);
        let step = match points.as_slice() {
            [a, b, ..] => (b - a).abs(),
            _ => (hi - lo).abs(),
        };
        let big = lo.abs().max(hi.abs());
        let scientific = big >= 1e6 || (big > 0.0 && big < 1e-4);
        let decimals = if !(step > 0.0 && step.is_finite()) {
            2
        } else if scientific {
            // Enough mantissa digits to tell the largest tick from its neighbours.
            let e_step = step.log10().floor();
            let extra = decimals_for(step / 10f64.powf(e_step), 3);
            ((big.log10().floor() - e_step).max(0.0) as usize + extra).min(6)
        } else {
            decimals_for(step, 8)
        };
        let ticks = Ticks {
            decimals,
            scientific,
            zero: step * 1e-9,
        };
        (ticks, points)
    }

    pub(super) fn format(&self, v: f64) -> String {
        if v.abs() <= self.zero {
            return if self.scientific {
                "0".into()
            } else {
                format!("{:.*}", self.decimals, 0.0)
            };
        }
        if self.scientific {
            format!("{v:.*e}", self.decimals)
        } else {
            format!("{v:.*}", self.decimals)
        }
    }
}

pub(super) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The axes of one plot: ranges, labels, tick formats and the room their text needs.
pub(super) struct Axes<'s> {
    pub(super) xr: (f64, f64),
    pub(super) yr: (f64, f64),
    pub(super) x_label: &'s str,
    pub(super) y_label: &'s str,
    pub(super) xt: Ticks,
    pub(super) yt: Ticks,
    pub(super) x_tick_w: u32,
    pub(super) y_tick_w: u32,
}

impl<'s> Axes<'s> {
    pub(super) fn new<DB: DrawingBackend>(
        area: &DrawingArea<DB, Shift>,
        (xr, yr): ((f64, f64), (f64, f64)),
        x_label: &'s str,
        y_label: &'s str,
        sz: &Sizes,
    ) -> Msg<Self> {
        let tick = font(sz.tick);
        let (xt, xpoints) = Ticks::new(xr);
        let (yt, ypoints) = Ticks::new(yr);
        let widest = |ticks: &Ticks, points: &[f64]| -> Msg<u32> {
            let mut w = 0;
            for &v in points {
                w = w.max(area.estimate_text_size(&ticks.format(v), &tick).or_msg()?.0);
            }
            Ok(w)
        };
        Ok(Axes {
            xr,
            yr,
            x_label,
            y_label,
            xt,
            yt,
            x_tick_w: widest(&xt, &xpoints)?,
            y_tick_w: widest(&yt, &ypoints)?,
        })
    }

    /// The chart on `area` (nothing drawn yet), with `extra_right` pixels kept free on the right
    /// (for a legend outside the plot), sized so that no tick or axis label is clipped.
    pub(super) fn build<'a, DB: DrawingBackend>(
        &self,
        area: &'a DrawingArea<DB, Shift>,
        sz: &Sizes,
        extra_right: u32,
    ) -> Msg<Chart<'a, DB>> {
        // plotters puts tick labels 10 px from the axis and the axis label at the outer edge of
        // the label area; its text boxes are 0.8 of the font size tall, descenders not included.
        let desc_room = |label: &str| {
            if label.trim().is_empty() {
                0
            } else {
                (sz.desc * 1.5).ceil() as u32
            }
        };
        let y_area = 10 + self.y_tick_w + (sz.tick * 0.4).ceil() as u32 + desc_room(self.y_label);
        let x_area = 10 + (sz.tick * 1.2).ceil() as u32 + desc_room(self.x_label);
        ChartBuilder::on(area)
            .margin_top((sz.tick * 0.8).ceil() as u32)
            .margin_left((sz.tick * 0.5).ceil() as u32)
            .margin_bottom((sz.tick * 0.4).ceil() as u32)
            .margin_right(self.x_tick_w / 2 + (sz.tick * 0.8).ceil() as u32 + extra_right)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(self.xr.0..self.xr.1, self.yr.0..self.yr.1)
            .or_msg()
    }

    /// Draws the grid, axes, tick labels and axis labels.
    pub(super) fn draw_mesh<DB: DrawingBackend>(
        &self,
        chart: &mut Chart<DB>,
        sz: &Sizes,
    ) -> Msg<()> {
        let fx = |v: &f64| self.xt.format(*v);
        let fy = |v: &f64| self.yt.format(*v);
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_labels(N_TICKS)
            .y_labels(N_TICKS)
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style(font(sz.tick))
            .axis_desc_style(font(sz.desc))
            .light_line_style(GRID_LIGHT)
            .bold_line_style(GRID_BOLD)
            .axis_style(AXIS)
            .draw()
            .or_msg()
    }
}
