//! Interventions swept over layers x multipliers x items, side by side in one run:
//! `cargo bench --bench sweep` (`PUPPETLENS_BENCH_QUICK=1` for a short run).
//!
//! Rows per shipped checkpoint, on the project's sycophancy items asked in the text-answer chat
//! form (the main job's dose-response): the naive sweep (one full forward per cell, the vector
//! added by a hook, as repeng / steering-vectors users write it), and puppetlens's branched sweep
//! (`eval::add_sweep_scores`: each batch's forward below the highest layer once, then only the
//! blocks above each layer, all multipliers stacked as rows). Both score the same cells; the
//! largest difference in P is printed.

#[path = "util/mod.rs"]
mod util;

use std::time::Instant;

use puppetlens::data::{self, ab_text_prompt, PromptFormat};
use puppetlens::eval::{ab_scores, add_sweep_scores, AbCase, Intervention};
use puppetlens::{Positions, SteeringVector};
use util::matmul_rate;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    let n_items = if quick { 16 } else { 74 };
    let mults = [-4.0, -2.0, 0.0, 2.0, 4.0];
    println!(
        "machine f32 matmul rate: {:.0} GFLOP/s ({} threads)\n",
        matmul_rate(),
        candle_core::utils::get_num_threads()
    );
    println!("| model | sweep | cells (layers x multipliers) | items | seconds | items x cells / s | speed-up |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let root = util::repo_root();
    for name in ["smollm2-135m-instruct", "gemma-3-270m"] {
        let (model, tok) = puppetlens::open(name, &puppetlens::LoadOptions::default())?;
        let s = data::load_with_split(root.join("probes/sycophancy_ab.jsonl"), data::load_ab_json)?;
        let fmt = PromptFormat::Chat { system: None };
        let cases: Vec<AbCase> = s
            .test
            .iter()
            .take(n_items)
            .map(|it| Ok(AbCase::from(ab_text_prompt(&tok, it, &fmt)?)))
            .collect::<puppetlens::Result<_>>()?;
        let n = model.config().n_layers;
        let layers: Vec<usize> = (0..n).step_by(if quick { 6 } else { 3 }).collect();
        // The CAA direction of the training items at every swept layer.
        let train: Vec<AbCase> = s
            .train
            .iter()
            .take(32)
            .map(|it| Ok(AbCase::from(ab_text_prompt(&tok, it, &fmt)?)))
            .collect::<puppetlens::Result<_>>()?;
        let (pos, neg) = puppetlens::diff::caa_prompts(&train);
        let ex = puppetlens::extract::ExtractOptions {
            points: layers
                .iter()
                .map(|&l| puppetlens::HookPoint::ResidPost(l))
                .collect(),
            progress: false,
            ..puppetlens::extract::ExtractOptions::resid_post(
                &model,
                puppetlens::extract::Site::Last,
            )
        };
        let v = SteeringVector::mean_diff_layers(
            &puppetlens::extract::extract(&model, &pos, &ex)?,
            &puppetlens::extract::extract(&model, &neg, &ex)?,
            &layers,
        )?;
        let cells = layers.len() * mults.len();
        let t = Instant::now();
        let mut naive = Vec::new();
        for &l in &layers {
            let only = v.only(&[l])?;
            for &m in &mults {
                let iv = Intervention::Add {
                    vector: &only,
                    scale: m,
                    positions: Positions::All,
                };
                naive.push(ab_scores(&model, &cases, &iv, 8)?);
            }
        }
        let t_naive = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let branched = add_sweep_scores(&model, &cases, &v, &layers, &mults, 8)?;
        let t_branched = t.elapsed().as_secs_f64();
        let worst = branched
            .iter()
            .flatten()
            .zip(&naive)
            .flat_map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x.p_matching - y.p_matching).abs())
            })
            .fold(0f64, f64::max);
        let work = (cells * cases.len()) as f64;
        for (label, secs) in [
            ("naive: one forward per cell", t_naive),
            ("puppetlens branched", t_branched),
        ] {
            println!(
                "| {name} | {label} | {cells} ({} x {}) | {} | {secs:.1} | {:.1} | {:.2}x |",
                layers.len(),
                mults.len(),
                cases.len(),
                work / secs,
                t_naive / secs
            );
        }
        println!("<!-- {name}: layers {layers:?}; max |P branched - P naive| {worst:e} -->");
    }
    Ok(())
}
