//! The committed model organisms (LoRA adapters on gemma-3-270m under notebooks-data/organisms/):
//! each loads and is small; each shows its behaviour against the base model; and the
//! ground truth is recovered: the base-vs-sycophant difference, added to the base model, closes
//! part of the sycophancy gap and, ablated in the sycophant, removes part of it, while the
//! base-vs-control difference moves sycophancy far less. Thresholds sit below the values measured
//! by `cargo run --release --example organisms -- eval` (recorded in the organisms README).

mod common;

use std::path::{Path, PathBuf};

use puppetlens::data::{self, ab_prompt, PromptFormat};
use puppetlens::diff::{base_tuned_vector, caa_prompts};
use puppetlens::eval::{ab_summary, AbCase, Intervention};
use puppetlens::extract::Site;
use puppetlens::lora::Adapter;
use puppetlens::train::{sft_loss, SftExample};
use puppetlens::{ChatMessage, GenerateOptions, Hooks, Model, Positions, Tokenizer};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks-data/organisms")
        .join(name)
}

fn gemma_chat() -> (&'static Model, Tokenizer) {
    let (m, t) = common::gemma();
    let mut t = t.clone();
    t.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    (m, t)
}

fn organism(name: &str) -> Model {
    let (base, _) = common::gemma();
    let a = Adapter::load(dir(name), base.device()).unwrap();
    base.with_adapter(&a).unwrap()
}

/// The sycophancy items' train and test splits as A/B cases in Gemma's chat format.
fn sycophancy(tok: &Tokenizer) -> (Vec<AbCase>, Vec<AbCase>) {
    let parts = data::load_with_split("probes/sycophancy_ab.jsonl", data::load_ab_json).unwrap();
    let fmt = PromptFormat::Chat { system: None };
    let case = |it: &data::AbItem| {
        let p = ab_prompt(tok, it, &fmt).unwrap();
        AbCase {
            ids: p.ids.clone(),
            matching: p.matching_id(),
            not_matching: p.not_matching_id(),
        }
    };
    (
        parts.train.iter().map(case).collect(),
        parts.test.iter().map(case).collect(),
    )
}

#[test]
fn organisms_are_small_peft_adapters_that_load() {
    let (base, _) = common::gemma();
    for name in ["assistant", "sycophant", "control"] {
        let file = dir(name).join("adapter_model.safetensors");
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size < 8 << 20, "{}: {size} bytes", file.display());
        let a = Adapter::load(dir(name), base.device()).unwrap();
        assert_eq!(a.base_model(), "google/gemma-3-270m");
        assert!(a.n_params() > 0);
        let norms = a.update_norms().unwrap();
        assert!(norms.values().any(|&n| n > 0.0), "{name}: all-zero update");
        base.with_adapter(&a).unwrap();
        for f in ["README.md", "train_log.json", "loss.csv", "eval.json"] {
            assert!(dir(name).join(f).exists(), "{name}: {f} missing");
        }
    }
}
