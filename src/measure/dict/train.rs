//! Training a BatchTopK dictionary (SAE or crosscoder) with AdamW: on the CPU by a step whose
//! gradients are written out to use the sparsity (`sparse.rs`), elsewhere (or with
//! [`DictOptions::autograd`]) by candle's autograd and candle_nn's AdamW. Both minimise the same
//! loss from the same initialisation on the same batches; they agree within float rounding
//! (`tests/real/dict.rs`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use super::dictionary::{Activation, Dictionary};
use super::select;
use super::sparse::{Dead, SparseTrainer, Spec, StepOut};
use super::store::CorpusStore;
use crate::data::SplitMix64;
use crate::util::Progress;
use crate::{Error, Result};

/// Options of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DictOptions {
    /// Number of latents (256).
    pub n_latents: usize,
    /// Active latents per token, on average over a batch (BatchTopK's k; 8).
    pub k: usize,
    /// Dead latents that the auxiliary loss may use per token; `None`: `d / 2` (the heuristic
    /// of Gao et al. 2024 as `dictionary_learning` applies it).
    pub aux_k: Option<usize>,
    /// Weight of the auxiliary (AuxK) loss (1/32, Gao et al. 2024).
    pub aux_coeff: f64,
    /// A latent that has not been active for this many training tokens is dead (20,000).
    pub dead_after_tokens: usize,
    /// AdamW learning rate after warm-up (2e-3).
    pub lr: f64,
    /// Linear warm-up steps (50).
    pub warmup_steps: usize,
    /// Fraction of the steps at the end over which the learning rate decays linearly to 0 (0.2).
    pub decay_frac: f64,
    /// Optimisation steps (2000); batches are drawn by a seeded shuffle, epoch after epoch.
    pub steps: usize,
    /// Tokens per batch (256).
    pub batch_size: usize,
    /// Shards of a corpus on disk held in memory at once by [`train_streamed`] (4): batches are
    /// drawn from a window of this many shards (picked in a seeded random order, epoch after
    /// epoch) whose rows are shuffled together; the rows a window leaves over join the next.
    pub stream_window: usize,
    /// Rate of the exponential moving average that estimates the inference threshold from each
    /// batch's smallest kept score, from the end of warm-up on (0.01, as SAELens).
    pub threshold_lr: f64,
    /// Divide each model's activations by a scalar so that their mean squared norm is `d`
    /// (true); the scale is stored in the dictionary.
    pub normalise: bool,
    /// One decoder bias for every model instead of one per model (false), and one normalising
    /// scale (from the models' mean squared norm together), so that the bias is the same in
    /// model units. A crosscoder with per-model biases can absorb a shift that tuning adds on
    /// every token into the difference of its biases, where no latent shows it; a shared bias
    /// (fixed at the base's mean, not trained) makes latents carry it.
    pub shared_decoder_bias: bool,
    /// Seed of the initialisation and the batch order (0).
    pub seed: u64,
    /// Train with candle's autograd and candle_nn's AdamW (false). On the CPU the default is a
    /// step whose gradients are written out to use the sparsity (the decoder, the codes' and
    /// the encoder's gradients touch only the kept latents' rows; same objective, same
    /// optimiser, within float rounding of the autograd step); on other devices training
    /// always uses autograd.
    pub autograd: bool,
    /// Draw a progress bar on a terminal (true).
    pub progress: bool,
    /// Print a line every this many steps (0: never).
    pub log_every: usize,
}

impl Default for DictOptions {
    fn default() -> Self {
        DictOptions {
            n_latents: 256,
            k: 8,
            aux_k: None,
            aux_coeff: 1.0 / 32.0,
            dead_after_tokens: 20_000,
            lr: 2e-3,
            warmup_steps: 50,
            decay_frac: 0.2,
            steps: 2000,
            batch_size: 256,
            stream_window: 4,
            threshold_lr: 0.01,
            normalise: true,
            shared_decoder_bias: false,
            seed: 0,
            autograd: false,
            progress: true,
            log_every: 0,
        }
    }
}

/// One training step's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DictStep {
    /// Step number, from 1.
    pub step: usize,
    /// Total loss: `mse + aux_coeff * aux`.
    pub loss: f64,
    /// Reconstruction error: squared error summed over models and dimensions, mean over tokens
    /// (internal units).
    pub mse: f64,
    /// The auxiliary loss (0 while no latent is dead).
    pub aux: f64,
    /// Fraction of variance unexplained on this batch, all models together.
    pub fvu: f64,
    /// Fraction of latents dead at this step.
    pub dead_fraction: f64,
    /// The inference threshold estimate after this step.
    pub threshold: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// The record of a [`train`] run: the loss curve and throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DictLog {
    /// Every step, in order.
    pub steps: Vec<DictStep>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Training tokens seen (steps x batch size).
    pub tokens: usize,
    /// `tokens / seconds`.
    pub tokens_per_s: f64,
    /// The options used.
    pub options: DictOptions,
}

fn invalid(name: &str, msg: String) -> Error {
    Error::InvalidArgument {
        name: name.into(),
        msg,
    }
}

fn check(acts: &Tensor, opts: &DictOptions) -> Result<(usize, usize, usize)> {
    let (n, m, d) = acts.dims3().map_err(|_| Error::Shape {
        what: "dictionary training activations".into(),
        expected: "[n_tokens, n_models, d]".into(),
        got: format!("{:?}", acts.dims()),
    })?;
    if n == 0 || m == 0 || d == 0 {
        return Err(invalid(
            "activations",
            format!(
                "no data: shape {:?} (need tokens, models and width > 0)",
                acts.dims()
            ),
        ));
    }
    if !acts.dtype().is_float() {
        return Err(Error::DtypeOrDevice {
            what: "dictionary training activations".into(),
            expected: "a float dtype".into(),
            got: format!("{:?}", acts.dtype()),
        });
    }
    check_opts(opts)?;
    Ok((n, m, d))
}

fn check_opts(opts: &DictOptions) -> Result<()> {
    if opts.n_latents == 0 {
        return Err(invalid("n_latents", "must be positive".into()));
    }
    if opts.k == 0 || opts.k > opts.n_latents {
        return Err(invalid(
            "k",
            format!(
                "must be in 1..={} (n_latents), got {}",
                opts.n_latents, opts.k
            ),
        ));
    }
    if opts.batch_size == 0 || opts.steps == 0 {
        return Err(invalid("batch_size/steps", "must be positive".into()));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return Err(invalid("lr", format!("must be positive, got {}", opts.lr)));
    }
    if !(0.0..=1.0).contains(&opts.decay_frac) || !(0.0..=1.0).contains(&opts.threshold_lr) {
        return Err(invalid(
            "decay_frac/threshold_lr",
            "must lie in [0, 1]".into(),
        ));
    }
    Ok(())
}

/// Standard normal samples (Box–Muller) from a seeded generator.
fn gaussians(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = ((rng.next_u64() >> 11) as f64) / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Trains a BatchTopK dictionary on `acts`, `[n_tokens, n_models, d]` (any float dtype, on the
/// device to train on): an SAE when `n_models` is 1, a crosscoder when it is 2 or more (model 0
/// the base). Returns the dictionary (with [`Activation::BatchTopK`] and the estimated threshold)
/// and the loss curve.
///
/// The loss of a batch is the squared reconstruction error summed over models and dimensions,
/// averaged over tokens, plus `aux_coeff` times AuxK (Gao et al. 2024): the residual error
/// (detached) reconstructed by each token's `aux_k` highest-scoring dead latents. Selection
/// keeps the `k · batch` largest scores `relu(pre) · Σ_m ‖W_dec[m, latent]‖` of the batch.
/// After each AdamW step every latent is rescaled so that `Σ_m ‖W_dec[m, latent]‖ = 1`, its
/// encoder column and bias multiplied by the same factor: the function and the scores are
/// unchanged, the decoder scale stays fixed (the unit-norm decoder of BatchTopK SAEs; for a
/// crosscoder the split of the norm between models stays free, which is what the relative
/// decoder norm reads).
pub fn train(acts: &Tensor, opts: &DictOptions) -> Result<(Dictionary, DictLog)> {
    crate::util::tune_malloc();
    let (n, m, d) = check(acts, opts)?;
    let dev = acts.device().clone();
    let x = acts.to_dtype(DType::F32)?; // [n, m, d]
    let msq = x.sqr()?.sum(D::Minus1)?.mean(0)?.to_vec1::<f32>()?; // [m]
    let scale = scales(msq, d, opts);
    let scale_t = Tensor::from_vec(scale.clone(), (1, m, 1), &dev)?;
    let xn = x.broadcast_div(&scale_t)?.reshape((n, m * d))?; // [n, m*d]
    let mean = xn.mean(0)?; // [m*d]
    let mut batches = MemoryBatches {
        order: (0..n as u32).collect(),
        cursor: n, // forces a shuffle on the first step
        xn,
    };
    fit(&mut batches, (n, m, d), scale, mean, &dev, opts)
}

/// Trains a BatchTopK crosscoder on a paired corpus on disk, on `device`, reading
/// [`DictOptions::stream_window`] shards at a time: memory holds that window (and the model),
/// not the corpus. The same objective, initialisation and schedule as [`train`]; a first pass
/// over the shards gives the normalising scales and the mean (for the decoder bias), then
/// batches come from seeded shuffled windows (see [`DictOptions::stream_window`]). The batch
/// order differs from [`train`]'s on the same rows (so do the weights, slightly); for a seed, a
/// run is deterministic.
///
/// ```no_run
/// use puppetlens::dict::{train_streamed, CorpusStore, DictOptions};
/// let corpus = CorpusStore::open("runs/corpus")?;
/// let (cc, log) = train_streamed(&corpus, &DictOptions::default(), &candle_core::Device::Cpu)?;
/// println!("{:.0} tokens/s; FVU {:?}", log.tokens_per_s, corpus.evaluate(&cc, 2048)?.fvu);
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn train_streamed(
    corpus: &CorpusStore,
    opts: &DictOptions,
    device: &Device,
) -> Result<(Dictionary, DictLog)> {
    crate::util::tune_malloc();
    check_opts(opts)?;
    if opts.stream_window == 0 {
        return Err(invalid("stream_window", "must be positive".into()));
    }
    let (n, m, d) = (corpus.len(), 2, corpus.d_model());
    if n == 0 {
        return Err(invalid("corpus", "no tokens".into()));
    }
    // One pass: per model the mean squared norm, per coordinate the mean (f64 sums).
    let mut sq = [0f64; 2];
    let mut sum = vec![0f64; m * d];
    corpus.for_each_shard(|_, x| {
        let x = x.to_dtype(DType::F64)?; // [k, m, d]
        let s2 = x.sqr()?.sum(D::Minus1)?.sum(0)?.to_vec1::<f64>()?; // [m]
        sq[0] += s2[0];
        sq[1] += s2[1];
        let s1 = x.sum(0)?.flatten_all()?.to_vec1::<f64>()?; // [m*d]
        for (a, b) in sum.iter_mut().zip(s1) {
            *a += b;
        }
        Ok(())
    })?;
    let msq: Vec<f32> = sq.iter().map(|s| (s / n as f64) as f32).collect();
    let scale = scales(msq, d, opts);
    let mean: Vec<f32> = sum
        .iter()
        .enumerate()
        .map(|(i, s)| (s / n as f64) as f32 / scale[i / d])
        .collect();
    let mean = Tensor::from_vec(mean, m * d, device)?; // [m*d], normalised units
    let mut batches = ShardBatches {
        corpus,
        window: opts.stream_window,
        device: device.clone(),
        scale: Tensor::from_vec(scale.clone(), (1, m, 1), &Device::Cpu)?,
        order: Vec::new(),
        next: 0,
        buf: None,
        cursor: 0,
    };
    fit(&mut batches, (n, m, d), scale, mean, device, opts)
}

/// The normalising scale per model: mean squared norm `d` after division (one scale for all
/// models with a shared decoder bias, from their mean squared norms together; 1 everywhere
/// without normalisation).
fn scales(msq: Vec<f32>, d: usize, opts: &DictOptions) -> Vec<f32> {
    let m = msq.len();
    // With one decoder bias the models share one scale too, else the bias would differ between
    // them in model units (by the bias times the difference of the scales).
    let msq: Vec<f32> = if opts.shared_decoder_bias {
        vec![msq.iter().sum::<f32>() / m as f32; m]
    } else {
        msq
    };
    if opts.normalise {
        msq.iter()
            .map(|&s| {
                let v = (s / d as f32).sqrt();
                if v.is_finite() && v > 0.0 {
                    v
                } else {
                    1.0
                }
            })
            .collect()
    } else {
        vec![1.0; m]
    }
}

/// Where the trainer's batches come from.
trait Batches {
    /// The next `b` training rows, normalised: `[b, m*d]` f32 on the training device.
    fn next(&mut self, b: usize, rng: &mut SplitMix64) -> Result<Tensor>;
}

/// Batches from a tensor in memory: a seeded shuffle of its rows, epoch after epoch.
struct MemoryBatches {
    /// `[n, m*d]` normalised.
    xn: Tensor,
    order: Vec<u32>,
    cursor: usize,
}

impl Batches for MemoryBatches {
    fn next(&mut self, b: usize, rng: &mut SplitMix64) -> Result<Tensor> {
        if self.cursor + b > self.order.len() {
            rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let idx = Tensor::from_slice(
            &self.order[self.cursor..self.cursor + b],
            b,
            self.xn.device(),
        )?;
        self.cursor += b;
        Ok(self.xn.index_select(&idx, 0)?) // [b, m*d]
    }
}

/// Batches from a corpus on disk: windows of `window` shards in a seeded order (reshuffled each
/// epoch), each window's rows (with the previous window's leftover) shuffled together.
struct ShardBatches<'a> {
    corpus: &'a CorpusStore,
    window: usize,
    device: Device,
    /// `[1, m, 1]` on the CPU.
    scale: Tensor,
    order: Vec<usize>,
    next: usize,
    /// The current window, shuffled and normalised: `[rows, m*d]` on the device.
    buf: Option<Tensor>,
    cursor: usize,
}

impl ShardBatches<'_> {
    /// Loads the next window after the rows not yet used.
    fn refill(&mut self, rng: &mut SplitMix64) -> Result<()> {
        let mut parts = Vec::new();
        if let Some(buf) = &self.buf {
            let rows = buf.dim(0)?;
            if self.cursor < rows {
                parts.push(buf.narrow(0, self.cursor, rows - self.cursor)?);
            }
        }
        self.buf = None;
        // Non-empty shards taken into this window (a window does not cross an epoch's end).
        let mut taken = 0;
        while taken < self.window {
            if self.next >= self.order.len() {
                if taken > 0 {
                    break;
                }
                self.order = (0..self.corpus.n_shards()).collect();
                rng.shuffle(&mut self.order);
                self.next = 0;
            }
            let s = self.order[self.next];
            self.next += 1;
            if self.corpus.shard_start(s + 1) == self.corpus.shard_start(s) {
                continue; // every row filtered out
            }
            taken += 1;
            let x = self.corpus.shard(s)?; // [k, m, d] f32 on the CPU
            let k = x.dim(0)?;
            let xn = x.broadcast_div(&self.scale)?.reshape((k, ()))?; // [k, m*d]
            parts.push(xn.to_device(&self.device)?);
        }
        let all = Tensor::cat(&parts, 0)?; // [rows, m*d]
        drop(parts);
        let rows = all.dim(0)?;
        let mut perm: Vec<u32> = (0..rows as u32).collect();
        rng.shuffle(&mut perm);
        let perm = Tensor::from_vec(perm, rows, &self.device)?;
        self.buf = Some(all.index_select(&perm, 0)?); // [rows, m*d]
        self.cursor = 0;
        Ok(())
    }
}

impl Batches for ShardBatches<'_> {
    fn next(&mut self, b: usize, rng: &mut SplitMix64) -> Result<Tensor> {
        loop {
            if let Some(buf) = &self.buf {
                if self.cursor + b <= buf.dim(0)? {
                    let x = buf.narrow(0, self.cursor, b)?; // [b, m*d]
                    self.cursor += b;
                    return Ok(x);
                }
            }
            // Each refill adds at least one shard; the corpus holds at least b rows.
            self.refill(rng)?;
        }
    }
}

/// Returns the training error for a loss that is not finite.
pub(super) fn finite(loss: f64, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Training {
            objective: "dictionary".into(),
            step,
            msg: format!("loss is {loss} (lower the learning rate?)"),
            last_good: None,
        })
    }
}

/// One way of taking optimisation steps: the CPU's sparse step or candle's autograd.
trait Stepper {
    /// One step on the normalised batch `xb` (`[b, m*d]` on the training device).
    fn step(&mut self, xb: &Tensor, lr: f64, dead: &mut Dead, step: usize) -> Result<StepOut>;
    /// `W_enc` `[m*d, l]`, `b_enc` `[l]`, `W_dec` `[l, m*d]`, `b_dec` `[m*d]`.
    fn weights(&self) -> Result<(Tensor, Tensor, Tensor, Tensor)>;
}

impl Stepper for SparseTrainer {
    fn step(&mut self, xb: &Tensor, lr: f64, dead: &mut Dead, step: usize) -> Result<StepOut> {
        let x = xb.flatten_all()?.to_vec1::<f32>()?; // [b*m*d]
        SparseTrainer::step(self, &x, lr, dead, step)
    }
    fn weights(&self) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        SparseTrainer::weights(self)
    }
}

/// The step written with candle's ops, differentiated by its autograd, updated by candle_nn's
/// AdamW: the reference for the sparse step, and the path on devices other than the CPU.
struct AutogradTrainer {
    spec: Spec,
    w_enc: Var, // [m*d, l]
    w_dec: Var, // [l, m*d]
    b_enc: Var, // [l]
    b_dec: Var, // [m*d], or [d] when shared (not trained)
    opt: AdamW,
}

impl AutogradTrainer {
    /// The decoder bias as `[m*d]`.
    fn full_b_dec(&self) -> Result<Tensor> {
        let b = self.b_dec.as_tensor();
        Ok(if self.spec.shared {
            b.unsqueeze(0)?
                .broadcast_as((self.spec.m, self.spec.d))?
                .contiguous()?
                .reshape(self.spec.m * self.spec.d)? // [m*d]
        } else {
            b.clone()
        })
    }

    /// `Σ_m ‖W_dec[m, latent]‖`, `[l]`.
    fn code_norms(&self) -> Result<Tensor> {
        Ok(self
            .w_dec
            .as_tensor()
            .reshape((self.spec.l, self.spec.m, self.spec.d))?
            .sqr()?
            .sum(D::Minus1)?
            .sqrt()?
            .sum(1)?) // [l]
    }
}

impl Stepper for AutogradTrainer {
    fn step(&mut self, xb: &Tensor, lr: f64, dead: &mut Dead, step: usize) -> Result<StepOut> {
        let (b, l) = (xb.dim(0)?, self.spec.l);
        let dev = xb.device();
        self.opt.set_learning_rate(lr);
        let bd = self.full_b_dec()?; // [m*d]
        let pre = xb
            .broadcast_sub(&bd)?
            .matmul(self.w_enc.as_tensor())?
            .broadcast_add(self.b_enc.as_tensor())?; // [b, l]
        let act = pre.relu()?; // [b, l]
        let score = act.detach().broadcast_mul(&self.code_norms()?.detach())?; // [b, l]
        let score_host = score.flatten_all()?.to_vec1::<f32>()?;
        let (mask, min_kept) = select::batch_topk(&score_host, self.spec.k * b);
        let f = (&act * Tensor::from_slice(&mask, (b, l), dev)?)?; // [b, l]
        let xhat = f.matmul(self.w_dec.as_tensor())?.broadcast_add(&bd)?; // [b, m*d]
        let err = (xb - &xhat)?; // [b, m*d]
        let mse = (err.sqr()?.sum_all()? / b as f64)?;
        let (dead_now, n_dead) = dead.update(&mask, b);
        let aux = if n_dead > 0 && self.spec.aux_coeff > 0.0 {
            let aux_mask =
                select::topk_rows(&score_host, l, self.spec.aux_k.min(n_dead), Some(&dead_now));
            let f_aux = (&act * Tensor::from_slice(&aux_mask, (b, l), dev)?)?; // [b, l]
            let ehat = f_aux.matmul(self.w_dec.as_tensor())?; // [b, m*d]
            Some(((err.detach() - ehat)?.sqr()?.sum_all()? / b as f64)?)
        } else {
            None
        };
        let loss = match &aux {
            Some(a) => (&mse + (a * self.spec.aux_coeff)?)?,
            None => mse.clone(),
        };
        let loss_value = scalar(&loss)?;
        finite(loss_value, step)?;
        let grads = loss.backward()?;
        self.opt.step(&grads)?;

        // Fix the decoder scale: Σ_m ‖W_dec[m, latent]‖ = 1, the encoder compensating.
        let c = self.code_norms()?.clamp(1e-12, f64::INFINITY)?; // [l]
        self.w_dec
            .set(&self.w_dec.as_tensor().broadcast_div(&c.unsqueeze(1)?)?)?;
        self.w_enc
            .set(&self.w_enc.as_tensor().broadcast_mul(&c.unsqueeze(0)?)?)?;
        self.b_enc.set(&(self.b_enc.as_tensor() * &c)?)?;
        let var = scalar(&(xb.broadcast_sub(&xb.mean(0)?)?.sqr()?.sum_all()? / b as f64)?)?;
        Ok(StepOut {
            loss: loss_value,
            mse: scalar(&mse)?,
            var,
            aux: aux.as_ref().map(scalar).transpose()?,
            n_dead,
            min_kept,
        })
    }

    fn weights(&self) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        Ok((
            self.w_enc.as_tensor().clone(),
            self.b_enc.as_tensor().clone(),
            self.w_dec.as_tensor().clone(),
            self.full_b_dec()?,
        ))
    }
}

/// The training loop on `batches` (`n` tokens of `m` models of width `d`), from the
/// normalising `scale` per model and the normalised `mean` (`[m*d]`, on `dev`).
fn fit(
    batches: &mut dyn Batches,
    (n, m, d): (usize, usize, usize),
    scale: Vec<f32>,
    mean: Tensor,
    dev: &Device,
    opts: &DictOptions,
) -> Result<(Dictionary, DictLog)> {
    let l = opts.n_latents;

    // Initialisation: random unit directions per model, scaled so that the norms of a latent's
    // decoders sum to 1; the encoder starts as the decoder's transpose.
    let mut rng = SplitMix64::new(opts.seed ^ 0xd1c7_0000_5eed);
    let mut w = gaussians(&mut rng, l * m * d);
    for row in w.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm * m as f32);
    }
    // The decoder bias: one row per model (trained), or one row shared by all, fixed at the
    // base's (model 0's) mean, so that what the other models add is left to the latents. (A
    // shared bias trained from the models' average settles there, and a shift then becomes a
    // latent with opposite directions in the two models; trained from the base's mean it drifts
    // half-way: measured in tests/real/dict.rs, relative norm 0.64 trained, 0.77 fixed.)
    let b_dec0 = if opts.shared_decoder_bias {
        mean.reshape((m, d))?.get(0)? // [d]
    } else {
        mean.clone() // [m*d]
    };
    let spec = Spec {
        m,
        d,
        l,
        k: opts.k,
        aux_k: opts.aux_k.unwrap_or((d / 2).max(1)).min(l),
        aux_coeff: opts.aux_coeff,
        shared: opts.shared_decoder_bias,
    };
    let mut stepper: Box<dyn Stepper> = if dev.is_cpu() && !opts.autograd {
        Box::new(SparseTrainer::new(spec, w, b_dec0.to_vec1::<f32>()?))
    } else {
        let w_dec0 = Tensor::from_vec(w, (l, m * d), dev)?; // [l, m*d]
        let w_enc = Var::from_tensor(&w_dec0.t()?.contiguous()?)?; // [m*d, l]
        let w_dec = Var::from_tensor(&w_dec0)?; // [l, m*d]
        let b_enc = Var::from_tensor(&Tensor::zeros(l, DType::F32, dev)?)?; // [l]
        let b_dec = Var::from_tensor(&b_dec0)?;
        let mut vars = vec![w_enc.clone(), w_dec.clone(), b_enc.clone()];
        if !opts.shared_decoder_bias {
            vars.push(b_dec.clone());
        }
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        Box::new(AutogradTrainer {
            spec,
            w_enc,
            w_dec,
            b_enc,
            b_dec,
            opt,
        })
    };

    let b = opts.batch_size.min(n);
    let mut dead = Dead::new(l, opts.dead_after_tokens);
    let mut threshold: Option<f64> = None;
    let decay_start = ((1.0 - opts.decay_frac) * opts.steps as f64).round() as usize;
    let mut progress = Progress::new("dictionary", opts.steps, opts.progress);
    let start = Instant::now();
    let mut steps = Vec::with_capacity(opts.steps);

    for step in 1..=opts.steps {
        let lr = if opts.warmup_steps > 0 && step <= opts.warmup_steps {
            opts.lr * step as f64 / opts.warmup_steps as f64
        } else if step > decay_start && opts.steps > decay_start {
            opts.lr * (opts.steps - step + 1) as f64 / (opts.steps - decay_start) as f64
        } else {
            opts.lr
        };
        let xb = batches.next(b, &mut rng)?; // [b, m*d]
        let out = stepper.step(&xb, lr, &mut dead, step)?;

        // The threshold averages the batches after warm-up (all of them in a run that short).
        let estimate = step > opts.warmup_steps || opts.steps <= opts.warmup_steps;
        if let (true, Some(t)) = (estimate, out.min_kept) {
            let t = t as f64;
            threshold = Some(match threshold {
                None => t,
                Some(old) => (1.0 - opts.threshold_lr) * old + opts.threshold_lr * t,
            });
        }
        let rec = DictStep {
            step,
            loss: out.loss,
            mse: out.mse,
            aux: out.aux.unwrap_or(0.0),
            fvu: out.mse / out.var.max(1e-30),
            dead_fraction: out.n_dead as f64 / l as f64,
            threshold: threshold.unwrap_or(0.0),
            lr,
        };
        if opts.log_every > 0 && (step % opts.log_every == 0 || step == 1 || step == opts.steps) {
            progress.say(&format!(
                "dictionary step {step}/{} loss {:.4} fvu {:.4} aux {:.4} dead {:.3} threshold {:.4}",
                opts.steps, rec.loss, rec.fvu, rec.aux, rec.dead_fraction, rec.threshold
            ));
        }
        steps.push(rec);
        progress.advance(1);
    }
    progress.finish();

    let seconds = start.elapsed().as_secs_f64();
    let (w_enc, b_enc, w_dec, b_dec) = stepper.weights()?;
    let w_dec = w_dec.reshape((l, m, d))?.transpose(0, 1)?.contiguous()?; // [m, l, d]
    let dict = Dictionary::new(
        w_enc,
        b_enc,
        w_dec,
        b_dec.reshape((m, d))?,
        Activation::BatchTopK {
            k: opts.k,
            threshold: threshold.map(|t| t as f32),
        },
    )?
    .with_scale(scale)?;
    let tokens = opts.steps * b;
    let log = DictLog {
        steps,
        seconds,
        tokens,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        options: opts.clone(),
    };
    Ok((dict, log))
}
