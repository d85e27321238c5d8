//! The puppeteer search, end to end: where did tuning change gemma-3-270m, and does that change
//! drive the behaviour?
//!
//! ```sh
//! cargo run --release --example steer               # full run, every layer
//! cargo run --release --example steer -- --layers 0,2,4,6,8,10,12,14,16   # the committed run (26 min, 2 cores)
//! cargo run --release --example steer -- --quick    # a small run (a few minutes)
//! ```
//!
//! Pair 1: gemma-3-270m (base) against its committed tuned siblings (`assistant`, and the
//! sycophant trained on the broad preference set with its control, `sycophant-broad` and
//! `control-broad`; see notebooks-data/organisms; `--tuned assistant,sycophant,control` runs the
//! first, narrow pair) on the project's sycophancy A/B items. For each pair:
//! per-layer activation difference, probe accuracy in each model (bootstrap CIs), fraction of the
//! sycophancy gap closed by adding the base-vs-tuned difference to the base and removed by
//! ablating it in the tuned model, a dose-response, and PCA at the best layer.
//! Single model: SmolLM2-135M-Instruct (a real preference-tuned model): probe accuracy per layer on
//! the project's truth, persona and sycophancy sets.
//!
//! Writes to `notebooks-data/steer/` (`--out`): `summary.json`, `summary.csv`, per-pair
//! `pairs/<tuned>/localisation.{json,csv}` and `dose.csv`, `single_model.csv`, and the figures
//! `probe_accuracy`, `diff_by_layer`, `steering_dose_response`, `gap_closed`, `pca_best_layer`,
//! `single_model_probes` (each `.png` and `.svg`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Parser;
use puppetlens::data::{self, ab_prompt, ab_text_prompt, text_prompt, AbItem, PromptFormat, Split};
use puppetlens::diff::{AbSplits, DiffOptions};
use puppetlens::eval::AbCase;
use puppetlens::extract::{extract, extract_pairs, Activations, ExtractOptions, Site};
use puppetlens::patch::{self, patching, PatchOptions, Patching};
use puppetlens::plot::{LineChart, Series};
use puppetlens::probe::{sweep, ProbeOptions};
use puppetlens::report::{pair_reports, write_figures, PairOptions, PairReport};
use puppetlens::{LoadOptions, Model, Tokenizer};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "The puppeteer search: base vs tuned, layer by layer")]
struct Args {
    /// A small run for CI: few items, every fourth layer, few multipliers.
    #[arg(long)]
    quick: bool,
    /// Base model: a known name, a path, or BASE+ADAPTER_DIR.
    #[arg(long, default_value = "gemma-3-270m")]
    base: String,
    /// Tuned models compared with the base (comma-separated; organisms, paths or BASE+ADAPTER).
    #[arg(
        long,
        default_value = "assistant,sycophant-broad,control-broad",
        value_delimiter = ','
    )]
    tuned: Vec<String>,
    /// The single preference-tuned model probed on its own ("none" to skip).
    #[arg(long, default_value = "smollm2-135m-instruct")]
    single: String,
    /// A/B behaviour dataset (CAA JSON/JSONL; its `split` field is used when present).
    #[arg(long, default_value = "probes/sycophancy_ab.jsonl")]
    dataset: PathBuf,
    /// Layers to steer and ablate, e.g. `3,6,9` or `4-12` (all layers when omitted; every fourth
    /// layer with --quick).
    #[arg(long)]
    layers: Option<String>,
    /// How A/B items are answered: `text` (the choices' words, content first; what small base
    /// models can do) or `letters` (CAA's "(A"/"(B").
    #[arg(long, default_value = "text")]
    answers: String,
    /// Output directory.
    #[arg(long, default_value = "notebooks-data/steer")]
    out: PathBuf,
    /// Device: cpu, cuda, cuda:N or metal (needs the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Items split by their `split` field, or 60/20/20 (seed 0, stratified by the matching letter).
fn load_items(path: &Path) -> Result<Split<AbItem>> {
    match data::load_with_split(path, data::load_ab_json) {
        Ok(s) => Ok(s),
        Err(_) => {
            let items = data::load_ab_json(path)?;
            let letters: Vec<char> = items
                .iter()
                .map(|i| i.matching_letter())
                .collect::<puppetlens::Result<_>>()?;
            let keyed: Vec<(char, AbItem)> = letters.into_iter().zip(items).collect();
            Ok(data::split_stratified(&keyed, (0.6, 0.2, 0.2), 0, |k| k.0)?.map(|k| k.1))
        }
    }
}

fn cases(tok: &Tokenizer, items: &[AbItem], cap: usize, text: bool) -> Result<Vec<AbCase>> {
    let fmt = PromptFormat::Chat { system: None };
    items
        .iter()
        .take(cap)
        .map(|it| {
            let p = if text {
                ab_text_prompt(tok, it, &fmt)?
            } else {
                ab_prompt(tok, it, &fmt)?
            };
            Ok(AbCase::from(p))
        })
        .collect()
}

fn stage(t0: &Instant, msg: &str) {
    eprintln!("[{:>6.1}s] {msg}", t0.elapsed().as_secs_f64());
}

fn atomic_write(path: &Path, text: &str) -> Result<()> {
    Ok(puppetlens::write_atomic(path, text.as_bytes())?)
}

/// One probe set of the single-model section: per-layer test accuracy and its interval.
struct ProbeSet {
    name: String,
    acc: Vec<f64>,
    ci: Vec<(f64, f64)>,
    best_layer: usize,
}

/// The prompts of one split: labelled one by one, or as pairs (positives, negatives) that
/// share their beginning (run once by `extract_pairs`).
enum Prompts {
    Labelled(Vec<Vec<u32>>, Vec<bool>),
    Pairs(Vec<Vec<u32>>, Vec<Vec<u32>>),
}

/// Last-token `hook_resid_post` per layer (`[n, d_model]` each) and the labels of one split.
fn split_acts(model: &Model, prompts: &Prompts) -> Result<(Vec<Tensor>, Vec<bool>)> {
    let opts = ExtractOptions {
        progress: true,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    let layers =
        |a: &Activations| -> Result<Vec<Tensor>> { Ok(a.layers(model.config().n_layers)?) };
    Ok(match prompts {
        Prompts::Labelled(p, y) => (layers(&extract(model, p, &opts)?)?, y.clone()),
        Prompts::Pairs(pos, neg) => {
            let (a, b) = extract_pairs(model, pos, neg, &opts)?;
            let xs = layers(&a)?
                .iter()
                .zip(layers(&b)?)
                .map(|(a, b)| Tensor::cat(&[a, &b], 0))
                .collect::<candle_core::Result<_>>()?;
            let y = (0..pos.len())
                .map(|_| true)
                .chain((0..neg.len()).map(|_| false));
            (xs, y.collect())
        }
    })
}

fn probe_set(model: &Model, name: &str, splits: [Prompts; 3], t0: &Instant) -> Result<ProbeSet> {
    let n_train = match &splits[0] {
        Prompts::Labelled(p, _) => p.len(),
        Prompts::Pairs(p, n) => p.len() + n.len(),
    };
    stage(
        t0,
        &format!("single model: {name} ({n_train} train prompts)"),
    );
    let [tr, va, te] = splits.map(|s| split_acts(model, &s));
    let ((tr, ytr), (va, yva), (te, yte)) = (tr?, va?, te?);
    let rep = sweep(&tr, &ytr, &va, &yva, &te, &yte, &ProbeOptions::default())?;
    let best_layer = rep
        .iter()
        .max_by(|a, b| a.val.accuracy.total_cmp(&b.val.accuracy))
        .map(|r| r.layer)
        .unwrap_or(0);
    Ok(ProbeSet {
        name: name.into(),
        acc: rep.iter().map(|r| r.test.accuracy).collect(),
        ci: rep.iter().map(|r| r.test.accuracy_ci).collect(),
        best_layer,
    })
}

fn single_model(
    spec: &str,
    opts: &LoadOptions,
    quick: bool,
    t0: &Instant,
) -> Result<(String, Vec<ProbeSet>)> {
    let (model, tok) = puppetlens::open(spec, opts)?;
    let cap = if quick { 24 } else { usize::MAX };
    let plain = PromptFormat::Plain;
    let mut sets = Vec::new();

    // Truth: true vs false statements, plain text, last token.
    let tf = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
    let enc = |v: &[data::Labeled]| -> Result<Prompts> {
        let v: Vec<&data::Labeled> = v.iter().take(cap).collect();
        Ok(Prompts::Labelled(
            v.iter()
                .map(|l| text_prompt(&tok, &l.text, &plain))
                .collect::<puppetlens::Result<_>>()?,
            v.iter().map(|l| l.label).collect(),
        ))
    };
    let splits = [enc(&tf.train)?, enc(&tf.val)?, enc(&tf.test)?];
    sets.push(probe_set(&model, "truth (true_false.csv)", splits, t0)?);

    // Persona: the assistant speaking as itself vs the same content in another voice.
    let pp = data::load_with_split("probes/persona_stage_actor.jsonl", data::load_pairs_jsonl)?;
    let enc = |v: &[data::Pair]| -> Result<Prompts> {
        let v: Vec<&data::Pair> = v.iter().take(cap / 2).collect();
        let mut ids = Vec::new();
        let mut y = Vec::new();
        for p in v {
            ids.push(text_prompt(&tok, &p.positive, &plain)?);
            y.push(true);
            ids.push(text_prompt(&tok, &p.negative, &plain)?);
            y.push(false);
        }
        Ok(Prompts::Labelled(ids, y))
    };
    let splits = [enc(&pp.train)?, enc(&pp.val)?, enc(&pp.test)?];
    let name = "assistant persona (persona_stage_actor.jsonl)";
    sets.push(probe_set(&model, name, splits, t0)?);

    // Sycophancy: CAA prompts with the matching vs the other letter appended, chat format.
    let items = load_items(Path::new("probes/sycophancy_ab.jsonl"))?;
    let enc = |v: &[AbItem]| -> Result<Prompts> {
        let (p, n) = puppetlens::diff::caa_prompts(&cases(&tok, v, cap / 2, false)?);
        Ok(Prompts::Pairs(p, n))
    };
    let splits = [enc(&items.train)?, enc(&items.val)?, enc(&items.test)?];
    let name = "sycophancy answer (sycophancy_ab.jsonl)";
    sets.push(probe_set(&model, name, splits, t0)?);
    Ok((spec.to_string(), sets))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let t0 = Instant::now();
    let opts = LoadOptions {
        device: puppetlens::parse_device(&args.device)?,
        ..Default::default()
    };
    // A rerun into a finished directory first removes its summary (written last), so that a
    // run killed half-way never leaves the old summary beside the new files.
    for f in ["summary.json", "summary.csv"] {
        match std::fs::remove_file(args.out.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", args.out.join(f).display()))?
            }
            _ => {}
        }
    }
    stage(&t0, &format!("loading {} and {:?}", args.base, args.tuned));
    let (base, tok) = puppetlens::open(&args.base, &opts)?;
    let n_layers = base.config().n_layers;
    let layers = match (&args.layers, args.quick) {
        (Some(s), _) => Some(puppetlens::spec::parse_layers(s, n_layers)?),
        (None, true) => Some((0..n_layers).step_by(4).collect()),
        (None, false) => None,
    };
    let items = load_items(&args.dataset)
        .with_context(|| format!("--dataset {}", args.dataset.display()))?;
    let (ctr, cva, cte) = if args.quick {
        (16, 8, 12)
    } else {
        (usize::MAX, usize::MAX, usize::MAX)
    };
    let text = match args.answers.as_str() {
        "text" => true,
        "letters" => false,
        other => bail!("--answers `{other}`: expected text or letters"),
    };
    let data = AbSplits {
        train: cases(&tok, &items.train, ctr, text)?,
        val: cases(&tok, &items.val, cva, text)?,
        test: cases(&tok, &items.test, cte, text)?,
    };
    // Neutral text: the first tokens of the project's true/false statements (test split).
    let tf = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
    let neutral: Vec<Vec<u32>> = tf
        .test
        .iter()
        .take(if args.quick { 8 } else { 64 })
        .map(|l| tok.encode(&l.text))
        .collect::<puppetlens::Result<_>>()?;
    let popts = PairOptions {
        diff: DiffOptions {
            layers: layers.clone(),
            ..Default::default()
        },
        multipliers: if args.quick {
            vec![-1.0, 0.0, 2.0]
        } else {
            vec![-2.0, -1.0, 0.0, 1.0, 2.0]
        },
        dose_layers: None,
    };
    // The tuned siblings, loaded together: the base's side of the search runs once for all.
    let mut tuned: Vec<(String, Model)> = Vec::new();
    for spec in &args.tuned {
        let (model, ttok) = puppetlens::open(spec, &opts)?;
        if ttok.vocab_size() != tok.vocab_size() {
            bail!(
                "{spec}: vocabulary of {} tokens, the base has {}: not a tuned sibling",
                ttok.vocab_size(),
                tok.vocab_size()
            );
        }
        let name = Path::new(spec)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.clone());
        tuned.push((name, model));
    }
    stage(&t0, &format!("pairs: {} vs {:?}", args.base, args.tuned));
    let named: Vec<(&str, &Model)> = tuned.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let pairs: Vec<PairReport> = pair_reports(
        &base,
        &named,
        &args.base,
        "sycophancy",
        &data,
        &neutral,
        &popts,
    )?;
    for rep in &pairs {
        let dir = args.out.join("pairs").join(&rep.tuned);
        rep.localisation.write(&dir)?;
        let mut dose = String::from("layer,multiplier,p_matching,rate,logit_diff\n");
        for r in &rep.dose {
            dose.push_str(&format!(
                "{},{},{:.6},{:.6},{:.6}\n",
                r.layer, r.multiplier, r.summary.mean_p, r.summary.rate, r.summary.mean_logit_diff
            ));
        }
        atomic_write(&dir.join("dose.csv"), &dose)?;
    }
    stage(&t0, "figures (pairs)");
    let mut files = write_figures(&pairs, &args.out)?;

    // The causal verdict per pair: cross-model activation patching and the puppeteer rank, with
    // its specificity on neutral text and on an unrelated behaviour (judging true/false
    // statements, the project's true_false.csv test split).
    let judged: Vec<AbItem> = tf
        .test
        .iter()
        .take(if args.quick { 16 } else { 64 })
        .map(|l| AbItem {
            question: format!(
                "Is this statement true or false?\n\"{}\"\n (A) The statement is true.\n (B) The statement is false.",
                l.text
            ),
            matching: if l.label { "(A)" } else { "(B)" }.into(),
            not_matching: if l.label { "(B)" } else { "(A)" }.into(),
        })
        .collect();
    let unrelated = cases(&tok, &judged, usize::MAX, text)?;
    let patch_opts = PatchOptions {
        layers: layers.clone(),
        neutral: neutral.clone(),
        unrelated,
        ..if args.quick {
            PatchOptions {
                ranks: vec![1, 4, 16],
                random_seeds: 2,
                positions: 4,
                bootstrap: 200,
                ..PatchOptions::default()
            }
        } else {
            PatchOptions::default()
        }
    };
    let mut patched: Vec<Patching> = Vec::new();
    for (name, model) in &tuned {
        stage(&t0, &format!("patching: {} vs {name}", args.base));
        let rep = patching(&base, model, &data, &patch_opts)?;
        rep.write(args.out.join("pairs").join(name).join("patching"))?;
        patched.push(rep);
    }
    let named_patch: Vec<(&str, &Patching)> = tuned
        .iter()
        .map(|(n, _)| n.as_str())
        .zip(&patched)
        .collect();
    files.extend(patch::write_figures(&named_patch, &args.out, |id| {
        tok.decode(&[id]).unwrap_or_default()
    })?);

    let single = if args.single == "none" {
        None
    } else {
        Some(single_model(&args.single, &opts, args.quick, &t0)?)
    };
    if let Some((name, sets)) = &single {
        let series = sets
            .iter()
            .map(|s| Series {
                label: s.name.clone(),
                points: s
                    .acc
                    .iter()
                    .enumerate()
                    .map(|(l, &a)| (l as f64, a))
                    .collect(),
                band: Some(
                    s.ci.iter()
                        .enumerate()
                        .map(|(l, &(lo, hi))| (l as f64, lo, hi))
                        .collect(),
                ),
                dashed: false,
            })
            .collect();
        files.extend(
            LineChart {
                title: format!("{name}: linear probe accuracy per layer"),
                x_label: "layer (blocks.L.hook_resid_post)".into(),
                y_label: "test accuracy (95% bootstrap CI)".into(),
                series,
                y_range: Some((0.3, 1.02)),
                hline: Some((0.5, "chance".into())),
                ..Default::default()
            }
            .save(args.out.join("single_model_probes"))?,
        );
        let mut csv = String::from("dataset,layer,accuracy,ci_low,ci_high\n");
        for s in sets {
            for (l, (a, (lo, hi))) in s.acc.iter().zip(&s.ci).enumerate() {
                csv.push_str(&format!("\"{}\",{l},{a:.6},{lo:.6},{hi:.6}\n", s.name));
            }
        }
        atomic_write(&args.out.join("single_model.csv"), &csv)?;
    }

    // Summary: table, JSON, CSV.
    println!(
        "\n{:<12} {:>5} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8}",
        "tuned", "best", "acc_base", "acc_tune", "P_base", "P_tuned", "closed", "removed"
    );
    let mut csv = String::from("base,tuned,best_layer,probe_acc_base,probe_acc_tuned,p_base,p_tuned,gap_closed,gap_removed\n");
    let mut pairs_json = Vec::new();
    for p in &pairs {
        let loc = &p.localisation;
        let row = loc
            .best_layer
            .and_then(|b| loc.rows.iter().find(|r| r.layer == b));
        let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:>5} {:>8} {:>8} {:>9.3} {:>9.3} {:>8} {:>8}",
            p.tuned,
            loc.best_layer
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            f(row.map(|r| r.probe_acc_base)),
            f(row.map(|r| r.probe_acc_tuned)),
            loc.p_base,
            loc.p_tuned,
            f(row.and_then(|r| r.gap_closed)),
            f(row.and_then(|r| r.gap_removed)),
        );
        csv.push_str(&format!(
            "{},{},{},{},{},{:.6},{:.6},{},{}\n",
            p.base,
            p.tuned,
            loc.best_layer.map(|l| l.to_string()).unwrap_or_default(),
            f(row.map(|r| r.probe_acc_base)),
            f(row.map(|r| r.probe_acc_tuned)),
            loc.p_base,
            loc.p_tuned,
            f(row.and_then(|r| r.gap_closed)),
            f(row.and_then(|r| r.gap_removed)),
        ));
        let verdict = patched
            .iter()
            .zip(&tuned)
            .find(|(_, (n, _))| *n == p.tuned)
            .map(|(r, _)| &r.verdict);
        pairs_json.push(json!({
            "verdict": verdict,
            "base": p.base, "tuned": p.tuned, "dataset": p.dataset, "n_items": p.n_items,
            "p_base": loc.p_base, "p_tuned": loc.p_tuned, "best_layer": loc.best_layer,
            "layers": loc.rows.iter().map(|r| r.layer).collect::<Vec<_>>(),
            "diff_norm": loc.rows.iter().map(|r| r.diff_norm).collect::<Vec<_>>(),
            "cos_diff_behaviour": loc.rows.iter().map(|r| r.cos_diff_behaviour).collect::<Vec<_>>(),
            "probe_acc_base": loc.rows.iter().map(|r| r.probe_acc_base).collect::<Vec<_>>(),
            "probe_acc_tuned": loc.rows.iter().map(|r| r.probe_acc_tuned).collect::<Vec<_>>(),
            "probe_transfer": loc.rows.iter().map(|r| r.probe_transfer).collect::<Vec<_>>(),
            "gap_closed": loc.rows.iter().map(|r| r.gap_closed).collect::<Vec<_>>(),
            "gap_removed": loc.rows.iter().map(|r| r.gap_removed).collect::<Vec<_>>(),
            "dose": p.dose.iter().map(|r| json!({"layer": r.layer, "multiplier": r.multiplier, "p_matching": r.summary.mean_p})).collect::<Vec<_>>(),
        }));
    }
    println!("\nverdicts (cross-model patching, {}):", patch_opts.family);
    for ((name, _), r) in tuned.iter().zip(&patched) {
        println!("  {name:<12} {}", r.verdict.reading);
    }
    let single_json = single.as_ref().map(|(name, sets)| {
        json!({
            "model": name,
            "sets": sets.iter().map(|s| json!({
                "dataset": s.name, "accuracy": s.acc,
                "ci_low": s.ci.iter().map(|c| c.0).collect::<Vec<_>>(),
                "ci_high": s.ci.iter().map(|c| c.1).collect::<Vec<_>>(),
                "best_layer_by_val": s.best_layer,
                "test_accuracy_at_best": s.acc[s.best_layer],
            })).collect::<Vec<_>>(),
        })
    });
    if let Some((name, sets)) = &single {
        println!("\n{name}:");
        for s in sets {
            println!(
                "  {:<48} best layer (val) {:>2}: test accuracy {:.3}",
                s.name, s.best_layer, s.acc[s.best_layer]
            );
        }
    }
    let summary = json!({
        "puppetlens_version": env!("CARGO_PKG_VERSION"),
        "quick": args.quick,
        "base": args.base, "tuned": args.tuned, "single": args.single,
        "dataset": args.dataset, "device": args.device,
        "seeds": {"splits": 0, "probe_bootstrap": ProbeOptions::default().seed},
        "pairs": pairs_json, "single_model": single_json,
        "files": files.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect::<Vec<_>>(),
        "seconds": t0.elapsed().as_secs_f64(),
    });
    // The summary goes last: a directory without one holds an unfinished run.
    atomic_write(&args.out.join("summary.csv"), &csv)?;
    atomic_write(
        &args.out.join("summary.json"),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    stage(
        &t0,
        &format!(
            "wrote {} (summary.json, summary.csv, {} figure files)",
            args.out.display(),
            files.len()
        ),
    );
    Ok(())
}
