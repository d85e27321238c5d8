//! Adapted and trainable copies of a model: low-rank paths on chosen linears (merged for
//! inference, kept apart and over frozen weights for training with autograd).

use super::layers::{Linear, LoraPath, Weight};
use super::names::{Proj, LINEARS};
use super::Model;
use crate::{Error, Result};

impl Model {
    /// Switches the rotary kernel between adjacent pairs and split halves (tests of the kernels).
    #[cfg(test)]
    pub(crate) fn set_rope_interleaved(&mut self, on: bool) {
        self.cfg.rope_interleaved = on;
        for b in &mut self.blocks {
            b.attn.interleaved = on;
        }
    }

    /// Turns frozen weights back into plain dense ones (tests of the frozen matmul's gradients).
    #[cfg(test)]
    pub(crate) fn unfreeze(&mut self) {
        let thaw = |l: &mut Linear| {
            if let Weight::Frozen(w) = &l.w {
                l.w = Weight::Dense(w.clone());
            }
        };
        thaw(&mut self.unembed);
        for blk in &mut self.blocks {
            for n in LINEARS {
                thaw(blk.linear_mut(n.proj));
            }
        }
    }

    /// `(out, in)` of the linear `module` (a Hugging Face name of [`LINEARS`]) of `layer`, or `None`.
    pub(crate) fn linear_shape(&self, layer: usize, module: &str) -> Option<(usize, usize)> {
        let p = Proj::from_hf(module)?;
        self.blocks.get(layer)?.linear(p).out_in().ok()
    }

    /// A copy of this model with low-rank paths on the given `(layer, module)` linears (tensors
    /// in this model's row layout) and, when `differentiable`, plain-op kernels for autograd
    /// (the paths stay separate, to be trained); otherwise each path is merged into its dense weight.
    pub(crate) fn with_lora_paths(
        &self,
        paths: &[((usize, String), LoraPath)],
        differentiable: bool,
    ) -> Result<Model> {
        let mut m = self.clone();
        m.differentiable = differentiable;
        if differentiable {
            let freeze = |l: &mut Linear| -> Result<()> {
                if let Weight::Dense(_) | Weight::Packed(_) = &l.w {
                    if let Some(w) = l.dense_weight()? {
                        l.w = Weight::Frozen(w.to_device(&self.device)?.to_dtype(self.dtype)?);
                    }
                }
                Ok(())
            };
            freeze(&mut m.unembed)?;
            for blk in &mut m.blocks {
                for n in LINEARS {
                    freeze(blk.linear_mut(n.proj))?;
                }
            }
        }
        for ((layer, module), path) in paths {
            let n_layers = m.cfg.n_layers;
            let blk = m.blocks.get_mut(*layer).ok_or(Error::LayerOutOfRange {
                layer: *layer,
                n_layers,
            })?;
            let p = Proj::from_hf(module).ok_or_else(|| Error::InvalidArgument {
                name: "adapter target".into(),
                msg: format!(
                    "unknown module `{module}` (known: {:?})",
                    LINEARS.map(|n| n.hf)
                ),
            })?;
            let lin = blk.linear_mut(p);
            lin.lora = Some(path.clone());
            if !differentiable {
                lin.merge_lora()?;
            }
        }
        Ok(m)
    }
}
