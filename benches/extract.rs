//! Activation extraction of 1000 prompts x all layers to disk: wall time and peak memory.
//! `cargo bench --bench extract` (SmolLM2-135M-Instruct, last token, every `hook_resid_post`).
//!
//! Peak memory is the process's high-water mark (VmHWM in /proc/self/status), read after the model
//! is loaded and again after extraction; the difference is what extraction itself needed.

#[path = "util/mod.rs"]
mod util;

use puppetlens::data;
use puppetlens::extract::{extract_to_dir, ExtractOptions, Site, StoreMeta};
use util::peak_mib;

fn main() -> anyhow::Result<()> {
    let (model, tok) = puppetlens::load(puppetlens::fetch::fetch("smollm2-135m-instruct")?)?;
    let after_load = peak_mib();
    let statements = data::load_labeled_csv("probes/true_false.csv")?;
    let frames = ["", "Claim: ", "Is it true? ", "Fact check: "];
    let prompts: Vec<Vec<u32>> = frames
        .iter()
        .flat_map(|f| statements.iter().map(move |s| format!("{f}{}", s.text)))
        .take(1000)
        .map(|t| tok.encode(&t))
        .collect::<puppetlens::Result<_>>()?;
    let tokens: usize = prompts.iter().map(|p| p.len()).sum();
    let dir = std::env::temp_dir().join(format!("puppetlens-extract-bench-{}", std::process::id()));
    let opts = ExtractOptions {
        batch_size: 16,
        shard_size: 256,
        ..ExtractOptions::resid_post(&model, Site::Last)
    };
    let t = std::time::Instant::now();
    let m = extract_to_dir(
        &model,
        &prompts,
        &opts,
        &dir,
        &StoreMeta {
            model: "smollm2-135m-instruct".into(),
            ..StoreMeta::default()
        },
    )?;
    let secs = t.elapsed().as_secs_f64();
    let after = peak_mib();
    let bytes: u64 = m
        .shards
        .iter()
        .filter_map(|s| std::fs::metadata(dir.join(s)).ok())
        .map(|md| md.len())
        .sum();
    println!("| prompts | tokens | layers | seconds | tokens/s | store MiB | peak RSS after load MiB | peak RSS after extraction MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {tokens} | {} | {secs:.1} | {:.0} | {:.1} | {after_load:.0} | {after:.0} |",
        prompts.len(),
        opts.points.len(),
        tokens as f64 / secs,
        bytes as f64 / (1 << 20) as f64
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
