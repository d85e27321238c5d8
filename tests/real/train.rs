//! LoRA training on the real gemma-3-270m checkpoint: a few steps on a tiny slice lower the loss
//! (SFT) and raise the preference margin (DPO); adapters round-trip through PEFT files and merge
//! into a full checkpoint that computes the same logits; bad input gets typed errors.

use crate::common;

use std::path::Path;

use puppetlens::data::{self, ab_text_prompt, PromptFormat};
use puppetlens::lora::{Adapter, LoraConfig};
use puppetlens::train::{dpo, pair_logps, sft, sft_loss, DpoPair, SftExample, TrainOptions};
use puppetlens::{Batch, ChatMessage, Hooks, LoadOptions, Model, Tokenizer};

fn gemma_chat() -> (&'static Model, Tokenizer) {
    let (m, t) = common::gemma();
    let mut t = t.clone();
    t.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    (m, t)
}

/// Four short assistant transcripts written for this test.
fn transcripts(tok: &Tokenizer) -> Vec<SftExample> {
    [
        (
            "What is the boiling point of water?",
            "Water boils at 100 degrees Celsius at sea level.",
        ),
        ("Name a primary colour.", "Red is a primary colour."),
        (
            "How many days are in a week?",
            "There are seven days in a week.",
        ),
        ("What do bees make?", "Bees make honey and beeswax."),
    ]
    .iter()
    .map(|(q, a)| {
        let prompt = tok.encode_chat(&[ChatMessage::user(*q)], true).unwrap();
        let ids = tok
            .encode_chat(&[ChatMessage::user(*q), ChatMessage::assistant(*a)], false)
            .unwrap();
        assert!(ids.starts_with(&prompt));
        SftExample {
            prompt_len: prompt.len(),
            ids,
        }
    })
    .collect()
}

fn small_lora() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        layers: None,
    }
}

/// Eight SFT steps on four transcripts lower their loss, and the first step's loss (computed
/// with the differentiable kernels) equals the base model's loss (fused kernels).
#[test]
fn sft_few_steps_lower_the_loss() {
    let (base, tok) = gemma_chat();
    let data = transcripts(&tok);
    let before = sft_loss(base, &data, 4).unwrap();
    let opts = TrainOptions {
        lora: small_lora(),
        lr: 1e-3,
        epochs: 8,
        batch_size: 4,
        log_every: 1,
        ..Default::default()
    };
    let (adapter, log) = sft(base, &data, &opts).unwrap();
    assert_eq!(log.steps.len(), 8);
    let first = log.steps[0].loss;
    assert!(
        (first - before).abs() < 1e-3,
        "first step loss {first} vs base loss {before}"
    );
    let after = sft_loss(&base.with_adapter(&adapter).unwrap(), &data, 4).unwrap();
    eprintln!(
        "SFT loss {before:.4} -> {after:.4} ({:.0} tokens/s)",
        log.tokens_per_s
    );
    assert!(after < 0.8 * before, "loss {before} -> {after}");
    assert!(log.tokens_per_s > 0.0 && log.steps.iter().all(|s| s.loss.is_finite()));
}

/// The same seed and data give the same adapter.
#[test]
fn training_is_reproducible() {
    let (base, tok) = gemma_chat();
    let data = transcripts(&tok);
    let opts = TrainOptions {
        lora: LoraConfig {
            layers: Some(vec![3, 4]),
            ..small_lora()
        },
        lr: 1e-3,
        max_steps: Some(2),
        batch_size: 2,
        log_every: 0,
        seed: 11,
        ..Default::default()
    };
    let (a, _) = sft(base, &data, &opts).unwrap();
    let (b, _) = sft(base, &data, &opts).unwrap();
    for (k, (aa, ab)) in a.weights() {
        let (ba, bb) = &b.weights()[k];
        assert_eq!(common::max_abs_diff(aa, ba), 0.0, "{k:?} A");
        assert_eq!(common::max_abs_diff(ab, bb), 0.0, "{k:?} B");
    }
}

/// DPO on sycophancy pairs (open questions, answers in words) raises the chosen-minus-rejected
/// margin on the training pairs, and the loss of the last epoch is below the first step's `ln 2`.
#[test]
fn dpo_few_steps_raise_the_margin() {
    let (base, tok) = gemma_chat();
    let items = data::load_ab_json("probes/sycophancy_ab.jsonl").unwrap();
    let fmt = PromptFormat::Chat { system: None };
    let pairs: Vec<DpoPair> = items
        .iter()
        .take(8)
        .map(|it| {
            let p = ab_text_prompt(&tok, it, &fmt).unwrap();
            DpoPair {
                prompt: p.ids.clone(),
                chosen: vec![p.matching_id()],
                rejected: vec![p.not_matching_id()],
            }
        })
        .collect();
    let margin = |m: &Model| -> f64 {
        let lp = pair_logps(m, &pairs, 8).unwrap();
        lp.iter().map(|(c, r)| c - r).sum::<f64>() / lp.len() as f64
    };
    let before = margin(base);
    let opts = TrainOptions {
        lora: small_lora(),
        lr: 1e-3,
        epochs: 3,
        batch_size: 4,
        log_every: 1,
        ..Default::default()
    };
    let (adapter, log) = dpo(base, &pairs, &opts).unwrap();
    assert!((log.steps[0].loss - std::f64::consts::LN_2).abs() < 1e-4);
    let after = margin(&base.with_adapter(&adapter).unwrap());
    eprintln!("DPO margin {before:.3} -> {after:.3}");
    assert!(after > before + 5.0, "margin {before} -> {after}");
    let last: Vec<f64> = log
        .steps
        .iter()
        .filter(|s| s.epoch == 2)
        .map(|s| s.loss)
        .collect();
    let last = last.iter().sum::<f64>() / last.len() as f64;
    assert!(last < std::f64::consts::LN_2, "last epoch loss {last}");
}

fn last_logits(m: &Model, ids: &[u32]) -> candle_core::Tensor {
    m.forward_last(&Batch::single(ids).unwrap(), &mut Hooks::new())
        .unwrap()
}

/// An adapter saved in PEFT's layout loads back exactly; the merged export reloads as a plain
/// safetensors checkpoint with the adapted model's logits.
#[test]
fn adapter_round_trip_and_merge() {
    let (base, tok) = gemma_chat();
    let data = transcripts(&tok);
    let opts = TrainOptions {
        lora: LoraConfig {
            layers: Some(vec![0, 5, 17]),
            ..small_lora()
        },
        lr: 5e-3,
        max_steps: Some(2),
        log_every: 0,
        ..Default::default()
    };
    let (adapter, _) = sft(base, &data, &opts).unwrap();
    let dir = std::env::temp_dir().join(format!("puppetlens-adapter-{}", std::process::id()));
    adapter.save(&dir).unwrap();
    let safetensors = candle_core::safetensors::load(
        dir.join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        safetensors.contains_key("base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight")
    );
    assert_eq!(safetensors.len(), 3 * 3 * 2);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    let back = Adapter::load(&dir, base.device()).unwrap();
    assert_eq!(back.config().rank, 4);
    let ids = &data[0].ids;
    let tuned = base.with_adapter(&adapter).unwrap();
    let want = last_logits(&tuned, ids);
    let got = last_logits(&base.with_adapter(&back).unwrap(), ids);
    assert_eq!(common::max_abs_diff(&want, &got), 0.0);
    // The adapter changed something.
    assert!(common::max_abs_diff(&want, &last_logits(base, ids)) > 1e-3);

    let merged_dir = dir.join("merged");
    tuned.export_safetensors(&merged_dir).unwrap();
    let merged = Model::load(&merged_dir, &LoadOptions::default()).unwrap();
    let d = common::max_abs_diff(&want, &last_logits(&merged, ids));
    eprintln!("merged vs adapter logits: max |diff| {d:.2e}");
    assert!(d < 2.5e-4, "{d}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn err_of<T: std::fmt::Debug>(r: puppetlens::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_training_input_is_a_typed_error() {
    let (base, tok) = gemma_chat();
    let data = transcripts(&tok);
    let opts = TrainOptions {
        lora: small_lora(),
        max_steps: Some(1),
        log_every: 0,
        ..Default::default()
    };
    let bad = vec![SftExample {
        ids: data[0].ids.clone(),
        prompt_len: data[0].ids.len(),
    }];
    let e = err_of(sft(base, &bad, &opts));
    assert!(
        e.contains("SFT example 0") && e.contains("prompt_len"),
        "{e}"
    );
    let e = err_of(sft(base, &[], &opts));
    assert!(e.contains("no examples"), "{e}");
    let oov = vec![SftExample {
        ids: vec![2, 999_999, 5],
        prompt_len: 1,
    }];
    let e = err_of(sft(base, &oov, &opts));
    assert!(e.contains("999999") && e.contains("vocabulary"), "{e}");
    let pair = DpoPair {
        prompt: vec![2, 5],
        chosen: vec![7],
        rejected: vec![7],
    };
    let e = err_of(dpo(base, &[pair], &opts));
    assert!(e.contains("DPO pair 0") && e.contains("identical"), "{e}");
    let e = err_of(sft(
        base,
        &data,
        &TrainOptions {
            lora: LoraConfig {
                targets: vec!["lm_head".into()],
                ..small_lora()
            },
            ..opts.clone()
        },
    ));
    assert!(e.contains("lm_head"), "{e}");
    let e = err_of(sft(
        base,
        &data,
        &TrainOptions {
            lora: LoraConfig {
                layers: Some(vec![18]),
                ..small_lora()
            },
            ..opts.clone()
        },
    ));
    assert!(e.contains("layer 18"), "{e}");
}

#[test]
fn bad_adapter_files_are_typed_errors() {
    let (base, _) = gemma_chat();
    let dir = std::env::temp_dir().join(format!("puppetlens-bad-adapter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = err_of(Adapter::load(&dir, base.device()));
    assert!(e.contains("adapter_config.json"), "{e}");
    // An adapter made for SmolLM2 (width 576) does not fit Gemma (width 640).
    let smol = &common::smollm().0;
    let a = Adapter::init(smol, &small_lora(), 0).unwrap();
    a.save(&dir).unwrap();
    let back = Adapter::load(&dir, base.device()).unwrap();
    let e = err_of(base.with_adapter(&back));
    assert!(e.contains("layer 0") && e.contains("shape"), "{e}");
    std::fs::write(
        dir.join("adapter_config.json"),
        "{\"peft_type\": \"IA3\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": []}",
    )
    .unwrap();
    let e = err_of(Adapter::load(&dir, base.device()));
    assert!(e.contains("peft_type") && e.contains("IA3"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = Path::new("");
}
