//! Export to a Hugging Face safetensors directory.

use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Tensor};

use super::layers::{Linear, RmsNorm, Weight};
use super::names::{Proj, LINEARS};
use super::{Arch, Model};
use crate::util::{atomic_write, atomic_write_bytes};
use crate::{Error, Result};

/// Undoes llama.cpp's q/k row permutation (adjacent rotary pairs back to split halves):
/// `[heads * head_dim, in]` viewed as `[heads, head_dim/2, 2, in]` -> `[heads, 2, head_dim/2, in]`.
fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

/// Writes `model` as a Hugging Face safetensors directory (see [`Model::export_safetensors`]).
pub(super) fn export(model: &Model, dir: &Path) -> Result<()> {
    let cfg = model.config().clone();
    let mut tensors = model.named_tensors()?;
    for (name, t) in tensors.iter_mut() {
        let rotary = Proj::of_weight(name).and_then(|p| p.rotary_heads(&cfg));
        if let (true, Some(heads)) = (cfg.rope_interleaved, rotary) {
            *t = unpermute(t, heads)?;
        } else if cfg.arch == Arch::Gemma3 && name.ends_with("norm.weight") {
            *t = (&*t - 1.0)?; // Hugging Face Gemma stores w for (1 + w)
        }
    }
    let mut hf_cfg = cfg.clone();
    hf_cfg.rope_interleaved = false;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json =
        serde_json::to_string_pretty(&hf_cfg.to_hf_json()).map_err(|e| Error::InvalidArgument {
            name: "config".into(),
            msg: e.to_string(),
        })?;
    atomic_write(&dir.join("model.safetensors"), |tmp| {
        let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, tmp).map_err(Error::from)
    })?;
    atomic_write_bytes(&dir.join("config.json"), json.as_bytes())
}

impl Model {
    /// Writes this model as a Hugging Face safetensors directory (config.json + model.safetensors),
    /// in Hugging Face's weight layout (rotary rows un-permuted, Gemma norms stored as `w` for `1 + w`).
    pub fn export_safetensors(&self, dir: impl AsRef<Path>) -> Result<()> {
        export(self, dir.as_ref())
    }

    /// Every weight as (Hugging Face name, dense f32 tensor in puppetlens's layout).
    pub(crate) fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let m = self;
        let dense = |l: &Linear| -> Result<Tensor> {
            let w = match &l.w {
                Weight::Dense(w) | Weight::Frozen(w) => w.to_dtype(DType::F32)?,
                Weight::Packed(p) => p.unpack()?,
                Weight::Quant(QMatMul::QTensor(q)) => q.dequantize(&m.device)?,
                Weight::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                    t.to_dtype(DType::F32)?
                }
            }; // [out, in]
            match &l.lora {
                // merged: W + scale * B A
                Some(lo) => Ok((w
                    + (lo
                        .b
                        .to_dtype(DType::F32)?
                        .matmul(&lo.a.to_dtype(DType::F32)?)?
                        * lo.scale)?)?),
                None => Ok(w),
            }
        };
        let bias = |l: &Linear| l.b.clone();
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            m.embed.to_dtype(DType::F32)?,
        )];
        if !m.cfg.tie_embeddings {
            out.push(("lm_head.weight".into(), dense(&m.unembed)?));
        }
        out.push((
            "model.norm.weight".into(),
            m.final_norm.w.to_dtype(DType::F32)?,
        ));
        for (l, blk) in m.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let mut lin = |n: &str, x: &Linear| -> Result<()> {
                out.push((format!("{p}.{n}.weight"), dense(x)?));
                if let Some(b) = bias(x) {
                    out.push((format!("{p}.{n}.bias"), b.to_dtype(DType::F32)?));
                }
                Ok(())
            };
            for n in LINEARS {
                lin(n.hf, blk.linear(n.proj))?;
            }
            let mut norm = |n: &str, x: &RmsNorm| -> Result<()> {
                out.push((format!("{p}.{n}.weight"), x.w.to_dtype(DType::F32)?));
                Ok(())
            };
            norm("input_layernorm", &blk.attn_norm)?;
            if let (Some(qn), Some(kn)) = (&blk.attn.q_norm, &blk.attn.k_norm) {
                norm("self_attn.q_norm", qn)?;
                norm("self_attn.k_norm", kn)?;
            }
            match (&blk.post_attn_norm, &blk.post_mlp_norm) {
                (Some(pa), Some(pm)) => {
                    norm("post_attention_layernorm", pa)?;
                    norm("pre_feedforward_layernorm", &blk.mlp_norm)?;
                    norm("post_feedforward_layernorm", pm)?;
                }
                _ => norm("post_attention_layernorm", &blk.mlp_norm)?,
            }
        }
        Ok(out)
    }
}
