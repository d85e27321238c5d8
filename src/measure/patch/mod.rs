//! Cross-model activation patching and the puppeteer rank: does a small causal change carry the
//! tuned behaviour, and how many directions does it need?
//!
//! [`patching`] compares a base model with a tuned sibling on held-out A/B items (both models see
//! the same token ids) by swapping activations between them at one layer's hook point of a
//! [`Family`] (`resid_pre`, `resid_post`, `attn_out`, `mlp_out`):
//! - **denoising**: the base model runs with the tuned model's activation; the fraction of the
//!   behaviour gap it restores is `(P_patched - P_base) / (P_tuned - P_base)`;
//! - **noising**: the tuned model runs with the base's; the fraction it removes is
//!   `(P_tuned - P_patched) / (P_tuned - P_base)`;
//!
//! at all positions, at the last position, and per position (a layer x position map, items aligned
//! at their end), with percentile-bootstrap 95% intervals over items. Gaps under
//! [`PatchOptions::min_gap`] give absolute changes of P only.
//!
//! **The rank curve.** Per layer, the principal directions of the per-token `tuned - base`
//! differences on the training items (uncentred: a constant shift, the simplest puppeteer, is the
//! first direction, which centred PCA would not see). Patching only their top-k subspace,
//! `base + P_k (tuned - base)`, for k = 1, 2, 4, ... shows how many directions the change needs: the
//! *puppeteer rank* `rank50` / `rank80` is the smallest k restoring 50% / 80% of what the full-layer
//! patch restores. Random k-dimensional subspaces patched the same way (several seeds) are the
//! control. A [`Verdict`] sums it up per pair: best layer, fraction restored, ranks, the single
//! mean-difference direction, the random control, and the patch's specificity (KL on neutral text,
//! effect on an unrelated behaviour).
//!
//! [`patch_report`] is the one call from an A/B question file: prompts for both models (checked to
//! be the same ids), [`patching`], its files and its figures.
//!
//! Cost: patched forwards resume at the patched layer from the cached residual
//! ([`Model::run_from`]), the subspaces of one layer run as rows of one batch, and single-position
//! patches reuse the recipient's keys and values for the columns before the patched one, so only
//! the columns from it on are recomputed.
//!
//! ```no_run
//! use puppetlens::diff::AbSplits;
//! use puppetlens::patch::{patching, PatchOptions};
//! use puppetlens::{LoadOptions, Model};
//! let base = Model::load("base.gguf", &LoadOptions::default())?;
//! let tuned = Model::load("tuned", &LoadOptions::default())?;
//! let data = AbSplits::default(); // train (the subspaces) and test (every number) A/B items
//! let report = patching(&base, &tuned, &data, &PatchOptions::default())?;
//! println!("{}", report.verdict.reading);
//! report.write("notebooks-data/patch")?;
//! # Ok::<(), puppetlens::Error>(())
//! ```

mod dataset;
mod engine;
mod figures;
mod subspace;
pub mod sweep;
mod verdict;

pub use dataset::{patch_report, PatchReportOptions};
use engine::*;
pub use figures::write_figures;
pub(crate) use subspace::top_eigen;
use subspace::*;
pub use verdict::BEST_LAYER_SHARE;
use verdict::*;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Tensor, D};
use serde::Serialize;

use crate::batch::Batch;
use crate::cache::ActivationCache;
use crate::data::SplitMix64;
use crate::diff::{check_pair, AbSplits};
use crate::eval::{answer_ids, check_cases, score_rows, AbCase, AbScore, SWEEP_ROWS};
use crate::hook::{HookPoint, Hooks};
use crate::model::{KvCache, Model};
use crate::plot::{HeatMap, HeatPanel, LineChart, LineGrid, Series};
use crate::probe::percentile_ci;
use crate::util::{atomic_write_bytes, length_batches, Progress};
use crate::{Error, Result};

/// Which activation of a block is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `blocks.{l}.hook_resid_pre`: the residual stream entering block `l`.
    ResidPre,
    /// `blocks.{l}.hook_resid_post`: the residual stream leaving block `l`.
    ResidPost,
    /// `blocks.{l}.hook_attn_out`: block `l`'s attention output (after Gemma's post-attention norm).
    AttnOut,
    /// `blocks.{l}.hook_mlp_out`: block `l`'s MLP output (after Gemma's post-MLP norm).
    MlpOut,
}

impl Family {
    /// All four, in the order of a block.
    pub const ALL: [Family; 4] = [
        Family::ResidPre,
        Family::AttnOut,
        Family::MlpOut,
        Family::ResidPost,
    ];

    /// The hook point of this family at layer `l`.
    pub fn point(self, l: usize) -> HookPoint {
        match self {
            Family::ResidPre => HookPoint::ResidPre(l),
            Family::ResidPost => HookPoint::ResidPost(l),
            Family::AttnOut => HookPoint::AttnOut(l),
            Family::MlpOut => HookPoint::MlpOut(l),
        }
    }

    /// Where the patched forward resumes, and the recipient's activation the patched value is
    /// added to there (`resid_mid = resid_pre + attn_out`, `resid_post = resid_mid + mlp_out`).
    fn resume(self, l: usize) -> (HookPoint, Option<HookPoint>) {
        match self {
            Family::ResidPre => (HookPoint::ResidPre(l), None),
            Family::ResidPost => (HookPoint::ResidPost(l), None),
            Family::AttnOut => (HookPoint::ResidMid(l), Some(HookPoint::ResidPre(l))),
            Family::MlpOut => (HookPoint::ResidPost(l), Some(HookPoint::ResidMid(l))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::ResidPre => "resid_pre",
            Family::ResidPost => "resid_post",
            Family::AttnOut => "attn_out",
            Family::MlpOut => "mlp_out",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = Error;

    /// `resid_pre`, `resid_post`, `attn_out` or `mlp_out` (a `hook_` prefix is accepted).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().trim_start_matches("hook_");
        Family::ALL
            .into_iter()
            .find(|f| f.name() == t)
            .ok_or_else(|| Error::InvalidArgument {
                name: "family".into(),
                msg: format!("`{s}`: expected resid_pre, resid_post, attn_out or mlp_out"),
            })
    }
}

/// Options of [`patching`].
#[derive(Debug, Clone)]
pub struct PatchOptions {
    /// Hook point family patched (default `resid_pre`).
    pub family: Family,
    /// Layers swept (`None`, the default: all).
    pub layers: Option<Vec<usize>>,
    /// Subspace dimensions of the rank curve (default 1, 2, 4, ..., 64; each below the width; the
    /// full width is always added).
    pub ranks: Vec<usize>,
    /// Layers of the rank curve (`None`, the default: the best layer by full patching, when the
    /// behaviour gap is at least `min_gap`).
    pub rank_layers: Option<Vec<usize>>,
    /// Random subspaces per dimension in the control (default 3).
    pub random_seeds: usize,
    /// Positions from the end in the layer x position maps, denoising and noising (default 10; at
    /// least the last position is always patched alone).
    pub positions: usize,
    /// Items per forward pass (default 8).
    pub batch_size: usize,
    /// Bootstrap resamples of the held-out items (default 1000).
    pub bootstrap: usize,
    /// Behaviour gaps `|P_tuned - P_base|` below this give absolute changes only (default 0.05).
    pub min_gap: f64,
    /// Seed of the random subspaces, the eigensolver's start and the bootstrap (default 0).
    pub seed: u64,
    /// Neutral prompts: KL of the best patch to the base model on them (empty: not measured).
    pub neutral: Vec<Vec<u32>>,
    /// Items of an unrelated A/B behaviour: the best patch's effect on it (empty: not measured).
    pub unrelated: Vec<AbCase>,
    /// Progress bars on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for PatchOptions {
    fn default() -> Self {
        Self {
            family: Family::ResidPre,
            layers: None,
            ranks: vec![1, 2, 4, 8, 16, 32, 64],
            rank_layers: None,
            random_seeds: 3,
            positions: 10,
            batch_size: 8,
            bootstrap: 1000,
            min_gap: 0.05,
            seed: 0,
            neutral: Vec::new(),
            unrelated: Vec::new(),
            progress: true,
        }
    }
}

/// Held-out items the bootstrap needs at least.
pub const MIN_TEST_ITEMS: usize = 8;

/// The largest `rank80` the verdict still calls a puppeteer: a change that 8 of the residual
/// stream's 576-640 directions carry is small; one that needs more is a diffuse change of tendency.
pub const PUPPETEER_MAX_RANK: usize = 8;

/// One patch's effect on the held-out items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Effect {
    /// Mean P(matching) of the patched model.
    pub p: f64,
    /// Mean logit difference (matching - other) of the patched model.
    pub logit_diff: f64,
    /// Mean change of P(matching) against the recipient's unpatched run.
    pub delta_p: f64,
    /// Fraction of the gap restored (denoising) or removed (noising); `None` when the gap is
    /// below [`PatchOptions::min_gap`].
    pub fraction: Option<f64>,
    /// Its percentile-bootstrap 95% interval over items.
    pub ci: Option<(f64, f64)>,
}

/// The patches of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerPatch {
    /// Layer.
    pub layer: usize,
    /// Denoising, every position.
    pub full: Effect,
    /// Denoising, the last position only.
    pub last: Effect,
    /// Denoising, the top principal direction of the differences only (every position).
    pub rank1: Effect,
    /// Denoising, the mean difference's direction only (every position).
    pub mean_diff: Effect,
    /// Denoising, one random direction (the control of `rank1`).
    pub random1: Effect,
    /// Noising, every position.
    pub noise_full: Effect,
    /// Noising, the last position only.
    pub noise_last: Effect,
    /// Share of the training differences' squared norm along the top direction.
    pub variance1: f64,
}

/// One dimension of a [`RankCurve`].
#[derive(Debug, Clone, Serialize)]
pub struct RankPoint {
    /// Subspace dimension.
    pub k: usize,
    /// Denoising with the top-k principal subspace.
    pub top: Effect,
    /// `top.delta_p` as a fraction of the full patch's.
    pub of_full: f64,
    /// Share of the training differences' squared norm in the subspace.
    pub variance: f64,
    /// Denoising with random k-dimensional subspaces, one per seed.
    pub random: Vec<Effect>,
    /// Mean over seeds of the random subspaces' `delta_p` as a fraction of the full patch's.
    pub random_of_full: f64,
    /// Their standard deviation over seeds.
    pub random_spread: f64,
}

/// Fraction restored against subspace dimension at one layer.
#[derive(Debug, Clone, Serialize)]
pub struct RankCurve {
    /// Layer.
    pub layer: usize,
    /// The full-width patch.
    pub full: Effect,
    /// One point per dimension, increasing; the last is the full width.
    pub points: Vec<RankPoint>,
    /// Smallest k restoring >= 50% of the full patch.
    pub rank50: Option<usize>,
    /// Smallest k restoring >= 80% of the full patch.
    pub rank80: Option<usize>,
}

/// Patching one position at a time: layers x positions (items aligned at their end), denoising
/// (the base receives the tuned model's activation there) and noising (the tuned model receives
/// the base's).
#[derive(Debug, Clone, Serialize)]
pub struct PositionMap {
    /// Rows.
    pub layers: Vec<usize>,
    /// Columns: positions from the end (0 is the last token).
    pub offsets: Vec<usize>,
    /// The first held-out item's tokens at those positions (for the axis).
    pub tokens: Vec<u32>,
    /// Denoising: mean change of P(matching), `[layer][offset]`.
    pub delta_p: Vec<Vec<f64>>,
    /// Denoising: fraction of the gap restored, `[layer][offset]`, when the gap is large enough.
    pub fraction: Option<Vec<Vec<f64>>>,
    /// Noising: mean change of P(matching) of the tuned model, `[layer][offset]`.
    pub noise_delta_p: Vec<Vec<f64>>,
    /// Noising: fraction of the gap removed, `[layer][offset]`, when the gap is large enough.
    pub noise_fraction: Option<Vec<Vec<f64>>>,
}

/// How specific the best patch is.
#[derive(Debug, Clone, Serialize)]
pub struct Specificity {
    /// Layer patched.
    pub layer: usize,
    /// Dimension of the low-rank patch.
    pub k: usize,
    /// Mean per-token KL(base || base with the full patch) on the neutral prompts, nats.
    pub kl_full: Option<f64>,
    /// The same for the top-k patch.
    pub kl_low_rank: Option<f64>,
    /// KL(base || tuned) on the same tokens, for scale.
    pub kl_tuned: Option<f64>,
    /// Unrelated behaviour: P(matching) change of the tuned model against the base.
    pub unrelated_tuned: Option<f64>,
    /// Its change under the full patch.
    pub unrelated_full: Option<f64>,
    /// Its change under the top-k patch.
    pub unrelated_low_rank: Option<f64>,
}

/// What the measurements say about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// The behaviour gap is below [`PatchOptions::min_gap`]: nothing to localise.
    NoGap,
    /// No single layer's patch restores half of the gap.
    NotOneLayer,
    /// At most [`PUPPETEER_MAX_RANK`] directions restore 80% of the best layer's patch, and random
    /// subspaces of that size do not.
    Puppeteer,
    /// The best layer carries the gap but needs more directions: a diffuse change.
    Diffuse,
}

/// The verdict of one pair.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The kind.
    pub kind: VerdictKind,
    /// The earliest layer whose full denoising restores [`BEST_LAYER_SHARE`] of the most any
    /// layer restores (by `|delta_p|` when the gap is small).
    pub best_layer: Option<usize>,
    /// Its full patch.
    pub full: Option<Effect>,
    /// Puppeteer ranks there.
    pub rank50: Option<usize>,
    /// Puppeteer ranks there.
    pub rank80: Option<usize>,
    /// The single mean-difference direction's patch there.
    pub mean_diff: Option<Effect>,
    /// Random subspaces of the judged low-rank dimension (`rank80`, else `rank50`, else the
    /// largest below the full width): mean and spread of their fraction of the full patch.
    pub random_of_full: Option<(f64, f64)>,
    /// Specificity of the best patch.
    pub specificity: Option<Specificity>,
    /// One line.
    pub reading: String,
}

/// Everything [`patching`] measures for a pair.
#[derive(Debug, Clone, Serialize)]
pub struct Patching {
    /// Hook point family.
    pub family: Family,
    /// Training items (the subspaces).
    pub n_train: usize,
    /// Held-out items (every number).
    pub n_test: usize,
    /// Mean P(matching) of the base model.
    pub p_base: f64,
    /// Mean P(matching) of the tuned model.
    pub p_tuned: f64,
    /// Mean logit difference of the base model.
    pub logit_diff_base: f64,
    /// Mean logit difference of the tuned model.
    pub logit_diff_tuned: f64,
    /// Bootstrap 95% interval of `p_tuned - p_base`.
    pub gap_ci: (f64, f64),
    /// Per layer.
    pub layers: Vec<LayerPatch>,
    /// Rank curves.
    pub ranks: Vec<RankCurve>,
    /// Layer x position map.
    pub positions: PositionMap,
    /// The verdict.
    pub verdict: Verdict,
}

impl Patching {
    /// Writes `patching.json` (everything), `patching.csv` (per layer), `rank.json`, `rank.csv`
    /// and `positions.csv` into `dir`, each atomically.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut files = Vec::new();
        let mut put = |name: &str, bytes: Vec<u8>| -> Result<()> {
            let p = dir.join(name);
            atomic_write_bytes(&p, &bytes)?;
            files.push(p);
            Ok(())
        };
        put("patching.json", to_json(self)?)?;
        put("rank.json", to_json(&self.ranks)?)?;
        let f = |o: Option<f64>| o.map_or(String::new(), |v| format!("{v:.6}"));
        let ci = |e: &Effect, i: usize| f(e.ci.map(|c| if i == 0 { c.0 } else { c.1 }));
        let mut csv = String::from("layer,patch,p,logit_diff,delta_p,fraction,ci_lo,ci_hi\n");
        for r in &self.layers {
            for (name, e) in [
                ("full", &r.full),
                ("last", &r.last),
                ("rank1", &r.rank1),
                ("mean_diff", &r.mean_diff),
                ("random1", &r.random1),
                ("noise_full", &r.noise_full),
                ("noise_last", &r.noise_last),
            ] {
                csv.push_str(&format!(
                    "{},{name},{:.6},{:.6},{:.6},{},{},{}\n",
                    r.layer,
                    e.p,
                    e.logit_diff,
                    e.delta_p,
                    f(e.fraction),
                    ci(e, 0),
                    ci(e, 1)
                ));
            }
        }
        put("patching.csv", csv.into_bytes())?;
        let mut csv = String::from(
            "layer,k,p,delta_p,fraction,ci_lo,ci_hi,of_full,variance,random_of_full,random_spread\n",
        );
        for c in &self.ranks {
            for pt in &c.points {
                csv.push_str(&format!(
                    "{},{},{:.6},{:.6},{},{},{},{:.6},{:.6},{:.6},{:.6}\n",
                    c.layer,
                    pt.k,
                    pt.top.p,
                    pt.top.delta_p,
                    f(pt.top.fraction),
                    ci(&pt.top, 0),
                    ci(&pt.top, 1),
                    pt.of_full,
                    pt.variance,
                    pt.random_of_full,
                    pt.random_spread
                ));
            }
        }
        put("rank.csv", csv.into_bytes())?;
        let m = &self.positions;
        let mut csv =
            String::from("layer,offset,token,delta_p,fraction,noise_delta_p,noise_fraction\n");
        for (i, l) in m.layers.iter().enumerate() {
            for (j, o) in m.offsets.iter().enumerate() {
                csv.push_str(&format!(
                    "{l},{o},{},{:.6},{},{:.6},{}\n",
                    m.tokens.get(j).copied().unwrap_or(0),
                    m.delta_p[i][j],
                    f(m.fraction.as_ref().map(|fr| fr[i][j])),
                    m.noise_delta_p[i][j],
                    f(m.noise_fraction.as_ref().map(|fr| fr[i][j]))
                ));
            }
        }
        put("positions.csv", csv.into_bytes())?;
        Ok(files)
    }
}

/// Pretty JSON of a report part.
fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::InvalidArgument {
        name: "report".into(),
        msg: format!("cannot serialise: {e}"),
    })
}

// ---------------------------------------------------------------------------------------------
// The one call.

/// Cross-model activation patching, the rank curve and the verdict for a (base, tuned) pair (see
/// the [module docs](self)): `data.train` builds the subspaces, `data.test` gives every number
/// (at least [`MIN_TEST_ITEMS`] items); `data.val` is not used.
pub fn patching(
    base: &Model,
    tuned: &Model,
    data: &AbSplits,
    opts: &PatchOptions,
) -> Result<Patching> {
    check_same_ids(base, tuned)?;
    let (n_layers, d) = (base.config().n_layers, base.config().d_model);
    if data.test.len() < MIN_TEST_ITEMS {
        return Err(Error::InvalidArgument {
            name: "test items".into(),
            msg: format!(
                "{} held-out items; the bootstrap needs at least {MIN_TEST_ITEMS}",
                data.test.len()
            ),
        });
    }
    if data.train.is_empty() {
        return Err(Error::InvalidArgument {
            name: "train items".into(),
            msg: "no training items to find the subspaces on".into(),
        });
    }
    check_cases(base, &data.test)?;
    check_cases(base, &data.train)?;
    let layers: Vec<usize> = match &opts.layers {
        Some(v) => v.clone(),
        None => (0..n_layers).collect(),
    };
    if layers.is_empty() {
        return Err(Error::InvalidArgument {
            name: "layers".into(),
            msg: "no layers to patch".into(),
        });
    }
    for &l in layers.iter().chain(opts.rank_layers.iter().flatten()) {
        if l >= n_layers {
            return Err(Error::LayerOutOfRange { layer: l, n_layers });
        }
    }
    if let Some(&k) = opts.ranks.iter().find(|&&k| k == 0 || k > d) {
        return Err(Error::InvalidArgument {
            name: "ranks".into(),
            msg: format!("subspace dimension {k}: expected 1..={d} (the residual width)"),
        });
    }
    let min_len = data.test.iter().map(|c| c.ids.len()).min().unwrap_or(1);
    let n_pos = opts.positions.clamp(1, min_len);
    let eng = Engine {
        base,
        tuned,
        family: opts.family,
        batch_size: opts.batch_size.max(1),
    };

    // Subspaces from the training items: the top direction and the mean difference per layer.
    let mom = moments(&eng, &data.train, &layers, opts.progress)?;
    let mut pc1 = BTreeMap::new();
    let mut jobs = Vec::new();
    for &l in &layers {
        let m = &mom[&l];
        let (vals, vecs) = top_eigen(&m.gram, d, 1, opts.seed ^ l as u64)?;
        let trace: f64 = (0..d).map(|i| m.gram[i * d + i]).sum();
        pc1.insert(l, vals[0] / trace.max(f64::MIN_POSITIVE));
        let norm = dot(&m.sum, &m.sum).sqrt().max(f64::MIN_POSITIVE);
        let mean: Vec<f64> = m.sum.iter().map(|x| x / norm).collect();
        for sub in [
            Sub::Full,
            span(base, &vecs)?,
            span(base, &[mean])?,
            span(
                base,
                &random_basis(d, 1, opts.seed.wrapping_add(1000 + l as u64)),
            )?,
        ] {
            jobs.push(Job {
                layer: l,
                dir: Dir::Denoise,
                sub,
            });
        }
        jobs.push(Job {
            layer: l,
            dir: Dir::Noise,
            sub: Sub::Full,
        });
    }
    let mut pos = Vec::new();
    for &l in &layers {
        for offset in 0..n_pos {
            pos.push(PosJob {
                layer: l,
                dir: Dir::Denoise,
                offset,
            });
        }
        for offset in 0..n_pos {
            pos.push(PosJob {
                layer: l,
                dir: Dir::Noise,
                offset,
            });
        }
    }
    let runs = eng.run(&data.test, &jobs, &pos, "patching: layers", opts.progress)?;
    let gap = mean_p(&runs.tuned) - mean_p(&runs.base);
    let r = Ref {
        base: &runs.base,
        tuned: &runs.tuned,
        gap_ok: gap.abs() >= opts.min_gap,
        bootstrap: opts.bootstrap,
        seed: opts.seed,
    };
    let gap_ci = {
        let g: Vec<f64> = runs
            .base
            .iter()
            .zip(&runs.tuned)
            .map(|(b, t)| t.p_matching - b.p_matching)
            .collect();
        let ones = vec![1.0; g.len()];
        ratio_ci(&g, &ones, opts.bootstrap, opts.seed)
    };
    let mut rows = Vec::new();
    let mut map = vec![vec![0.0; n_pos]; layers.len()];
    let mut map_fr = vec![vec![0.0; n_pos]; layers.len()];
    let mut noise_map = vec![vec![0.0; n_pos]; layers.len()];
    let mut noise_fr = vec![vec![0.0; n_pos]; layers.len()];
    for (li, &l) in layers.iter().enumerate() {
        let e = |i: usize, dir| r.effect(&runs.jobs[li * 5 + i], dir);
        // Per layer: n_pos denoising jobs, then n_pos noising jobs.
        let pe = |i: usize, dir| r.effect(&runs.pos[li * 2 * n_pos + i], dir);
        for o in 0..n_pos {
            let eff = pe(o, Dir::Denoise);
            map[li][o] = eff.delta_p;
            map_fr[li][o] = eff.fraction.unwrap_or(f64::NAN);
            let eff = pe(n_pos + o, Dir::Noise);
            noise_map[li][o] = eff.delta_p;
            noise_fr[li][o] = eff.fraction.unwrap_or(f64::NAN);
        }
        rows.push(LayerPatch {
            layer: l,
            full: e(0, Dir::Denoise),
            last: pe(0, Dir::Denoise),
            rank1: e(1, Dir::Denoise),
            mean_diff: e(2, Dir::Denoise),
            random1: e(3, Dir::Denoise),
            noise_full: e(4, Dir::Noise),
            noise_last: pe(n_pos, Dir::Noise),
            variance1: pc1[&l],
        });
    }
    let first = data.test.first().map(|c| c.ids.as_slice()).unwrap_or(&[]);
    let positions = PositionMap {
        layers: layers.clone(),
        offsets: (0..n_pos).collect(),
        tokens: (0..n_pos)
            .map(|o| first[first.len() - 1 - o.min(first.len() - 1)])
            .collect(),
        delta_p: map,
        fraction: r.gap_ok.then_some(map_fr),
        noise_delta_p: noise_map,
        noise_fraction: r.gap_ok.then_some(noise_fr),
    };
    let best = best_layer(&rows);

    // Rank curves.
    let rank_layers: Vec<usize> = match (&opts.rank_layers, best) {
        (Some(v), _) => v.clone(),
        (None, Some(b)) if r.gap_ok => vec![b],
        _ => Vec::new(),
    };
    let mut ks: Vec<usize> = opts.ranks.iter().copied().filter(|&k| k < d).collect();
    ks.sort_unstable();
    ks.dedup();
    let mut ranks = Vec::new();
    if !rank_layers.is_empty() {
        let need: Vec<usize> = rank_layers
            .iter()
            .copied()
            .filter(|l| !mom.contains_key(l))
            .collect();
        let mut mom2 = moments(&eng, &data.train, &need, opts.progress)?;
        let mut curve_jobs = Vec::new();
        let mut info = Vec::new();
        for &l in &rank_layers {
            let m = mom
                .get(&l)
                .or_else(|| mom2.get(&l))
                .ok_or_else(|| Error::InvalidArgument {
                    name: "rank layers".into(),
                    msg: format!("no differences at layer {l}"),
                })?;
            let kmax = ks.last().copied().unwrap_or(1);
            let (vals, vecs) = top_eigen(&m.gram, d, kmax, opts.seed ^ (l as u64) << 8)?;
            let trace: f64 = (0..d).map(|i| m.gram[i * d + i]).sum();
            let mut var = Vec::new();
            curve_jobs.push(Job {
                layer: l,
                dir: Dir::Denoise,
                sub: Sub::Full,
            });
            for &k in &ks {
                var.push(vals[..k].iter().sum::<f64>() / trace.max(f64::MIN_POSITIVE));
                curve_jobs.push(Job {
                    layer: l,
                    dir: Dir::Denoise,
                    sub: span(base, &vecs[..k])?,
                });
                for s in 0..opts.random_seeds {
                    let seed = opts
                        .seed
                        .wrapping_add(((l * 1000 + k) * 100 + s) as u64 + 7);
                    curve_jobs.push(Job {
                        layer: l,
                        dir: Dir::Denoise,
                        sub: span(base, &random_basis(d, k, seed))?,
                    });
                }
            }
            info.push((l, var));
        }
        mom2.clear();
        let cr = eng.run(
            &data.test,
            &curve_jobs,
            &[],
            "patching: rank curve",
            opts.progress,
        )?;
        let per_layer = 1 + ks.len() * (1 + opts.random_seeds);
        for (li, (l, var)) in info.into_iter().enumerate() {
            let at = |i: usize| r.effect(&cr.jobs[li * per_layer + i], Dir::Denoise);
            let full = at(0);
            let of = |e: &Effect| e.delta_p / full.delta_p;
            let mut points = Vec::new();
            for (ki, &k) in ks.iter().enumerate() {
                let o = 1 + ki * (1 + opts.random_seeds);
                let top = at(o);
                let random: Vec<Effect> = (0..opts.random_seeds).map(|s| at(o + 1 + s)).collect();
                let rf: Vec<f64> = random.iter().map(of).collect();
                let rm = rf.iter().sum::<f64>() / rf.len().max(1) as f64;
                let sd = (rf.iter().map(|x| (x - rm) * (x - rm)).sum::<f64>()
                    / (rf.len().max(2) - 1) as f64)
                    .sqrt();
                points.push(RankPoint {
                    k,
                    of_full: of(&top),
                    top,
                    variance: var[ki],
                    random,
                    random_of_full: rm,
                    random_spread: if rf.len() > 1 { sd } else { 0.0 },
                });
            }
            points.push(RankPoint {
                k: d,
                top: full,
                of_full: 1.0,
                variance: 1.0,
                random: Vec::new(),
                random_of_full: 1.0,
                random_spread: 0.0,
            });
            let rank_at = |t: f64| points.iter().find(|p| p.of_full >= t).map(|p| p.k);
            ranks.push(RankCurve {
                layer: l,
                full,
                rank50: rank_at(0.5),
                rank80: rank_at(0.8),
                points,
            });
        }
    }

    let verdict = verdict(&eng, data, opts, &rows, &ranks, best, r.gap_ok, gap, &mom)?;
    Ok(Patching {
        family: opts.family,
        n_train: data.train.len(),
        n_test: data.test.len(),
        p_base: mean_p(&runs.base),
        p_tuned: mean_p(&runs.tuned),
        logit_diff_base: mean_ld(&runs.base),
        logit_diff_tuned: mean_ld(&runs.tuned),
        gap_ci,
        layers: rows,
        ranks,
        positions,
        verdict,
    })
}

/// Both models must read the same token ids at the same width.
fn check_same_ids(base: &Model, tuned: &Model) -> Result<()> {
    check_pair(base, tuned)?;
    let (cb, ct) = (base.config(), tuned.config());
    if cb.vocab_size != ct.vocab_size {
        return Err(Error::Shape {
            what: "vocabularies of the base and tuned models (they must read the same token ids)"
                .into(),
            expected: format!("{} tokens", cb.vocab_size),
            got: format!("{} tokens", ct.vocab_size),
        });
    }
    Ok(())
}

/// Per-item A/B scores of a plain layer sweep of denoising patches: what [`patch_layers`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct LayerScores {
    /// Layers patched, in the order given.
    pub layers: Vec<usize>,
    /// The base model unpatched, per item.
    pub base: Vec<AbScore>,
    /// The tuned model unpatched, per item.
    pub tuned: Vec<AbScore>,
    /// The base with the tuned model's activation at every position of layer `layers[i]`:
    /// `full[i][item]`.
    pub full: Vec<Vec<AbScore>>,
    /// The base with the tuned model's activation at one position only, `offset` from the end:
    /// `positions[i][offset][item]` (empty when no positions were asked for).
    pub positions: Vec<Vec<Vec<AbScore>>>,
}

/// The engine of [`patching`] without its subspaces, statistics or verdict: per-item scores of the
/// base with the tuned model's `family` activation patched in at each of `layers` (every
/// position), and, for `positions > 0`, at each of the last `positions` positions alone (items
/// aligned at their end). Every patched forward resumes at its layer from the cached residual, and
/// single-position patches reuse the base's keys and values before the patched column.
///
/// ```no_run
/// use puppetlens::eval::AbCase;
/// use puppetlens::patch::{patch_layers, Family};
/// use puppetlens::{LoadOptions, Model};
/// let base = Model::load("base.gguf", &LoadOptions::default())?;
/// let tuned = Model::load("tuned", &LoadOptions::default())?;
/// let cases = vec![AbCase { ids: vec![1, 2, 3], matching: 330, not_matching: 331 }];
/// let s = patch_layers(&base, &tuned, &cases, Family::ResidPre, &[4, 8], 0, 8)?;
/// println!("layer 8: P = {:.3}", s.full[1][0].p_matching);
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn patch_layers(
    base: &Model,
    tuned: &Model,
    cases: &[AbCase],
    family: Family,
    layers: &[usize],
    positions: usize,
    batch_size: usize,
) -> Result<LayerScores> {
    check_same_ids(base, tuned)?;
    let n_layers = base.config().n_layers;
    if let Some(&l) = layers.iter().find(|&&l| l >= n_layers) {
        return Err(Error::LayerOutOfRange { layer: l, n_layers });
    }
    check_cases(base, cases)?;
    let min_len = cases.iter().map(|c| c.ids.len()).min().unwrap_or(1);
    if positions > min_len {
        return Err(Error::InvalidArgument {
            name: "positions".into(),
            msg: format!(
                "{positions} positions from the end, but the shortest item has {min_len} tokens"
            ),
        });
    }
    let eng = Engine {
        base,
        tuned,
        family,
        batch_size: batch_size.max(1),
    };
    let jobs: Vec<Job> = layers
        .iter()
        .map(|&layer| Job {
            layer,
            dir: Dir::Denoise,
            sub: Sub::Full,
        })
        .collect();
    let pos: Vec<PosJob> = layers
        .iter()
        .flat_map(|&layer| {
            (0..positions).map(move |offset| PosJob {
                layer,
                dir: Dir::Denoise,
                offset,
            })
        })
        .collect();
    let runs = eng.run(cases, &jobs, &pos, "patching: layers", false)?;
    let positions = match positions {
        0 => Vec::new(),
        n => runs.pos.chunks(n).map(<[_]>::to_vec).collect(), // per layer, n offsets
    };
    Ok(LayerScores {
        layers: layers.to_vec(),
        base: runs.base,
        tuned: runs.tuned,
        full: runs.jobs,
        positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_eigen_recovers_a_known_spectrum() {
        // A = U diag(l) U^T with a random orthonormal U.
        let d = 40;
        let u = random_basis(d, d, 3);
        let l: Vec<f64> = (0..d).map(|i| 100.0 * 0.7f64.powi(i as i32)).collect();
        let mut a = vec![0.0; d * d];
        for (k, col) in u.iter().enumerate() {
            for i in 0..d {
                for j in 0..d {
                    a[i * d + j] += l[k] * col[i] * col[j];
                }
            }
        }
        let (vals, vecs) = top_eigen(&a, d, 5, 1).unwrap();
        for k in 0..5 {
            assert!(
                (vals[k] - l[k]).abs() < 1e-8 * l[0],
                "{k}: {} vs {}",
                vals[k],
                l[k]
            );
            assert!(
                (dot(&vecs[k], &u[k]).abs() - 1.0).abs() < 1e-8,
                "vector {k}"
            );
        }
    }

    #[test]
    fn ratio_interval_brackets_the_ratio() {
        let num: Vec<f64> = (0..50).map(|i| (i % 7) as f64 * 0.1).collect();
        let den = vec![0.5; 50];
        let (lo, hi) = ratio_ci(&num, &den, 500, 0);
        let r = num.iter().sum::<f64>() / den.iter().sum::<f64>();
        assert!(lo < r && r < hi, "{lo} {r} {hi}");
    }

    #[test]
    fn families_parse_and_print() {
        for f in Family::ALL {
            assert_eq!(f.to_string().parse::<Family>().unwrap(), f);
        }
        assert!("resid_mid".parse::<Family>().is_err());
    }
}
