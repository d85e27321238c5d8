//! Reading the residual stream in the vocabulary: the logit lens, direct logit attribution, and
//! attention-pattern figures.
//!
//! - [`logit_lens`]: per layer and position, the residual (`hook_embed`, then each block's
//!   `hook_resid_post`) decoded through the final norm and the unembedding
//!   ([`Model::unembed_resid`]): top-k tokens, the probability and rank of a target token, and
//!   `KL(final || layer)`, the divergence of the model's own next-token distribution from the
//!   layer's. [`lens_figure`] draws the classic heat map (layer x position, each cell's top token),
//!   one panel per model (base and tuned side by side).
//! - [`direct_logit_attribution`]: the logit difference `logit[answer] - logit[other]` at the last
//!   position split into the embedding's, each block's attention and MLP output's and each head's
//!   part, projected through the final norm with its scale frozen at this run (TransformerLens's
//!   convention) onto `W_U[answer] - W_U[other]`. The parts sum to the total (checked: see
//!   [`Attribution::residual`]). Gemma 3's post-attention norm is frozen the same way at the
//!   heads' sum, so the heads' parts sum to their block's attention part.
//! - [`attention_figure`]: one panel per head of a block's `attn.hook_pattern`.
//!
//! ```no_run
//! use puppetlens::lens::{self, LensOptions};
//! let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
//! let ids = tok.encode("The Eiffel Tower is located in the city of")?;
//! let target = lens::one_token(&tok, " Paris", "target")?;
//! let lens = lens::logit_lens(&model, &ids, &LensOptions { target: Some(target), ..Default::default() })?;
//! println!("{}", lens.table(&tok));
//! let dla = lens::direct_logit_attribution(&model, &ids, target, lens::one_token(&tok, " Rome", "other")?)?;
//! println!("total {:.2} = embed {:.2} + ... (residual {:.1e})", dla.total, dla.embed, dla.residual());
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, IndexOp, Tensor, D};

use crate::hook::HookPoint;
use crate::plot::{HeatMap, HeatPanel};
use crate::util::{atomic_write_bytes, csv_field};
use crate::{Batch, Error, Model, Result, Tokenizer};

/// Options of [`logit_lens`].
#[derive(Debug, Clone)]
pub struct LensOptions {
    /// Tokens listed per cell (default 5).
    pub top_k: usize,
    /// A token whose probability and rank each cell reports (e.g. the answer).
    pub target: Option<u32>,
}

impl Default for LensOptions {
    fn default() -> Self {
        Self {
            top_k: 5,
            target: None,
        }
    }
}

/// One (layer, position) of a logit lens.
#[derive(Debug, Clone, PartialEq)]
pub struct LensCell {
    /// The `top_k` most probable next tokens and their probabilities, most probable first.
    pub top: Vec<(u32, f32)>,
    /// `KL(final || this layer)` in nats: how far the layer's decoded distribution is from the
    /// model's own output at this position (0 at the last block).
    pub kl_to_final: f32,
    /// The target's probability, when a target was given.
    pub target_prob: Option<f32>,
    /// The target's rank (0 = most probable), when a target was given.
    pub target_rank: Option<usize>,
}

/// A logit lens over one prompt: `cells[row][pos]`, rows in [`LogitLens::rows`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitLens {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// The decoded points: `hook_embed`, then `blocks.{l}.hook_resid_post` for every block.
    pub rows: Vec<HookPoint>,
    /// `cells[row][pos]`.
    pub cells: Vec<Vec<LensCell>>,
    /// The target token, when given.
    pub target: Option<u32>,
}

/// The id of `text` as a single token (encoded without BOS); a typed error naming `what` when it
/// is several tokens or none.
pub fn one_token(tok: &Tokenizer, text: &str, what: &str) -> Result<u32> {
    let ids = tok.encode_with(text, false)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => Err(Error::InvalidArgument {
            name: what.to_string(),
            msg: format!(
                "{text:?} is {} tokens ({ids:?}), not one; pick a string the tokenizer keeps whole \
                 (often with its leading space, e.g. \" Paris\")",
                ids.len()
            ),
        }),
    }
}

/// The logit lens of `ids` (one prompt, `[pos]` token ids) on `model`: see the module docs.
pub fn logit_lens(model: &Model, ids: &[u32], opts: &LensOptions) -> Result<LogitLens> {
    if opts.top_k == 0 {
        return Err(Error::InvalidArgument {
            name: "top_k".into(),
            msg: "must be at least 1".into(),
        });
    }
    let vocab = model.config().vocab_size;
    if let Some(t) = opts.target {
        if t as usize >= vocab {
            return Err(Error::TokenOutOfRange {
                index: 0,
                id: t,
                vocab,
            });
        }
    }
    let batch = Batch::single(ids)?;
    let n = model.config().n_layers;
    let rows: Vec<HookPoint> = std::iter::once(HookPoint::Embed)
        .chain((0..n).map(HookPoint::ResidPost))
        .collect();
    let cache = model.cache(&batch, |p| rows.contains(&p))?;
    // The model's own distribution, per position: the last row decoded.
    let log_probs = |p: HookPoint| -> Result<Vec<Vec<f32>>> {
        let x = cache.require(p)?.i(0)?; // [pos, d_model]
        let logits = model.unembed_resid(&x)?; // [pos, vocab] f32
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2()?) // [pos, vocab]
    };
    let last = *rows.last().unwrap_or(&HookPoint::Embed);
    let final_lp = log_probs(last)?;
    let mut cells = Vec::with_capacity(rows.len());
    for &p in &rows {
        let lp = if p == last {
            final_lp.clone()
        } else {
            log_probs(p)?
        };
        let row = lp
            .iter()
            .zip(&final_lp)
            .map(|(l, f)| lens_cell(l, f, opts))
            .collect();
        cells.push(row);
    }
    Ok(LogitLens {
        tokens: ids.to_vec(),
        rows,
        cells,
        target: opts.target,
    })
}

/// One cell from the layer's and the final log-probabilities over the vocabulary.
fn lens_cell(lp: &[f32], final_lp: &[f32], opts: &LensOptions) -> LensCell {
    let mut order: Vec<u32> = (0..lp.len() as u32).collect();
    let k = opts.top_k.min(lp.len());
    let by_prob = |a: &u32, b: &u32| lp[*b as usize].total_cmp(&lp[*a as usize]);
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_prob);
    }
    let mut top: Vec<u32> = order[..k].to_vec();
    top.sort_by(by_prob);
    let kl: f64 = final_lp
        .iter()
        .zip(lp)
        .map(|(&f, &l)| {
            let pf = f64::from(f).exp();
            if pf > 0.0 {
                pf * (f64::from(f) - f64::from(l))
            } else {
                0.0
            }
        })
        .sum();
    let (target_prob, target_rank) = match opts.target {
        Some(t) => {
            let v = lp[t as usize];
            let rank = lp.iter().filter(|&&x| x > v).count();
            (Some(v.exp()), Some(rank))
        }
        None => (None, None),
    };
    LensCell {
        top: top.iter().map(|&i| (i, lp[i as usize].exp())).collect(),
        kl_to_final: kl.max(0.0) as f32,
        target_prob,
        target_rank,
    }
}

/// A token's text for tables and figures (`\n` and tabs made visible, a whitespace-only token's
/// spaces as `␣`, `?` for an unknown id).
pub(crate) fn shown(tok: &Tokenizer, id: u32) -> String {
    let t = tok
        .decode(&[id])
        .unwrap_or_else(|_| "?".into())
        .replace('\n', "\\n")
        .replace('\t', "\\t");
    if t.trim().is_empty() {
        t.replace(' ', "\u{2423}")
    } else {
        t
    }
}

impl LogitLens {
    /// A plain-text table: one line per row, the last position's top tokens (and the target's
    /// probability and rank, KL to the final distribution).
    pub fn table(&self, tok: &Tokenizer) -> String {
        let mut out =
            String::from("point                          top tokens at the last position");
        if self.target.is_some() {
            out.push_str("  | target p (rank)");
        }
        out.push_str("  | KL(final||layer)\n");
        for (p, row) in self.rows.iter().zip(&self.cells) {
            let Some(c) = row.last() else { continue };
            let tops: Vec<String> = c
                .top
                .iter()
                .take(3)
                .map(|(id, pr)| format!("{:?} {pr:.2}", shown(tok, *id)))
                .collect();
            out.push_str(&format!("{:<30} {:<40}", p.to_string(), tops.join(", ")));
            if let (Some(tp), Some(tr)) = (c.target_prob, c.target_rank) {
                out.push_str(&format!("  | {tp:.3} ({tr})"));
            }
            out.push_str(&format!("  | {:.3}\n", c.kl_to_final));
        }
        out
    }

    /// Writes `lens.csv`-style rows (`point,pos,token,rank,top_token,top_prob,kl_to_final,
    /// target_prob,target_rank`; one line per cell and top-k rank) to `path`, atomically.
    pub fn write_csv(&self, path: impl AsRef<Path>, tok: &Tokenizer) -> Result<()> {
        let mut csv = String::from(
            "point,pos,token,k,top_token,top_prob,kl_to_final,target_prob,target_rank\n",
        );
        for (p, row) in self.rows.iter().zip(&self.cells) {
            for (pos, c) in row.iter().enumerate() {
                let token = self
                    .tokens
                    .get(pos)
                    .map_or(String::new(), |&t| shown(tok, t));
                for (k, (id, pr)) in c.top.iter().enumerate() {
                    csv.push_str(&format!(
                        "{p},{pos},{},{k},{},{pr:.6},{:.6},{},{}\n",
                        csv_field(&token),
                        csv_field(&shown(tok, *id)),
                        c.kl_to_final,
                        c.target_prob.map_or(String::new(), |v| format!("{v:.6}")),
                        c.target_rank.map_or(String::new(), |v| v.to_string()),
                    ));
                }
            }
        }
        atomic_write_bytes(path.as_ref(), csv.as_bytes())
    }

    /// One heat-map panel: rows = points (`embed`, `L0`, ..), columns = positions; each cell shows
    /// its top token, coloured by the target's probability when a target was given, else by the
    /// top token's.
    fn panel(&self, title: &str, tok: &Tokenizer) -> HeatPanel {
        let y_labels = self
            .rows
            .iter()
            .map(|p| match p.layer() {
                Some(l) => format!("L{l}"),
                None => "embed".into(),
            })
            .collect();
        let values = self
            .cells
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| {
                        f64::from(
                            c.target_prob
                                .unwrap_or_else(|| c.top.first().map_or(f32::NAN, |t| t.1)),
                        )
                    })
                    .collect()
            })
            .collect();
        let cell_text = self
            .cells
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| c.top.first().map_or(String::new(), |t| shown(tok, t.0)))
                    .collect()
            })
            .collect();
        HeatPanel {
            title: title.to_string(),
            x_labels: self.tokens.iter().map(|&t| shown(tok, t)).collect(),
            y_labels,
            values,
            cell_text,
        }
    }
}

/// The logit-lens heat map of one or more lenses (e.g. base and tuned) side by side, written as
/// `{stem}.png` and `{stem}.svg`; returns their paths.
pub fn lens_figure(
    lenses: &[(&str, &LogitLens)],
    tok: &Tokenizer,
    stem: impl AsRef<Path>,
) -> Result<Vec<PathBuf>> {
    let first = lenses.first().ok_or_else(|| Error::InvalidArgument {
        name: "lenses".into(),
        msg: "nothing to draw".into(),
    })?;
    let colour = match first.1.target {
        Some(t) => format!("P({:?})", shown(tok, t)),
        None => "P(top token)".into(),
    };
    let cols = first.1.tokens.len().max(1) as u32;
    let rows = first.1.rows.len() as u32;
    HeatMap {
        title: format!("Logit lens: top next token per layer and position, colour = {colour}"),
        x_label: "position (input token)".into(),
        y_label: "layer".into(),
        panels: lenses.iter().map(|(t, l)| l.panel(t, tok)).collect(),
        columns: 0,
        width: (lenses.len() as u32 * (160 + 70 * cols)).max(700),
        height: (200 + 26 * rows).max(500),
    }
    .save(stem)
}

/// Direct logit attribution of `logit[answer] - logit[other]` at the last position of one prompt.
///
/// Each part is a residual-stream component at the last position `c` projected as
/// `(c / scale) . (w_norm * (W_U[answer] - W_U[other]))` with the final norm's `scale` frozen at
/// this run. The parts sum to [`Attribution::total`], the logit difference before any final soft
/// cap; [`Attribution::logit_diff`] is the model's own (capped) difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// The token the difference favours.
    pub answer: u32,
    /// The token it is measured against.
    pub other: u32,
    /// The model's logit difference at the last position (after any soft cap).
    pub logit_diff: f32,
    /// The logit difference before any soft cap, computed from the final residual.
    pub total: f32,
    /// The embedding's part.
    pub embed: f32,
    /// Each block's attention output's part, `[layer]`.
    pub attn: Vec<f32>,
    /// Each block's MLP output's part, `[layer]`.
    pub mlp: Vec<f32>,
    /// Each head's part, `[layer][head]` (summing to `attn[layer]`).
    pub heads: Vec<Vec<f32>>,
}

impl Attribution {
    /// `|total - (embed + sum(attn) + sum(mlp))|`: how far the parts are from adding up (float
    /// rounding only).
    pub fn residual(&self) -> f32 {
        let parts: f32 = self.embed + self.attn.iter().sum::<f32>() + self.mlp.iter().sum::<f32>();
        (self.total - parts).abs()
    }

    /// The largest `|attn[l] - sum(heads[l])|` over blocks.
    pub fn head_residual(&self) -> f32 {
        self.attn
            .iter()
            .zip(&self.heads)
            .map(|(a, h)| (a - h.iter().sum::<f32>()).abs())
            .fold(0.0, f32::max)
    }

    /// The `n` block parts (`attn {l}`, `mlp {l}`) of largest magnitude, largest first.
    pub fn largest_parts(&self, n: usize) -> Vec<(String, f32)> {
        let mut parts: Vec<(String, f32)> = (0..self.attn.len())
            .flat_map(|l| {
                [
                    (format!("attn {l}"), self.attn[l]),
                    (
                        format!("mlp {l}"),
                        self.mlp.get(l).copied().unwrap_or(f32::NAN),
                    ),
                ]
            })
            .collect();
        parts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        parts.truncate(n);
        parts
    }

    /// Writes `component,layer,head,logit_diff` rows (embed, attn, mlp, head, total) to `path`,
    /// atomically.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut csv = String::from("component,layer,head,logit_diff\n");
        csv.push_str(&format!("embed,,,{:.6}\n", self.embed));
        for (l, (a, m)) in self.attn.iter().zip(&self.mlp).enumerate() {
            csv.push_str(&format!("attn,{l},,{a:.6}\nmlp,{l},,{m:.6}\n"));
        }
        for (l, hs) in self.heads.iter().enumerate() {
            for (h, v) in hs.iter().enumerate() {
                csv.push_str(&format!("head,{l},{h},{v:.6}\n"));
            }
        }
        csv.push_str(&format!(
            "total,,,{:.6}\nmodel,,,{:.6}\n",
            self.total, self.logit_diff
        ));
        atomic_write_bytes(path.as_ref(), csv.as_bytes())
    }

    /// Two panels: per block attention and MLP parts, and per head parts; `{stem}.png`/`.svg`.
    pub fn figure(&self, title: &str, stem: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let n = self.attn.len();
        let ys: Vec<String> = (0..n).map(|l| format!("L{l}")).collect();
        let heads = self.heads.first().map_or(0, Vec::len);
        HeatMap {
            title: format!(
                "{title}: direct logit attribution (embed {:.2}, total {:.2})",
                self.embed, self.total
            ),
            x_label: "component".into(),
            y_label: "block".into(),
            panels: vec![
                HeatPanel {
                    title: "attention and MLP".into(),
                    x_labels: vec!["attn".into(), "mlp".into()],
                    y_labels: ys.clone(),
                    values: (0..n)
                        .map(|l| vec![f64::from(self.attn[l]), f64::from(self.mlp[l])])
                        .collect(),
                    cell_text: Vec::new(),
                },
                HeatPanel {
                    title: "heads".into(),
                    x_labels: (0..heads).map(|h| format!("H{h}")).collect(),
                    y_labels: ys,
                    values: self
                        .heads
                        .iter()
                        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
                        .collect(),
                    cell_text: Vec::new(),
                },
            ],
            columns: 0,
            width: 500 + 60 * heads as u32,
            height: (180 + 24 * n as u32).max(500),
        }
        .save(stem)
    }
}

/// Direct logit attribution on one prompt (`ids`, `[pos]`): see [`Attribution`]. Needs a dense
/// unembedding (the default load).
pub fn direct_logit_attribution(
    model: &Model,
    ids: &[u32],
    answer: u32,
    other: u32,
) -> Result<Attribution> {
    let cfg = model.config();
    let n = cfg.n_layers;
    let rows = model.unembed_rows(&[answer, other])?; // [2, d_model]
    let batch = Batch::single(ids)?;
    let s = batch.seq_len();
    let want = |p: HookPoint| {
        matches!(
            p,
            HookPoint::Embed
                | HookPoint::AttnOut(_)
                | HookPoint::MlpOut(_)
                | HookPoint::AttnResult(_)
                | HookPoint::FinalScale
        ) || p == HookPoint::ResidPost(n.saturating_sub(1))
    };
    // Only the two answers' logits at the last position are computed.
    let mut cache = crate::ActivationCache::new();
    let logits = {
        let mut hooks = crate::Hooks::new();
        hooks.add_where(want, &mut cache);
        model.last_token_logits(&batch, &mut hooks, None, None, &[vec![answer, other]])?
    }; // [1, 2]
    let last = |p: HookPoint| -> Result<Tensor> {
        let t = cache.require(p)?;
        Ok(t.narrow(1, s - 1, 1)?
            .squeeze(1)?
            .squeeze(0)?
            .to_dtype(DType::F32)?) // [..]
    };
    let scale = last(HookPoint::FinalScale)?.to_vec1::<f32>()?[0];
    let w = model.final_norm_weight().to_dtype(DType::F32)?; // [d_model]
    let rows = rows.to_dtype(DType::F32)?;
    let dir = ((rows.i(0)? - rows.i(1)?)? * w)?; // [d_model]
    let dir = (dir / f64::from(scale))?; // [d_model]
    let part = |c: &Tensor| -> Result<f32> {
        Ok(c.broadcast_mul(&dir)?
            .sum(D::Minus1)?
            .to_dtype(DType::F32)?
            .to_vec0::<f32>()?)
    };
    let embed = part(&last(HookPoint::Embed)?)?;
    let mut attn = Vec::with_capacity(n);
    let mut mlp = Vec::with_capacity(n);
    let mut heads = Vec::with_capacity(n);
    for l in 0..n {
        attn.push(part(&last(HookPoint::AttnOut(l))?)?);
        mlp.push(part(&last(HookPoint::MlpOut(l))?)?);
        let r = last(HookPoint::AttnResult(l))?; // [head, d_model]
        let r = model
            .heads_in_resid(l, &r.to_dtype(model.dtype())?)?
            .to_dtype(DType::F32)?; // [head, d_model]
        let per: Vec<f32> = r.broadcast_mul(&dir.unsqueeze(0)?)?.sum(1)?.to_vec1()?; // [head]
        heads.push(per);
    }
    let total = part(&last(HookPoint::ResidPost(n.saturating_sub(1)))?)?;
    let lv: Vec<f32> = logits.i(0)?.to_vec1()?; // [2]
    Ok(Attribution {
        answer,
        other,
        logit_diff: lv[0] - lv[1],
        total,
        embed,
        attn,
        mlp,
        heads,
    })
}

/// The attention patterns of block `layer` on one prompt, one panel per head (query rows, key
/// columns, token text on both axes), as `{stem}.png` and `{stem}.svg`; returns their paths.
pub fn attention_figure(
    model: &Model,
    tok: &Tokenizer,
    ids: &[u32],
    layer: usize,
    stem: impl AsRef<Path>,
) -> Result<Vec<PathBuf>> {
    let p = HookPoint::AttnPattern(layer);
    p.check(model.config().n_layers)?;
    let batch = Batch::single(ids)?;
    let cache = model.cache(&batch, |q| q == p)?;
    let pattern = cache.require(p)?.i(0)?.to_dtype(DType::F32)?; // [head, pos, pos]
    let labels: Vec<String> = ids.iter().map(|&t| shown(tok, t)).collect();
    let h = pattern.dim(0)?;
    let panels = (0..h)
        .map(|head| {
            let v: Vec<Vec<f32>> = pattern.i(head)?.to_vec2()?;
            Ok(HeatPanel {
                title: format!("head {head}"),
                x_labels: labels.clone(),
                y_labels: labels.clone(),
                values: v
                    .iter()
                    .map(|r| r.iter().map(|&x| f64::from(x)).collect())
                    .collect(),
                cell_text: vec![vec![String::new(); ids.len()]; ids.len()],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let side = (120 + 28 * ids.len() as u32).max(260);
    let cols = (h as f64).sqrt().ceil().max(1.0) as usize;
    let rows = h.div_ceil(cols) as u32;
    HeatMap {
        title: format!("Attention patterns, block {layer} (query rows, key columns)"),
        x_label: "key".into(),
        y_label: "query".into(),
        panels,
        columns: cols,
        width: side * cols as u32,
        height: (side + 40) * rows + 60,
    }
    .save(stem)
}

/// One call for the CLI and notebooks: the logit lens of `prompt` on each model (e.g. a base model
/// and its tuned sibling, every tokenizer giving the same ids), written into `out` as
/// `lens_<name>.csv` per model and one heat map `lens.{png,svg}` with a panel per model. `target`
/// is a single token's text (e.g. `" Paris"`). Returns the lenses in the models' order.
pub fn lens_report(
    models: &[(&str, &Model, &Tokenizer)],
    prompt: &str,
    target: Option<&str>,
    out: impl AsRef<Path>,
) -> Result<Vec<LogitLens>> {
    let out = out.as_ref();
    let (_, _, tok) = models.first().ok_or_else(|| Error::InvalidArgument {
        name: "models".into(),
        msg: "no model to read".into(),
    })?;
    let ids = same_ids(models, prompt)?;
    let opts = LensOptions {
        target: target.map(|t| one_token(tok, t, "target")).transpose()?,
        ..Default::default()
    };
    let mut lenses = Vec::with_capacity(models.len());
    for (name, model, _) in models {
        let lens = logit_lens(model, &ids, &opts)?;
        lens.write_csv(out.join(format!("lens_{}.csv", file_safe(name))), tok)?;
        lenses.push(lens);
    }
    let panels: Vec<(&str, &LogitLens)> = models.iter().map(|m| m.0).zip(&lenses).collect();
    lens_figure(&panels, tok, out.join("lens"))?;
    Ok(lenses)
}

/// One call: [`direct_logit_attribution`] of `prompt` for `answer` against `other` (each a single
/// token's text), written into `out` as `dla.csv` and `dla.{png,svg}`.
pub fn dla_report(
    model: &Model,
    tok: &Tokenizer,
    prompt: &str,
    answer: &str,
    other: &str,
    out: impl AsRef<Path>,
) -> Result<Attribution> {
    let out = out.as_ref();
    let ids = tok.encode(prompt)?;
    let a = one_token(tok, answer, "answer")?;
    let o = one_token(tok, other, "other")?;
    let dla = direct_logit_attribution(model, &ids, a, o)?;
    dla.write_csv(out.join("dla.csv"))?;
    dla.figure(&format!("{answer:?} vs {other:?}"), out.join("dla"))?;
    Ok(dla)
}

/// The ids of `prompt`, the same under every model's tokenizer (else a typed error).
fn same_ids(models: &[(&str, &Model, &Tokenizer)], prompt: &str) -> Result<Vec<u32>> {
    let mut ids: Option<Vec<u32>> = None;
    for (name, _, tok) in models {
        let these = tok.encode(prompt)?;
        match &ids {
            Some(first) if *first != these => {
                return Err(Error::InvalidArgument {
                    name: (*name).to_string(),
                    msg: format!(
                        "its tokenizer encodes the prompt differently ({} vs {} tokens): a side-by-side \
                         lens needs models that share a tokenizer",
                        these.len(),
                        first.len()
                    ),
                })
            }
            Some(_) => {}
            None => ids = Some(these),
        }
    }
    ids.ok_or_else(|| Error::InvalidArgument {
        name: "models".into(),
        msg: "no model to read".into(),
    })
}

/// A model spec as a file-name part (`/`, `+`, `.` and spaces become `_`).
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
