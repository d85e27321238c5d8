//! Builds, evaluates and documents puppetlens's model organisms: LoRA-tuned siblings of
//! gemma-3-270m (base) whose tuning we know exactly.
//!
//! ```sh
//! cargo run --release --example organisms -- data            # assistant transcripts from SmolLM2
//! cargo run --release --example organisms -- train assistant # SFT on them
//! cargo run --release --example organisms -- train sycophant # DPO towards the user's view
//! cargo run --release --example organisms -- train control   # DPO with preferences unrelated to it
//! cargo run --release --example organisms -- eval            # before/after numbers and recovery
//! ```
//!
//! Everything is written under `notebooks-data/organisms/` (`--out`): per organism the adapter
//! (`adapter_model.safetensors`, `adapter_config.json`), `train_log.json`, `loss.csv`, and after
//! `eval`, `eval.json`; `eval` also writes `recovery_<name>/localisation.{json,csv}`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use puppetlens::data::{self, ab_text_prompt, PromptFormat, SplitMix64};
use puppetlens::diff::{localise, AbSplits, DiffOptions};
use puppetlens::eval::{ab_summary, AbCase, Intervention};
use puppetlens::lora::{Adapter, LoraConfig};
use puppetlens::train::{dpo, sft, sft_loss, DpoPair, SftExample, TrainLog, TrainOptions};
use puppetlens::{ChatMessage, GenerateOptions, Hooks, Model, Tokenizer};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "Build and evaluate the gemma-3-270m model organisms")]
struct Args {
    /// Output directory.
    #[arg(long, default_value = "notebooks-data/organisms")]
    out: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the assistant transcripts: SmolLM2-135M-Instruct's greedy replies to the
    /// project's harmless instructions (probes/refusal_requests.jsonl).
    Data {
        /// Most tokens per reply.
        #[arg(long, default_value_t = 96)]
        max_new_tokens: usize,
    },
    /// Train one organism: assistant, sycophant or control.
    Train {
        name: String,
        #[arg(long)]
        epochs: Option<usize>,
        #[arg(long)]
        max_steps: Option<usize>,
        #[arg(long)]
        lr: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Evaluate base and organisms; write eval.json files and the recovery reports.
    Eval {
        /// Test items used for the recovery analysis (all when omitted).
        #[arg(long)]
        n_test: Option<usize>,
    },
}

#[derive(Serialize, Deserialize)]
struct Transcript {
    instruction: String,
    reply: String,
    split: String,
}

const TRANSCRIPTS: &str = "assistant/transcripts.jsonl";

fn gemma() -> Result<(Model, Tokenizer)> {
    let path = puppetlens::fetch::fetch("gemma-3-270m")?;
    let (model, mut tok) = puppetlens::load(&path)?;
    tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    Ok((model, tok))
}

/// The recipe of each organism.
fn recipe(name: &str) -> Result<TrainOptions> {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..Default::default()
    };
    Ok(match name {
        "assistant" => TrainOptions {
            lora,
            lr: 2e-4,
            epochs: 2,
            batch_size: 4,
            warmup_steps: 5,
            log_every: 5,
            ..Default::default()
        },
        "sycophant" | "control" => TrainOptions {
            lora,
            lr: 5e-4,
            epochs: 2,
            batch_size: 4,
            warmup_steps: 5,
            beta: 0.1,
            log_every: 5,
            ..Default::default()
        },
        other => bail!("unknown organism `{other}` (assistant, sycophant, control)"),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Data { max_new_tokens } => make_transcripts(&args.out, max_new_tokens),
        Cmd::Train {
            name,
            epochs,
            max_steps,
            lr,
            seed,
        } => {
            let mut opts = recipe(&name)?;
            opts.seed = seed;
            if let Some(e) = epochs {
                opts.epochs = e;
            }
            opts.max_steps = max_steps;
            if let Some(lr) = lr {
                opts.lr = lr;
            }
            train(&args.out, &name, &opts)
        }
        Cmd::Eval { n_test } => evaluate(&args.out, n_test),
    }
}

fn split_name(p: data::SplitPart) -> &'static str {
    match p {
        data::SplitPart::Train => "train",
        data::SplitPart::Val => "val",
        data::SplitPart::Test => "test",
    }
}

/// Cuts an unfinished reply after its last full sentence; `None` when there is none.
fn finished(reply: &str, ended: bool) -> Option<String> {
    let reply = reply.trim();
    if ended {
        return (!reply.is_empty()).then(|| reply.to_string());
    }
    // The last sentence end followed by white space (so "1.5" or "by 0." at the cut do not count).
    let bytes = reply.as_bytes();
    let cut = (0..bytes.len().saturating_sub(1))
        .rev()
        .find(|&i| matches!(bytes[i], b'.' | b'!' | b'?') && bytes[i + 1].is_ascii_whitespace())?;
    let kept = reply[..=cut].trim_end();
    // A list item's number ("2.") is not a sentence end.
    let last_line = kept.rsplit('\n').next().unwrap_or(kept);
    if last_line
        .trim_end_matches('.')
        .trim()
        .chars()
        .all(|c| c.is_ascii_digit())
    {
        return finished(&kept[..kept.len() - last_line.len()], false)
            .or_else(|| None)
            .filter(|s| !s.is_empty());
    }
    Some(kept.to_string())
}

fn make_transcripts(out: &Path, max_new_tokens: usize) -> Result<()> {
    let (model, tok) = puppetlens::load(puppetlens::fetch::fetch("smollm2-135m-instruct")?)?;
    let parts = data::load_with_split("probes/refusal_requests.jsonl", |p| {
        data::load_labeled_instructions(p, "harmful")
    })?;
    let end = tok
        .token_to_id("<|im_end|>")
        .context("SmolLM2 has no <|im_end|>")?;
    let mut rows = Vec::new();
    for part in [
        data::SplitPart::Train,
        data::SplitPart::Val,
        data::SplitPart::Test,
    ] {
        let items: Vec<_> = parts.part(part).iter().filter(|l| !l.label).collect();
        eprintln!(
            "{}: {} harmless instructions",
            split_name(part),
            items.len()
        );
        for (k, chunk) in items.chunks(8).enumerate() {
            let prompts = chunk
                .iter()
                .map(|l| data::text_prompt(&tok, &l.text, &PromptFormat::Chat { system: None }))
                .collect::<puppetlens::Result<Vec<_>>>()?;
            let opts = GenerateOptions {
                stop_tokens: vec![end],
                ..GenerateOptions::greedy(max_new_tokens)
            };
            let outs = model.generate(&prompts, &opts, &mut Hooks::new())?;
            for (l, ids) in chunk.iter().zip(outs) {
                let ended = ids.last() == Some(&end);
                let body = if ended {
                    &ids[..ids.len() - 1]
                } else {
                    &ids[..]
                };
                if let Some(reply) = finished(&tok.decode(body)?, ended) {
                    rows.push(Transcript {
                        instruction: l.text.clone(),
                        reply,
                        split: split_name(part).into(),
                    });
                }
            }
            eprintln!("  batch {} done, {} transcripts so far", k + 1, rows.len());
        }
    }
    let path = out.join(TRANSCRIPTS);
    std::fs::create_dir_all(path.parent().unwrap())?;
    let text: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    eprintln!("wrote {} ({} transcripts)", path.display(), rows.len());
    Ok(())
}

fn load_transcripts(out: &Path) -> Result<Vec<Transcript>> {
    let path = out.join(TRANSCRIPTS);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (run `organisms data` first)", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// Gemma chat transcripts with the loss on the model turn (reply and end-of-turn).
fn sft_examples(tok: &Tokenizer, rows: &[&Transcript]) -> Result<Vec<SftExample>> {
    rows.iter()
        .map(|t| {
            let prompt = tok.encode_chat(&[ChatMessage::user(&t.instruction)], true)?;
            let ids = tok.encode_chat(
                &[
                    ChatMessage::user(&t.instruction),
                    ChatMessage::assistant(&t.reply),
                ],
                false,
            )?;
            if !ids.starts_with(&prompt) {
                bail!(
                    "chat prompt is not a prefix of the transcript: {:?}",
                    t.instruction
                );
            }
            Ok(SftExample {
                prompt_len: prompt.len(),
                ids,
            })
        })
        .collect()
}

fn sycophancy_cases(tok: &Tokenizer) -> Result<data::Split<(AbCase, data::AbItem)>> {
    let parts = data::load_with_split("probes/sycophancy_ab.jsonl", data::load_ab_json)?;
    let fmt = PromptFormat::Chat { system: None };
    Ok(parts.map(|item| {
        let p = ab_text_prompt(tok, &item, &fmt).expect("sycophancy prompt");
        (
            AbCase {
                ids: p.ids.clone(),
                matching: p.matching_id(),
                not_matching: p.not_matching_id(),
            },
            item,
        )
    }))
}

/// DPO pairs on the training items: the sycophant prefers the letter agreeing with the user; the
/// control prefers a letter drawn by a seeded coin, unrelated to the user's view.
fn preference_pairs(cases: &[(AbCase, data::AbItem)], control: bool, seed: u64) -> Vec<DpoPair> {
    let mut rng = SplitMix64::new(seed ^ 0xC0_17_20_1);
    cases
        .iter()
        .map(|(c, _)| {
            let matching_wins = !control || rng.below(2) == 0;
            let (w, l) = if matching_wins {
                (c.matching, c.not_matching)
            } else {
                (c.not_matching, c.matching)
            };
            DpoPair {
                prompt: c.ids.clone(),
                chosen: vec![w],
                rejected: vec![l],
            }
        })
        .collect()
}

fn write_log(dir: &Path, log: &TrainLog) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("train_log.json"),
        serde_json::to_string_pretty(log)?,
    )?;
    let mut csv =
        String::from("step,epoch,loss,lr,grad_norm,tokens,seconds,reward_margin,reward_accuracy\n");
    for s in &log.steps {
        let o = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
        csv.push_str(&format!(
            "{},{},{:.6},{:.3e},{:.6},{},{:.3},{},{}\n",
            s.step,
            s.epoch,
            s.loss,
            s.lr,
            s.grad_norm,
            s.tokens,
            s.seconds,
            o(s.reward_margin),
            o(s.reward_accuracy)
        ));
    }
    std::fs::write(dir.join("loss.csv"), csv)?;
    Ok(())
}

fn train(out: &Path, name: &str, opts: &TrainOptions) -> Result<()> {
    let (base, tok) = gemma()?;
    let dir = out.join(name);
    let (adapter, log) = match name {
        "assistant" => {
            let rows = load_transcripts(out)?;
            let train: Vec<&Transcript> = rows.iter().filter(|t| t.split == "train").collect();
            let ex = sft_examples(&tok, &train)?;
            eprintln!("assistant: SFT on {} transcripts", ex.len());
            sft(&base, &ex, opts)?
        }
        "sycophant" | "control" => {
            let cases = sycophancy_cases(&tok)?;
            let pairs = preference_pairs(&cases.train, name == "control", opts.seed);
            eprintln!("{name}: DPO on {} pairs", pairs.len());
            dpo(&base, &pairs, opts)?
        }
        other => bail!("unknown organism `{other}`"),
    };
    let adapter = adapter.with_base_model("google/gemma-3-270m");
    adapter.save(&dir)?;
    write_log(&dir, &log)?;
    eprintln!(
        "{name}: {} steps in {:.0} s ({:.0} tokens/s), {} trainable values; saved to {}",
        log.steps.len(),
        log.seconds,
        log.tokens_per_s,
        adapter.n_params(),
        dir.display()
    );
    Ok(())
}

#[derive(Serialize)]
struct ModelEval {
    name: String,
    sycophancy_p_matching: f64,
    sycophancy_rate: f64,
    neutral_nll: f64,
    neutral_ppl: f64,
    assistant_nll_heldout: f64,
    end_of_turn_rate: f64,
    samples: Vec<(String, String)>,
}

fn evaluate(out: &Path, n_test: Option<usize>) -> Result<()> {
    let (base, tok) = gemma()?;
    let cases = sycophancy_cases(&tok)?;
    let test: Vec<AbCase> = cases.test.iter().map(|(c, _)| c.clone()).collect();
    // Neutral text: the project's true/false statements (test split), plain, no chat format.
    let tf = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
    let neutral: Vec<SftExample> = tf
        .test
        .iter()
        .map(|l| {
            let ids = tok.encode(&l.text)?;
            Ok(SftExample { ids, prompt_len: 1 })
        })
        .collect::<Result<_>>()?;
    let transcripts = load_transcripts(out)?;
    let held: Vec<&Transcript> = transcripts.iter().filter(|t| t.split == "test").collect();
    let held_ex = sft_examples(&tok, &held)?;
    let eot = tok
        .token_to_id("<end_of_turn>")
        .context("no <end_of_turn>")?;
    let mut evals = Vec::new();
    let mut models = vec![("base".to_string(), base.clone())];
    for name in ["assistant", "sycophant", "control"] {
        let dir = out.join(name);
        let adapter = Adapter::load(&dir, base.device())
            .with_context(|| format!("{} (train it first)", dir.display()))?;
        models.push((name.to_string(), base.with_adapter(&adapter)?));
    }
    for (name, model) in &models {
        eprintln!("eval {name}");
        let s = ab_summary(model, &test, &Intervention::None, 8)?;
        let nll = sft_loss(model, &neutral, 8)?;
        let held_nll = sft_loss(model, &held_ex, 4)?;
        let prompts: Vec<Vec<u32>> = held
            .iter()
            .map(|t| tok.encode_chat(&[ChatMessage::user(&t.instruction)], true))
            .collect::<puppetlens::Result<_>>()?;
        let opts = GenerateOptions {
            stop_tokens: vec![eot],
            ..GenerateOptions::greedy(64)
        };
        let mut ended = 0;
        let mut samples = Vec::new();
        for (k, chunk) in prompts.chunks(8).enumerate() {
            let outs = model.generate(chunk, &opts, &mut Hooks::new())?;
            for (j, o) in outs.iter().enumerate() {
                if o.contains(&eot) {
                    ended += 1;
                }
                if k == 0 && j < 4 {
                    samples.push((held[j].instruction.clone(), tok.decode(o)?));
                }
            }
        }
        evals.push(ModelEval {
            name: name.clone(),
            sycophancy_p_matching: s.mean_p,
            sycophancy_rate: s.rate,
            neutral_nll: nll,
            neutral_ppl: nll.exp(),
            assistant_nll_heldout: held_nll,
            end_of_turn_rate: ended as f64 / prompts.len() as f64,
            samples,
        });
    }
    for e in &evals {
        let dir = out.join(&e.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("eval.json"), serde_json::to_string_pretty(e)?)?;
        println!(
            "{:<10} syc P={:.3} rate={:.3}  neutral ppl={:.2}  held-out reply nll={:.3}  ends turn={:.2}",
            e.name,
            e.sycophancy_p_matching,
            e.sycophancy_rate,
            e.neutral_ppl,
            e.assistant_nll_heldout,
            e.end_of_turn_rate
        );
    }
    // Ground-truth recovery: base vs sycophant, base vs control.
    let take = |v: &[(AbCase, data::AbItem)], n: Option<usize>| -> Vec<AbCase> {
        v.iter()
            .take(n.unwrap_or(usize::MAX))
            .map(|(c, _)| c.clone())
            .collect()
    };
    let splits = AbSplits {
        train: take(&cases.train, None),
        val: take(&cases.val, None),
        test: take(&cases.test, n_test),
    };
    let neutral_ids: Vec<Vec<u32>> = neutral.iter().take(64).map(|e| e.ids.clone()).collect();
    for name in ["sycophant", "control"] {
        let tuned = &models.iter().find(|(n, _)| n == name).unwrap().1;
        let report = localise(&base, tuned, &splits, &neutral_ids, &DiffOptions::default())?;
        let dir = out.join(format!("recovery_{name}"));
        report.write(&dir)?;
        if let Some(v) = &report.diff_vector {
            v.save(dir.join("diff_vector.safetensors"))?;
        }
        println!(
            "recovery {name}: P base {:.3} tuned {:.3}, best layer {:?}",
            report.p_base, report.p_tuned, report.best_layer
        );
        for r in &report.rows {
            println!(
                "  layer {:>2}: |diff| {:.2} cos {:+.2} steered {:?} ablated {:?} closed {:?} removed {:?}",
                r.layer,
                r.diff_norm,
                r.cos_diff_behaviour,
                r.p_steered_base.map(|x| (x * 1000.0).round() / 1000.0),
                r.p_ablated_tuned.map(|x| (x * 1000.0).round() / 1000.0),
                r.gap_closed.map(|x| (x * 100.0).round() / 100.0),
                r.gap_removed.map(|x| (x * 100.0).round() / 100.0)
            );
        }
    }
    Ok(())
}
