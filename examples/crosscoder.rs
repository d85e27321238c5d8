//! Crosscoders between gemma-3-270m (base) and its tuned siblings, checked on the organisms'
//! ground truth (the sycophant's behaviour lives at layer 8).
//!
//! For each pair (base vs sycophant; base vs control, the negative control, same settings):
//! a paired activation corpus at `blocks.8.hook_resid_post` (every real token after `<bos>` of
//! the sycophancy training items in Gemma's chat format, harmless training instructions and the
//! opening user turns of 400 real ShareGPT conversations as chat turns, and true/false statements
//! as plain text; the instructions and statements of every split, since no evaluation here uses
//! them), a BatchTopK crosscoder trained on
//! it, its metrics and per-latent numbers, and the ground-truth check: among the tuned-only
//! latents (or those of highest relative decoder norm when none is labelled), the one whose
//! (a) top contexts are most dominated by sycophancy prompts and (b) tuned decoder direction is
//! most aligned with the mean tuned - base difference on sycophancy tokens is chosen (training
//! data only), its steering scale is chosen on the validation items, and (c) its effect on
//! held-out P(agree) is measured on the test items.
//!
//! `sweep` asks why the check fails (FINDINGS.md): the same check on crosscoders of other
//! layers (4, 8, 12), dictionary sizes (512, 2048 latents) and sparsities (k = 32, 8), and on a
//! corpus of the prompts' last four positions only, for the sycophant and the control, beside
//! the dense mean difference's steering effect at each layer; it writes `sweep.json` and
//! `sweep.md` (no crosscoder is saved). `sweep ORGANISMS [LAYERS]` (comma-separated) runs it on
//! other organisms and layers, into `sweep_<organisms>.json` / `.md`.
//!
//! ```sh
//! cargo run --release --example crosscoder            # writes notebooks-data/crosscoder/
//! cargo run --release --example crosscoder -- sweep   # writes notebooks-data/crosscoder/sweep.*
//! CROSSCODER_QUICK=1 cargo run --release --example crosscoder   # a small smoke run into /tmp
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use candle_core::DType;
use puppetlens::data::{self, ab_text_prompt, PromptFormat};
use puppetlens::dict::{
    self, decoder_direction, CorpusOptions, DictOptions, LatentLabel, PromptSet, SteerLatent,
};
use puppetlens::eval::{ab_summary, AbCase, Intervention};
use puppetlens::lora::Adapter;
use puppetlens::steer::cosine;
use puppetlens::{ChatMessage, HookPoint, Hooks, Model};

const LAYER: usize = 8;
const TOP: usize = 50; // top contexts per latent for (a)
const CANDIDATES: usize = 12; // latents of highest relative norm examined when none is tuned-only
const SHAREGPT: usize = 400; // real user turns in the corpus

fn main() -> Result<()> {
    let t_all = Instant::now();
    let quick = std::env::var("CROSSCODER_QUICK").is_ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_root = if quick {
        std::env::temp_dir().join("puppetlens-crosscoder-quick")
    } else {
        root.join("notebooks-data/crosscoder")
    };
    let gguf = puppetlens::fetch::fetch("gemma-3-270m")?;
    let (base, mut tok) = puppetlens::load(&gguf)?;
    tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    let organism = |name: &str| -> Result<Model> {
        let a = Adapter::load(
            root.join("notebooks-data/organisms").join(name),
            base.device(),
        )?;
        Ok(base.with_adapter(&a)?)
    };

    // Prompt sets (training splits only for the corpus).
    let syc = data::load_with_split("probes/sycophancy_ab.jsonl", data::load_ab_json)?;
    let fmt = PromptFormat::Chat { system: None };
    let cases = |items: &[data::AbItem]| -> Result<Vec<AbCase>> {
        items
            .iter()
            .map(|it| Ok(AbCase::from(ab_text_prompt(&tok, it, &fmt)?)))
            .collect()
    };
    let (train_c, val_c, test_c) = (cases(&syc.train)?, cases(&syc.val)?, cases(&syc.test)?);
    let instr = data::load_with_split("probes/refusal_requests.jsonl", |p| {
        data::load_labeled_instructions(p, "harmful")
    })?;
    let tf = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
    let take = |n: usize| if quick { n.min(16) } else { n };
    // Real user turns: the opening user turn of the first SHAREGPT ShareGPT conversations that
    // pass the default filter (20-500 characters, mostly ASCII), as chat turns.
    let chats = data::load_sharegpt(puppetlens::fetch::fetch_data("sharegpt")?)?;
    let user_turns = chats.first_user_turns(&data::TurnFilter::default());
    let sets = vec![
        PromptSet::new(
            "sycophancy",
            train_c
                .iter()
                .take(take(usize::MAX))
                .map(|c| c.ids.clone())
                .collect(),
        ),
        PromptSet::new(
            "instructions",
            instr
                .train
                .iter()
                .chain(&instr.val)
                .chain(&instr.test)
                .filter(|l| !l.label)
                .take(take(usize::MAX))
                .map(|l| tok.encode_chat(&[ChatMessage::user(&l.text)], true))
                .collect::<puppetlens::Result<Vec<_>>>()?,
        ),
        PromptSet::new(
            "sharegpt",
            user_turns
                .iter()
                .take(take(SHAREGPT))
                .map(|t| tok.encode_chat(&[ChatMessage::user(t)], true))
                .collect::<puppetlens::Result<Vec<_>>>()?,
        ),
        PromptSet::new(
            "neutral",
            tf.train
                .iter()
                .chain(&tf.val)
                .chain(&tf.test)
                .take(take(usize::MAX))
                .map(|l| tok.encode(&l.text))
                .collect::<puppetlens::Result<Vec<_>>>()?,
        ),
    ];
    let (val_c, test_c) = if quick {
        (val_c[..8].to_vec(), test_c[..8].to_vec())
    } else {
        (val_c, test_c)
    };

    let point = HookPoint::ResidPost(LAYER);
    let copts = CorpusOptions {
        point,
        batch_size: 8,
        skip_first: 1,
        progress: true,
        ..CorpusOptions::default()
    };
    let dopts = DictOptions {
        n_latents: if quick { 256 } else { 512 },
        k: 32,
        steps: if quick { 100 } else { 1000 },
        batch_size: 256,
        seed: 0,
        progress: true,
        log_every: 50,
        ..DictOptions::default()
    };
    let pb_val = ab_summary(&base, &val_c, &Intervention::None, 8)?.mean_p;
    let pb_test = ab_summary(&base, &test_c, &Intervention::None, 8)?.mean_p;
    println!("base P(agree): validation {pb_val:.3}, test {pb_test:.3}");

    let opts = dict::CrosscoderOptions {
        corpus: copts.clone(),
        train: dopts.clone(),
        // The committed dashboards do not store ShareGPT's text (third-party data stays out of
        // the repository); its contexts keep their sources and activations.
        dashboard: dict::DashboardOptions {
            withheld: vec!["sharegpt".into()],
            ..dict::DashboardOptions::default()
        },
        ..dict::CrosscoderOptions::default()
    };
    let decode = |t: u32| tok.decode(&[t]).unwrap_or_default();

    let ev = Eval {
        base: &base,
        tok: &tok,
        point,
        val: &val_c,
        test: &test_c,
        pb_val,
        pb_test,
        out_root: &out_root,
        dashboard: &opts.dashboard,
        skip_first: copts.skip_first,
    };
    if std::env::args().nth(1).as_deref() == Some("sweep") {
        return sweep(&ev, &organism, &sets, &copts, &dopts);
    }
    let mut summary = Vec::new();
    for tuned_name in ["sycophant", "control"] {
        let tuned = organism(tuned_name)?;
        // Corpus, training, metrics, the latent table and the dashboard in one call.
        let mut run = dict::crosscoder(
            &base,
            &tuned,
            &sets,
            decode,
            &dict::CrosscoderOptions {
                names: ["gemma-3-270m".into(), format!("gemma-3-270m+{tuned_name}")],
                ..opts.clone()
            },
        )?;
        run.dict
            .meta
            .insert("model_name".into(), "gemma-3-270m".into());
        let mut variant = dict::crosscoder_on(
            run.corpus.clone(),
            decode,
            &dict::CrosscoderOptions {
                names: ["gemma-3-270m".into(), format!("gemma-3-270m+{tuned_name}")],
                train: DictOptions {
                    shared_decoder_bias: true,
                    ..dopts.clone()
                },
                ..opts.clone()
            },
        )?;
        variant.corpus_seconds = run.corpus_seconds;
        summary.push(examine(&mut run, tuned_name, "", &ev)?);
        summary.push(examine(&mut variant, tuned_name, "shared-bias", &ev)?);
    }
    let secs = t_all.elapsed().as_secs_f64();
    let readme = readme(&summary, secs)?;
    puppetlens::write_atomic(&out_root.join("README.md"), readme.as_bytes())?;
    println!("done in {secs:.0} s; wrote {}", out_root.display());
    Ok(())
}

/// The diagnostic sweep (see the crate docs above): one paired corpus per (layer, organism),
/// several crosscoders on each, the same choice and steering check as the committed ones.
fn sweep(
    ev0: &Eval,
    organism: &dyn Fn(&str) -> Result<Model>,
    sets: &[PromptSet],
    copts: &CorpusOptions,
    dopts: &DictOptions,
) -> Result<()> {
    let quick = std::env::var("CROSSCODER_QUICK").is_ok();
    // `sweep [ORGANISMS [LAYERS]]`, comma-separated; other than the defaults, the files are
    // named after the organisms (sweep_<names>.json / .md).
    let args: Vec<String> = std::env::args().skip(2).collect();
    let tuned_names: Vec<String> = match args.first() {
        Some(a) => a.split(',').map(str::to_string).collect(),
        None => vec!["sycophant".into(), "control".into()],
    };
    let layers: Vec<usize> = match args.get(1) {
        Some(a) => a
            .split(',')
            .map(|l| l.parse().context("layers: comma-separated numbers"))
            .collect::<Result<_>>()?,
        None if quick => vec![8],
        None => vec![4, 8, 12],
    };
    let stem = if args.is_empty() {
        "sweep".to_string()
    } else {
        format!("sweep_{}", tuned_names.join("_"))
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let t0 = Instant::now();
    for &layer in &layers {
        let point = HookPoint::ResidPost(layer);
        let ev = Eval { point, ..*ev0 };
        for tuned_name in &tuned_names {
            let tuned = organism(tuned_name)?;
            let tc = Instant::now();
            let corpus = dict::paired_corpus(
                ev.base,
                &tuned,
                sets,
                &CorpusOptions {
                    point,
                    ..copts.clone()
                },
            )?;
            let corpus_s = tc.elapsed().as_secs_f64();
            drop(tuned);
            // The dense reference: the mean tuned - base difference on the sycophancy tokens,
            // added to the base at every position (scale 1).
            let diff = corpus.mean_diff(Some("sycophancy"))?; // [d]
            let v = puppetlens::steer::SteeringVector::new(
                BTreeMap::from([(layer, diff)]),
                "mean-diff",
            )?;
            let p_dense = ab_summary(
                ev.base,
                ev.test,
                &Intervention::Add {
                    vector: &v,
                    scale: 1.0,
                    positions: puppetlens::Positions::All,
                },
                8,
            )?
            .mean_p;
            let mut configs = vec![("all", 512, 32), ("all", 2048, 32), ("all", 512, 8)];
            if layer == 8 {
                configs.push(("last 4 positions", 512, 32));
            }
            for (variant, n_latents, k) in configs {
                let tail;
                let c = if variant == "all" {
                    &corpus
                } else {
                    tail = corpus.last_positions(4)?;
                    &tail
                };
                let tag = format!("layer {layer} {tuned_name} {variant} {n_latents}/k{k}");
                let (cc, log) = dict::train(
                    &c.acts,
                    &DictOptions {
                        n_latents: if quick { n_latents / 2 } else { n_latents },
                        k,
                        log_every: 0,
                        ..dopts.clone()
                    },
                )?;
                let m = dict::evaluate(&cc, &c.acts, 2048)?;
                let stats = dict::latents(&cc, &c.acts, &dict::LabelOptions::default())?;
                let f = c.latent_activations(&cc, 2048)?; // [n_tokens, n_latents]
                let mut labels: BTreeMap<String, usize> = BTreeMap::new();
                for s in &stats {
                    *labels.entry(format!("{:?}", s.label)).or_default() += 1;
                }
                let max_rel = stats
                    .iter()
                    .filter(|s| s.frequency > 0.0)
                    .map(|s| s.rel_norm)
                    .fold(0.0, f64::max);
                let ch = choose(&cc, c, &stats, &f, &ev, &tag)?;
                let (j, share, cos, _, cos_last) =
                    ch.rows.first().cloned().context("no candidate latent")?;
                println!(
                    "{tag}: {:.0} s; FVU {:.3}/{:.3}, L0 {:.1}, dead {:.3}; labels {labels:?}; \
                     max rel. norm {max_rel:.2}; dense mean difference: test P {p_dense:.3}",
                    log.seconds, m.fvu[0], m.fvu[1], m.l0, m.dead_fraction
                );
                rows.push(serde_json::json!({
                    "layer": layer, "tuned": tuned_name, "corpus": variant, "tokens": c.len(),
                    "corpus_seconds": corpus_s, "n_latents": cc.n_latents(), "k": k,
                    "train_seconds": log.seconds, "fvu": m.fvu, "l0": m.l0,
                    "dead_fraction": m.dead_fraction, "labels": labels, "max_rel_norm": max_rel,
                    "candidates_from_labels": ch.from_labels,
                    "chosen": {"latent": j, "label": format!("{:?}", stats[j].label),
                               "rel_norm": stats[j].rel_norm, "sycophancy_share_top": share,
                               "corpus_sycophancy_share": ch.base_rate, "cosine_diff": cos,
                               "cosine_diff_last": cos_last, "multiplier": ch.best.0,
                               "test_p_steered": ch.p_test},
                    "test_p_base": ev.pb_test, "test_p_dense_mean_diff": p_dense,
                }));
                // Written after every crosscoder, so that a stopped sweep keeps what it measured.
                puppetlens::write_atomic(
                    &ev.out_root.join(format!("{stem}.json")),
                    serde_json::to_string_pretty(&rows)?.as_bytes(),
                )?;
            }
        }
    }
    let mut md = format!(
        "# Crosscoder sweep: layer, dictionary size, k, corpus\n\n\
         `cargo run --release --example crosscoder -- {}` ({:.0} s on a 2-core CPU); the \
         committed crosscoders' corpus and training (1000 steps of 256 tokens, seed 0), the \
         same choice of latent and steering check (FINDINGS.md). Base test P(agree) {:.3}.\n\n\
         | layer | tuned | corpus (tokens) | latents / k | FVU base / tuned | dead | tuned-only \
         latents | max rel. norm | chosen latent (label, rel. norm) | (a) share (corpus) | (b) \
         cosine (last token) | (c) test P steered (x typical) | dense mean diff, test P |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        t0.elapsed().as_secs_f64(),
        ev0.pb_test
    );
    for r in &rows {
        let c = &r["chosen"];
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        writeln!(
            md,
            "| {} | {} | {} ({}) | {} / {} | {:.3} / {:.3} | {:.3} | {} | {:.2} | {} ({}, {:.2}) | {:.2} ({:.2}) | {:.3} ({:.3}) | {:.3} (x{:.2}) | {:.3} |",
            r["layer"], r["tuned"].as_str().unwrap_or("?"), r["corpus"].as_str().unwrap_or("?"),
            r["tokens"], r["n_latents"], r["k"], f(&r["fvu"][0]), f(&r["fvu"][1]),
            f(&r["dead_fraction"]), r["labels"]["TunedOnly"].as_u64().unwrap_or(0),
            f(&r["max_rel_norm"]), c["latent"], c["label"].as_str().unwrap_or("?"),
            f(&c["rel_norm"]), f(&c["sycophancy_share_top"]), f(&c["corpus_sycophancy_share"]),
            f(&c["cosine_diff"]), f(&c["cosine_diff_last"]), f(&c["test_p_steered"]),
            f(&c["multiplier"]), f(&r["test_p_dense_mean_diff"])
        )?;
    }
    puppetlens::write_atomic(&ev0.out_root.join(format!("{stem}.md")), md.as_bytes())?;
    println!("sweep done in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// What every crosscoder of the example is examined with.
struct Eval<'a> {
    base: &'a Model,
    tok: &'a puppetlens::Tokenizer,
    point: HookPoint,
    val: &'a [AbCase],
    test: &'a [AbCase],
    pb_val: f64,
    pb_test: f64,
    out_root: &'a Path,
    dashboard: &'a dict::DashboardOptions,
    skip_first: usize,
}

/// Labels, the ground-truth check (a, b, c) and the files of one trained crosscoder; `variant`
/// names a variant of the settings ("" for the main one), which gets its own directory.
fn examine(
    run: &mut dict::CrosscoderRun,
    tuned_name: &str,
    variant: &str,
    ev: &Eval,
) -> Result<serde_json::Value> {
    let (cc, corpus, log, m) = (&run.dict, &run.corpus, &run.log, &run.metrics);
    let tag = if variant.is_empty() {
        tuned_name.to_string()
    } else {
        format!("{tuned_name} ({variant})")
    };
    let (tok, point) = (ev.tok, ev.point);
    let (test_c, pb_test) = (ev.test, ev.pb_test);
    let decode = |t: u32| tok.decode(&[t]).unwrap_or_default();
    let corpus_s = run.corpus_seconds;
    let counts = corpus.set_counts();
    println!(
        "{tag}: corpus {} tokens {:?} in {corpus_s:.0} s ({} outlier tokens dropped: {:?})",
        corpus.len(),
        corpus.sets.iter().zip(&counts).collect::<Vec<_>>(),
        corpus.dropped.len(),
        corpus.dropped
    );
    println!(
        "{tag}: trained {} tokens in {:.0} s ({:.0} tok/s); FVU base {:.3} tuned {:.3}, L0 {:.1}, dead {:.3}",
        log.tokens, log.seconds, log.tokens_per_s, m.fvu[0], m.fvu[1], m.l0, m.dead_fraction
    );
    let diag = diff_diagnostics(cc, corpus)?;
    println!("{tag}: tuned - base difference: {diag}");
    let stats = run.latents.clone();
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for s in &stats {
        *labels.entry(format!("{:?}", s.label)).or_default() += 1;
    }
    println!("{tag}: labels {labels:?}");
    let ch = choose(cc, corpus, &stats, &run.f, ev, &tag)?;
    let (rows, from_labels, base_rate) = (&ch.rows, ch.from_labels, ch.base_rate);
    let (diff, diff_last, typical, dir_norm, matched) =
        (&ch.diff, &ch.diff_last, ch.typical, ch.dir_norm, ch.matched);
    let (val_rows, best, p_test) = (&ch.val_rows, ch.best, ch.p_test);
    let (j, share, cos, top, cos_last) = rows.first().cloned().context("no candidate latent")?;
    let diff_norm = diff.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
    let norm = |t: &candle_core::Tensor| -> Result<f64> {
        Ok(t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64)
    };
    // The difference of the two decoder biases (model units): where a shift on every token goes.
    let bias = {
        let b = cc.b_dec().to_vec2::<f32>()?; // [2, d]
        let sc = cc.scale();
        let bd: Vec<f32> = (0..b[0].len())
            .map(|i| b[1][i] * sc[1] - b[0][i] * sc[0])
            .collect();
        let n = bd.len();
        let bd = candle_core::Tensor::from_vec(bd, n, &candle_core::Device::Cpu)?;
        serde_json::json!({"norm": norm(&bd)?, "cosine_diff": cosine(&bd, &diff)?,
                           "cosine_chosen_tuned_direction": cosine(&bd, &decoder_direction(cc, j, 1)?)?})
    };
    println!("{tag}: decoder bias difference {bias}");
    // The measured effect goes on the dashboard; then save (bf16), the tables and the page.
    let effect = dict::SteeringEffect {
        latent: j,
        model: 1,
        scale: best.0 * typical,
        measure: "P(agree), test split".into(),
        items: test_c.len(),
        before: pb_test,
        after: p_test,
    };
    let f = run.f.clone();
    run.dashboard
        .add_steering(effect, &run.corpus, &f, decode, ev.dashboard)?;
    let dir = ev.out_root.join(if variant.is_empty() {
        format!("gemma-3-270m__{tuned_name}")
    } else {
        format!("gemma-3-270m__{tuned_name}__{variant}")
    });
    run.save(&dir, DType::BF16)?;
    let (corpus, log, m) = (&run.corpus, &run.log, &run.metrics);
    let cand_json: Vec<serde_json::Value> = rows
        .iter()
        .map(|(j, share, cos, _, cl)| {
            serde_json::json!({"latent": j, "rel_norm": stats[*j].rel_norm,
            "label": format!("{:?}", stats[*j].label), "sycophancy_share_top": share, "cosine_diff": cos, "cosine_diff_last": cl})
        })
        .collect();
    let contexts: Vec<String> = top
        .iter()
        .take(12)
        .map(|c| {
            if ev.dashboard.withheld.contains(&corpus.sets[c.source.set]) {
                return format!(
                    "{} #{} pos {}: {:.2}: (text not stored)",
                    corpus.sets[c.source.set], c.source.item, c.source.pos, c.activation
                );
            }
            let w = tok
                .decode(&c.window[..c.window.len() - 1])
                .unwrap_or_default();
            let t = tok
                .decode(&c.window[c.window.len() - 1..])
                .unwrap_or_default();
            format!(
                "{} #{} pos {}: {:.2}: …{}[[{}]]",
                corpus.sets[c.source.set], c.source.item, c.source.pos, c.activation, w, t
            )
            .replace('\n', "⏎")
        })
        .collect();
    let res = serde_json::json!({
        "pair": ["gemma-3-270m", format!("gemma-3-270m+{tuned_name}")],
        "variant": if variant.is_empty() { "per-model decoder biases" } else { "one decoder bias shared by both models" },
        "decoder_bias_difference": bias,
        "hook_name": point.to_string(),
        "corpus": {"tokens": corpus.len(), "sets": corpus.sets, "counts": counts, "seconds": corpus_s,
                    "skip_first": ev.skip_first, "dropped_outliers": corpus.dropped.len()},
        "train": {"n_latents": log.options.n_latents, "k": log.options.k, "steps": log.options.steps, "batch_size": log.options.batch_size,
                   "shared_decoder_bias": log.options.shared_decoder_bias,
                   "seconds": log.seconds, "tokens": log.tokens, "tokens_per_s": log.tokens_per_s,
                   "final_loss": log.steps.last().map(|s| s.loss)},
        "metrics": {"fvu": m.fvu, "l0": m.l0, "dead_fraction": m.dead_fraction},
        "difference": diag,
        "labels": labels,
        "candidates_from_labels": from_labels,
        "candidates": cand_json,
        "chosen": {"latent": j, "rel_norm": stats[j].rel_norm, "label": format!("{:?}", stats[j].label),
                    "sycophancy_share_top": share, "corpus_sycophancy_share": base_rate,
                    "cosine_diff": cos, "cosine_diff_last": cos_last, "diff_norm": diff_norm,
                    "diff_last_norm": diff_last.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?, "typical_activation": typical, "decoder_norm_tuned": dir_norm, "norm_matched_multiplier": matched,
                    "validation": val_rows.iter().map(|(m, p)| serde_json::json!({"multiplier": m, "p": p})).collect::<Vec<_>>(),
                    "multiplier": best.0, "scale": best.0 * typical,
                    "test_items": test_c.len(), "test_p_base": pb_test, "test_p_steered": p_test,
                    "top_contexts": contexts},
    });
    puppetlens::write_atomic(
        &dir.join("results.json"),
        serde_json::to_string_pretty(&res)?.as_bytes(),
    )?;
    Ok(res)
}

/// The ground-truth check's choice on one trained crosscoder: the candidates (tuned-only
/// latents, else the active ones of highest relative norm), (a) and (b) for each, the chosen
/// latent by (a) x (b) (training data only), its steering scale chosen on the validation items
/// and (c) its effect on the test items.
struct Choice {
    from_labels: bool,
    /// (latent, (a) sycophancy share of its top contexts, (b) cosine, its top contexts, cosine
    /// with the last-token difference), best first.
    rows: Vec<(usize, f64, f64, Vec<dict::Context>, f64)>,
    base_rate: f64,
    diff: candle_core::Tensor,
    diff_last: candle_core::Tensor,
    typical: f64,
    dir_norm: f64,
    matched: f64,
    val_rows: Vec<(f64, f64)>,
    best: (f64, f64),
    p_test: f64,
}

fn choose(
    cc: &dict::Dictionary,
    corpus: &dict::PairedCorpus,
    stats: &[dict::LatentStats],
    f: &candle_core::Tensor,
    ev: &Eval,
    tag: &str,
) -> Result<Choice> {
    let (base, point) = (ev.base, ev.point);
    let (val_c, test_c, pb_val, pb_test) = (ev.val, ev.test, ev.pb_val, ev.pb_test);
    let counts = corpus.set_counts();
    let diff = corpus.mean_diff(Some("sycophancy"))?; // [d]
    let si = corpus.set_index("sycophancy")?;
    // The difference at the last token of each sycophancy prompt (where DPO trained it).
    let last = corpus.last_tokens("sycophancy")?; // [n_prompts] rows
    let xl = corpus.acts.index_select(&last, 0)?; // [n_last, 2, d]
    let diff_last = (xl.get_on_dim(1, 1)? - xl.get_on_dim(1, 0)?)?.mean(0)?; // [d]
    let base_rate = counts[si] as f64 / corpus.len() as f64;

    // Candidates: tuned-only latents, else the highest relative norms among active ones.
    let mut cand: Vec<usize> = stats
        .iter()
        .filter(|s| s.label == LatentLabel::TunedOnly)
        .map(|s| s.index)
        .collect();
    let from_labels = !cand.is_empty();
    if !from_labels {
        let mut order: Vec<usize> = stats
            .iter()
            .filter(|s| s.frequency > 0.0)
            .map(|s| s.index)
            .collect();
        order.sort_by(|&a, &b| stats[b].rel_norm.total_cmp(&stats[a].rel_norm));
        cand = order.into_iter().take(CANDIDATES).collect();
    }
    let mut rows = Vec::new();
    for &j in &cand {
        let top = corpus.top_contexts(f, j, TOP, 12)?;
        let share = if top.is_empty() {
            0.0
        } else {
            top.iter().filter(|c| c.source.set == si).count() as f64 / top.len() as f64
        };
        let dir = decoder_direction(cc, j, 1)?;
        let cos = cosine(&dir, &diff)?;
        let cos_last = cosine(&dir, &diff_last)?;
        rows.push((j, share, cos, top, cos_last));
    }
    // The rule (training data only): highest share of sycophancy in the top contexts times
    // the (positive) cosine with the sycophancy difference.
    let score = |r: &(usize, f64, f64, Vec<dict::Context>, f64)| r.1 * r.2.max(0.0);
    rows.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let (j, share, cos, _, cos_last) = rows.first().cloned().context("no candidate latent")?;
    // Typical activation: mean of the latent's positive activations on sycophancy tokens.
    let col = f.narrow(1, j, 1)?.flatten_all()?.to_vec1::<f32>()?;
    let act: Vec<f64> = (0..corpus.len())
        .filter(|&r| corpus.sources[r].set == si && col[r] > 0.0)
        .map(|r| col[r] as f64)
        .collect();
    let typical = if act.is_empty() {
        col.iter().cloned().fold(0f32, f32::max) as f64
    } else {
        act.iter().sum::<f64>() / act.len() as f64
    };
    let steer_p = |cases: &[AbCase], scale: f64| -> Result<f64> {
        let mut total = 0.0;
        for chunk in cases.chunks(8) {
            // ab_summary with a custom hook: P of each chunk through the same scorer.
            let mut hooks = Hooks::new();
            hooks.add(point, SteerLatent::new(cc, j, 1, scale)?);
            total += steer_chunk(base, chunk, &mut hooks)? * chunk.len() as f64;
        }
        Ok(total / cases.len() as f64)
    };
    // Multiples of the typical activation, and the one at which the added vector's norm equals
    // the last-token difference's (the scale at which that difference itself steers).
    let norm = |t: &candle_core::Tensor| -> Result<f64> {
        Ok(t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64)
    };
    let dir_norm = norm(&decoder_direction(cc, j, 1)?)?;
    let matched = norm(&diff_last)? / dir_norm / typical;
    let multipliers = [1.0, 2.0, 4.0, 8.0, matched];
    let mut val_rows = Vec::new();
    for &mlt in &multipliers {
        let p = steer_p(val_c, mlt * typical)?;
        println!(
            "{tag}: latent {j} x{mlt} typical ({:.2}): validation P {p:.3} (base {pb_val:.3})",
            mlt * typical
        );
        val_rows.push((mlt, p));
    }
    let best = val_rows
        .iter()
        .cloned()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .context("no multiplier")?;
    let p_test = steer_p(test_c, best.0 * typical)?;
    println!(
        "{tag}: chosen latent {j} ({}): (a) sycophancy share of top {TOP} {share:.2} (corpus {base_rate:.2}); \
         (b) cosine {cos:.3} (last-token difference {cos_last:.3}); (c) test P {pb_test:.3} -> {p_test:.3} at x{} typical",
        if from_labels { "tuned-only" } else { "highest relative norm" },
        best.0
    );

    Ok(Choice {
        from_labels,
        rows,
        base_rate,
        diff,
        diff_last,
        typical,
        dir_norm,
        matched,
        val_rows,
        best,
        p_test,
    })
}

/// How much of the activations the tuned - base difference is, and how much of it the crosscoder
/// reconstructs: on all tokens and on the last token of each sycophancy prompt (where the
/// sycophant was trained: DPO on the answer token only), `energy` = Σ‖t - b‖² / Σ‖b - mean b‖²
/// and `fvu` = Σ‖(t - b) - (t̂ - b̂)‖² / Σ‖t - b‖² (uncentred: 1 means the reconstructed
/// difference explains nothing).
fn diff_diagnostics(
    cc: &dict::Dictionary,
    corpus: &dict::PairedCorpus,
) -> Result<serde_json::Value> {
    let last = corpus.last_tokens("sycophancy")?; // [n_prompts] rows
    let mut out = serde_json::Map::new();
    for (name, x) in [
        ("all", corpus.acts.clone()),
        ("sycophancy_last", corpus.acts.index_select(&last, 0)?),
    ] {
        let n = x.dim(0)?;
        let mut recon = Vec::new();
        for s in (0..n).step_by(2048) {
            recon.push(cc.reconstruct(&x.narrow(0, s, 2048.min(n - s))?)?);
        }
        let xh = candle_core::Tensor::cat(&recon, 0)?; // [n, 2, d]
        let dt = (x.get_on_dim(1, 1)? - x.get_on_dim(1, 0)?)?; // [n, d]
        let dh = (xh.get_on_dim(1, 1)? - xh.get_on_dim(1, 0)?)?; // [n, d]
        let b = x.get_on_dim(1, 0)?;
        let sq = |t: &candle_core::Tensor| -> Result<f64> {
            Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        let var_b = sq(&b.broadcast_sub(&b.mean_keepdim(0)?)?)?;
        let e = sq(&dt)?;
        out.insert(
            name.into(),
            serde_json::json!({"tokens": n, "energy": e / var_b, "fvu": sq(&(&dt - &dh)?)? / e}),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// Mean P(matching) over `cases` (normalised over the two answers, as `eval::ab_summary`
/// scores) with `hooks` installed, in one batch.
fn steer_chunk(base: &Model, cases: &[AbCase], hooks: &mut Hooks) -> Result<f64> {
    let ids: Vec<&[u32]> = cases.iter().map(|c| c.ids.as_slice()).collect();
    let batch = puppetlens::Batch::new(&ids)?;
    let logits: Vec<Vec<f32>> = base.forward_last(&batch, hooks)?.to_vec2()?; // [b, vocab]
    Ok(cases
        .iter()
        .zip(&logits)
        .map(|(c, r)| {
            let (a, b) = (
                r[c.matching as usize] as f64,
                r[c.not_matching as usize] as f64,
            );
            1.0 / (1.0 + (b - a).exp())
        })
        .sum::<f64>()
        / cases.len() as f64)
}

fn readme(summary: &[serde_json::Value], secs: f64) -> Result<String> {
    let mut s = String::new();
    writeln!(s, "# Crosscoders: gemma-3-270m vs its tuned siblings\n")?;
    writeln!(
        s,
        "Built by `cargo run --release --example crosscoder` in {secs:.0} s on a 2-core CPU (no GPU). \
         Each directory holds a BatchTopK crosscoder (`dict.json` + `dict.safetensors`, bf16; load with \
         `puppetlens::dict::Dictionary::load`), its training log (`train_log.json`), its per-latent table (`latents.csv`), \
         `results.json`, and its dashboard (`dashboard.html`: open it in a browser; the latent table, top contexts \
         shaded by activation, the chosen latent's steering effect; `dashboard.json` holds its data).\n"
    )?;
    writeln!(s, "| pair | corpus tokens (sycophancy / instructions / sharegpt / neutral) | training | FVU base / tuned | L0 | dead | labels | chosen latent | (a) sycophancy share of top {TOP} (corpus share) | (b) cosine with sycophancy mean diff | (c) test P(agree), base -> steered |")?;
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in summary {
        let c = &r["chosen"];
        writeln!(
            s,
            "| {} vs {}{} | {} ({}) | {:.0} s, {:.0} tok/s | {:.3} / {:.3} | {:.1} | {:.3} | {} | {} ({}, rel. norm {:.2}) | {:.2} ({:.2}) | {:.3} | {:.3} -> {:.3} (x{:.2} typical) |",
            r["pair"][0].as_str().unwrap_or(""),
            r["pair"][1].as_str().unwrap_or(""),
            if r["train"]["shared_decoder_bias"].as_bool() == Some(true) {
                ", one shared decoder bias"
            } else {
                ""
            },
            r["corpus"]["tokens"],
            r["corpus"]["counts"].as_array().map(|a| a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" / ")).unwrap_or_default(),
            r["train"]["seconds"].as_f64().unwrap_or(f64::NAN),
            r["train"]["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
            r["metrics"]["fvu"][0].as_f64().unwrap_or(f64::NAN),
            r["metrics"]["fvu"][1].as_f64().unwrap_or(f64::NAN),
            r["metrics"]["l0"].as_f64().unwrap_or(f64::NAN),
            r["metrics"]["dead_fraction"].as_f64().unwrap_or(f64::NAN),
            r["labels"],
            c["latent"],
            c["label"].as_str().unwrap_or(""),
            c["rel_norm"].as_f64().unwrap_or(f64::NAN),
            c["sycophancy_share_top"].as_f64().unwrap_or(f64::NAN),
            c["corpus_sycophancy_share"].as_f64().unwrap_or(f64::NAN),
            c["cosine_diff"].as_f64().unwrap_or(f64::NAN),
            c["test_p_base"].as_f64().unwrap_or(f64::NAN),
            c["test_p_steered"].as_f64().unwrap_or(f64::NAN),
            c["multiplier"].as_f64().unwrap_or(f64::NAN),
        )?;
    }
    writeln!(
        s,
        "\nWhat these numbers say, and the diagnostics behind them: [FINDINGS.md](FINDINGS.md); \
     the same check over layers, dictionary sizes, k and corpora: [sweep.md](sweep.md) \
     (`cargo run --release --example crosscoder -- sweep`)."
    )?;
    writeln!(
        s,
        "\nTop contexts of each chosen latent (activating token in [[ ]]):\n"
    )?;
    for r in summary {
        writeln!(
            s,
            "- {} ({}):",
            r["pair"][1].as_str().unwrap_or(""),
            r["variant"].as_str().unwrap_or("")
        )?;
        for c in r["chosen"]["top_contexts"].as_array().into_iter().flatten() {
            writeln!(s, "  - `{}`", c.as_str().unwrap_or("").replace('`', "'"))?;
        }
    }
    Ok(s)
}
