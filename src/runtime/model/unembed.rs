//! The end of the forward and what lenses read of it: the final norm and the unembedding
//! (logits, logits of chosen tokens only, rows of the unembedding, per-head outputs in the
//! residual stream's units).

use candle_core::{DType, Tensor};

use super::forward::Output;
use super::kv::KvCache;
use super::layers::Weight;
use super::Model;
use crate::batch::Batch;
use crate::hook::{HookPoint, Hooks};
use crate::{Error, Result};

impl Model {
    /// Logits of chosen tokens at the last position, `[batch, k]` f32 (`ids[row]` holds row's `k`
    /// token ids), of a forward from the embeddings or resumed at `start`: the unembedding reads
    /// only those rows of its weight (Gemma's is 262k x 640, 7% of an A/B forward when computed
    /// whole). Equal to the same entries of [`Model::forward_last`] within float rounding.
    ///
    /// With `kv`, the batch's columns follow those the cache holds (as in [`Model::forward_cached`]);
    /// a resumed forward then reads and extends the cache only in the blocks it runs.
    pub(crate) fn last_token_logits(
        &self,
        batch: &Batch,
        hooks: &mut Hooks,
        start: Option<(HookPoint, &Tensor)>,
        kv: Option<&mut KvCache>,
        ids: &[Vec<u32>],
    ) -> Result<Tensor> {
        let k = ids.first().map_or(0, |r| r.len());
        if ids.len() != batch.len() || ids.iter().any(|r| r.len() != k) || k == 0 {
            return Err(Error::Shape {
                what: "token ids to score".into(),
                expected: format!("{} rows of one length >= 1", batch.len()),
                got: format!("{:?}", ids.iter().map(|r| r.len()).collect::<Vec<_>>()),
            });
        }
        for (index, row) in ids.iter().enumerate() {
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(Error::TokenOutOfRange {
                    index,
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        let normed = self
            .run_inner(batch, kv, hooks, Output::LastHidden, start)?
            .ok_or_else(|| Error::InvalidArgument {
                name: "last_token_logits".into(),
                msg: "no hidden states computed".into(),
            })?; // [b, 1, d_model]
        let (b, _, d) = normed.dims3()?;
        let h = normed.squeeze(1)?; // [b, d_model]
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let logits = match (&self.unembed.w, &self.unembed.b, &self.unembed.lora) {
            (Weight::Dense(w) | Weight::Frozen(w), None, None) => {
                let idx = Tensor::from_vec(flat, b * k, &self.device)?; // [b * k]
                let rows = w.index_select(&idx, 0)?.reshape((b, k, d))?; // [b, k, d_model]
                let y = rows.matmul(&h.unsqueeze(2)?)?.squeeze(2)?; // [b, k]
                match y.dtype() {
                    DType::F64 => y,
                    _ => y.to_dtype(DType::F32)?,
                }
            }
            _ => {
                // Quantized or adapted head: the whole row, then the chosen entries.
                let all = self.unembed.forward(&h)?.to_dtype(DType::F32)?; // [b, vocab]
                let idx = Tensor::from_vec(flat, (b, k), &self.device)?; // [b, k]
                all.gather(&idx, 1)? // [b, k]
            }
        };
        Ok(match self.cfg.final_logit_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }

    /// Decodes residual-stream values through the final norm and the unembedding (the logit lens):
    /// `[.., d_model]` (the model's dtype) `-> [.., vocab]` f32 logits, soft-capped when the model
    /// caps them. Decoding the last block's `hook_resid_post` gives the model's own logits.
    pub fn unembed_resid(&self, resid: &Tensor) -> Result<Tensor> {
        let normed = self.final_norm.forward(resid, false)?; // [.., d_model]
        self.logits_of(&normed)
    }

    /// The final norm's weight, `[d_model]` (any `1 + w` offset folded in).
    pub(crate) fn final_norm_weight(&self) -> &Tensor {
        &self.final_norm.w
    }

    /// Rows of the unembedding, `[k, d_model]` in the model's dtype; an error for a quantized or
    /// adapted head.
    pub(crate) fn unembed_rows(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::TokenOutOfRange {
                index: 0,
                id,
                vocab: self.cfg.vocab_size,
            });
        }
        match (&self.unembed.w, &self.unembed.b, &self.unembed.lora) {
            (Weight::Dense(w) | Weight::Frozen(w), None, None) => {
                let idx = Tensor::from_vec(ids.to_vec(), ids.len(), &self.device)?; // [k]
                Ok(w.index_select(&idx, 0)?) // [k, d_model]
            }
            _ => Err(Error::InvalidArgument {
                name: "unembedding".into(),
                msg: "direct logit attribution reads rows of a dense unembedding; load the model \
                      without keep_quantized and merge any adapter"
                    .into(),
            }),
        }
    }

    /// Per-head attention outputs `[.., head, d_model]` (`attn.hook_result`) carried into the
    /// residual stream's units: unchanged, or through block `layer`'s post-attention norm (Gemma 3)
    /// with its scale frozen at the heads' sum (so the heads' parts sum to `hook_attn_out`).
    pub(crate) fn heads_in_resid(&self, layer: usize, heads: &Tensor) -> Result<Tensor> {
        let block = self.blocks.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            n_layers: self.cfg.n_layers,
        })?;
        let Some(norm) = &block.post_attn_norm else {
            return Ok(heads.clone());
        };
        let axis = heads.rank().saturating_sub(2);
        let mut total = heads.sum_keepdim(axis)?; // [.., 1, d_model]
        if let Some(b) = &block.attn.o.b {
            total = total.broadcast_add(b)?;
        }
        let scale = norm.scale(&total)?; // [.., 1, 1]
        norm.with_scale(heads, &scale) // [.., head, d_model]
    }

    /// Logits (f32, or f64 for an f64 model; soft-capped when the model caps them) of final-normed hidden states
    /// `[.., d_model] -> [.., vocab]`.
    pub(crate) fn logits_of(&self, h: &Tensor) -> Result<Tensor> {
        let logits = self.unembed.forward(h)?; // [.., vocab]
        let logits = match logits.dtype() {
            DType::F64 => logits, // kept for f64 models (gradient checks)
            _ => logits.to_dtype(DType::F32)?,
        };
        Ok(match self.cfg.final_logit_softcap {
            Some(c) => ((logits / c)?.tanh()? * c)?,
            None => logits,
        })
    }
}
