//! Rendering: the bundled font, the `Figure` trait, PNG and SVG output, sizes, extents and bands.

use super::*;

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Font family the bundled font is registered under; SVGs name it as their font family.
pub(super) const FAMILY: &str = "sans-serif";
/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
pub(super) static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The Okabe-Ito palette, yellow last: it is faint on white.
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];
pub(super) const REFERENCE: RGBColor = RGBColor(0x59, 0x59, 0x59);
pub(super) const GRID_LIGHT: RGBColor = RGBColor(0xF0, 0xF0, 0xF0);
pub(super) const GRID_BOLD: RGBColor = RGBColor(0xD9, 0xD9, 0xD9);
pub(super) const AXIS: RGBColor = RGBColor(0x40, 0x40, 0x40);
pub(super) const LEGEND_BORDER: RGBColor = RGBColor(0xA0, 0xA0, 0xA0);
/// Tick labels per axis (at most).
pub(super) const N_TICKS: usize = 8;
/// Series of up to this many points get markers.
pub(super) const MARKER_MAX_POINTS: usize = 30;
/// Smallest figure or grid cell that leaves room for the text.
pub(super) const MIN_CELL: (u32, u32) = (200, 150);
pub(super) const MAX_SIDE: u32 = 8192;

pub(super) type Msg<T> = std::result::Result<T, String>;

pub(super) trait OrMsg<T> {
    fn or_msg(self) -> Msg<T>;
}

impl<T, E: Display> OrMsg<T> for std::result::Result<T, E> {
    fn or_msg(self) -> Msg<T> {
        self.map_err(|e| e.to_string())
    }
}

/// Registers the bundled font with plotters once. Without a registered font, plotters' ab_glyph
/// text backend cannot draw any text.
pub(super) fn ensure_font() -> Msg<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the bundled DejaVu Sans font could not be loaded".into())
    }
}

/// A figure that can be checked and drawn on any plotters backend.
pub(super) trait Figure {
    fn size(&self) -> (u32, u32);
    /// Everything that would make drawing fail or draw nothing, found before any file is written.
    fn check(&self) -> Msg<()>;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Msg<()>;
}

pub(super) fn with_extension(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub(super) fn save_figure(fig: &impl Figure, stem: &Path) -> Result<Vec<PathBuf>> {
    let png_path = with_extension(stem, "png");
    let svg_path = with_extension(stem, "svg");
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |msg: String| Error::Plot { path, msg }
    };
    ensure_font()
        .and_then(|()| check_size(fig.size(), "figure"))
        .and_then(|()| fig.check())
        .map_err(err(&png_path))?;
    let png = render_png(fig).map_err(err(&png_path))?;
    let svg = render_svg(fig).map_err(err(&svg_path))?;
    atomic_write_bytes(&png_path, &png)?;
    atomic_write_bytes(&svg_path, svg.as_bytes())?;
    Ok(vec![png_path, svg_path])
}

pub(super) fn check_size((w, h): (u32, u32), what: &str) -> Msg<()> {
    if w < MIN_CELL.0 || h < MIN_CELL.1 {
        return Err(format!(
            "{what} of {w}x{h} px is too small (at least {}x{} px)",
            MIN_CELL.0, MIN_CELL.1
        ));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!(
            "{what} of {w}x{h} px is too large (at most {MAX_SIDE} px a side)"
        ));
    }
    Ok(())
}

pub(super) fn render_png(fig: &impl Figure) -> Msg<Vec<u8>> {
    let (w, h) = fig.size();
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = png_backend::PngBackend::new(&mut rgb, (w, h))?.into_drawing_area();
        root.fill(&WHITE).or_msg()?;
        fig.draw(&root)?;
        root.present().or_msg()?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().or_msg()?;
    writer.write_image_data(&rgb).or_msg()?;
    writer.finish().or_msg()?;
    Ok(out)
}

pub(super) fn render_svg(fig: &impl Figure) -> Msg<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, fig.size()).into_drawing_area();
        root.fill(&WHITE).or_msg()?;
        fig.draw(&root)?;
        root.present().or_msg()?;
    }
    Ok(svg)
}

/// Text sizes and line widths for a plot area, scaled gently with its size (1000x600 is 1.0).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) title: f64,
    pub(super) caption: f64,
    pub(super) desc: f64,
    pub(super) tick: f64,
    pub(super) legend: f64,
    pub(super) marker: u32,
}

impl Sizes {
    pub(super) fn new((w, h): (u32, u32)) -> Self {
        let s = (f64::from(w) / 1000.0)
            .min(f64::from(h) / 600.0)
            .sqrt()
            .clamp(0.8, 2.0);
        Sizes {
            title: 30.0 * s,
            caption: 23.0 * s,
            desc: 21.0 * s,
            tick: 18.0 * s,
            legend: 18.0 * s,
            marker: (3.5 * s).round() as u32,
        }
    }
}

pub(super) fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

/// Draws `title` centred in a strip at the top of `area` (shrunk to fit its width) and returns
/// the rest of the area.
pub(super) fn split_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    size: f64,
) -> Msg<DrawingArea<DB, Shift>> {
    if title.trim().is_empty() {
        return Ok(area.clone());
    }
    let (w, _) = area.dim_in_pixel();
    let (tw, _) = area.estimate_text_size(title, &font(size)).or_msg()?;
    let avail = f64::from(w) * 0.96;
    let size = if f64::from(tw) > avail {
        (size * avail / f64::from(tw)).max(8.0)
    } else {
        size
    };
    let strip = (size * 1.9).ceil() as u32;
    let (top, rest) = area.split_vertically(strip);
    let style = font(size).pos(Pos::new(HPos::Center, VPos::Center));
    top.draw_text(title, &style, ((w / 2) as i32, (strip / 2) as i32))
        .or_msg()?;
    Ok(rest)
}

/// Min and max of the finite values fed to it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Extent(pub(super) Option<(f64, f64)>);

impl Extent {
    pub(super) fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.0 = Some(match self.0 {
                None => (v, v),
                Some((lo, hi)) => (lo.min(v), hi.max(v)),
            });
        }
    }

    /// The extent padded by 5% a side; a single value gets a range around it.
    pub(super) fn padded(self, axis: &str) -> Msg<(f64, f64)> {
        let (lo, hi) = self.0.ok_or_else(|| format!("no finite {axis} values"))?;
        let span = hi - lo;
        let pad = if span > 0.0 {
            span * 0.05
        } else if lo != 0.0 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        let (a, b) = (lo - pad, hi + pad);
        if a.is_finite() && b.is_finite() && a < b {
            Ok((a, b))
        } else {
            Err(format!("the {axis} values span too large a range to draw"))
        }
    }
}

/// Maximal runs of consecutive finite points.
pub(super) fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y));
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// Band polygons (upper edge forward, lower edge back), one per run of finite triples.
pub(super) fn band_polygons(band: &[(f64, f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut polys = Vec::new();
    let mut cur: Vec<(f64, f64, f64)> = Vec::new();
    let mut flush = |cur: &mut Vec<(f64, f64, f64)>| {
        if !cur.is_empty() {
            let mut poly: Vec<(f64, f64)> = cur.iter().map(|&(x, _, hi)| (x, hi)).collect();
            poly.extend(cur.iter().rev().map(|&(x, lo, _)| (x, lo)));
            polys.push(poly);
            cur.clear();
        }
    };
    for &(x, lo, hi) in band {
        if x.is_finite() && lo.is_finite() && hi.is_finite() {
            cur.push((x, lo, hi));
        } else {
            flush(&mut cur);
        }
    }
    flush(&mut cur);
    polys
}
