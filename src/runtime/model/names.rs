//! The names of a block's linear layers: one table, read by loading (Hugging Face names and
//! llama.cpp's GGUF names), LoRA targets and export.

use super::Config;

/// One of a block's seven linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// A block linear's names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinearName {
    /// Which linear.
    pub(crate) proj: Proj,
    /// Its Hugging Face module name under `model.layers.{l}` (`self_attn.q_proj`).
    pub(crate) hf: &'static str,
    /// llama.cpp's name under `blk.{l}` (`attn_q`).
    pub(crate) gguf: &'static str,
}

/// Every linear of a block, in [`Proj`]'s order (attention's q, k, v, o, then the MLP's gate,
/// up, down): the one place their names are spelled.
pub(crate) const LINEARS: [LinearName; 7] = [
    LinearName {
        proj: Proj::Q,
        hf: "self_attn.q_proj",
        gguf: "attn_q",
    },
    LinearName {
        proj: Proj::K,
        hf: "self_attn.k_proj",
        gguf: "attn_k",
    },
    LinearName {
        proj: Proj::V,
        hf: "self_attn.v_proj",
        gguf: "attn_v",
    },
    LinearName {
        proj: Proj::O,
        hf: "self_attn.o_proj",
        gguf: "attn_output",
    },
    LinearName {
        proj: Proj::Gate,
        hf: "mlp.gate_proj",
        gguf: "ffn_gate",
    },
    LinearName {
        proj: Proj::Up,
        hf: "mlp.up_proj",
        gguf: "ffn_up",
    },
    LinearName {
        proj: Proj::Down,
        hf: "mlp.down_proj",
        gguf: "ffn_down",
    },
];

impl Proj {
    /// Its Hugging Face module name (`self_attn.q_proj`).
    pub(crate) fn hf(self) -> &'static str {
        LINEARS[self as usize].hf
    }

    /// The linear a Hugging Face module name (`self_attn.q_proj`) names.
    pub(crate) fn from_hf(module: &str) -> Option<Proj> {
        LINEARS.iter().find(|n| n.hf == module).map(|n| n.proj)
    }

    /// The linear whose weight a Hugging Face tensor name (`model.layers.3.self_attn.q_proj.weight`)
    /// names.
    pub(crate) fn of_weight(tensor: &str) -> Option<Proj> {
        let stem = tensor.strip_suffix(".weight")?;
        LINEARS
            .iter()
            .find(|n| stem.strip_suffix(n.hf).is_some_and(|p| p.ends_with('.')))
            .map(|n| n.proj)
    }

    /// `((out, in), has a bias)` in a model of `cfg`.
    pub(crate) fn shape(self, cfg: &Config) -> ((usize, usize), bool) {
        let (h, kvh, hd, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model);
        match self {
            Proj::Q => ((h * hd, d), cfg.qkv_bias),
            Proj::K | Proj::V => ((kvh * hd, d), cfg.qkv_bias),
            Proj::O => ((d, h * hd), false),
            Proj::Gate | Proj::Up => ((cfg.d_mlp, d), false),
            Proj::Down => ((d, cfg.d_mlp), false),
        }
    }

    /// The number of heads whose rows a rotary permutation reorders (queries and keys), if any.
    pub(crate) fn rotary_heads(self, cfg: &Config) -> Option<usize> {
        match self {
            Proj::Q => Some(cfg.n_heads),
            Proj::K => Some(cfg.n_kv_heads),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_proj_order() {
        for (i, n) in LINEARS.iter().enumerate() {
            assert_eq!(n.proj as usize, i);
            assert_eq!(n.proj.hf(), n.hf);
            assert_eq!(Proj::from_hf(n.hf), Some(n.proj));
        }
    }

    #[test]
    fn weight_names_resolve() {
        assert_eq!(
            Proj::of_weight("model.layers.3.self_attn.q_proj.weight"),
            Some(Proj::Q)
        );
        assert_eq!(
            Proj::of_weight("model.layers.0.mlp.down_proj.weight"),
            Some(Proj::Down)
        );
        assert_eq!(
            Proj::of_weight("model.layers.0.self_attn.q_proj.bias"),
            None
        );
        assert_eq!(
            Proj::of_weight("model.layers.0.self_attn.q_norm.weight"),
            None
        );
    }
}
