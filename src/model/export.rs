//! Export to a Hugging Face safetensors directory.

use std::path::Path;

use candle_core::Tensor;

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

pub(super) fn export(model: &Model, dir: &Path) -> Result<()> {
    let cfg = model.config().clone();
    let mut tensors = model.named_tensors()?;
    for (name, t) in tensors.iter_mut() {
        if cfg.rope_interleaved && name.ends_with("self_attn.q_proj.weight") {
            *t = unpermute(t, cfg.n_heads)?;
        } else if cfg.rope_interleaved && name.ends_with("self_attn.k_proj.weight") {
            *t = unpermute(t, cfg.n_kv_heads)?;
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
