//! The `puppetlens` command line, run as a program on the real smollm2-135m-instruct checkpoint
//! (fetched once into the cache; a no-op when cached) with tiny datasets written by each test:
//! every subcommand's happy path, and one-line `error: ...` messages for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use puppetlens::SteeringVector;

const MODEL: &str = "smollm2-135m-instruct";
const N_LAYERS: usize = 30;
const D_MODEL: usize = 576;

/// Runs the binary with `args`, quietly (no progress lines).
fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_puppetlens"));
    cmd.arg("--quiet").args(args);
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run puppetlens {args:?}: {e}"),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` and asserts success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "puppetlens {args:?} failed:\n{}",
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `args` and asserts a non-zero exit with exactly one stderr line `error: ...` that contains
/// every one of `needles`, and no panic or backtrace.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = run(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "puppetlens {args:?} succeeded");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "puppetlens {args:?}: stderr is not one line:\n{err}"
    );
    assert!(lines[0].starts_with("error: "), "{err}");
    let lower = err.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "puppetlens {args:?}: {n:?} not in {err}");
    }
    err
}

/// A fresh directory for one test.
fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("puppetlens-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.display().to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// 12 labeled statements (6 true, 6 false) with a `text,label` header.
fn labeled_csv(dir: &Path) -> String {
    write(
        &dir.join("statements.csv"),
        "text,label\n\
         The capital of France is Paris.,1\n\
         The capital of France is Rome.,0\n\
         Water boils at 100 degrees Celsius at sea level.,1\n\
         Water boils at 10 degrees Celsius at sea level.,0\n\
         A week has seven days.,1\n\
         A week has nine days.,0\n\
         Two plus two is four.,1\n\
         Two plus two is five.,0\n\
         The sun rises in the east.,1\n\
         The sun rises in the west.,0\n\
         \"Cats, like dogs, are mammals.\",true\n\
         \"Cats, like ants, are insects.\",false\n",
    )
}

/// 6 sentiment contrast pairs (positive = happy).
fn pairs_jsonl(dir: &Path) -> String {
    let pairs = [
        (
            "I absolutely love this, it is wonderful and makes me so happy!",
            "I absolutely hate this, it is terrible and makes me so sad!",
        ),
        (
            "What a fantastic day, everything went perfectly.",
            "What an awful day, everything went wrong.",
        ),
        (
            "The food was delicious and the staff were lovely.",
            "The food was disgusting and the staff were rude.",
        ),
        (
            "I am thrilled with the results, great job!",
            "I am furious with the results, terrible job!",
        ),
        (
            "This movie was a joy from start to finish.",
            "This movie was a chore from start to finish.",
        ),
        (
            "Such a beautiful and kind gesture, thank you.",
            "Such an ugly and cruel gesture, shame on you.",
        ),
    ];
    let text: String = pairs
        .iter()
        .map(|(p, n)| format!("{{\"positive\": \"{p}\", \"negative\": \"{n}\"}}\n"))
        .collect();
    write(&dir.join("pairs.jsonl"), &text)
}

/// 8 sycophancy-style A/B items (the matching letter alternates A, B, A, ...), as a JSON list when
/// `list`, else JSONL; with a `split` field (4 train, 2 val, 2 test) when `split`.
fn ab_file(dir: &Path, list: bool, split: bool) -> String {
    let liked = [
        "cats",
        "dogs",
        "summer",
        "winter",
        "tea",
        "coffee",
        "the city",
        "the countryside",
    ];
    let parts = [
        "train", "train", "train", "train", "val", "val", "test", "test",
    ];
    let mut records = Vec::new();
    for (k, thing) in liked.iter().enumerate() {
        // The user likes `thing`; the sycophantic (matching) answer agrees with them.
        let yes = format!("Yes, {thing} is the best choice.");
        let no = format!("No, {thing} is not the best choice.");
        let (a, b, matching, other) = if k % 2 == 0 {
            (yes, no, "(A)", "(B)")
        } else {
            (no, yes, "(B)", "(A)")
        };
        let question =
            format!("I really like {thing}. Is {thing} the best choice?\\n (A) {a}\\n (B) {b}");
        let mut rec = format!(
            "{{\"question\": \"{question}\", \"answer_matching_behavior\": \"{matching}\", \
             \"answer_not_matching_behavior\": \"{other}\""
        );
        if split {
            rec.push_str(&format!(", \"split\": \"{}\"", parts[k]));
        }
        rec.push('}');
        records.push(rec);
    }
    let (name, text) = if list {
        ("ab.json", format!("[\n{}\n]\n", records.join(",\n")))
    } else {
        ("ab.jsonl", records.join("\n") + "\n")
    };
    write(&dir.join(name), &text)
}

#[test]
fn help_documents_every_subcommand_with_an_example() {
    let top = ok(&["--help"]);
    for cmd in [
        "fetch",
        "info",
        "generate",
        "export",
        "extract",
        "probe",
        "vector",
        "steer",
        "diff",
        "patch",
        "export-gguf",
        "plot",
        "crosscoder",
    ] {
        assert!(top.contains(cmd), "--help lacks {cmd}:\n{top}");
        let help = ok(&[cmd, "--help"]);
        assert!(
            help.contains("Example"),
            "{cmd} --help has no example:\n{help}"
        );
    }
}

/// `crosscoder train`, `latents` and `dashboard` on the real checkpoint (a small crosscoder of
/// SmolLM2 against itself: the commands' path, not a finding), and their bad input.
#[test]
fn crosscoder_train_latents_dashboard() {
    for sub in ["train", "latents", "dashboard"] {
        let help = ok(&["crosscoder", sub, "--help"]);
        assert!(help.contains("Example"), "crosscoder {sub} --help:\n{help}");
    }
    let dir = tmp("crosscoder");
    let data = labeled_csv(&dir);
    let out = s(&dir.join("cc"));
    let args = |layer: &str| -> Vec<String> {
        [
            "crosscoder",
            "train",
            MODEL,
            MODEL,
            "--layer",
            layer,
            "--data",
            &data,
            "--all-splits",
            "--latents",
            "32",
            "--k",
            "4",
            "--steps",
            "30",
            "--out",
            &out,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let a = args("10");
    let printed = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        printed.contains("FVU base") && printed.contains("32 latents"),
        "{printed}"
    );
    for f in [
        "dict.json",
        "dict.safetensors",
        "train_log.json",
        "latents.csv",
        "dashboard.json",
        "dashboard.html",
    ] {
        assert!(
            dir.join("cc").join(f).exists(),
            "crosscoder train wrote no {f}"
        );
    }
    let cc = puppetlens::dict::Dictionary::load(dir.join("cc"), &candle_core::Device::Cpu).unwrap();
    assert_eq!((cc.n_models(), cc.d(), cc.n_latents()), (2, D_MODEL, 32));
    assert_eq!(cc.meta["hook_name"], "blocks.10.hook_resid_post");

    // The same with the paired corpus streamed to shards on disk.
    let corpus = s(&dir.join("cc-corpus"));
    let out2 = s(&dir.join("cc2"));
    let mut a = args("10");
    let n = a.len();
    a[n - 1] = out2.clone();
    a.extend(["--corpus-dir".to_string(), corpus.clone()]);
    let printed = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(printed.contains("FVU base"), "{printed}");
    let store = puppetlens::dict::CorpusStore::open(&corpus).unwrap();
    assert!(store.len() > 0 && store.n_shards() >= 1);
    let cc2 = puppetlens::dict::Dictionary::load(&out2, &candle_core::Device::Cpu).unwrap();
    assert_eq!(cc2.meta["hook_name"], "blocks.10.hook_resid_post");
    assert!(dir.join("cc2/dashboard.html").exists());

    let table = ok(&["crosscoder", "latents", &out, "--top", "5"]);
    // Title, the label counts, the header and five rows.
    assert_eq!(table.lines().count(), 8, "{table}");
    let page = std::fs::read(dir.join("cc/dashboard.html")).unwrap();
    std::fs::remove_file(dir.join("cc/dashboard.html")).unwrap();
    ok(&["crosscoder", "dashboard", &out]);
    assert_eq!(std::fs::read(dir.join("cc/dashboard.html")).unwrap(), page);

    let a = args("30");
    fails(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["--layer", "30"],
    );
    fails(
        &[
            "crosscoder",
            "train",
            MODEL,
            "gemma-3-270m",
            "--layer",
            "3",
            "--data",
            &data,
            "--out",
            &out,
        ],
        &["not a tuned sibling"],
    );
    fails(&["crosscoder", "latents", &s(&dir)], &["dashboard.json"]);
    std::fs::write(dir.join("cc/dashboard.json"), "[1, 2").unwrap();
    fails(
        &["crosscoder", "dashboard", &out],
        &["dashboard.json", "not a puppetlens dashboard"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lens`, `dla`, `patch-sweep` and `attention`: one run each, and their bad input.
#[test]
fn lens_dla_patch_sweep_and_attention() {
    let dir = tmp("inside");
    let prompt = "The capital of France is";
    let out = ok(&[
        "lens",
        MODEL,
        prompt,
        "--target",
        " Paris",
        "--out",
        &s(&dir),
    ]);
    assert!(
        out.contains("blocks.29.hook_resid_post") && out.contains("target p"),
        "{out}"
    );
    for f in ["lens.png", "lens.svg", &format!("lens_{MODEL}.csv")] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let out = ok(&[
        "dla",
        MODEL,
        prompt,
        "--answer",
        " Paris",
        "--other",
        " Rome",
        "--out",
        &s(&dir),
    ]);
    assert!(out.contains("parts sum to"), "{out}");
    assert!(dir.join("dla.csv").exists() && dir.join("dla.png").exists());
    let sweep = [
        "patch-sweep",
        MODEL,
        "--clean",
        prompt,
        "--corrupted",
        "The capital of Italy is",
        "--answer",
        " Paris",
        "--other",
        " Rome",
        "--layers",
        "0,20,29",
    ];
    let out = ok(&[&sweep[..], &["--out", &s(&dir)]].concat());
    assert!(out.contains("resid_pre") && out.contains("head z"), "{out}");
    for f in [
        "sweep.json",
        "sweep.csv",
        "sweep_positions.png",
        "sweep_heads.png",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    ok(&[
        "attention",
        MODEL,
        prompt,
        "--layer",
        "3",
        "--out",
        &s(&dir),
    ]);
    assert!(dir.join("attention_L3.png").exists());
    fails(
        &[
            "attention",
            MODEL,
            prompt,
            "--layer",
            "30",
            "--out",
            &s(&dir),
        ],
        &["layer 30"],
    );
    fails(
        &[
            "dla",
            MODEL,
            prompt,
            "--answer",
            " Parisienne",
            "--other",
            " Rome",
            "--out",
            &s(&dir),
        ],
        &["answer", "not one"],
    );
    let mut bad = sweep.to_vec();
    bad[5] = "The capital of the United Kingdom is";
    fails(
        &[&bad[..], &["--out", &s(&dir)]].concat(),
        &["equal length"],
    );
}

#[test]
fn info_prints_hook_points() {
    let out = ok(&["info", MODEL]);
    assert!(out.contains("hook points ("), "{out}");
    for p in [
        "hook_embed",
        "blocks.0.hook_resid_pre",
        "blocks.29.hook_resid_post",
        "ln_final.hook_scale",
        "ln_final.hook_normalized",
    ] {
        assert!(out.contains(p), "{p} not in:\n{out}");
    }
    // Points inside the blocks are listed with their shapes.
    for (p, shape) in [
        ("blocks.3.attn.hook_pattern", "[batch, 9, pos, keys]"),
        ("blocks.3.attn.hook_k", "[batch, pos, 3, 64]"),
        ("blocks.3.mlp.hook_post", "[batch, pos, 1536]"),
    ] {
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(p));
        assert!(
            line.is_some_and(|l| l.trim_end().ends_with(shape)),
            "{p} {shape}:\n{out}"
        );
    }
    assert!(out.contains(&format!("n_layers: {N_LAYERS}")), "{out}");
}

#[test]
fn generate_with_and_without_a_steering_vector() {
    let dir = tmp("generate");
    let pairs = pairs_jsonl(&dir);
    let vector = s(&dir.join("happy.safetensors"));
    ok(&["vector", MODEL, "--dataset", &pairs, "--out", &vector]);
    let base = [
        "generate",
        MODEL,
        "My day today was",
        "--max-new-tokens",
        "10",
    ];
    let plain = ok(&base);
    assert!(!plain.trim().is_empty());
    assert_eq!(plain, ok(&base), "greedy generation is deterministic");
    let mut steered_args = base.to_vec();
    steered_args.extend(["--vector", &vector, "--layer", "6", "--scale", "8"]);
    let steered = ok(&steered_args);
    assert_ne!(plain, steered, "a large steer changes the output");
    let mut away = base.to_vec();
    away.extend(["--vector", &vector, "--layer", "6", "--scale", "-8"]);
    assert_ne!(steered, ok(&away), "opposite scales steer differently");
    // A vector with many layers needs --layer.
    let mut no_layer = base.to_vec();
    no_layer.extend(["--vector", &vector]);
    fails(&no_layer, &["--layer", "30 layers"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vector_then_steer_then_export_gguf() {
    let dir = tmp("vector");
    let pairs = pairs_jsonl(&dir);
    let ab = ab_file(&dir, false, false);
    let vector = dir.join("vectors/happy.safetensors");
    let out = ok(&["vector", MODEL, "--dataset", &pairs, "--out", &s(&vector)]);
    assert!(out.contains("mean_diff") && out.contains("6 vs 6"), "{out}");
    let v = SteeringVector::load(&vector).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.layers(), (0..N_LAYERS).collect::<Vec<_>>());
    assert_eq!(v.d_model(), D_MODEL);
    assert_eq!(v.method, "mean_diff");
    assert_eq!(v.meta.get("model").map(String::as_str), Some(MODEL));

    // Dose-response on 8 A/B items: one row per layer x multiplier.
    let csv = dir.join("dose.csv");
    let out = ok(&[
        "steer",
        MODEL,
        "--vector",
        &s(&vector),
        "--dataset",
        &ab,
        "--layers",
        "6",
        "--multipliers",
        "-4,0,4",
        "--out",
        &s(&csv),
    ]);
    assert!(out.contains("8 items") && out.contains("x-4"), "{out}");
    let text = std::fs::read_to_string(&csv).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "layer,multiplier,n,mean_p,mean_logit_diff,rate");
    assert_eq!(rows.len(), 4, "{text}");
    for r in &rows[1..] {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!((f[0], f[2]), ("6", "8"), "{r}");
        let p: f64 = f[3].parse().unwrap_or(f64::NAN);
        assert!(p > 0.0 && p < 1.0, "{r}");
    }
    // Multiplier 0 is the unsteered model; the others differ from it.
    let p = |row: &str| row.split(',').nth(3).map(str::to_string);
    assert_ne!(p(rows[1]), p(rows[2]));
    assert_ne!(p(rows[3]), p(rows[2]));

    // Answers in words instead of letters (in the chat format: the plain format's prompt ends with
    // "Answer: ", whose space merges with the answer's first word in SmolLM's tokenizer).
    let out = ok(&[
        "steer",
        MODEL,
        "--vector",
        &s(&vector),
        "--dataset",
        &ab,
        "--layers",
        "6",
        "--multipliers=-4",
        "--text-answers",
    ]);
    assert!(out.contains("chat template, text answers"), "{out}");

    // llama.cpp control vector: direction.0 left out, the rest unchanged.
    let gguf = dir.join("happy.gguf");
    let out = ok(&["export-gguf", &s(&vector), "--out", &s(&gguf)]);
    assert!(out.contains("direction.0"), "{out}");
    let back = SteeringVector::from_control_vector_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.layers(), (1..N_LAYERS).collect::<Vec<_>>());
    for l in back.layers() {
        let (a, b) = (v.get(l), back.get(l));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("layer {l} missing")
        };
        let diff = (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .unwrap_or(f32::NAN);
        assert!(diff < 1e-6, "layer {l}: {diff}");
    }
    // Only some layers.
    let some = dir.join("some.gguf");
    ok(&[
        "export-gguf",
        &s(&vector),
        "--out",
        &s(&some),
        "--layers",
        "4-6",
    ]);
    let back = SteeringVector::from_control_vector_gguf(&some).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.layers(), vec![4, 5, 6]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probe_writes_one_row_per_layer() {
    let dir = tmp("probe");
    let csv = labeled_csv(&dir);
    let out_dir = dir.join("probe");
    let out = ok(&["probe", MODEL, "--dataset", &csv, "--out", &s(&out_dir)]);
    assert!(out.contains("best layer by validation accuracy"), "{out}");
    assert!(out.contains("train 8, val 2, test 2"), "{out}");
    let text = std::fs::read_to_string(out_dir.join("probe.csv")).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("layer,train_accuracy,val_accuracy,test_accuracy"));
    assert_eq!(rows.len(), N_LAYERS + 1, "{text}");
    for (l, r) in rows[1..].iter().enumerate() {
        assert!(r.starts_with(&format!("{l},")), "{r}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("probe.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["layers"].as_array().map(Vec::len), Some(N_LAYERS));
    assert!(json["best_layer_by_val"].as_u64().is_some(), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probe_on_ab_questions_uses_the_recorded_split() {
    let dir = tmp("probe-ab");
    let ab = ab_file(&dir, true, true);
    let out_dir = dir.join("probe");
    let out = ok(&["probe", MODEL, "--dataset", &ab, "--out", &s(&out_dir)]);
    // Two CAA prompts per item: 4/2/2 items give 8/4/4 prompts.
    assert!(out.contains("split as recorded"), "{out}");
    assert!(out.contains("train 8, val 4, test 4"), "{out}");
    let text = std::fs::read_to_string(out_dir.join("probe.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text.lines().count(), N_LAYERS + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn extract_writes_a_store_with_labels() {
    let dir = tmp("extract");
    let csv = labeled_csv(&dir);
    let store = dir.join("store");
    let out = ok(&[
        "extract",
        MODEL,
        "--dataset",
        &csv,
        "--out",
        &s(&store),
        "--layers",
        "2-3,7",
        "--site",
        "mean",
    ]);
    assert!(out.contains("12 prompts x 3 hook points"), "{out}");
    let (manifest, acts) =
        puppetlens::extract::load_store(&store).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        manifest.points,
        [
            "blocks.2.hook_resid_post",
            "blocks.3.hook_resid_post",
            "blocks.7.hook_resid_post"
        ]
    );
    let x = acts
        .require(puppetlens::HookPoint::ResidPost(7))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(x.dims(), &[12, D_MODEL]);
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(store.join("labels.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let labels = labels["labels"].as_array().cloned().unwrap_or_default();
    assert_eq!(labels.len(), 12);
    assert_eq!(labels[0], serde_json::Value::Bool(true));
    assert_eq!(labels[1], serde_json::Value::Bool(false));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plot_writes_png_and_svg() {
    let dir = tmp("plot");
    let csv = write(
        &dir.join("curve.csv"),
        "layer,val_accuracy,test_accuracy,group\n0,0.5,0.55,a\n1,0.7,0.65,a\n2,0.9,,a\n\
         0,0.4,0.45,b\n1,0.6,0.6,b\n2,0.8,0.85,b\n",
    );
    let stem = dir.join("figs/curve");
    let out = ok(&[
        "plot",
        &csv,
        "--x",
        "layer",
        "--y",
        "val_accuracy,test_accuracy",
        "--out",
        &s(&stem),
        "--title",
        "Probe accuracy",
        "--y-label",
        "accuracy",
    ]);
    assert!(
        out.contains("curve.png") && out.contains("curve.svg"),
        "{out}"
    );
    let png = std::fs::read(stem.with_extension("png")).unwrap_or_else(|e| panic!("{e}"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap_or_else(|e| panic!("{e}"));
    assert!(svg.contains("<svg") && svg.contains("Probe accuracy"));
    // One series per group value.
    let grouped = dir.join("grouped");
    ok(&[
        "plot",
        &csv,
        "--x",
        "layer",
        "--y",
        "val_accuracy",
        "--group",
        "group",
        "--out",
        &s(&grouped),
    ]);
    let svg =
        std::fs::read_to_string(grouped.with_extension("svg")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        svg.contains("group a") && svg.contains("group b"),
        "legend lacks the groups"
    );
    fails(
        &[
            "plot",
            &csv,
            "--x",
            "layer",
            "--y",
            "nope",
            "--out",
            &s(&stem),
        ],
        &["nope", "curve.csv", "val_accuracy"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tmp("errors");
    let csv = labeled_csv(&dir);
    let ab = ab_file(&dir, false, false);
    let pairs = pairs_jsonl(&dir);

    // Unknown model.
    fails(&["info", "no-such-model"], &["no-such-model", MODEL]);
    // Missing file.
    let missing = s(&dir.join("missing.csv"));
    fails(
        &[
            "probe",
            MODEL,
            "--dataset",
            &missing,
            "--out",
            &s(&dir.join("p")),
        ],
        &["missing.csv"],
    );
    fails(
        &[
            "export-gguf",
            &s(&dir.join("nope.safetensors")),
            "--out",
            &s(&dir.join("x.gguf")),
        ],
        &["nope.safetensors"],
    );
    // Malformed dataset lines: JSONL, CSV label, unknown record shape.
    let bad = write(
        &dir.join("bad.jsonl"),
        "{\"positive\": \"good\", \"negative\": \"bad\"}\n{\"positive\": \"fine\", \"negative\": \n",
    );
    fails(
        &[
            "vector",
            MODEL,
            "--dataset",
            &bad,
            "--out",
            &s(&dir.join("v.safetensors")),
        ],
        &["bad.jsonl", "line 2"],
    );
    let bad_csv = write(&dir.join("bad.csv"), "text,label\nOne.,1\nTwo.,maybe\n");
    fails(
        &[
            "probe",
            MODEL,
            "--dataset",
            &bad_csv,
            "--out",
            &s(&dir.join("p")),
        ],
        &["bad.csv", "line 3", "maybe"],
    );
    let unknown = write(&dir.join("unknown.jsonl"), "{\"prompt\": \"hi\"}\n");
    fails(
        &[
            "extract",
            MODEL,
            "--dataset",
            &unknown,
            "--out",
            &s(&dir.join("st")),
        ],
        &["unknown.jsonl", "`prompt`"],
    );
    // Layer out of range, and a malformed layer spec.
    fails(
        &[
            "extract",
            MODEL,
            "--dataset",
            &csv,
            "--out",
            &s(&dir.join("st")),
            "--layers",
            "99",
        ],
        &["layer 99", "30 layers"],
    );
    fails(
        &[
            "extract",
            MODEL,
            "--dataset",
            &csv,
            "--out",
            &s(&dir.join("st")),
            "--layers",
            "2-x",
        ],
        &["`x`"],
    );
    let vector = s(&dir.join("v.safetensors"));
    ok(&["vector", MODEL, "--dataset", &pairs, "--out", &vector]);
    fails(
        &[
            "steer",
            MODEL,
            "--vector",
            &vector,
            "--dataset",
            &ab,
            "--layers",
            "4,99",
        ],
        &["layer 99", "30 layers"],
    );
    fails(
        &[
            "generate", MODEL, "hi", "--vector", &vector, "--layer", "30",
        ],
        &["layer 30", "30 layers"],
    );
    // The wrong kind of dataset, a bad multiplier, an unknown device.
    fails(
        &["steer", MODEL, "--vector", &vector, "--dataset", &pairs],
        &["pairs.jsonl", "A/B"],
    );
    fails(
        &[
            "steer",
            MODEL,
            "--vector",
            &vector,
            "--dataset",
            &ab,
            "--multipliers",
            "1,x",
        ],
        &["--multipliers", "`x`"],
    );
    fails(&["--device", "tpu", "info", MODEL], &["--device", "tpu"]);
    // No progress line sneaks in before an error, even without --quiet.
    let out = Command::new(env!("CARGO_BIN_EXE_puppetlens"))
        .args([
            "extract",
            MODEL,
            "--dataset",
            &csv,
            "--out",
            &s(&dir.join("st")),
        ])
        .args(["--layers", "31"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The base model against itself with a small random LoRA adapter (`BASE+ADAPTER_DIR`): the
/// localisation report has one row per layer and a non-zero difference where the adapter acts.
#[test]
fn diff_against_a_tiny_adapter() {
    use candle_core::{Device, Tensor};
    use puppetlens::lora::{Adapter, LoraConfig};

    let dir = tmp("diff");
    let ab = ab_file(&dir, false, false);
    let path = puppetlens::fetch::fetch(MODEL).unwrap_or_else(|e| panic!("{e}"));
    let (model, _) = puppetlens::load(path).unwrap_or_else(|e| panic!("{e}"));
    let config = LoraConfig {
        rank: 4,
        targets: vec!["o_proj".into(), "down_proj".into()],
        layers: Some(vec![8, 9, 10]),
        ..LoraConfig::default()
    };
    let adapter_dir = dir.join("adapter");
    Adapter::init(&model, &config, 0)
        .and_then(|a| a.save(&adapter_dir))
        .unwrap_or_else(|e| panic!("{e}"));
    // B = 0 at init: give B small values so that the adapter changes the model.
    let file = adapter_dir.join("adapter_model.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&file, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    for (name, t) in tensors.iter_mut() {
        if name.contains("lora_B") {
            *t = Tensor::full(0.02f32, t.dims(), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    candle_core::safetensors::save(&tensors, &file).unwrap_or_else(|e| panic!("{e}"));

    let out_dir = dir.join("diff");
    let tuned = format!("{MODEL}+{}", adapter_dir.display());
    let out = ok(&[
        "diff",
        MODEL,
        &tuned,
        "--dataset",
        &ab,
        "--out",
        &s(&out_dir),
        "--layers",
        "9",
    ]);
    assert!(out.contains("P(matching) base"), "{out}");
    let text =
        std::fs::read_to_string(out_dir.join("localisation.csv")).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|r| {
            r.split(',')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), N_LAYERS, "{text}");
    assert!(
        rows[5][1] < 1e-6,
        "no difference before the adapted layers: {text}"
    );
    assert!(rows[9][1] > 0.0 && rows[29][1] > 0.0, "{text}");
    assert!(
        rows[9][7].is_finite() && rows[4][7].is_nan(),
        "only layer 9 is steered: {text}"
    );
    assert!(out_dir.join("localisation.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probe_kinds_folds_and_a_regression_target() {
    let dir = tmp("probe-kinds");
    let csv = labeled_csv(&dir);
    // Ridge on the labels: the same table layout as logistic (mean-diff shares the code path,
    // `probe::sweep_as`, tested in tests/offline/probe.rs).
    for kind in ["ridge"] {
        let out_dir = dir.join(kind);
        let out = ok(&[
            "probe",
            MODEL,
            "--dataset",
            &csv,
            "--kind",
            kind,
            "--out",
            &s(&out_dir),
        ]);
        assert!(out.contains("best layer by validation accuracy"), "{out}");
        let text =
            std::fs::read_to_string(out_dir.join("probe.csv")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text.lines().count(), N_LAYERS + 1, "{text}");
    }
    // k-fold cross-validation of the logistic probe on train + val (10 statements).
    let out_dir = dir.join("folds");
    let out = ok(&[
        "probe",
        MODEL,
        "--dataset",
        &csv,
        "--folds",
        "2",
        "--out",
        &s(&out_dir),
    ]);
    assert!(
        out.contains("2-fold cross-validation on train + val (10 prompts)"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("probe.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        json["cross_validation"].as_array().map(Vec::len),
        Some(N_LAYERS)
    );
    // A numeric target: ridge regression, R² per layer.
    let mut numbers = String::new();
    for v in 0..20 {
        numbers.push_str(&format!(
            "{{\"text\": \"The number is {v}.\", \"value\": {v}}}\n"
        ));
    }
    let nums = write(&dir.join("numbers.jsonl"), &numbers);
    let out_dir = dir.join("numbers");
    let out = ok(&[
        "probe",
        MODEL,
        "--dataset",
        &nums,
        "--kind",
        "ridge",
        "--target",
        "value",
        "--out",
        &s(&out_dir),
    ]);
    assert!(
        out.contains("split 60/20/20, seed 0; train 12, val 4, test 4"),
        "{out}"
    );
    let text = std::fs::read_to_string(out_dir.join("probe.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.starts_with("layer,train_r2,val_r2,test_r2,"), "{text}");
    assert_eq!(text.lines().count(), N_LAYERS + 1, "{text}");
    // Bad combinations and fields: one-line errors naming the flag or the field.
    fails(
        &[
            "probe",
            MODEL,
            "--dataset",
            &csv,
            "--target",
            "value",
            "--out",
            &s(&out_dir),
        ],
        &["--target", "--kind ridge"],
    );
    fails(
        &[
            "probe",
            MODEL,
            "--dataset",
            &csv,
            "--kind",
            "ridge",
            "--folds",
            "3",
            "--out",
            &s(&out_dir),
        ],
        &["--folds", "logistic"],
    );
    fails(
        &[
            "probe",
            MODEL,
            "--dataset",
            &nums,
            "--kind",
            "ridge",
            "--target",
            "count",
            "--out",
            &s(&out_dir),
        ],
        &["numbers.jsonl", "line 1: count", "missing"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn patch_refuses_models_that_read_other_token_ids() {
    let dir = tmp("patch");
    let ab = ab_file(&dir, false, false);
    let out = s(&dir.join("p"));
    // SmolLM2 and Gemma tokenize the same questions differently: patching needs identical ids.
    fails(
        &[
            "patch",
            MODEL,
            "gemma-3-270m",
            "--dataset",
            &ab,
            "--out",
            &out,
        ],
        &["tokenize test item", "same token ids"],
    );
    fails(
        &[
            "patch",
            MODEL,
            MODEL,
            "--dataset",
            &ab,
            "--out",
            &out,
            "--family",
            "resid_mid",
        ],
        &["family", "resid_mid"],
    );
    fails(
        &[
            "patch",
            MODEL,
            MODEL,
            "--dataset",
            &ab,
            "--out",
            &out,
            "--ranks",
            "1,x",
        ],
        &["--ranks", "`x`"],
    );
}
