//! Helpers shared by the benchmarks: best-of timing, the machine's matmul rate, FLOP counts and
//! peak memory.
#![allow(dead_code)]

use std::time::Instant;

use candle_core::{Device, Tensor};
use puppetlens::Model;

/// Best wall time of `reps` runs of `f` after one warm-up run, seconds.
pub fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f(); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// f32 matmul rate of this machine, GFLOP/s, on a [512 x 640] x [640 x 2048] product (shapes like
/// the models' projections over a few prompts).
pub fn matmul_rate() -> f64 {
    matmul_rate_on(&Device::Cpu)
}

/// [`matmul_rate`] on `device`: the CPU's shapes there, a [4096 x 4096] x [4096 x 4096] product on a
/// GPU (small products on a GPU measure launch latency, not its arithmetic).
pub fn matmul_rate_on(device: &Device) -> f64 {
    let (m, k, n) = if device.is_cpu() {
        (512, 640, 2048)
    } else {
        (4096, 4096, 4096)
    };
    let a = Tensor::randn(0f32, 1.0, (m, k), device).unwrap();
    let b = Tensor::randn(0f32, 1.0, (n, k), device).unwrap();
    let s = time(10, || {
        a.matmul(&b.t().unwrap()).unwrap();
        device.synchronize().unwrap();
    });
    2.0 * (m * k * n) as f64 / s / 1e9
}

/// `PUPPETLENS_BENCH_DEVICE` (`cpu`, `cuda`, `cuda:N`, `metal`; `cpu` when unset) and the device
/// it names (see [`puppetlens::parse_device`]). A GPU needs a build with `--features cuda` (or
/// `metal`).
pub fn bench_device() -> anyhow::Result<(String, Device)> {
    let spec = std::env::var("PUPPETLENS_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = puppetlens::parse_device(&spec)?;
    Ok((spec, device))
}

/// The repository's root: `PUPPETLENS_REPO`, else the one the bench was built in, else the current
/// directory (a bench binary copied to another machine runs from the repository's copy there).
pub fn repo_root() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PUPPETLENS_REPO") {
        return p.into();
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("scripts").is_dir() {
        built.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| built.to_path_buf())
    }
}

/// Matmul FLOPs of one forward over `s` tokens with last-position logits only: the projections,
/// attention (scores and weighted sum over the causal triangle) and one unembedding row.
pub fn flops(m: &Model, s: usize) -> f64 {
    let c = m.config();
    let (d, h, kv, hd, f) = (c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_mlp);
    let proj = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * f; // q, o, k, v, gate, up, down
    let attn = 2 * h * hd * s; // scores + weighted sum, averaged over the causal triangle (s/2 keys x 2)
    let per_layer = 2 * proj * s + 2 * attn * s;
    (c.n_layers * per_layer + 2 * d * c.vocab_size) as f64
}

/// The process's peak resident memory so far (VmHWM), MiB.
pub fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
