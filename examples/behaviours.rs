//! Measures three behaviours of SmolLM2-135M-Instruct on the project's own probe sets (the numbers
//! recorded in the probes/steering issue note come from this example):
//!
//! - `truth`: logistic probes for true/false statements at every layer (plain prompts, last token);
//! - `sycophancy`: a CAA vector (difference of means at the answer letter, chat prompts) added at a
//!   few layers with negative and positive multipliers, P(sycophantic letter) on held-out items;
//! - `refusal`: the harmful-minus-harmless direction (last token of chat prompts) ablated on held-out
//!   harmful requests, and added to held-out harmless ones; refusal rate of greedy completions.
//!
//! `cargo run --release --example behaviours -- truth|sycophancy|refusal` (writes
//! `notebooks-data/behaviours/<task>.json`).

use puppetlens::data::{self, PromptFormat};
use puppetlens::eval::{ab_summary, dose_response, refusal_rate, AbCase, Intervention};
use puppetlens::extract::{extract, ExtractOptions, Site};
use puppetlens::probe::{sweep, ProbeOptions};
use puppetlens::{fetch, Model, Positions, SteeringVector, Tokenizer};
use serde_json::json;

fn last_token(
    model: &Model,
    prompts: &[Vec<u32>],
) -> anyhow::Result<puppetlens::extract::Activations> {
    Ok(extract(
        model,
        prompts,
        &ExtractOptions {
            progress: true,
            ..ExtractOptions::resid_post(model, Site::Last)
        },
    )?)
}

fn encode(
    tok: &Tokenizer,
    items: &[data::Labeled],
    fmt: &PromptFormat,
    label: Option<bool>,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let keep = items.iter().filter(|x| label.is_none_or(|l| x.label == l));
    Ok(keep
        .map(|x| data::text_prompt(tok, &x.text, fmt))
        .collect::<puppetlens::Result<_>>()?)
}

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_else(|| "truth".into());
    let (model, tok) = puppetlens::load(fetch::fetch("smollm2-135m-instruct")?)?;
    let n_layers = model.config().n_layers;
    let chat = PromptFormat::Chat { system: None };
    let out = match task.as_str() {
        "truth" => {
            let s = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
            let plain = PromptFormat::Plain;
            let x = |v: &[data::Labeled]| -> anyhow::Result<Vec<candle_core::Tensor>> {
                Ok(last_token(&model, &encode(&tok, v, &plain, None)?)?.layers(n_layers)?)
            };
            let y = |v: &[data::Labeled]| v.iter().map(|i| i.label).collect::<Vec<_>>();
            let report = sweep(
                &x(&s.train)?,
                &y(&s.train),
                &x(&s.val)?,
                &y(&s.val),
                &x(&s.test)?,
                &y(&s.test),
                &ProbeOptions::default(),
            )?;
            for r in &report {
                println!(
                    "layer {:2}: test accuracy {:.3} {:?}, AUROC {:.3}",
                    r.layer, r.test.accuracy, r.test.accuracy_ci, r.test.auroc
                );
            }
            json!({ "task": "truth", "layers": report })
        }
        "sycophancy" => {
            let s = data::load_with_split("probes/sycophancy_ab.jsonl", data::load_ab_json)?;
            let cases = |v: &[data::AbItem]| -> anyhow::Result<Vec<AbCase>> {
                Ok(v.iter()
                    .map(|it| {
                        data::ab_prompt(&tok, it, &chat).map(|p| AbCase {
                            matching: p.matching_id(),
                            not_matching: p.not_matching_id(),
                            ids: p.ids,
                        })
                    })
                    .collect::<puppetlens::Result<_>>()?)
            };
            let (train, test) = (cases(&s.train)?, cases(&s.test)?);
            let (pos, neg) = puppetlens::diff::caa_prompts(&train);
            let v = SteeringVector::mean_diff(
                &last_token(&model, &pos)?,
                &last_token(&model, &neg)?,
                n_layers,
            )?;
            let base = ab_summary(&model, &test, &Intervention::None, 8)?;
            println!("unsteered: {base:?}");
            let rows = dose_response(
                &model,
                &test,
                &v,
                &[8, 12, 16],
                &[-16.0, -8.0, 8.0, 16.0],
                8,
            )?;
            for r in &rows {
                println!(
                    "layer {:2} x{:+5}: P(matching) {:.3}, logit diff {:+.3}",
                    r.layer, r.multiplier, r.summary.mean_p, r.summary.mean_logit_diff
                );
            }
            json!({ "task": "sycophancy", "unsteered": base, "dose_response": rows, "vector_norms": v.norms()? })
        }
        "refusal" => {
            let s = data::load_with_split("probes/refusal_requests.jsonl", |p| {
                data::load_labeled_instructions(p, "harmful")
            })?;
            let harmful = last_token(&model, &encode(&tok, &s.train, &chat, Some(true))?)?;
            let harmless = last_token(&model, &encode(&tok, &s.train, &chat, Some(false))?)?;
            let v = SteeringVector::mean_diff(&harmful, &harmless, n_layers)?;
            let (test_harmful, test_harmless) = (
                encode(&tok, &s.test, &chat, Some(true))?,
                encode(&tok, &s.test, &chat, Some(false))?,
            );
            let (r0, _) = refusal_rate(&model, &tok, &test_harmful, &Intervention::None, 24, 8)?;
            let (h0, _) = refusal_rate(&model, &tok, &test_harmless, &Intervention::None, 24, 8)?;
            println!("unsteered refusal rate: harmful {r0:.3}, harmless {h0:.3}");
            let mut rows = Vec::new();
            for l in [10, 14, 18] {
                let (ra, _) = refusal_rate(
                    &model,
                    &tok,
                    &test_harmful,
                    &Intervention::Ablate {
                        vector: &v,
                        layer: l,
                    },
                    24,
                    8,
                )?;
                let vl = v.only(&[l])?;
                let (rs, _) = refusal_rate(
                    &model,
                    &tok,
                    &test_harmless,
                    &Intervention::Add {
                        vector: &vl,
                        scale: 4.0,
                        positions: Positions::All,
                    },
                    24,
                    8,
                )?;
                println!("layer {l:2}: harmful with the direction ablated {ra:.3}; harmless with 4x the direction added {rs:.3}");
                rows.push(json!({ "layer": l, "harmful_ablated": ra, "harmless_added_x4": rs }));
            }
            json!({ "task": "refusal", "harmful": r0, "harmless": h0, "layers": rows })
        }
        other => anyhow::bail!("unknown task `{other}` (truth, sycophancy, refusal)"),
    };
    let dir = std::path::Path::new("notebooks-data/behaviours");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{task}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&out)?)?;
    std::fs::rename(&tmp, dir.join(format!("{task}.json")))?;
    Ok(())
}
