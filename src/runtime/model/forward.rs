//! Running the model: the public entry points (whole forwards, last-position logits, hooks only,
//! KV-cached steps, forwards resumed at a layer) and the one forward pass they all share, a loop
//! over `Block`s whose hooks fire through `Taps`.

use candle_core::Tensor;

use super::block::Call;
use super::kv::KvCache;
use super::rope;
use super::taps::{Flow, Halt, Taps};
use super::{AttnSpan, Model};
use crate::batch::Batch;
use crate::cache::ActivationCache;
use crate::hook::{HookPoint, Hooks};
use crate::{Error, Result};

/// What a forward returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Nothing: stop after the last hook that fires.
    HooksOnly,
    /// Logits at every position, `[batch, pos, vocab]`.
    AllLogits,
    /// Logits at the last column only, `[batch, vocab]`.
    LastLogits,
    /// Final-normed hidden states at every position, `[batch, pos, d_model]`.
    Hidden,
    /// The final-normed hidden state at the last column only, `[batch, 1, d_model]`.
    LastHidden,
}

/// Where a forward begins.
#[derive(Clone, Copy)]
struct Start<'a> {
    /// The first block to run.
    first: usize,
    /// The first block resumes at its `hook_resid_mid` (its attention is skipped).
    from_mid: bool,
    /// The point resumed at and its value, `[b, s, d_model]`; `None` starts from the embeddings.
    resid: Option<(HookPoint, &'a Tensor)>,
}

impl Model {
    /// Logits for every position, `[batch, pos, vocab]` f32, under `hooks`.
    ///
    /// Each row's logits equal running that row alone; padding columns hold unspecified values.
    pub fn forward(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        self.run(batch, None, hooks, Output::AllLogits)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "forward".into(),
                msg: "no logits computed".into(),
            })
    }

    /// Logits at the last position of each row, `[batch, vocab]` f32 (left padding puts every
    /// row's last token in the last column).
    pub fn forward_last(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        self.run(batch, None, hooks, Output::LastLogits)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "forward_last".into(),
                msg: "no logits computed".into(),
            })
    }

    /// Runs only as far as the last hook point any of `hooks` fires at; computes no logits.
    pub fn run_hooks(&self, batch: &Batch, hooks: &mut Hooks) -> Result<()> {
        self.run(batch, None, hooks, Output::HooksOnly).map(|_| ())
    }

    /// Logits (`[batch, pos, vocab]`) and the activations at every point `keep` selects.
    pub fn run_with_cache(
        &self,
        batch: &Batch,
        keep: impl Fn(HookPoint) -> bool,
    ) -> Result<(Tensor, ActivationCache)> {
        let mut cache = ActivationCache::new();
        let logits = {
            let mut hooks = Hooks::new();
            hooks.add_where(keep, &mut cache);
            self.forward(batch, &mut hooks)?
        };
        Ok((logits, cache))
    }

    /// The activations at every point `keep` selects, stopping after the last one (no logits).
    pub fn cache(
        &self,
        batch: &Batch,
        keep: impl Fn(HookPoint) -> bool,
    ) -> Result<ActivationCache> {
        let mut cache = ActivationCache::new();
        {
            let mut hooks = Hooks::new();
            hooks.add_where(keep, &mut cache);
            self.run_hooks(batch, &mut hooks)?;
        }
        Ok(cache)
    }

    /// One KV-cached step: runs `batch`'s columns after those already in `kv` and returns the
    /// last column's logits, `[batch, vocab]` f32. `batch` must have the cache's rows.
    pub fn forward_cached(
        &self,
        batch: &Batch,
        kv: &mut KvCache,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.run(batch, Some(kv), hooks, Output::LastLogits)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "forward_cached".into(),
                msg: "no logits computed".into(),
            })
    }

    pub(crate) fn check_batch(&self, batch: &Batch, offset: usize) -> Result<()> {
        let total = offset + batch.seq_len();
        for (i, row) in batch.rows().enumerate() {
            let len = total - batch.pads()[i];
            if len > self.cfg.max_position {
                return Err(Error::PromptTooLong {
                    index: i,
                    len,
                    max: self.cfg.max_position,
                });
            }
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(Error::TokenOutOfRange {
                    index: i,
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        Ok(())
    }

    /// Logits at every position, `[batch, pos, vocab]` f32, of a forward resumed at the
    /// residual-stream point `start` (`hook_embed`, `blocks.{l}.hook_resid_pre`,
    /// `blocks.{l}.hook_resid_mid` or `blocks.{l}.hook_resid_post`) from its value `resid`
    /// (`[batch, pos, d_model]`, the model's dtype, as the forward computes it there): hooks at
    /// `start` fire on `resid`, then the forward continues with everything after `start`.
    /// `batch` gives the padding and positions (its token ids are not read again).
    ///
    /// Branch-at-layer execution: a sweep of interventions at layer `l` runs everything below `l`
    /// once ([`Model::cache`]) and resumes here once per intervention, or once for all of them
    /// stacked as rows. Resuming from a cached activation with no hooks gives what
    /// [`Model::forward`] gives.
    ///
    /// ```no_run
    /// use puppetlens::{Batch, HookPoint, Hooks, LoadOptions, Model};
    /// let model = Model::load("model.gguf", &LoadOptions::default())?;
    /// let batch = Batch::new(&[vec![1u32, 2, 3]])?;
    /// let p = HookPoint::ResidPost(4);
    /// let x = model.cache(&batch, |q| q == p)?.require(p)?.clone(); // [1, 3, d_model]
    /// let logits = model.run_from(p, &(x * 1.5)?, &batch, &mut Hooks::new())?; // [1, 3, vocab]
    /// # Ok::<(), puppetlens::Error>(())
    /// ```
    pub fn run_from(
        &self,
        start: HookPoint,
        resid: &Tensor,
        batch: &Batch,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.resume(start, resid, batch, hooks, Output::AllLogits)
    }

    /// [`Model::run_from`] with logits at the last position of each row only, `[batch, vocab]` f32.
    pub fn run_from_last(
        &self,
        start: HookPoint,
        resid: &Tensor,
        batch: &Batch,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        self.resume(start, resid, batch, hooks, Output::LastLogits)
    }

    /// The logits of a forward resumed at `start` ([`Model::run_from`]).
    fn resume(
        &self,
        start: HookPoint,
        resid: &Tensor,
        batch: &Batch,
        hooks: &mut Hooks,
        output: Output,
    ) -> Result<Tensor> {
        self.run_inner(batch, None, hooks, output, Some((start, resid)))?
            .ok_or_else(|| Error::InvalidArgument {
                name: "run_from".into(),
                msg: "no logits computed".into(),
            })
    }

    /// The forward pass from the embeddings.
    pub(crate) fn run(
        &self,
        batch: &Batch,
        kv: Option<&mut KvCache>,
        hooks: &mut Hooks,
        output: Output,
    ) -> Result<Option<Tensor>> {
        self.run_inner(batch, kv, hooks, output, None)
    }

    /// The forward pass, from the embeddings or resumed at `start`: checks the call, builds what
    /// every block reads, and runs `Model::pass`.
    pub(super) fn run_inner(
        &self,
        batch: &Batch,
        kv: Option<&mut KvCache>,
        hooks: &mut Hooks,
        output: Output,
        start: Option<(HookPoint, &Tensor)>,
    ) -> Result<Option<Tensor>> {
        let cfg = &self.cfg;
        hooks.check(cfg.n_layers)?;
        let offset = kv.as_ref().map_or(0, |k| k.seen);
        let pads: Vec<usize> = match kv.as_ref() {
            Some(k) if offset > 0 => {
                if k.pads.len() != batch.len() {
                    return Err(Error::Shape {
                        what: "batch for KV-cached step".into(),
                        expected: format!("{} rows", k.pads.len()),
                        got: format!("{} rows", batch.len()),
                    });
                }
                k.pads.clone()
            }
            _ => batch.pads().to_vec(),
        };
        self.check_batch(batch, offset)?;
        let (b, s) = (batch.len(), batch.seq_len());
        // Where the blocks begin: (first block, resuming at its `hook_resid_mid`).
        let (first, from_mid) = match start {
            None => (0, false),
            Some((p, x)) => {
                p.check(cfg.n_layers)?;
                if x.dims() != [b, s, cfg.d_model] {
                    return Err(Error::Shape {
                        what: format!("residual to resume at {p}"),
                        expected: format!(
                            "[{b}, {s}, {}] (the batch's rows and columns)",
                            cfg.d_model
                        ),
                        got: format!("{:?}", x.dims()),
                    });
                }
                match p {
                    HookPoint::Embed => (0, false),
                    HookPoint::ResidPre(l) => (l, false),
                    HookPoint::ResidMid(l) => (l, true),
                    HookPoint::ResidPost(l) => (l + 1, false),
                    other => {
                        return Err(Error::InvalidArgument {
                            name: "run_from".into(),
                            msg: format!(
                                "a forward resumes at hook_embed or a block's hook_resid_pre,                                  hook_resid_mid or hook_resid_post, not at {other}"
                            ),
                        })
                    }
                }
            }
        };
        let stop = match output {
            Output::HooksOnly => match hooks.last_point(&self.hook_points()) {
                Some(p) => Some(p),
                None => return Ok(None),
            },
            _ => None,
        };
        let mut taps = Taps::new(
            hooks,
            &pads,
            offset,
            s,
            stop,
            cfg.n_layers,
            &self.device,
            self.dtype,
        )?;
        let call = Call {
            ropes: rope::tables(&self.inv_freqs, &pads, offset, s, &self.device, self.dtype)?,
            masks: self.masks(&pads, offset, s)?,
            grad: self.differentiable,
        };
        let start = Start {
            first,
            from_mid,
            resid: start,
        };
        match self.pass(batch, start, kv, &call, output, &mut taps) {
            Ok(out) => Ok(Some(out)),
            Err(Halt::Done) => Ok(None),
            Err(Halt::Failed(e)) => Err(e),
        }
    }

    /// The forward pass proper: the embeddings (or the resumed residual), every block from
    /// `start.first` on, the final norm and `output`; hooks fire only through `taps`, which ends
    /// the pass with `Halt::Done` after the last point a hooks-only call needs.
    fn pass(
        &self,
        batch: &Batch,
        start: Start,
        mut kv: Option<&mut KvCache>,
        call: &Call,
        output: Output,
        taps: &mut Taps,
    ) -> Flow<Tensor> {
        let cfg = &self.cfg;
        let (b, s) = (batch.len(), batch.seq_len());
        let mut resid = match start.resid {
            Some((HookPoint::ResidPost(l), x)) => taps.fire(HookPoint::ResidPost(l), x.clone())?, // [b, s, d_model]
            Some((HookPoint::Embed, x)) => taps.fire(HookPoint::Embed, x.clone())?, // [b, s, d_model]
            Some((_, x)) => x.clone(), // [b, s, d_model], fired in its block
            None => {
                let tokens = batch.tokens(&self.device)?; // [b, s] u32
                let x = self
                    .embed
                    .index_select(&tokens.flatten_all()?, 0)?
                    .reshape((b, s, cfg.d_model))?; // [b, s, d_model]
                let x = match cfg.embed_scale {
                    Some(scale) => (x * scale)?,
                    None => x,
                }; // [b, s, d_model]
                taps.fire(HookPoint::Embed, x)? // [b, s, d_model]
            }
        };
        // Only the last column is read and nothing is hooked from the last block on: that block
        // runs its queries, attention output and MLP on the last column alone (its keys and
        // values still come from every column). The other columns' outputs of the last block
        // feed nothing the caller sees.
        let last = cfg.n_layers.saturating_sub(1);
        let last_only = matches!(output, Output::LastLogits | Output::LastHidden)
            && !call.grad
            && s > 1
            && !self
                .hook_points()
                .into_iter()
                .filter(|p| p.layer().map_or(p.rank() > 0, |l| l >= last))
                .any(|p| taps.wants(p));
        for block in self.blocks.iter().skip(start.first) {
            let from_mid = start.from_mid && block.layer == start.first;
            let cache = kv.as_deref_mut().map(|k| k.layer_mut(block.layer));
            let only = last_only && block.layer == last;
            resid = block.forward(resid, from_mid, only, call, cache, taps)?; // [b, s|1, d_model]
        }
        if let Some(k) = kv {
            k.advance(batch.pads(), s);
        }
        let normed = if taps.wants(HookPoint::FinalScale) {
            let scale = self.final_norm.scale(&resid)?; // [b, s, 1]
            let id = scale.id();
            let scale = taps.fire(HookPoint::FinalScale, scale)?; // [b, s, 1]
            if scale.id() == id {
                self.final_norm.forward(&resid, call.grad)?
            } else {
                self.final_norm.with_scale(&resid, &scale)?
            }
        } else {
            self.final_norm.forward(&resid, call.grad)?
        }; // [b, s|1, d_model]
        let normed = taps.fire(HookPoint::FinalNorm, normed)?; // [b, s|1, d_model]
        let n = normed.dim(1)?;
        let h = match output {
            Output::Hidden => return Ok(normed),
            Output::LastHidden => return Ok(normed.narrow(1, n - 1, 1)?), // [b, 1, d_model]
            Output::LastLogits => normed.narrow(1, n - 1, 1)?,            // [b, 1, d_model]
            _ => normed,
        }; // [b, s|1, d_model]
        let logits = self.logits_of(&h)?; // [b, s|1, vocab]
        Ok(match output {
            Output::LastLogits => logits.squeeze(1)?, // [b, vocab]
            _ => logits,
        })
    }

    /// Additive attention masks `[b, 1, s, t]` for each distinct span: causal, no padding keys,
    /// within the window. A query always sees itself so that padding rows stay finite.
    fn masks(&self, pads: &[usize], offset: usize, s: usize) -> Result<Vec<(AttnSpan, Tensor)>> {
        let b = pads.len();
        let t = offset + s;
        let mut spans: Vec<AttnSpan> = Vec::new();
        for blk in &self.blocks {
            if !spans.contains(&blk.span) {
                spans.push(blk.span);
            }
        }
        spans
            .into_iter()
            .map(|span| {
                let window = match span {
                    AttnSpan::Global => usize::MAX,
                    AttnSpan::Local(w) => w,
                };
                let mut m = vec![f32::NEG_INFINITY; b * s * t];
                for (i, &pad) in pads.iter().enumerate() {
                    for qi in 0..s {
                        let q = offset + qi;
                        let row = &mut m[(i * s + qi) * t..(i * s + qi + 1) * t];
                        for (k, v) in row.iter_mut().enumerate().take(q + 1) {
                            if (k >= pad && q - k < window) || k == q {
                                *v = 0.0;
                            }
                        }
                    }
                }
                let mask = Tensor::from_vec(m, (b, 1, s, t), &self.device)?.to_dtype(self.dtype)?;
                Ok((span, mask))
            })
            .collect()
    }
}
