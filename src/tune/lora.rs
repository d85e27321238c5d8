//! LoRA adapters: low-rank updates of a frozen model's linear layers, in PEFT's file layout.
//!
//! An [`Adapter`] holds, for each adapted linear `W [out, in]`, two matrices `A [rank, in]` and
//! `B [out, rank]` (f32); the adapted layer computes `x W^T + (alpha / rank) (x A^T) B^T`.
//! [`Adapter::save`] writes `adapter_model.safetensors` + `adapter_config.json` exactly as PEFT
//! does (keys `base_model.model.model.layers.{l}.{module}.lora_{A,B}.weight`), so adapters move
//! between puppetlens and Python. [`Model::with_adapter`] attaches one to a loaded base model;
//! exporting that model ([`Model::export_safetensors`]) writes the merged checkpoint
//! `W + (alpha / rank) B A`. Adapters are trained by [`crate::train`].
//!
//! ```no_run
//! use puppetlens::lora::Adapter;
//! use puppetlens::{LoadOptions, Model};
//! let base = Model::load("gemma-3-270m.Q4_K_M.gguf", &LoadOptions::default())?;
//! let adapter = Adapter::load("notebooks-data/organisms/sycophant", base.device())?;
//! let tuned = base.with_adapter(&adapter)?; // the base stays as it was
//! tuned.export_safetensors("sycophant-merged")?; // a full Hugging Face checkpoint
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::SplitMix64;
use crate::model::{LoraPath, Model, Proj, LINEARS};
use crate::util::{atomic_write, atomic_write_bytes};
use crate::{Error, Result};

/// Which linears to adapt, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank of the update (8 by default).
    pub rank: usize,
    /// Scale numerator: the update is multiplied by `alpha / rank` (16 by default).
    pub alpha: f64,
    /// Module names, short (`q_proj`) or long (`self_attn.q_proj`); all seven projections of
    /// attention and MLP by default.
    pub targets: Vec<String>,
    /// Layers to adapt (`None`: all).
    pub layers: Option<Vec<usize>>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: LINEARS.iter().map(|n| short(n.hf).to_string()).collect(),
            layers: None,
        }
    }
}

fn short(module: &str) -> &str {
    module.rsplit('.').next().unwrap_or(module)
}

/// The long module name (`self_attn.q_proj`) of a short or long target name.
fn long(target: &str) -> Result<&'static str> {
    LINEARS
        .iter()
        .find(|n| n.hf == target || short(n.hf) == target)
        .map(|n| n.hf)
        .ok_or_else(|| Error::InvalidArgument {
            name: "LoRA target".into(),
            msg: format!(
                "unknown module `{target}` (known: {})",
                LINEARS.map(|n| short(n.hf)).join(", ")
            ),
        })
}

/// A LoRA adapter: per adapted linear, `A [rank, in]` and `B [out, rank]` (f32), in Hugging Face
/// row layout.
#[derive(Debug, Clone)]
pub struct Adapter {
    config: LoraConfig,
    /// Key: `(layer, long module name)`.
    weights: BTreeMap<(usize, String), (Tensor, Tensor)>,
    base_model: String,
}

/// PEFT's `adapter_config.json` (the fields puppetlens reads and writes).
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    task_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    target_modules: Vec<String>,
    #[serde(default)]
    layers_to_transform: Option<Vec<usize>>,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
}

const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const CONFIG_FILE: &str = "adapter_config.json";

fn peft_key(layer: usize, module: &str, which: char) -> String {
    format!("base_model.model.model.layers.{layer}.{module}.lora_{which}.weight")
}

impl Adapter {
    /// A fresh adapter for `model`: `A` drawn uniformly in `±1/sqrt(in)` (PEFT's Kaiming init)
    /// from `seed`, `B = 0`, so the adapted model starts equal to the base.
    pub fn init(model: &Model, config: &LoraConfig, seed: u64) -> Result<Adapter> {
        if config.rank == 0 {
            return Err(Error::InvalidArgument {
                name: "LoRA rank".into(),
                msg: "must be at least 1".into(),
            });
        }
        let n_layers = model.config().n_layers;
        let layers = config
            .layers
            .clone()
            .unwrap_or_else(|| (0..n_layers).collect());
        if let Some(&l) = layers.iter().find(|&&l| l >= n_layers) {
            return Err(Error::LayerOutOfRange { layer: l, n_layers });
        }
        let modules = config
            .targets
            .iter()
            .map(|t| long(t))
            .collect::<Result<Vec<_>>>()?;
        let mut rng = SplitMix64::new(seed);
        let mut weights = BTreeMap::new();
        for &l in &layers {
            for &m in &modules {
                let (out, inp) = shape_of(model, l, m)?;
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..config.rank * inp)
                    .map(|_| {
                        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                        ((2.0 * u - 1.0) * bound) as f32
                    })
                    .collect();
                let a = Tensor::from_vec(a, (config.rank, inp), model.device())?; // [rank, in]
                let b = Tensor::zeros((out, config.rank), DType::F32, model.device())?; // [out, rank]
                weights.insert((l, m.to_string()), (a, b));
            }
        }
        Ok(Adapter {
            config: config.clone(),
            weights,
            base_model: String::new(),
        })
    }

    /// Builds an adapter from tensors in Hugging Face row layout.
    pub(crate) fn from_parts(
        config: LoraConfig,
        weights: BTreeMap<(usize, String), (Tensor, Tensor)>,
        base_model: String,
    ) -> Adapter {
        Adapter {
            config,
            weights,
            base_model,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.alpha / self.config.rank as f64
    }

    /// Number of trainable values (`A` and `B` of every adapted linear).
    pub fn n_params(&self) -> usize {
        self.weights
            .values()
            .map(|(a, b)| a.elem_count() + b.elem_count())
            .sum()
    }

    /// The adapted `(layer, module)` pairs and their `(A [rank, in], B [out, rank])`.
    pub fn weights(&self) -> &BTreeMap<(usize, String), (Tensor, Tensor)> {
        &self.weights
    }

    /// The name of the base model the adapter was trained on (free text; may be empty).
    pub fn base_model(&self) -> &str {
        &self.base_model
    }

    /// Sets the base model's name written to `adapter_config.json`.
    pub fn with_base_model(mut self, name: impl Into<String>) -> Self {
        self.base_model = name.into();
        self
    }

    /// Frobenius norm of each update `scale * B A`, by `(layer, module)`: where the adapter
    /// changed the model.
    pub fn update_norms(&self) -> Result<BTreeMap<(usize, String), f32>> {
        let mut out = BTreeMap::new();
        for (k, (a, b)) in &self.weights {
            let d = (b.matmul(a)? * self.scale())?; // [out, in]
            out.insert(k.clone(), d.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
        }
        Ok(out)
    }

    /// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` (PEFT layout),
    /// each file atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for ((l, m), (a, b)) in &self.weights {
            map.insert(peft_key(*l, m, 'A'), a.to_dtype(DType::F32)?.contiguous()?);
            map.insert(peft_key(*l, m, 'B'), b.to_dtype(DType::F32)?.contiguous()?);
        }
        atomic_write(&dir.join(WEIGHTS_FILE), |tmp| {
            candle_core::safetensors::save(&map, tmp).map_err(Error::from)
        })?;
        let mut targets: Vec<String> = self
            .weights
            .keys()
            .map(|(_, m)| short(m).to_string())
            .collect();
        targets.sort();
        targets.dedup();
        let layers: Vec<usize> = {
            let mut v: Vec<usize> = self.weights.keys().map(|(l, _)| *l).collect();
            v.dedup();
            v
        };
        let cfg = PeftConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: self.config.rank,
            lora_alpha: self.config.alpha,
            target_modules: targets,
            layers_to_transform: self.config.layers.as_ref().map(|_| layers),
            lora_dropout: 0.0,
            bias: Some("none".into()),
            fan_in_fan_out: false,
            use_rslora: false,
            base_model_name_or_path: Some(self.base_model.clone()),
        };
        let json = serde_json::to_string_pretty(&cfg).map_err(|e| Error::InvalidArgument {
            name: "adapter config".into(),
            msg: e.to_string(),
        })?;
        atomic_write_bytes(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// Reads an adapter written by [`Adapter::save`] or by PEFT (`lora_A`/`lora_B` keys, with or
    /// without the `.default` adapter name) onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Adapter> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: PeftConfig = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: cfg_path.clone(),
            field: "adapter_config.json".into(),
            msg: e.to_string(),
        })?;
        let bad = |field: &str, msg: String| Error::Config {
            path: cfg_path.clone(),
            field: field.into(),
            msg,
        };
        if cfg.peft_type != "LORA" {
            return Err(bad("peft_type", format!("`{}` (only LORA)", cfg.peft_type)));
        }
        if cfg.use_rslora || cfg.fan_in_fan_out {
            return Err(bad(
                "use_rslora/fan_in_fan_out",
                "unsupported (must be false)".into(),
            ));
        }
        if cfg.r == 0 {
            return Err(bad("r", "must be at least 1".into()));
        }
        let w_path = dir.join(WEIGHTS_FILE);
        if !w_path.exists() {
            return Err(Error::io(
                &w_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let tensors =
            candle_core::safetensors::load(&w_path, device).map_err(|e| Error::Checkpoint {
                path: w_path.clone(),
                msg: crate::error::candle_msg(&e),
            })?;
        let mut halves: BTreeMap<(usize, String), [Option<Tensor>; 2]> = BTreeMap::new();
        for (key, t) in tensors {
            let k = key.replace(".default.weight", ".weight");
            let parse = || -> Option<(usize, String, usize)> {
                let rest = k.strip_prefix("base_model.model.model.layers.")?;
                let (layer, rest) = rest.split_once('.')?;
                let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                    (m, 0)
                } else {
                    (rest.strip_suffix(".lora_B.weight")?, 1)
                };
                Some((layer.parse().ok()?, long(module).ok()?.to_string(), which))
            };
            let (layer, module, which) = parse().ok_or_else(|| Error::Checkpoint {
                path: w_path.clone(),
                msg: format!("unexpected tensor `{key}` (want base_model.model.model.layers.L.MODULE.lora_A/B.weight)"),
            })?;
            halves.entry((layer, module)).or_default()[which] = Some(t.to_dtype(DType::F32)?);
        }
        let mut weights = BTreeMap::new();
        for ((l, m), [a, b]) in halves {
            let missing = |w: char| Error::MissingTensor {
                path: w_path.clone(),
                name: peft_key(l, &m, w),
            };
            let a = a.ok_or_else(|| missing('A'))?;
            let b = b.ok_or_else(|| missing('B'))?;
            let (ra, _) = a.dims2()?;
            let (_, rb) = b.dims2()?;
            if ra != cfg.r || rb != cfg.r {
                return Err(Error::Shape {
                    what: format!("rank of {} in {}", peft_key(l, &m, 'A'), w_path.display()),
                    expected: format!("r = {} (adapter_config.json)", cfg.r),
                    got: format!("A {:?}, B {:?}", a.dims(), b.dims()),
                });
            }
            weights.insert((l, m), (a, b));
        }
        if weights.is_empty() {
            return Err(Error::Checkpoint {
                path: w_path,
                msg: "no LoRA tensors".into(),
            });
        }
        Ok(Adapter {
            config: LoraConfig {
                rank: cfg.r,
                alpha: cfg.lora_alpha,
                targets: cfg.target_modules,
                layers: cfg.layers_to_transform,
            },
            weights,
            base_model: cfg.base_model_name_or_path.unwrap_or_default(),
        })
    }
}

fn shape_of(model: &Model, layer: usize, module: &str) -> Result<(usize, usize)> {
    model
        .linear_shape(layer, module)
        .ok_or_else(|| Error::InvalidArgument {
            name: "LoRA target".into(),
            msg: format!("layer {layer} has no linear `{module}`"),
        })
}

/// llama.cpp's q/k row order (adjacent rotary pairs) from Hugging Face's (split halves), for the
/// rows of `B [heads * head_dim, rank]`.
fn permute_rows(b: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, r) = b.dims2()?;
    let hd = out / heads;
    Ok(b.reshape((heads, 2, hd / 2, r))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, r))?)
}

/// Hugging Face's q/k row order from llama.cpp's.
pub(crate) fn unpermute_rows(b: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, r) = b.dims2()?;
    let hd = out / heads;
    Ok(b.reshape((heads, hd / 2, 2, r))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, r))?)
}

/// The row permutation a model applies to q/k rows, if any: the number of heads to permute by.
pub(crate) fn rotary_heads(model: &Model, module: &str) -> Option<usize> {
    let cfg = model.config();
    if !cfg.rope_interleaved {
        return None;
    }
    Proj::from_hf(module)?.rotary_heads(cfg)
}

impl Model {
    /// A copy of this model with `adapter` attached (the base is unchanged; weights are shared).
    ///
    /// Fails with [`Error::Shape`] naming the layer and module when an adapter matrix does not
    /// fit the model's linear, and with [`Error::LayerOutOfRange`] for a layer the model lacks.
    pub fn with_adapter(&self, adapter: &Adapter) -> Result<Model> {
        let paths = self.lora_paths(adapter)?;
        self.with_lora_paths(&paths, false)
    }

    /// The adapter's matrices checked against this model, in this model's row layout and dtype.
    pub(crate) fn lora_paths(&self, adapter: &Adapter) -> Result<Vec<((usize, String), LoraPath)>> {
        let n_layers = self.config().n_layers;
        let mut paths = Vec::with_capacity(adapter.weights.len());
        for ((l, m), (a, b)) in &adapter.weights {
            if *l >= n_layers {
                return Err(Error::LayerOutOfRange {
                    layer: *l,
                    n_layers,
                });
            }
            let (out, inp) = shape_of(self, *l, m)?;
            let r = adapter.config.rank;
            if a.dims() != [r, inp] || b.dims() != [out, r] {
                return Err(Error::Shape {
                    what: format!("adapter on layer {l} `{m}`"),
                    expected: format!("A [{r}, {inp}], B [{out}, {r}]"),
                    got: format!("A {:?}, B {:?}", a.dims(), b.dims()),
                });
            }
            let b = match rotary_heads(self, m) {
                Some(h) => permute_rows(b, h)?,
                None => b.clone(),
            };
            let dev = self.device();
            paths.push((
                (*l, m.clone()),
                LoraPath {
                    a: a.to_device(dev)?.to_dtype(self.dtype())?,
                    b: b.to_device(dev)?.to_dtype(self.dtype())?,
                    scale: adapter.scale(),
                },
            ));
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_permutations_are_inverse() {
        let b = Tensor::arange(0f32, 64.0, &Device::Cpu)
            .unwrap()
            .reshape((16, 4))
            .unwrap();
        let back = unpermute_rows(&permute_rows(&b, 2).unwrap(), 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        // adjacent pairs: row 1 of llama.cpp's order is row hd/2 = 4 of Hugging Face's
        let p = permute_rows(&b, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(p[1], b.to_vec2::<f32>().unwrap()[4]);
    }

    #[test]
    fn targets_resolve_short_and_long_names() {
        assert_eq!(long("q_proj").unwrap(), "self_attn.q_proj");
        assert_eq!(long("mlp.down_proj").unwrap(), "mlp.down_proj");
        assert!(long("lm_head").unwrap_err().to_string().contains("lm_head"));
    }
}
