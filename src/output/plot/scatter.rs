//! Scatter panels side by side.

use super::*;

impl Figure for ScatterChart {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn check(&self) -> Msg<()> {
        if self.panels.is_empty() {
            return Err("the chart has no panels".into());
        }
        check_size(
            (self.width / self.panels.len() as u32, self.height),
            &format!("each of the {} panels", self.panels.len()),
        )?;
        for (i, p) in self.panels.iter().enumerate() {
            let any = p
                .groups
                .iter()
                .flat_map(|(_, pts)| pts)
                .any(|&(x, y)| x.is_finite() && y.is_finite());
            if !any {
                return Err(format!("panel {i} (\"{}\") has no finite points", p.title));
            }
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Msg<()> {
        let sz = Sizes::new(root.dim_in_pixel());
        let area = split_title(root, &self.title, sz.title)?;
        // One colour per group label across all panels, in order of first appearance.
        let mut colours: HashMap<&str, RGBColor> = HashMap::new();
        for p in &self.panels {
            for (label, _) in &p.groups {
                let n = colours.len();
                colours
                    .entry(label.as_str())
                    .or_insert(PALETTE[n % PALETTE.len()]);
            }
        }
        let cells = area.split_evenly((1, self.panels.len()));
        for (cell, panel) in cells.iter().zip(&self.panels) {
            let psz = Sizes::new(cell.dim_in_pixel());
            let cell = split_title(cell, &panel.title, psz.caption)?;
            let groups: Vec<(&str, Vec<(f64, f64)>)> = panel
                .groups
                .iter()
                .map(|(label, pts)| {
                    let finite = pts
                        .iter()
                        .copied()
                        .filter(|p| p.0.is_finite() && p.1.is_finite())
                        .collect();
                    (label.as_str(), finite)
                })
                .collect();
            let (mut xe, mut ye) = (Extent(None), Extent(None));
            for &(x, y) in groups.iter().flat_map(|g| &g.1) {
                xe.add(x);
                ye.add(y);
            }
            let ranges = (xe.padded("x")?, ye.padded("y")?);
            let axes = Axes::new(&cell, ranges, &self.x_label, &self.y_label, &psz)?;
            let radius = psz.marker + 1;
            let colour = |label: &str| colours.get(label).copied().unwrap_or(BLACK);
            let entries = groups
                .iter()
                .map(|&(label, _)| {
                    let swatch = Swatch {
                        colour: colour(label),
                        line: false,
                        dashed: false,
                        band: false,
                        marker: radius,
                    };
                    (label, swatch)
                })
                .collect();
            let legend = Legend::measure(&cell, entries, &psz)?;
            let samples = |chart: &Chart<DB>| {
                let mut out = Vec::new();
                for p in groups.iter().flat_map(|g| &g.1) {
                    sample_path(chart, std::slice::from_ref(p), &mut out);
                }
                out
            };
            let (mut chart, placement) = lay_out(&cell, &axes, legend.as_ref(), &psz, samples)?;
            axes.draw_mesh(&mut chart, &psz)?;
            for (label, pts) in &groups {
                let style = colour(label).mix(0.7).filled();
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, radius, style)))
                    .or_msg()?;
            }
            if let Some(legend) = legend {
                legend.draw(&cell, &chart, placement)?;
            }
        }
        Ok(())
    }
}
