//! Crosscoder training throughput, puppetlens beside the same loop in PyTorch, in one run:
//! `cargo bench --bench dictionary` (needs a Python with torch and safetensors: `PUPPETLENS_PEER_PYTHON`,
//! default the venv of `scripts/peer_bench.sh`; without one only puppetlens's row is printed).
//!
//! The data: 16,384 tokens of synthetic paired activations at gemma-3-270m's width (640), two
//! "models" sharing most of 800 sparse planted features, about 20 active per token. The
//! crosscoder: 512 latents, BatchTopK k = 32, batches of 256, AuxK, AdamW with warm-up and decay,
//! the defaults of `DictOptions` (what `examples/crosscoder.rs` trains). PyTorch runs
//! `scripts/crosscoder_bench.py` (the same algorithm written for torch) with as many threads as
//! candle uses. Rows: tokens per second of training, and the loss reached.
//! `PUPPETLENS_BENCH_QUICK=1` trains 100 steps instead of 400.

use std::process::Command;

#[path = "util/mod.rs"]
mod util;

use candle_core::{Device, Tensor};
use puppetlens::data::SplitMix64;
use puppetlens::dict::{self, DictOptions};
use util::repo_root;

const N: usize = 16_384;
const D: usize = 640;
const FEATURES: usize = 800;

/// Paired activations `[N, 2, D]`: each planted feature has a direction per model (the second a
/// small rotation of the first; 5% of the features exist in model 1 only), active on a token with
/// probability 20 / FEATURES with a magnitude uniform in [0.5, 1.5].
fn synthetic() -> Tensor {
    let mut rng = SplitMix64::new(7);
    let mut uniform = || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
    let gauss = |u: &mut dyn FnMut() -> f32| {
        let (a, b) = (u().max(1e-12), u());
        (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
    };
    let mut dirs = vec![0f32; FEATURES * 2 * D];
    for f in 0..FEATURES {
        let a: Vec<f32> = (0..D).map(|_| gauss(&mut uniform)).collect();
        let g: Vec<f32> = (0..D).map(|_| gauss(&mut uniform)).collect();
        let na = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        let b: Vec<f32> = a
            .iter()
            .zip(&g)
            .map(|(x, y)| x / na + 0.2 * y / na)
            .collect();
        let nb = b.iter().map(|v| v * v).sum::<f32>().sqrt();
        let tuned_only = f % 20 == 0;
        for j in 0..D {
            dirs[(f * 2) * D + j] = if tuned_only { 0.0 } else { a[j] / na };
            dirs[(f * 2 + 1) * D + j] = b[j] / nb;
        }
    }
    let p = 20.0 / FEATURES as f32;
    let mut x = vec![0f32; N * 2 * D];
    for t in 0..N {
        for f in 0..FEATURES {
            if uniform() < p {
                let c = 0.5 + uniform();
                for m in 0..2 {
                    for j in 0..D {
                        x[(t * 2 + m) * D + j] += c * dirs[(f * 2 + m) * D + j];
                    }
                }
            }
        }
    }
    Tensor::from_vec(x, (N, 2, D), &Device::Cpu).expect("synthetic activations")
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    let steps = if quick { 100 } else { 400 };
    let threads = candle_core::utils::get_num_threads();
    let acts = synthetic();
    let opts = DictOptions {
        n_latents: 512,
        k: 32,
        steps,
        batch_size: 256,
        progress: false,
        ..DictOptions::default()
    };
    println!("crosscoder training: {N} tokens x 2 models x {D}, 512 latents, k 32, batch 256, {steps} steps, {threads} threads");
    // The CPU's sparse step (the default), then the same loop through candle's autograd.
    let mut ours = f64::NAN;
    for (name, autograd) in [("sparse step", false), ("autograd   ", true)] {
        let opts = DictOptions {
            autograd,
            ..opts.clone()
        };
        let (cc, log) = dict::train(&acts, &opts)?;
        let m = dict::evaluate(&cc, &acts, 4096)?;
        if !autograd {
            ours = log.tokens_per_s;
        }
        println!(
            "  puppetlens {name}  {:>8.0} tokens/s ({:.1} s)   loss {:.3} -> {:.3}   FVU {:.3} / {:.3}",
            log.tokens_per_s,
            log.seconds,
            log.steps[0].loss,
            log.steps.last().map_or(f64::NAN, |s| s.loss),
            m.fvu[0],
            m.fvu[1]
        );
    }

    let py = match std::env::var_os("PUPPETLENS_PEER_PYTHON") {
        Some(p) => p.into(),
        None => puppetlens::fetch::cache_dir().join("bench-venv/bin/python"),
    };
    let ok = Command::new(&py)
        .args(["-c", "import torch, safetensors"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!(
            "  PyTorch     skipped: {} cannot import torch and safetensors",
            std::path::Path::new(&py).display()
        );
        return Ok(());
    }
    let scratch =
        std::env::temp_dir().join(format!("puppetlens-bench-dict-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let acts_path = scratch.join("acts.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("acts".to_string(), acts)]),
        &acts_path,
    )?;
    let out = scratch.join("torch.json");
    let status = Command::new(&py)
        .arg(repo_root().join("scripts/crosscoder_bench.py"))
        .arg(&acts_path)
        .arg(&out)
        .args([
            "512".to_string(),
            "32".to_string(),
            steps.to_string(),
            "256".to_string(),
            threads.to_string(),
        ])
        .status()?;
    anyhow::ensure!(status.success(), "crosscoder_bench.py failed ({status})");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let theirs = t["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "  PyTorch {}  {:>8.0} tokens/s ({:.1} s)   loss {:.3} -> {:.3}   FVU {:.3} (both models, BatchTopK over the whole set)",
        t["torch"].as_str().unwrap_or("?"),
        theirs,
        t["seconds"].as_f64().unwrap_or(f64::NAN),
        t["first_loss"].as_f64().unwrap_or(f64::NAN),
        t["final_loss"].as_f64().unwrap_or(f64::NAN),
        t["fvu_batchtopk"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  ratio (puppetlens / PyTorch tokens per second): {:.2}x",
        ours / theirs
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
