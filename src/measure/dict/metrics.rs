//! Reconstruction and sparsity metrics of a dictionary on a set of activations.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::dictionary::Dictionary;
use crate::{Error, Result};

/// What [`evaluate`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of variance unexplained per model: `Σ‖x - x̂‖² / Σ‖x - mean(x)‖²`.
    pub fvu: Vec<f64>,
    /// Mean number of active latents per token (L0).
    pub l0: f64,
    /// Fraction of latents never active on these tokens.
    pub dead_fraction: f64,
    /// Per latent, the fraction of tokens on which it is active, `[n_latents]`.
    pub frequency: Vec<f64>,
    /// Tokens evaluated.
    pub n_tokens: usize,
}

/// Checks `acts` is `[n_tokens, n_models, d]` for `dict`, with tokens.
pub(crate) fn check_acts(dict: &Dictionary, acts: &Tensor) -> Result<usize> {
    let (m, d) = (dict.n_models(), dict.d());
    let dims = acts.dims();
    if dims.len() != 3 || dims[1] != m || dims[2] != d {
        return Err(Error::Shape {
            what: format!("activations for a dictionary of {m} model(s) of width {d}"),
            expected: format!("[n_tokens, {m}, {d}]"),
            got: format!("{dims:?}"),
        });
    }
    if !acts.device().same_device(dict.device()) {
        return Err(Error::DtypeOrDevice {
            what: "activations".into(),
            expected: format!("the dictionary's device, {:?}", dict.device()),
            got: format!("{:?}", acts.device()),
        });
    }
    if dims[0] == 0 {
        return Err(Error::InvalidArgument {
            name: "activations".into(),
            msg: "no tokens".into(),
        });
    }
    Ok(dims[0])
}

/// Activations read batch by batch: a tensor in memory or a paired corpus on disk.
pub(crate) trait ActSource {
    /// Number of tokens.
    fn n_tokens(&self) -> usize;
    /// Mean over the tokens: `[n_models, d]` f32 on `dev`.
    fn mean_on(&self, dev: &Device) -> Result<Tensor>;
    /// Calls `f` on consecutive batches of at most `batch_size` tokens, in order, each
    /// `[len, n_models, d]` f32 on `dev`.
    fn for_each_batch(
        &self,
        batch_size: usize,
        dev: &Device,
        f: &mut dyn FnMut(&Tensor) -> Result<()>,
    ) -> Result<()>;
}

impl ActSource for Tensor {
    fn n_tokens(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    fn mean_on(&self, dev: &Device) -> Result<Tensor> {
        Ok(self.to_dtype(DType::F32)?.mean(0)?.to_device(dev)?) // [m, d]
    }

    fn for_each_batch(
        &self,
        batch_size: usize,
        dev: &Device,
        f: &mut dyn FnMut(&Tensor) -> Result<()>,
    ) -> Result<()> {
        let x = self.to_dtype(DType::F32)?.to_device(dev)?; // [n, m, d]
        let n = self.n_tokens();
        let mut start = 0;
        while start < n {
            let len = batch_size.max(1).min(n - start);
            f(&x.narrow(0, start, len)?)?; // [len, m, d]
            start += len;
        }
        Ok(())
    }
}

/// Encodes and decodes `acts` (`[n_tokens, n_models, d]`, on the dictionary's device) in
/// batches of `batch_size` tokens with the dictionary's inference rule, and measures FVU per
/// model, L0, latent frequencies and the dead fraction. For a paired corpus on disk:
/// [`CorpusStore::evaluate`](super::CorpusStore::evaluate).
pub fn evaluate(dict: &Dictionary, acts: &Tensor, batch_size: usize) -> Result<Metrics> {
    check_acts(dict, acts)?;
    evaluate_source(dict, acts, batch_size)
}

/// [`evaluate`] on activations checked to fit `dict`, batch by batch.
pub(crate) fn evaluate_source(
    dict: &Dictionary,
    acts: &dyn ActSource,
    batch_size: usize,
) -> Result<Metrics> {
    let n = acts.n_tokens();
    if n == 0 {
        return Err(Error::InvalidArgument {
            name: "activations".into(),
            msg: "no tokens".into(),
        });
    }
    let (m, l) = (dict.n_models(), dict.n_latents());
    let mean = acts.mean_on(dict.device())?; // [m, d]
    let mut err = vec![0f64; m];
    let mut var = vec![0f64; m];
    let mut active = vec![0f64; l];
    acts.for_each_batch(batch_size, dict.device(), &mut |xb| {
        let len = xb.dim(0)?; // xb: [len, m, d]
        let f = dict.encode(xb)?.reshape((len, l))?; // [len, l]
        let xhat = dict.decode(&f)?.reshape((len, m, dict.d()))?; // [len, m, d]
        let e = (xb - &xhat)?
            .sqr()?
            .sum(D::Minus1)?
            .sum(0)?
            .to_vec1::<f32>()?; // [m]
        let v = xb
            .broadcast_sub(&mean)?
            .sqr()?
            .sum(D::Minus1)?
            .sum(0)?
            .to_vec1::<f32>()?; // [m]
        for i in 0..m {
            err[i] += e[i] as f64;
            var[i] += v[i] as f64;
        }
        let a = f.gt(0.0)?.to_dtype(DType::F32)?.sum(0)?.to_vec1::<f32>()?; // [l]
        for (acc, v) in active.iter_mut().zip(a) {
            *acc += v as f64;
        }
        Ok(())
    })?;
    let frequency: Vec<f64> = active.iter().map(|a| a / n as f64).collect();
    Ok(Metrics {
        fvu: err
            .iter()
            .zip(&var)
            .map(|(e, v)| e / v.max(1e-30))
            .collect(),
        l0: active.iter().sum::<f64>() / n as f64,
        dead_fraction: active.iter().filter(|&&a| a == 0.0).count() as f64 / l as f64,
        frequency,
        n_tokens: n,
    })
}
