//! The `puppetlens` command line: thin wrappers, each subcommand one library call (or a short
//! composition of them).
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::Device;
use clap::Parser;
use puppetlens::data::{self, AbItem, Dataset, PromptFormat, Records, Split, SplitPart};
use puppetlens::dict;
use puppetlens::diff::{self, AbSplits, DiffOptions};
use puppetlens::eval::{self, AbCase};
use puppetlens::extract::{self, ExtractOptions, Site, StoreMeta};
use puppetlens::patch;
use puppetlens::plot::LineChart;
use puppetlens::probe::{self, ProbeOptions};
use puppetlens::report::{self, PairOptions};
use puppetlens::{
    fetch, Error, GenerateOptions, HookPoint, Hooks, LoadOptions, Model, Positions, Result,
    SteeringVector, Tokenizer,
};
use serde_json::json;

mod args;
use args::*;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn invalid(name: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::InvalidArgument {
        name: name.into(),
        msg: msg.into(),
    }
}

/// The global options every command sees.
struct Ctx {
    device: Device,
    batch_size: usize,
    progress: bool,
}

impl Ctx {
    /// Opens a model by name or path (see [`puppetlens::open`]) on the chosen device.
    fn open(&self, spec: &str) -> Result<(Model, Tokenizer)> {
        let opts = LoadOptions {
            device: self.device.clone(),
            ..LoadOptions::default()
        };
        puppetlens::open(spec, &opts)
    }

    /// A base model and its tuned sibling; errors unless their vocabularies match.
    fn open_pair(
        &self,
        base: &str,
        tuned: &str,
    ) -> Result<((Model, Tokenizer), (Model, Tokenizer))> {
        let (bm, btok) = self.open(base)?;
        let (tm, ttok) = self.open(tuned)?;
        if btok.vocab_size() != ttok.vocab_size() {
            return Err(invalid(
                "tuned",
                format!(
                    "`{tuned}` has a vocabulary of {} tokens but `{base}` has {}: not a tuned \
                     sibling (the two models must share a tokenizer)",
                    ttok.vocab_size(),
                    btok.vocab_size()
                ),
            ));
        }
        Ok(((bm, btok), (tm, ttok)))
    }

    /// `hook_resid_post` of `layers` at `site`.
    fn extract_opts(&self, model: &Model, site: Site, layers: Option<&[usize]>) -> ExtractOptions {
        let mut opts = ExtractOptions::resid_post(model, site);
        if let Some(ls) = layers {
            opts.points = ls.iter().map(|&l| HookPoint::ResidPost(l)).collect();
        }
        opts.batch_size = self.batch_size;
        opts.progress = self.progress;
        opts
    }
}

/// The library's layer list (`puppetlens::spec::parse_layers`), its errors naming `flag`.
fn parse_layers(spec: &str, n_layers: usize, owner: &str, flag: &str) -> Result<Vec<usize>> {
    puppetlens::spec::parse_layers(spec, n_layers).map_err(|e| match e {
        Error::InvalidArgument { msg, .. } => invalid(flag, format!("{msg} ({owner})")),
        e => e,
    })
}

/// The library's multiplier list, its errors naming `--multipliers`.
fn parse_multipliers(spec: &str) -> Result<Vec<f64>> {
    puppetlens::spec::parse_multipliers(spec).map_err(|e| match e {
        Error::InvalidArgument { msg, .. } => invalid("--multipliers", msg),
        e => e,
    })
}

/// Creates `path`'s parent directory when it has one.
fn make_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
        }
        _ => Ok(()),
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    make_parent(path)?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| invalid("json", e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------------

/// The two sides of a contrast, as prompts: (true / positive / matching, false / negative / other).
type Sides = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// How texts and A/B questions become token ids for one tokenizer.
struct Prompter<'a> {
    tok: &'a Tokenizer,
    text: PromptFormat,
    ab: PromptFormat,
    text_answers: bool,
}

impl<'a> Prompter<'a> {
    fn new(tok: &'a Tokenizer, chat: bool, plain: bool, text_answers: bool) -> Self {
        let text = if chat {
            PromptFormat::Chat { system: None }
        } else {
            PromptFormat::Plain
        };
        let ab = if !plain && tok.chat_template().is_some() {
            PromptFormat::Chat { system: None }
        } else {
            PromptFormat::Plain
        };
        Prompter {
            tok,
            text,
            ab,
            text_answers,
        }
    }

    fn from_args(tok: &'a Tokenizer, a: &PromptArgs) -> Self {
        Self::new(tok, a.chat, a.plain, a.text_answers)
    }

    fn text(&self, s: &str) -> Result<Vec<u32>> {
        data::text_prompt(self.tok, s, &self.text)
    }

    fn case(&self, item: &AbItem) -> Result<AbCase> {
        let p = if self.text_answers {
            data::ab_text_prompt(self.tok, item, &self.ab)?
        } else {
            data::ab_prompt(self.tok, item, &self.ab)?
        };
        Ok(AbCase::from(p))
    }

    fn cases(&self, items: &[AbItem]) -> Result<Vec<AbCase>> {
        items.iter().map(|it| self.case(it)).collect()
    }

    /// A description of the formats, for provenance.
    fn note(&self, records: &Records) -> String {
        let fmt = |f: &PromptFormat| match f {
            PromptFormat::Plain => "plain",
            PromptFormat::Chat { .. } => "chat template",
        };
        match records {
            Records::Ab(_) => format!(
                "A/B prompts: {}, {} answers",
                fmt(&self.ab),
                if self.text_answers { "text" } else { "letter" }
            ),
            _ => format!("text prompts: {}", fmt(&self.text)),
        }
    }

    /// Labeled prompts of some records: statements with their label; pairs as positive (true)
    /// and negative (false); A/B questions as CAA prompts (matching letter true, other false).
    fn labeled(&self, records: &Records) -> Result<Vec<(Vec<u32>, bool)>> {
        let (pos, neg) = self.contrast(records)?;
        match records {
            Records::Labeled(v) => v
                .iter()
                .map(|l| Ok((self.text(&l.text)?, l.label)))
                .collect(),
            _ => Ok(pos
                .into_iter()
                .map(|p| (p, true))
                .chain(neg.into_iter().map(|n| (n, false)))
                .collect()),
        }
    }

    /// The two sides of a contrast: (true / positive / matching, false / negative / other).
    fn contrast(&self, records: &Records) -> Result<Sides> {
        match records {
            Records::Labeled(v) => {
                let side = |label: bool| {
                    v.iter()
                        .filter(|l| l.label == label)
                        .map(|l| self.text(&l.text))
                        .collect::<Result<Vec<_>>>()
                };
                Ok((side(true)?, side(false)?))
            }
            Records::Pairs(v) => Ok((
                v.iter()
                    .map(|p| self.text(&p.positive))
                    .collect::<Result<_>>()?,
                v.iter()
                    .map(|p| self.text(&p.negative))
                    .collect::<Result<_>>()?,
            )),
            Records::Ab(v) => Ok(diff::caa_prompts(&self.cases(v)?)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn cmd_info(ctx: &Ctx, model: &str) -> Result<()> {
    let (m, tok) = ctx.open(model)?;
    println!("{:#?}", m.config());
    println!(
        "tokenizer: vocab {}, bos {:?}, eos {:?}, adds bos {}, chat template {}",
        tok.vocab_size(),
        tok.bos_token(),
        tok.eos_token(),
        tok.adds_bos(),
        tok.chat_template().is_some()
    );
    println!("hook points ({}):", m.hook_points().len());
    for p in m.hook_points() {
        println!("  {:<36} [{}]", p.to_string(), m.hook_shape(p).join(", "));
    }
    Ok(())
}

fn cmd_lens(
    ctx: &Ctx,
    model: &str,
    prompt: &str,
    tuned: Option<&str>,
    target: Option<&str>,
    out: &Path,
) -> Result<()> {
    let first = ctx.open(model)?;
    let second = tuned.map(|t| ctx.open(t)).transpose()?;
    let mut models = vec![(model, &first.0, &first.1)];
    if let (Some(name), Some((m, t))) = (tuned, &second) {
        models.push((name, m, t));
    }
    let lenses = puppetlens::lens::lens_report(&models, prompt, target, out)?;
    for ((name, _, _), lens) in models.iter().zip(&lenses) {
        println!("{name}:\n{}", lens.table(&first.1));
    }
    println!("wrote {}", out.join("lens.png").display());
    Ok(())
}

fn cmd_dla(
    ctx: &Ctx,
    model: &str,
    prompt: &str,
    answer: &str,
    other: &str,
    out: &Path,
) -> Result<()> {
    let (m, tok) = ctx.open(model)?;
    let dla = puppetlens::lens::dla_report(&m, &tok, prompt, answer, other, out)?;
    println!(
        "logit[{answer:?}] - logit[{other:?}] = {:.3} (parts sum to {:.3}, residual {:.1e}); embed {:.3}",
        dla.logit_diff,
        dla.total,
        dla.residual(),
        dla.embed
    );
    let mut parts: Vec<(String, f32)> = (0..dla.attn.len())
        .flat_map(|l| {
            [
                (format!("attn {l}"), dla.attn[l]),
                (format!("mlp {l}"), dla.mlp[l]),
            ]
        })
        .collect();
    parts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    for (name, v) in parts.iter().take(8) {
        println!("  {name:<10} {v:+.3}");
    }
    println!("wrote {}", out.join("dla.csv").display());
    Ok(())
}

fn cmd_patch_sweep(
    ctx: &Ctx,
    model: &str,
    [clean, corrupted]: [&str; 2],
    [answer, other]: [&str; 2],
    layers: Option<&str>,
    out: &Path,
) -> Result<()> {
    let (m, tok) = ctx.open(model)?;
    let opts = puppetlens::patch::sweep::SweepOptions {
        layers: layers
            .map(|l| parse_layers(l, m.config().n_layers, model, "--layers"))
            .transpose()?,
        progress: ctx.progress,
        ..Default::default()
    };
    let sweep = puppetlens::patch::sweep::sweep_report(
        &m, &tok, clean, corrupted, answer, other, &opts, out,
    )?;
    println!(
        "clean logit difference {:.3}, corrupted {:.3}",
        sweep.clean_diff, sweep.corrupted_diff
    );
    let best = |map: &[Vec<f32>]| {
        map.iter()
            .enumerate()
            .flat_map(|(r, row)| row.iter().enumerate().map(move |(i, &v)| (r, i, v)))
            .max_by(|a, b| a.2.total_cmp(&b.2))
    };
    for (name, map) in [
        ("resid_pre", &sweep.resid_pre),
        ("attn_out", &sweep.attn_out),
        ("mlp_out", &sweep.mlp_out),
        ("head z", &sweep.heads),
    ] {
        if let Some((r, i, v)) = best(map) {
            let what = if name == "head z" { "head" } else { "position" };
            println!(
                "  {name:<9} best: layer {} {what} {i}: {v:.3}",
                sweep.layers[r]
            );
        }
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn cmd_attention(ctx: &Ctx, model: &str, prompt: &str, layer: usize, out: &Path) -> Result<()> {
    let (m, tok) = ctx.open(model)?;
    let files = puppetlens::lens::attention_figure(
        &m,
        &tok,
        &tok.encode(prompt)?,
        layer,
        out.join(format!("attention_L{layer}")),
    )?;
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_generate(
    ctx: &Ctx,
    model: &str,
    prompt: &str,
    chat: bool,
    max_new_tokens: usize,
    temperature: f64,
    seed: u64,
    steer: Option<(&Path, Option<usize>, f64)>,
) -> Result<()> {
    let (m, tok) = ctx.open(model)?;
    let format = if chat {
        PromptFormat::Chat { system: None }
    } else {
        PromptFormat::Plain
    };
    let ids = data::text_prompt(&tok, prompt, &format)?;
    let mut hooks = Hooks::new();
    if let Some((path, layer, scale)) = steer {
        let v = SteeringVector::load(path)?;
        let layer = match layer {
            Some(l) => {
                parse_layers(&l.to_string(), m.config().n_layers, model, "--layer")?;
                l
            }
            None => match v.layers().as_slice() {
                [only] => *only,
                many => {
                    return Err(invalid(
                        "--layer",
                        format!(
                            "{} has directions at {} layers ({}-{}); choose one with --layer",
                            path.display(),
                            many.len(),
                            many.first().copied().unwrap_or(0),
                            many.last().copied().unwrap_or(0)
                        ),
                    ))
                }
            },
        };
        v.only(&[layer])?
            .add_to(&m, &mut hooks, scale, Positions::All)?;
    }
    let stops: Vec<u32> = tok.eos_id().into_iter().collect();
    let opts = GenerateOptions {
        max_new_tokens,
        temperature,
        seed,
        stop_tokens: stops.clone(),
        ..GenerateOptions::default()
    };
    let out = m.generate(&[ids], &opts, &mut hooks)?;
    let mut new = out.into_iter().next().unwrap_or_default();
    while new.last().is_some_and(|t| stops.contains(t)) {
        new.pop();
    }
    println!("{}", tok.decode(&new)?);
    Ok(())
}

fn cmd_export(ctx: &Ctx, model: &str, out: &Path) -> Result<()> {
    let (m, tok) = ctx.open(model)?;
    m.export_safetensors(out)?;
    tok.save_hf_dir(out)?;
    println!("{}", out.display());
    Ok(())
}

fn cmd_extract(
    ctx: &Ctx,
    model: &str,
    args: &DataArgs,
    out: &Path,
    site: SiteArg,
    layers: Option<&str>,
    shard_size: usize,
) -> Result<()> {
    let ds = Dataset::load(&args.dataset, &args.positive_label)?;
    let (m, tok) = ctx.open(model)?;
    let n_layers = m.config().n_layers;
    let layers = layers
        .map(|s| parse_layers(s, n_layers, model, "--layers"))
        .transpose()?;
    let pr = Prompter::from_args(&tok, &args.prompts);
    let rows = pr.labeled(&ds.records)?;
    // The split of each row (pairs and A/B questions give two rows per record, in two halves).
    let tags: Option<Vec<SplitPart>> = ds.tags.as_ref().map(|t| match ds.records {
        Records::Labeled(_) => t.clone(),
        _ => t.iter().chain(t.iter()).copied().collect(),
    });
    let site = match site {
        SiteArg::Last => Site::Last,
        SiteArg::Mean => Site::Mean {
            start: 0,
            end: None,
        },
    };
    let mut opts = ctx.extract_opts(&m, site, layers.as_deref());
    opts.shard_size = shard_size;
    let layout = match ds.records {
        Records::Labeled(_) => "rows in file order".to_string(),
        Records::Pairs(_) => format!(
            "rows 0..{n}: positives, rows {n}..{}: negatives, in file order",
            2 * ds.records.len(),
            n = ds.records.len()
        ),
        Records::Ab(_) => format!(
            "rows 0..{n}: CAA prompts with the matching letter, rows {n}..{}: with the other \
             letter, in file order",
            2 * ds.records.len(),
            n = ds.records.len()
        ),
    };
    let meta = StoreMeta {
        model: model.to_string(),
        dataset: ds.path.display().to_string(),
        notes: format!("{}; {layout}; labels in labels.json", pr.note(&ds.records)),
    };
    let prompts: Vec<Vec<u32>> = rows.iter().map(|(p, _)| p.clone()).collect();
    let manifest = extract::extract_to_dir(&m, &prompts, &opts, out, &meta)?;
    let labels = json!({
        "layout": layout,
        "labels": rows.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        "split": tags,
    });
    write_text(&out.join("labels.json"), &to_json(&labels)?)?;
    println!(
        "{}: {} prompts x {} hook points ({:?}), {} shard(s)",
        out.display(),
        manifest.n_prompts,
        manifest.points.len(),
        manifest.site,
        manifest.shards.len()
    );
    Ok(())
}

fn cmd_probe(
    ctx: &Ctx,
    model: &str,
    args: &DataArgs,
    out: &Path,
    kind: KindArg,
    folds: Option<usize>,
) -> Result<()> {
    if folds.is_some() && kind != KindArg::Logistic {
        return Err(invalid(
            "--folds",
            "cross-validation runs the logistic probe; use it with `--kind logistic`",
        ));
    }
    let ds = Dataset::load(&args.dataset, &args.positive_label)?;
    let parts = ds.split_records()?;
    let (m, tok) = ctx.open(model)?;
    let n_layers = m.config().n_layers;
    let pr = Prompter::from_args(&tok, &args.prompts);
    let mut xs: Vec<Vec<candle_core::Tensor>> = Vec::with_capacity(3);
    let mut ys: Vec<Vec<bool>> = Vec::with_capacity(3);
    let mut sizes = BTreeMap::new();
    for (part, records) in &parts {
        let rows = pr.labeled(records)?;
        if rows.is_empty() {
            return Err(Error::config(
                &ds.path,
                "split",
                format!(
                    "the {part} part is empty ({} records in all, {}); probes need train, val \
                     and test records",
                    ds.records.len(),
                    ds.split_note()
                ),
            ));
        }
        let prompts: Vec<Vec<u32>> = rows.iter().map(|(p, _)| p.clone()).collect();
        let acts = extract::extract(&m, &prompts, &ctx.extract_opts(&m, Site::Last, None))?;
        xs.push(acts.layers(n_layers)?);
        ys.push(rows.iter().map(|(_, y)| *y).collect());
        sizes.insert(part.to_string(), rows.len());
    }
    let opts = ProbeOptions::default();
    let reports = probe::sweep_as(
        kind.into(),
        &xs[0],
        &ys[0],
        &xs[1],
        &ys[1],
        &xs[2],
        &ys[2],
        &opts,
    )?;
    let best = probe::best_by_val(&reports);
    let cv = match folds {
        Some(k) => {
            let x: Vec<candle_core::Tensor> = xs[0]
                .iter()
                .zip(&xs[1])
                .map(|(a, b)| candle_core::Tensor::cat(&[a, b], 0))
                .collect::<candle_core::Result<_>>()?;
            let y: Vec<bool> = ys[0].iter().chain(&ys[1]).copied().collect();
            Some(probe::cross_validate(&x, &y, k, &opts)?)
        }
        None => None,
    };

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let csv = probe::reports_csv(&reports);
    write_text(&out.join("probe.csv"), &csv)?;
    let report = json!({
        "model": model,
        "dataset": ds.path.display().to_string(),
        "records": ds.records.kind(),
        "prompts": pr.note(&ds.records),
        "split": ds.split_note(),
        "n": sizes,
        "kind": format!("{kind:?}"),
        "best_layer_by_val": best,
        "layers": reports,
        "cross_validation": cv,
    });
    write_text(&out.join("probe.json"), &to_json(&report)?)?;

    println!(
        "{} ({}, {}; train {}, val {}, test {} prompts)",
        ds.path.display(),
        ds.records.kind(),
        ds.split_note(),
        ys[0].len(),
        ys[1].len(),
        ys[2].len()
    );
    print!("{}", probe::reports_table(&reports, best));
    if let Some(b) = best.and_then(|b| reports.get(b)) {
        println!(
            "best layer by validation accuracy: {} (val {:.3}, test {:.3} [{:.3}, {:.3}])",
            b.layer, b.val.accuracy, b.test.accuracy, b.test.accuracy_ci.0, b.test.accuracy_ci.1
        );
    }
    if let Some(cv) = &cv {
        println!(
            "{}-fold cross-validation on train + val ({} prompts): layer, l2, pooled accuracy [95% CI]",
            folds.unwrap_or(0),
            ys[0].len() + ys[1].len()
        );
        for r in cv {
            println!(
                "{:>5}  {:.0e}  {:.3}  [{:.3}, {:.3}]",
                r.layer, r.l2, r.pooled.accuracy, r.pooled.accuracy_ci.0, r.pooled.accuracy_ci.1
            );
        }
    }
    println!(
        "wrote {} and {}",
        out.join("probe.json").display(),
        out.join("probe.csv").display()
    );
    Ok(())
}

fn cmd_probe_regression(
    ctx: &Ctx,
    model: &str,
    args: &DataArgs,
    out: &Path,
    field: &str,
) -> Result<()> {
    let path = &args.dataset;
    let items = data::load_numeric(path, field)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let has_split = first.contains("\"split\"") || first.split(',').any(|h| h.trim() == "split");
    let (parts, split_note) = if has_split {
        let tags = data::load_split_tags(path)?;
        (
            Split::from_tags(items, &tags)?,
            "split as recorded in the file",
        )
    } else {
        (
            data::split(&items, (0.6, 0.2, 0.2), 0)?,
            "split 60/20/20, seed 0",
        )
    };
    let (m, tok) = ctx.open(model)?;
    let n_layers = m.config().n_layers;
    let pr = Prompter::from_args(&tok, &args.prompts);
    let mut xs = Vec::with_capacity(3);
    let mut ts: Vec<Vec<f64>> = Vec::with_capacity(3);
    for (name, part) in [
        ("train", &parts.train),
        ("val", &parts.val),
        ("test", &parts.test),
    ] {
        if part.len() < 2 {
            return Err(Error::config(
                path,
                "split",
                format!(
                    "the {name} part has {} records; regression needs at least 2",
                    part.len()
                ),
            ));
        }
        let prompts = part
            .iter()
            .map(|x| pr.text(&x.text))
            .collect::<Result<Vec<_>>>()?;
        let acts = extract::extract(&m, &prompts, &ctx.extract_opts(&m, Site::Last, None))?;
        xs.push(acts.layers(n_layers)?);
        ts.push(part.iter().map(|x| x.value).collect());
    }
    let reports = probe::regress(
        &xs[0],
        &ts[0],
        &xs[1],
        &ts[1],
        &xs[2],
        &ts[2],
        &ProbeOptions::default(),
    )?;
    let best = probe::best_by_val_r2(&reports);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let csv = probe::regression_csv(&reports);
    write_text(&out.join("probe.csv"), &csv)?;
    let report = json!({
        "model": model,
        "dataset": path.display().to_string(),
        "target": field,
        "kind": "Ridge",
        "prompts": format!("text prompts: {}", if args.prompts.chat { "chat template" } else { "plain" }),
        "split": split_note,
        "n": { "train": ts[0].len(), "val": ts[1].len(), "test": ts[2].len() },
        "best_layer_by_val": best,
        "layers": reports,
    });
    write_text(&out.join("probe.json"), &to_json(&report)?)?;
    println!(
        "{} (`{field}`, {split_note}; train {}, val {}, test {} prompts)",
        path.display(),
        ts[0].len(),
        ts[1].len(),
        ts[2].len()
    );
    print!("{}", probe::regression_table(&reports, best));
    println!(
        "wrote {} and {}",
        out.join("probe.json").display(),
        out.join("probe.csv").display()
    );
    Ok(())
}

fn cmd_vector(ctx: &Ctx, model: &str, args: &DataArgs, out: &Path, method: Method) -> Result<()> {
    let ds = Dataset::load(&args.dataset, &args.positive_label)?;
    let (records, which) = if ds.tags.is_some() {
        let [(_, train), _, _] = ds.split_records()?;
        (train, "train split")
    } else {
        (ds.records.clone(), "all records")
    };
    let (m, tok) = ctx.open(model)?;
    let n_layers = m.config().n_layers;
    let pr = Prompter::from_args(&tok, &args.prompts);
    let (pos, neg) = pr.contrast(&records)?;
    for (side, v) in [("positive (true)", &pos), ("negative (false)", &neg)] {
        if v.is_empty() {
            return Err(Error::config(
                &ds.path,
                "(whole file)",
                format!("no {side} examples in the {which}: a vector needs both sides"),
            ));
        }
    }
    let opts = ctx.extract_opts(&m, Site::Last, None);
    let p = extract::extract(&m, &pos, &opts)?;
    let n = extract::extract(&m, &neg, &opts)?;
    let v = match method {
        Method::MeanDiff => SteeringVector::mean_diff(&p, &n, n_layers)?,
        Method::PcaDiff => SteeringVector::pca_diff(&p, &n, n_layers)?,
        Method::PcaCenter => SteeringVector::pca_center(&p, &n, n_layers)?,
    }
    .with_meta("model", model)
    .with_meta("dataset", ds.path.display().to_string())
    .with_meta("records", format!("{} ({which})", ds.records.kind()))
    .with_meta("prompts", pr.note(&ds.records))
    .with_meta("site", "last token, blocks.L.hook_resid_post")
    .with_meta("n_positive", pos.len().to_string())
    .with_meta("n_negative", neg.len().to_string());
    make_parent(out)?;
    v.save(out)?;
    let norms = v.norms()?;
    let (lo, hi) = norms
        .values()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    println!(
        "{}: {} ({} vs {} prompts; {which}), {} layers of width {}, norms {:.3}..{:.3}",
        out.display(),
        v.method,
        pos.len(),
        neg.len(),
        v.layers().len(),
        v.d_model(),
        lo,
        hi
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_steer(
    ctx: &Ctx,
    model: &str,
    vector: &Path,
    dataset: &Path,
    layers: Option<&str>,
    multipliers: &str,
    plain: bool,
    text_answers: bool,
    out: Option<&Path>,
) -> Result<()> {
    let multipliers = parse_multipliers(multipliers)?;
    let (ds, items) = Dataset::load_ab(dataset, "steer")?;
    let v = SteeringVector::load(vector)?;
    let (m, tok) = ctx.open(model)?;
    v.check(&m)?;
    let layers = match layers {
        Some(s) => parse_layers(s, m.config().n_layers, model, "--layers")?,
        None => v.layers(),
    };
    let (items, which) = if ds.tags.is_some() {
        let parts = ds.split(&items, |it| it.matching.clone())?;
        (parts.test, "test split")
    } else {
        (items, "all items")
    };
    if items.is_empty() {
        return Err(Error::config(
            dataset,
            "split",
            "the test part is empty: no items to evaluate",
        ));
    }
    let pr = Prompter::new(&tok, false, plain, text_answers);
    let cases = pr.cases(&items)?;
    if ctx.progress {
        eprintln!(
            "steer: {} layers x {} multipliers on {} items",
            layers.len(),
            multipliers.len(),
            cases.len()
        );
    }
    let rows = eval::dose_response(&m, &cases, &v, &layers, &multipliers, ctx.batch_size)?;

    println!(
        "{}: mean P(matching) over {} items ({which}; {}), {} vector from {}",
        dataset.display(),
        cases.len(),
        pr.note(&ds.records),
        v.method,
        vector.display()
    );
    let mut header = String::from("layer");
    for x in &multipliers {
        let _ = write!(header, " {:>8}", format!("x{x}"));
    }
    println!("{header}");
    for &l in &layers {
        let mut line = format!("{l:>5}");
        for &x in &multipliers {
            let p = rows
                .iter()
                .find(|r| r.layer == l && r.multiplier == x)
                .map(|r| r.summary.mean_p)
                .unwrap_or(f64::NAN);
            let _ = write!(line, " {p:>8.3}");
        }
        println!("{line}");
    }
    if let Some(out) = out {
        let mut csv = String::from("layer,multiplier,n,mean_p,mean_logit_diff,rate\n");
        for r in &rows {
            let _ = writeln!(
                csv,
                "{},{},{},{:.6},{:.6},{:.6}",
                r.layer,
                r.multiplier,
                r.summary.n,
                r.summary.mean_p,
                r.summary.mean_logit_diff,
                r.summary.rate
            );
        }
        write_text(out, &csv)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// Prompts of some records as corpus text: statements and instructions as they are (or as chat
/// turns with `--chat`), both sides of each pair, A/B questions up to their answer.
fn corpus_prompts(pr: &Prompter, records: &Records) -> Result<Vec<Vec<u32>>> {
    match records {
        Records::Labeled(v) => v.iter().map(|l| pr.text(&l.text)).collect(),
        Records::Pairs(v) => v
            .iter()
            .flat_map(|p| [&p.positive, &p.negative])
            .map(|t| pr.text(t))
            .collect(),
        Records::Ab(v) => Ok(pr.cases(v)?.into_iter().map(|c| c.ids).collect()),
    }
}

#[allow(clippy::too_many_arguments)]
fn cmd_crosscoder_train(
    ctx: &Ctx,
    base: &str,
    tuned: &str,
    layer: usize,
    files: &[PathBuf],
    out: &Path,
    (latents, k, steps, seed): (usize, usize, usize, u64),
    sharegpt: usize,
    all_splits: bool,
    positive_label: &str,
    prompts: &PromptArgs,
) -> Result<()> {
    let ((bm, btok), (tm, _)) = ctx.open_pair(base, tuned)?;
    let n_layers = bm.config().n_layers;
    if layer >= n_layers {
        return Err(invalid(
            "--layer",
            format!(
                "{layer} is past the last layer of `{base}` ({})",
                n_layers - 1
            ),
        ));
    }
    let pr = Prompter::from_args(&btok, prompts);
    let mut sets = Vec::new();
    for f in files {
        let ds = Dataset::load(f, positive_label)?;
        let ids = if all_splits {
            corpus_prompts(&pr, &ds.records)?
        } else {
            let [(_, train), _, _] = ds.split_records()?;
            corpus_prompts(&pr, &train)?
        };
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.display().to_string());
        if ctx.progress {
            eprintln!("{name}: {} prompts", ids.len());
        }
        sets.push(dict::PromptSet::new(name, ids));
    }
    if sharegpt > 0 {
        let chats = data::load_sharegpt(fetch::fetch_data("sharegpt")?)?;
        let turns = chats.first_user_turns(&data::TurnFilter::default());
        let ids = turns
            .iter()
            .take(sharegpt)
            .map(|t| btok.encode_chat(&[puppetlens::ChatMessage::user(t)], true))
            .collect::<Result<Vec<_>>>()?;
        if ctx.progress {
            eprintln!("sharegpt: {} prompts", ids.len());
        }
        sets.push(dict::PromptSet::new("sharegpt", ids));
    }
    if sets.is_empty() {
        return Err(invalid(
            "--data",
            "no prompts: give at least one --data FILE or --sharegpt N",
        ));
    }
    let opts = dict::CrosscoderOptions {
        corpus: dict::CorpusOptions {
            point: HookPoint::ResidPost(layer),
            batch_size: ctx.batch_size,
            skip_first: 1,
            progress: ctx.progress,
            ..dict::CorpusOptions::default()
        },
        train: dict::DictOptions {
            n_latents: latents,
            k,
            steps,
            seed,
            progress: ctx.progress,
            ..dict::DictOptions::default()
        },
        names: [base.to_string(), tuned.to_string()],
        ..dict::CrosscoderOptions::default()
    };
    let run = dict::crosscoder(
        &bm,
        &tm,
        &sets,
        |t| btok.decode(&[t]).unwrap_or_default(),
        &opts,
    )?;
    run.save(out, candle_core::DType::F32)?;
    println!(
        "corpus {} tokens in {:.0} s; trained {} steps in {:.0} s ({:.0} tokens/s); FVU base {:.3}, tuned {:.3}; L0 {:.1}; dead {:.3}",
        run.corpus.len(),
        run.corpus_seconds,
        run.log.steps.len(),
        run.log.seconds,
        run.log.tokens_per_s,
        run.metrics.fvu[0],
        run.metrics.fvu[1],
        run.metrics.l0,
        run.metrics.dead_fraction
    );
    print!("{}", dict::latents_table(&run.latents, 10));
    println!(
        "wrote {} (dict.json, dict.safetensors, {}, {}, {}, {})",
        out.display(),
        dict::TRAIN_LOG,
        dict::LATENTS_CSV,
        dict::DASHBOARD_DATA,
        dict::DASHBOARD_PAGE
    );
    Ok(())
}

fn cmd_crosscoder_latents(dir: &Path, top: usize) -> Result<()> {
    let dash = dict::Dashboard::load(dir)?;
    println!("{}", dash.title);
    print!("{}", dict::latents_table(&dash.latents, top));
    Ok(())
}

fn cmd_crosscoder_dashboard(dir: &Path) -> Result<()> {
    let dash = dict::Dashboard::load(dir)?;
    dash.save(dir)?;
    println!("wrote {}", dir.join(dict::DASHBOARD_PAGE).display());
    Ok(())
}

fn cmd_patch(
    ctx: &Ctx,
    base: &str,
    tuned: &str,
    dataset: &Path,
    out: &Path,
    layers: Option<&str>,
    family: &str,
    ranks: &str,
    positions: usize,
    neutral: Option<&Path>,
    (plain, text_answers): (bool, bool),
) -> Result<()> {
    let family: patch::Family = family.parse()?;
    let (ds, items) = Dataset::load_ab(dataset, "patch")?;
    let parts = ds.split(&items, |it| it.matching.clone())?;
    let neutral_texts = neutral.map(data::load_instructions).transpose()?;
    let (bm, btok) = ctx.open(base)?;
    let (tm, ttok) = ctx.open(tuned)?;
    let layers = layers
        .map(|s| parse_layers(s, bm.config().n_layers, base, "--layers"))
        .transpose()?;
    let ranks = ranks
        .split(',')
        .map(|k| {
            k.trim().parse::<usize>().map_err(|_| {
                invalid(
                    "--ranks",
                    format!("`{k}` is not a subspace dimension (1, 2, ...)"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Both models must read the same ids: the prompts as each tokenizer writes them.
    let pr = Prompter::new(&btok, false, plain, text_answers);
    let tpr = Prompter::new(&ttok, false, plain, text_answers);
    let data = AbSplits {
        train: pr.cases(&parts.train)?,
        val: Vec::new(),
        test: pr.cases(&parts.test)?,
    };
    let theirs = tpr.cases(&parts.test)?;
    if let Some(i) = (0..data.test.len()).find(|&i| data.test[i] != theirs[i]) {
        return Err(invalid(
            "tuned",
            format!(
                "`{tuned}` and `{base}` tokenize test item {i} differently: patching needs the \
                 same token ids in both models"
            ),
        ));
    }
    let neutral: Vec<Vec<u32>> = match &neutral_texts {
        Some(texts) => texts.iter().map(|t| pr.text(t)).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let opts = patch::PatchOptions {
        family,
        layers,
        ranks,
        positions,
        batch_size: ctx.batch_size,
        neutral,
        progress: ctx.progress,
        ..patch::PatchOptions::default()
    };
    let rep = patch::patching(&bm, &tm, &data, &opts)?;
    let mut files = rep.write(out)?;
    files.extend(patch::write_figures(&[(tuned, &rep)], out, |id| {
        btok.decode(&[id]).unwrap_or_default()
    })?);
    println!(
        "{base} vs {tuned} on {} ({} test items, {family}): P(matching) base {:.3}, tuned {:.3}",
        dataset.display(),
        rep.n_test,
        rep.p_base,
        rep.p_tuned
    );
    println!("layer     full     last   rank-1  mean-dir   random    noise");
    let v = |e: &patch::Effect| e.fraction.unwrap_or(e.delta_p);
    for r in &rep.layers {
        println!(
            "{:>5} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>8.3} {:>8.3}",
            r.layer,
            v(&r.full),
            v(&r.last),
            v(&r.rank1),
            v(&r.mean_diff),
            v(&r.random1),
            v(&r.noise_full)
        );
    }
    for c in &rep.ranks {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|p| format!("k={} {:.2}", p.k, p.of_full))
            .collect();
        println!(
            "rank curve at layer {} (of the full patch): {}",
            c.layer,
            pts.join(", ")
        );
    }
    println!("verdict: {}", rep.verdict.reading);
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_diff(
    ctx: &Ctx,
    base: &str,
    tuned: &str,
    dataset: &Path,
    out: &Path,
    layers: Option<&str>,
    scale: f64,
    neutral: Option<&Path>,
    plain: bool,
    text_answers: bool,
    figures: bool,
) -> Result<()> {
    let (ds, items) = Dataset::load_ab(dataset, "diff")?;
    let parts = ds.split(&items, |it| it.matching.clone())?;
    let neutral_texts = neutral.map(data::load_instructions).transpose()?;
    let ((bm, btok), (tm, _)) = ctx.open_pair(base, tuned)?;
    let layers = layers
        .map(|s| parse_layers(s, bm.config().n_layers, base, "--layers"))
        .transpose()?;
    // Both models see the same ids, built with the base tokenizer.
    let pr = Prompter::new(&btok, false, plain, text_answers);
    let data = AbSplits {
        train: pr.cases(&parts.train)?,
        val: pr.cases(&parts.val)?,
        test: pr.cases(&parts.test)?,
    };
    let neutral: Vec<Vec<u32>> = match &neutral_texts {
        Some(texts) => texts.iter().map(|t| pr.text(t)).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let opts = DiffOptions {
        layers,
        scale,
        batch_size: ctx.batch_size,
        progress: ctx.progress,
        ..DiffOptions::default()
    };
    let mut pair = if figures {
        Some(report::pair_report(
            &bm,
            &tm,
            (base, tuned),
            &ds.name(),
            &data,
            &neutral,
            &PairOptions {
                diff: opts.clone(),
                ..PairOptions::default()
            },
        )?)
    } else {
        None
    };
    let mut loc = match &pair {
        Some(p) => p.localisation.clone(),
        None => diff::localise(&bm, &tm, &data, &neutral, &opts)?,
    };
    loc.meta.insert("base".into(), base.into());
    loc.meta.insert("tuned".into(), tuned.into());
    loc.meta
        .insert("dataset".into(), dataset.display().to_string());
    loc.meta.insert("prompts".into(), pr.note(&ds.records));
    loc.meta.insert("split".into(), ds.split_note().into());
    loc.write(out)?;
    let mut written = vec![out.join("localisation.json"), out.join("localisation.csv")];
    if let Some(p) = &mut pair {
        p.localisation.meta = loc.meta.clone();
        let path = out.join("pair_report.json");
        write_text(&path, &to_json(p)?)?;
        written.push(path);
    }

    println!(
        "{} vs {} on {} ({} test items): P(matching) base {:.3}, tuned {:.3}",
        base,
        tuned,
        dataset.display(),
        loc.n_test,
        loc.p_base,
        loc.p_tuned
    );
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    println!(
        "layer      |diff|  cos(diff,beh)  probe base  probe tuned  transfer  P steered base  P \
         ablated tuned  gap closed  gap removed"
    );
    for r in &loc.rows {
        println!(
            "{:>5}  {:>10.3}  {:>13.3}  {:>10.3}  {:>11.3}  {:>8.3}  {:>14}  {:>15}  {:>10}  {:>11}",
            r.layer,
            r.diff_norm,
            r.cos_diff_behaviour,
            r.probe_acc_base,
            r.probe_acc_tuned,
            r.probe_transfer,
            opt(r.p_steered_base),
            opt(r.p_ablated_tuned),
            opt(r.gap_closed),
            opt(r.gap_removed)
        );
    }
    match loc.best_layer {
        Some(l) => println!("best layer (largest gap closed): {l}"),
        None => println!("best layer: none (the behaviour gap is too small to divide by)"),
    }
    for p in written {
        println!("wrote {}", p.display());
    }
    // Figures last: the numbers above are written even when a figure has nothing to draw.
    if let Some(p) = &pair {
        for f in report::write_figures(std::slice::from_ref(p), out)? {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn cmd_export_gguf(vector: &Path, out: &Path, arch: &str, layers: Option<&str>) -> Result<()> {
    let v = SteeringVector::load(vector)?;
    let v = match layers {
        Some(spec) => {
            let n = v.layers().last().map_or(0, |l| l + 1);
            let owner = format!("{}", vector.display());
            v.only(&parse_layers(spec, n, &owner, "--layers")?)?
        }
        None => v,
    };
    let keep: Vec<usize> = v.layers().into_iter().filter(|&l| l != 0).collect();
    if keep.is_empty() {
        return Err(invalid(
            "vector",
            format!(
                "{} has a direction at layer 0 only, which llama.cpp control vectors cannot steer",
                vector.display()
            ),
        ));
    }
    let dropped = v.get(0).is_some();
    let v = if dropped { v.only(&keep)? } else { v };
    make_parent(out)?;
    v.to_control_vector_gguf(out, arch)?;
    println!(
        "{}: control vector for `{arch}`, {} directions (layers {}-{}){}",
        out.display(),
        keep.len(),
        keep.first().copied().unwrap_or(0),
        keep.last().copied().unwrap_or(0),
        if dropped {
            "; left out direction.0 (llama.cpp cannot steer block 0)"
        } else {
            ""
        }
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_plot(
    csv: &Path,
    x: &str,
    y: &str,
    group: Option<&str>,
    out: &Path,
    title: Option<String>,
    x_label: Option<String>,
    y_label: Option<String>,
) -> Result<()> {
    let ys: Vec<&str> = y.split(',').filter(|s| !s.trim().is_empty()).collect();
    if ys.is_empty() {
        return Err(invalid("--y", "no y column given"));
    }
    let mut chart = LineChart::from_csv(csv, x, &ys, group)?;
    if let Some(t) = title {
        chart.title = t;
    }
    if let Some(l) = x_label {
        chart.x_label = l;
    }
    if let Some(l) = y_label {
        chart.y_label = l;
    }
    make_parent(out)?;
    for p in chart.save(out)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if cli.batch_size == 0 {
        return Err(invalid("--batch-size", "must be at least 1"));
    }
    let ctx = || -> Result<Ctx> {
        Ok(Ctx {
            // The library names the argument `device`; here it is the `--device` option.
            device: puppetlens::parse_device(&cli.device).map_err(|e| match e {
                Error::InvalidArgument { msg, .. } => invalid("--device", msg),
                e => e,
            })?,
            batch_size: cli.batch_size,
            progress: !cli.quiet,
        })
    };
    match &cli.cmd {
        Cmd::Fetch { names } => {
            let names: Vec<String> = if names.is_empty() {
                fetch::KNOWN
                    .iter()
                    .chain(fetch::KNOWN_DATA)
                    .map(|m| m.name.to_string())
                    .collect()
            } else {
                names.clone()
            };
            for n in names {
                let p = if fetch::KNOWN_DATA.iter().any(|m| m.name == n) {
                    fetch::fetch_data(&n)?
                } else {
                    fetch::fetch(&n)?
                };
                println!("{n}\t{}", p.display());
            }
        }
        Cmd::Info { model } => cmd_info(&ctx()?, model)?,
        Cmd::Generate {
            model,
            prompt,
            chat,
            max_new_tokens,
            temperature,
            seed,
            vector,
            layer,
            scale,
        } => cmd_generate(
            &ctx()?,
            model,
            prompt,
            *chat,
            *max_new_tokens,
            *temperature,
            *seed,
            vector.as_deref().map(|v| (v, *layer, *scale)),
        )?,
        Cmd::Export {
            model,
            out_flag,
            out,
        } => {
            let out = out_flag
                .as_ref()
                .or(out.as_ref())
                .ok_or_else(|| invalid("--out", "give the output directory (--out DIR)"))?;
            cmd_export(&ctx()?, model, out)?
        }
        Cmd::Extract {
            model,
            data,
            out,
            site,
            layers,
            shard_size,
        } => cmd_extract(
            &ctx()?,
            model,
            data,
            out,
            *site,
            layers.as_deref(),
            *shard_size,
        )?,
        Cmd::Probe {
            model,
            data,
            out,
            kind,
            target,
            folds,
        } => match target {
            Some(field) if *kind == KindArg::Ridge => {
                cmd_probe_regression(&ctx()?, model, data, out, field)?
            }
            Some(_) => {
                return Err(invalid(
                    "--target",
                    "regression on a numeric field needs `--kind ridge`",
                ))
            }
            None => cmd_probe(&ctx()?, model, data, out, *kind, *folds)?,
        },
        Cmd::Train {
            model,
            sft,
            dpo,
            out,
            steps,
            epochs,
            rank,
            lr,
            seed,
            checkpoint_every,
        } => {
            let (m, _tok) = ctx()?.open(model)?;
            let opts = puppetlens::train::TrainOptions {
                lora: puppetlens::lora::LoraConfig {
                    rank: *rank,
                    alpha: 2.0 * *rank as f64,
                    ..Default::default()
                },
                lr: *lr,
                epochs: *epochs,
                max_steps: *steps,
                batch_size: cli.batch_size,
                seed: *seed,
                log_every: if cli.quiet { 0 } else { 10 },
                checkpoint_dir: Some(out.clone()),
                checkpoint_every: *checkpoint_every,
                ..Default::default()
            };
            let (_, log) = match (sft, dpo) {
                (Some(f), _) => {
                    puppetlens::train::sft(&m, &puppetlens::train::load_sft_jsonl(f)?, &opts)?
                }
                (None, Some(f)) => {
                    puppetlens::train::dpo(&m, &puppetlens::train::load_dpo_jsonl(f)?, &opts)?
                }
                (None, None) => return Err(invalid("--sft", "give --sft FILE or --dpo FILE")),
            };
            let last = log.steps.last().map(|s| s.loss).unwrap_or(f64::NAN);
            println!(
                "{} steps, final loss {last:.4}; adapter and log in {}",
                log.steps.len(),
                out.display()
            );
        }
        Cmd::Vector {
            model,
            data,
            out,
            method,
        } => cmd_vector(&ctx()?, model, data, out, *method)?,
        Cmd::Steer {
            model,
            vector,
            dataset,
            layers,
            multipliers,
            plain,
            text_answers,
            out,
        } => cmd_steer(
            &ctx()?,
            model,
            vector,
            dataset,
            layers.as_deref(),
            multipliers,
            *plain,
            *text_answers,
            out.as_deref(),
        )?,
        Cmd::Diff {
            base,
            tuned,
            dataset,
            out,
            layers,
            scale,
            neutral,
            plain,
            text_answers,
            figures,
        } => cmd_diff(
            &ctx()?,
            base,
            tuned,
            dataset,
            out,
            layers.as_deref(),
            *scale,
            neutral.as_deref(),
            *plain,
            *text_answers,
            *figures,
        )?,
        Cmd::Crosscoder { cmd } => match cmd {
            CrosscoderCmd::Train {
                base,
                tuned,
                layer,
                data,
                out,
                latents,
                k,
                steps,
                seed,
                sharegpt,
                all_splits,
                positive_label,
                prompts,
            } => cmd_crosscoder_train(
                &ctx()?,
                base,
                tuned,
                *layer,
                data,
                out,
                (*latents, *k, *steps, *seed),
                *sharegpt,
                *all_splits,
                positive_label,
                prompts,
            )?,
            CrosscoderCmd::Latents { dir, top } => cmd_crosscoder_latents(dir, *top)?,
            CrosscoderCmd::Dashboard { dir } => cmd_crosscoder_dashboard(dir)?,
        },
        Cmd::Patch {
            base,
            tuned,
            dataset,
            out,
            layers,
            family,
            ranks,
            positions,
            neutral,
            plain,
            text_answers,
        } => cmd_patch(
            &ctx()?,
            base,
            tuned,
            dataset,
            out,
            layers.as_deref(),
            family,
            ranks,
            *positions,
            neutral.as_deref(),
            (*plain, *text_answers),
        )?,
        Cmd::Lens {
            model,
            prompt,
            tuned,
            target,
            out,
        } => cmd_lens(
            &ctx()?,
            model,
            prompt,
            tuned.as_deref(),
            target.as_deref(),
            out,
        )?,
        Cmd::Dla {
            model,
            prompt,
            answer,
            other,
            out,
        } => cmd_dla(&ctx()?, model, prompt, answer, other, out)?,
        Cmd::PatchSweep {
            model,
            clean,
            corrupted,
            answer,
            other,
            layers,
            out,
        } => cmd_patch_sweep(
            &ctx()?,
            model,
            [clean.as_str(), corrupted.as_str()],
            [answer.as_str(), other.as_str()],
            layers.as_deref(),
            out,
        )?,
        Cmd::Attention {
            model,
            prompt,
            layer,
            out,
        } => cmd_attention(&ctx()?, model, prompt, *layer, out)?,
        Cmd::ExportGguf {
            vector,
            out,
            arch,
            layers,
        } => cmd_export_gguf(vector, out, arch, layers.as_deref())?,
        Cmd::Plot {
            csv,
            x,
            y,
            group,
            out,
            title,
            x_label,
            y_label,
        } => cmd_plot(
            csv,
            x,
            y,
            group.as_deref(),
            out,
            title.clone(),
            x_label.clone(),
            y_label.clone(),
        )?,
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
