//! Checkpoint weights behind one interface keyed by Hugging Face tensor names.
//!
//! GGUF files (llama.cpp names, quantized or not) and Hugging Face safetensors directories
//! (single or sharded, memory-mapped) both answer `model.layers.3.self_attn.q_proj.weight`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::candle_msg;
use crate::model::Arch;
use crate::model::LINEARS;
use crate::{Error, Result};

/// Where weights come from.
pub(crate) enum Weights {
    Gguf {
        path: PathBuf,
        content: gguf_file::Content,
        reader: Mutex<BufReader<File>>,
        arch: Arch,
    },
    Safetensors {
        path: PathBuf,
        st: candle_core::safetensors::MmapedSafetensors,
    },
}

/// Reads a GGUF header with every count and length bounded (see `crate::gguf`).
pub(crate) fn read_gguf(path: &Path) -> Result<(gguf_file::Content, BufReader<File>)> {
    crate::gguf::read(path)
}

/// llama.cpp's name for a Hugging Face tensor name.
fn gguf_name(hf: &str, arch: Arch) -> String {
    let (stem, suffix) = match hf.rsplit_once('.') {
        Some((s, x)) => (s, x),
        None => (hf, ""),
    };
    let mapped = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => match stem
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
        {
            Some((l, rest)) => {
                let part = match rest {
                    "input_layernorm" => "attn_norm",
                    "self_attn.q_norm" => "attn_q_norm",
                    "self_attn.k_norm" => "attn_k_norm",
                    "post_attention_layernorm" if arch == Arch::Gemma3 => "post_attention_norm",
                    "post_attention_layernorm" => "ffn_norm",
                    "pre_feedforward_layernorm" => "ffn_norm",
                    "post_feedforward_layernorm" => "post_ffw_norm",
                    other => LINEARS
                        .iter()
                        .find(|n| n.hf == other)
                        .map_or(other, |n| n.gguf),
                };
                format!("blk.{l}.{part}")
            }
            None => stem.to_string(),
        },
    };
    if suffix.is_empty() {
        mapped
    } else {
        format!("{mapped}.{suffix}")
    }
}

impl Weights {
    pub(crate) fn gguf(
        path: &Path,
        content: gguf_file::Content,
        reader: BufReader<File>,
        arch: Arch,
    ) -> Self {
        Weights::Gguf {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
            arch,
        }
    }

    pub(crate) fn safetensors(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "safetensors")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n == "adapter_model.safetensors")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                msg: "no *.safetensors files in this directory".into(),
            });
        }
        // SAFETY: the files are memory-mapped read-only; puppetlens never writes to a checkpoint it has open.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
                Error::Checkpoint {
                    path: dir.to_path_buf(),
                    msg: candle_msg(&e),
                }
            })?;
        Ok(Weights::Safetensors {
            path: dir.to_path_buf(),
            st,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Weights::Gguf { path, .. } | Weights::Safetensors { path, .. } => path,
        }
    }

    /// Whether the checkpoint holds `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Weights::Gguf { content, arch, .. } => {
                content.tensor_infos.contains_key(&gguf_name(name, *arch))
            }
            Weights::Safetensors { st, .. } => st.get(name).is_ok(),
        }
    }

    /// The tensor `name`, kept quantized when the checkpoint stores it so (GGUF only).
    pub(crate) fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        match self {
            Weights::Gguf {
                path,
                content,
                reader,
                arch,
            } => {
                let gname = gguf_name(name, *arch);
                let info =
                    content
                        .tensor_infos
                        .get(&gname)
                        .ok_or_else(|| Error::MissingTensor {
                            path: path.clone(),
                            name: format!("{name} (GGUF `{gname}`)"),
                        })?;
                let mut r = reader.lock().map_err(|_| Error::Checkpoint {
                    path: path.clone(),
                    msg: "reader lock poisoned".into(),
                })?;
                info.read(&mut *r, content.tensor_data_offset, device)
                    .map_err(|e| Error::Checkpoint {
                        path: path.clone(),
                        msg: format!("tensor `{gname}`: {}", candle_msg(&e)),
                    })
            }
            Weights::Safetensors { .. } => {
                let t = self.tensor(name, &[], DType::F32, device)?;
                Ok(QTensor::quantize(
                    &t,
                    candle_core::quantized::GgmlDType::F32,
                )?)
            }
        }
    }

    /// The tensor `name` as a dense tensor of `dtype` on `device`; `shape` (when not empty) is checked.
    pub(crate) fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let t = match self {
            Weights::Gguf { .. } => self.qtensor(name, device)?.dequantize(device)?,
            Weights::Safetensors { path, st } => {
                let view = st.get(name).map_err(|_| Error::MissingTensor {
                    path: path.clone(),
                    name: name.to_string(),
                })?;
                use candle_core::safetensors::Load;
                match view.dtype() {
                    safetensors::Dtype::F32
                    | safetensors::Dtype::F16
                    | safetensors::Dtype::BF16
                    | safetensors::Dtype::F64 => {}
                    other => {
                        return Err(Error::UnsupportedTensorType {
                            path: path.clone(),
                            name: name.to_string(),
                            dtype: format!("{other:?}"),
                        })
                    }
                }
                view.load(device).map_err(|e| Error::Checkpoint {
                    path: path.clone(),
                    msg: format!("tensor `{name}`: {}", candle_msg(&e)),
                })?
            }
        };
        if !shape.is_empty() && t.dims() != shape {
            return Err(Error::Shape {
                what: format!("tensor `{name}` in {}", self.path().display()),
                expected: format!("{shape:?}"),
                got: format!("{:?}", t.dims()),
            });
        }
        Ok(t.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names() {
        assert_eq!(
            gguf_name("model.embed_tokens.weight", Arch::Llama),
            "token_embd.weight"
        );
        assert_eq!(
            gguf_name("model.layers.3.self_attn.q_proj.weight", Arch::Llama),
            "blk.3.attn_q.weight"
        );
        assert_eq!(
            gguf_name(
                "model.layers.3.post_attention_layernorm.weight",
                Arch::Llama
            ),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(
            gguf_name(
                "model.layers.3.post_attention_layernorm.weight",
                Arch::Gemma3
            ),
            "blk.3.post_attention_norm.weight"
        );
        assert_eq!(
            gguf_name(
                "model.layers.0.pre_feedforward_layernorm.weight",
                Arch::Gemma3
            ),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.q_proj.bias", Arch::Qwen2),
            "blk.0.attn_q.bias"
        );
    }
}
