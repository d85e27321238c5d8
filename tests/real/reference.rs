//! Logits and greedy continuations on the real checkpoints against an independent implementation
//! of the same weights: candle-transformers' `quantized_llama` (SmolLM2, GGUF) and `gemma3`
//! (gemma-3-270m exported by puppetlens to a safetensors directory).
//!
//! candle-transformers' `quantized_gemma3` is not used as the Gemma reference: its MLP applies SiLU
//! where Gemma uses tanh-GELU, so it does not compute Gemma 3.

use crate::common;

use crate::common::{max_abs, max_abs_diff, PROMPTS};
use candle_core::{DType, Device, IndexOp, Tensor};
use puppetlens::{Batch, GenerateOptions, Hooks};

/// f32 tolerance on logits of magnitude ~20-30: equivalent ops in another order. Measured worst
/// max abs diff: 3.2e-5 (SmolLM2), 7.6e-5 (Gemma 3); the tolerance is ~3x the worst.
const LOGIT_TOL: f32 = 2.5e-4;
const GREEDY_PROMPTS: [&str; 3] = [
    "The capital of France is",
    "The first three prime numbers are",
    "Water boils at",
];
const GREEDY_TOKENS: usize = 16;

fn reference_llama(
    path: &std::path::Path,
    dequantize: bool,
) -> candle_transformers::models::quantized_llama::ModelWeights {
    // candle reads CANDLE_DEQUANTIZE_ALL once per thread, when the first QMatMul is built: build the
    // reference on a fresh thread with the variable set as wanted.
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        if dequantize {
            std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
        } else {
            std::env::remove_var("CANDLE_DEQUANTIZE_ALL");
        }
        let mut f = std::fs::File::open(&path).unwrap();
        let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
            c,
            &mut f,
            &Device::Cpu,
        )
        .unwrap()
    })
    .join()
    .unwrap()
}

/// Greedy decoding with a reference model's `forward(tokens [1, s], offset)`, whose output holds the
/// last position's logits (any leading dims of size 1).
fn greedy_reference(
    mut forward: impl FnMut(&Tensor, usize) -> Tensor,
    ids: &[u32],
    n: usize,
) -> Vec<u32> {
    let input = |t: &[u32]| Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let mut out = Vec::new();
    let mut logits = forward(&input(ids), 0);
    for i in 0..n {
        let next = logits
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        out.push(next);
        logits = forward(&input(&[next]), ids.len() + i);
    }
    out
}

#[test]
fn smollm2_logits_and_greedy_match_candle_quantized_llama() {
    let (model, tok) = common::smollm();
    let path = common::path(common::SMOLLM);
    let reference = reference_llama(&path, true);
    let mut worst = (0f32, 0f32);
    for p in PROMPTS {
        let ids = tok.encode(p).unwrap();
        let ours = model
            .forward_last(&Batch::single(&ids).unwrap(), &mut Hooks::new())
            .unwrap()
            .i(0)
            .unwrap();
        let theirs = reference
            .clone()
            .forward(
                &Tensor::new(ids.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                0,
            )
            .unwrap()
            .i(0)
            .unwrap();
        let d = max_abs_diff(&ours, &theirs);
        let rel = d / max_abs(&theirs);
        println!(
            "smollm2 {p:?}: {} tokens, max abs diff {d:e}, relative {rel:e}",
            ids.len()
        );
        worst = (worst.0.max(d), worst.1.max(rel));
        assert!(d <= LOGIT_TOL, "{p:?}: max abs diff {d}");
    }
    println!("smollm2 worst: abs {:e} rel {:e}", worst.0, worst.1);
    for p in GREEDY_PROMPTS {
        let ids = tok.encode(p).unwrap();
        let ours = model
            .generate(
                &[&ids],
                &GenerateOptions::greedy(GREEDY_TOKENS),
                &mut Hooks::new(),
            )
            .unwrap()
            .remove(0);
        let mut r = reference.clone();
        let theirs = greedy_reference(|x, off| r.forward(x, off).unwrap(), &ids, GREEDY_TOKENS);
        println!("smollm2 greedy {p:?} -> {:?}", tok.decode(&ours).unwrap());
        assert_eq!(ours, theirs, "{p:?}");
    }
}

#[test]
fn gemma3_logits_and_greedy_match_candle_gemma3_on_exported_safetensors() {
    let (model, tok) = common::gemma();
    let dir = std::env::temp_dir().join(format!("puppetlens-gemma-export-{}", std::process::id()));
    model.export_safetensors(&dir).unwrap();
    tok.save_hf_dir(&dir).unwrap();

    // Our own safetensors path gives the same logits as the GGUF path.
    let (st_model, st_tok) = puppetlens::load(&dir).unwrap();
    let cfg = common::candle_gemma3_config(model.config());
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let mut reference = candle_transformers::models::gemma3::Model::new(false, &cfg, vb).unwrap();
    let mut worst = (0f32, 0f32);
    for p in PROMPTS {
        let ids = tok.encode(p).unwrap();
        assert_eq!(st_tok.encode(p).unwrap(), ids, "exported tokenizer");
        let batch = Batch::single(&ids).unwrap();
        let ours = model
            .forward_last(&batch, &mut Hooks::new())
            .unwrap()
            .i(0)
            .unwrap();
        let ours_st = st_model
            .forward_last(&batch, &mut Hooks::new())
            .unwrap()
            .i(0)
            .unwrap();
        let d_st = max_abs_diff(&ours, &ours_st);
        reference.clear_kv_cache();
        let theirs = reference
            .forward(
                &Tensor::new(ids.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                0,
            )
            .unwrap()
            .i((0, 0))
            .unwrap();
        let d = max_abs_diff(&ours, &theirs);
        let rel = d / max_abs(&theirs);
        println!("gemma3 {p:?}: {} tokens, max abs diff {d:e}, relative {rel:e}; gguf vs safetensors path {d_st:e}", ids.len());
        worst = (worst.0.max(d), worst.1.max(rel));
        assert!(d <= LOGIT_TOL, "{p:?}: max abs diff {d}");
        assert!(d_st <= 1e-5, "{p:?}: GGUF vs exported safetensors {d_st}");
    }
    println!("gemma3 worst: abs {:e} rel {:e}", worst.0, worst.1);
    for p in GREEDY_PROMPTS {
        let ids = tok.encode(p).unwrap();
        let ours = model
            .generate(
                &[&ids],
                &GenerateOptions::greedy(GREEDY_TOKENS),
                &mut Hooks::new(),
            )
            .unwrap()
            .remove(0);
        reference.clear_kv_cache();
        let theirs = greedy_reference(
            |x, off| reference.forward(x, off).unwrap(),
            &ids,
            GREEDY_TOKENS,
        );
        println!("gemma3 greedy {p:?} -> {:?}", tok.decode(&ours).unwrap());
        assert_eq!(ours, theirs, "{p:?}");
    }
    drop(st_model);
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------------
// Hook points inside attention and the MLP against PyTorch transformers

/// f32 tolerance, relative to each tensor's largest magnitude, on the activations inside the blocks
/// against PyTorch `transformers` on puppetlens's export of the same weights
/// (`scripts/golden_hooks.py`). Measured worst relative max abs diff over every golden tensor
/// (3 layers x 8 hooks x 2 prompts, run here as one left-padded batch): 6.3e-6 (SmolLM2, GGUF,
/// whose interleaved q/k rows the hooks convert to Hugging Face's layout), 2.7e-6 (Gemma 3); the
/// tolerance is ~8x the worst.
const HOOK_REL_TOL: f32 = 5e-5;

/// The golden activations of `scripts/golden_hooks.py` for `model`, checked against a left-padded
/// batch of the same prompts; returns the worst relative difference and where.
fn compare_hooks_with_pytorch(name: &str, model: &puppetlens::Model) -> (f32, String) {
    use puppetlens::HookPoint;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("hooks_{name}.json"))).unwrap(),
    )
    .unwrap();
    let golden =
        candle_core::safetensors::load(dir.join(format!("hooks_{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(meta["ids"].clone()).unwrap();
    let layers: Vec<usize> = serde_json::from_value(meta["layers"].clone()).unwrap();
    let batch = Batch::new(&ids).unwrap();
    let hooks = [
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_pattern",
        "attn.hook_z",
        "mlp.hook_pre",
        "mlp.hook_pre_linear",
        "mlp.hook_post",
    ];
    let points: Vec<HookPoint> = layers
        .iter()
        .flat_map(|l| {
            hooks
                .iter()
                .map(move |h| format!("blocks.{l}.{h}").parse().unwrap())
        })
        .collect();
    let cache = model.cache(&batch, |p| points.contains(&p)).unwrap();
    let s = batch.seq_len();
    let mut worst = (0f32, String::new());
    for (row, pad) in batch.pads().iter().enumerate() {
        let n = s - pad;
        for p in &points {
            let ours = cache.require(*p).unwrap().i(row).unwrap();
            let ours = if p.pos_axis() == 2 {
                ours.narrow(1, *pad, n).unwrap().narrow(2, *pad, n).unwrap() // [head, n, n]
            } else {
                ours.narrow(0, *pad, n).unwrap() // [n, ..]
            };
            let theirs = &golden[&format!("p{row}.{p}")];
            assert_eq!(ours.dims(), theirs.dims(), "{name} prompt {row} {p}: shape");
            let rel = max_abs_diff(&ours, theirs) / max_abs(theirs).max(1e-6);
            if !(rel <= worst.0) {
                worst = (rel, format!("prompt {row} {p}"));
            }
        }
    }
    worst
}

#[test]
fn hooks_inside_attention_and_mlp_match_pytorch_transformers() {
    for (name, model) in [
        (common::SMOLLM, &common::smollm().0),
        (common::GEMMA, &common::gemma().0),
    ] {
        let (rel, at) = compare_hooks_with_pytorch(name, model);
        println!("{name}: worst relative max abs diff vs PyTorch {rel:.2e} at {at}");
        assert!(rel <= HOOK_REL_TOL, "{name}: {rel:e} at {at}");
    }
}
