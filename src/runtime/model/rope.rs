//! Rotary position embeddings: the model's inverse frequencies (with Llama 3 and linear
//! scaling) and the per-call cos/sin tables at each token's position.

use candle_core::{DType, Device, Tensor};

use super::RopeScaling;
use crate::Result;

/// Rotary tables for one forward: `cos`, `sin` are `[batch, pos, head_dim / 2]`.
pub(super) struct Rope {
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
}

/// The rotary tables of one call, one per distinct table of the model (`inv_freqs`, each
/// `[head_dim / 2]` f32): row `i`'s column `j` sits at position `offset + j - pads[i]` (padding at 0).
pub(super) fn tables(
    inv_freqs: &[Tensor],
    pads: &[usize],
    offset: usize,
    s: usize,
    device: &Device,
    dtype: DType,
) -> Result<Vec<Rope>> {
    let b = pads.len();
    let mut pos = vec![0f32; b * s];
    for (i, row) in pos.chunks_mut(s).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (offset + j).saturating_sub(pads[i]) as f32;
        }
    }
    let pos = Tensor::from_vec(pos, (b, s, 1), device)?; // [b, s, 1]
    inv_freqs
        .iter()
        .map(|f| {
            let freqs = pos.broadcast_mul(&f.reshape((1, 1, ()))?)?; // [b, s, head_dim/2]
            Ok(Rope {
                cos: freqs.cos()?.to_dtype(dtype)?,
                sin: freqs.sin()?.to_dtype(dtype)?,
            })
        })
        .collect()
}

/// RoPE inverse frequencies, `head_dim / 2` values.
pub(super) fn inv_freq(head_dim: usize, theta: f32, scaling: RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match scaling {
        RopeScaling::None => base,
        RopeScaling::Linear(f) => base.into_iter().map(|x| x / f).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let old = original_max_position as f32;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
