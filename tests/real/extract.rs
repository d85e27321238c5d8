//! Activation extraction on a real checkpoint: sites, streaming to shards, resume, Python readability.

use crate::common;

use crate::common::max_abs_diff;
use candle_core::IndexOp;
use puppetlens::extract::{extract, extract_to_dir, load_store, ExtractOptions, Site, StoreMeta};
use puppetlens::{Batch, Error, HookPoint};

const TEXTS: [&str; 7] = [
    "The capital of France is Paris.",
    "Two plus two is four.",
    "Cats are mammals.",
    "The sun rises in the east and sets in the west.",
    "Water freezes at zero degrees Celsius.",
    "A",
    "Rust is a systems programming language.",
];

fn prompts() -> Vec<Vec<u32>> {
    let (_, tok) = common::smollm();
    TEXTS.iter().map(|t| tok.encode(t).unwrap()).collect()
}

#[test]
fn sites_pick_the_right_tokens() {
    let (model, _) = common::smollm();
    let prompts = prompts();
    let points = vec![
        HookPoint::Embed,
        HookPoint::ResidPost(0),
        HookPoint::ResidPost(7),
    ];
    let opts = |site| ExtractOptions {
        points: points.clone(),
        site,
        batch_size: 3,
        progress: false,
        ..ExtractOptions::default()
    };
    let last = extract(model, &prompts, &opts(Site::Last)).unwrap();
    let at1 = extract(model, &prompts[..5], &opts(Site::At(1))).unwrap();
    let mean = extract(
        model,
        &prompts[..5],
        &opts(Site::Mean {
            start: 1,
            end: None,
        }),
    )
    .unwrap();
    let first = extract(model, &prompts[..5], &opts(Site::FirstK(2))).unwrap();
    assert_eq!(last.len(), prompts.len());
    for (i, ids) in prompts.iter().enumerate() {
        let (_, cache) = model
            .run_with_cache(&Batch::single(ids).unwrap(), |p| points.contains(&p))
            .unwrap();
        for &p in &points {
            let alone = cache.get(p).unwrap().i(0).unwrap(); // [len, d_model]
            let n = ids.len();
            let tol = 1e-4 * common::max_abs(&alone).max(1.0);
            assert!(
                max_abs_diff(
                    &last.get(p).unwrap().i(i).unwrap(),
                    &alone.i(n - 1).unwrap()
                ) <= tol
            );
            if i < 5 {
                assert!(
                    max_abs_diff(&at1.get(p).unwrap().i(i).unwrap(), &alone.i(1).unwrap()) <= tol
                );
                let m = alone.narrow(0, 1, n - 1).unwrap().mean(0).unwrap();
                assert!(max_abs_diff(&mean.get(p).unwrap().i(i).unwrap(), &m) <= tol);
                assert!(
                    max_abs_diff(
                        &first.get(p).unwrap().i(i).unwrap(),
                        &alone.narrow(0, 0, 2).unwrap()
                    ) <= tol
                );
            }
        }
    }
    // A site beyond a prompt's length is an error naming the prompt.
    let err = extract(model, &prompts, &opts(Site::At(50))).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("prompt"),
        "{err}"
    );
    // Empty dataset.
    assert!(matches!(
        extract(model, &[], &opts(Site::Last)),
        Err(Error::InvalidArgument { .. })
    ));
    // Layer out of range.
    let bad = ExtractOptions {
        points: vec![HookPoint::ResidPost(99)],
        ..opts(Site::Last)
    };
    assert!(matches!(
        extract(model, &prompts, &bad),
        Err(Error::LayerOutOfRange { .. })
    ));
}

#[test]
fn streamed_shards_resume_and_equal_in_memory_extraction() {
    let (model, _) = common::smollm();
    let prompts = prompts();
    let opts = ExtractOptions {
        batch_size: 2,
        shard_size: 3,
        progress: false,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    let dir = std::env::temp_dir().join(format!("puppetlens-store-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let meta = StoreMeta {
        model: "smollm2-135m-instruct".into(),
        dataset: "extract test".into(),
        notes: String::new(),
    };
    let full = extract_to_dir(model, &prompts, &opts, &dir, &meta).unwrap();
    assert!(full.complete());
    assert_eq!(full.shards.len(), 3);
    let (_, stored) = load_store(&dir).unwrap();
    // In memory, prompts are batched across shard boundaries (other padding): equal within f32 noise.
    let mem = extract(model, &prompts, &opts).unwrap();
    for p in mem.points() {
        let tol = 1e-4 * common::max_abs(mem.get(p).unwrap()).max(1.0);
        assert!(
            max_abs_diff(stored.get(p).unwrap(), mem.get(p).unwrap()) <= tol,
            "{p}"
        );
    }
    // Interrupt: forget the last two shards, then resume.
    let manifest_path = dir.join("store.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    m["shards"] = serde_json::json!([full.shards[0].clone()]);
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    std::fs::remove_file(dir.join(&full.shards[2])).unwrap();
    let resumed = extract_to_dir(model, &prompts, &opts, &dir, &meta).unwrap();
    assert_eq!(resumed, full);
    let (_, again) = load_store(&dir).unwrap();
    for p in mem.points() {
        assert_eq!(
            max_abs_diff(again.get(p).unwrap(), stored.get(p).unwrap()),
            0.0,
            "{p}"
        );
    }
    // Other prompts in the same directory are refused.
    let err = extract_to_dir(model, &prompts[1..], &opts, &dir, &meta).unwrap_err();
    assert!(err.to_string().contains("store.json"), "{err}");

    // Readable from Python's safetensors package with TransformerLens keys, when it is installed.
    let script = format!(
        "from safetensors import safe_open\nf = safe_open({:?}, framework='np')\nprint(sorted(f.keys())[0], f.get_tensor('blocks.5.hook_resid_post').shape, f.metadata()['model'])",
        dir.join(&full.shards[0]).display().to_string()
    );
    match std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            println!("python: {text}");
            assert!(
                text.contains("blocks.0.hook_resid_post (3, 576) smollm2-135m-instruct"),
                "{text}"
            );
        }
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            // CI installs the package (.ci/run); elsewhere a missing module only skips this read.
            assert!(
                std::env::var_os("CI").is_none() && err.contains("No module named"),
                "python failed: {err}"
            );
            println!(
                "python safetensors not installed; skipped the Python read ({})",
                err.lines().last().unwrap_or("")
            );
        }
        Err(e) => println!("python3 not available: {e}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A streamed store read straight into ndarray: one `[item, d_model]` array per hook point over
/// all shards, bit for bit what `load_store` gives, and the `[layer, item, d_model]` block.
#[test]
fn store_reads_straight_into_ndarray() {
    let (model, _) = common::smollm();
    let prompts = prompts();
    let opts = ExtractOptions {
        batch_size: 4,
        shard_size: 4,
        progress: false,
        points: vec![HookPoint::ResidPost(3), HookPoint::ResidPost(7)],
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    let dir = std::env::temp_dir().join(format!("puppetlens-store-nd-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let meta = StoreMeta {
        model: "smollm2-135m-instruct".into(),
        dataset: "ndarray test".into(),
        notes: String::new(),
    };
    let manifest = extract_to_dir(model, &prompts, &opts, &dir, &meta).unwrap();
    assert_eq!(manifest.shards.len(), 2);
    let (_, arrays) = puppetlens::array::load_store_arrays(&dir).unwrap();
    let (_, stored) = load_store(&dir).unwrap();
    assert_eq!(arrays.len(), stored.points().len());
    for (p, a) in &arrays {
        assert_eq!(a.dim(), (TEXTS.len(), 576), "{p}");
        let t = stored
            .get(*p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a.as_slice().unwrap(), &t[..], "{p}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Paired prompts that share their beginning (CAA prompts: a chat-formatted question followed by
/// each answer letter) give what whole extraction gives when the question runs once and the
/// letters run as KV-cached steps on it, on both checkpoints; pairs that share nothing run whole,
/// and [`extract_endings`] with a site other than the last token falls back to whole prompts.
#[test]
fn shared_prefixes_run_once_and_equal_whole_extraction() {
    use puppetlens::data::{
        ab_prompt, ab_text_prompt, load_ab_json, load_with_split, PromptFormat,
    };
    use puppetlens::extract::{extract_endings, extract_pairs};
    for (name, (model, tok)) in [("smollm2", common::smollm()), ("gemma3", common::gemma())] {
        let mut tok = tok.clone();
        if name == "gemma3" {
            // The GGUF has no chat template: the project supplies Gemma's.
            tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
        }
        let tok = &tok;
        let items = load_with_split("probes/sycophancy_ab.jsonl", load_ab_json)
            .unwrap()
            .test;
        let fmt = PromptFormat::Chat { system: None };
        let cases: Vec<_> = items[..9]
            .iter()
            .map(|it| {
                // Gemma 3 270m cannot bind letters to choices: its items use the text answers.
                let p = if name == "gemma3" {
                    ab_text_prompt(tok, it, &fmt)
                } else {
                    ab_prompt(tok, it, &fmt)
                };
                puppetlens::eval::AbCase::from(p.unwrap())
            })
            .collect();
        let (mut pos, mut neg) = puppetlens::diff::caa_prompts(&cases);
        // One pair that shares nothing: runs whole.
        pos.push(tok.encode("Cats are mammals.").unwrap());
        neg.push(tok.encode("Two plus two is four.").unwrap());
        let opts = ExtractOptions {
            batch_size: 4,
            progress: false,
            ..ExtractOptions::resid_post(model, Site::Last)
        };
        let (p, n) = extract_pairs(model, &pos, &neg, &opts).unwrap();
        let (wp, wn) = (
            extract(model, &pos, &opts).unwrap(),
            extract(model, &neg, &opts).unwrap(),
        );
        let mut worst = 0f32;
        for (a, b) in [(&p, &wp), (&n, &wn)] {
            assert_eq!(a.len(), pos.len());
            for (pt, t) in b.iter() {
                let rel = max_abs_diff(a.require(pt).unwrap(), t) / common::max_abs(t);
                worst = worst.max(rel);
            }
        }
        println!("{name}: shared-prefix vs whole extraction, max abs diff / max abs {worst:.2e}");
        assert!(worst <= 1e-5, "{name}: {worst}");
        // Other sites run the joined prompts whole: equal to whole extraction bit for bit.
        let prefixes: Vec<Vec<u32>> = cases.iter().map(|c| c.ids.clone()).collect();
        let endings = vec![cases.iter().map(|c| vec![c.matching]).collect::<Vec<_>>()];
        let mean = ExtractOptions {
            site: Site::Mean {
                start: 1,
                end: None,
            },
            ..opts.clone()
        };
        let sets = extract_endings(model, &prefixes, &endings, &mean).unwrap();
        let whole = extract(model, &pos[..cases.len()], &mean).unwrap();
        for (pt, t) in whole.iter() {
            assert_eq!(max_abs_diff(sets[0].require(pt).unwrap(), t), 0.0);
        }
        // A set with the wrong number of endings is refused, naming it.
        let short = vec![endings[0][1..].to_vec()];
        let err = extract_endings(model, &prefixes, &short, &opts).unwrap_err();
        assert!(err.to_string().contains("endings set 0"), "{err}");
    }
}
