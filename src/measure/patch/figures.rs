//! The patching figures.

use super::*;

// ---------------------------------------------------------------------------------------------
// Figures.

/// Draws `patching_by_layer`, `gap_vs_rank` and `patching_positions` (PNG and SVG each) for a set
/// of pairs `(tuned name, report)` into `dir`; `token` spells a token id for the position axis.
pub fn write_figures(
    pairs: &[(&str, &Patching)],
    dir: impl AsRef<Path>,
    token: impl Fn(u32) -> String,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    let y = |e: &Effect| e.fraction.unwrap_or(e.delta_p);
    let unit = |p: &Patching| {
        if p.verdict.kind == VerdictKind::NoGap {
            "change of P(matching)"
        } else {
            "fraction of the gap restored"
        }
    };
    let charts: Vec<LineChart> = pairs
        .iter()
        .map(|(name, p)| {
            let line = |label: &str, f: &dyn Fn(&LayerPatch) -> f64, dashed| Series {
                dashed,
                ..Series::new(
                    label,
                    p.layers.iter().map(|r| (r.layer as f64, f(r))).collect(),
                )
            };
            let mut full = line("full", &|r| y(&r.full), false);
            if p.verdict.kind != VerdictKind::NoGap {
                full.band = Some(
                    p.layers
                        .iter()
                        .filter_map(|r| r.full.ci.map(|c| (r.layer as f64, c.0, c.1)))
                        .collect(),
                );
            }
            LineChart {
                title: format!("{name} ({})", p.family),
                x_label: "layer".into(),
                y_label: unit(p).into(),
                series: vec![
                    full,
                    line("last position", &|r| y(&r.last), false),
                    line("rank-1 (top direction)", &|r| y(&r.rank1), false),
                    line("mean-difference direction", &|r| y(&r.mean_diff), true),
                    line("random direction", &|r| y(&r.random1), true),
                ],
                hline: Some((0.0, "no effect".into())),
                ..LineChart::default()
            }
        })
        .collect();
    files.extend(
        grid("Activation patching, tuned into base, by layer", charts)
            .save(dir.join("patching_by_layer"))?,
    );

    let charts: Vec<LineChart> = pairs
        .iter()
        .filter_map(|(name, p)| {
            let c = p.ranks.first()?;
            let lx = |k: usize| (k as f64).log2();
            let mut random = Series::new(
                "random subspaces (mean of seeds)",
                c.points
                    .iter()
                    .filter(|q| !q.random.is_empty())
                    .map(|q| (lx(q.k), q.random_of_full))
                    .collect(),
            );
            random.dashed = true;
            random.band = Some(
                c.points
                    .iter()
                    .filter(|q| !q.random.is_empty())
                    .map(|q| {
                        (
                            lx(q.k),
                            q.random_of_full - q.random_spread,
                            q.random_of_full + q.random_spread,
                        )
                    })
                    .collect(),
            );
            Some(LineChart {
                title: format!("{name}, layer {}", c.layer),
                x_label: "log2 of subspace dimension k".into(),
                y_label: "fraction of the full-layer patch".into(),
                series: vec![
                    Series::new(
                        "top-k principal subspace",
                        c.points.iter().map(|q| (lx(q.k), q.of_full)).collect(),
                    ),
                    random,
                ],
                hline: Some((0.8, "80%".into())),
                ..LineChart::default()
            })
        })
        .collect();
    if !charts.is_empty() {
        files.extend(
            grid("How many directions: the rank curve", charts).save(dir.join("gap_vs_rank"))?,
        );
    }

    // Top row: denoising (tuned into base) per pair; bottom row: noising (base into tuned).
    let panel = |name: &str, p: &Patching, noise: bool| {
        let m = &p.positions;
        let (fraction, delta) = if noise {
            (&m.noise_fraction, &m.noise_delta_p)
        } else {
            (&m.fraction, &m.delta_p)
        };
        let vals = fraction.clone().unwrap_or_else(|| delta.clone());
        // Columns left to right in reading order: the earliest position first.
        let cols: Vec<usize> = (0..m.offsets.len()).rev().collect();
        HeatPanel {
            title: format!(
                "{name}, {}: {}",
                if noise { "noising" } else { "denoising" },
                match (fraction.is_some(), noise) {
                    (true, false) => "fraction restored",
                    (true, true) => "fraction removed",
                    (false, _) => "change of P",
                }
            ),
            x_labels: cols
                .iter()
                .map(|&j| token(m.tokens[j]).replace('\n', "\\n"))
                .collect(),
            y_labels: m.layers.iter().map(|l| l.to_string()).collect(),
            values: vals
                .iter()
                .map(|row| cols.iter().map(|&j| row[j]).collect())
                .collect(),
            cell_text: Vec::new(),
        }
    };
    let panels: Vec<HeatPanel> = [false, true]
        .iter()
        .flat_map(|&noise| pairs.iter().map(move |(name, p)| (name, p, noise)))
        .map(|(name, p, noise)| panel(name, p, noise))
        .collect();
    let heat = HeatMap {
        title: "Patching one position: layer x position (top: tuned into base; bottom: base into tuned)"
            .into(),
        x_label: "token (items aligned at their end)".into(),
        y_label: "layer".into(),
        panels,
        columns: pairs.len().max(1),
        width: 520 * pairs.len().max(1) as u32 + 120,
        height: 1300,
    };
    files.extend(heat.save(dir.join("patching_positions"))?);
    Ok(files)
}

pub(super) fn grid(title: &str, charts: Vec<LineChart>) -> LineGrid {
    let columns = charts.len().clamp(1, 3);
    let rows = charts.len().div_ceil(columns).max(1);
    LineGrid {
        title: title.into(),
        columns,
        width: 620 * columns as u32,
        height: 460 * rows as u32 + 60,
        charts,
    }
}
