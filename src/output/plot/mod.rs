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

mod axes;
mod heat;
mod legend;
mod line;
mod png_backend;
mod render;
mod scatter;

use axes::*;
pub use heat::{HeatMap, HeatPanel};
use legend::*;
#[cfg(test)]
use line::*;
use render::*;

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
