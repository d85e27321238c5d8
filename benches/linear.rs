//! The dense linear layers' CPU matmul, per shape: candle's `x.matmul(w.t())` (the `gemm`
//! crate, right-hand side packed on every call) against puppetlens's packed kernel
//! (`src/runtime/model/packed.rs`, weights packed once), in one run, on the projections of the
//! two shipped checkpoints (SmolLM2 576/1536, Gemma 3 640/2048/256) at 1 row (a generation step),
//! 8 (a few columns of a batch), 128 (one prompt), 448 and 1024 rows (a batch of prompts).
//! `cargo bench --bench linear`; `PUPPETLENS_BENCH_QUICK=1` for fewer repetitions.

// `packed.rs`'s unit tests are not built here (no test harness); their imports would warn.
#![allow(unused_imports)]

#[path = "util/mod.rs"]
mod util;
// The kernel's own file, built into this benchmark (it is private to the library).
#[allow(dead_code)]
#[path = "../src/runtime/model/packed.rs"]
mod packed;

use candle_core::{Device, Tensor};
use util::time;

/// What `packed.rs` calls `crate::Result`.
type Result<T> = puppetlens::Result<T>;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("PUPPETLENS_BENCH_QUICK").is_some();
    if !packed::available() {
        println!("no AVX-512 on this CPU: the packed kernel does not run here");
        return Ok(());
    }
    println!(
        "machine f32 matmul rate: {:.0} GFLOP/s\n",
        util::matmul_rate()
    );
    println!(
        "| in -> out | rows | candle GFLOP/s | packed GFLOP/s | packed speed-up | max abs diff |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let dev = Device::Cpu;
    for (k, n) in [
        (576, 576),
        (576, 1536),
        (1536, 576),
        (640, 2048),
        (2048, 640),
        (640, 256),
    ] {
        for rows in [1usize, 8, 128, 448, 1024] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let p = packed::Packed::new(&w)?.expect("packed on this CPU");
            let flop = 2.0 * (rows * k * n) as f64;
            // Enough repetitions per timing for ~50 ms of work.
            let inner = ((5e9 / flop) as usize).clamp(1, 500) / if quick { 4 } else { 1 };
            let inner = inner.max(1);
            let reps = if quick { 3 } else { 7 };
            let candle = time(reps, || {
                for _ in 0..inner {
                    x.matmul(&w.t().unwrap()).unwrap();
                }
            });
            let mine = time(reps, || {
                for _ in 0..inner {
                    packed::packed_matmul_t(&x, &p).unwrap();
                }
            });
            let a = x.matmul(&w.t()?)?;
            let b = packed::packed_matmul_t(&x, &p)?;
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let rate = |s: f64| flop * inner as f64 / s / 1e9;
            println!(
                "| {k} -> {n} | {rows} | {:.1} | {:.1} | {:.2}x | {diff:.1e} |",
                rate(candle),
                rate(mine),
                candle / mine
            );
        }
    }
    Ok(())
}
