//! Figures: line charts, scatter panels and small multiples, saved as PNG and SVG.
//!
//! Charts are plain data: a [`LineChart`] holds [`Series`] of `(x, y)` points, each with an optional
//! uncertainty band drawn as a translucent area; a [`ScatterChart`] holds [`ScatterPanel`]s of named
//! point groups side by side (e.g. PCA projections of two classes at several layers); a
//! [`LineGrid`] lays several line charts out as small multiples under one title (e.g.
//! dose-response at several layers). Options live in the structs, which implement [`Default`].
//!
//! `save(stem)` writes `{stem}.png` and `{stem}.svg` (each atomically) and returns both paths.
//! Text is drawn with a bundled copy of DejaVu Sans, so a PNG looks the same on every machine; an
//! SVG keeps text as text in the generic `sans-serif` family, so it stays searchable and editable.
//!
//! The style is fixed and meant for papers and reports: the colour-blind-safe Okabe-Ito palette
//! (a ninth and later series reuse it dashed), 2 px lines, markers on series of up to 30 points,
//! bands at 20% opacity in the series colour, a light grey grid, and a boxed legend in a corner of
//! the plot that hides no data, or beside the plot when every corner would. Axis ranges cover all
//! finite data (points, bands, reference line) plus 5% on each side; a fixed `y_range` clips what
//! lies outside it. Non-finite points are skipped and break a line in two. A chart with nothing to
//! draw is an [`Error::Plot`] naming the file, not a panic.
//!
//! ```no_run
//! use puppetlens::plot::{LineChart, Series};
//! let layers: Vec<f64> = (0..30).map(f64::from).collect();
//! let accuracy = Series {
//!     label: "probe accuracy".into(),
//!     points: layers.iter().map(|&l| (l, 0.5 + 0.45 * (l / 29.0))).collect(),
//!     band: Some(layers.iter().map(|&l| (l, 0.45 + 0.45 * (l / 29.0), 0.55 + 0.45 * (l / 29.0))).collect()),
//!     ..Default::default()
//! };
//! let chart = LineChart {
//!     title: "Linear probe accuracy by layer".into(),
//!     x_label: "layer".into(),
//!     y_label: "held-out accuracy".into(),
//!     series: vec![accuracy],
//!     y_range: Some((0.0, 1.0)),
//!     hline: Some((0.5, "chance".into())),
//!     ..Default::default()
//! };
//! let files = chart.save("figures/probe_accuracy")?; // figures/probe_accuracy.png and .svg
//! println!("wrote {files:?}");
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::util::atomic_write_bytes;
use crate::{Error, Result};

/// One line of a [`LineChart`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend label; an empty label leaves the series out of the legend.
    pub label: String,
    /// The points `(x, y)`, joined in the order given.
    pub points: Vec<(f64, f64)>,
    /// An optional band `(x, lo, hi)` (e.g. a confidence interval), drawn as a translucent area
    /// in the series colour.
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// Draw the line dashed (e.g. for a baseline or a second model).
    pub dashed: bool,
}

impl Series {
    /// A solid series without a band.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            ..Default::default()
        }
    }
}

/// A line chart: several series, optional bands, an optional horizontal reference line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The lines, drawn in order with the palette's colours.
    pub series: Vec<Series>,
    /// Fixed y range `(lo, hi)`; `None` fits the data with 5% padding.
    pub y_range: Option<(f64, f64)>,
    /// A dashed horizontal reference line at `y` with its legend label (e.g. `(0.5, "chance")`).
    pub hline: Option<(f64, String)>,
    /// Width in pixels (PNG) or user units (SVG). Ignored inside a [`LineGrid`].
    pub width: u32,
    /// Height in pixels (PNG) or user units (SVG). Ignored inside a [`LineGrid`].
    pub height: u32,
}

impl Default for LineChart {
    fn default() -> Self {
        LineChart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            y_range: None,
            hline: None,
            width: 1000,
            height: 600,
        }
    }
}

/// One panel of a [`ScatterChart`]: named groups of points, each group in its own colour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScatterPanel {
    /// Title above the panel (e.g. "layer 12").
    pub title: String,
    /// `(legend label, points)`; a label keeps its colour across the panels of a chart.
    pub groups: Vec<(String, Vec<(f64, f64)>)>,
}

/// Scatter plots side by side, one per [`ScatterPanel`], under one title.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterChart {
    /// Title above all panels.
    pub title: String,
    /// Label of every panel's x axis (e.g. "PC 1").
    pub x_label: String,
    /// Label of every panel's y axis (e.g. "PC 2").
    pub y_label: String,
    /// The panels, left to right; each fits its own axis ranges.
    pub panels: Vec<ScatterPanel>,
    /// Width of the whole figure.
    pub width: u32,
    /// Height of the whole figure.
    pub height: u32,
}

impl Default for ScatterChart {
    fn default() -> Self {
        ScatterChart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            panels: Vec::new(),
            width: 1000,
            height: 600,
        }
    }
}

/// Small multiples: line charts in a grid, filled row by row, under one title. Each chart keeps
/// its own title (above its cell), labels, ranges and legend; its `width` and `height` are
/// ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct LineGrid {
    /// Title above the grid.
    pub title: String,
    /// The charts, row by row.
    pub charts: Vec<LineChart>,
    /// Charts per row (at least 1).
    pub columns: usize,
    /// Width of the whole figure.
    pub width: u32,
    /// Height of the whole figure.
    pub height: u32,
}

impl Default for LineGrid {
    fn default() -> Self {
        LineGrid {
            title: String::new(),
            charts: Vec::new(),
            columns: 2,
            width: 1200,
            height: 800,
        }
    }
}

impl LineChart {
    /// Writes `{stem}.png` and `{stem}.svg` and returns their paths (PNG first).
    pub fn save(&self, stem: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        save_figure(self, stem.as_ref())
    }
}

impl ScatterChart {
    /// Writes `{stem}.png` and `{stem}.svg` and returns their paths (PNG first).
    pub fn save(&self, stem: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        save_figure(self, stem.as_ref())
    }
}

impl LineGrid {
    /// Writes `{stem}.png` and `{stem}.svg` and returns their paths (PNG first).
    pub fn save(&self, stem: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        save_figure(self, stem.as_ref())
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Font family the bundled font is registered under; SVGs name it as their font family.
const FAMILY: &str = "sans-serif";
/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The Okabe-Ito palette, yellow last: it is faint on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];
const REFERENCE: RGBColor = RGBColor(0x59, 0x59, 0x59);
const GRID_LIGHT: RGBColor = RGBColor(0xF0, 0xF0, 0xF0);
const GRID_BOLD: RGBColor = RGBColor(0xD9, 0xD9, 0xD9);
const AXIS: RGBColor = RGBColor(0x40, 0x40, 0x40);
const LEGEND_BORDER: RGBColor = RGBColor(0xA0, 0xA0, 0xA0);
/// Tick labels per axis (at most).
const N_TICKS: usize = 8;
/// Series of up to this many points get markers.
const MARKER_MAX_POINTS: usize = 30;
/// Smallest figure or grid cell that leaves room for the text.
const MIN_CELL: (u32, u32) = (200, 150);
const MAX_SIDE: u32 = 8192;

type Msg<T> = std::result::Result<T, String>;

trait OrMsg<T> {
    fn or_msg(self) -> Msg<T>;
}

impl<T, E: Display> OrMsg<T> for std::result::Result<T, E> {
    fn or_msg(self) -> Msg<T> {
        self.map_err(|e| e.to_string())
    }
}

/// Registers the bundled font with plotters once. Without a registered font, plotters' ab_glyph
/// text backend cannot draw any text.
fn ensure_font() -> Msg<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the bundled DejaVu Sans font could not be loaded".into())
    }
}

/// A figure that can be checked and drawn on any plotters backend.
trait Figure {
    fn size(&self) -> (u32, u32);
    /// Everything that would make drawing fail or draw nothing, found before any file is written.
    fn check(&self) -> Msg<()>;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Msg<()>;
}

fn with_extension(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn save_figure(fig: &impl Figure, stem: &Path) -> Result<Vec<PathBuf>> {
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

fn check_size((w, h): (u32, u32), what: &str) -> Msg<()> {
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

fn render_png(fig: &impl Figure) -> Msg<Vec<u8>> {
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

fn render_svg(fig: &impl Figure) -> Msg<String> {
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
struct Sizes {
    title: f64,
    caption: f64,
    desc: f64,
    tick: f64,
    legend: f64,
    marker: u32,
}

impl Sizes {
    fn new((w, h): (u32, u32)) -> Self {
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

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

/// Draws `title` centred in a strip at the top of `area` (shrunk to fit its width) and returns
/// the rest of the area.
fn split_title<DB: DrawingBackend>(
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
struct Extent(Option<(f64, f64)>);

impl Extent {
    fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.0 = Some(match self.0 {
                None => (v, v),
                Some((lo, hi)) => (lo.min(v), hi.max(v)),
            });
        }
    }

    /// The extent padded by 5% a side; a single value gets a range around it.
    fn padded(self, axis: &str) -> Msg<(f64, f64)> {
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
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
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
fn band_polygons(band: &[(f64, f64, f64)]) -> Vec<Vec<(f64, f64)>> {
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

/// Tick label formatting with as many decimals as the tick step needs.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    /// Digits after the point (of the mantissa, in scientific notation).
    decimals: usize,
    scientific: bool,
    zero: f64,
}

/// Digits after the point that `x` needs (at most `max`).
fn decimals_for(x: f64, max: usize) -> usize {
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
    fn new((lo, hi): (f64, f64)) -> (Self, Vec<f64>) {
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

    fn format(&self, v: f64) -> String {
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

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The axes of one plot: ranges, labels, tick formats and the room their text needs.
struct Axes<'s> {
    xr: (f64, f64),
    yr: (f64, f64),
    x_label: &'s str,
    y_label: &'s str,
    xt: Ticks,
    yt: Ticks,
    x_tick_w: u32,
    y_tick_w: u32,
}

impl<'s> Axes<'s> {
    fn new<DB: DrawingBackend>(
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
    fn build<'a, DB: DrawingBackend>(
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
    fn draw_mesh<DB: DrawingBackend>(&self, chart: &mut Chart<DB>, sz: &Sizes) -> Msg<()> {
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

/// A legend entry's swatch, drawn 24 px wide from its left middle point: a band rectangle, a
/// line and a marker, each optional.
#[derive(Debug, Clone, Copy)]
struct Swatch {
    colour: RGBColor,
    line: bool,
    dashed: bool,
    band: bool,
    marker: u32,
}

/// Adds pixel samples along a polyline (in data coordinates) to `out`, relative to the plot area.
fn sample_path<DB: DrawingBackend>(
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
    fn draw<DB: DrawingBackend>(
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
struct Legend {
    entries: Vec<(String, Swatch)>,
    font_size: f64,
    w: i32,
    h: i32,
    margin: i32,
    line_h: i32,
    /// Width of the swatch column.
    swatch_w: i32,
    /// Gap between the plot and a legend outside it.
    gap: i32,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
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
    fn measure<DB: DrawingBackend>(
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
    fn origin(&self, placement: Placement, (pw, ph): (u32, u32)) -> (i32, i32) {
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
    fn corner(&self, plot: (u32, u32), samples: &[(i32, i32)]) -> (usize, Placement) {
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
    fn draw<DB: DrawingBackend>(
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
fn lay_out<'a, DB: DrawingBackend>(
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

/// Parts of a polyline inside `lo <= y <= hi` (plotters does not clip to the plot area).
fn clip_y(run: &[(f64, f64)], (lo, hi): (f64, f64)) -> Vec<Vec<(f64, f64)>> {
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
fn clip_polygon_y(poly: &[(f64, f64)], (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
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
struct LineGeometry {
    /// (series index, polygon).
    bands: Vec<(usize, Vec<(f64, f64)>)>,
    /// (series index, connected points).
    lines: Vec<(usize, Vec<(f64, f64)>)>,
    /// (series index, point), for series short enough to mark their points.
    markers: Vec<(usize, (f64, f64))>,
    /// The reference line, when inside the y range.
    hline: Option<[(f64, f64); 2]>,
}

impl LineGeometry {
    fn samples<DB: DrawingBackend>(&self, chart: &Chart<DB>) -> Vec<(i32, i32)> {
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
    fn check_data(&self) -> Msg<()> {
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
    fn extents(&self) -> (Extent, Extent) {
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
    fn dashed(&self, i: usize) -> bool {
        self.series[i].dashed != ((i / PALETTE.len()) % 2 == 1)
    }

    /// Series `i` is short enough to mark its points.
    fn has_markers(&self, i: usize) -> bool {
        let finite = self.series[i]
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .count();
        finite <= MARKER_MAX_POINTS
    }

    fn geometry(&self, xr: (f64, f64), yr: (f64, f64)) -> LineGeometry {
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

    fn draw_panel<DB: DrawingBackend>(
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
    fn shape(&self) -> (usize, usize) {
        let cols = self.columns.clamp(1, self.charts.len().max(1));
        (cols, self.charts.len().div_ceil(cols).max(1))
    }
}

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

/// plotters' bitmap backend with its own text rasteriser.
mod png_backend {
    use ab_glyph::{Font, FontRef, ScaleFont};
    use plotters::prelude::{BitMapBackend, DrawingBackend};
    use plotters::style::text_anchor::{HPos, VPos};
    use plotters_backend::{
        BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
    };

    use super::{Msg, OrMsg, FONT};

    /// plotters' bitmap backend with its own text rasteriser. plotters' ab_glyph text drops each
    /// glyph's left side bearing (uneven letter spacing) and sets text high; this draws glyphs at
    /// their proper pen positions, with sub-pixel placement, the text box plotters laid out, and
    /// capitals centred vertically in it.
    pub(super) struct PngBackend<'a> {
        inner: BitMapBackend<'a>,
        font: FontRef<'static>,
    }

    impl<'a> PngBackend<'a> {
        pub(super) fn new(rgb: &'a mut [u8], size: (u32, u32)) -> Msg<Self> {
            let font = FontRef::try_from_slice(FONT).or_msg()?;
            Ok(PngBackend {
                inner: BitMapBackend::with_buffer(rgb, size),
                font,
            })
        }
    }

    type BackendResult<E> = std::result::Result<(), DrawingErrorKind<E>>;

    impl DrawingBackend for PngBackend<'_> {
        type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

        fn get_size(&self) -> (u32, u32) {
            self.inner.get_size()
        }

        fn ensure_prepared(&mut self) -> BackendResult<Self::ErrorType> {
            self.inner.ensure_prepared()
        }

        fn present(&mut self) -> BackendResult<Self::ErrorType> {
            self.inner.present()
        }

        fn draw_pixel(
            &mut self,
            p: BackendCoord,
            c: BackendColor,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_pixel(p, c)
        }

        fn draw_line<S: BackendStyle>(
            &mut self,
            from: BackendCoord,
            to: BackendCoord,
            style: &S,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_line(from, to, style)
        }

        fn draw_rect<S: BackendStyle>(
            &mut self,
            upper_left: BackendCoord,
            bottom_right: BackendCoord,
            style: &S,
            fill: bool,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_rect(upper_left, bottom_right, style, fill)
        }

        fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            path: I,
            style: &S,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_path(path, style)
        }

        fn draw_circle<S: BackendStyle>(
            &mut self,
            center: BackendCoord,
            radius: u32,
            style: &S,
            fill: bool,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_circle(center, radius, style, fill)
        }

        fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            vert: I,
            style: &S,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.fill_polygon(vert, style)
        }

        fn blit_bitmap(
            &mut self,
            pos: BackendCoord,
            size: (u32, u32),
            src: &[u8],
        ) -> BackendResult<Self::ErrorType> {
            self.inner.blit_bitmap(pos, size, src)
        }

        fn draw_text<S: BackendTextStyle>(
            &mut self,
            text: &str,
            style: &S,
            pos: BackendCoord,
        ) -> BackendResult<Self::ErrorType> {
            let colour = style.color();
            if colour.alpha == 0.0 || text.is_empty() {
                return Ok(());
            }
            // The box plotters used to place the text (and that estimate_text_size reports).
            let ((x0, y0), (x1, y1)) = style
                .layout_box(text)
                .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
            let (bw, bh) = (x1 - x0, y1 - y0);
            let dx = match style.anchor().h_pos {
                HPos::Left => 0,
                HPos::Right => -bw,
                HPos::Center => -bw / 2,
            };
            let dy = match style.anchor().v_pos {
                VPos::Top => 0,
                VPos::Center => -bh / 2,
                VPos::Bottom => -bh,
            };
            let font = self.font.as_scaled(style.size() as f32);
            let cap = font
                .outline_glyph(font.scaled_glyph('H'))
                .map_or(font.ascent() * 0.75, |g| -g.px_bounds().min.y);
            let baseline = (bh as f32 + cap) / 2.0;
            let mut coverage: Vec<(i32, i32, f32)> = Vec::new();
            let mut caret = 0f32;
            let mut prev = None;
            for ch in text.chars() {
                let id = font.glyph_id(ch);
                if let Some(p) = prev {
                    caret += font.kern(p, id);
                }
                prev = Some(id);
                let glyph =
                    id.with_scale_and_position(font.scale(), ab_glyph::point(caret, baseline));
                caret += font.h_advance(id);
                if let Some(outline) = font.outline_glyph(glyph) {
                    let b = outline.px_bounds();
                    let (gx, gy) = (b.min.x as i32, b.min.y as i32);
                    outline.draw(|x, y, c| coverage.push((gx + x as i32, gy + y as i32, c)));
                }
            }
            let transform = style.transform();
            let (w, h) = self.inner.get_size();
            for (x, y, c) in coverage {
                if c <= 0.0 {
                    continue;
                }
                let (tx, ty) = transform.transform(x + dx, y + dy);
                let (px, py) = (pos.0 + tx, pos.1 + ty);
                if px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                    let alpha = colour.alpha * f64::from(c.min(1.0));
                    self.inner.draw_pixel(
                        (px, py),
                        BackendColor {
                            alpha,
                            rgb: colour.rgb,
                        },
                    )?;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory for one test's figures: `$PUPPETLENS_PLOT_DEMO` (kept, to look at them) or a
    /// temporary directory removed when the guard drops.
    struct Demo {
        dir: PathBuf,
        keep: bool,
    }

    impl Demo {
        fn new(test: &str) -> Self {
            let (dir, keep) = match std::env::var_os("PUPPETLENS_PLOT_DEMO") {
                Some(d) => (PathBuf::from(d), true),
                None => (
                    std::env::temp_dir()
                        .join(format!("puppetlens-plot-{}-{test}", std::process::id())),
                    false,
                ),
            };
            std::fs::create_dir_all(&dir).unwrap();
            Demo { dir, keep }
        }

        fn join(&self, name: &str) -> PathBuf {
            self.dir.join(name)
        }
    }

    impl Drop for Demo {
        fn drop(&mut self) {
            if !self.keep {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }

    /// Decodes a PNG into (width, height, RGB bytes).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Checks both files of a saved figure and returns the decoded PNG.
    fn check_files(files: &[PathBuf], size: (u32, u32), title: &str) -> (u32, u32, Vec<u8>) {
        assert_eq!(files.len(), 2);
        assert!(
            files[0].extension().is_some_and(|e| e == "png"),
            "{files:?}"
        );
        assert!(
            files[1].extension().is_some_and(|e| e == "svg"),
            "{files:?}"
        );
        let (w, h, rgb) = decode(&files[0]);
        assert_eq!((w, h), size);
        assert!(
            rgb.chunks(3).any(|p| p != &rgb[..3]),
            "PNG is a single colour"
        );
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains(title), "SVG lacks the title {title:?}");
        (w, h, rgb)
    }

    /// Number of dark pixels (text, not grid or data colours) in rows `y0..y1`.
    fn dark_pixels(w: u32, rgb: &[u8], rows: std::ops::Range<u32>) -> usize {
        let w = w as usize;
        rows.flat_map(|y| (0..w).map(move |x| (y as usize * w + x) * 3))
            .filter(|&i| rgb[i] < 80 && rgb[i + 1] < 80 && rgb[i + 2] < 80)
            .count()
    }

    fn line_chart() -> LineChart {
        let xs: Vec<f64> = (0..24).map(f64::from).collect();
        let acc: Vec<(f64, f64)> = xs
            .iter()
            .map(|&x| (x, 0.5 + 0.45 / (1.0 + (-(x - 10.0) / 2.5).exp())))
            .collect();
        let band = acc
            .iter()
            .map(|&(x, y)| (x, y - 0.04, (y + 0.04).min(1.0)))
            .collect();
        let shuffled: Vec<(f64, f64)> = xs
            .iter()
            .map(|&x| {
                (
                    x,
                    if x == 7.0 {
                        f64::NAN
                    } else {
                        0.5 + 0.03 * (x * 1.3).sin()
                    },
                )
            })
            .collect();
        LineChart {
            title: "Linear probe accuracy by layer (SmolLM2-135M)".into(),
            x_label: "layer".into(),
            y_label: "held-out accuracy".into(),
            series: vec![
                Series {
                    label: "resid_post probe (95% CI)".into(),
                    points: acc,
                    band: Some(band),
                    dashed: false,
                },
                Series {
                    label: "shuffled labels".into(),
                    points: shuffled,
                    band: None,
                    dashed: true,
                },
            ],
            y_range: None,
            hline: Some((0.5, "chance".into())),
            ..Default::default()
        }
    }

    #[test]
    fn line_chart_writes_png_and_svg_with_readable_text() {
        let dir = Demo::new("line");
        let chart = line_chart();
        let files = chart.save(dir.join("line")).unwrap();
        assert_eq!(files, vec![dir.join("line.png"), dir.join("line.svg")]);
        let (w, _, rgb) = check_files(&files, (1000, 600), "Linear probe accuracy by layer");
        // The title strip holds only the title: it must have been drawn.
        assert!(
            dark_pixels(w, &rgb, 0..45) > 200,
            "no title text in the PNG"
        );
        // The bottom strip holds the x tick labels and axis label.
        assert!(
            dark_pixels(w, &rgb, 520..600) > 100,
            "no x axis text in the PNG"
        );
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        for text in ["held-out accuracy", "layer", "chance", "shuffled labels"] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
    }

    #[test]
    fn scatter_chart_and_grid_are_saved() {
        let dir = Demo::new("scatter_grid");
        let cloud = |cx: f64, cy: f64, n: usize| -> Vec<(f64, f64)> {
            (0..n)
                .map(|i| {
                    let t = i as f64 * 2.399;
                    let r = (i as f64 / n as f64).sqrt();
                    (cx + r * t.cos(), cy + 0.6 * r * t.sin())
                })
                .collect()
        };
        let scatter = ScatterChart {
            title: "PCA of resid_post activations".into(),
            x_label: "PC 1".into(),
            y_label: "PC 2".into(),
            panels: [2.0, 6.0, 12.0]
                .iter()
                .enumerate()
                .map(|(i, &sep)| ScatterPanel {
                    title: format!("layer {}", 4 * (i + 1)),
                    groups: vec![
                        ("sycophantic".into(), cloud(-sep / 2.0, 0.0, 60)),
                        ("honest".into(), cloud(sep / 2.0, 0.5, 60)),
                    ],
                })
                .collect(),
            width: 1500,
            height: 550,
        };
        let files = scatter.save(dir.join("scatter")).unwrap();
        let (w, _, rgb) = check_files(&files, (1500, 550), "PCA of resid_post activations");
        assert!(dark_pixels(w, &rgb, 0..40) > 200);

        let charts: Vec<LineChart> = [3usize, 8, 12, 20]
            .iter()
            .map(|&layer| {
                let coefs: Vec<f64> = (-4..=4).map(|c| f64::from(c) * 2.0).collect();
                let slope = layer as f64 / 20.0;
                LineChart {
                    title: format!("layer {layer}"),
                    x_label: "steering coefficient".into(),
                    y_label: "P(matching)".into(),
                    series: vec![
                        Series::new(
                            "steered",
                            coefs
                                .iter()
                                .map(|&c| (c, 1.0 / (1.0 + (-slope * c).exp())))
                                .collect(),
                        ),
                        Series {
                            label: "constant".into(),
                            points: vec![(0.0, 0.3)],
                            ..Default::default()
                        },
                    ],
                    y_range: Some((0.0, 1.0)),
                    hline: Some((0.5, "unsteered".into())),
                    ..Default::default()
                }
            })
            .collect();
        let grid = LineGrid {
            title: "Dose-response of the sycophancy vector".into(),
            charts,
            columns: 2,
            ..Default::default()
        };
        let files = grid.save(dir.join("grid")).unwrap();
        let (w, _, rgb) = check_files(
            &files,
            (1200, 800),
            "Dose-response of the sycophancy vector",
        );
        assert!(dark_pixels(w, &rgb, 0..45) > 200);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains("layer 20"));
    }

    #[test]
    fn single_points_and_constant_series_get_a_padded_range() {
        let dir = Demo::new("constant");
        let chart = LineChart {
            title: "constant".into(),
            series: vec![
                Series::new("one point", vec![(3.0, 0.0)]),
                Series::new("flat", vec![(3.0, 0.0), (3.0, 0.0), (f64::INFINITY, 1.0)]),
            ],
            ..Default::default()
        };
        let files = chart.save(dir.join("constant")).unwrap();
        check_files(&files, (1000, 600), "constant");
    }

    #[test]
    fn empty_charts_are_errors_naming_the_file() {
        let dir = Demo::new("empty");
        let empty = LineChart {
            title: "nothing".into(),
            ..Default::default()
        };
        let err = empty.save(dir.join("empty")).unwrap_err();
        assert!(matches!(err, Error::Plot { .. }), "{err}");
        assert!(err.to_string().contains("empty.png"), "{err}");
        assert!(!dir.join("empty.png").exists());

        let all_nan = LineChart {
            series: vec![Series::new("nan", vec![(f64::NAN, 1.0), (0.0, f64::NAN)])],
            ..Default::default()
        };
        let err = all_nan.save(dir.join("nan")).unwrap_err();
        assert!(
            err.to_string().contains("nan.png: cannot draw figure"),
            "{err}"
        );

        let err = LineGrid::default()
            .save(dir.join("grid-empty"))
            .unwrap_err();
        assert!(err.to_string().contains("grid-empty.png"), "{err}");
        let err = ScatterChart {
            panels: vec![ScatterPanel::default()],
            ..Default::default()
        }
        .save(dir.join("scatter-empty"))
        .unwrap_err();
        assert!(err.to_string().contains("has no finite points"), "{err}");
        let bad_range = LineChart {
            y_range: Some((1.0, 1.0)),
            ..line_chart()
        };
        assert!(bad_range.save(dir.join("bad")).is_err());
    }

    #[test]
    fn many_series_long_labels_and_large_values_render() {
        let dir = Demo::new("many");
        let series = (0..10)
            .map(|i| {
                let points = (0..200)
                    .map(|t| {
                        let (t, i) = (f64::from(t), f64::from(i));
                        (t * 1e3, (i - 5.0) * 2.0e6 + 1e6 * (t / 15.0 + i).sin())
                    })
                    .collect();
                Series::new(format!("head {i} of layer 14 (mean-ablated)"), points)
            })
            .collect();
        let chart = LineChart {
            x_label: "token position".into(),
            y_label: "activation norm".into(),
            series,
            width: 1200,
            height: 700,
            ..Default::default()
        };
        let files = chart.save(dir.join("many")).unwrap();
        check_files(&files, (1200, 700), "head 9 of layer 14 (mean-ablated)");
        let leftovers: Vec<_> = std::fs::read_dir(&dir.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".many"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_fixed_y_range_clips_what_lies_outside_it() {
        let dir = Demo::new("clipped");
        let chart = LineChart {
            title: "Clipped to 0.6..0.9".into(),
            y_range: Some((0.6, 0.9)),
            hline: Some((0.5, "chance (below the range)".into())),
            ..line_chart()
        };
        let files = chart.save(dir.join("clipped")).unwrap();
        let (w, h, rgb) = check_files(&files, (1000, 600), "Clipped to 0.6..0.9");
        // Nothing in the series' blue above the plot (title strip) or below it (axis labels).
        let blue = |rows: std::ops::Range<u32>| {
            rows.flat_map(|y| (0..w).map(move |x| ((y * w + x) * 3) as usize))
                .filter(|&i| rgb[i] < 60 && rgb[i + 1] > 90 && rgb[i + 1] < 140 && rgb[i + 2] > 150)
                .count()
        };
        assert_eq!(blue(0..60), 0, "a line was drawn above the plot");
        assert_eq!(blue(h - 50..h), 0, "a line was drawn below the plot");
    }

    #[test]
    fn clipping_keeps_the_parts_inside_the_range() {
        let runs = clip_y(&[(0.0, 0.0), (1.0, 2.0), (2.0, 0.0)], (0.5, 1.5));
        assert_eq!(
            runs,
            vec![
                vec![(0.25, 0.5), (0.75, 1.5)],
                vec![(1.25, 1.5), (1.75, 0.5)]
            ]
        );
        assert_eq!(clip_y(&[(0.0, 1.0), (1.0, 1.0)], (0.0, 2.0)).len(), 1);
        assert!(clip_y(&[(0.0, 3.0)], (0.0, 2.0)).is_empty());
        let square = [(0.0, 0.0), (1.0, 0.0), (1.0, 2.0), (0.0, 2.0)];
        let clipped = clip_polygon_y(&square, (0.5, 1.0));
        assert!(
            clipped.iter().all(|p| p.1 >= 0.5 && p.1 <= 1.0),
            "{clipped:?}"
        );
        assert_eq!(clipped.len(), 4);
    }

    #[test]
    fn tick_labels_use_the_decimals_the_step_needs() {
        let (t, _) = Ticks::new((0.0, 1.0));
        assert_eq!(t.format(0.1), "0.1");
        assert_eq!(t.format(-1e-17), "0.0");
        let (t, _) = Ticks::new((0.0, 30.0));
        assert_eq!(t.format(5.0), "5");
        let (t, _) = Ticks::new((0.0, 0.2));
        assert_eq!(t.format(0.05), "0.05");
        let (t, _) = Ticks::new((-1.2e7, 9.0e6));
        assert_eq!(t.format(5e6), "5.0e6");
        assert_eq!(t.format(-1e7), "-1.0e7");
        assert_eq!(t.format(0.0), "0");
    }
}

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
    fn grid(&self) -> (usize, usize) {
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
    fn scale(&self) -> f64 {
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
fn diverging(v: f64) -> RGBColor {
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
