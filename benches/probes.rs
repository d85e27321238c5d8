//! Per-layer logistic probes over all layers, side by side with scikit-learn on the same data:
//! `cargo bench --bench probes`.
//!
//! Data: 30 layers of synthetic residual-stream-like activations (n_train = 1000, n_val = 250,
//! d_model = 576, decaying latent factors, 4 large-variance outlier dimensions, a planted label
//! direction of increasing separation), an L2 grid of 5. Rows: puppetlens's `fit_logistic` (all
//! layers and grid values as one batched Newton-CG problem, L2 chosen on validation) and the full
//! `sweep` (plus metrics with 1000 bootstrap resamples on three splits). If `python3` with
//! scikit-learn, numpy and safetensors is available, the data is written to
//! `target/probe-bench/data.safetensors` and `scripts/sklearn_crosscheck.py --time` fits the same
//! layers and grid (StandardScaler + LogisticRegression, L2 chosen on validation), once with
//! scikit-learn's defaults (lbfgs, tol 1e-4, max_iter 100) and once at our tolerance; otherwise the
//! command to run it is printed. A second table times the same sweep through linfa datasets
//! (`probe::sweep_with`, batched and generic) against the direct call. Set
//! `PUPPETLENS_BENCH_QUICK=1` for one repetition, `PUPPETLENS_BENCH_SKIP_GENERIC=1` to skip the
//! generic linfa path, and
//! `PUPPETLENS_BENCH_SKIP_SKLEARN=1` to skip scikit-learn (its matched-tolerance run takes minutes).

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use linfa::traits::Fit;

use candle_core::{Device, Tensor};
use puppetlens::probe::{self, ProbeOptions};

const LAYERS: usize = 30;
const N_TRAIN: usize = 1000;
const N_VAL: usize = 250;
const N_TEST: usize = 250;
const D: usize = 576;

/// SplitMix64 with Box-Muller normals: the data never changes with a dependency's version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One layer's three splits: 16 latent factors, isotropic noise 0.5, outliers of sd 40 at 4
/// dimensions, and the label shifting the mean by `shift` along a random unit direction.
fn layer(rng: &mut Rng, ys: [&[bool]; 3], shift: f64) -> anyhow::Result<Vec<Tensor>> {
    let k = 16;
    let f: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            let s = 12.0 / ((i + 1) as f64).sqrt() / (D as f64).sqrt();
            (0..D).map(|_| rng.normal() * s).collect()
        })
        .collect();
    let u: Vec<f64> = (0..D).map(|_| rng.normal() / (D as f64).sqrt()).collect();
    let mean: Vec<f64> = (0..D).map(|_| rng.normal() * 2.0).collect();
    let mut out = Vec::new();
    for y in ys {
        let mut v = Vec::with_capacity(y.len() * D);
        for &t in y {
            let z: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
            let a = if t { 0.5 * shift } else { -0.5 * shift };
            for j in 0..D {
                let sd = if j % 150 == 17 { 40.0 } else { 0.5 };
                let fac: f64 = z.iter().zip(&f).map(|(zi, fi)| zi * fi[j]).sum();
                v.push((mean[j] + a * u[j] + fac + rng.normal() * sd) as f32);
            }
        }
        out.push(Tensor::from_vec(v, (y.len(), D), &Device::Cpu)?); // [n, d]
    }
    Ok(out)
}

/// CPU seconds used by this process so far (user + system, all threads), from /proc/self/stat
/// (Linux; NaN elsewhere). Unlike wall time it does not count other processes' load.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ, 100 on Linux
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    let reps = if quick { 1 } else { 3 };
    let mut rng = Rng(7);
    let labels = |rng: &mut Rng, n| -> Vec<bool> { (0..n).map(|_| rng.uniform() < 0.5).collect() };
    let (ytr, yva, yte) = (
        labels(&mut rng, N_TRAIN),
        labels(&mut rng, N_VAL),
        labels(&mut rng, N_TEST),
    );
    let (mut tr, mut va, mut te) = (Vec::new(), Vec::new(), Vec::new());
    for l in 0..LAYERS {
        // Separation grows through the middle layers and fades again, as probe curves do.
        let shift = 0.2 + 1.2 * (std::f64::consts::PI * l as f64 / LAYERS as f64).sin();
        let mut s = layer(&mut rng, [&ytr, &yva, &yte], shift)?.into_iter();
        tr.push(s.next().ok_or_else(|| anyhow::anyhow!("split"))?);
        va.push(s.next().ok_or_else(|| anyhow::anyhow!("split"))?);
        te.push(s.next().ok_or_else(|| anyhow::anyhow!("split"))?);
    }
    let opts = ProbeOptions::default();
    println!(
        "{LAYERS} layers, n_train {N_TRAIN}, n_val {N_VAL}, d_model {D}, l2 grid {:?}, tol {:e}, {} threads\n",
        opts.l2_grid,
        opts.tol,
        candle_core::utils::get_num_threads()
    );

    let mut fit_s = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        let probes = probe::fit_logistic(&tr, &ytr, &va, &yva, &opts)?;
        assert_eq!(probes.len(), LAYERS);
        fit_s = fit_s.min(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let report = probe::sweep(&tr, &ytr, &va, &yva, &te, &yte, &opts)?;
    let sweep_s = t.elapsed().as_secs_f64();

    // Solver statistics on the same standardized problem.
    let xs = tr
        .iter()
        .map(|x| {
            let m = x.mean_keepdim(0)?; // [1, d]
            let c = x.broadcast_sub(&m)?; // [n, d]
            let sd = c.sqr()?.mean_keepdim(0)?.sqrt()?; // [1, d]
            c.broadcast_div(&sd)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let x = Tensor::stack(&xs, 0)?; // [L, n, d]
    let sol = probe::solve_logistic_batched(&x, &ytr, &opts.l2_grid, opts.max_iter, opts.tol)?;
    let worst = sol
        .grad_norm
        .iter()
        .flatten()
        .fold(0.0f64, |a, &b| a.max(b));
    println!(
        "Newton-CG: {} Newton steps, {} batched Hessian-vector products, largest final gradient ∞-norm {worst:.1e} (converged: {})",
        sol.newton_iters, sol.hvps, sol.converged
    );
    let accs: Vec<String> = report
        .iter()
        .map(|r| format!("{:.2}", r.test.accuracy))
        .collect();
    println!("test accuracy by layer: {}\n", accs.join(" "));

    // The same sweep through linfa datasets (`probe::sweep_with` with puppetlens's LogisticProbe,
    // recognised and solved as one batched problem) against the direct call, interleaved so that
    // both see the same machine load; and once through linfa's generic path (one `Fit` per layer
    // and grid value), which `Plain` forces.
    let t = Instant::now();
    let (dtr, dva, dte) = (
        probe::layer_datasets(&tr, &ytr)?,
        probe::layer_datasets(&va, &yva)?,
        probe::layer_datasets(&te, &yte)?,
    );
    let convert_s = t.elapsed().as_secs_f64();
    let make = |l2| probe::LogisticProbe::with_options(l2, &opts);
    let score = |p: &probe::LinearProbe, x: &ndarray::Array2<f32>| p.decision(&x.view());
    let (mut direct_s, mut linfa_s) = (f64::INFINITY, f64::INFINITY);
    let mut same = true;
    let (mut direct_cpu, mut linfa_cpu) = (f64::INFINITY, f64::INFINITY);
    let mut times = Vec::new();
    for rep in 0..reps {
        // Alternate the order (direct first on even repetitions, linfa first on odd ones).
        for first in [rep % 2 == 0, rep % 2 != 0] {
            let (t, c) = (Instant::now(), cpu_seconds());
            if first {
                let a = probe::sweep(&tr, &ytr, &va, &yva, &te, &yte, &opts)?;
                let (s, cs) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
                direct_s = direct_s.min(s);
                direct_cpu = direct_cpu.min(cs);
                times.push(format!("direct {s:.2} (cpu {cs:.2})"));
                same &= a
                    .iter()
                    .zip(&report)
                    .all(|(x, y)| x.test.accuracy == y.test.accuracy);
            } else {
                let b = probe::sweep_with_scores(make, score, &dtr, &dva, &dte, &opts)?;
                let (s, cs) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
                linfa_s = linfa_s.min(s);
                linfa_cpu = linfa_cpu.min(cs);
                times.push(format!("linfa {s:.2} (cpu {cs:.2})"));
                same &= b
                    .iter()
                    .zip(&report)
                    .all(|(x, y)| x.test.accuracy == y.test.accuracy);
            }
        }
    }
    println!("sweep timings in run order (s): {}", times.join(", "));
    println!(
        "process CPU seconds (both threads), best of {reps}: direct {direct_cpu:.2}, through linfa \
         datasets {linfa_cpu:.2}, ratio {:.3}",
        linfa_cpu / direct_cpu
    );
    struct Plain(probe::LogisticProbe);
    impl Fit<ndarray::Array2<f32>, ndarray::Array1<bool>, puppetlens::Error> for Plain {
        type Object = probe::LinearProbe;
        fn fit(
            &self,
            ds: &linfa::DatasetBase<ndarray::Array2<f32>, ndarray::Array1<bool>>,
        ) -> puppetlens::Result<probe::LinearProbe> {
            self.0.fit(ds)
        }
    }
    let generic_s = if std::env::var_os("PUPPETLENS_BENCH_SKIP_GENERIC").is_some() {
        f64::NAN
    } else {
        let t = Instant::now();
        let g = probe::sweep_with_scores(|l2| Plain(make(l2)), score, &dtr, &dva, &dte, &opts)?;
        same &= report
            .iter()
            .zip(&g)
            .all(|(x, y)| x.test.accuracy == y.test.accuracy);
        t.elapsed().as_secs_f64()
    };
    println!("| per-layer sweep (fit + metrics, 1000 bootstrap x 3 splits), best of {reps} | seconds | time / direct sweep |");
    println!("|---|---:|---:|");
    println!("| direct call: probe::sweep on tensors | {direct_s:.2} | 1.00 |");
    println!(
        "| through linfa datasets: probe::sweep_with(LogisticProbe) (batched) | {linfa_s:.2} | {:.3} |",
        linfa_s / direct_s
    );
    println!(
        "| the same plus building the 3 x {LAYERS} linfa datasets ({convert_s:.2} s) | {:.2} | {:.3} |",
        linfa_s + convert_s,
        (linfa_s + convert_s) / direct_s
    );
    println!(
        "| linfa's generic path: one Fit per layer and l2 ({} fits), once | {generic_s:.2} | {:.2} |",
        LAYERS * opts.l2_grid.len(),
        generic_s / direct_s
    );
    println!("same test accuracies on every layer: {same}\n");

    // scikit-learn on the same data.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/probe-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("data.safetensors");
    let mut data: HashMap<String, Tensor> = HashMap::new();
    for l in 0..LAYERS {
        data.insert(format!("layer.{l}.x_train"), tr[l].clone());
        data.insert(format!("layer.{l}.x_val"), va[l].clone());
    }
    let u8s = |y: &[bool]| {
        Tensor::from_vec(
            y.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>(),
            y.len(),
            &Device::Cpu,
        )
    };
    data.insert("y_train".into(), u8s(&ytr)?);
    data.insert("y_val".into(), u8s(&yva)?);
    candle_core::safetensors::save(&data, &path)?;
    let grid: Vec<String> = opts.l2_grid.iter().map(|v| format!("{v:e}")).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sklearn_crosscheck.py");
    let args = [
        script.to_string(),
        "--time".into(),
        path.display().to_string(),
        "--l2".into(),
        grid.join(","),
        "--tol".into(),
        format!("{:e}", opts.tol),
    ];
    let sk = if std::env::var_os("PUPPETLENS_BENCH_SKIP_SKLEARN").is_some() {
        Err(std::io::Error::other(
            "PUPPETLENS_BENCH_SKIP_SKLEARN is set",
        ))
    } else {
        Command::new("python3").args(&args).output()
    };
    let parsed = match &sk {
        Ok(o) if o.status.success() => serde_json::from_slice::<serde_json::Value>(&o.stdout).ok(),
        _ => None,
    };
    println!("| implementation | seconds | time / puppetlens fit_logistic |");
    println!("|---|---:|---:|");
    println!(
        "| puppetlens fit_logistic (batched Newton-CG, tol {:e}) | {fit_s:.2} | 1.00 |",
        opts.tol
    );
    println!(
        "| puppetlens sweep (fit + metrics, 1000 bootstrap x 3 splits) | {sweep_s:.2} | n/a |"
    );
    match parsed {
        Some(v) => {
            for (name, label) in [
                (
                    "default",
                    "scikit-learn lbfgs defaults (tol 1e-4, max_iter 100)".to_string(),
                ),
                (
                    "matched",
                    format!("scikit-learn lbfgs, tol {:e}, max_iter 1e5", opts.tol),
                ),
            ] {
                let s = v[format!("{name}_seconds")].as_f64().unwrap_or(f64::NAN);
                let nc = v[format!("{name}_not_converged")].as_u64().unwrap_or(0);
                println!(
                    "| {label} [{nc} of {} fits hit max_iter] | {s:.2} | {:.1} |",
                    LAYERS * opts.l2_grid.len(),
                    s / fit_s
                );
            }
        }
        None => {
            let why = match &sk {
                Ok(o) => String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            println!("\nscikit-learn not timed ({why}). To time it on the same data:");
            println!("  pip install scikit-learn safetensors numpy");
            println!("  python3 {}", args.join(" "));
        }
    }
    Ok(())
}
