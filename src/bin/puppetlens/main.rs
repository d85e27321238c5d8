//! The `puppetlens` command line: each subcommand parses its flags (`args.rs`), opens its models,
//! calls one library function and prints what it returns; the logic lives in the library.
//!
//! Models are named as [`puppetlens::open`] resolves them: a known checkpoint
//! (`smollm2-135m-instruct`, `gemma-3-270m`, fetched on first use), an organism (`assistant`,
//! `sycophant`, `control`), `BASE+ADAPTER_DIR`, or a path (GGUF file, Hugging Face directory, PEFT
//! adapter directory).
//!
//! Datasets are any of the project's formats, told apart by their content:
//! - a `.csv` file with a `statement,label` (or `text,label`) header: labeled statements;
//! - JSON(L) records with `positive`/`negative`: contrast pairs (positive = label true);
//! - JSON(L) records with `question`/`answer_matching_behavior`/`answer_not_matching_behavior`:
//!   CAA A/B questions (the prompt with the matching letter appended = label true, with the other
//!   letter = false);
//! - JSON(L) records with `instruction`/`label`: labeled instructions (`--positive-label` names
//!   the label counted as true).
//!
//! A file whose records carry a `split` field (column) is split as recorded; any other file is split
//! 60/20/20 (train/val/test), stratified by class, with seed 0 (`data::split_stratified`).
//!
//! Every failure prints one line `error: ...` on stderr and exits with status 1.

use std::path::Path;
use std::process::ExitCode;

use candle_core::{DType, Device};
use clap::Parser;
use puppetlens::data::{self, Dataset, NumericDataset};
use puppetlens::dict;
use puppetlens::eval;
use puppetlens::extract;
use puppetlens::patch;
use puppetlens::probe;
use puppetlens::report;
use puppetlens::steer;
use puppetlens::train;
use puppetlens::{fetch, lens, LoadOptions, Model, Opened, Result, SteeringVector, Tokenizer};

mod args;
use args::*;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// An A/B question file, or an error naming `command`.
fn load_ab(path: &Path, command: &str) -> Result<Dataset> {
    Dataset::load_ab(path, command).map(|(ds, _)| ds)
}

/// Neutral texts (`--neutral FILE`), none when not given.
fn neutral_texts(path: Option<&Path>) -> Result<Vec<String>> {
    Ok(path
        .map(data::load_instructions)
        .transpose()?
        .unwrap_or_default())
}

/// `wrote A` per path.
fn wrote<P: AsRef<Path>>(files: impl IntoIterator<Item = P>) {
    for f in files {
        println!("wrote {}", f.as_ref().display());
    }
}

/// The global options every command sees.
struct Ctx {
    device: Device,
    batch_size: usize,
    progress: bool,
}

impl Ctx {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            device: self.device.clone(),
            ..LoadOptions::default()
        }
    }

    /// Opens a model by name or path (see [`puppetlens::open`]) on the chosen device.
    fn open(&self, spec: &str) -> Result<(Model, Tokenizer)> {
        puppetlens::open(spec, &self.load_options())
    }

    /// A base model and its tuned sibling (see [`puppetlens::open_pair`]).
    fn open_pair(&self, base: &str, tuned: &str) -> Result<(Opened, Opened)> {
        puppetlens::open_pair(base, tuned, &self.load_options())
    }
}

// ---------------------------------------------------------------------------------------------
// Commands: parse the flags, call the library, print
// ---------------------------------------------------------------------------------------------

fn run(cli: Cli) -> Result<()> {
    if cli.batch_size == 0 {
        return Err(invalid("--batch-size", "must be at least 1"));
    }
    let ctx = || -> Result<Ctx> {
        Ok(Ctx {
            device: puppetlens::parse_device(&cli.device).map_err(flag("--device"))?,
            batch_size: cli.batch_size,
            progress: !cli.quiet,
        })
    };
    match &cli.cmd {
        Cmd::Fetch(a) => {
            for n in a.names() {
                println!("{n}\t{}", fetch::fetch_any(n)?.display());
            }
        }
        Cmd::Info { model } => {
            let (m, tok) = ctx()?.open(model)?;
            print!("{}", puppetlens::describe(&m, &tok));
        }
        Cmd::Generate(a) => {
            let (m, tok) = ctx()?.open(&a.model)?;
            let mut hooks = a.hooks(&m)?;
            println!(
                "{}",
                m.generate_text(&tok, &a.prompt, &a.options(), &mut hooks)?
            );
        }
        Cmd::Export(a) => {
            let out = a.out()?;
            let (m, tok) = ctx()?.open(&a.model)?;
            m.export_safetensors(out)?;
            tok.save_hf_dir(out)?;
            println!("{}", out.display());
        }
        Cmd::Extract(a) => {
            let ctx = ctx()?;
            let ds = Dataset::load(&a.data.dataset, &a.data.positive_label)?;
            let (m, tok) = ctx.open(&a.model)?;
            let manifest = extract::extract_dataset(&m, &tok, &ds, &a.options(&ctx, &m)?, &a.out)?;
            println!(
                "{}: {} prompts x {} hook points ({:?}), {} shard(s)",
                a.out.display(),
                manifest.n_prompts,
                manifest.points.len(),
                manifest.site,
                manifest.shards.len()
            );
        }
        Cmd::Probe(a) => {
            a.check_target()?;
            let ctx = ctx()?;
            let opts = a.options(&ctx)?;
            match &a.target {
                Some(field) => {
                    let ds = NumericDataset::load(&a.data.dataset, field)?;
                    let (m, tok) = ctx.open(&a.model)?;
                    let rep = probe::regression_report(&m, &tok, &ds, &opts, &a.out)?;
                    print!("{}", rep.summary());
                }
                None => {
                    let ds = Dataset::load(&a.data.dataset, &a.data.positive_label)?;
                    let (m, tok) = ctx.open(&a.model)?;
                    print!(
                        "{}",
                        probe::probe_report(&m, &tok, &ds, &opts, &a.out)?.summary()
                    );
                }
            }
            let out = &a.out;
            println!(
                "wrote {} and {}",
                out.join("probe.json").display(),
                out.join("probe.csv").display()
            );
        }
        Cmd::Train(a) => {
            let ctx = ctx()?;
            let (m, _tok) = ctx.open(&a.model)?;
            let opts = a.options(&ctx);
            let (_, log) = match a.data()? {
                TrainData::Sft(f) => train::sft(&m, &train::load_sft_jsonl(f)?, &opts)?,
                TrainData::Dpo(f) => train::dpo(&m, &train::load_dpo_jsonl(f)?, &opts)?,
            };
            let last = log.steps.last().map(|s| s.loss).unwrap_or(f64::NAN);
            println!(
                "{} steps, final loss {last:.4}; adapter and log in {}",
                log.steps.len(),
                a.out.display()
            );
        }
        Cmd::Vector(a) => {
            let ctx = ctx()?;
            let ds = Dataset::load(&a.data.dataset, &a.data.positive_label)?;
            let (m, tok) = ctx.open(&a.model)?;
            let trained = steer::train_vector(&m, &tok, &ds, &a.options(&ctx))?;
            trained.vector.save(&a.out)?;
            println!("{}: {}", a.out.display(), trained.summary()?);
        }
        Cmd::Steer(a) => {
            let ctx = ctx()?;
            let multipliers = a.multipliers()?;
            let ds = load_ab(&a.dataset, "steer")?;
            let v = SteeringVector::load(&a.vector)?;
            let (m, tok) = ctx.open(&a.model)?;
            let opts = a.options(&ctx, &m, multipliers)?;
            let dose = eval::dose_response_dataset(&m, &tok, &ds, &v, &opts)?;
            println!(
                "{}: mean P(matching) over {} items ({}; {}), {} vector from {}",
                a.dataset.display(),
                dose.n_items,
                dose.items,
                dose.prompts,
                v.method,
                a.vector.display()
            );
            print!("{}", dose.table());
            if let Some(out) = &a.out {
                dose.write_csv(out)?;
                wrote([out]);
            }
        }
        Cmd::Diff(a) => {
            let ctx = ctx()?;
            let ds = load_ab(&a.dataset, "diff")?;
            let neutral = neutral_texts(a.neutral.as_deref())?;
            let ((bm, btok), (tm, _)) = ctx.open_pair(&a.base, &a.tuned)?;
            let opts = a.options(&ctx, &bm)?;
            let rep = report::diff_report(&bm, &tm, &btok, &ds, &neutral, &opts, &a.out)?;
            let loc = &rep.localisation;
            println!(
                "{} vs {} on {} ({} test items): P(matching) base {:.3}, tuned {:.3}",
                a.base,
                a.tuned,
                a.dataset.display(),
                loc.n_test,
                loc.p_base,
                loc.p_tuned
            );
            print!("{}", loc.table());
            wrote(&rep.files);
            // Figures last: the numbers above are written even when a figure has nothing to draw.
            wrote(rep.write_figures(&a.out)?);
        }
        Cmd::Crosscoder { cmd } => match cmd {
            CrosscoderCmd::Train(a) => {
                let ctx = ctx()?;
                a.check()?;
                let ((bm, btok), (tm, _)) = ctx.open_pair(&a.base, &a.tuned)?;
                let (corpus, opts) = (a.corpus(), a.options(&ctx, &bm)?);
                let (summary, latents) = match &a.corpus_dir {
                    None => {
                        let run = dict::crosscoder_datasets(&bm, &tm, &btok, &corpus, &opts)?;
                        run.save(&a.out, DType::F32)?;
                        (run.summary(), run.latents)
                    }
                    Some(dir) => {
                        let run = dict::crosscoder_datasets_streamed(
                            &bm, &tm, &btok, &corpus, dir, &opts,
                        )?;
                        run.save(&a.out, DType::F32)?;
                        (run.summary(), run.latents)
                    }
                };
                println!("{summary}");
                print!("{}", dict::latents_table(&latents, 10));
                println!(
                    "wrote {} (dict.json, dict.safetensors, {}, {}, {}, {})",
                    a.out.display(),
                    dict::TRAIN_LOG,
                    dict::LATENTS_CSV,
                    dict::DASHBOARD_DATA,
                    dict::DASHBOARD_PAGE
                );
            }
            CrosscoderCmd::Latents { dir, top } => {
                let dash = dict::Dashboard::load(dir)?;
                println!("{}", dash.title);
                print!("{}", dict::latents_table(&dash.latents, *top));
            }
            CrosscoderCmd::Dashboard { dir } => {
                dict::Dashboard::load(dir)?.save(dir)?;
                wrote([dir.join(dict::DASHBOARD_PAGE)]);
            }
        },
        Cmd::Patch(a) => {
            let ctx = ctx()?;
            let family = a.family()?;
            let ds = load_ab(&a.dataset, "patch")?;
            let neutral = neutral_texts(a.neutral.as_deref())?;
            let (bm, btok) = ctx.open(&a.base)?;
            let (tm, ttok) = ctx.open(&a.tuned)?;
            let opts = a.options(&ctx, &bm, family)?;
            let (rep, files) =
                patch::patch_report((&bm, &btok), (&tm, &ttok), &ds, &neutral, &opts, &a.out)?;
            println!(
                "{} vs {} on {} ({} test items, {family}): P(matching) base {:.3}, tuned {:.3}",
                a.base,
                a.tuned,
                a.dataset.display(),
                rep.n_test,
                rep.p_base,
                rep.p_tuned
            );
            print!("{}", rep.table());
            wrote(&files);
        }
        Cmd::Lens {
            model,
            prompt,
            tuned,
            target,
            out,
        } => {
            let ctx = ctx()?;
            let first = ctx.open(model)?;
            let second = tuned.as_deref().map(|t| ctx.open(t)).transpose()?;
            let mut models = vec![(model.as_str(), &first.0, &first.1)];
            if let (Some(name), Some((m, t))) = (tuned, &second) {
                models.push((name.as_str(), m, t));
            }
            let lenses = lens::lens_report(&models, prompt, target.as_deref(), out)?;
            for ((name, _, _), lens) in models.iter().zip(&lenses) {
                println!("{name}:\n{}", lens.table(&first.1));
            }
            wrote([out.join("lens.png")]);
        }
        Cmd::Dla {
            model,
            prompt,
            answer,
            other,
            out,
        } => {
            let (m, tok) = ctx()?.open(model)?;
            let dla = lens::dla_report(&m, &tok, prompt, answer, other, out)?;
            println!(
                "logit[{answer:?}] - logit[{other:?}] = {:.3} (parts sum to {:.3}, residual {:.1e}); embed {:.3}",
                dla.logit_diff,
                dla.total,
                dla.residual(),
                dla.embed
            );
            for (name, v) in dla.largest_parts(8) {
                println!("  {name:<10} {v:+.3}");
            }
            wrote([out.join("dla.csv")]);
        }
        Cmd::PatchSweep(a) => {
            let ctx = ctx()?;
            let (m, tok) = ctx.open(&a.model)?;
            let opts = a.options(&ctx, &m)?;
            let (clean, corrupted) = (&a.clean, &a.corrupted);
            let sweep = patch::sweep::sweep_report(
                &m, &tok, clean, corrupted, &a.answer, &a.other, &opts, &a.out,
            )?;
            print!("{}", sweep.summary());
            wrote([&a.out]);
        }
        Cmd::Attention {
            model,
            prompt,
            layer,
            out,
        } => {
            let (m, tok) = ctx()?.open(model)?;
            let stem = out.join(format!("attention_L{layer}"));
            wrote(lens::attention_figure(
                &m,
                &tok,
                &tok.encode(prompt)?,
                *layer,
                stem,
            )?);
        }
        Cmd::ExportGguf(a) => {
            let v = SteeringVector::load(&a.vector)?;
            let written = v.export_control_vector(&a.out, &a.options(&v)?)?;
            println!("{}: {}", a.out.display(), written.summary());
        }
        Cmd::Plot(a) => wrote(a.chart()?.save(&a.out)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the message holds.
            let msg = e
                .to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
