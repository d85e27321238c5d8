//! Mutation fuzzing of every loader.
//!
//! `fuzz_loaders` runs the cases in a child process (this test binary again, running
//! `fuzz::child`), so that an abort (a refused allocation, a stack overflow) is caught as well as
//! a panic; the child writes each case to a progress file before running it, and the parent reports
//! the case that was running when the child died or stopped making progress for 10 s. A panic
//! (caught with `catch_unwind`) or a case whose allocations peak above its budget is a failure too.
//!
//! Bounded run (CI): `cargo test --release --test hostile fuzz_loaders`. Long run:
//! `PUPPETLENS_FUZZ_CASES=200000 PUPPETLENS_FUZZ_SEED=7 cargo test --release --test hostile
//! fuzz_loaders -- --nocapture`. Failing inputs are copied to `target/fuzz-failures/`; each one
//! kept as a regression case lives in `tests/fuzz_regressions/<target>-<name>/` (the mutated
//! files; the target's other seed files are written by `seeds::targets`).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common_tiny::TempDir;
use crate::mutate::{mutate, Rng};
use crate::seeds::{targets, Target};
use crate::{alloc, common_tiny};

/// Cases in the CI run (override with `PUPPETLENS_FUZZ_CASES`).
const DEFAULT_CASES: usize = 3000;
/// Seconds without progress after which a case counts as a hang.
const HANG_S: u64 = 10;

/// A case may allocate (at its peak, above what was live before it) this much plus
/// `BUDGET_PER_BYTE` times its input's size: memory must grow with the file, never with a count
/// it claims. The per-byte figure covers the dearest honest case measured: `tokenizers` encoding a
/// rendered chat of one 1 MiB word peaks at 190 bytes per input byte (RELIABILITY.md).
const BUDGET_BASE: usize = 64 << 20;
const BUDGET_PER_BYTE: usize = 256;

fn env_usize(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn write_case(t: &Target, which: usize, mutated: &[u8], dir: &Path) -> usize {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut total = 0;
    for (i, f) in t.files.iter().enumerate() {
        let bytes = if i == which { mutated } else { &f.bytes[..] };
        total += bytes.len();
        std::fs::write(dir.join(&f.name), bytes).unwrap();
    }
    total
}

/// Runs `t` on `dir`: Ok(()) when it returned (an error or not) within its memory budget.
fn run_case(t: &Target, dir: &Path, input_bytes: usize) -> Result<(usize, bool), String> {
    let before = alloc::reset();
    let r = catch_unwind(AssertUnwindSafe(|| (t.run)(dir)));
    let (peak, largest) = alloc::measured();
    let used = peak.saturating_sub(before);
    let budget = BUDGET_BASE + BUDGET_PER_BYTE * input_bytes;
    match r {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {msg}"))
        }
        Ok(_) if used > budget || largest > budget => Err(format!(
            "allocated {used} bytes at peak (largest request {largest}) for {input_bytes} bytes of input (budget {budget})"
        )),
        Ok(res) => Ok((used, res.is_ok())),
    }
}

/// The child: runs the cases, one progress line before each.
#[test]
#[ignore = "run by fuzz_loaders in a child process"]
fn child() {
    let Ok(work) = std::env::var("PUPPETLENS_FUZZ_DIR") else {
        eprintln!("fuzz::child runs only under fuzz_loaders");
        return;
    };
    let work = PathBuf::from(work);
    let cases = env_usize("PUPPETLENS_FUZZ_CASES").unwrap_or(DEFAULT_CASES as u64) as usize;
    let seed = env_usize("PUPPETLENS_FUZZ_SEED").unwrap_or(1);
    let mut progress = std::fs::File::create(work.join("progress")).unwrap();
    let seeds_dir = work.join("seeds");
    std::fs::create_dir_all(&seeds_dir).unwrap();
    let ts = targets(&seeds_dir);
    let weights: Vec<usize> = ts.iter().map(|t| t.weight).collect();
    let total_w: usize = weights.iter().sum();
    let case_dir = work.join("case");
    let failures = work.join("failures");
    // Per target: cases, loads that succeeded, failures, the largest peak and its input size, seconds.
    let mut stats = vec![(0usize, 0usize, 0usize, 0usize, 0usize, 0f64); ts.len()];
    let mut rng = Rng::new(seed);
    std::panic::set_hook(Box::new(|_| {})); // panics are reported by the harness
    for i in 0..cases {
        let mut w = rng.below(total_w);
        let ti = weights
            .iter()
            .position(|&x| {
                if w < x {
                    true
                } else {
                    w -= x;
                    false
                }
            })
            .unwrap_or(0);
        let t = &ts[ti];
        let which = rng.below(t.files.len());
        let case_seed = rng.next();
        let (bytes, what) = mutate(
            &t.files[which].bytes,
            &t.files[which].kind,
            &mut Rng::new(case_seed),
        );
        writeln!(
            progress,
            "case {i} {} {} seed {case_seed}: {what}",
            t.name, t.files[which].name
        )
        .unwrap();
        let n = write_case(t, which, &bytes, &case_dir);
        let start = Instant::now();
        let r = run_case(t, &case_dir, n);
        let s = &mut stats[ti];
        s.0 += 1;
        s.5 += start.elapsed().as_secs_f64();
        match r {
            Ok((used, ok)) => {
                s.1 += ok as usize;
                if used > s.3 {
                    s.3 = used;
                    s.4 = n;
                }
            }
            Err(msg) => {
                s.2 += 1;
                writeln!(progress, "FAIL case {i} {}: {msg}", t.name).unwrap();
                let keep = failures.join(format!("{}-{i}", t.name));
                std::fs::create_dir_all(&keep).unwrap();
                std::fs::write(keep.join(&t.files[which].name), &bytes).unwrap();
                std::fs::write(keep.join("target"), &t.name).unwrap();
            }
        }
    }
    writeln!(progress, "done {cases} cases, seed {seed}").unwrap();
    for (t, s) in ts.iter().zip(&stats) {
        writeln!(
            progress,
            "target {:<34} cases {:>5}  loaded {:>5}  failures {:>3}  peak {:>6.1} MiB (input {} B)  {:.2} s",
            t.name,
            s.0,
            s.1,
            s.2,
            s.3 as f64 / (1 << 20) as f64,
            s.4,
            s.5
        )
        .unwrap();
    }
}

#[test]
fn fuzz_loaders() {
    let work = TempDir::new("fuzz");
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "fuzz::child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("PUPPETLENS_FUZZ_DIR", work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let progress = work.join("progress");
    let (mut last_len, mut last_change) = (0u64, Instant::now());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        let len = std::fs::metadata(&progress).map(|m| m.len()).unwrap_or(0);
        if len != last_len {
            (last_len, last_change) = (len, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(HANG_S + 50 * (len == 0) as u64) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let log = std::fs::read_to_string(&progress).unwrap_or_default();
    let last_case = log
        .lines()
        .filter(|l| l.starts_with("case "))
        .last()
        .unwrap_or("(none)");
    let fails: Vec<&str> = log.lines().filter(|l| l.starts_with("FAIL")).collect();
    let summary: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("target ") || l.starts_with("done"))
        .collect();
    println!("{}", summary.join("\n"));
    // Keep failing inputs where a person can find them.
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    if work.join("failures").exists() {
        let _ = std::fs::create_dir_all(&keep);
        for e in std::fs::read_dir(work.join("failures")).unwrap().flatten() {
            let to = keep.join(e.file_name());
            let _ = std::fs::create_dir_all(&to);
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                let _ = std::fs::copy(f.path(), to.join(f.file_name()));
            }
        }
    }
    let tail: String = stderr
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match status {
        None => panic!("hang: no progress for {HANG_S} s during {last_case}\n{tail}"),
        Some(s) if !s.success() || !log.contains("\ndone ") => {
            panic!(
                "the fuzz child died ({s}) during {last_case}\n{}\n{tail}",
                fails.join("\n")
            )
        }
        Some(_) => assert!(
            fails.is_empty(),
            "{} failures (inputs in {}):\n{}",
            fails.len(),
            keep.display(),
            fails.join("\n")
        ),
    }
}

/// Each kept regression input, run in process with a 10 s limit.
#[test]
fn fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let seeds = common_tiny::TempDir::new("fuzz-reg");
    let ts = std::sync::Arc::new(targets(seeds.path()));
    let mut n = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for case in dirs {
        let target = std::fs::read_to_string(case.join("target")).unwrap();
        let target = target.trim().to_string();
        let Some(ti) = ts.iter().position(|t| t.name == target) else {
            // Targets built from the cached checkpoints exist only when they are cached.
            assert!(
                target.contains("smollm2") || target.contains("gemma"),
                "{}: no target `{target}`",
                case.display()
            );
            continue;
        };
        let dir = seeds.join(&format!("case-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = 0;
        for f in &ts[ti].files {
            let over = case.join(&f.name);
            let b = if over.exists() {
                std::fs::read(&over).unwrap()
            } else {
                f.bytes.clone()
            };
            bytes += b.len();
            std::fs::write(dir.join(&f.name), b).unwrap();
        }
        let ts2 = ts.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run_case(&ts2[ti], &dir, bytes));
        });
        match rx.recv_timeout(Duration::from_secs(HANG_S)) {
            Ok(Ok(_)) => {}
            Ok(Err(msg)) => panic!("{}: {msg}", case.display()),
            Err(_) => panic!("{}: hang (> {HANG_S} s)", case.display()),
        }
        n += 1;
    }
    assert!(n > 0, "no regression cases ran");
}

/// The regression inputs that exceed a bound get the typed error that names it.
#[test]
fn bounds_are_typed_errors() {
    use puppetlens::{ChatMessage, Error, LoadOptions, Model, Tokenizer};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let load = |case: &str| {
        Model::load(root.join(case).join("model.gguf"), &LoadOptions::default()).unwrap_err()
    };
    let e = load("gguf-alignment-zero");
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "general.alignment"),
        "{e}"
    );
    let e = load("gguf-block-count-huge");
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "llama.block_count"),
        "{e}"
    );
    let e = load("gguf-embedding-length-huge");
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "llama.embedding_length"),
        "{e}"
    );
    let seeds = TempDir::new("bounds");
    let ts = targets(seeds.path());
    let tok_dir = seeds.join("tok-chatml");
    let mut tok = Tokenizer::from_hf_dir(&tok_dir).unwrap();
    for (case, needle) in [
        ("tokenizer-chatml-endless-loop", "budget"),
        ("tokenizer-chatml-huge-output", "more than"),
    ] {
        let t = std::fs::read_to_string(root.join(case).join("chat_template.jinja")).unwrap();
        tok.set_chat_template(Some(t));
        let start = Instant::now();
        let e = tok
            .apply_chat_template(&[ChatMessage::user("hi")], true)
            .unwrap_err();
        assert!(
            matches!(&e, Error::ChatTemplate { msg, .. } if msg.contains(needle)),
            "{case}: {e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{case}: {:?}",
            start.elapsed()
        );
    }
    // A store whose manifest lists a shard twice, or a file outside the store.
    let store = ts.iter().find(|t| t.name == "store").unwrap();
    for case in ["store-shard-listed-twice", "store-shard-outside-dir"] {
        let dir = seeds.join(case);
        std::fs::create_dir_all(&dir).unwrap();
        for f in &store.files {
            std::fs::write(dir.join(&f.name), &f.bytes).unwrap();
        }
        std::fs::copy(root.join(case).join("store.json"), dir.join("store.json")).unwrap();
        let e = puppetlens::extract::load_store(&dir).unwrap_err();
        assert!(
            matches!(&e, Error::Config { field, .. } if field == "shards"),
            "{case}: {e}"
        );
    }
}
