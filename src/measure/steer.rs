//! Steering vectors: per-layer directions as plain values, built from contrastive activations.
//!
//! A [`SteeringVector`] maps layers to `[d_model]` directions added to `blocks.{l}.hook_resid_post`.
//! Sign convention: positive points towards the behaviour (the positive set). Vectors support `+`,
//! `-` (both give a `Result`: widths must match), `* f32` and unary `-`; they save to safetensors and to llama.cpp's control-vector GGUF
//! (`direction.N` is added to the output of block N; llama.cpp cannot steer block 0).
//!
//! Methods: [`SteeringVector::mean_diff`] (CAA: difference of class means),
//! [`SteeringVector::pca_diff`] and [`SteeringVector::pca_center`] (repeng's top principal component of
//! paired differences / of pair-centred activations). [`train_vector`] is the one call from a
//! contrast dataset file to a vector; [`SteeringVector::export_control_vector`] writes one for
//! llama.cpp.
//!
//! ```
//! use std::collections::BTreeMap;
//! use candle_core::{Device, Tensor};
//! use puppetlens::SteeringVector;
//! let mut d = BTreeMap::new();
//! d.insert(3, Tensor::new(&[1f32, 0.0, 0.0, 0.0], &Device::Cpu)?);
//! let v = SteeringVector::new(d, "manual")?;
//! let w = (&(&v * 2.0) - &v)?; // equals v
//! assert_eq!(w.get(3).unwrap().to_vec1::<f32>()?, vec![1.0, 0.0, 0.0, 0.0]);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::collections::BTreeMap;
use std::ops::{Add, Mul, Neg, Sub};
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, D};

use crate::data::{Dataset, PromptOptions, Prompter};
use crate::extract::{
    extract, extract_pairs, write_safetensors, Activations, ExtractOptions, Site,
};
use crate::hook::{AddVector, HookPoint, Hooks, Positions, ProjectOut};
use crate::model::Model;
use crate::tokenize::Tokenizer;
use crate::{Error, Result};

/// Per-layer directions (`[d_model]` f32 on the CPU) with provenance.
#[derive(Debug, Clone)]
pub struct SteeringVector {
    directions: BTreeMap<usize, Tensor>,
    d_model: usize,
    /// How it was built (e.g. "mean_diff", "pca_diff", "base_vs_tuned").
    pub method: String,
    /// Free-form provenance: model, dataset, site, split, seed...
    pub meta: BTreeMap<String, String>,
}

impl SteeringVector {
    /// A vector from per-layer directions, each `[d_model]` of one width.
    pub fn new(directions: BTreeMap<usize, Tensor>, method: impl Into<String>) -> Result<Self> {
        let mut d_model = None;
        let mut clean = BTreeMap::new();
        for (l, t) in directions {
            let w = match t.dims() {
                [w] => *w,
                other => {
                    return Err(Error::Shape {
                        what: format!("steering direction for layer {l}"),
                        expected: "[d_model]".into(),
                        got: format!("{other:?}"),
                    })
                }
            };
            if let Some(d) = d_model {
                if d != w {
                    return Err(Error::Shape {
                        what: format!("steering direction for layer {l}"),
                        expected: format!("[{d}]"),
                        got: format!("[{w}]"),
                    });
                }
            }
            d_model = Some(w);
            let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            if t.to_vec1::<f32>()?.iter().any(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument {
                    name: format!("direction for layer {l}"),
                    msg: "non-finite values".into(),
                });
            }
            clean.insert(l, t);
        }
        let d_model = d_model.ok_or_else(|| Error::InvalidArgument {
            name: "directions".into(),
            msg: "no layers".into(),
        })?;
        Ok(Self {
            directions: clean,
            d_model,
            method: method.into(),
            meta: BTreeMap::new(),
        })
    }

    /// Adds a provenance entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// Layers that have a direction.
    pub fn layers(&self) -> Vec<usize> {
        self.directions.keys().copied().collect()
    }

    /// The direction at layer `l`, `[d_model]`.
    pub fn get(&self, l: usize) -> Option<&Tensor> {
        self.directions.get(&l)
    }

    /// Width of every direction.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Only the given layers.
    pub fn only(&self, layers: &[usize]) -> Result<Self> {
        let d: BTreeMap<usize, Tensor> = self
            .directions
            .iter()
            .filter(|(l, _)| layers.contains(l))
            .map(|(l, t)| (*l, t.clone()))
            .collect();
        Ok(Self {
            directions: d,
            ..self.clone()
        })
        .and_then(|v| {
            if v.directions.is_empty() {
                Err(Error::InvalidArgument {
                    name: "layers".into(),
                    msg: format!("none of {layers:?} is in this vector ({:?})", self.layers()),
                })
            } else {
                Ok(v)
            }
        })
    }

    /// L2 norm per layer.
    pub fn norms(&self) -> Result<BTreeMap<usize, f64>> {
        self.directions
            .iter()
            .map(|(l, t)| Ok((*l, norm(t)?)))
            .collect()
    }

    /// Each direction scaled to unit norm.
    pub fn normalized(&self) -> Result<Self> {
        let d = self
            .directions
            .iter()
            .map(|(l, t)| {
                let n = norm(t)?;
                Ok((*l, if n > 0.0 { (t / n)? } else { t.clone() }))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Self {
            directions: d,
            ..self.clone()
        })
    }

    /// Cosine similarity with `other` at each shared layer.
    pub fn cosine(&self, other: &SteeringVector) -> Result<BTreeMap<usize, f64>> {
        let mut out = BTreeMap::new();
        for (l, a) in &self.directions {
            if let Some(b) = other.directions.get(l) {
                out.insert(*l, cosine(a, b)?);
            }
        }
        Ok(out)
    }

    /// Checks width and layers against `model`.
    pub fn check(&self, model: &Model) -> Result<()> {
        let c = model.config();
        if self.d_model != c.d_model {
            return Err(Error::Shape {
                what: format!(
                    "steering vector ({}) for a model of width {}",
                    self.method, c.d_model
                ),
                expected: format!("[{}]", c.d_model),
                got: format!("[{}]", self.d_model),
            });
        }
        if let Some(&l) = self.directions.keys().find(|&&l| l >= c.n_layers) {
            return Err(Error::LayerOutOfRange {
                layer: l,
                n_layers: c.n_layers,
            });
        }
        Ok(())
    }

    /// Adds hooks that add `scale x direction` to `hook_resid_post` of every layer of this vector.
    pub fn add_to<'h>(
        &self,
        model: &Model,
        hooks: &mut Hooks<'h>,
        scale: f64,
        positions: Positions,
    ) -> Result<()> {
        self.check(model)?;
        for (l, t) in &self.directions {
            let v = t.to_dtype(model.dtype())?.to_device(model.device())?;
            hooks.add(
                HookPoint::ResidPost(*l),
                AddVector::new(v, scale).at(positions.clone()),
            );
        }
        Ok(())
    }

    /// Adds hooks that project the direction of layer `layer` out of everything written to the
    /// residual stream (embeddings, every attention and MLP output), at every position: the residual
    /// then carries no component along it anywhere (directional ablation).
    pub fn ablate_in<'h>(&self, model: &Model, hooks: &mut Hooks<'h>, layer: usize) -> Result<()> {
        self.check(model)?;
        let d = self
            .directions
            .get(&layer)
            .ok_or_else(|| Error::InvalidArgument {
                name: "layer".into(),
                msg: format!(
                    "this vector has no direction at layer {layer} (it has {:?})",
                    self.layers()
                ),
            })?;
        let d = d.to_dtype(model.dtype())?.to_device(model.device())?;
        let po = ProjectOut::new(&d)?;
        hooks.add_where(
            |p| {
                matches!(
                    p,
                    HookPoint::Embed | HookPoint::AttnOut(_) | HookPoint::MlpOut(_)
                )
            },
            po,
        );
        Ok(())
    }

    /// Difference of means per layer: `mean(pos) - mean(neg)` over `hook_resid_post` of each layer (CAA).
    pub fn mean_diff(pos: &Activations, neg: &Activations, n_layers: usize) -> Result<Self> {
        Self::mean_diff_layers(pos, neg, &(0..n_layers).collect::<Vec<_>>())
    }

    /// [`mean_diff`](Self::mean_diff) at the given layers only (extract just those points).
    pub fn mean_diff_layers(
        pos: &Activations,
        neg: &Activations,
        layers: &[usize],
    ) -> Result<Self> {
        let mut d = BTreeMap::new();
        for &l in layers {
            let (p, n) = layer_pair(pos, neg, l)?;
            d.insert(l, (p.mean(0)? - n.mean(0)?)?); // [d_model]
        }
        Self::new(d, "mean_diff")
    }

    /// The least-squares direction per layer ([`crate::probe::least_squares_direction`]): ridge
    /// regression of `+1` on `pos` and `-1` on `neg` (`hook_resid_post` of each layer, strength
    /// `l2`), rescaled to the norm of the difference of means. Where the difference of means
    /// ([`mean_diff`](Self::mean_diff)) points from one class centre to the other, this points
    /// along `Σ⁻¹` of that difference (Σ the within-class covariance, regularised by `l2`): it
    /// discounts directions in which activations vary a lot anyway (e.g. the few "massive
    /// activation" dimensions), so it separates the classes better, but it is not the shift that
    /// moves one class's activations onto the other's. The two agree (cosine near 1) when the noise
    /// is isotropic; for steering the difference of means is usually the better default (CAA) and
    /// this one the better detector.
    pub fn least_squares(
        pos: &Activations,
        neg: &Activations,
        n_layers: usize,
        l2: f64,
    ) -> Result<Self> {
        let mut d = BTreeMap::new();
        for l in 0..n_layers {
            let (p, n) = layer_pair(pos, neg, l)?;
            d.insert(l, crate::probe::least_squares_direction(&p, &n, l2)?); // [d_model]
        }
        Self::new(d, "least_squares").map(|v| v.with_meta("l2", l2.to_string()))
    }

    /// Top principal direction of the paired differences `pos[i] - neg[i]` per layer (repeng's
    /// `pca_diff`), signed so that positives project above negatives and scaled to the norm of the mean
    /// difference. The differences are not centred: a shift shared by every pair is the signal here
    /// (centring, as scikit-learn's PCA in repeng does, would remove exactly that shift).
    pub fn pca_diff(pos: &Activations, neg: &Activations, n_layers: usize) -> Result<Self> {
        let mut d = BTreeMap::new();
        for l in 0..n_layers {
            let (p, n) = paired(pos, neg, l)?;
            let diff = (&p - &n)?; // [n, d_model]
            d.insert(l, signed_pc(&diff, &p, &n, false)?);
        }
        Self::new(d, "pca_diff")
    }

    /// Top principal component of activations centred on each pair's midpoint (repeng's
    /// `pca_center`), signed and scaled like [`pca_diff`](Self::pca_diff).
    pub fn pca_center(pos: &Activations, neg: &Activations, n_layers: usize) -> Result<Self> {
        let mut d = BTreeMap::new();
        for l in 0..n_layers {
            let (p, n) = paired(pos, neg, l)?;
            let center = ((&p + &n)? * 0.5)?; // [n, d_model]
            let x = Tensor::cat(&[(&p - &center)?, (&n - &center)?], 0)?; // [2n, d_model]
            d.insert(l, signed_pc(&x, &p, &n, true)?);
        }
        Self::new(d, "pca_center")
    }

    /// Saves as safetensors: `direction.{layer}` tensors, method and provenance in the header.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .directions
            .iter()
            .map(|(l, t)| (format!("direction.{l}"), t.clone()))
            .collect();
        let mut meta = self.meta.clone();
        meta.insert("puppetlens.method".into(), self.method.clone());
        write_safetensors(path.as_ref(), &tensors, meta)
    }

    /// Loads a vector saved by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut meta: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let method = meta
            .remove("puppetlens.method")
            .unwrap_or_else(|| "unknown".into());
        let mut d = BTreeMap::new();
        for (name, view) in st.tensors() {
            let l = parse_direction(&name)
                .ok_or_else(|| bad(format!("unexpected tensor `{name}` (expected direction.N)")))?;
            use candle_core::safetensors::Load;
            d.insert(
                l,
                view.load(&Device::Cpu)
                    .map_err(|e| bad(crate::error::candle_msg(&e)))?,
            );
        }
        let mut v = Self::new(d, method)?;
        v.meta = meta;
        Ok(v)
    }

    /// Writes llama.cpp's control-vector GGUF: `direction.N` (f32 `[d_model]`) for N >= 1,
    /// `controlvector.model_hint`, `controlvector.layer_count`.
    pub fn to_control_vector_gguf(&self, path: impl AsRef<Path>, model_hint: &str) -> Result<()> {
        if self.directions.contains_key(&0) {
            return Err(Error::InvalidArgument {
                name: "layer 0".into(),
                msg: "llama.cpp control vectors cannot steer block 0 (direction.0 is rejected); drop it with `only`".into(),
            });
        }
        let q: Vec<(String, QTensor)> = self
            .directions
            .iter()
            .map(|(l, t)| {
                Ok((
                    format!("direction.{l}"),
                    QTensor::quantize(t, GgmlDType::F32)?,
                ))
            })
            .collect::<Result<_>>()?;
        let hint = gguf_file::Value::String(model_hint.to_string());
        let count = gguf_file::Value::U32(self.directions.len() as u32);
        let meta = [
            ("controlvector.model_hint", &hint),
            ("controlvector.layer_count", &count),
        ];
        let tensors: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
        crate::util::atomic_write(path.as_ref(), |tmp| {
            let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            gguf_file::write(&mut f, &meta, &tensors).map_err(Error::from)
        })
    }

    /// Reads a llama.cpp control-vector GGUF.
    pub fn from_control_vector_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (content, mut reader) = crate::weights::read_gguf(path)?;
        let mut d = BTreeMap::new();
        for name in content.tensor_infos.keys() {
            let l = parse_direction(name).ok_or_else(|| Error::Checkpoint {
                path: path.to_path_buf(),
                msg: format!(
                    "unexpected tensor `{name}` in a control vector (expected direction.N)"
                ),
            })?;
            let t = content
                .tensor(&mut reader, name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| Error::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!("tensor `{name}`: {}", crate::error::candle_msg(&e)),
                })?;
            d.insert(l, t);
        }
        let mut v = Self::new(d, "control_vector")?;
        if let Some(gguf_file::Value::String(h)) = content.metadata.get("controlvector.model_hint")
        {
            v.meta.insert("model_hint".into(), h.clone());
        }
        Ok(v)
    }

    fn zip_with(
        &self,
        other: &Self,
        f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Self> {
        if self.d_model != other.d_model {
            return Err(Error::Shape {
                what: "steering vector arithmetic".into(),
                expected: format!("[{}]", self.d_model),
                got: format!("[{}]", other.d_model),
            });
        }
        let zero = Tensor::zeros(self.d_model, DType::F32, &Device::Cpu)?;
        let mut d = BTreeMap::new();
        for l in self.directions.keys().chain(other.directions.keys()) {
            let a = self.directions.get(l).unwrap_or(&zero);
            let b = other.directions.get(l).unwrap_or(&zero);
            d.insert(*l, f(a, b)?);
        }
        Ok(Self {
            directions: d,
            d_model: self.d_model,
            method: format!("({}) op ({})", self.method, other.method),
            meta: BTreeMap::new(),
        })
    }

    fn map(&self, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> Self {
        // Elementwise maps of f32 CPU tensors of one shape cannot fail; keep the input on the
        // impossible error rather than panic.
        let d = self
            .directions
            .iter()
            .map(|(l, t)| (*l, f(t).unwrap_or_else(|_| t.clone())))
            .collect();
        Self {
            directions: d,
            ..self.clone()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// From a dataset file, and to llama.cpp

/// How [`train_vector`] builds the direction of each layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VectorMethod {
    /// Difference of class means (CAA): [`SteeringVector::mean_diff`].
    #[default]
    MeanDiff,
    /// Top principal component of the paired differences: [`SteeringVector::pca_diff`] (needs
    /// pairs of equal counts).
    PcaDiff,
    /// Top principal component of pair-centred activations: [`SteeringVector::pca_center`]
    /// (needs pairs of equal counts).
    PcaCenter,
}

/// Options of [`train_vector`].
#[derive(Debug, Clone)]
pub struct VectorOptions {
    /// How each layer's direction is built (difference of means).
    pub method: VectorMethod,
    /// How the records become prompts.
    pub prompts: PromptOptions,
    /// Prompts per forward pass (8).
    pub batch_size: usize,
    /// Progress on stderr (true).
    pub progress: bool,
    /// The model's name, kept in the vector's provenance.
    pub model: String,
}

impl Default for VectorOptions {
    fn default() -> Self {
        Self {
            method: VectorMethod::MeanDiff,
            prompts: PromptOptions::default(),
            batch_size: 8,
            progress: true,
            model: String::new(),
        }
    }
}

/// A steering vector built by [`train_vector`], with what it was built from.
#[derive(Debug, Clone)]
pub struct TrainedVector {
    /// The vector (provenance in its `meta`).
    pub vector: SteeringVector,
    /// Prompts on the positive (true) side.
    pub n_positive: usize,
    /// Prompts on the negative (false) side.
    pub n_negative: usize,
    /// Which records: `train split` (when the file records a split) or `all records`.
    pub records: &'static str,
}

impl TrainedVector {
    /// One line for a terminal: method, prompts, layers, width and the range of the norms.
    pub fn summary(&self) -> Result<String> {
        let v = &self.vector;
        let (lo, hi) = v
            .norms()?
            .values()
            .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        Ok(format!(
            "{} ({} vs {} prompts; {}), {} layers of width {}, norms {lo:.3}..{hi:.3}",
            v.method,
            self.n_positive,
            self.n_negative,
            self.records,
            v.layers().len(),
            v.d_model()
        ))
    }
}

/// The one call from a contrast dataset to a steering vector (repeng's `ControlVector.train`):
/// one direction per layer from the last token's `hook_resid_post` of each prompt, positives
/// against negatives ([`Prompter::contrast`]: pairs: positive vs negative; A/B questions: CAA
/// prompts with the matching vs the other letter; labeled statements: true vs false), on the
/// training split when the file records one, else on every record. Errors when a side is empty.
///
/// ```no_run
/// use puppetlens::data::Dataset;
/// use puppetlens::steer::{train_vector, VectorOptions};
/// let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
/// let ds = Dataset::load("probes/persona_stage_actor.jsonl", "harmful")?;
/// let trained = train_vector(&model, &tok, &ds, &VectorOptions::default())?;
/// trained.vector.save("persona.safetensors")?;
/// println!("{}", trained.summary()?);
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn train_vector(
    model: &Model,
    tok: &Tokenizer,
    ds: &Dataset,
    opts: &VectorOptions,
) -> Result<TrainedVector> {
    let train;
    let (records, which) = if ds.tags.is_some() {
        [(_, train), _, _] = ds.split_records()?;
        (&train, "train split")
    } else {
        (&ds.records, "all records")
    };
    let n_layers = model.config().n_layers;
    let pr = Prompter::new(tok, &opts.prompts);
    let (pos, neg) = pr.contrast(records)?;
    for (side, v) in [("positive (true)", &pos), ("negative (false)", &neg)] {
        if v.is_empty() {
            return Err(Error::config(
                &ds.path,
                "(whole file)",
                format!("no {side} examples in the {which}: a vector needs both sides"),
            ));
        }
    }
    let eopts = ExtractOptions {
        batch_size: opts.batch_size,
        progress: opts.progress,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    // Pairs sharing their beginning (CAA prompts) run it once; unpaired sides run apart.
    let (p, n) = if pos.len() == neg.len() {
        extract_pairs(model, &pos, &neg, &eopts)?
    } else {
        (extract(model, &pos, &eopts)?, extract(model, &neg, &eopts)?)
    };
    let vector = match opts.method {
        VectorMethod::MeanDiff => SteeringVector::mean_diff(&p, &n, n_layers)?,
        VectorMethod::PcaDiff => SteeringVector::pca_diff(&p, &n, n_layers)?,
        VectorMethod::PcaCenter => SteeringVector::pca_center(&p, &n, n_layers)?,
    }
    .with_meta("model", opts.model.as_str())
    .with_meta("dataset", ds.path.display().to_string())
    .with_meta("records", format!("{} ({which})", ds.records.kind()))
    .with_meta("prompts", pr.note(&ds.records))
    .with_meta("site", "last token, blocks.L.hook_resid_post")
    .with_meta("n_positive", pos.len().to_string())
    .with_meta("n_negative", neg.len().to_string());
    Ok(TrainedVector {
        vector,
        n_positive: pos.len(),
        n_negative: neg.len(),
        records: which,
    })
}

/// Options of [`SteeringVector::export_control_vector`].
#[derive(Debug, Clone)]
pub struct ControlVectorOptions {
    /// The architecture hint stored in the file (`controlvector.model_hint`; `llama`).
    pub model_hint: String,
    /// Only these layers of the vector (default: all).
    pub layers: Option<Vec<usize>>,
    /// How messages name the vector (its file, say; `the vector`).
    pub source: String,
}

impl Default for ControlVectorOptions {
    fn default() -> Self {
        Self {
            model_hint: "llama".into(),
            layers: None,
            source: "the vector".into(),
        }
    }
}

/// What [`SteeringVector::export_control_vector`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlVectorExport {
    /// The layers written (`direction.N`), in order.
    pub layers: Vec<usize>,
    /// Whether a direction at layer 0 was left out (llama.cpp cannot steer block 0).
    pub dropped_layer0: bool,
    /// The architecture hint stored.
    pub model_hint: String,
}

impl ControlVectorExport {
    /// One line for a terminal: the hint, the directions written and the one left out.
    pub fn summary(&self) -> String {
        format!(
            "control vector for `{}`, {} directions (layers {}-{}){}",
            self.model_hint,
            self.layers.len(),
            self.layers.first().copied().unwrap_or(0),
            self.layers.last().copied().unwrap_or(0),
            if self.dropped_layer0 {
                "; left out direction.0 (llama.cpp cannot steer block 0)"
            } else {
                ""
            }
        )
    }
}

impl SteeringVector {
    /// Writes the layers `opts.layers` names as a llama.cpp control vector
    /// ([`to_control_vector_gguf`](Self::to_control_vector_gguf)), less a direction at layer 0,
    /// which llama.cpp cannot steer: it is left out and reported. A vector with only that one is
    /// an error (argument `vector`, naming `opts.source`).
    ///
    /// ```no_run
    /// use puppetlens::steer::ControlVectorOptions;
    /// let v = puppetlens::SteeringVector::load("persona.safetensors")?;
    /// let opts = ControlVectorOptions { layers: Some((8..=16).collect()), ..Default::default() };
    /// println!("{}", v.export_control_vector("persona.gguf", &opts)?.summary());
    /// # Ok::<(), puppetlens::Error>(())
    /// ```
    pub fn export_control_vector(
        &self,
        path: impl AsRef<Path>,
        opts: &ControlVectorOptions,
    ) -> Result<ControlVectorExport> {
        let v = match &opts.layers {
            Some(layers) => self.only(layers)?,
            None => self.clone(),
        };
        let keep: Vec<usize> = v.layers().into_iter().filter(|&l| l != 0).collect();
        if keep.is_empty() {
            return Err(Error::InvalidArgument {
                name: "vector".into(),
                msg: format!(
                    "{} has a direction at layer 0 only, which llama.cpp control vectors cannot steer",
                    opts.source
                ),
            });
        }
        let dropped = v.get(0).is_some();
        let v = if dropped { v.only(&keep)? } else { v };
        v.to_control_vector_gguf(path, &opts.model_hint)?;
        Ok(ControlVectorExport {
            layers: keep,
            dropped_layer0: dropped,
            model_hint: opts.model_hint.clone(),
        })
    }
}

fn parse_direction(name: &str) -> Option<usize> {
    name.strip_prefix("direction.")?.parse().ok()
}

fn norm(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .sqrt()?
        .to_scalar::<f64>()?)
}

/// Cosine similarity of two `[d]` vectors (0 when either is zero).
pub fn cosine(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (na, nb) = (norm(a)?, norm(b)?);
    if na == 0.0 || nb == 0.0 {
        return Ok(0.0);
    }
    let dot = (a.to_dtype(DType::F64)? * b.to_dtype(DType::F64)?)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok(dot / (na * nb))
}

fn layer_pair(pos: &Activations, neg: &Activations, l: usize) -> Result<(Tensor, Tensor)> {
    let p = pos.require(HookPoint::ResidPost(l))?.clone();
    let n = neg.require(HookPoint::ResidPost(l))?.clone();
    for (t, which) in [(&p, "positive"), (&n, "negative")] {
        if t.rank() != 2 || t.dim(0)? == 0 {
            return Err(Error::Shape {
                what: format!("{which} activations at layer {l}"),
                expected: "[n > 0, d_model]".into(),
                got: format!("{:?}", t.dims()),
            });
        }
    }
    if p.dim(1)? != n.dim(1)? {
        return Err(Error::Shape {
            what: format!("activations at layer {l}"),
            expected: format!("[_, {}]", p.dim(1)?),
            got: format!("{:?}", n.dims()),
        });
    }
    Ok((p, n))
}

fn paired(pos: &Activations, neg: &Activations, l: usize) -> Result<(Tensor, Tensor)> {
    let (p, n) = layer_pair(pos, neg, l)?;
    if p.dims() != n.dims() {
        return Err(Error::Shape {
            what: format!("paired activations at layer {l}"),
            expected: format!("{:?}", p.dims()),
            got: format!("{:?}", n.dims()),
        });
    }
    Ok((p, n))
}

/// Top principal direction of `x` (`[m, d]`, centred first when `center`), by power iteration on
/// `x^T x` in f64; signed so that `mean(pos - neg)` projects positively, scaled to `|mean(pos - neg)|`.
fn signed_pc(x: &Tensor, pos: &Tensor, neg: &Tensor, center: bool) -> Result<Tensor> {
    let x = x.to_dtype(DType::F64)?;
    let x = if center {
        x.broadcast_sub(&x.mean_keepdim(0)?)?
    } else {
        x
    }; // [m, d]
    let cov = x.t()?.matmul(&x)?; // [d, d]
    let mean_diff = (pos.mean(0)? - neg.mean(0)?)?.to_dtype(DType::F64)?; // [d]
    let d = cov.dim(0)?;
    // Deterministic start: the mean difference (plus a constant so it is never zero).
    let mut v = (&mean_diff + 1e-3)?;
    v = (&v / norm(&v)?.max(1e-30))?;
    for _ in 0..500 {
        let w = cov.matmul(&v.reshape((d, 1))?)?.reshape(d)?; // [d]
        let nw = norm(&w)?;
        if nw == 0.0 {
            break;
        }
        let w = (w / nw)?;
        let delta = (&w - &v)?.abs()?.max(D::Minus1)?.to_scalar::<f64>()?;
        v = w;
        if delta < 1e-10 {
            break;
        }
    }
    let proj = (&v * &mean_diff)?.sum_all()?.to_scalar::<f64>()?;
    let v = if proj < 0.0 { v.neg()? } else { v };
    Ok((v * norm(&mean_diff)?)?.to_dtype(DType::F32)?)
}

/// `a + b` layer by layer (a layer missing on one side counts as zero); an error if widths differ.
impl Add for &SteeringVector {
    type Output = Result<SteeringVector>;
    fn add(self, rhs: &SteeringVector) -> Result<SteeringVector> {
        self.zip_with(rhs, |a, b| a + b)
    }
}

/// `a - b` layer by layer (a layer missing on one side counts as zero); an error if widths differ.
impl Sub for &SteeringVector {
    type Output = Result<SteeringVector>;
    fn sub(self, rhs: &SteeringVector) -> Result<SteeringVector> {
        self.zip_with(rhs, |a, b| a - b)
    }
}

impl Mul<f32> for &SteeringVector {
    type Output = SteeringVector;
    fn mul(self, k: f32) -> SteeringVector {
        self.map(|t| t * k as f64)
    }
}

impl Mul<&SteeringVector> for f32 {
    type Output = SteeringVector;
    fn mul(self, v: &SteeringVector) -> SteeringVector {
        v * self
    }
}

impl Mul<SteeringVector> for f32 {
    type Output = SteeringVector;
    fn mul(self, v: SteeringVector) -> SteeringVector {
        &v * self
    }
}

impl Neg for &SteeringVector {
    type Output = SteeringVector;
    fn neg(self) -> SteeringVector {
        self.map(|t| t.neg())
    }
}
