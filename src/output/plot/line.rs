//! Line charts and grids of them: clipping to the y range, geometry, drawing.

use super::*;

/// Parts of a polyline inside `lo <= y <= hi` (plotters does not clip to the plot area).
pub(super) fn clip_y(run: &[(f64, f64)], (lo, hi): (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let inside = |y: f64| y >= lo && y <= hi;
    if let [p] = run {
        return if inside(p.1) { vec![vec![*p]] } else { vec![] };
    }
    let mut out = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in run.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (t0, t1) = if a.1 == b.1 {
            if inside(a.1) {
                (0.0, 1.0)
            } else {
                (1.0, 0.0)
            }
        } else {
            let ta = (lo - a.1) / (b.1 - a.1);
            let tb = (hi - a.1) / (b.1 - a.1);
            (ta.min(tb).max(0.0), ta.max(tb).min(1.0))
        };
        if t0 > t1 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let at = |t: f64| (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        if t0 > 0.0 && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur.push(at(t0));
        }
        cur.push(at(t1));
        if t1 < 1.0 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A polygon clipped to `lo <= y <= hi` (Sutherland-Hodgman against both edges).
pub(super) fn clip_polygon_y(poly: &[(f64, f64)], (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
    let edge = |poly: Vec<(f64, f64)>, bound: f64, keep_above: bool| {
        let keep = |p: (f64, f64)| {
            if keep_above {
                p.1 >= bound
            } else {
                p.1 <= bound
            }
        };
        let mut out = Vec::with_capacity(poly.len() + 2);
        for (i, &b) in poly.iter().enumerate() {
            let a = poly[(i + poly.len() - 1) % poly.len()];
            let cross = |a: (f64, f64), b: (f64, f64)| {
                let t = (bound - a.1) / (b.1 - a.1);
                (a.0 + (b.0 - a.0) * t, bound)
            };
            match (keep(a), keep(b)) {
                (true, true) => out.push(b),
                (true, false) => out.push(cross(a, b)),
                (false, true) => {
                    out.push(cross(a, b));
                    out.push(b);
                }
                (false, false) => {}
            }
        }
        out
    };
    let poly = edge(poly.to_vec(), lo, true);
    edge(poly, hi, false)
}

/// What a line chart draws, clipped to its y range.
#[derive(Default)]
pub(super) struct LineGeometry {
    /// (series index, polygon).
    pub(super) bands: Vec<(usize, Vec<(f64, f64)>)>,
    /// (series index, connected points).
    pub(super) lines: Vec<(usize, Vec<(f64, f64)>)>,
    /// (series index, point), for series short enough to mark their points.
    pub(super) markers: Vec<(usize, (f64, f64))>,
    /// The reference line, when inside the y range.
    pub(super) hline: Option<[(f64, f64); 2]>,
}

impl LineGeometry {
    pub(super) fn samples<DB: DrawingBackend>(&self, chart: &Chart<DB>) -> Vec<(i32, i32)> {
        let mut out = Vec::new();
        for (_, poly) in &self.bands {
            sample_path(chart, poly, &mut out);
        }
        for (_, run) in &self.lines {
            sample_path(chart, run, &mut out);
        }
        for (_, p) in &self.markers {
            sample_path(chart, std::slice::from_ref(p), &mut out);
        }
        if let Some(line) = &self.hline {
            sample_path(chart, line, &mut out);
        }
        out
    }
}

impl LineChart {
    pub(super) fn check_data(&self) -> Msg<()> {
        if self.series.is_empty() {
            return Err("the chart has no series".into());
        }
        let (x, y) = self.extents();
        if x.0.is_none() || y.0.is_none() {
            return Err("no series has a finite data point".into());
        }
        if let Some((lo, hi)) = self.y_range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(format!("y_range ({lo}, {hi}) must be finite with lo < hi"));
            }
        }
        if let Some((y, label)) = &self.hline {
            if !y.is_finite() {
                return Err(format!("reference line `{label}` is at y = {y}"));
            }
        }
        Ok(())
    }

    /// Extents of the finite data (points and bands) in x and y; y includes the reference line.
    pub(super) fn extents(&self) -> (Extent, Extent) {
        let (mut x, mut y) = (Extent(None), Extent(None));
        for s in &self.series {
            for run in finite_runs(&s.points) {
                for (px, py) in run {
                    x.add(px);
                    y.add(py);
                }
            }
            for poly in band_polygons(s.band.as_deref().unwrap_or(&[])) {
                for (px, py) in poly {
                    x.add(px);
                    y.add(py);
                }
            }
        }
        if x.0.is_some() {
            if let Some((v, _)) = &self.hline {
                y.add(*v);
            }
        }
        (x, y)
    }

    /// Series `i` is dashed if asked, flipped on every other round through the palette so that
    /// colours stay distinguishable.
    pub(super) fn dashed(&self, i: usize) -> bool {
        self.series[i].dashed != ((i / PALETTE.len()) % 2 == 1)
    }

    /// Series `i` is short enough to mark its points.
    pub(super) fn has_markers(&self, i: usize) -> bool {
        let finite = self.series[i]
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .count();
        finite <= MARKER_MAX_POINTS
    }

    pub(super) fn geometry(&self, xr: (f64, f64), yr: (f64, f64)) -> LineGeometry {
        let mut g = LineGeometry::default();
        for (i, s) in self.series.iter().enumerate() {
            for poly in band_polygons(s.band.as_deref().unwrap_or(&[])) {
                let poly = clip_polygon_y(&poly, yr);
                if poly.len() >= 3 {
                    g.bands.push((i, poly));
                }
            }
            let runs = finite_runs(&s.points);
            if self.has_markers(i) {
                g.markers.extend(
                    runs.iter()
                        .flatten()
                        .filter(|p| p.1 >= yr.0 && p.1 <= yr.1)
                        .map(|&p| (i, p)),
                );
            }
            for run in runs {
                g.lines.extend(clip_y(&run, yr).into_iter().map(|r| (i, r)));
            }
        }
        if let Some((y, _)) = &self.hline {
            if *y >= yr.0 && *y <= yr.1 {
                g.hline = Some([(xr.0, *y), (xr.1, *y)]);
            }
        }
        g
    }

    pub(super) fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: bool,
    ) -> Msg<()> {
        let sz = Sizes::new(area.dim_in_pixel());
        let area = if caption {
            split_title(area, &self.title, sz.caption)?
        } else {
            area.clone()
        };
        let (xe, ye) = self.extents();
        let xr = xe.padded("x")?;
        let yr = match self.y_range {
            Some(r) => r,
            None => ye.padded("y")?,
        };
        let axes = Axes::new(&area, (xr, yr), &self.x_label, &self.y_label, &sz)?;
        let geometry = self.geometry(xr, yr);
        let colour = |i: usize| PALETTE[i % PALETTE.len()];
        let mut entries: Vec<(&str, Swatch)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let swatch = Swatch {
                    colour: colour(i),
                    line: true,
                    dashed: self.dashed(i),
                    band: s.band.is_some(),
                    marker: if self.has_markers(i) { sz.marker } else { 0 },
                };
                (s.label.as_str(), swatch)
            })
            .collect();
        if let Some((_, label)) = &self.hline {
            let swatch = Swatch {
                colour: REFERENCE,
                line: true,
                dashed: true,
                band: false,
                marker: 0,
            };
            entries.push((label.as_str(), swatch));
        }
        let legend = Legend::measure(&area, entries, &sz)?;
        let (mut chart, placement) =
            lay_out(&area, &axes, legend.as_ref(), &sz, |c| geometry.samples(c))?;
        axes.draw_mesh(&mut chart, &sz)?;

        // Bands first, under every line; then the reference line; then the series.
        for (i, poly) in &geometry.bands {
            let style = colour(*i).mix(0.2).filled();
            chart
                .draw_series(std::iter::once(Polygon::new(poly.clone(), style)))
                .or_msg()?;
        }
        if let Some(line) = geometry.hline {
            let style = REFERENCE.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(line, 8, 6, style))
                .or_msg()?;
        }
        for (i, run) in &geometry.lines {
            let style = colour(*i).stroke_width(2);
            if self.dashed(*i) {
                chart
                    .draw_series(DashedLineSeries::new(run.clone(), 8, 5, style))
                    .or_msg()?;
            } else {
                chart
                    .draw_series(LineSeries::new(run.clone(), style))
                    .or_msg()?;
            }
        }
        chart
            .draw_series(
                geometry
                    .markers
                    .iter()
                    .map(|&(i, p)| Circle::new(p, sz.marker, colour(i).filled())),
            )
            .or_msg()?;

        match legend {
            Some(legend) => legend.draw(&area, &chart, placement),
            None => Ok(()),
        }
    }
}

impl Figure for LineChart {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn check(&self) -> Msg<()> {
        self.check_data()
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Msg<()> {
        let sz = Sizes::new(root.dim_in_pixel());
        let area = split_title(root, &self.title, sz.title)?;
        self.draw_panel(&area, false)
    }
}

impl Figure for LineGrid {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn check(&self) -> Msg<()> {
        if self.charts.is_empty() {
            return Err("the grid has no charts".into());
        }
        if self.columns == 0 {
            return Err("a grid needs at least one column".into());
        }
        let (cols, rows) = self.shape();
        check_size(
            (self.width / cols as u32, self.height * 9 / 10 / rows as u32),
            &format!("each of the {rows}x{cols} grid cells"),
        )?;
        for (i, c) in self.charts.iter().enumerate() {
            c.check_data()
                .map_err(|m| format!("chart {i} (\"{}\"): {m}", c.title))?;
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Msg<()> {
        let sz = Sizes::new(root.dim_in_pixel());
        let area = split_title(root, &self.title, sz.title)?;
        let (cols, rows) = self.shape();
        for (cell, chart) in area.split_evenly((rows, cols)).iter().zip(&self.charts) {
            chart.draw_panel(cell, true)?;
        }
        Ok(())
    }
}

impl LineGrid {
    /// (columns, rows) actually used.
    pub(super) fn shape(&self) -> (usize, usize) {
        let cols = self.columns.clamp(1, self.charts.len().max(1));
        (cols, self.charts.len().div_ceil(cols).max(1))
    }
}

impl LineChart {
    /// A line chart of a CSV file's columns: `x` against each of the `y` columns, one series per
    /// y column and (with `group`) per value of the group column, in first-seen order. Empty
    /// cells and `nan` are skipped; the title and axis labels name the columns (change them
    /// after). Errors name the file, line and column of anything that is not a number, a missing
    /// column, or a file without a row to draw.
    ///
    /// ```no_run
    /// use puppetlens::plot::LineChart;
    /// let chart = LineChart::from_csv("dose.csv".as_ref(), "multiplier", &["p_matching"], Some("layer"))?;
    /// chart.save("dose")?;
    /// # Ok::<(), puppetlens::Error>(())
    /// ```
    pub fn from_csv(csv: &Path, x: &str, y: &[&str], group: Option<&str>) -> Result<LineChart> {
        let bytes = std::fs::read(csv).map_err(|e| Error::io(csv, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut records =
            crate::data::parse_csv(csv, text.trim_start_matches('\u{feff}'))?.into_iter();
        let (_, header) = records
            .next()
            .ok_or_else(|| Error::config(csv, "(whole file)", "the file is empty"))?;
        let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
        let col = |name: &str| {
            header.iter().position(|h| h == name.trim()).ok_or_else(|| {
                Error::config(
                    csv,
                    "line 1: header",
                    format!(
                        "no column `{}` (columns: {})",
                        name.trim(),
                        header.join(", ")
                    ),
                )
            })
        };
        let xc = col(x)?;
        let ycols: Vec<(String, usize)> = y
            .iter()
            .map(|s| Ok((s.trim().to_string(), col(s)?)))
            .collect::<Result<_>>()?;
        if ycols.is_empty() {
            return Err(Error::InvalidArgument {
                name: "y columns".into(),
                msg: "no y column given".into(),
            });
        }
        let gc = group.map(col).transpose()?;
        // (y column, group value) -> points, in first-seen order.
        type Key = (String, Option<String>);
        let mut series: Vec<(Key, Vec<(f64, f64)>)> = Vec::new();
        let number = |line: usize, name: &str, s: &str| -> Result<Option<f64>> {
            let s = s.trim();
            if s.is_empty() || s.eq_ignore_ascii_case("nan") {
                return Ok(None);
            }
            s.parse::<f64>().map(Some).map_err(|_| {
                Error::config(
                    csv,
                    format!("line {line}: {name}"),
                    format!("`{s}` is not a number"),
                )
            })
        };
        for (line, fields) in records {
            if fields.len() != header.len() {
                return Err(Error::config(
                    csv,
                    format!("line {line}"),
                    format!(
                        "has {} fields but the header has {}",
                        fields.len(),
                        header.len()
                    ),
                ));
            }
            let Some(xv) = number(line, &header[xc], &fields[xc])? else {
                continue;
            };
            let g = gc.map(|c| fields[c].trim().to_string());
            for (name, c) in &ycols {
                let Some(yv) = number(line, name, &fields[*c])? else {
                    continue;
                };
                let key = (name.clone(), g.clone());
                match series.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, pts)) => pts.push((xv, yv)),
                    None => series.push((key, vec![(xv, yv)])),
                }
            }
        }
        if series.is_empty() {
            return Err(Error::config(
                csv,
                "(whole file)",
                format!("no rows with numbers in `{x}` and `{}`", y.join(",")),
            ));
        }
        let group_name = group.unwrap_or("").trim();
        let series: Vec<Series> = series
            .into_iter()
            .map(|((name, g), pts)| {
                let label = match g {
                    Some(g) if ycols.len() == 1 => format!("{group_name} {g}"),
                    Some(g) => format!("{name}, {group_name} {g}"),
                    None => name,
                };
                Series::new(label, pts)
            })
            .collect();
        let y_names: Vec<&str> = ycols.iter().map(|(n, _)| n.as_str()).collect();
        Ok(LineChart {
            title: format!("{} vs {}", y_names.join(", "), x.trim()),
            x_label: x.trim().to_string(),
            y_label: if y_names.len() == 1 {
                y_names[0].to_string()
            } else {
                "value".to_string()
            },
            series,
            ..LineChart::default()
        })
    }
}
