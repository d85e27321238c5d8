//! Logits and greedy continuations on the real checkpoints against an independent implementation
//! of the same weights: candle-transformers' `quantized_llama` (SmolLM2, GGUF) and `gemma3`
//! (gemma-3-270m exported by puppetlens to a safetensors directory).
//!
//! candle-transformers' `quantized_gemma3` is not used as the Gemma reference: its MLP applies SiLU
//! where Gemma uses tanh-GELU, so it does not compute Gemma 3.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{max_abs, max_abs_diff, PROMPTS};
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
