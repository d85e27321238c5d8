//! Activation patching within one model (clean vs corrupted prompts of equal length), as
//! TransformerLens's `patching` helpers do it: which activations carry the information that makes
//! the clean prompt's answer win?
//!
//! [`patch_sweep`] runs the corrupted prompt with one activation taken from the clean run:
//! `resid_pre`, `attn_out` and `mlp_out` per (layer, position), and each head's `attn.hook_z` per
//! (layer, head) at every position. The metric is the logit difference
//! `logit[answer] - logit[other]` at the last position, normalised so that 0 is the corrupted
//! run's and 1 the clean run's. Causal tracing (Meng et al. 2022) is the `resid_pre` map.
//!
//! Cost: every patched forward resumes at the patched point from the corrupted run's cached
//! residual ([`Model::run_from`]): a `resid_pre` patch at block `l` runs blocks `l..`, an
//! `attn_out` patch resumes at `hook_resid_mid` (the residual plus the change of attention's
//! output), an `mlp_out` patch at `hook_resid_post`; the positions (or heads) of one layer run as
//! rows of one batch, and only the two answers' logits are computed.
//!
//! ```no_run
//! use puppetlens::lens::one_token;
//! use puppetlens::patch::sweep::{patch_sweep, SweepOptions};
//! let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
//! let clean = tok.encode("The Eiffel Tower is located in the city of")?;
//! let corrupted = tok.encode("The Colosseum is located in the city of")?;
//! let (answer, other) = (one_token(&tok, " Paris", "answer")?, one_token(&tok, " Rome", "other")?);
//! let sweep = patch_sweep(&model, &clean, &corrupted, answer, other, &SweepOptions::default())?;
//! println!("clean {:.2}, corrupted {:.2}", sweep.clean_diff, sweep.corrupted_diff);
//! sweep.write("notebooks-data/tracing", &tok)?;
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::eval::SWEEP_ROWS;
use crate::hook::{HookPoint, Hooks, Patch};
use crate::plot::{HeatMap, HeatPanel};
use crate::util::{atomic_write_bytes, Progress};
use crate::{Batch, Error, Model, Result, Tokenizer};

/// What [`patch_sweep`] patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepPart {
    /// `blocks.{l}.hook_resid_pre` per (layer, position): causal tracing.
    ResidPre,
    /// `blocks.{l}.hook_attn_out` per (layer, position).
    AttnOut,
    /// `blocks.{l}.hook_mlp_out` per (layer, position).
    MlpOut,
    /// `blocks.{l}.attn.hook_z` per (layer, head), every position.
    Heads,
}

/// Options of [`patch_sweep`].
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// What to patch (default: all four parts).
    pub parts: Vec<SweepPart>,
    /// Blocks to patch (default: all).
    pub layers: Option<Vec<usize>>,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            parts: vec![
                SweepPart::ResidPre,
                SweepPart::AttnOut,
                SweepPart::MlpOut,
                SweepPart::Heads,
            ],
            layers: None,
            progress: false,
        }
    }
}

/// The result of [`patch_sweep`]: normalised metric per patched activation (0 = the corrupted
/// run's logit difference, 1 = the clean run's). Maps not asked for are empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchSweep {
    /// The clean prompt's token ids.
    pub clean: Vec<u32>,
    /// The corrupted prompt's token ids (same length).
    pub corrupted: Vec<u32>,
    /// The token the clean prompt should favour.
    pub answer: u32,
    /// The token it is measured against (typically the corrupted prompt's answer).
    pub other: u32,
    /// `logit[answer] - logit[other]` at the last position of the clean run.
    pub clean_diff: f32,
    /// The same on the corrupted run.
    pub corrupted_diff: f32,
    /// The patched blocks, in order: the rows of every map.
    pub layers: Vec<usize>,
    /// `resid_pre[layer row][position]`.
    pub resid_pre: Vec<Vec<f32>>,
    /// `attn_out[layer row][position]`.
    pub attn_out: Vec<Vec<f32>>,
    /// `mlp_out[layer row][position]`.
    pub mlp_out: Vec<Vec<f32>>,
    /// `heads[layer row][head]` (`attn.hook_z` of one head at every position).
    pub heads: Vec<Vec<f32>>,
}

/// Patches clean activations into the corrupted run: see the module docs. `clean` and
/// `corrupted` are one prompt each, of the same token length; `answer` and `other` are token ids.
pub fn patch_sweep(
    model: &Model,
    clean: &[u32],
    corrupted: &[u32],
    answer: u32,
    other: u32,
    opts: &SweepOptions,
) -> Result<PatchSweep> {
    let cfg = model.config();
    if clean.len() != corrupted.len() {
        return Err(Error::InvalidArgument {
            name: "corrupted".into(),
            msg: format!(
                "the clean prompt is {} tokens and the corrupted one {}: activation patching \
                 needs prompts of equal length (change the corrupted prompt's wording)",
                clean.len(),
                corrupted.len()
            ),
        });
    }
    let layers = match &opts.layers {
        Some(v) => {
            for &layer in v {
                if layer >= cfg.n_layers {
                    return Err(Error::LayerOutOfRange {
                        layer,
                        n_layers: cfg.n_layers,
                    });
                }
            }
            v.clone()
        }
        None => (0..cfg.n_layers).collect(),
    };
    let s = clean.len();
    let bc = Batch::single(clean)?;
    let bx = Batch::single(corrupted)?;
    let ids = vec![answer, other];
    let wanted = |p: HookPoint| {
        p.layer().is_some_and(|l| layers.contains(&l))
            && matches!(
                p,
                HookPoint::ResidPre(_)
                    | HookPoint::ResidMid(_)
                    | HookPoint::ResidPost(_)
                    | HookPoint::AttnOut(_)
                    | HookPoint::MlpOut(_)
                    | HookPoint::AttnZ(_)
            )
    };
    let diff_of = |logits: &Tensor| -> Result<Vec<f32>> {
        let v: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?; // [rows, 2]
        Ok(v.iter().map(|r| r[0] - r[1]).collect())
    };
    // The two unpatched runs, keeping every activation the patches need.
    let mut cc = crate::ActivationCache::new();
    let lc = {
        let mut hooks = Hooks::new();
        hooks.add_where(wanted, &mut cc);
        model.last_token_logits(&bc, &mut hooks, None, None, std::slice::from_ref(&ids))?
    };
    let mut cx = crate::ActivationCache::new();
    let lx = {
        let mut hooks = Hooks::new();
        hooks.add_where(wanted, &mut cx);
        model.last_token_logits(&bx, &mut hooks, None, None, std::slice::from_ref(&ids))?
    };
    let (clean_diff, corrupted_diff) = (diff_of(&lc)?[0], diff_of(&lx)?[0]);
    let gap = clean_diff - corrupted_diff;
    if !gap.is_finite() || gap.abs() < 1e-6 {
        return Err(Error::InvalidArgument {
            name: "corrupted".into(),
            msg: format!(
                "the clean and corrupted runs give the same logit difference ({clean_diff:.4} vs \
                 {corrupted_diff:.4}): there is nothing to restore; pick a corruption that changes \
                 the answer"
            ),
        });
    }
    let norm =
        |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|d| (d - corrupted_diff) / gap).collect() };
    let has = |p: SweepPart| opts.parts.contains(&p);
    let mut out = PatchSweep {
        clean: clean.to_vec(),
        corrupted: corrupted.to_vec(),
        answer,
        other,
        clean_diff,
        corrupted_diff,
        layers: layers.clone(),
        resid_pre: Vec::new(),
        attn_out: Vec::new(),
        mlp_out: Vec::new(),
        heads: Vec::new(),
    };
    let per_layer = opts.parts.len();
    let mut progress = Progress::new("patch sweep", layers.len() * per_layer, opts.progress);
    // Runs `rows` stacked residuals `[rows, s, d_model]` resumed at `start`; logit differences.
    let resume = |start: HookPoint, resid: &Tensor, hooks_z: Option<&Tensor>| -> Result<Vec<f32>> {
        let rows = resid.dim(0)?;
        let mut all = Vec::with_capacity(rows);
        for lo in (0..rows).step_by(SWEEP_ROWS) {
            let n = SWEEP_ROWS.min(rows - lo);
            let batch = Batch::new(&vec![corrupted.to_vec(); n])?;
            let x = resid.narrow(0, lo, n)?; // [n, s, d_model]
            let mut hooks = Hooks::new();
            if let (Some(src), HookPoint::ResidPre(l)) = (hooks_z, start) {
                hooks.add(HookPoint::AttnZ(l), Patch::new(src.narrow(0, lo, n)?));
            }
            let logits = model.last_token_logits(
                &batch,
                &mut hooks,
                Some((start, &x)),
                None,
                &vec![ids.clone(); n],
            )?; // [n, 2]
            all.extend(diff_of(&logits)?);
        }
        Ok(all)
    };
    // `eye[p]` selects column p: `[s, s, 1]`.
    let eye = Tensor::eye(s, model.dtype(), model.device())?.unsqueeze(2)?; // [s, s, 1]
                                                                            // Rows p = `base` with column p moved by `delta` (both `[1, s, d_model]`).
    let per_position = |base: &Tensor, delta: &Tensor| -> Result<Tensor> {
        Ok(base.broadcast_add(&eye.broadcast_mul(delta)?)?) // [s, s, d_model]
    };
    for &l in &layers {
        if has(SweepPart::ResidPre) {
            let xc = cx.require(HookPoint::ResidPre(l))?; // [1, s, d_model]
            let cl = cc.require(HookPoint::ResidPre(l))?; // [1, s, d_model]
                                                          // Exact selection: corrupted where eye is 0, clean where it is 1.
            let rows = (xc.broadcast_mul(&(1.0 - &eye)?)? + cl.broadcast_mul(&eye)?)?; // [s, s, d_model]
            out.resid_pre
                .push(norm(resume(HookPoint::ResidPre(l), &rows, None)?));
            progress.advance(1);
        }
        if has(SweepPart::AttnOut) {
            let delta =
                (cc.require(HookPoint::AttnOut(l))? - cx.require(HookPoint::AttnOut(l))?)?; // [1, s, d_model]
            let rows = per_position(cx.require(HookPoint::ResidMid(l))?, &delta)?; // [s, s, d_model]
            out.attn_out
                .push(norm(resume(HookPoint::ResidMid(l), &rows, None)?));
            progress.advance(1);
        }
        if has(SweepPart::MlpOut) {
            let delta = (cc.require(HookPoint::MlpOut(l))? - cx.require(HookPoint::MlpOut(l))?)?; // [1, s, d_model]
            let rows = per_position(cx.require(HookPoint::ResidPost(l))?, &delta)?; // [s, s, d_model]
            out.mlp_out
                .push(norm(resume(HookPoint::ResidPost(l), &rows, None)?));
            progress.advance(1);
        }
        if has(SweepPart::Heads) {
            let zc = cc.require(HookPoint::AttnZ(l))?; // [1, s, h, hd]
            let zx = cx.require(HookPoint::AttnZ(l))?; // [1, s, h, hd]
            let h = zx.dim(2)?;
            let pick = Tensor::eye(h, model.dtype(), model.device())?.reshape((h, 1, h, 1))?; // [h, 1, h, 1]
            let src = (zx.broadcast_mul(&(1.0 - &pick)?)? + zc.broadcast_mul(&pick)?)?; // [h, s, h, hd]
            let pre = cx.require(HookPoint::ResidPre(l))?; // [1, s, d_model]
            let rows = pre.broadcast_as((h, s, cfg.d_model))?.contiguous()?; // [h, s, d_model]
            out.heads
                .push(norm(resume(HookPoint::ResidPre(l), &rows, Some(&src))?));
            progress.advance(1);
        }
    }
    progress.finish();
    Ok(out)
}

impl PatchSweep {
    /// Writes `sweep.json` (everything), `sweep.csv` (`part,layer,index,token,value`: index = the
    /// position, or the head) and the heat maps `sweep_positions.{png,svg}` (resid_pre, attn_out,
    /// mlp_out: layer x position) and `sweep_heads.{png,svg}` (layer x head) into `dir`; returns
    /// the figure paths.
    pub fn write(&self, dir: impl AsRef<Path>, tok: &Tokenizer) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidArgument {
            name: "sweep".into(),
            msg: e.to_string(),
        })?;
        atomic_write_bytes(&dir.join("sweep.json"), &json)?;
        let text = |id: u32| crate::lens::shown(tok, id);
        let mut csv = String::from("part,layer,index,token,value\n");
        for (part, map) in [
            ("resid_pre", &self.resid_pre),
            ("attn_out", &self.attn_out),
            ("mlp_out", &self.mlp_out),
            ("head", &self.heads),
        ] {
            for (row, &l) in map.iter().zip(&self.layers) {
                for (i, v) in row.iter().enumerate() {
                    let token = if part == "head" {
                        String::new()
                    } else {
                        crate::util::csv_field(&text(self.clean[i]))
                    };
                    csv.push_str(&format!("{part},{l},{i},{token},{v:.6}\n"));
                }
            }
        }
        atomic_write_bytes(&dir.join("sweep.csv"), csv.as_bytes())?;
        let labels: Vec<String> = self
            .clean
            .iter()
            .zip(&self.corrupted)
            .map(|(&c, &x)| {
                if c == x {
                    text(c)
                } else {
                    format!("{}/{}", text(c), text(x))
                }
            })
            .collect();
        let ys: Vec<String> = self.layers.iter().map(|l| l.to_string()).collect();
        let to64 = |m: &Vec<Vec<f32>>| -> Vec<Vec<f64>> {
            m.iter()
                .map(|r| r.iter().map(|&v| f64::from(v)).collect())
                .collect()
        };
        let panels: Vec<HeatPanel> = [
            ("resid_pre", &self.resid_pre),
            ("attn_out", &self.attn_out),
            ("mlp_out", &self.mlp_out),
        ]
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(name, m)| HeatPanel {
            title: name.into(),
            x_labels: labels.clone(),
            y_labels: ys.clone(),
            values: to64(m),
            cell_text: Vec::new(),
        })
        .collect();
        let title = format!(
            "Activation patching, clean into corrupted: {:?} vs {:?} (1 = clean {:.2}, 0 = corrupted {:.2})",
            text(self.answer),
            text(self.other),
            self.clean_diff,
            self.corrupted_diff
        );
        let mut figures = Vec::new();
        let cols = self.clean.len() as u32;
        let rows = self.layers.len() as u32;
        if !panels.is_empty() {
            let n = panels.len() as u32;
            figures.extend(
                HeatMap {
                    title: title.clone(),
                    x_label: "position (clean/corrupted token)".into(),
                    y_label: "layer".into(),
                    panels,
                    columns: 0,
                    width: n * (150 + 62 * cols),
                    height: (220 + 24 * rows).max(500),
                }
                .save(dir.join("sweep_positions"))?,
            );
        }
        if !self.heads.is_empty() {
            let h = self.heads[0].len() as u32;
            figures.extend(
                HeatMap {
                    title,
                    x_label: "head".into(),
                    y_label: "layer".into(),
                    panels: vec![HeatPanel {
                        title: "attn.hook_z per head".into(),
                        x_labels: (0..h).map(|i| format!("H{i}")).collect(),
                        y_labels: ys,
                        values: to64(&self.heads),
                        cell_text: Vec::new(),
                    }],
                    columns: 0,
                    width: 300 + 60 * h,
                    height: (220 + 24 * rows).max(500),
                }
                .save(dir.join("sweep_heads"))?,
            );
        }
        Ok(figures)
    }

    /// The `resid_pre` value at (block `layer`, `position`), when swept.
    pub fn resid_at(&self, layer: usize, position: usize) -> Option<f32> {
        let row = self.layers.iter().position(|&l| l == layer)?;
        self.resid_pre.get(row)?.get(position).copied()
    }

    /// The sweep for a terminal: the clean and corrupted logit differences, then the best cell
    /// of each map (`resid_pre`, `attn_out`, `mlp_out`: layer and position; head z: layer and
    /// head).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "clean logit difference {:.3}, corrupted {:.3}\n",
            self.clean_diff, self.corrupted_diff
        );
        let best = |map: &[Vec<f32>]| {
            map.iter()
                .enumerate()
                .flat_map(|(r, row)| row.iter().enumerate().map(move |(i, &v)| (r, i, v)))
                .max_by(|a, b| a.2.total_cmp(&b.2))
        };
        for (name, map) in [
            ("resid_pre", &self.resid_pre),
            ("attn_out", &self.attn_out),
            ("mlp_out", &self.mlp_out),
            ("head z", &self.heads),
        ] {
            if let Some((r, i, v)) = best(map) {
                let what = if name == "head z" { "head" } else { "position" };
                let layer = self.layers.get(r).copied().unwrap_or(r);
                s.push_str(&format!(
                    "  {name:<9} best: layer {layer} {what} {i}: {v:.3}\n"
                ));
            }
        }
        s
    }
}

/// One call for the CLI and notebooks: [`patch_sweep`] of `clean` against `corrupted` (prompts as
/// text, of one token length) for `answer` against `other` (single tokens' text), written into
/// `out` ([`PatchSweep::write`]).
#[allow(clippy::too_many_arguments)]
pub fn sweep_report(
    model: &Model,
    tok: &Tokenizer,
    clean: &str,
    corrupted: &str,
    answer: &str,
    other: &str,
    opts: &SweepOptions,
    out: impl AsRef<Path>,
) -> Result<PatchSweep> {
    let a = crate::lens::one_token(tok, answer, "answer")?;
    let o = crate::lens::one_token(tok, other, "other")?;
    let sweep = patch_sweep(
        model,
        &tok.encode(clean)?,
        &tok.encode(corrupted)?,
        a,
        o,
        opts,
    )?;
    sweep.write(out, tok)?;
    Ok(sweep)
}
