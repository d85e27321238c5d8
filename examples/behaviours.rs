//! Measures three behaviours of SmolLM2-135M-Instruct on the project's own probe sets (the numbers
//! recorded in the probes/steering issue note come from this example):
//!
//! - `truth`: logistic probes for true/false statements at every layer (plain prompts, last token);
//! - `sycophancy`: a CAA vector (difference of means at the answer letter, chat prompts) added at a
//!   few layers with negative and positive multipliers, P(sycophantic letter) on held-out items;
//! - `sycophancy-text`: the same items asked as open questions answered in words
//!   (`data::ab_text_prompt`), the CAA vector at the deciding token, per-item paired changes with
//!   bootstrap intervals on validation and test (`LAYERS`, `MULTS`, `PARTS` pick the cells);
//! - `refusal`: the harmful-minus-harmless direction (last token of chat prompts) ablated on held-out
//!   harmful requests, and added to held-out harmless ones; refusal rate of greedy completions;
//! - `refusal-survey`: the unsteered refusal rate of every harmful pool (project and shared splits);
//! - `refusal-ablation`: the direction ablated at each layer on the held-out prompts the model
//!   refuses unsteered (validation: project val; test: project test + shared test), a random
//!   direction as the control, KL on held-out harmless prompts as the side effect.
//!
//! `cargo run --release --example behaviours -- <task>` (writes
//! `notebooks-data/behaviours/<task>.json`).

use puppetlens::data::{self, PromptFormat};
use puppetlens::eval::{
    ab_scores, ab_summary, dose_response, refusal_rate, summarize, AbCase, Intervention,
};
use puppetlens::extract::{extract, ExtractOptions, Site};
use puppetlens::probe::mean_ci;
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

/// The project's refusal requests (recorded split) and the harmful-minus-harmless direction of
/// the last-token residual at every layer, from the training split.
fn refusal_direction(
    model: &Model,
    tok: &Tokenizer,
    chat: &PromptFormat,
) -> anyhow::Result<(data::Split<data::Labeled>, SteeringVector)> {
    let s = data::load_with_split("probes/refusal_requests.jsonl", |p| {
        data::load_labeled_instructions(p, "harmful")
    })?;
    let harmful = last_token(model, &encode(tok, &s.train, chat, Some(true))?)?;
    let harmless = last_token(model, &encode(tok, &s.train, chat, Some(false))?)?;
    let v = SteeringVector::mean_diff(&harmful, &harmless, model.config().n_layers)?;
    Ok((s, v))
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
        "sycophancy-text" => {
            // The same items asked as open questions answered in words (`data::ab_text_prompt`),
            // chat format; layer chosen on validation, effect read on test.
            let s = data::load_with_split("probes/sycophancy_ab.jsonl", data::load_ab_json)?;
            let cases = |v: &[data::AbItem]| -> anyhow::Result<Vec<AbCase>> {
                Ok(v.iter()
                    .map(|it| data::ab_text_prompt(&tok, it, &chat).map(AbCase::from))
                    .collect::<puppetlens::Result<_>>()?)
            };
            let (train, val, test) = (cases(&s.train)?, cases(&s.val)?, cases(&s.test)?);
            let (pos, neg) = puppetlens::diff::caa_prompts(&train);
            let v = SteeringVector::mean_diff(
                &last_token(&model, &pos)?,
                &last_token(&model, &neg)?,
                n_layers,
            )?;
            let mults: Vec<f64> = std::env::var("MULTS")
                .unwrap_or_else(|_| "-2,2".into())
                .split(',')
                .map(|m| m.parse())
                .collect::<Result<_, _>>()?;
            let layers: Vec<usize> = std::env::var("LAYERS")
                .unwrap_or_else(|_| "2,5,8,11,14,17,20,23,26".into())
                .split(',')
                .map(|m| m.parse())
                .collect::<Result<_, _>>()?;
            let mut out = serde_json::Map::new();
            let parts: Vec<(&str, &Vec<AbCase>)> = std::env::var("PARTS")
                .unwrap_or_else(|_| "val,test".into())
                .split(',')
                .map(|p| {
                    if p == "test" {
                        ("test", &test)
                    } else {
                        ("val", &val)
                    }
                })
                .collect();
            for (name, part) in parts {
                let none = ab_scores(&model, part, &Intervention::None, 8)?;
                println!("{name} unsteered: {:?}", summarize(&none));
                let mut rows = Vec::new();
                for &l in &layers {
                    let vl = v.only(&[l])?;
                    for &m in &mults {
                        let iv = Intervention::Add {
                            vector: &vl,
                            scale: m,
                            positions: Positions::All,
                        };
                        let sc = ab_scores(&model, part, &iv, 8)?;
                        // Paired per-item changes against the unsteered model, with bootstrap CIs.
                        let dp: Vec<f64> = sc
                            .iter()
                            .zip(&none)
                            .map(|(a, b)| a.p_matching - b.p_matching)
                            .collect();
                        let dl: Vec<f64> = sc
                            .iter()
                            .zip(&none)
                            .map(|(a, b)| a.logit_diff - b.logit_diff)
                            .collect();
                        let (cp, cl) = (mean_ci(&dp, 2000, 0), mean_ci(&dl, 2000, 0));
                        let sm = summarize(&sc);
                        println!(
                            "{name} layer {l:2} x{m:+5}: P(matching) {:.3} (change CI {:+.3}..{:+.3}), logit diff {:+.3} (change CI {:+.3}..{:+.3})",
                            sm.mean_p, cp.0, cp.1, sm.mean_logit_diff, cl.0, cl.1
                        );
                        rows.push(json!({ "layer": l, "multiplier": m, "summary": sm, "p_change_ci": cp, "logit_diff_change_ci": cl }));
                    }
                }
                out.insert(
                    name.into(),
                    json!({ "unsteered": summarize(&none), "rows": rows }),
                );
            }
            out.insert("vector_norms".into(), json!(v.norms()?));
            serde_json::Value::Object(out)
        }
        "sycophancy" => {
            let s = data::load_with_split("probes/sycophancy_ab.jsonl", data::load_ab_json)?;
            let cases = |v: &[data::AbItem]| -> anyhow::Result<Vec<AbCase>> {
                Ok(v.iter()
                    .map(|it| data::ab_prompt(&tok, it, &chat).map(AbCase::from))
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
        "refusal-ablation" => {
            // Held-out prompts the model refuses unsteered; the harmful-minus-harmless direction
            // (project train split) ablated at every layer and position; a random direction of
            // the same layer as the control; KL on held-out harmless prompts as the side effect.
            let (s, v) = refusal_direction(&model, &tok, &chat)?;
            let refused = |ids: Vec<Vec<u32>>| -> anyhow::Result<Vec<Vec<u32>>> {
                let (_, gens) = refusal_rate(&model, &tok, &ids, &Intervention::None, 24, 16)?;
                Ok(ids
                    .into_iter()
                    .zip(gens)
                    .filter(|(_, g)| puppetlens::eval::is_refusal(g))
                    .map(|(i, _)| i)
                    .collect())
            };
            let val_refused = refused(encode(&tok, &s.val, &chat, Some(true))?)?;
            let mut test_refused = refused(encode(&tok, &s.test, &chat, Some(true))?)?;
            let shared =
                data::load_instructions("../shared/datasets/refusal/splits/harmful_test.json")?;
            let shared_ids = shared
                .iter()
                .map(|t| data::text_prompt(&tok, t, &chat))
                .collect::<puppetlens::Result<Vec<_>>>()?;
            test_refused.extend(refused(shared_ids)?);
            let val_harmless = encode(&tok, &s.val, &chat, Some(false))?;
            println!(
                "refused unsteered: val {}, test {}",
                val_refused.len(),
                test_refused.len()
            );
            let layers: Vec<usize> = std::env::var("LAYERS")
                .unwrap_or_else(|_| "2,4,6,8,10,12,14,16,18,20,22,24,26,28".into())
                .split(',')
                .map(|m| m.parse())
                .collect::<Result<_, _>>()?;
            let mut rng = data::SplitMix64::new(7);
            let mut rows = Vec::new();
            for &l in &layers {
                // A random direction: Gaussian via Box-Muller from the seeded generator.
                let d = model.config().d_model;
                let r: Vec<f32> = (0..d)
                    .map(|_| {
                        let (u1, u2) = (
                            (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64,
                            (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64,
                        );
                        ((-2.0 * (u1.max(1e-300)).ln()).sqrt()
                            * (2.0 * std::f64::consts::PI * u2).cos())
                            as f32
                    })
                    .collect();
                let rv = SteeringVector::new(
                    [(l, candle_core::Tensor::new(r, &candle_core::Device::Cpu)?)].into(),
                    "random",
                )?;
                let abl = Intervention::Ablate {
                    vector: &v,
                    layer: l,
                };
                let rnd = Intervention::Ablate {
                    vector: &rv,
                    layer: l,
                };
                let (rv_val, gens) = refusal_rate(&model, &tok, &val_refused, &abl, 24, 16)?;
                let (rr_val, _) = refusal_rate(&model, &tok, &val_refused, &rnd, 24, 16)?;
                let kl = puppetlens::eval::kl_side_effect(&model, &val_harmless, &abl, 16)?;
                let kl_r = puppetlens::eval::kl_side_effect(&model, &val_harmless, &rnd, 16)?;
                println!("layer {l:2}: val refused still refusing {rv_val:.3} (random direction {rr_val:.3}); KL on harmless {kl:.4} (random {kl_r:.4})");
                for g in gens.iter().take(3) {
                    println!("    {g:?}");
                }
                rows.push(json!({ "layer": l, "val_refusal": rv_val, "val_refusal_random": rr_val, "kl_harmless": kl, "kl_harmless_random": kl_r, "samples": gens }));
            }
            let mut test = Vec::new();
            for &l in &layers {
                let (rt, gens) = refusal_rate(
                    &model,
                    &tok,
                    &test_refused,
                    &Intervention::Ablate {
                        vector: &v,
                        layer: l,
                    },
                    24,
                    16,
                )?;
                println!("layer {l:2}: test refused still refusing {rt:.3}");
                test.push(json!({ "layer": l, "test_refusal": rt, "samples": gens }));
            }
            json!({ "task": "refusal-ablation", "n_val": val_refused.len(), "n_test": test_refused.len(), "val": rows, "test": test })
        }
        "refusal-survey" => {
            // Unsteered refusal rate of every harmful pool (project splits, shared splits).
            let s = data::load_with_split("probes/refusal_requests.jsonl", |p| {
                data::load_labeled_instructions(p, "harmful")
            })?;
            let mut pools: Vec<(String, Vec<String>)> =
                [("train", &s.train), ("val", &s.val), ("test", &s.test)]
                    .iter()
                    .map(|(n, v)| {
                        (
                            format!("project {n}"),
                            v.iter()
                                .filter(|x| x.label)
                                .map(|x| x.text.clone())
                                .collect(),
                        )
                    })
                    .collect();
            for n in ["train", "val", "test"] {
                let p = format!("../shared/datasets/refusal/splits/harmful_{n}.json");
                pools.push((format!("shared {n}"), data::load_instructions(&p)?));
            }
            let mut out = serde_json::Map::new();
            for (name, texts) in pools {
                let ids = texts
                    .iter()
                    .map(|t| data::text_prompt(&tok, t, &chat))
                    .collect::<puppetlens::Result<Vec<_>>>()?;
                let (r, gens) = refusal_rate(&model, &tok, &ids, &Intervention::None, 24, 16)?;
                println!("{name}: {} prompts, refusal {r:.3}", ids.len());
                let refused: Vec<_> = gens
                    .iter()
                    .zip(&texts)
                    .filter(|(g, _)| puppetlens::eval::is_refusal(g))
                    .map(|(g, t)| json!([t, g]))
                    .collect();
                for x in refused.iter().take(6) {
                    println!("  {x}");
                }
                for (g, t) in gens.iter().zip(&texts).take(3) {
                    println!("  sample: {t:?} -> {g:?}");
                }
                out.insert(
                    name,
                    json!({ "n": ids.len(), "rate": r, "refused": refused }),
                );
            }
            serde_json::Value::Object(out)
        }
        "refusal" => {
            let (s, v) = refusal_direction(&model, &tok, &chat)?;
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
