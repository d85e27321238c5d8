//! puppetlens side by side with the PyTorch stack, on the same weights, in one run:
//! `scripts/peer_bench.sh` (installs PyTorch + transformers into a cache venv, then runs
//! `cargo bench --bench peers`).
//!
//! For each shipped checkpoint, puppetlens's rows are measured first, then
//! `scripts/peer_bench.py` runs the same work with PyTorch + `transformers` loaded from
//! puppetlens's safetensors export (f32, forward hooks as nnsight / repeng / steering-vectors use
//! them), and with TransformerLens when it is installed. Rows: prompt processing with no hooks and
//! with every `hook_resid_post` cached (one 128-token prompt, and 8 of them as one batch),
//! extraction of 1000 prompts x all layers to safetensors shards (wall time, peak memory), steered
//! greedy generation with one additive hook. The steered generations of both stacks are compared
//! token for token. Achieved GFLOP/s of prompt processing are set against this machine's f32 matmul
//! rate, measured in the same run.
//!
//! `PUPPETLENS_PEER_PYTHON` names the Python to use (default: the venv the script makes);
//! `PUPPETLENS_BENCH_QUICK=1` makes a short run (fewer repetitions, 200 prompts);
//! `PUPPETLENS_PEER_MODELS=gemma-3-270m` runs one model; `PUPPETLENS_PEER_ROWS=sweeps` runs the
//! sweep rows alone: a steering dose-response (layers x multipliers x A/B items) and, on
//! gemma-3-270m, cross-model activation patching into its committed sycophant organism, each
//! against the same sweep written with PyTorch forward hooks, one full forward per cell (the two
//! stacks' per-item P(matching) are compared cell by cell).
//!
//! On a GPU (`PUPPETLENS_BENCH_DEVICE=cuda:0`, a build with `--features cuda`; `scripts/gpu_check.sh`
//! runs it on a GPU machine) both stacks run there, and after its timed rows the bench checks the
//! GPU against the CPU on the same weights: last-position logits and every hook point of a padded
//! batch, and steered greedy tokens. It stops with an error when they disagree beyond f32
//! tolerance. `PUPPETLENS_BENCH_CHECK=1` runs that check on the CPU too (CPU against CPU: a dry run
//! of the GPU script's path).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "util/mod.rs"]
mod util;

use candle_core::{DType, Device, Tensor};
use puppetlens::data::{self, PromptFormat};
use puppetlens::eval::{add_sweep_scores, AbCase, AbScore};
use puppetlens::extract::{extract_to_dir, ExtractOptions, Site, StoreMeta};
use puppetlens::patch::{patch_layers, Family};
use puppetlens::{
    AddVector, Batch, GenerateOptions, HookPoint, Hooks, LoadOptions, Model, SteeringVector,
    Tokenizer,
};
use serde_json::{json, Value};
use util::{bench_device, flops, matmul_rate_on, peak_mib, repo_root, time};

const SEQ: usize = 128;
const BATCH: usize = 8;
const NEW_TOKENS: usize = 64;

fn python() -> PathBuf {
    match std::env::var_os("PUPPETLENS_PEER_PYTHON") {
        Some(p) => p.into(),
        None => puppetlens::fetch::cache_dir().join("bench-venv/bin/python"),
    }
}

/// Runs one task of `scripts/peer_bench.py` in its own process and returns its JSON.
fn peer(
    py: &Path,
    device: &str,
    task: &str,
    model_dir: &Path,
    work: &Path,
    scratch: &Path,
) -> anyhow::Result<Value> {
    let out = scratch.join(format!("{task}.json"));
    let status = Command::new(py)
        .arg(repo_root().join("scripts/peer_bench.py"))
        .args(["--device", device, "--task", task, "--threads"])
        .arg(candle_core::utils::get_num_threads().to_string())
        .arg("--model-dir")
        .arg(model_dir)
        .arg("--work")
        .arg(work)
        .arg("--out")
        .arg(&out)
        .arg("--store")
        .arg(scratch.join("py-store"))
        .status()?;
    anyhow::ensure!(
        status.success(),
        "peer_bench.py --task {task} failed ({status})"
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(&out)?)?)
}

fn secs(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    let reps = if quick { 2 } else { 5 };
    let n_extract = if quick { 200 } else { 1000 };
    let py = python();
    let ok = Command::new(&py)
        .args(["-c", "import torch, transformers"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    anyhow::ensure!(
        ok,
        "{} cannot import torch and transformers: run scripts/peer_bench.sh, or set PUPPETLENS_PEER_PYTHON",
        py.display()
    );
    let (spec, device) = bench_device()?;
    let gpu = !device.is_cpu();
    // PyTorch's name for the same device (`cpu` and `cuda:N` are spelt alike).
    let torch_device = match &device {
        Device::Metal(_) => "mps".to_string(),
        _ => spec.trim().to_string(),
    };
    let rate = matmul_rate_on(&device);
    let threads = candle_core::utils::get_num_threads();
    println!(
        "{} f32 matmul rate: {rate:.0} GFLOP/s ({})\n",
        if gpu { "device" } else { "machine" },
        if gpu {
            format!("{device:?}")
        } else {
            format!("{threads} threads")
        }
    );
    let mut table = Vec::new();
    let mut notes = Vec::new();
    let only = std::env::var("PUPPETLENS_PEER_MODELS").ok();
    let sweeps_only = std::env::var("PUPPETLENS_PEER_ROWS").is_ok_and(|r| r == "sweeps");
    for name in ["smollm2-135m-instruct", "gemma-3-270m"] {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|m| m == name))
        {
            continue;
        }
        let path = puppetlens::fetch::fetch(name)?;
        let opts = LoadOptions {
            device: device.clone(),
            ..LoadOptions::default()
        };
        let (model, tok) = puppetlens::load_with(&path, &opts)?;
        let (n_layers, d_model) = (model.config().n_layers, model.config().d_model);
        let scratch =
            std::env::temp_dir().join(format!("puppetlens-peers-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;

        let sweep_run = |export: &Path, table: &mut Vec<String>, notes: &mut Vec<String>| {
            let run = SweepRun {
                name,
                model: &model,
                tok: &tok,
                export,
                scratch: &scratch,
                py: &py,
                torch_device: &torch_device,
                quick,
            };
            sweeps(&run, table, notes)
        };
        // `PUPPETLENS_PEER_ROWS=sweeps`: the sweep rows alone (see `sweeps`).
        if sweeps_only {
            let export = scratch.join("hf");
            model.export_safetensors(&export)?;
            sweep_run(&export, &mut table, &mut notes)?;
            std::fs::remove_dir_all(&scratch).ok();
            continue;
        }
        // Extraction first, so that the peak memory it adds is read right after loading.
        let statements = data::load_labeled_csv(repo_root().join("probes/true_false.csv"))?;
        let frames = ["", "Claim: ", "Is it true? ", "Fact check: "];
        let prompts: Vec<Vec<u32>> = frames
            .iter()
            .flat_map(|f| statements.iter().map(move |s| format!("{f}{}", s.text)))
            .take(n_extract)
            .map(|t| tok.encode(&t))
            .collect::<puppetlens::Result<_>>()?;
        let n_tokens: usize = prompts.iter().map(|p| p.len()).sum();
        let after_load = peak_mib();
        let opts = ExtractOptions {
            batch_size: 16,
            shard_size: 256,
            progress: false,
            ..ExtractOptions::resid_post(&model, Site::Last)
        };
        let after_load_gpu = gpu_mib(&device);
        let t = std::time::Instant::now();
        extract_to_dir(
            &model,
            &prompts,
            &opts,
            scratch.join("store"),
            &StoreMeta::default(),
        )?;
        let ours_extract = t.elapsed().as_secs_f64();
        let ours_peak = if gpu {
            (after_load_gpu, gpu_mib(&device))
        } else {
            (after_load, peak_mib())
        };

        // The same weights for PyTorch.
        let export = scratch.join("hf");
        model.export_safetensors(&export)?;

        let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        let mut ids = tok.encode(&text)?;
        ids.truncate(SEQ);
        let gen_prompt = tok.encode("Once upon a time, in a small village by the sea,")?;
        let mid = n_layers / 2;
        let vector = vec![1f32; d_model];
        let work = scratch.join("work.json");
        std::fs::write(
            &work,
            serde_json::to_vec(&json!({
                "prompt": ids, "batch": BATCH, "reps": reps,
                "extract_prompts": prompts, "batch_size": 16, "shard_size": 256,
                "pad_id": tok.eos_id().unwrap_or(0),
                "gen_prompt": gen_prompt, "gen_new_tokens": NEW_TOKENS, "gen_reps": reps.min(3),
                "steer_layer": mid, "steer_vector": vector,
            }))?,
        )?;

        // puppetlens rows.
        let single = Batch::single(&ids)?;
        let rows8: Vec<&[u32]> = (0..BATCH).map(|_| ids.as_slice()).collect();
        let batch8 = Batch::new(&rows8)?;
        let sync = || device.synchronize().unwrap();
        let cached = |b: &Batch| {
            let mut cache = puppetlens::ActivationCache::new();
            let mut hooks = Hooks::new();
            hooks.add_where(|p| matches!(p, HookPoint::ResidPost(_)), &mut cache);
            model.forward_last(b, &mut hooks).unwrap();
            sync();
        };
        let ours_1 = time(reps, || {
            model.forward_last(&single, &mut Hooks::new()).unwrap();
            sync();
        });
        let ours_1c = time(reps, || cached(&single));
        let ours_8 = time(reps, || {
            model.forward_last(&batch8, &mut Hooks::new()).unwrap();
            sync();
        });
        let ours_8c = time(reps, || cached(&batch8));
        let v = Tensor::new(vector.as_slice(), &device)?.to_dtype(DType::F32)?;
        let gen_opts = GenerateOptions::greedy(NEW_TOKENS);
        let mut ours_tokens = Vec::new();
        let ours_gen = time(reps.min(3), || {
            let mut hooks = Hooks::new();
            hooks.add(HookPoint::ResidPost(mid), AddVector::new(v.clone(), 1.0));
            let out = model
                .generate(&[gen_prompt.as_slice()], &gen_opts, &mut hooks)
                .unwrap();
            ours_tokens = out[0].clone();
        });

        // The PyTorch stack, one process per task.
        let td = torch_device.as_str();
        let pre = peer(&py, td, "prefill", &export, &work, &scratch)?;
        let ext = peer(&py, td, "extract", &export, &work, &scratch)?;
        let gen = peer(&py, td, "generate", &export, &work, &scratch)?;
        let tl = peer(&py, td, "tl", &export, &work, &scratch)?;
        let theirs_tokens: Vec<u32> = gen["tokens"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_u64().map(|t| t as u32))
                    .collect()
            })
            .unwrap_or_default();
        let same = ours_tokens
            .iter()
            .zip(&theirs_tokens)
            .take_while(|(a, b)| a == b)
            .count();
        notes.push(format!(
            "{name}: torch {} on {}, transformers {}, {} threads; steered greedy tokens equal for the first {same} of {NEW_TOKENS}; TransformerLens: {}",
            pre["torch"].as_str().unwrap_or("?"),
            pre["device"].as_str().unwrap_or("cpu"),
            pre["transformers"].as_str().unwrap_or("?"),
            pre["threads"],
            tl["skipped"].as_str().map(str::to_string).unwrap_or_else(|| format!("{}", tl["tl_version"]))
        ));

        let fl1 = flops(&model, SEQ);
        let pct = |s: f64, n: usize| 100.0 * n as f64 * fl1 / s / 1e9 / rate;
        let tps = |s: f64, n: usize| n as f64 / s;
        let mut row =
            |what: &str, ours: f64, theirs: f64, unit_tokens: usize, pct_of: Option<usize>| {
                table.push(format!(
                    "| {name} | {what} | {:.0} | {:.0} | {:.2}x | {} |",
                    tps(ours, unit_tokens),
                    tps(theirs, unit_tokens),
                    theirs / ours,
                    pct_of
                        .map(|n| format!("{:.0}%", pct(ours, n)))
                        .unwrap_or_else(|| "-".into())
                ));
            };
        row(
            "prompt, 1 x 128 tokens, no hooks",
            ours_1,
            secs(&pre, "no_hooks_s"),
            SEQ,
            Some(1),
        );
        row(
            "prompt, 1 x 128 tokens, all resid_post cached",
            ours_1c,
            secs(&pre, "cached_s"),
            SEQ,
            Some(1),
        );
        row(
            &format!("prompt, {BATCH} x 128 tokens, no hooks"),
            ours_8,
            secs(&pre, "batch_no_hooks_s"),
            BATCH * SEQ,
            Some(BATCH),
        );
        row(
            &format!("prompt, {BATCH} x 128 tokens, all resid_post cached"),
            ours_8c,
            secs(&pre, "batch_cached_s"),
            BATCH * SEQ,
            Some(BATCH),
        );
        row(
            &format!(
                "extraction, {} prompts x {n_layers} layers to disk",
                prompts.len()
            ),
            ours_extract,
            secs(&ext, "seconds"),
            n_tokens,
            None,
        );
        row(
            &format!("steered greedy generation, {NEW_TOKENS} new tokens"),
            ours_gen,
            secs(&gen, "seconds"),
            NEW_TOKENS,
            None,
        );
        if tl.get("skipped").is_none() {
            row(
                "prompt, 1 x 128 tokens, no hooks (vs TransformerLens)",
                ours_1,
                secs(&tl, "no_hooks_s"),
                SEQ,
                None,
            );
            row(
                "prompt, 1 x 128 tokens, all resid_post cached (vs TransformerLens run_with_cache)",
                ours_1c,
                secs(&tl, "cached_s"),
                SEQ,
                None,
            );
        }
        notes.push(format!(
            "{name}: extraction peak {} after load / after extraction, MiB: puppetlens {:.0} / {:.0}, PyTorch {:.0} / {:.0}",
            if gpu { "GPU memory" } else { "RSS" },
            ours_peak.0,
            ours_peak.1,
            secs(&ext, "peak_after_load_mib"),
            secs(&ext, "peak_after_mib")
        ));
        sweep_run(&export, &mut table, &mut notes)?;
        // Last, so that the CPU copy it loads weighs on no measurement above.
        if gpu || std::env::var_os("PUPPETLENS_BENCH_CHECK").is_some() {
            let (cpu, _) = puppetlens::load(&path)?;
            let checked = check_against_cpu(&cpu, &model, &tok)?;
            println!("{name}: {checked}");
            let what = if gpu { "GPU" } else { "CPU (dry run)" };
            notes.push(format!("{name}: {what} vs CPU, {checked}"));
        }
        std::fs::remove_dir_all(&scratch).ok();
    }
    println!("| model | work | puppetlens tokens/s (sweeps: item-cells/s) | PyTorch tokens/s (sweeps: item-cells/s) | puppetlens speed-up | puppetlens % of matmul rate |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in table {
        println!("{r}");
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
    println!("\nBest of {reps} runs after a warm-up; prompt rows compute last-position logits only (PyTorch: logits_to_keep=1).");
    Ok(())
}

/// One checkpoint's context for the sweep rows.
struct SweepRun<'a> {
    name: &'a str,
    model: &'a Model,
    tok: &'a Tokenizer,
    export: &'a Path,
    scratch: &'a Path,
    py: &'a Path,
    torch_device: &'a str,
    quick: bool,
}

/// Steering multipliers of the dose-response row (the main job's).
const MULTIPLIERS: [f64; 5] = [-2.0, -1.0, 0.0, 1.0, 2.0];
/// Positions from the end in the single-position patching row.
const PATCH_POSITIONS: usize = 4;

/// The sycophancy test items in the chat format (text answers), as the main job asks them.
fn sycophancy_cases(tok: &Tokenizer, gemma: bool, n: usize) -> anyhow::Result<Vec<AbCase>> {
    let mut tok = tok.clone();
    if gemma {
        tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    }
    let parts = data::load_with_split(
        repo_root().join("probes/sycophancy_ab.jsonl"),
        data::load_ab_json,
    )?;
    let fmt = PromptFormat::Chat { system: None };
    parts
        .test
        .iter()
        .take(n)
        .map(|it| {
            let p = data::ab_text_prompt(&tok, it, &fmt)?;
            Ok(AbCase {
                ids: p.ids.clone(),
                matching: p.matching_id(),
                not_matching: p.not_matching_id(),
            })
        })
        .collect()
}

/// Largest |dP| between puppetlens's and PyTorch's per-item scores of the same cells.
fn max_dp<'a>(ours: impl Iterator<Item = &'a AbScore>, theirs: &Value) -> f64 {
    let theirs: Vec<f64> = theirs
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let mut n = 0;
    let worst = ours
        .zip(&theirs)
        .inspect(|_| n += 1)
        .map(|(a, b)| (a.p_matching - b).abs())
        .fold(0.0, f64::max);
    if n == 0 || n != theirs.len() {
        return f64::NAN; // the two sides scored different numbers of cells
    }
    worst
}

/// The sweep rows: a steering dose-response (layers x multipliers x items, one vector) and, where
/// a tuned sibling is committed (gemma-3-270m's sycophant), cross-model activation patching at
/// `resid_pre` of every layer and the layer x position map; puppetlens's branched sweeps against
/// the same sweeps written with PyTorch forward hooks, one full forward per cell.
fn sweeps(r: &SweepRun, table: &mut Vec<String>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let gemma = r.name == "gemma-3-270m";
    let n_items = if r.quick { 16 } else { 32 };
    let cases = sycophancy_cases(r.tok, gemma, n_items)?;
    let n_layers = r.model.config().n_layers;
    let d = r.model.config().d_model;
    // Every other layer (as the main job's committed run), multipliers of the main job.
    let layers: Vec<usize> = (0..n_layers).step_by(2).collect();
    let scale = 4.0 / (d as f32).sqrt(); // a vector of norm 4 at every layer
    let v = Tensor::full(scale, d, r.model.device())?;
    let vector = SteeringVector::new(layers.iter().map(|&l| (l, v.clone())).collect(), "bench")?;
    // One timed run each (a sweep is long enough; the model has run the rows above).
    let t = std::time::Instant::now();
    let ours = add_sweep_scores(r.model, &cases, &vector, &layers, &MULTIPLIERS, 8)?;
    let ours_s = t.elapsed().as_secs_f64();
    let items: Vec<Value> = cases
        .iter()
        .map(|c| json!({"ids": c.ids, "matching": c.matching, "not_matching": c.not_matching}))
        .collect();
    let pad_id = r.tok.eos_id().unwrap_or(0);
    let work = r.scratch.join("sweep-work.json");
    std::fs::write(
        &work,
        serde_json::to_vec(&json!({
            "items": items, "pad_id": pad_id, "batch_size": 8,
            "layers": layers, "multipliers": MULTIPLIERS, "vector": vec![scale; d],
        }))?,
    )?;
    let theirs = peer(r.py, r.torch_device, "sweep", r.export, &work, r.scratch)?;
    let cells = layers.len() * MULTIPLIERS.len() * cases.len();
    let flat_ours = ours.iter().flatten().flatten();
    let dp = max_dp(flat_ours, &theirs["p"]);
    let row = |what: String, ours: f64, theirs: f64, cells: usize| {
        format!(
            "| {} | {what} | {:.1} | {:.1} | {:.2}x | - |",
            r.name,
            cells as f64 / ours,
            cells as f64 / theirs,
            theirs / ours
        )
    };
    table.push(row(
        format!(
            "steering dose-response, {} layers x {} multipliers x {} items (item-cells/s)",
            layers.len(),
            MULTIPLIERS.len(),
            cases.len()
        ),
        ours_s,
        secs(&theirs, "seconds"),
        cells,
    ));
    notes.push(format!(
        "{}: dose-response, the two stacks' P(matching) agree within {dp:.1e} over all {cells} item-cells",
        r.name
    ));
    if !gemma {
        return Ok(());
    }

    // Cross-model patching: gemma-3-270m into its committed sycophant organism.
    let (tuned, _) = puppetlens::open(
        "sycophant",
        &LoadOptions {
            device: r.model.device().clone(),
            ..LoadOptions::default()
        },
    )?;
    let tuned_export = r.scratch.join("hf-tuned");
    tuned.export_safetensors(&tuned_export)?;
    let all: Vec<usize> = (0..n_layers).collect();
    let t = std::time::Instant::now();
    let full = patch_layers(r.model, &tuned, &cases, Family::ResidPre, &all, 0, 8)?;
    let full_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let pos = patch_layers(
        r.model,
        &tuned,
        &cases,
        Family::ResidPre,
        &all,
        PATCH_POSITIONS,
        8,
    )?;
    let pos_s = t.elapsed().as_secs_f64();
    std::fs::write(
        &work,
        serde_json::to_vec(&json!({
            "items": items, "pad_id": pad_id, "batch_size": 8, "layers": all,
            "positions": PATCH_POSITIONS, "tuned_dir": tuned_export,
        }))?,
    )?;
    let theirs = peer(r.py, r.torch_device, "patch", r.export, &work, r.scratch)?;
    let cells = all.len() * cases.len();
    let dp_full = max_dp(full.full.iter().flatten(), &theirs["p_full"]);
    let dp_pos = max_dp(
        pos.positions.iter().flatten().flatten(),
        &theirs["p_positions"],
    );
    let dp_ends = max_dp(
        full.base.iter().chain(&full.tuned),
        &Value::Array(
            theirs["p_base"]
                .as_array()
                .into_iter()
                .chain(theirs["p_tuned"].as_array())
                .flatten()
                .cloned()
                .collect(),
        ),
    );
    table.push(row(
        format!(
            "patching into the sycophant, resid_pre, every position, {} layers x {} items (item-cells/s)",
            all.len(),
            cases.len()
        ),
        full_s,
        secs(&theirs, "full_seconds"),
        cells,
    ));
    // Both sides: the every-position patches and each of the last positions alone, in one run.
    table.push(row(
        format!(
            "patching, every position and each of the last {PATCH_POSITIONS} alone, {} layers x {} items (item-cells/s)",
            all.len(),
            cases.len()
        ),
        pos_s,
        secs(&theirs, "full_seconds") + secs(&theirs, "positions_seconds"),
        cells * (1 + PATCH_POSITIONS),
    ));
    notes.push(format!(
        "{}: patching, the two stacks' P(matching) agree within {dp_ends:.1e} unpatched (base and sycophant), {dp_full:.1e} on every-position patches, {dp_pos:.1e} on single-position patches; mean P base {:.3}, sycophant {:.3}",
        r.name,
        full.base.iter().map(|s| s.p_matching).sum::<f64>() / cases.len() as f64,
        full.tuned.iter().map(|s| s.p_matching).sum::<f64>() / cases.len() as f64,
    ));
    Ok(())
}

/// GPU memory in use, MiB, as the driver reports it for the whole device (NaN on the CPU or when
/// `nvidia-smi` is missing).
fn gpu_mib(device: &Device) -> f64 {
    if device.is_cpu() {
        return f64::NAN;
    }
    Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Largest |a - b| over all elements, and that divided by the largest |b|.
fn diff(a: &Tensor, b: &Tensor) -> anyhow::Result<(f32, f32)> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let d = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    let m = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok((d, d / m.max(f32::MIN_POSITIVE)))
}

/// f32 tolerance on logits of magnitude ~20-30 computed by equivalent ops in another order: the one
/// `tests/real/reference.rs` holds puppetlens to against candle-transformers on the CPU (worst measured
/// there 3.2e-5 SmolLM2, 7.6e-5 Gemma 3).
const LOGIT_TOL: f32 = 2.5e-4;
/// Relative tolerance on every hook point's activations (largest |difference| over largest |value|
/// of that point): f32 rounding accumulated over the layers, ~10x the logits' relative error above.
const ACT_REL_TOL: f32 = 1e-4;
/// Steered greedy tokens that must agree: as many as `tests/real/reference.rs` compares greedily.
const SAME_TOKENS: usize = 16;

/// The GPU model against the CPU one on the same weights: last-position logits and all hook points
/// of a padded batch of three prompts, and 64 steered greedy tokens. Errors when they disagree.
fn check_against_cpu(cpu: &Model, dev: &Model, tok: &Tokenizer) -> anyhow::Result<String> {
    let texts = [
        "The capital of France is",
        "In 1969, two astronauts walked on the surface of the Moon while a third",
        "def fibonacci(n):",
    ];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(t))
        .collect::<puppetlens::Result<_>>()?;
    let rows: Vec<&[u32]> = ids.iter().map(|r| r.as_slice()).collect();
    let batch = Batch::new(&rows)?; // left-padded: exercises the masks and positions
    let (a, b) = (
        cpu.forward_last(&batch, &mut Hooks::new())?,
        dev.forward_last(&batch, &mut Hooks::new())?,
    );
    let (d_logits, _) = diff(&b, &a)?;
    let (cache_cpu, cache_dev) = (cpu.cache(&batch, |_| true)?, dev.cache(&batch, |_| true)?);
    let mut worst = (f32::NEG_INFINITY, String::new());
    for p in cpu.hook_points() {
        let (x, y) = match (cache_cpu.get(p), cache_dev.get(p)) {
            (Some(x), Some(y)) => (x, y),
            _ => anyhow::bail!("hook point {p} missing from a cache"),
        };
        let (_, rel) = diff(y, x)?;
        if !(rel <= worst.0) {
            // NaN counts as the worst
            worst = (rel, p.to_string());
        }
    }
    let prompt = tok.encode("Once upon a time, in a small village by the sea,")?;
    let mid = cpu.config().n_layers / 2;
    let d = cpu.config().d_model;
    let steered = |m: &Model| -> anyhow::Result<Vec<u32>> {
        let v = Tensor::ones(d, DType::F32, m.device())?;
        let mut hooks = Hooks::new();
        hooks.add(HookPoint::ResidPost(mid), AddVector::new(v, 1.0));
        Ok(m.generate(
            &[prompt.as_slice()],
            &GenerateOptions::greedy(NEW_TOKENS),
            &mut hooks,
        )?
        .remove(0))
    };
    let (ta, tb) = (steered(cpu)?, steered(dev)?);
    let same = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
    let summary = format!(
        "last-position logits max abs diff {d_logits:.2e} (tolerance {LOGIT_TOL:.1e}); worst hook point \
         {} relative diff {:.2e} (tolerance {ACT_REL_TOL:.0e}); steered greedy tokens equal for the first \
         {same} of {NEW_TOKENS}",
        worst.1, worst.0
    );
    anyhow::ensure!(
        d_logits <= LOGIT_TOL && worst.0 <= ACT_REL_TOL && same >= SAME_TOKENS,
        "GPU and CPU disagree: {summary}"
    );
    Ok(summary)
}
