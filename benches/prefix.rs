//! Prompts that share their beginning, side by side in one run: `cargo bench --bench prefix`
//! (`PUPPETLENS_BENCH_QUICK=1` for a short run).
//!
//! Rows per shipped checkpoint, on the project's sycophancy items in the chat form (every split,
//! as the main job's localisation and probes read them): the CAA prompts' last-token
//! `hook_resid_post` at every layer, the question followed by each of its two answers. Whole
//! extraction runs each prompt from its first token (`extract` on the positives, then on the
//! negatives); `extract_pairs` runs each question once into a KV cache and the two answers as
//! one-token cached steps on it. The largest difference between the two, relative to the
//! largest activation, is printed.

#[path = "util/mod.rs"]
mod util;

use std::time::Instant;

use puppetlens::data::{self, ab_prompt, ab_text_prompt, PromptFormat};
use puppetlens::eval::AbCase;
use puppetlens::extract::{extract, extract_pairs, ExtractOptions, Site};
use util::matmul_rate;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    println!(
        "machine f32 matmul rate: {:.0} GFLOP/s ({} threads)\n",
        matmul_rate(),
        candle_core::utils::get_num_threads()
    );
    println!("| model | extraction | prompts | tokens | seconds | prompts/s | speed-up | max rel. diff |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let root = util::repo_root();
    for name in ["smollm2-135m-instruct", "gemma-3-270m"] {
        let (model, tok) = puppetlens::open(name, &puppetlens::LoadOptions::default())?;
        let s = data::load_with_split(root.join("probes/sycophancy_ab.jsonl"), data::load_ab_json)?;
        let fmt = PromptFormat::Chat { system: None };
        let items: Vec<_> = s.train.iter().chain(&s.val).chain(&s.test).collect();
        let n = if quick { 32 } else { items.len() };
        // SmolLM2 answers with CAA's letters; Gemma 3 270m with the choices' text (the main job's forms).
        let cases: Vec<AbCase> = items[..n]
            .iter()
            .map(|it| {
                let p = if name == "gemma-3-270m" {
                    ab_text_prompt(&tok, it, &fmt)?
                } else {
                    ab_prompt(&tok, it, &fmt)?
                };
                Ok(AbCase::from(p))
            })
            .collect::<puppetlens::Result<_>>()?;
        let (pos, neg) = puppetlens::diff::caa_prompts(&cases);
        let tokens: usize = pos.iter().chain(&neg).map(|p| p.len()).sum();
        let opts = ExtractOptions {
            batch_size: 16,
            progress: false,
            ..ExtractOptions::resid_post(&model, Site::Last)
        };
        let t = Instant::now();
        let (wp, wn) = (extract(&model, &pos, &opts)?, extract(&model, &neg, &opts)?);
        let whole = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (p, n) = extract_pairs(&model, &pos, &neg, &opts)?;
        let shared = t.elapsed().as_secs_f64();
        let mut worst = 0f32;
        for (a, b) in [(&p, &wp), (&n, &wn)] {
            for (pt, x) in b.iter() {
                let d = (a.require(pt)? - x)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let m = x.abs()?.max_all()?.to_scalar::<f32>()?;
                worst = worst.max(d / m);
            }
        }
        let prompts = pos.len() + neg.len();
        for (what, secs, speed) in [
            ("whole prompts (`extract` x2)", whole, String::new()),
            (
                "shared question (`extract_pairs`)",
                shared,
                format!("{:.2}x", whole / shared),
            ),
        ] {
            println!(
                "| {name} | {what} | {prompts} | {tokens} | {secs:.1} | {:.1} | {speed} | {} |",
                prompts as f64 / secs,
                if speed.is_empty() {
                    String::new()
                } else {
                    format!("{worst:.1e}")
                }
            );
        }
    }
    Ok(())
}
