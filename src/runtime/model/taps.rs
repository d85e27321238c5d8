//! Where the forward's hooks fire: `Taps::fire` is the one call from the forward into
//! `Hooks::fire`, and it ends a hooks-only forward (with `Halt::Done`, through `?`) right
//! after the last point the call needs.

use candle_core::{DType, Device, Tensor};

use crate::hook::{HookCtx, HookPoint, Hooks, BLOCK_HOOKS};
use crate::{Error, Result};

/// Why a forward step did not return its value.
#[derive(Debug)]
pub(super) enum Halt {
    /// The last hook point a hooks-only forward needs has fired: the forward is done.
    Done,
    /// An error, returned from the forward as it is.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Failed(e)
    }
}

impl From<candle_core::Error> for Halt {
    fn from(e: candle_core::Error) -> Self {
        Halt::Failed(Error::from(e))
    }
}

/// A forward step's value, or why the forward stops here.
pub(super) type Flow<T> = std::result::Result<T, Halt>;

/// The hooks of one forward call, with what they are given when they fire.
pub(super) struct Taps<'a, 'h> {
    hooks: &'a mut Hooks<'h>,
    mask: Option<Tensor>, // [b, s] padding mask, 1.0 on real tokens; None when there are no hooks
    pads: &'a [usize],
    offset: usize,
    inner: Vec<u32>, // per block: bit i set when some hook wants the block's i-th point
    stop: Option<HookPoint>,
}

impl<'a, 'h> Taps<'a, 'h> {
    /// The taps of a call over rows with left padding `pads` (`s` columns after `offset` earlier
    /// ones) in a model of `n_layers` blocks; with `stop`, the forward ends after that point fires.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        hooks: &'a mut Hooks<'h>,
        pads: &'a [usize],
        offset: usize,
        s: usize,
        stop: Option<HookPoint>,
        n_layers: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let b = pads.len();
        // Padding mask for hooks, [b, s], built only when some hook may fire.
        let mask = if hooks.is_empty() {
            None
        } else {
            let mut m = vec![0f32; b * s];
            for (i, row) in m.chunks_mut(s).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    if offset + j >= pads[i] {
                        *v = 1.0;
                    }
                }
            }
            Some(Tensor::from_vec(m, (b, s), device)?.to_dtype(dtype)?) // [b, s]
        };
        // Which points inside each block some hook wants (bit = the point's slot in its block):
        // nothing inside attention or the MLP is computed or fired for the others.
        let inner: Vec<u32> = (0..n_layers)
            .map(|l| match mask {
                None => 0,
                Some(_) => (0..BLOCK_HOOKS.len())
                    .filter(|&i| HookPoint::block_point(l, i).is_some_and(|p| hooks.wants(p)))
                    .fold(0u32, |bits, i| bits | 1 << i),
            })
            .collect();
        Ok(Taps {
            hooks,
            mask,
            pads,
            offset,
            inner,
            stop,
        })
    }

    /// Whether some hook fires at `p`.
    pub(super) fn wants(&self, p: HookPoint) -> bool {
        if self.mask.is_none() {
            return false;
        }
        match p.block_slot() {
            Some((l, i)) => self.inner.get(l).is_some_and(|bits| bits & (1 << i) != 0),
            None => self.hooks.wants(p),
        }
    }

    /// Fires the hooks at `p` on `x` (returning `x` untouched when none wants it), then stops the
    /// forward when `p` is the last point it needs. The one place the forward fires hooks.
    pub(super) fn fire(&mut self, p: HookPoint, x: Tensor) -> Flow<Tensor> {
        if !self.wants(p) {
            return Ok(x);
        }
        let Some(mask) = &self.mask else {
            return Ok(x);
        };
        let ctx = HookCtx {
            point: p,
            mask,
            pads: self.pads,
            offset: self.offset,
        };
        let y = self.hooks.fire(x, &ctx)?;
        if self.stop == Some(p) {
            return Err(Halt::Done);
        }
        Ok(y)
    }

    /// `Taps::fire` for queries and keys `[b, s, heads, hd]`: hooks see Hugging Face's
    /// split-halves rotary layout; an interleaved (GGUF Llama) model's values are converted both ways.
    pub(super) fn fire_rotary(
        &mut self,
        p: HookPoint,
        x: Tensor,
        interleaved: bool,
    ) -> Flow<Tensor> {
        if !self.wants(p) {
            return Ok(x);
        }
        if !interleaved {
            return self.fire(p, x);
        }
        let (b, s, n, hd) = x.dims4()?;
        let halves = x
            .reshape((b, s, n, hd / 2, 2))?
            .transpose(3, 4)?
            .reshape((b, s, n, hd))?; // [b, s, heads, hd], split halves
        let id = halves.id();
        let y = self.fire(p, halves)?; // [b, s, heads, hd]
        if y.id() == id {
            return Ok(x);
        }
        Ok(y.reshape((b, s, n, 2, hd / 2))?
            .transpose(3, 4)?
            .reshape((b, s, n, hd))?) // [b, s, heads, hd], interleaved
    }
}
