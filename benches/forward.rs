//! Prompt-processing throughput on the real checkpoints, side by side with candle-transformers'
//! own models on the same weights, in one run: `cargo bench --bench forward`.
//!
//! Rows: puppetlens with no hooks, with every `hook_resid_post` cached, with every
//! `attn.hook_pattern`, every `attn.hook_z` and every hook point cached, with one
//! add-intervention, and cache-only (no logits); candle-transformers' `quantized_llama` / `gemma3` with weights
//! dequantized to f32 (the same arithmetic as puppetlens's default), and with candle's quantized
//! kernels. Achieved GFLOP/s are set against this machine's measured f32 matmul rate.
//! Set `PUPPETLENS_BENCH_QUICK=1` for a short run.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "util/mod.rs"]
mod util;

use candle_core::{DType, Device, Tensor};
use puppetlens::{AddVector, Batch, HookPoint, Hooks, LoadOptions, Model};
use util::{flops, matmul_rate, time};

const SEQ: usize = 128;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    let reps = if quick { 2 } else { 5 };
    let rate = matmul_rate();
    println!(
        "machine f32 matmul rate: {rate:.0} GFLOP/s ({} threads)\n",
        candle_core::utils::get_num_threads()
    );
    println!("| model | implementation | tokens/s | ratio vs candle-transformers f32 | GFLOP/s | % of matmul rate |");
    println!("|---|---|---:|---:|---:|---:|");
    for name in ["smollm2-135m-instruct", "gemma-3-270m"] {
        let path = puppetlens::fetch::fetch(name)?;
        let (model, tok) = puppetlens::load(&path)?;
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        let mut ids = tok.encode(&text)?;
        ids.truncate(SEQ);
        let batch = Batch::single(&ids)?;
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let fl = flops(&model, SEQ);
        let mut rows: Vec<(String, f64)> = Vec::new();

        // candle-transformers, dequantized to f32 (the same arithmetic as ours).
        let theirs_f32 = if name.starts_with("smollm2") {
            let p = path.clone();
            let r = std::thread::spawn(move || {
                std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
                let mut f = std::fs::File::open(&p).unwrap();
                let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
                let m = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
                    c,
                    &mut f,
                    &Device::Cpu,
                )
                .unwrap();
                let inp = Tensor::new(&[1u32], &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let _ = m.clone().forward(&inp, 0);
                m
            })
            .join()
            .map_err(|_| anyhow::anyhow!("reference thread panicked"))?;
            time(reps, || {
                r.clone().forward(&input, 0).unwrap();
            })
        } else {
            let dir = std::env::temp_dir().join(format!("puppetlens-bench-{}", std::process::id()));
            model.export_safetensors(&dir)?;
            let cfg = common::candle_gemma3_config(model.config());
            let vb = unsafe {
                candle_nn::VarBuilder::from_mmaped_safetensors(
                    &[dir.join("model.safetensors")],
                    DType::F32,
                    &Device::Cpu,
                )?
            };
            let mut r = candle_transformers::models::gemma3::Model::new(false, &cfg, vb)?;
            let s = time(reps, || {
                r.clear_kv_cache();
                r.forward(&input, 0).unwrap();
            });
            drop(r);
            std::fs::remove_dir_all(&dir).ok();
            s
        };
        rows.push(("candle-transformers, f32 weights".into(), theirs_f32));

        // candle-transformers with candle's quantized kernels.
        let theirs_q = {
            let mut f = std::fs::File::open(&path)?;
            let c = candle_core::quantized::gguf_file::Content::read(&mut f)?;
            if name.starts_with("smollm2") {
                let r = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
                    c,
                    &mut f,
                    &Device::Cpu,
                )?;
                time(reps, || {
                    r.clone().forward(&input, 0).unwrap();
                })
            } else {
                let r = candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(
                    c,
                    &mut f,
                    &Device::Cpu,
                )?;
                time(reps, || {
                    r.clone().forward(&input, 0).unwrap();
                })
            }
        };
        rows.push(("candle-transformers, quantized kernels".into(), theirs_q));

        rows.push((
            "puppetlens, no hooks".into(),
            time(reps, || {
                model.forward_last(&batch, &mut Hooks::new()).unwrap();
            }),
        ));
        rows.push((
            "puppetlens, all hook_resid_post cached".into(),
            time(reps, || {
                let mut cache = puppetlens::ActivationCache::new();
                let mut hooks = Hooks::new();
                hooks.add_where(|p| matches!(p, HookPoint::ResidPost(_)), &mut cache);
                model.forward_last(&batch, &mut hooks).unwrap();
            }),
        ));
        rows.push((
            "puppetlens, every attn.hook_pattern cached".into(),
            time(reps, || {
                let mut cache = puppetlens::ActivationCache::new();
                let mut hooks = Hooks::new();
                hooks.add_where(|p| matches!(p, HookPoint::AttnPattern(_)), &mut cache);
                model.forward_last(&batch, &mut hooks).unwrap();
            }),
        ));
        rows.push((
            "puppetlens, every attn.hook_z cached".into(),
            time(reps, || {
                let mut cache = puppetlens::ActivationCache::new();
                let mut hooks = Hooks::new();
                hooks.add_where(|p| matches!(p, HookPoint::AttnZ(_)), &mut cache);
                model.forward_last(&batch, &mut hooks).unwrap();
            }),
        ));
        rows.push((
            "puppetlens, every hook point cached".into(),
            time(reps, || {
                let mut cache = puppetlens::ActivationCache::new();
                let mut hooks = Hooks::new();
                hooks.add_where(|_| true, &mut cache);
                model.forward_last(&batch, &mut hooks).unwrap();
            }),
        ));
        let v = Tensor::ones(model.config().d_model, DType::F32, &Device::Cpu)?;
        let mid = model.config().n_layers / 2;
        rows.push((
            "puppetlens, one add-intervention".into(),
            time(reps, || {
                let mut hooks = Hooks::new();
                hooks.add(HookPoint::ResidPost(mid), AddVector::new(v.clone(), 1.0));
                model.forward_last(&batch, &mut hooks).unwrap();
            }),
        ));
        rows.push((
            "puppetlens, cache all resid_post, no logits".into(),
            time(reps, || {
                model
                    .cache(&batch, |p| matches!(p, HookPoint::ResidPost(_)))
                    .unwrap();
            }),
        ));
        let qmodel = Model::load(
            &path,
            &LoadOptions {
                keep_quantized: true,
                ..LoadOptions::default()
            },
        )?;
        rows.push((
            "puppetlens, kept quantized".into(),
            time(reps, || {
                qmodel.forward_last(&batch, &mut Hooks::new()).unwrap();
            }),
        ));
        for (label, secs) in rows {
            let gflops = fl / secs / 1e9;
            println!(
                "| {name} | {label} | {:.0} | {:.2}x | {gflops:.1} | {:.0}% |",
                SEQ as f64 / secs,
                theirs_f32 / secs,
                100.0 * gflops / rate
            );
        }
    }
    println!("\n{SEQ}-token prompt, batch 1, best of {reps} runs after a warm-up; last-position logits only.");
    Ok(())
}
