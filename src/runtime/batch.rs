//! Left-padded batches of token ids.
//!
//! Rows are padded on the left so that every row's last token sits in the last column; the model
//! derives attention masks and rotary positions from the padding, so each row's result equals
//! running it alone.
//!
//! ```
//! use puppetlens::Batch;
//! let batch = Batch::new(&[vec![1u32, 2, 3], vec![4u32]])?;
//! assert_eq!(batch.seq_len(), 3);
//! assert_eq!(batch.pads(), &[0, 2]);
//! assert_eq!(batch.row(1), &[4]);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Token ids of several prompts, left-padded to one length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    ids: Vec<u32>, // [batch * seq_len], padding is id 0 (never attended to)
    pads: Vec<usize>,
    seq_len: usize,
}

impl Batch {
    /// Left-pads `prompts` to the longest one. Errors on an empty batch or an empty prompt.
    pub fn new<P: AsRef<[u32]>>(prompts: &[P]) -> Result<Self> {
        if prompts.is_empty() {
            return Err(Error::InvalidArgument {
                name: "prompts".into(),
                msg: "the batch is empty".into(),
            });
        }
        if let Some(index) = prompts.iter().position(|p| p.as_ref().is_empty()) {
            return Err(Error::EmptyPrompt { index });
        }
        let seq_len = prompts.iter().map(|p| p.as_ref().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(prompts.len() * seq_len);
        let mut pads = Vec::with_capacity(prompts.len());
        for p in prompts {
            let p = p.as_ref();
            let pad = seq_len - p.len();
            ids.extend(std::iter::repeat_n(0u32, pad));
            ids.extend_from_slice(p);
            pads.push(pad);
        }
        Ok(Self { ids, pads, seq_len })
    }

    /// A batch of one prompt.
    pub fn single(ids: &[u32]) -> Result<Self> {
        Self::new(&[ids])
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.pads.len()
    }

    /// Always false: a batch has at least one row.
    pub fn is_empty(&self) -> bool {
        self.pads.is_empty()
    }

    /// Columns (the longest prompt's length).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Left-padding length of each row.
    pub fn pads(&self) -> &[usize] {
        &self.pads
    }

    /// Unpadded length of each row.
    pub fn lengths(&self) -> Vec<usize> {
        self.pads.iter().map(|p| self.seq_len - p).collect()
    }

    /// Row `i`'s token ids without padding.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[i * self.seq_len + self.pads[i]..(i + 1) * self.seq_len]
    }

    /// Every row's token ids without padding.
    pub fn rows(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// 1.0 on real tokens and 0.0 on padding, `[batch, seq_len]` in `dtype` on `device` (the
    /// padding mask hooks see, [`HookCtx::mask`](crate::HookCtx::mask)).
    pub fn real_mask(&self, device: &Device, dtype: candle_core::DType) -> Result<Tensor> {
        let s = self.seq_len;
        let mut m = vec![0f32; self.len() * s];
        for (row, &pad) in m.chunks_mut(s).zip(&self.pads) {
            row[pad..].iter_mut().for_each(|v| *v = 1.0);
        }
        Ok(Tensor::from_vec(m, (self.len(), s), device)?.to_dtype(dtype)?)
    }

    /// The padded ids as a `[batch, seq_len]` u32 tensor on `device`.
    pub fn tokens(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.ids,
            (self.len(), self.seq_len),
            device,
        )?)
    }
}
