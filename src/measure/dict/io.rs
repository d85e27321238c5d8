//! puppetlens's own dictionary format: a directory with `dict.json` (the config) and
//! `dict.safetensors` (the weights, f32, f16 or bf16), each written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::dictionary::{Activation, Dictionary};
use crate::util::atomic_write;
use crate::{Error, Result};

/// The config file's name.
pub const CONFIG_FILE: &str = "dict.json";
/// The weights file's name.
pub const WEIGHTS_FILE: &str = "dict.safetensors";
const FORMAT: &str = "puppetlens-dictionary";

#[derive(Debug, Serialize, Deserialize)]
struct Config {
    format: String,
    version: u32,
    n_models: usize,
    d: usize,
    n_latents: usize,
    activation: String,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    threshold: Option<f32>,
    scale: Vec<f32>,
    apply_b_dec_to_input: bool,
    dtype: String,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

fn dtype_name(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => {
            return Err(Error::InvalidArgument {
                name: "dtype".into(),
                msg: format!("dictionaries are stored as f32, f16 or bf16, not {other:?}"),
            })
        }
    })
}

/// Reads a safetensors file into f32 tensors on `device`, with errors naming the file.
pub(crate) fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        match view.dtype() {
            safetensors::Dtype::F32
            | safetensors::Dtype::F16
            | safetensors::Dtype::BF16
            | safetensors::Dtype::F64 => {}
            other => {
                return Err(Error::UnsupportedTensorType {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        }
        use candle_core::safetensors::Load;
        let t = view
            .load(device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| bad(format!("tensor `{name}`: {}", crate::error::candle_msg(&e))))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Takes tensor `name` from `map`, checking its shape.
pub(crate) fn take(
    map: &mut HashMap<String, Tensor>,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Tensor> {
    let t = map.remove(name).ok_or_else(|| Error::MissingTensor {
        path: path.to_path_buf(),
        name: name.into(),
    })?;
    if t.dims() != shape {
        return Err(Error::Shape {
            what: format!("{}: tensor `{name}`", path.display()),
            expected: format!("{shape:?}"),
            got: format!("{:?}", t.dims()),
        });
    }
    Ok(t)
}

/// Writes `tensors` to a safetensors file atomically.
pub(crate) fn write_tensors(path: &Path, tensors: Vec<(&str, Tensor)>) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k.to_string(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    atomic_write(path, |tmp| {
        candle_core::safetensors::save(&map, tmp).map_err(Error::from)
    })
}

impl Dictionary {
    /// Saves into `dir` (created if needed) as `dict.json` + `dict.safetensors`, weights in f32.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_as(dir, DType::F32)
    }

    /// [`save`](Self::save) with the weights stored as `dtype` (f32, f16 or bf16; halves the
    /// size, and loading converts back to f32).
    pub fn save_as(&self, dir: impl AsRef<Path>, dtype: DType) -> Result<()> {
        let dir = dir.as_ref();
        let name = dtype_name(dtype)?;
        let (k, threshold) = match &self.activation {
            Activation::TopK { k } => (Some(*k), None),
            Activation::BatchTopK { k, threshold } => (Some(*k), *threshold),
            _ => (None, None),
        };
        let mut tensors = vec![
            ("W_enc", self.w_enc.to_dtype(dtype)?),
            ("b_enc", self.b_enc.to_dtype(dtype)?),
            ("W_dec", self.w_dec.to_dtype(dtype)?),
            ("b_dec", self.b_dec.to_dtype(dtype)?),
        ];
        if let Activation::JumpRelu { threshold } = &self.activation {
            tensors.push(("threshold", threshold.to_dtype(dtype)?));
        }
        write_tensors(&dir.join(WEIGHTS_FILE), tensors)?;
        let cfg = Config {
            format: FORMAT.into(),
            version: 1,
            n_models: self.n_models(),
            d: self.d(),
            n_latents: self.n_latents(),
            activation: self.activation.name().into(),
            k,
            threshold,
            scale: self.scale.clone(),
            apply_b_dec_to_input: self.apply_b_dec_to_input,
            dtype: name.into(),
            meta: self.meta.clone(),
        };
        let json = serde_json::to_string_pretty(&cfg).map_err(|e| Error::InvalidArgument {
            name: "dictionary config".into(),
            msg: e.to_string(),
        })?;
        crate::util::atomic_write_bytes(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// Loads a dictionary saved by [`save`](Self::save) onto `device`, weights as f32.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg_err = |field: &str, msg: String| Error::Config {
            path: cfg_path.clone(),
            field: field.into(),
            msg,
        };
        let cfg: Config =
            serde_json::from_str(&text).map_err(|e| cfg_err("(file)", e.to_string()))?;
        if cfg.format != FORMAT {
            return Err(cfg_err(
                "format",
                format!("expected `{FORMAT}`, got `{}`", cfg.format),
            ));
        }
        let w_path: PathBuf = dir.join(WEIGHTS_FILE);
        let mut map = read_tensors(&w_path, device)?;
        let (m, d, l) = (cfg.n_models, cfg.d, cfg.n_latents);
        let w_enc = take(&mut map, &w_path, "W_enc", &[m * d, l])?;
        let b_enc = take(&mut map, &w_path, "b_enc", &[l])?;
        let w_dec = take(&mut map, &w_path, "W_dec", &[m, l, d])?;
        let b_dec = take(&mut map, &w_path, "b_dec", &[m, d])?;
        let need_k = || {
            cfg.k
                .ok_or_else(|| cfg_err("k", format!("required by `{}`", cfg.activation)))
        };
        let activation = match cfg.activation.as_str() {
            "relu" => Activation::Relu,
            "jumprelu" => Activation::JumpRelu {
                threshold: take(&mut map, &w_path, "threshold", &[l])?,
            },
            "topk" => Activation::TopK { k: need_k()? },
            "batchtopk" => Activation::BatchTopK {
                k: need_k()?,
                threshold: cfg.threshold,
            },
            other => {
                return Err(Error::UnknownArchitecture {
                    path: cfg_path.clone(),
                    arch: other.into(),
                    supported: "relu, jumprelu, topk, batchtopk".into(),
                })
            }
        };
        let mut dict = Dictionary::new(w_enc, b_enc, w_dec, b_dec, activation)?
            .with_scale(cfg.scale)
            .map_err(|e| cfg_err("scale", e.to_string()))?
            .with_apply_b_dec_to_input(cfg.apply_b_dec_to_input);
        dict.meta = cfg.meta;
        Ok(dict)
    }
}
