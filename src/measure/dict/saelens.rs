//! The SAELens layout for SAEs: a directory with `cfg.json` and `sae_weights.safetensors`
//! holding `W_enc` `[d_in, d_sae]`, `b_enc` `[d_sae]`, `W_dec` `[d_sae, d_in]`, `b_dec`
//! `[d_in]` and, for JumpReLU SAEs (Gemma Scope's), `threshold` `[d_sae]`.
//!
//! Encoding follows each architecture's own rule, with
//! `pre = (x - b_dec · apply_b_dec_to_input) · W_enc + b_enc`:
//! `standard`: `relu(pre)`; `jumprelu`: `relu(pre)` where `pre > threshold`; `topk`: the `k`
//! largest per token; `batchtopk`: with a `threshold` tensor as JumpReLU, else the `k · n`
//! largest over the input. Decoding is `f · W_dec + b_dec` for all.
//!
//! A BatchTopK SAE trained by puppetlens is written as SAELens writes its own BatchTopK SAEs for
//! inference: a `jumprelu` SAE. The decoder norms are folded into the encoder (so that every
//! latent's JumpReLU threshold is the BatchTopK threshold) and the input scale into the weights;
//! the encoded activations then differ from puppetlens's by each latent's decoder norm, the
//! reconstruction is the same.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use serde_json::{json, Value};

use super::dictionary::{Activation, Dictionary};
use super::io::{read_tensors, take, write_tensors};
use crate::{Error, Result};

/// SAELens's config file name.
pub const SAELENS_CONFIG: &str = "cfg.json";
/// SAELens's weights file name.
pub const SAELENS_WEIGHTS: &str = "sae_weights.safetensors";
const SUPPORTED: &str = "standard, jumprelu, topk, batchtopk";

impl Dictionary {
    /// Writes this SAE (one model) in the SAELens layout into `dir`: `standard`, `topk` or
    /// `jumprelu` (a BatchTopK SAE becomes `jumprelu`, see the module docs). The metadata keys
    /// `hook_name` and `model_name` of [`Dictionary::meta`] go into the config. Weights f32.
    pub fn save_saelens(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        if self.n_models() != 1 {
            return Err(Error::InvalidArgument {
                name: "dictionary".into(),
                msg: format!(
                    "the SAELens layout holds SAEs of one model; this dictionary has {}",
                    self.n_models()
                ),
            });
        }
        let s = self.scale[0] as f64;
        let (l, d) = (self.n_latents(), self.d());
        let mut w_enc = (self.w_enc.clone() / s)?; // [d, l]
        let mut b_enc = self.b_enc.clone(); // [l]
        let mut w_dec = (self.w_dec.get(0)? * s)?; // [l, d]
        let b_dec = (self.b_dec.get(0)? * s)?; // [d]
        let mut threshold = None;
        let mut k = None;
        let arch = match &self.activation {
            Activation::Relu => "standard",
            Activation::TopK { k: kk } => {
                k = Some(*kk);
                "topk"
            }
            Activation::JumpRelu { threshold: t } => {
                threshold = Some(t.clone());
                "jumprelu"
            }
            Activation::BatchTopK {
                k: kk,
                threshold: t,
            } => {
                let t = t.ok_or_else(|| Error::InvalidArgument {
                    name: "dictionary".into(),
                    msg: format!(
                        "this BatchTopK SAE (k = {kk}) has no inference threshold yet; SAELens's inference form needs one"
                    ),
                })?;
                // Fold decoder norms: the BatchTopK score relu(pre)·‖d‖ becomes the new pre.
                let c = self.w_dec.get(0)?.sqr()?.sum(D::Minus1)?.sqrt()?; // [l]
                w_enc = w_enc.broadcast_mul(&c.unsqueeze(0)?)?;
                b_enc = (b_enc * &c)?;
                w_dec = w_dec.broadcast_div(&c.clamp(1e-30, f64::INFINITY)?.unsqueeze(1)?)?;
                threshold = Some(Tensor::full(t, l, self.device())?);
                "jumprelu"
            }
        };
        let mut tensors = vec![
            ("W_enc", w_enc),
            ("b_enc", b_enc),
            ("W_dec", w_dec),
            ("b_dec", b_dec),
        ];
        if let Some(t) = threshold {
            tensors.push(("threshold", t));
        }
        write_tensors(&dir.join(SAELENS_WEIGHTS), tensors)?;
        let meta = |key: &str| self.meta.get(key).cloned();
        let mut cfg = json!({
            "architecture": arch,
            "d_in": d,
            "d_sae": l,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "hook_name": meta("hook_name"),
            "model_name": meta("model_name"),
            "metadata": {
                "hook_name": meta("hook_name"),
                "model_name": meta("model_name"),
                "written_by": "puppetlens",
            },
        });
        if let Some(k) = k {
            cfg["k"] = json!(k);
        }
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::InvalidArgument {
            name: "SAELens config".into(),
            msg: e.to_string(),
        })?;
        crate::util::atomic_write_bytes(&dir.join(SAELENS_CONFIG), text.as_bytes())
    }

    /// Loads an SAE in the SAELens layout from `dir` onto `device` (weights as f32):
    /// architectures `standard`, `jumprelu`, `topk` and `batchtopk`; configs without an
    /// `architecture` field (older SAELens) are read from `activation_fn_str`. Activation
    /// normalisation other than `none` is refused, as is any other architecture.
    pub fn load_saelens(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(SAELENS_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg_err = |field: &str, msg: String| Error::Config {
            path: cfg_path.clone(),
            field: field.into(),
            msg,
        };
        let cfg: Value =
            serde_json::from_str(&text).map_err(|e| cfg_err("(file)", e.to_string()))?;
        if !cfg.is_object() {
            return Err(cfg_err("(file)", "expected a JSON object".into()));
        }
        let size = |field: &str| -> Result<usize> {
            cfg.get(field)
                .and_then(Value::as_u64)
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| cfg_err(field, "missing or not a positive integer".into()))
        };
        let (d_in, d_sae) = (size("d_in")?, size("d_sae")?);
        let arch = match cfg.get("architecture") {
            Some(Value::String(a)) => a.clone(),
            Some(other) => return Err(cfg_err("architecture", format!("not a string: {other}"))),
            None => match cfg
                .get("activation_fn_str")
                .or_else(|| cfg.get("activation_fn"))
                .and_then(Value::as_str)
            {
                None | Some("relu") => "standard".into(),
                Some("topk") => "topk".into(),
                Some(other) => other.into(),
            },
        };
        match cfg.get("normalize_activations") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" => {}
            Some(other) => {
                return Err(cfg_err(
                    "normalize_activations",
                    format!("{other} is not supported (only \"none\"; fold the scaling factor into the weights first)"),
                ))
            }
        }
        let apply_b_dec = match cfg.get("apply_b_dec_to_input") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(cfg_err(
                    "apply_b_dec_to_input",
                    format!("not a bool: {other}"),
                ))
            }
        };
        let k = || -> Result<usize> {
            cfg.get("k")
                .or_else(|| cfg.get("activation_fn_kwargs").and_then(|a| a.get("k")))
                .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.round() as u64)))
                .filter(|&k| k > 0)
                .map(|k| k as usize)
                .ok_or_else(|| {
                    cfg_err("k", format!("the `{arch}` architecture needs a positive k"))
                })
        };
        if !matches!(
            arch.as_str(),
            "standard" | "jumprelu" | "topk" | "batchtopk"
        ) {
            return Err(Error::UnknownArchitecture {
                path: cfg_path.clone(),
                arch,
                supported: SUPPORTED.into(),
            });
        }
        let w_path = dir.join(SAELENS_WEIGHTS);
        let mut map = read_tensors(&w_path, device)?;
        let w_enc = take(&mut map, &w_path, "W_enc", &[d_in, d_sae])?;
        let b_enc = take(&mut map, &w_path, "b_enc", &[d_sae])?;
        let mut w_dec = take(&mut map, &w_path, "W_dec", &[d_sae, d_in])?;
        let b_dec = take(&mut map, &w_path, "b_dec", &[d_in])?;
        // Older SAELens fine-tuning scales each latent's decoder row.
        if cfg
            .get("finetuning_scaling_factor")
            .and_then(Value::as_bool)
            == Some(true)
        {
            let sf = take(&mut map, &w_path, "scaling_factor", &[d_sae])?;
            w_dec = w_dec.broadcast_mul(&sf.unsqueeze(1)?)?;
        }
        let activation = match arch.as_str() {
            "standard" => Activation::Relu,
            "topk" => Activation::TopK { k: k()? },
            "jumprelu" => Activation::JumpRelu {
                threshold: take(&mut map, &w_path, "threshold", &[d_sae])?,
            },
            _ => match map.contains_key("threshold") {
                true => Activation::JumpRelu {
                    threshold: take(&mut map, &w_path, "threshold", &[d_sae])?,
                },
                false => Activation::BatchTopK {
                    k: k()?,
                    threshold: None,
                },
            },
        };
        let check_k = |k: usize| -> Result<()> {
            if k > d_sae {
                return Err(cfg_err("k", format!("{k} is more than d_sae = {d_sae}")));
            }
            Ok(())
        };
        if let Activation::TopK { k } | Activation::BatchTopK { k, .. } = &activation {
            check_k(*k)?;
        }
        let mut dict = Dictionary::new(
            w_enc,
            b_enc,
            w_dec.unsqueeze(0)?,
            b_dec.unsqueeze(0)?,
            activation,
        )?
        .with_apply_b_dec_to_input(apply_b_dec);
        let meta_of = |key: &str| {
            cfg.get(key)
                .or_else(|| cfg.get("metadata").and_then(|m| m.get(key)))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        for key in ["hook_name", "model_name"] {
            if let Some(v) = meta_of(key) {
                dict.meta.insert(key.into(), v);
            }
        }
        dict.meta.insert("saelens.architecture".into(), arch);
        Ok(dict)
    }
}
