//! Heat maps: panels of values on one diverging scale.

use super::*;

// ---------------------------------------------------------------------------------------------
// Heat maps.

/// One panel of a [`HeatMap`]: a grid of values with a label per row and per column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeatPanel {
    /// Title above the panel.
    pub title: String,
    /// Column labels, left to right (e.g. token text).
    pub x_labels: Vec<String>,
    /// Row labels, top to bottom (e.g. layers).
    pub y_labels: Vec<String>,
    /// `values[row][column]`; non-finite cells are drawn grey.
    pub values: Vec<Vec<f64>>,
    /// Text shown in each cell instead of its value (`cell_text[row][column]`, e.g. a logit lens's
    /// top token); empty to show the values.
    pub cell_text: Vec<Vec<String>>,
}

/// Heat maps side by side on one diverging scale (blue below zero, red above, white at zero),
/// symmetric around zero and shared by the panels; each cell shows its value.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    /// Title above all panels.
    pub title: String,
    /// Label under every panel.
    pub x_label: String,
    /// Label beside every panel.
    pub y_label: String,
    /// The panels, left to right, then top to bottom.
    pub panels: Vec<HeatPanel>,
    /// Panels per row (0: all in one row).
    pub columns: usize,
    /// Width of the whole figure.
    pub width: u32,
    /// Height of the whole figure.
    pub height: u32,
}

impl HeatMap {
    /// `(rows, columns)` of the panel grid.
    pub(super) fn grid(&self) -> (usize, usize) {
        let n = self.panels.len().max(1);
        let cols = if self.columns == 0 {
            n
        } else {
            self.columns.min(n)
        };
        (n.div_ceil(cols), cols)
    }
}

impl Default for HeatMap {
    fn default() -> Self {
        HeatMap {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            panels: Vec::new(),
            columns: 0,
            width: 1000,
            height: 700,
        }
    }
}

impl HeatMap {
    /// Writes `{stem}.png` and `{stem}.svg` and returns their paths (PNG first).
    pub fn save(&self, stem: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        save_figure(self, stem.as_ref())
    }

    /// The largest finite `|value|` of all panels (the scale's end; 1 when there is none).
    pub(super) fn scale(&self) -> f64 {
        let m = self
            .panels
            .iter()
            .flat_map(|p| p.values.iter().flatten())
            .filter(|v| v.is_finite())
            .fold(0.0f64, |a, v| a.max(v.abs()));
        if m > 0.0 {
            m
        } else {
            1.0
        }
    }
}

/// Blue (-1) to white (0) to red (+1); grey for a non-finite value.
pub(super) fn diverging(v: f64) -> RGBColor {
    if !v.is_finite() {
        return RGBColor(0xC8, 0xC8, 0xC8);
    }
    let t = v.clamp(-1.0, 1.0);
    let (end, t) = if t < 0.0 {
        ((0x21, 0x66, 0xAC), -t)
    } else {
        ((0xB2, 0x18, 0x2B), t)
    };
    let mix = |a: u8| (255.0 + (f64::from(a) - 255.0) * t).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

impl Figure for HeatMap {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn check(&self) -> Msg<()> {
        if self.panels.is_empty() {
            return Err("the heat map has no panels".into());
        }
        let (rows, cols) = self.grid();
        check_size(
            (self.width / cols as u32, self.height / rows as u32),
            &format!("each of the {} panels", self.panels.len()),
        )?;
        for (i, p) in self.panels.iter().enumerate() {
            if p.values.is_empty() || p.values.len() != p.y_labels.len() {
                return Err(format!(
                    "panel {i} (\"{}\"): {} rows of values for {} row labels",
                    p.title,
                    p.values.len(),
                    p.y_labels.len()
                ));
            }
            if let Some(r) = p.values.iter().position(|r| r.len() != p.x_labels.len()) {
                return Err(format!(
                    "panel {i} (\"{}\"): row {r} has {} values for {} column labels",
                    p.title,
                    p.values[r].len(),
                    p.x_labels.len()
                ));
            }
            if p.x_labels.is_empty() {
                return Err(format!("panel {i} (\"{}\") has no columns", p.title));
            }
            let bad_text = !p.cell_text.is_empty()
                && (p.cell_text.len() != p.values.len()
                    || p.cell_text.iter().any(|r| r.len() != p.x_labels.len()));
            if bad_text {
                return Err(format!(
                    "panel {i} (\"{}\"): cell text is not one string per cell",
                    p.title
                ));
            }
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Msg<()> {
        let sz = Sizes::new(root.dim_in_pixel());
        let scale = self.scale();
        let title = format!("{} (colour scale +/-{scale:.2})", self.title);
        let area = split_title(root, &title, sz.title)?;
        let cells = area.split_evenly(self.grid());
        for (cell, panel) in cells.iter().zip(&self.panels) {
            let psz = Sizes::new(cell.dim_in_pixel());
            let cell = split_title(cell, &panel.title, psz.caption)?;
            let (w, h) = cell.dim_in_pixel();
            let (rows, cols) = (panel.values.len(), panel.x_labels.len());
            let tick = psz.tick * 0.8;
            let left = (tick * 3.2 + psz.desc * 1.6) as i32;
            let bottom = (tick * 3.6 + psz.desc * 1.6) as i32;
            // The y label sits above the row labels, in its own strip.
            let (x0, y0) = (left, (psz.desc * 0.8 * 1.4) as i32 + 4);
            let (pw, ph) = (w as i32 - left - 8, h as i32 - bottom - y0);
            if pw < cols as i32 || ph < rows as i32 {
                return Err(format!(
                    "panel \"{}\" is too small for its cells",
                    panel.title
                ));
            }
            let cw = f64::from(pw) / cols as f64;
            let rh = f64::from(ph) / rows as f64;
            let value_font = (rh * 0.45).min(cw * 0.28).clamp(7.0, tick);
            for (r, row) in panel.values.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    let xa = x0 + (c as f64 * cw).round() as i32;
                    let xb = x0 + ((c + 1) as f64 * cw).round() as i32;
                    let ya = y0 + (r as f64 * rh).round() as i32;
                    let yb = y0 + ((r + 1) as f64 * rh).round() as i32;
                    let colour = diverging(v / scale);
                    cell.draw(&Rectangle::new([(xa, ya), (xb, yb)], colour.filled()))
                        .or_msg()?;
                    cell.draw(&Rectangle::new([(xa, ya), (xb, yb)], WHITE.stroke_width(1)))
                        .or_msg()?;
                    let text = match panel.cell_text.get(r).and_then(|t| t.get(c)) {
                        Some(t) => Some(t.clone()),
                        None if panel.cell_text.is_empty() && v.is_finite() => {
                            Some(format!("{v:.2}"))
                        }
                        None => None,
                    };
                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                        let ink = if (v / scale).abs() > 0.6 {
                            WHITE
                        } else {
                            BLACK
                        };
                        let style = font(value_font)
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center));
                        let fits = ((cw * 0.95) / (value_font * 0.6)).floor().max(2.0) as usize;
                        let text: String = text.chars().take(fits).collect();
                        cell.draw_text(&text, &style, ((xa + xb) / 2, (ya + yb) / 2))
                            .or_msg()?;
                    }
                }
            }
            let style = font(tick).pos(Pos::new(HPos::Right, VPos::Center));
            for (r, label) in panel.y_labels.iter().enumerate() {
                let y = y0 + ((r as f64 + 0.5) * rh).round() as i32;
                cell.draw_text(label, &style, (x0 - 6, y)).or_msg()?;
            }
            // Column labels in two staggered lines so that neighbours do not overlap.
            let style = font(tick).pos(Pos::new(HPos::Center, VPos::Top));
            let max_chars = ((cw * 2.0) / (tick * 0.6)).floor().max(3.0) as usize;
            for (c, label) in panel.x_labels.iter().enumerate() {
                let x = x0 + ((c as f64 + 0.5) * cw).round() as i32;
                let y = y0 + ph + 4 + if c % 2 == 1 { (tick * 1.3) as i32 } else { 0 };
                let shown: String = label.chars().take(max_chars).collect();
                cell.draw_text(&shown, &style, (x, y)).or_msg()?;
            }
            let style = font(psz.desc * 0.8).pos(Pos::new(HPos::Center, VPos::Bottom));
            cell.draw_text(&self.x_label, &style, (x0 + pw / 2, h as i32 - 2))
                .or_msg()?;
            let style = font(psz.desc * 0.8).pos(Pos::new(HPos::Left, VPos::Top));
            cell.draw_text(&self.y_label, &style, (2, 2)).or_msg()?;
        }
        Ok(())
    }
}
