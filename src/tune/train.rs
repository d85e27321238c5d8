//! LoRA fine-tuning with candle's autograd: supervised fine-tuning on chat transcripts and DPO on
//! preference pairs, the base weights frozen.
//!
//! Both objectives run the same decoder as inference, with plain-op kernels that autograd can
//! differentiate, and compute logits only at the positions the loss reads (the unembedding of a
//! large vocabulary is most of a small model's cost). [`sft`] minimises the mean cross-entropy of
//! the completion tokens (`ids[prompt_len..]`, e.g. the assistant's reply and its end-of-turn
//! token). [`dpo`] minimises `-log σ(β ((log π(c) - log π(r)) - (log π_ref(c) - log π_ref(r))))`
//! with the frozen base as the reference `π_ref`. Optimiser: AdamW, gradient clipping by global
//! norm, linear warm-up. Runs are seeded: the adapter's initialisation and the data order come
//! from `seed`, and the same seed and data give the same adapter.
//!
//! ```no_run
//! use puppetlens::train::{sft, SftExample, TrainOptions};
//! use puppetlens::{LoadOptions, Model};
//! let base = Model::load("gemma-3-270m.Q4_K_M.gguf", &LoadOptions::default())?;
//! let data = vec![SftExample { ids: vec![2, 105, 2364, 107, 106, 107, 105, 4368, 107, 9259, 106], prompt_len: 8 }];
//! let (adapter, log) = sft(&base, &data, &TrainOptions { epochs: 2, ..Default::default() })?;
//! adapter.save("my-adapter")?;
//! println!("final loss {:.3}, {:.0} tokens/s", log.steps.last().unwrap().loss, log.tokens_per_s);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::data::SplitMix64;
use crate::hook::Hooks;
use crate::lora::{rotary_heads, unpermute_rows, Adapter, LoraConfig};
use crate::model::{LoraPath, Model, Output};
use crate::{Error, Result};

/// One supervised example: a tokenized transcript whose tokens from `prompt_len` on are learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftExample {
    /// Token ids (BOS included when the model wants one).
    pub ids: Vec<u32>,
    /// Tokens before this index are context only; the loss is on `ids[prompt_len..]`.
    pub prompt_len: usize,
}

/// One preference pair: two continuations of the same prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpoPair {
    /// The prompt's ids.
    pub prompt: Vec<u32>,
    /// The preferred continuation's ids.
    pub chosen: Vec<u32>,
    /// The dispreferred continuation's ids.
    pub rejected: Vec<u32>,
}

/// Options of [`sft`] and [`dpo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Which linears to adapt.
    pub lora: LoraConfig,
    /// AdamW learning rate after warm-up (2e-4).
    pub lr: f64,
    /// AdamW weight decay on the adapter (0).
    pub weight_decay: f64,
    /// Passes over the data (1).
    pub epochs: usize,
    /// Stop after this many optimiser steps, if set.
    pub max_steps: Option<usize>,
    /// Examples (SFT) or pairs (DPO) per step (4).
    pub batch_size: usize,
    /// Linear warm-up steps (0).
    pub warmup_steps: usize,
    /// Clip the global gradient norm to this (1.0; `f64::INFINITY` turns clipping off).
    /// JSON has no infinity: it is written as `null` and read back as infinity.
    #[serde(deserialize_with = "null_is_infinity")]
    pub max_grad_norm: f64,
    /// DPO temperature β (0.1).
    pub beta: f64,
    /// Seed of the adapter's initialisation and of the data order (0).
    pub seed: u64,
    /// Print a line to stderr every `log_every` steps (0: never).
    pub log_every: usize,
    /// Keep the adapter and the log in this directory while training (none by default): every
    /// `checkpoint_every` steps (once the next step's loss on the weights is seen to be finite)
    /// and at the end, `adapter_model.safetensors`, `adapter_config.json` and `train_log.json`
    /// are replaced together (see [`write_checkpoint`]). When a step's loss or gradient is not
    /// finite, the last adapter whose loss was finite is kept there.
    #[serde(default)]
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Steps between checkpoints (0: only at the end and on a failed step).
    #[serde(default)]
    pub checkpoint_every: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            lora: LoraConfig::default(),
            lr: 2e-4,
            weight_decay: 0.0,
            epochs: 1,
            max_steps: None,
            batch_size: 4,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            beta: 0.1,
            seed: 0,
            log_every: 10,
            checkpoint_dir: None,
            checkpoint_every: 0,
        }
    }
}

fn null_is_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// One optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step number, from 1.
    pub step: usize,
    /// Epoch, from 0.
    pub epoch: usize,
    /// The step's loss (before the update).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens run through the model (padding excluded).
    pub tokens: usize,
    /// Seconds since training started.
    pub seconds: f64,
    /// DPO: mean implicit reward margin `β ((log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r)))`.
    pub reward_margin: Option<f64>,
    /// DPO: fraction of the step's pairs with a positive margin.
    pub reward_accuracy: Option<f64>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    /// `"sft"` or `"dpo"`.
    pub objective: String,
    /// Every step.
    pub steps: Vec<StepRecord>,
    /// Wall-clock seconds of the optimisation (reference log-probabilities included for DPO).
    pub seconds: f64,
    /// Tokens run through the trained model.
    pub tokens: usize,
    /// `tokens / seconds` of the optimisation steps.
    pub tokens_per_s: f64,
    /// Trainable values.
    pub n_params: usize,
    /// The options used.
    pub options: TrainOptions,
}

/// Sequences scored by summing log-probabilities of target tokens in groups.
struct Scored {
    rows: Vec<Vec<u32>>,
    /// Per target: (row, position in the row whose logits predict it, token, group).
    targets: Vec<(usize, usize, u32, usize)>,
    n_groups: usize,
}

/// Sum of `log p(token)` per group, `[n_groups]` f32, differentiable when `model` is.
fn group_logps(model: &Model, s: &Scored) -> Result<Tensor> {
    let batch = Batch::new(&s.rows)?;
    let (b, t) = (batch.len(), batch.seq_len());
    let d = model.config().d_model;
    let hidden = model
        .run(&batch, None, &mut Hooks::new(), Output::Hidden)?
        .ok_or_else(|| Error::InvalidArgument {
            name: "forward".into(),
            msg: "no hidden states returned".into(),
        })?; // [b, t, d]
    let pads = batch.pads();
    let idx: Vec<u32> = s
        .targets
        .iter()
        .map(|&(r, p, _, _)| (r * t + pads[r] + p) as u32)
        .collect();
    let n = idx.len();
    let dev = model.device();
    let idx = Tensor::from_vec(idx, n, dev)?;
    let h = hidden.reshape((b * t, d))?.index_select(&idx, 0)?; // [n, d]
    let logp = candle_nn::ops::log_softmax(&model.logits_of(&h)?, D::Minus1)?; // [n, vocab]
    let tok: Vec<u32> = s.targets.iter().map(|&(_, _, k, _)| k).collect();
    let tok = Tensor::from_vec(tok, (n, 1), dev)?;
    let picked = logp.gather(&tok, 1)?; // [n, 1]
    let mut onehot = vec![0f32; s.n_groups * n];
    for (j, &(_, _, _, g)) in s.targets.iter().enumerate() {
        onehot[g * n + j] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (s.n_groups, n), dev)?.to_dtype(picked.dtype())?; // [groups, n]
    Ok(onehot.matmul(&picked)?.squeeze(1)?) // [groups]
}

fn check_ids(model: &Model, ids: &[u32], what: &str) -> Result<()> {
    let v = model.config().vocab_size;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
        return Err(Error::InvalidArgument {
            name: what.into(),
            msg: format!("token id {bad} is outside the vocabulary of {v}"),
        });
    }
    Ok(())
}

fn sft_scored(model: &Model, data: &[SftExample], batch: &[usize]) -> Result<Scored> {
    let mut rows = Vec::with_capacity(batch.len());
    let mut targets = Vec::new();
    for (r, &i) in batch.iter().enumerate() {
        let ex = &data[i];
        if ex.prompt_len == 0 || ex.prompt_len >= ex.ids.len() {
            return Err(Error::InvalidArgument {
                name: format!("SFT example {i}"),
                msg: format!(
                    "prompt_len {} must be in 1..{} (the example's length) so that some tokens are learned",
                    ex.prompt_len,
                    ex.ids.len()
                ),
            });
        }
        check_ids(model, &ex.ids, &format!("SFT example {i}"))?;
        for (j, &tok) in ex.ids.iter().enumerate().skip(ex.prompt_len) {
            targets.push((r, j - 1, tok, 0));
        }
        rows.push(ex.ids.clone());
    }
    Ok(Scored {
        rows,
        targets,
        n_groups: 1,
    })
}

/// Rows and targets of DPO pairs: groups `2k` (chosen) and `2k + 1` (rejected) for the k-th pair.
/// Pairs whose continuations are single tokens share one row.
fn dpo_scored(model: &Model, data: &[DpoPair], batch: &[usize]) -> Result<Scored> {
    let mut rows: Vec<Vec<u32>> = Vec::new();
    let mut targets = Vec::new();
    for (k, &i) in batch.iter().enumerate() {
        let p = &data[i];
        let what = format!("DPO pair {i}");
        if p.prompt.is_empty() || p.chosen.is_empty() || p.rejected.is_empty() {
            return Err(Error::InvalidArgument {
                name: what,
                msg: "prompt, chosen and rejected must each have at least one token".into(),
            });
        }
        if p.chosen == p.rejected {
            return Err(Error::InvalidArgument {
                name: what,
                msg: "chosen and rejected are identical".into(),
            });
        }
        for part in [&p.prompt, &p.chosen, &p.rejected] {
            check_ids(model, part, &what)?;
        }
        let pl = p.prompt.len();
        if p.chosen.len() == 1 && p.rejected.len() == 1 {
            let r = rows.len();
            rows.push(p.prompt.clone());
            targets.push((r, pl - 1, p.chosen[0], 2 * k));
            targets.push((r, pl - 1, p.rejected[0], 2 * k + 1));
        } else {
            for (g, cont) in [(2 * k, &p.chosen), (2 * k + 1, &p.rejected)] {
                let r = rows.len();
                let mut ids = p.prompt.clone();
                ids.extend_from_slice(cont);
                for (j, &tok) in cont.iter().enumerate() {
                    targets.push((r, pl + j - 1, tok, g));
                }
                rows.push(ids);
            }
        }
    }
    Ok(Scored {
        rows,
        targets,
        n_groups: 2 * batch.len(),
    })
}

/// The trainable state: variables and the model that reads them.
struct Trainee {
    model: Model,
    vars: Vec<((usize, String), Var, Var)>,
    config: LoraConfig,
}

impl Trainee {
    fn new(base: &Model, opts: &TrainOptions) -> Result<Trainee> {
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument {
                name: "batch_size".into(),
                msg: "must be at least 1".into(),
            });
        }
        if !(opts.lr > 0.0 && opts.lr.is_finite()) {
            return Err(Error::InvalidArgument {
                name: "lr".into(),
                msg: format!("{} (must be positive and finite)", opts.lr),
            });
        }
        let init = Adapter::init(base, &opts.lora, opts.seed)?;
        let scale = init.scale();
        let mut vars = Vec::new();
        let mut paths = Vec::new();
        for (key, (a, b)) in init.weights() {
            // B = 0 at init, so llama.cpp's row order needs no permutation here.
            let a = Var::from_tensor(&a.to_dtype(base.dtype())?)?;
            let b = Var::from_tensor(&b.to_dtype(base.dtype())?)?;
            paths.push((
                key.clone(),
                LoraPath {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                    scale,
                },
            ));
            vars.push((key.clone(), a, b));
        }
        Ok(Trainee {
            model: base.with_lora_paths(&paths, true)?,
            vars,
            config: opts.lora.clone(),
        })
    }

    fn adapter(&self, base: &Model) -> Result<Adapter> {
        let mut weights = std::collections::BTreeMap::new();
        for ((l, m), a, b) in &self.vars {
            let a = a.as_tensor().detach().to_dtype(DType::F32)?;
            let b = b.as_tensor().detach().to_dtype(DType::F32)?;
            let b = match rotary_heads(base, m) {
                Some(h) => unpermute_rows(&b, h)?,
                None => b,
            };
            weights.insert((*l, m.clone()), (a, b));
        }
        Ok(Adapter::from_parts(
            self.config.clone(),
            weights,
            String::new(),
        ))
    }

    fn n_params(&self) -> usize {
        self.vars
            .iter()
            .map(|(_, a, b)| a.as_tensor().elem_count() + b.as_tensor().elem_count())
            .sum()
    }

    /// The error for a failed step `(step, loss_finite)`; with a checkpoint directory, the
    /// adapter as it stands (from before this step) is written there first when this step's loss
    /// on it was finite, else the last checkpoint stays.
    fn stop(
        &self,
        base: &Model,
        opts: &TrainOptions,
        log: &TrainLog,
        (step, loss_finite): (usize, bool),
        msg: String,
    ) -> Error {
        let kept = match &opts.checkpoint_dir {
            None => None,
            Some(dir) => {
                let finite = loss_finite
                    && self.all_vars().iter().all(|v| {
                        v.as_tensor()
                            .sqr()
                            .and_then(|t| t.sum_all())
                            .and_then(|t| t.to_dtype(DType::F64))
                            .and_then(|t| t.to_scalar::<f64>())
                            .is_ok_and(|x| x.is_finite())
                    });
                let saved = finite
                    && self
                        .adapter(base)
                        .and_then(|a| write_checkpoint(dir, &a, log))
                        .is_ok();
                // An adapter that is not finite is not written; an earlier checkpoint stays.
                (saved || dir.join(LOG_FILE).exists()).then(|| dir.clone())
            }
        };
        Error::Training {
            objective: log.objective.clone(),
            step,
            msg,
            last_good: kept,
        }
    }

    fn all_vars(&self) -> Vec<Var> {
        self.vars
            .iter()
            .flat_map(|(_, a, b)| [a.clone(), b.clone()])
            .collect()
    }
}

/// Step order: a seeded shuffle per epoch, cut into batches.
fn schedule(n: usize, opts: &TrainOptions) -> Vec<(usize, Vec<usize>)> {
    let mut rng = SplitMix64::new(opts.seed ^ 0x5eed_da7a);
    let mut out = Vec::new();
    for epoch in 0..opts.epochs {
        let mut idx: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut idx);
        for c in idx.chunks(opts.batch_size) {
            out.push((epoch, c.to_vec()));
        }
    }
    if let Some(m) = opts.max_steps {
        out.truncate(m);
    }
    out
}

/// The optimisation loop shared by both objectives: `loss_of(model, batch)` returns the loss and
/// optional DPO statistics.
fn optimise(
    base: &Model,
    n_items: usize,
    opts: &TrainOptions,
    objective: &str,
    mut loss_of: impl FnMut(&Model, &[usize]) -> Result<(Tensor, usize, Option<(f64, f64)>)>,
) -> Result<(Adapter, TrainLog)> {
    if n_items == 0 {
        return Err(Error::InvalidArgument {
            name: format!("{objective} data"),
            msg: "no examples".into(),
        });
    }
    let trainee = Trainee::new(base, opts)?;
    let mut opt = AdamW::new(
        trainee.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let plan = schedule(n_items, opts);
    let total = plan.len();
    let start = Instant::now();
    let mut steps = Vec::with_capacity(total);
    let mut tokens_total = 0;
    let log_so_far = |steps: &[StepRecord], tokens_total: usize| {
        let seconds = start.elapsed().as_secs_f64();
        TrainLog {
            objective: objective.into(),
            steps: steps.to_vec(),
            seconds,
            tokens: tokens_total,
            tokens_per_s: tokens_total as f64 / seconds.max(1e-9),
            n_params: trainee.n_params(),
            options: opts.clone(),
        }
    };
    for (i, (epoch, batch)) in plan.into_iter().enumerate() {
        let step = i + 1;
        let lr = if opts.warmup_steps > 0 && step <= opts.warmup_steps {
            opts.lr * step as f64 / opts.warmup_steps as f64
        } else {
            opts.lr
        };
        opt.set_learning_rate(lr);
        let (loss, tokens, stats) = loss_of(&trainee.model, &batch)?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(trainee.stop(
                base,
                opts,
                &log_so_far(&steps, tokens_total),
                (step, false),
                format!("loss is {loss_value} (lower the learning rate?)"),
            ));
        }
        // A checkpoint holds weights whose loss was seen to be finite: the state after
        // `step - 1` updates, written once this step's loss on it is known.
        if let Some(dir) = &opts.checkpoint_dir {
            let done = step - 1;
            if opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0 {
                write_checkpoint(
                    dir,
                    &trainee.adapter(base)?,
                    &log_so_far(&steps, tokens_total),
                )?;
            }
        }
        let mut grads = loss.backward()?;
        let mut sq = 0f64;
        for v in trainee.all_vars() {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()? as f64;
            }
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            return Err(trainee.stop(
                base,
                opts,
                &log_so_far(&steps, tokens_total),
                (step, true),
                format!("gradient norm is {grad_norm} (loss {loss_value})"),
            ));
        }
        if grad_norm > opts.max_grad_norm {
            let f = opts.max_grad_norm / (grad_norm + 1e-6);
            for v in trainee.all_vars() {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let scaled = (g * f)?;
                    grads.insert(v.as_tensor(), scaled);
                }
            }
        }
        opt.step(&grads)?;
        tokens_total += tokens;
        let seconds = start.elapsed().as_secs_f64();
        let rec = StepRecord {
            step,
            epoch,
            loss: loss_value,
            lr,
            grad_norm,
            tokens,
            seconds,
            reward_margin: stats.map(|s| s.0),
            reward_accuracy: stats.map(|s| s.1),
        };
        if opts.log_every > 0 && (step % opts.log_every == 0 || step == 1 || step == total) {
            let extra = match stats {
                Some((m, a)) => format!(" margin {m:+.3} acc {a:.2}"),
                None => String::new(),
            };
            crate::progress::note(&format!(
                "{objective} step {step}/{total} epoch {epoch} loss {loss_value:.4}{extra} |g| {grad_norm:.3} lr {lr:.2e} {:.0} tok/s",
                tokens_total as f64 / seconds.max(1e-9)
            ));
        }
        steps.push(rec);
    }
    let log = log_so_far(&steps, tokens_total);
    let adapter = trainee.adapter(base)?;
    if let Some(dir) = &opts.checkpoint_dir {
        write_checkpoint(dir, &adapter, &log)?;
    }
    Ok((adapter, log))
}

/// Reads SFT examples from a JSONL file, one [`SftExample`] per line
/// (`{"ids": [1, 2, 3], "prompt_len": 2}`); blank lines are skipped. Errors name the line.
pub fn load_sft_jsonl(path: impl AsRef<std::path::Path>) -> Result<Vec<SftExample>> {
    read_jsonl(path.as_ref())
}

/// Reads DPO pairs from a JSONL file, one [`DpoPair`] per line
/// (`{"prompt": [1, 2], "chosen": [3], "rejected": [4]}`); blank lines are skipped.
pub fn load_dpo_jsonl(path: impl AsRef<std::path::Path>) -> Result<Vec<DpoPair>> {
    read_jsonl(path.as_ref())
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            field: format!("line {}", i + 1),
            msg: e.to_string(),
        })?);
    }
    Ok(out)
}

/// The log file [`write_checkpoint`] writes beside the adapter.
pub const LOG_FILE: &str = "train_log.json";

/// Writes `adapter` and `log` into `dir` as one unit: the three files (`adapter_model.safetensors`,
/// `adapter_config.json`, [`LOG_FILE`]) are written into a fresh sibling directory that then
/// replaces `dir`, so that a reader (or a run killed at any point) never sees an adapter and a
/// log from different steps, or a half-written file. `dir` must be absent or hold only these
/// files (it is replaced whole).
///
/// ```
/// # use puppetlens::train::{write_checkpoint, TrainLog, TrainOptions};
/// # fn demo(adapter: &puppetlens::lora::Adapter, log: &TrainLog) -> puppetlens::Result<()> {
/// write_checkpoint("runs/my-adapter".as_ref(), adapter, log)?;
/// # Ok(()) }
/// ```
pub fn write_checkpoint(dir: &std::path::Path, adapter: &Adapter, log: &TrainLog) -> Result<()> {
    let json = serde_json::to_string_pretty(log).map_err(|e| Error::InvalidArgument {
        name: "train log".into(),
        msg: e.to_string(),
    })?;
    crate::util::atomic_write_dir(
        dir,
        &["adapter_model.safetensors", "adapter_config.json", LOG_FILE],
        |tmp| {
            adapter.save(tmp)?;
            std::fs::write(tmp.join(LOG_FILE), json.as_bytes())
                .map_err(|e| Error::io(tmp.join(LOG_FILE), e))
        },
    )
}

fn n_tokens(s: &Scored) -> usize {
    s.rows.iter().map(|r| r.len()).sum()
}

/// Supervised fine-tuning of a fresh LoRA adapter on `data` (see the [module docs](self)).
pub fn sft(base: &Model, data: &[SftExample], opts: &TrainOptions) -> Result<(Adapter, TrainLog)> {
    optimise(base, data.len(), opts, "sft", |model, batch| {
        let s = sft_scored(model, data, batch)?;
        let n = s.targets.len();
        let loss = (group_logps(model, &s)?.sum_all()? / -(n as f64))?;
        Ok((loss, n_tokens(&s), None))
    })
}

/// Mean cross-entropy (nats per completion token) of `model` on `data`, without gradients.
pub fn sft_loss(model: &Model, data: &[SftExample], batch_size: usize) -> Result<f64> {
    let mut total = 0f64;
    let mut n = 0usize;
    let idx: Vec<usize> = (0..data.len()).collect();
    for batch in idx.chunks(batch_size.max(1)) {
        let s = sft_scored(model, data, batch)?;
        n += s.targets.len();
        total -= group_logps(model, &s)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    if n == 0 {
        return Err(Error::InvalidArgument {
            name: "SFT data".into(),
            msg: "no examples".into(),
        });
    }
    Ok(total / n as f64)
}

/// Log-probabilities `(log π(chosen), log π(rejected))` of every pair under `model`.
pub fn pair_logps(model: &Model, data: &[DpoPair], batch_size: usize) -> Result<Vec<(f64, f64)>> {
    let mut out = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for batch in idx.chunks(batch_size.max(1)) {
        let s = dpo_scored(model, data, batch)?;
        let g = group_logps(model, &s)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        out.extend(g.chunks(2).map(|c| (c[0] as f64, c[1] as f64)));
    }
    Ok(out)
}

/// DPO of a fresh LoRA adapter on `data`, the frozen `base` as reference (see the
/// [module docs](self)).
pub fn dpo(base: &Model, data: &[DpoPair], opts: &TrainOptions) -> Result<(Adapter, TrainLog)> {
    if !(opts.beta > 0.0 && opts.beta.is_finite()) {
        return Err(Error::InvalidArgument {
            name: "beta".into(),
            msg: format!("{} (must be positive and finite)", opts.beta),
        });
    }
    let reference = pair_logps(base, data, opts.batch_size)?;
    let beta = opts.beta;
    optimise(base, data.len(), opts, "dpo", |model, batch| {
        let s = dpo_scored(model, data, batch)?;
        let k = batch.len();
        let lp = group_logps(model, &s)?.reshape((k, 2))?; // [k, 2]
        let refs: Vec<f32> = batch
            .iter()
            .map(|&i| (reference[i].0 - reference[i].1) as f32)
            .collect();
        let refs = Tensor::from_vec(refs, k, model.device())?.to_dtype(lp.dtype())?; // [k]
        let policy = (lp.narrow(1, 0, 1)?.squeeze(1)? - lp.narrow(1, 1, 1)?.squeeze(1)?)?; // [k]
        let z = ((policy - refs)? * beta)?; // [k] reward margins
                                            // -log σ(z) = relu(-z) + log(1 + exp(-|z|)), stable for any z.
        let loss = (z.neg()?.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?.mean_all()?;
        let zs = z.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let margin = zs.iter().map(|&v| v as f64).sum::<f64>() / k as f64;
        let acc = zs.iter().filter(|&&v| v > 0.0).count() as f64 / k as f64;
        Ok((loss, n_tokens(&s), Some((margin, acc))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LoadOptions;
    use candle_core::Device;
    use std::collections::HashMap;

    /// A tiny random checkpoint written to a temp dir: Gemma 3 layout (q/k norms, sandwich norms,
    /// GELU, local + global layers) or Llama layout.
    fn tiny(gemma: bool, dtype: DType) -> Model {
        let (v, d, h, kvh, hd, f, n) = (40usize, 16usize, 4usize, 2usize, 8usize, 24usize, 2usize);
        let mut rng = SplitMix64::new(7);
        let mut t = |shape: &[usize], mean: f32, std: f32| {
            let n: usize = shape.iter().product();
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
                    mean + std * (2.0 * u - 1.0) * 1.7
                })
                .collect();
            Tensor::from_vec(x, shape, &Device::Cpu).unwrap()
        };
        let nm = if gemma { 0.0 } else { 1.0 };
        let mut w: HashMap<String, Tensor> = HashMap::new();
        w.insert("model.embed_tokens.weight".into(), t(&[v, d], 0.0, 0.5));
        w.insert("model.norm.weight".into(), t(&[d], nm, 0.1));
        for l in 0..n {
            let p = format!("model.layers.{l}");
            let mut put = |k: &str, x: Tensor| {
                w.insert(format!("{p}.{k}"), x);
            };
            put("self_attn.q_proj.weight", t(&[h * hd, d], 0.0, 0.2));
            put("self_attn.k_proj.weight", t(&[kvh * hd, d], 0.0, 0.2));
            put("self_attn.v_proj.weight", t(&[kvh * hd, d], 0.0, 0.2));
            put("self_attn.o_proj.weight", t(&[d, h * hd], 0.0, 0.2));
            put("mlp.gate_proj.weight", t(&[f, d], 0.0, 0.2));
            put("mlp.up_proj.weight", t(&[f, d], 0.0, 0.2));
            put("mlp.down_proj.weight", t(&[d, f], 0.0, 0.2));
            put("input_layernorm.weight", t(&[d], nm, 0.1));
            put("post_attention_layernorm.weight", t(&[d], nm, 0.1));
            if gemma {
                put("self_attn.q_norm.weight", t(&[hd], nm, 0.1));
                put("self_attn.k_norm.weight", t(&[hd], nm, 0.1));
                put("pre_feedforward_layernorm.weight", t(&[d], nm, 0.1));
                put("post_feedforward_layernorm.weight", t(&[d], nm, 0.1));
            }
        }
        let mut cfg = serde_json::json!({
            "model_type": if gemma { "gemma3_text" } else { "llama" },
            "vocab_size": v, "hidden_size": d, "intermediate_size": f,
            "num_hidden_layers": n, "num_attention_heads": h, "num_key_value_heads": kvh,
            "head_dim": hd, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "max_position_embeddings": 64, "tie_word_embeddings": true,
            "hidden_act": if gemma { "gelu_pytorch_tanh" } else { "silu" },
        });
        if gemma {
            let o = cfg.as_object_mut().unwrap();
            o.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
            o.insert("query_pre_attn_scalar".into(), hd.into());
            o.insert("sliding_window".into(), 3.into());
            o.insert(
                "layer_types".into(),
                serde_json::json!(["sliding_attention", "full_attention"]),
            );
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "puppetlens-train-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let opts = LoadOptions {
            dtype,
            ..Default::default()
        };
        let m = Model::from_safetensors_dir(&dir, &opts).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        m
    }

    /// Sets every B to seeded values in ±0.2 (in the trainee's dtype).
    fn randomize_b(tr: &Trainee, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        for (_, _, b) in &tr.vars {
            let x: Vec<f64> = (0..b.elem_count())
                .map(|_| ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.4)
                .collect();
            let t = Tensor::from_vec(x, b.shape(), &Device::Cpu)
                .and_then(|t| t.to_dtype(b.dtype()))
                .unwrap();
            b.set(&t).unwrap();
        }
    }

    fn data() -> Vec<SftExample> {
        vec![
            SftExample {
                ids: vec![1, 5, 9, 3, 7, 30, 2],
                prompt_len: 3,
            },
            SftExample {
                ids: vec![1, 8, 4, 22, 11],
                prompt_len: 2,
            },
        ]
    }

    /// A step whose loss is not finite stops training with an error naming the step, and the
    /// checkpoint directory keeps the adapter of the last good step.
    #[test]
    fn non_finite_loss_stops_and_keeps_the_last_good_adapter() {
        let base = tiny(false, DType::F32);
        let dir =
            std::env::temp_dir().join(format!("puppetlens-train-guard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A learning rate this large makes the weights overflow after a few steps.
        let opts = TrainOptions {
            lr: 1e30,
            max_grad_norm: f64::INFINITY,
            batch_size: 1,
            epochs: 50,
            log_every: 0,
            checkpoint_dir: Some(dir.clone()),
            checkpoint_every: 1,
            ..Default::default()
        };
        let err = sft(&base, &data(), &opts).unwrap_err();
        let Error::Training {
            objective,
            step,
            msg,
            last_good,
        } = &err
        else {
            panic!("expected a training error, got {err:?}");
        };
        assert_eq!(objective, "sft");
        assert!(*step >= 2 && *step < 100, "{err}");
        assert!(
            msg.contains("not finite") || msg.contains("NaN") || msg.contains("inf"),
            "{err}"
        );
        assert_eq!(last_good.as_deref(), Some(dir.as_path()), "{err}");
        assert!(
            err.to_string().contains(&format!("sft step {step}")),
            "{err}"
        );
        // The kept adapter is finite and its log ends at the step before the failure (or earlier).
        let kept = Adapter::load(&dir, &Device::Cpu).unwrap();
        assert_eq!(kept.weights().len(), 14);
        for (a, b) in kept.weights().values() {
            for t in [a, b] {
                let s = t
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(s.is_finite());
            }
        }
        let log: TrainLog =
            serde_json::from_str(&std::fs::read_to_string(dir.join(LOG_FILE)).unwrap()).unwrap();
        // Written at the start of the step before the failure, once its loss was seen finite.
        // (A failed gradient keeps the weights of the failed step itself: their loss was finite.)
        let back = if msg.starts_with("gradient") { 1 } else { 2 };
        assert_eq!(log.steps.len() + back, *step, "{err}");
        assert!(log
            .steps
            .iter()
            .all(|s| s.loss.is_finite() && s.grad_norm.is_finite()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The plain-op kernels used for autograd compute the same logits as the fused ones.
    #[test]
    fn differentiable_kernels_match_fused() {
        for gemma in [true, false] {
            for interleaved in [false, true] {
                let mut m = tiny(gemma, DType::F32);
                m.set_rope_interleaved(interleaved);
                let batch = Batch::new(&[vec![1u32, 5, 9, 3, 7, 30, 2], vec![1, 8, 4]]).unwrap();
                let fused = m.forward(&batch, &mut Hooks::new()).unwrap();
                let g = m.with_lora_paths(&[], true).unwrap();
                let slow = g.forward(&batch, &mut Hooks::new()).unwrap();
                let diff = (fused - slow)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    diff < 1e-5,
                    "gemma {gemma} interleaved {interleaved}: {diff}"
                );
            }
        }
    }

    /// Autograd's LoRA gradients agree with central finite differences (f64).
    #[test]
    fn lora_gradients_match_finite_differences() {
        for (gemma, interleaved) in [(true, false), (false, true)] {
            let mut base = tiny(gemma, DType::F64);
            base.set_rope_interleaved(interleaved);
            let opts = TrainOptions {
                lora: LoraConfig {
                    rank: 2,
                    ..Default::default()
                },
                ..Default::default()
            };
            let tr = Trainee::new(&base, &opts).unwrap();
            // Non-zero B so that A's gradient is not zero either.
            randomize_b(&tr, 3);
            let data = data();
            let loss = |m: &Model| -> Tensor {
                let s = sft_scored(m, &data, &[0, 1]).unwrap();
                let n = s.targets.len();
                (group_logps(m, &s).unwrap().sum_all().unwrap() / -(n as f64)).unwrap()
            };
            let grads = loss(&tr.model).backward().unwrap();
            let mut checked = 0;
            for ((l, m), a, b) in &tr.vars {
                if *l != 0 && m != "self_attn.q_proj" {
                    continue;
                }
                for var in [a, b] {
                    let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
                    let g = g.to_vec1::<f64>().unwrap();
                    let orig = var
                        .as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap();
                    for &i in &[0usize, orig.len() / 2, orig.len() - 1] {
                        let eps = 1e-5;
                        let at = |delta: f64| {
                            let mut x = orig.clone();
                            x[i] += delta;
                            var.set(&Tensor::from_vec(x, var.shape(), &Device::Cpu).unwrap())
                                .unwrap();
                            loss(&tr.model).to_scalar::<f64>().unwrap()
                        };
                        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                        at(0.0);
                        let err = (fd - g[i]).abs() / (fd.abs() + g[i].abs()).max(1e-8);
                        assert!(
                            err < 1e-5 || (fd - g[i]).abs() < 1e-9,
                            "{gemma} layer {l} {m} [{i}]: autograd {} vs fd {fd}",
                            g[i]
                        );
                        checked += 1;
                    }
                }
            }
            assert!(checked >= 12, "{checked}");
        }
    }

    /// The frozen-weight matmul (f32, CPU) gives the same LoRA gradients as candle's matmul.
    #[test]
    fn frozen_matmul_gradients_match_plain_matmul() {
        let base = tiny(true, DType::F32);
        let opts = TrainOptions {
            lora: LoraConfig {
                rank: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let tr = Trainee::new(&base, &opts).unwrap();
        randomize_b(&tr, 5);
        let mut plain = tr.model.clone();
        plain.unfreeze();
        let data = data();
        let grads = |m: &Model| {
            let s = sft_scored(m, &data, &[0, 1]).unwrap();
            let n = s.targets.len();
            (group_logps(m, &s).unwrap().sum_all().unwrap() / -(n as f64))
                .unwrap()
                .backward()
                .unwrap()
        };
        let (gf, gp) = (grads(&tr.model), grads(&plain));
        for (key, a, b) in &tr.vars {
            for v in [a, b] {
                let x = gf.get(v.as_tensor()).unwrap();
                let y = gp.get(v.as_tensor()).unwrap();
                let d = (x - y).unwrap().abs().unwrap().max_all().unwrap();
                let m = y.abs().unwrap().max_all().unwrap();
                let (d, m) = (d.to_scalar::<f32>().unwrap(), m.to_scalar::<f32>().unwrap());
                assert!(m > 0.0 && d <= 1e-4 * m, "{key:?}: {d} vs max {m}");
            }
        }
    }
}
