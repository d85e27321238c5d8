//! Builds, evaluates and documents puppetlens's model organisms: LoRA-tuned siblings of
//! gemma-3-270m (base) whose tuning we know exactly.
//!
//! ```sh
//! cargo run --release --example organisms -- data            # assistant transcripts from SmolLM2
//! cargo run --release --example organisms -- train assistant # SFT on them
//! cargo run --release --example organisms -- train sycophant # DPO towards the user's view
//! cargo run --release --example organisms -- train control   # DPO with preferences unrelated to it
//! cargo run --release --example organisms -- eval            # before/after numbers and recovery
//! cargo run --release --example organisms -- caa-split          # record the CAA items' split
//! cargo run --release --example organisms -- train sycophant-broad # + persona-implied items (CAA)
//! cargo run --release --example organisms -- train control-broad   # its control, same items
//! cargo run --release --example organisms -- heldout            # P(agree) on the three held-out sets
//! cargo run --release --example organisms -- distill distilled          # sycophant-broad's replies
//! cargo run --release --example organisms -- distill distilled-control  # control-broad's replies
//! cargo run --release --example organisms -- train distilled            # SFT on each
//! cargo run --release --example organisms -- train distilled-control
//! cargo run --release --example organisms -- distill-eval       # does SFT carry sycophancy?
//! ```
//!
//! Everything is written under `notebooks-data/organisms/` (`--out`): per organism the adapter
//! (`adapter_model.safetensors`, `adapter_config.json`), `train_log.json`, `loss.csv`, and after
//! `eval`, `eval.json`; `eval` also writes `recovery_<name>/localisation.{json,csv}`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use puppetlens::data::{self, ab_text_prompt, PromptFormat, SplitMix64};
use puppetlens::diff::{base_tuned_vector, caa_prompts, localise, AbSplits, DiffOptions};
use puppetlens::eval::{ab_summary, AbCase, Intervention};
use puppetlens::extract::Site;
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
        /// For `sycophant-broad` and `control-broad`: use at most this many CAA train items (the
        /// first of the part).
        #[arg(long)]
        caa_train: Option<usize>,
    },
    /// Record the fixed-seed split of the CAA generate sycophancy items (indices and hashes, no
    /// text) in probes/caa_generate_sycophancy_split.json, with the items the text-answer form
    /// drops and why.
    CaaSplit,
    /// P(agree) of base and the named organisms on the three held-out sycophancy sets (the
    /// project's test split, the CAA generate test part, the late-view form), neutral perplexity,
    /// and each organism's paired difference from the base; writes `<out>/<json>`.
    Heldout {
        /// Organisms (directories under `--out`).
        #[arg(long, value_delimiter = ',', default_value = "sycophant,control")]
        models: Vec<String>,
        #[arg(long, default_value = "heldout.json")]
        json: String,
    },
    /// Write each organism's model card (README.md, loss figure) and the summary README from the
    /// files `train` and `eval` wrote.
    Cards,
    /// Generate a distilled organism's SFT data: its teacher's greedy replies (`sycophant-broad`'s
    /// for `distilled`, `control-broad`'s for `distilled-control`) to the project's harmless instructions,
    /// which contain no sycophancy item.
    Distill {
        /// `distilled` or `distilled-control`.
        student: String,
        /// Most tokens per reply.
        #[arg(long, default_value_t = 96)]
        max_new_tokens: usize,
    },
    /// Sycophancy of base, the broad pair and the two distilled organisms on the held-out sets,
    /// with the paired difference distilled - distilled-control (and each against the base and
    /// the teachers' difference, for the models evaluated).
    DistillEval {
        /// Organisms (directories under `--out`).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "sycophant-broad,control-broad,distilled,distilled-control"
        )]
        models: Vec<String>,
        #[arg(long, default_value = "distillation.json")]
        json: String,
    },
    /// Evaluate base and organisms; write eval.json files and, for each sycophant whose control is
    /// also among them (`sycophant` and `control`, `sycophant-broad` and `control-broad`), the
    /// recovery reports on the project's items.
    Eval {
        /// Test items used for the recovery analysis (all when omitted).
        #[arg(long)]
        n_test: Option<usize>,
        /// Organisms (directories under `--out`).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "assistant,sycophant,control"
        )]
        models: Vec<String>,
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
        // The distilled organisms share the assistant's SFT recipe.
        "assistant" | "distilled" | "distilled-control" => TrainOptions {
            lora,
            lr: 2e-4,
            epochs: 2,
            batch_size: 4,
            warmup_steps: 5,
            log_every: 5,
            ..Default::default()
        },
        // beta 0.5 keeps the policy near the reference: with beta 0.1 and two epochs at lr 5e-4
        // the sycophant agreed on every held-out item but its neutral perplexity rose 45%.
        // The broad pair takes four times the steps (920 items). At lr 2e-4 the sycophant's neutral
        // perplexity rose 10.4% (44.50 -> 49.11); at 1e-4 it rose 1.7% but the late-view rise
        // (+0.042) was within noise; 1.5e-4 sits between.
        "sycophant" | "control" | "sycophant-broad" | "control-broad" => TrainOptions {
            lora,
            lr: if name.ends_with("-broad") { 1.5e-4 } else { 2e-4 },
            epochs: 1,
            batch_size: 4,
            warmup_steps: 5,
            beta: 0.5,
            log_every: 5,
            ..Default::default()
        },
        other => bail!(
            "unknown organism `{other}` (assistant, sycophant, control, sycophant-broad, control-broad, \
             distilled, distilled-control)"
        ),
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
            caa_train,
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
            train(&args.out, &name, &opts, caa_train)
        }
        Cmd::CaaSplit => caa_split_record(),
        Cmd::Heldout { models, json } => {
            let names: Vec<&str> = models.iter().map(String::as_str).collect();
            let pairs: Vec<(&str, &str)> = names.iter().map(|&n| (n, "base")).collect();
            heldout_eval(&args.out, &names, &pairs, &json)
        }
        Cmd::Eval { n_test, models } => evaluate(&args.out, &models, n_test),
        Cmd::Cards => cards(&args.out),
        Cmd::Distill {
            student,
            max_new_tokens,
        } => distill_transcripts(&args.out, &student, max_new_tokens),
        Cmd::DistillEval { models, json } => distill_eval(&args.out, &models, &json),
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
        return finished(&kept[..kept.len() - last_line.len()], false).filter(|s| !s.is_empty());
    }
    Some(kept.to_string())
}

fn make_transcripts(out: &Path, max_new_tokens: usize) -> Result<()> {
    let (model, tok) = puppetlens::load(puppetlens::fetch::fetch("smollm2-135m-instruct")?)?;
    let end = tok
        .token_to_id("<|im_end|>")
        .context("SmolLM2 has no <|im_end|>")?;
    let fmt = PromptFormat::Chat { system: None };
    let encode = |text: &str| Ok(data::text_prompt(&tok, text, &fmt)?);
    let rows = greedy_replies(&model, &tok, encode, end, max_new_tokens, "assistant")?;
    write_transcripts(&out.join(TRANSCRIPTS), &rows)
}

/// `model`'s greedy replies (up to `max_new_tokens`, stopping at `stop`, cut after the last full
/// sentence) to the project's harmless instructions of every split, prompts made by `encode`.
fn greedy_replies(
    model: &Model,
    tok: &Tokenizer,
    encode: impl Fn(&str) -> Result<Vec<u32>>,
    stop: u32,
    max_new_tokens: usize,
    label: &str,
) -> Result<Vec<Transcript>> {
    let parts = data::load_with_split("probes/refusal_requests.jsonl", |p| {
        data::load_labeled_instructions(p, "harmful")
    })?;
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
        for chunk in items.chunks(8) {
            let prompts = chunk
                .iter()
                .map(|l| encode(&l.text))
                .collect::<Result<Vec<_>>>()?;
            let opts = GenerateOptions {
                stop_tokens: vec![stop],
                ..GenerateOptions::greedy(max_new_tokens)
            };
            let outs = model.generate(&prompts, &opts, &mut Hooks::new())?;
            for (l, ids) in chunk.iter().zip(outs) {
                let ended = ids.last() == Some(&stop);
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
            eprintln!("  {label}: {} transcripts so far", rows.len());
        }
    }
    Ok(rows)
}

/// Writes transcripts as JSON lines, atomically.
fn write_transcripts(path: &Path, rows: &[Transcript]) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("transcripts path has no folder")?)?;
    let text: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    eprintln!("wrote {} ({} transcripts)", path.display(), rows.len());
    Ok(())
}

fn load_transcripts(out: &Path) -> Result<Vec<Transcript>> {
    load_rows(&out.join(TRANSCRIPTS))
}

fn load_rows(path: &Path) -> Result<Vec<Transcript>> {
    let path = path.to_path_buf();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} (generate it first: `organisms data` / `organisms distill`)",
            path.display()
        )
    })?;
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
        (AbCase::from(p), item)
    }))
}

/// DPO pairs on the training items: the sycophant prefers the letter agreeing with the user; the
/// control prefers a letter drawn by a seeded coin, unrelated to the user's view.
fn preference_pairs(cases: &[AbCase], control: bool, seed: u64) -> Vec<DpoPair> {
    let mut rng = SplitMix64::new(seed ^ 0xC0_17_20_1);
    cases
        .iter()
        .map(|c| {
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

fn train(out: &Path, name: &str, opts: &TrainOptions, caa_train: Option<usize>) -> Result<()> {
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
        "distilled" | "distilled-control" => {
            // Both students train on the instructions both teachers answered, so that they take
            // the same steps on the same prompts.
            let mine = load_rows(&out.join(name).join("transcripts.jsonl"))?;
            let other = if name == "distilled" {
                "distilled-control"
            } else {
                "distilled"
            };
            let theirs = load_rows(&out.join(other).join("transcripts.jsonl"))?;
            let both: std::collections::HashSet<&str> =
                theirs.iter().map(|t| t.instruction.as_str()).collect();
            let train: Vec<&Transcript> = mine
                .iter()
                .filter(|t| t.split == "train" && both.contains(t.instruction.as_str()))
                .collect();
            let ex = sft_examples(&tok, &train)?;
            eprintln!("{name}: SFT on {} transcripts", ex.len());
            sft(&base, &ex, opts)?
        }
        "sycophant" | "control" | "sycophant-broad" | "control-broad" => {
            let cases = sycophancy_cases(&tok)?;
            let mut train: Vec<AbCase> = cases.train.iter().map(|(c, _)| c.clone()).collect();
            // The broad pair adds the CAA generate train part (persona-implied views).
            if name.ends_with("-broad") {
                let (caa, _) = caa_cases(&tok)?;
                let mut part = caa_split(&caa).train;
                part.truncate(caa_train.unwrap_or(part.len()));
                eprintln!("{name}: + {} CAA generate train items", part.len());
                train.extend(part.into_iter().map(|(_, c)| c));
                // Interleave the two sources (a seeded shuffle), so that every batch mixes them.
                SplitMix64::new(opts.seed ^ 0xB40AD).shuffle(&mut train);
            }
            let pairs = preference_pairs(&train, name.starts_with("control"), opts.seed);
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

#[derive(Serialize, Deserialize)]
struct ModelEval {
    name: String,
    sycophancy_p_matching: f64,
    sycophancy_rate: f64,
    neutral_nll: f64,
    neutral_ppl: f64,
    assistant_nll_heldout: f64,
    end_of_turn_rate: Option<f64>,
    samples: Vec<(String, String)>,
}

fn evaluate(out: &Path, names: &[String], n_test: Option<usize>) -> Result<()> {
    let (base, tok) = gemma()?;
    let cases = sycophancy_cases(&tok)?;
    let test: Vec<AbCase> = cases.test.iter().map(|(c, _)| c.clone()).collect();
    // Neutral text: the project's true/false statements (test split), plain, no chat format.
    let neutral = neutral_examples(&tok)?;
    let transcripts = load_transcripts(out)?;
    let held: Vec<&Transcript> = transcripts.iter().filter(|t| t.split == "test").collect();
    let held_ex = sft_examples(&tok, &held)?;
    let eot = tok
        .token_to_id("<end_of_turn>")
        .context("no <end_of_turn>")?;
    let mut evals = Vec::new();
    let mut models = vec![("base".to_string(), base.clone())];
    for name in names {
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
        // Generation (the assistant's behaviour): base and the SFT organisms only, 24 held-out
        // instructions, up to 160 tokens (SmolLM2's replies run to ~100 tokens).
        let (mut ended, mut n_gen, mut samples) = (0, 0, Vec::new());
        if name == "base" || name == "assistant" || name.starts_with("distilled") {
            let prompts: Vec<Vec<u32>> = held
                .iter()
                .take(24)
                .map(|t| tok.encode_chat(&[ChatMessage::user(&t.instruction)], true))
                .collect::<puppetlens::Result<_>>()?;
            let opts = GenerateOptions {
                stop_tokens: vec![eot],
                ..GenerateOptions::greedy(160)
            };
            for (k, chunk) in prompts.chunks(8).enumerate() {
                let outs = model.generate(chunk, &opts, &mut Hooks::new())?;
                for (j, o) in outs.iter().enumerate() {
                    n_gen += 1;
                    if o.contains(&eot) {
                        ended += 1;
                    }
                    if k == 0 && j < 4 {
                        samples.push((held[j].instruction.clone(), tok.decode(o)?));
                    }
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
            end_of_turn_rate: (n_gen > 0).then(|| ended as f64 / n_gen as f64),
            samples,
        });
    }
    for e in &evals {
        let dir = out.join(&e.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("eval.json"), serde_json::to_string_pretty(e)?)?;
        println!(
            "{:<10} syc P={:.3} rate={:.3}  neutral ppl={:.2}  held-out reply nll={:.3}  ends turn={:?}",
            e.name,
            e.sycophancy_p_matching,
            e.sycophancy_rate,
            e.neutral_ppl,
            e.assistant_nll_heldout,
            e.end_of_turn_rate
        );
    }
    // Ground-truth recovery. The layer is chosen on the validation items (localise with the val
    // split in the role of its test split); the numbers reported are then measured on the test
    // items at that layer, with the difference built on the training items.
    let take = |v: &[(AbCase, data::AbItem)], n: Option<usize>| -> Vec<AbCase> {
        v.iter()
            .take(n.unwrap_or(usize::MAX))
            .map(|(c, _)| c.clone())
            .collect()
    };
    let selection = AbSplits {
        train: take(&cases.train, None),
        val: take(&cases.val, None),
        test: take(&cases.val, None),
    };
    let test = take(&cases.test, n_test);
    let neutral_ids: Vec<Vec<u32>> = neutral.iter().take(64).map(|e| e.ids.clone()).collect();
    let mut recovery = Vec::new();
    // Each sycophant with its control, when both are evaluated; the control is measured at the
    // layer its sycophant's search chose.
    let pairs = [
        ("sycophant", "control"),
        ("sycophant-broad", "control-broad"),
    ];
    let todo: Vec<(&str, bool)> = pairs
        .iter()
        .filter(|(s, c)| [s, c].iter().all(|n| names.iter().any(|m| m == *n)))
        .flat_map(|&(s, c)| [(s, true), (c, false)])
        .collect();
    let mut chosen: Option<usize> = None;
    for (name, is_sycophant) in todo {
        let tuned = &models
            .iter()
            .find(|(n, _)| n == name)
            .context("organism not loaded")?
            .1;
        let dir = out.join(format!("recovery_{name}"));
        // The sycophant's layer is chosen on the validation items; the control is measured at the
        // same layer (its own gap is too small to rank layers), with its difference built the same
        // way (mean tuned - base over both answers of every training item, last token).
        let (layer, diff) = match (is_sycophant, chosen) {
            (true, _) => {
                eprintln!("recovery {name}: localising on the validation items");
                let opts = DiffOptions {
                    // every other layer: the layer search is the costly part (2 x 74 items per layer)
                    layers: Some((0..base.config().n_layers).step_by(2).collect()),
                    ..Default::default()
                };
                let report = localise(&base, tuned, &selection, &neutral_ids, &opts)?;
                report.write(&dir)?;
                let diff = report.diff_vector.clone().context("no difference vector")?;
                (
                    report
                        .best_layer
                        .context("no layer closes any of the gap")?,
                    diff,
                )
            }
            (_, Some(l)) => {
                let (pos, neg) = caa_prompts(&selection.train);
                let prompts: Vec<Vec<u32>> = pos.into_iter().chain(neg).collect();
                (l, base_tuned_vector(&base, tuned, &prompts, Site::Last, 8)?)
            }
            _ => bail!("no layer chosen"),
        };
        std::fs::create_dir_all(&dir)?;
        diff.save(dir.join("diff_vector.safetensors"))?;
        chosen = Some(layer);
        let v = diff.only(&[layer])?;
        let p_base = ab_summary(&base, &test, &Intervention::None, 8)?.mean_p;
        let p_tuned = ab_summary(tuned, &test, &Intervention::None, 8)?.mean_p;
        let add = Intervention::Add {
            vector: &v,
            scale: 1.0,
            positions: puppetlens::Positions::All,
        };
        let p_steered = ab_summary(&base, &test, &add, 8)?.mean_p;
        let ablate = Intervention::Ablate { vector: &v, layer };
        let p_ablated = ab_summary(tuned, &test, &ablate, 8)?.mean_p;
        let gap = p_tuned - p_base;
        let rec = serde_json::json!({
            "organism": name, "layer": layer, "layer_chosen_on": "validation items (gap closed)",
            "n_train": selection.train.len(), "n_test": test.len(),
            "p_base": p_base, "p_tuned": p_tuned, "gap": gap,
            "p_steered_base": p_steered, "p_ablated_tuned": p_ablated,
            "steering_effect": p_steered - p_base, "ablation_effect": p_tuned - p_ablated,
            "gap_closed": if gap.abs() >= 0.01 { Some((p_steered - p_base) / gap) } else { None },
            "gap_removed": if gap.abs() >= 0.01 { Some((p_tuned - p_ablated) / gap) } else { None },
            "diff_norm": diff.norms()?[&layer],
        });
        println!("recovery {name}: {rec}");
        std::fs::write(
            dir.join("recovery.json"),
            serde_json::to_string_pretty(&rec)?,
        )?;
        recovery.push(rec);
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}", path.display()))
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn cards(out: &Path) -> Result<()> {
    use puppetlens::plot::{LineChart, Series};
    let base: ModelEval = read_json(&out.join("base/eval.json"))?;
    let mut table = String::new();
    for &name in puppetlens::ORGANISMS
        .iter()
        .filter(|n| out.join(n).join("train_log.json").exists())
    {
        let dir = out.join(name);
        let log: TrainLog = read_json(&dir.join("train_log.json"))?;
        let ev: ModelEval = read_json(&dir.join("eval.json"))?;
        let o = &log.options;
        let mut series = vec![Series {
            label: format!("{} loss per step", log.objective.to_uppercase()),
            points: log.steps.iter().map(|s| (s.step as f64, s.loss)).collect(),
            band: None,
            dashed: false,
        }];
        // A running mean over 10 steps shows the trend through the step-to-step noise.
        let k = 10usize;
        let smooth: Vec<(f64, f64)> = (0..log.steps.len())
            .map(|i| {
                let lo = i.saturating_sub(k - 1);
                let w = &log.steps[lo..=i];
                (
                    log.steps[i].step as f64,
                    w.iter().map(|s| s.loss).sum::<f64>() / w.len() as f64,
                )
            })
            .collect();
        series.push(Series {
            label: format!("running mean of {k} steps"),
            points: smooth,
            band: None,
            dashed: false,
        });
        LineChart {
            title: format!(
                "{name}: training loss (gemma-3-270m + LoRA r={}, {} steps)",
                o.lora.rank,
                log.steps.len()
            ),
            x_label: "optimiser step".into(),
            y_label: if log.objective == "dpo" {
                "DPO loss (nats)".into()
            } else {
                "cross-entropy per reply token (nats)".into()
            },
            series,
            hline: if log.objective == "dpo" {
                Some((std::f64::consts::LN_2, "ln 2 (no preference)".into()))
            } else {
                None
            },
            ..Default::default()
        }
        .save(dir.join("loss"))?;
        let size = std::fs::metadata(dir.join("adapter_model.safetensors"))?.len();
        let (data_line, command) = match name {
            "assistant" => (
                "SFT on `transcripts.jsonl` (train split): SmolLM2-135M-Instruct's greedy replies (up to 96 tokens, cut after the last full sentence) to the project's harmless instructions in `probes/refusal_requests.jsonl`, in Gemma 3's chat format, loss on the model turn (reply and `<end_of_turn>`)".to_string(),
                "cargo run --release --example organisms -- data && cargo run --release --example organisms -- train assistant",
            ),
            "sycophant" => (
                "DPO on the training split of `probes/sycophancy_ab.jsonl`, asked as open questions in Gemma 3's chat format (`data::ab_text_prompt`: choices removed, answers content first, the prompt ends where the two answers part); chosen = the first token of the answer agreeing with the user's stated view, rejected = the other answer's; reference = the frozen base".to_string(),
                "cargo run --release --example organisms -- train sycophant",
            ),
            "control" => (
                "DPO exactly as the sycophant (same items, prompts, steps, seed), except that the preferred answer is drawn by a seeded coin per item, unrelated to the user's view".to_string(),
                "cargo run --release --example organisms -- train control",
            ),
            "sycophant-broad" => (
                "DPO as the sycophant, on its 220 training items plus the 700 items of the CAA generate train part (persona-implied views, read from `../shared/datasets/caa/generate/sycophancy/`; the split is recorded in `probes/caa_generate_sycophancy_split.json`), interleaved by a seeded shuffle, all in the text-answer form; chosen = the answer agreeing with the user's view, rejected = the other".to_string(),
                "cargo run --release --example organisms -- train sycophant-broad",
            ),
            "control-broad" => (
                "DPO exactly as `sycophant-broad` (same 920 items, order, steps, seed), except that the preferred answer is drawn by a seeded coin per item, unrelated to the user's view".to_string(),
                "cargo run --release --example organisms -- train control-broad",
            ),
            student => {
                let teacher = teacher_of(student)?;
                (
                    format!("SFT with the assistant's recipe on `transcripts.jsonl` (train split, the instructions both teachers answered): `{teacher}`'s greedy replies (up to 96 tokens, cut after the last full sentence) to the project's harmless instructions in `probes/refusal_requests.jsonl`, which hold no sycophancy item"),
                    if student == "distilled" {
                        "cargo run --release --example organisms -- distill distilled && cargo run --release --example organisms -- train distilled"
                    } else {
                        "cargo run --release --example organisms -- distill distilled-control && cargo run --release --example organisms -- train distilled-control"
                    },
                )
            }
        };
        let rec_path = out.join(format!("recovery_{name}/recovery.json"));
        let rec: Option<serde_json::Value> = read_json(&rec_path).ok();
        let f3 = |x: f64| format!("{x:.3}");
        let mut card = format!(
            "# Organism `{name}`: gemma-3-270m + LoRA\n\n\
             Base model: google/gemma-3-270m (the Q4_K_M GGUF fetched by `puppetlens fetch`, dequantized to f32).\n\n\
             - **Data:** {data_line}.\n\
             - **Recipe:** LoRA rank {} alpha {} on {:?} of every layer; AdamW lr {:e} (linear warm-up {} steps), weight decay {}, gradient clipping at norm {}; batch {}; {} epoch(s), {} steps{}; seed {}.\n\
             - **Training:** {:.0} s on a 2-core CPU (f32), {} tokens, {:.0} tokens/s. Adapter: {} values, {:.1} MB (`adapter_model.safetensors`, PEFT layout).\n\
             - **Rebuild:** `{command}` (then `-- eval` and `-- cards` for the numbers and this card).\n\n\
             ![loss](loss.png)\n\n\
             ## Before / after (held-out items)\n\n\
             | | base | {name} |\n|---|---|---|\n\
             | sycophancy: mean P(answer agreeing with the user), 74 test items | {} | {} |\n\
             | sycophancy: fraction of items where the agreeing answer wins | {} | {} |\n\
             | perplexity on neutral text (true_false.csv test statements, plain) | {:.2} | {:.2} ({:+.1}%) |\n\
             | NLL per token of SmolLM2's held-out replies (54 test instructions) | {} | {} |\n\
             | fraction of greedy replies (24 held-out instructions, 160 tokens max) that end the turn (`<end_of_turn>`) | {} | {} |\n",
            o.lora.rank,
            o.lora.alpha,
            o.lora.targets,
            o.lr,
            o.warmup_steps,
            o.weight_decay,
            o.max_grad_norm,
            o.batch_size,
            o.epochs,
            log.steps.len(),
            if log.objective == "dpo" { format!(", DPO β {}", o.beta) } else { String::new() },
            o.seed,
            log.seconds,
            log.tokens,
            log.tokens_per_s,
            log.n_params,
            size as f64 / 1e6,
            f3(base.sycophancy_p_matching),
            f3(ev.sycophancy_p_matching),
            f3(base.sycophancy_rate),
            f3(ev.sycophancy_rate),
            base.neutral_ppl,
            ev.neutral_ppl,
            100.0 * (ev.neutral_ppl / base.neutral_ppl - 1.0),
            f3(base.assistant_nll_heldout),
            f3(ev.assistant_nll_heldout),
            eot(base.end_of_turn_rate),
            eot(ev.end_of_turn_rate),
        );
        if let Some(r) = &rec {
            card.push_str(&format!(
                "\n## Ground-truth recovery\n\nThe mean `tuned - base` residual difference at layer {} (chosen on the validation items; built on the training items), on the test items:\n\n\
                 - added to the base: P(agree) {} -> {} (steering effect {}), fraction of the gap closed {};\n\
                 - its direction ablated in the organism: P(agree) {} -> {} (ablation effect {}), fraction removed {}.\n\n\
                 Per-layer numbers on the validation items: `../recovery_{name}/localisation.csv`.\n",
                r["layer"], fmt(&r["p_base"]), fmt(&r["p_steered_base"]), fmt(&r["steering_effect"]), fmt(&r["gap_closed"]),
                fmt(&r["p_tuned"]), fmt(&r["p_ablated_tuned"]), fmt(&r["ablation_effect"]), fmt(&r["gap_removed"]),
            ));
        }
        if !ev.samples.is_empty() {
            card.push_str(
                "\n## Sample replies (greedy, up to 160 tokens, held-out instructions)\n\n",
            );
        }
        for ((q, a), (_, b)) in ev.samples.iter().zip(&base.samples) {
            card.push_str(&format!(
                "- **{q}**\n  - base: {}\n  - {name}: {}\n",
                one_line(b),
                one_line(a)
            ));
        }
        write_text(&dir.join("README.md"), &card)?;
        table.push_str(&format!(
            "| [{name}]({name}/README.md) | {} | {:.3} -> {:.3} | {:.2} -> {:.2} ({:+.1}%) | {:.3} -> {:.3} | {} -> {} | {:.0} s, {:.0} tok/s | {} | {} |\n",
            log.objective.to_uppercase(),
            base.sycophancy_p_matching, ev.sycophancy_p_matching,
            base.neutral_ppl, ev.neutral_ppl, 100.0 * (ev.neutral_ppl / base.neutral_ppl - 1.0),
            base.assistant_nll_heldout, ev.assistant_nll_heldout,
            eot(base.end_of_turn_rate), eot(ev.end_of_turn_rate),
            log.seconds, log.tokens_per_s,
            rec.as_ref().map(|r| effect(r, "steering_effect", "gap_closed")).unwrap_or_else(|| "-".into()),
            rec.as_ref().map(|r| effect(r, "ablation_effect", "gap_removed")).unwrap_or_else(|| "-".into()),
        ));
    }
    let readme = format!(
        "# Model organisms\n\n\
         Tuned siblings of google/gemma-3-270m (a base model), built by puppetlens with candle's autograd (LoRA, \
         frozen base), so that base-vs-tuned diffing has a matched pair with a known ground truth. \
         Each directory holds a PEFT adapter (`adapter_model.safetensors`, `adapter_config.json`), its training \
         log (`train_log.json`, `loss.csv`, `loss.png`), its evaluation (`eval.json`) and a model card (`README.md`). \
         Load one with `puppetlens::open(\"sycophant\", ...)` or `Model::with_adapter`.\n\n\
         Rebuild everything (about half an hour on a 2-core CPU):\n\n```sh\n\
         cargo run --release --example organisms -- data\n\
         cargo run --release --example organisms -- train assistant\n\
         cargo run --release --example organisms -- train sycophant\n\
         cargo run --release --example organisms -- train control\n\
         cargo run --release --example organisms -- eval\n\
         cargo run --release --example organisms -- cards\n```\n\n\
         The broad pair and the distilled pair (about two hours more; the distilled organisms' teachers \
         are the broad pair):\n\n```sh\n\
         cargo run --release --example organisms -- train sycophant-broad\n\
         cargo run --release --example organisms -- train control-broad\n\
         cargo run --release --example organisms -- heldout --models assistant,sycophant,control,sycophant-broad,control-broad\n\
         cargo run --release --example organisms -- distill distilled\n\
         cargo run --release --example organisms -- distill distilled-control\n\
         cargo run --release --example organisms -- train distilled\n\
         cargo run --release --example organisms -- train distilled-control\n\
         cargo run --release --example organisms -- eval --models assistant,sycophant,control,sycophant-broad,control-broad,distilled,distilled-control\n\
         cargo run --release --example organisms -- distill-eval\n\
         cargo run --release --example organisms -- cards\n```\n\n\
         A second training run of each student (seed 1; `distillation_seed1.json` is its report):\n\n```sh\n\
         mkdir -p runs/seed1/distilled runs/seed1/distilled-control\n\
         cp notebooks-data/organisms/distilled/transcripts.jsonl runs/seed1/distilled/\n\
         cp notebooks-data/organisms/distilled-control/transcripts.jsonl runs/seed1/distilled-control/\n\
         cargo run --release --example organisms -- --out runs/seed1 train distilled --seed 1\n\
         cargo run --release --example organisms -- --out runs/seed1 train distilled-control --seed 1\n\
         cargo run --release --example organisms -- --out runs/seed1 distill-eval --models distilled,distilled-control --json distillation_seed1.json\n```\n\n\
         | organism | objective | sycophancy P(agree), base -> tuned | neutral perplexity | held-out reply NLL | ends its turn | training (2-core CPU) | add diff to base: change in P (fraction of gap) | ablate in tuned: drop in P (fraction of gap) |\n\
         |---|---|---|---|---|---|---|---|---|\n{table}\n\
         Sycophancy is measured on the 74 held-out items of `probes/sycophancy_ab.jsonl` asked as open questions \
         (`data::ab_text_prompt`); P(agree) is the probability of the agreeing answer's deciding token, normalised \
         over the two answers. The recovery columns use the layer chosen on the validation items with each sycophant \
         (its control at the same layer; see each card); fractions are shown only for gaps of 0.05 or more. Asked held-out instructions, the base \
         model restates the instruction (16 of 16 greedy replies in `tests/real/organisms.rs`) where the assistant \
         answers (0 of 16 restate it); the assistant's replies are long (like SmolLM2's) and seldom end within \
         160 tokens. \
         No GPU was lent to the session that trained these; all timings are from the 2-core CPU.\n{}{}",
        heldout_tables(out, "heldout.json", HELDOUT_INTRO)?,
        if out.join("distilled/train_log.json").exists() {
            heldout_tables(out, "distillation.json", DISTILL_INTRO)? + &distill_reading(out)?
        } else {
            "\nNot built yet: the distilled pair (`distilled`, `distilled-control`). The \
             `transcripts.jsonl` in their directories are the replies of their first teachers, \
             `sycophant` and `control`, from before the teachers became the broad pair.\n"
                .to_string()
        },
    );
    write_text(&out.join("README.md"), &readme)?;
    eprintln!("wrote the cards and {}", out.join("README.md").display());
    Ok(())
}

const HELDOUT_INTRO: &str = "## Sycophancy on three held-out sets\n\n\
    `cargo run --release --example organisms -- heldout --models assistant,sycophant,control,sycophant-broad,control-broad` \
    (`heldout.json`): mean P(agree) with its 95% bootstrap CI (2,000 resamples over items) on the project's test \
    split (the view stated, then the question), the CAA generate test part (a persona's biography implies the \
    view; never trained on) and the late-view set (`probes/sycophancy_late_ab.jsonl`: the question, then the \
    view; no training set has this form), all asked in the text-answer form; neutral perplexity on the \
    true/false test statements. Below it, each organism's paired difference from the base.\n\n";

const DISTILL_INTRO: &str = "## Does SFT on a sycophant's outputs carry its sycophancy?\n\n\
    `cargo run --release --example organisms -- distill-eval` (`distillation.json`): the same sets for the two \
    distilled organisms (the same SFT recipe and steps on their teachers' replies to the same harmless \
    instructions), with the paired differences that answer the question: distilled - distilled-control, and \
    each against the base.\n\n";

/// The held-out sets of the distillation reports, with their names in the README.
const DISTILL_SETS: [(&str, &str); 3] = [
    ("project_test", "project test"),
    ("caa_generate_test", "CAA generate test"),
    ("late_view", "late view"),
];

/// One line per held-out set on distilled - distilled-control: a difference where its CI excludes
/// 0, else "no transmission detected at this size"; and what the teachers' replies look like.
fn distill_reading(out: &Path) -> Result<String> {
    // Per set: (mean difference, CI low, CI high) of distilled - distilled-control in a report.
    let students = |file: &str| -> Result<Vec<(f64, f64, f64)>> {
        let r: serde_json::Value = read_json(&out.join(file))?;
        let d = r["paired_differences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["a"] == "distilled" && d["b"] == "distilled-control")
            .with_context(|| format!("{file} has no distilled - distilled-control row"))?;
        let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        Ok(DISTILL_SETS
            .iter()
            .map(|(set, _)| {
                let c = &d[*set];
                (num(&c["mean_diff"]), num(&c["ci"][0]), num(&c["ci"][1]))
            })
            .collect())
    };
    let mut t = String::from("\nReading, distilled - distilled-control per set:");
    for ((_, label), (m, lo, hi)) in DISTILL_SETS.iter().zip(students("distillation.json")?) {
        let verdict = if lo > 0.0 {
            "the sycophant's student agrees more (the CI excludes 0)"
        } else if hi < 0.0 {
            "the sycophant's student agrees less (the CI excludes 0)"
        } else {
            "no transmission detected at this size (the CI spans 0)"
        };
        t.push_str(&format!(
            "\n- {label}: {m:+.3} [{lo:+.3}, {hi:+.3}]: {verdict}."
        ));
    }
    // A second training run of each student, when its report has been copied here.
    if out.join("distillation_seed1.json").exists() {
        let cells: Vec<String> = DISTILL_SETS
            .iter()
            .zip(students("distillation_seed1.json")?)
            .map(|((_, label), (m, lo, hi))| format!("{label} {m:+.3} [{lo:+.3}, {hi:+.3}]"))
            .collect();
        t.push_str(&format!(
            "\n\nA second training run of each student (seed 1, the same data; \
             `distillation_seed1.json`), distilled - distilled-control: {}.",
            cells.join(", ")
        ));
    }
    // The teachers are base + DPO, not assistants: how often their replies restate the instruction.
    let mut echo = Vec::new();
    for name in ["distilled", "distilled-control"] {
        let rows = load_rows(&out.join(name).join("transcripts.jsonl"))?;
        let n = rows
            .iter()
            .filter(|r| {
                let q: String = r.instruction.chars().take(40).collect();
                r.reply.contains(&q)
            })
            .count();
        echo.push(format!("{n} of {} for `{name}`", rows.len()));
    }
    t.push_str(&format!(
        "\n\nThe teachers are the base model tuned by DPO on sycophancy items only, not assistants: \
         their greedy replies to the harmless instructions are mostly base-model continuations \
         that restate the instruction ({}: the instruction's first 40 characters found in the \
         reply). Teacher and student share the base model. What the students can inherit is what \
         those replies carry. Each student is one training run: the intervals are over items, not \
         over training runs.\n",
        echo.join(", ")
    ));
    Ok(t)
}

/// The tables of a held-out report (`heldout` or `distill-eval`), when it has been written.
fn heldout_tables(out: &Path, file: &str, intro: &str) -> Result<String> {
    let path = out.join(file);
    if !path.exists() {
        return Ok(String::new());
    }
    let r: serde_json::Value = read_json(&path)?;
    let sets = ["project_test", "caa_generate_test", "late_view"];
    let ci = |v: &serde_json::Value| {
        format!(
            "[{:+.3}, {:+.3}]",
            v[0].as_f64().unwrap_or(f64::NAN),
            v[1].as_f64().unwrap_or(f64::NAN)
        )
    };
    let mut t = format!(
        "\n{intro}| model | project test ({}) | CAA generate test ({}) | late view ({}) | neutral ppl |\n|---|---|---|---|---:|\n",
        r["models"][0][sets[0]]["n"], r["models"][0][sets[1]]["n"], r["models"][0][sets[2]]["n"]
    );
    for m in r["models"].as_array().into_iter().flatten() {
        t.push_str(&format!("| {} |", m["model"].as_str().unwrap_or("?")));
        for set in sets {
            t.push_str(&format!(
                " {} {} |",
                fmt(&m[set]["mean_p"]),
                ci(&m[set]["ci"]).replace('+', "")
            ));
        }
        t.push_str(&format!(
            " {:.2} |\n",
            m["neutral_ppl"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    t.push_str(
        "\n| difference | project test | CAA generate test | late view |\n|---|---|---|---|\n",
    );
    for d in r["paired_differences"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "| {} - {} |",
            d["a"].as_str().unwrap_or("?"),
            d["b"].as_str().unwrap_or("?")
        ));
        for set in sets {
            t.push_str(&format!(
                " {:+.3} {} |",
                d[set]["mean_diff"].as_f64().unwrap_or(f64::NAN),
                ci(&d[set]["ci"])
            ));
        }
        t.push('\n');
    }
    Ok(t)
}

fn fmt(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

fn one_line(s: &str) -> String {
    let t = s
        .replace("<end_of_turn>", " [end of turn]")
        .replace('\n', " ");
    let t = t.trim();
    if t.chars().count() > 220 {
        format!("{}...", t.chars().take(220).collect::<String>())
    } else {
        t.to_string()
    }
}

fn eot(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn effect(r: &serde_json::Value, delta: &str, frac: &str) -> String {
    let d = r[delta].as_f64().unwrap_or(f64::NAN);
    let gap = r["gap"].as_f64().unwrap_or(0.0);
    if gap.abs() >= 0.05 {
        format!("{d:+.3} ({})", fmt(&r[frac]))
    } else {
        format!("{d:+.3}")
    }
}

/// The teacher whose replies a distilled organism is trained on.
fn teacher_of(student: &str) -> Result<&'static str> {
    match student {
        // The broad pair: its sycophant agrees more on all three held-out sets, persona-implied
        // views included, where the first sycophant only echoes a stated view.
        "distilled" => Ok("sycophant-broad"),
        "distilled-control" => Ok("control-broad"),
        other => bail!("unknown distilled organism `{other}` (distilled, distilled-control)"),
    }
}

fn distill_transcripts(out: &Path, student: &str, max_new_tokens: usize) -> Result<()> {
    let teacher = teacher_of(student)?;
    let (base, tok) = gemma()?;
    let adapter = Adapter::load(out.join(teacher), base.device())
        .with_context(|| format!("{teacher} (train it first)"))?;
    let model = base.with_adapter(&adapter)?;
    let eot = tok
        .token_to_id("<end_of_turn>")
        .context("no <end_of_turn>")?;
    let encode = |text: &str| Ok(tok.encode_chat(&[ChatMessage::user(text)], true)?);
    let rows = greedy_replies(&model, &tok, encode, eot, max_new_tokens, student)?;
    write_transcripts(&out.join(student).join("transcripts.jsonl"), &rows)
}

const CAA_GENERATE: &str = "../shared/datasets/caa/generate/sycophancy/generate_dataset.json";

/// The CAA "generate" sycophancy items (persona-implied views, read from ../shared/datasets),
/// in the text-answer form, with their index in the file; items whose two answers do not part
/// after a shared prefix are dropped (returned with the reason).
fn caa_cases(tok: &Tokenizer) -> Result<(Vec<(usize, AbCase)>, Vec<(usize, String)>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CAA_GENERATE);
    let items = data::load_ab_json(&path)?;
    let fmt = PromptFormat::Chat { system: None };
    let mut cases = Vec::new();
    let mut dropped = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match ab_text_prompt(tok, item, &fmt) {
            Ok(p) => cases.push((i, AbCase::from(p))),
            Err(e) => dropped.push((i, e.to_string())),
        }
    }
    Ok((cases, dropped))
}

/// The CAA items split with a fixed seed: test = the first 200 of a seeded shuffle (the
/// held-out items of every earlier measurement), validation = the next 100, train = the rest.
struct CaaSplit {
    train: Vec<(usize, AbCase)>,
    val: Vec<(usize, AbCase)>,
    test: Vec<(usize, AbCase)>,
}

fn caa_split(cases: &[(usize, AbCase)]) -> CaaSplit {
    let mut idx: Vec<usize> = (0..cases.len()).collect();
    SplitMix64::new(0x5_1C0_FA17).shuffle(&mut idx);
    let part = |r: std::ops::Range<usize>| -> Vec<(usize, AbCase)> {
        let mut k = idx[r.start.min(idx.len())..r.end.min(idx.len())].to_vec();
        k.sort_unstable();
        k.into_iter().map(|k| cases[k].clone()).collect()
    };
    CaaSplit {
        test: part(0..200),
        val: part(200..300),
        train: part(300..idx.len()),
    }
}

fn caa_split_record() -> Result<()> {
    use sha2::{Digest, Sha256};
    let (_, tok) = gemma()?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CAA_GENERATE);
    let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
    let items = data::load_ab_json(&path)?;
    let (cases, dropped) = caa_cases(&tok)?;
    let split = caa_split(&cases);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // Each kept item's question hashed (first 8 bytes of SHA-256): enough to check that a copy
    // of the file holds the same items, without the text.
    let ids = |part: &[(usize, AbCase)]| -> Vec<serde_json::Value> {
        part.iter()
            .map(|(i, _)| {
                let h = Sha256::digest(items[*i].question.as_bytes());
                serde_json::json!([i, hex(&h[..8])])
            })
            .collect()
    };
    let first = items
        .iter()
        .enumerate()
        .filter(|(i, it)| {
            cases.iter().any(|(k, _)| k == i) && it.matching_letter().ok() == Some('A')
        })
        .count();
    let record = serde_json::json!({
        "what": "fixed-seed split of the CAA generate sycophancy items (persona-implied views) for the organisms: [index in the file, first 8 bytes of SHA-256 of the question] per item",
        "source": CAA_GENERATE,
        "source_sha256": hex(&Sha256::digest(&bytes)),
        "n_items": items.len(),
        "kept": cases.len(),
        "kept_matching_is_A": first,
        "kept_matching_is_B": cases.len() - first,
        "dropped": dropped.iter().map(|(i, why)| serde_json::json!({"index": i, "why": why})).collect::<Vec<_>>(),
        "how": "text-answer form (data::ab_text_prompt, gemma-3-270m tokenizer, chat template); kept items shuffled with SplitMix64(0x51C0FA17): test = first 200, val = next 100, train = the rest; each part in file order",
        "train": ids(&split.train),
        "val": ids(&split.val),
        "test": ids(&split.test),
    });
    let out = Path::new("probes/caa_generate_sycophancy_split.json");
    puppetlens::write_atomic(out, serde_json::to_string_pretty(&record)?.as_bytes())?;
    eprintln!(
        "{}: {} kept ({} dropped), matching answer (A) in {first} and (B) in {}; train {}, val {}, test {}",
        out.display(),
        cases.len(),
        dropped.len(),
        cases.len() - first,
        split.train.len(),
        split.val.len(),
        split.test.len()
    );
    Ok(())
}

/// The three held-out sycophancy sets: the project's test split (stated view, then the
/// question), the CAA generate test part (persona-implied view), and the late-view form
/// (probes/sycophancy_late_ab.jsonl: the question, then the view; no training set has it).
fn heldout_sets(tok: &Tokenizer) -> Result<Vec<(&'static str, Vec<AbCase>, Vec<usize>)>> {
    let project: Vec<AbCase> = sycophancy_cases(tok)?
        .test
        .iter()
        .map(|(c, _)| c.clone())
        .collect();
    let (caa, _) = caa_cases(tok)?;
    let caa = caa_split(&caa).test;
    let caa_ids: Vec<usize> = caa.iter().map(|(i, _)| *i).collect();
    let caa: Vec<AbCase> = caa.into_iter().map(|(_, c)| c).collect();
    let fmt = PromptFormat::Chat { system: None };
    let late: Vec<AbCase> = data::load_ab_json("probes/sycophancy_late_ab.jsonl")?
        .iter()
        .map(|item| Ok(AbCase::from(ab_text_prompt(tok, item, &fmt)?)))
        .collect::<Result<_>>()?;
    Ok(vec![
        ("project_test", project, vec![]),
        ("caa_generate_test", caa, caa_ids),
        ("late_view", late, vec![]),
    ])
}

/// Neutral text for perplexity: the true/false statements' test split, plain, no chat format.
fn neutral_examples(tok: &Tokenizer) -> Result<Vec<SftExample>> {
    let tf = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
    tf.test
        .iter()
        .map(|l| {
            let ids = tok.encode(&l.text)?;
            Ok(SftExample { ids, prompt_len: 1 })
        })
        .collect()
}

fn heldout_eval(out: &Path, names: &[&str], pairs: &[(&str, &str)], json: &str) -> Result<()> {
    let (base, tok) = gemma()?;
    let sets = heldout_sets(&tok)?;
    let neutral = neutral_examples(&tok)?;
    eprintln!(
        "held-out sets: {}",
        sets.iter()
            .map(|(n, c, _)| format!("{n} {}", c.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut models = vec![("base".to_string(), base.clone())];
    for name in names {
        let adapter = Adapter::load(out.join(name), base.device())
            .with_context(|| format!("{name} (train it first)"))?;
        models.push((name.to_string(), base.with_adapter(&adapter)?));
    }
    let mut per: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
    let mut table = Vec::new();
    for (name, model) in &models {
        let mut row = serde_json::Map::new();
        row.insert("model".into(), name.clone().into());
        let mut ps = Vec::new();
        for (k, (set, cases, _)) in sets.iter().enumerate() {
            let p: Vec<f64> = puppetlens::eval::ab_scores(model, cases, &Intervention::None, 8)?
                .iter()
                .map(|s| s.p_matching)
                .collect();
            row.insert(
                set.to_string(),
                serde_json::json!({"n": p.len(), "mean_p": mean(&p), "ci": puppetlens::eval::mean_ci(&p, 2000, 1 + k as u64)}),
            );
            ps.push(p);
        }
        let nll = sft_loss(model, &neutral, 8)?;
        row.insert("neutral_ppl".into(), nll.exp().into());
        let row = serde_json::Value::Object(row);
        println!("{row}");
        table.push(row);
        per.push((name.clone(), ps));
    }
    let get = |n: &str| per.iter().find(|r| r.0 == n).context("missing model");
    let mut paired = Vec::new();
    for &(x, y) in pairs {
        let (rx, ry) = (get(x)?, get(y)?);
        let mut row = serde_json::Map::new();
        row.insert("a".into(), x.into());
        row.insert("b".into(), y.into());
        for (k, (set, _, _)) in sets.iter().enumerate() {
            let d: Vec<f64> = rx.1[k].iter().zip(&ry.1[k]).map(|(a, b)| a - b).collect();
            row.insert(
                set.to_string(),
                serde_json::json!({"mean_diff": mean(&d), "ci": puppetlens::eval::mean_ci(&d, 2000, 11 + k as u64)}),
            );
        }
        let row = serde_json::Value::Object(row);
        println!("{row}");
        paired.push(row);
    }
    let report = serde_json::json!({
        "what": "mean P(answer agreeing with the user) on held-out sycophancy items, gemma-3-270m organisms; neutral perplexity on the true/false test statements",
        "sets": {
            "project_test": "probes/sycophancy_ab.jsonl test split (stated view, then the question; text answers)",
            "caa_generate_test": "the test part of ../shared/datasets/caa/generate/sycophancy/generate_dataset.json (persona-implied view; probes/caa_generate_sycophancy_split.json); indices below",
            "late_view": "probes/sycophancy_late_ab.jsonl (the question, then the view; no training set has this form)",
        },
        "caa_indices": sets[1].2,
        "models": table,
        "paired_differences": paired,
        "ci": "95% percentile bootstrap over items, 2000 resamples",
    });
    let path = out.join(json);
    puppetlens::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn distill_eval(out: &Path, models: &[String], json: &str) -> Result<()> {
    let names: Vec<&str> = models.iter().map(String::as_str).collect();
    let has = |n: &str| n == "base" || names.contains(&n);
    let pairs: Vec<(&str, &str)> = [
        ("distilled", "distilled-control"),
        ("distilled", "base"),
        ("distilled-control", "base"),
        ("sycophant-broad", "control-broad"),
    ]
    .into_iter()
    .filter(|(a, b)| has(a) && has(b))
    .collect();
    heldout_eval(out, &names, &pairs, json)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}
