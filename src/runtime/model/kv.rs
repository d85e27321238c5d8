//! The KV cache of generation: each block's keys and values of the columns already run.

use candle_core::Tensor;

use crate::{Error, Result};

/// Keys and values of earlier tokens, for KV-cached generation.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>, // per layer: [batch, kv_heads, seen, head_dim] x2
    pub(super) pads: Vec<usize>,
    pub(super) seen: usize,
}

impl KvCache {
    /// An empty cache for a batch whose rows have these left-padding lengths.
    pub fn new(n_layers: usize, pads: Vec<usize>) -> Self {
        Self {
            layers: vec![None; n_layers],
            pads,
            seen: 0,
        }
    }

    /// How many columns (padding included) the cache holds.
    pub fn len(&self) -> usize {
        self.seen
    }

    /// True when nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// The cache of the first `cols` columns only (`cols` <= [`KvCache::len`]): what the cache held
    /// after the forward had seen those columns. Blocks not run yet stay empty.
    pub(crate) fn prefix(&self, cols: usize) -> Result<KvCache> {
        if cols > self.seen {
            return Err(Error::InvalidArgument {
                name: "kv cache".into(),
                msg: format!("prefix of {cols} columns asked of a cache of {}", self.seen),
            });
        }
        let layers = self
            .layers
            .iter()
            .map(|slot| match slot {
                Some((k, v)) => Ok(Some((k.narrow(2, 0, cols)?, v.narrow(2, 0, cols)?))), // [b, kvh, cols, hd] x2
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            pads: self.pads.clone(),
            seen: cols,
        })
    }

    /// This block's slot: its keys and values, `[b, kv_heads, seen, head_dim]` x2, once run.
    pub(super) fn layer_mut(&mut self, l: usize) -> &mut Option<(Tensor, Tensor)> {
        &mut self.layers[l]
    }

    /// Records that a forward over `batch_pads`' rows ran `s` more columns (the first call sets
    /// the rows' padding).
    pub(super) fn advance(&mut self, batch_pads: &[usize], s: usize) {
        if self.seen == 0 {
            self.pads = batch_pads.to_vec();
        }
        self.seen += s;
    }
}
