//! Sparse dictionaries (`puppetlens::dict`) on synthetic activations with a planted ground truth,
//! the SAELens layout checked by an independent NumPy implementation
//! (`scripts/sae_crosscheck.py`), and bad input.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use puppetlens::data::SplitMix64;
use puppetlens::dict::{self, Activation, DictOptions, Dictionary, LabelOptions, LatentLabel};
use puppetlens::Error;

const D: usize = 32;

struct Rng(SplitMix64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn unit(&mut self) -> Vec<f64> {
        let v: Vec<f64> = (0..D).map(|_| self.gauss()).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

/// A planted feature: its direction in model A (base) and model B (tuned); `None` where absent.
struct Feature {
    dirs: [Option<Vec<f64>>; 2],
}

/// Planted ground truth: `n_shared` features in both models (model B's direction a small
/// rotation of model A's, cosine about 0.96), `n_b_only` only in model B (tuned), `n_a_only`
/// only in model A (base). Codes are sparse and non-negative: each feature is active on a token
/// with probability `p`, with a magnitude uniform in [0.5, 1.5], the same in both models; plus
/// Gaussian noise (sd 0.02 per coordinate). Returns the features and `[n, 2, D]` activations.
fn synthetic(
    n: usize,
    n_shared: usize,
    n_b_only: usize,
    n_a_only: usize,
    p: f64,
    seed: u64,
) -> (Vec<Feature>, Tensor) {
    let mut rng = Rng::new(seed);
    let mut feats = Vec::new();
    for _ in 0..n_shared {
        let a = rng.unit();
        let g = rng.unit();
        let b: Vec<f64> = a.iter().zip(&g).map(|(x, y)| x + 0.3 * y).collect();
        let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        feats.push(Feature {
            dirs: [Some(a), Some(b.iter().map(|x| x / nb).collect())],
        });
    }
    for _ in 0..n_b_only {
        feats.push(Feature {
            dirs: [None, Some(rng.unit())],
        });
    }
    for _ in 0..n_a_only {
        feats.push(Feature {
            dirs: [Some(rng.unit()), None],
        });
    }
    let mut x = vec![0f32; n * 2 * D];
    for t in 0..n {
        for f in &feats {
            if rng.uniform() < p {
                let c = 0.5 + rng.uniform();
                for (m, dir) in f.dirs.iter().enumerate() {
                    if let Some(dir) = dir {
                        for (j, v) in dir.iter().enumerate() {
                            x[(t * 2 + m) * D + j] += (c * v) as f32;
                        }
                    }
                }
            }
        }
        for v in &mut x[t * 2 * D..(t + 1) * 2 * D] {
            *v += (0.02 * rng.gauss()) as f32;
        }
    }
    (feats, Tensor::from_vec(x, (n, 2, D), &Device::Cpu).unwrap())
}

/// Per (feature, model): the best cosine between the planted direction and any latent's decoder
/// direction in that model, and that latent.
fn best_match(dict: &Dictionary, dir: &[f64], model: usize) -> (f64, usize) {
    let w = dict.w_dec().get(model).unwrap().to_vec2::<f32>().unwrap(); // [l, d]
    let mut best = (f64::NEG_INFINITY, 0);
    for (j, row) in w.iter().enumerate() {
        let n = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        if n == 0.0 {
            continue;
        }
        let c = row
            .iter()
            .zip(dir)
            .map(|(&a, &b)| a as f64 * b)
            .sum::<f64>()
            / n;
        if c > best.0 {
            best = (c, j);
        }
    }
    best
}

/// Fraction of planted (feature, model) pairs with a latent decoder direction at cosine >= 0.9,
/// and per feature the best-matching latent in the model(s) holding it.
fn recovery(
    dict: &Dictionary,
    feats: &[Feature],
    models: &[usize],
) -> (f64, Vec<Vec<(f64, usize)>>) {
    let (mut hit, mut pairs) = (0, 0);
    let mut best = Vec::new();
    for f in feats {
        let mut per = Vec::new();
        for &m in models {
            if let Some(dir) = &f.dirs[m] {
                let b = best_match(dict, dir, if dict.n_models() == 1 { 0 } else { m });
                pairs += 1;
                hit += (b.0 >= 0.9) as usize;
                per.push(b);
            }
        }
        best.push(per);
    }
    (hit as f64 / pairs.max(1) as f64, best)
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The crosscoder on planted features: 40 shared (model B's direction a rotation of model A's
/// by cosine ~0.96), 6 only in model B (the "tuned" model, index 1), 4 only in model A (the
/// base, index 0); 16,384 tokens, about 3 features active per token; 128 latents, k = 3.
///
/// Measured (seed 1 data, seed 3 training, 1500 steps of 256 tokens, 5.2 s): all 90 planted
/// (feature, model) pairs recovered, every best cosine >= 0.999; FVU 0.020 (base) / 0.021
/// (tuned); L0 2.97 with the inference threshold; 78 of 128 latents dead (0.61: the data have 50
/// features, so 78 latents have nothing to do); each B-only feature's latent: relative norm
/// 0.987..0.992, ν^ε within ±0.01, ν^r -0.14..0.06, labelled tuned-only; each A-only feature's:
/// relative norm 0.007..0.012, labelled base-only; all 40 shared features' latents: relative norm
/// 0.493..0.495, decoder cosine 0.95..0.97, ν^ε 0.93..0.95, labelled shared.
#[test]
fn crosscoder_recovers_planted_features_and_labels_model_only_ones() {
    let (feats, acts) = synthetic(16384, 40, 6, 4, 0.06, 1);
    let opts = DictOptions {
        n_latents: 128,
        k: 3,
        steps: 1500,
        batch_size: 256,
        dead_after_tokens: 5000,
        progress: false,
        seed: 3,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let (cc, log) = dict::train(&acts, &opts).unwrap();
    let last = log.steps.last().unwrap();
    eprintln!(
        "crosscoder: {:.1} s, {:.0} tokens/s; loss {:.3} -> {:.4}; batch fvu {:.4}; threshold {:.3}",
        t.elapsed().as_secs_f64(), log.tokens_per_s, log.steps[0].loss, last.loss, last.fvu, last.threshold
    );
    assert_eq!(log.steps.len(), 1500);
    // Measured 45.9 -> 2.29: the curve must fall by more than 10x.
    assert!(last.loss < log.steps[0].loss / 10.0, "loss did not fall");

    let m = dict::evaluate(&cc, &acts, 4096).unwrap();
    eprintln!(
        "metrics: fvu {:?}, L0 {:.3}, dead {:.3}",
        m.fvu, m.l0, m.dead_fraction
    );
    // Measured FVU 0.020 / 0.021 and L0 2.97 (k = 3).
    assert!(m.fvu.iter().all(|&f| f < 0.05), "fvu {:?}", m.fvu);
    assert!((m.l0 - 3.0).abs() < 0.5, "L0 {}", m.l0);

    let (frac, best) = recovery(&cc, &feats, &[0, 1]);
    let min_cos = best
        .iter()
        .flatten()
        .map(|b| b.0)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "recovered {frac:.3} of planted (feature, model) pairs; worst best cosine {min_cos:.4}"
    );
    // Measured 1.0 (90/90), worst best cosine 0.9998.
    assert!(frac >= 0.9, "recovered only {frac}");

    let stats = dict::latents(&cc, &acts, &LabelOptions::default()).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for s in &stats {
        *counts.entry(format!("{:?}", s.label)).or_insert(0) += 1;
    }
    eprintln!("labels: {counts:?}");
    let mut shared_ok = 0;
    for (f, b) in feats.iter().zip(&best) {
        let j = b[0].1;
        let s = &stats[j];
        let nu = s.scaling.as_ref().map(|x| (x.nu_error, x.nu_recon));
        match (&f.dirs[0], &f.dirs[1]) {
            (None, Some(_)) => {
                eprintln!(
                    "B-only latent {j}: rel {:.3}, nu {nu:?}, {:?}",
                    s.rel_norm, s.label
                );
                assert_eq!(s.label, LatentLabel::TunedOnly, "{s:?}");
            }
            (Some(_), None) => {
                eprintln!(
                    "A-only latent {j}: rel {:.3}, nu {nu:?}, {:?}",
                    s.rel_norm, s.label
                );
                assert_eq!(s.label, LatentLabel::BaseOnly, "{s:?}");
            }
            _ => shared_ok += (s.label == LatentLabel::Shared) as usize,
        }
    }
    eprintln!("shared features whose latent is labelled shared: {shared_ok}/40");
    // Measured 40/40.
    assert!(shared_ok >= 36, "{shared_ok}/40");

    // Complete Shrinkage, simulated: zero the base decoder of shared feature 0's latent. Its
    // relative norm becomes 1 (tuned-only by norm), but the base model's error now holds the
    // direction, so Latent Scaling calls it an artefact. Measured ν^ε 0.991, ν^r 0.083 (the
    // signature of Complete Shrinkage: the base's error, not its reconstruction, holds it).
    let j = best[0][0].1;
    let mut w = cc.w_dec().to_vec3::<f32>().unwrap();
    w[0][j].iter_mut().for_each(|v| *v = 0.0);
    let shrunk = Dictionary::new(
        cc.w_enc().clone(),
        cc.b_enc().clone(),
        Tensor::new(w, &Device::Cpu).unwrap(),
        cc.b_dec().clone(),
        cc.activation().clone(),
    )
    .unwrap()
    .with_scale(cc.scale().to_vec())
    .unwrap();
    let s = &dict::latents(&shrunk, &acts, &LabelOptions::default()).unwrap()[j];
    let ls = s.scaling.as_ref().unwrap();
    eprintln!(
        "shrunk latent {j}: rel {:.3}, nu_error {:.3}, nu_recon {:.3}, {:?}",
        s.rel_norm, ls.nu_error, ls.nu_recon, s.label
    );
    assert_eq!(s.rel_norm, 1.0);
    assert_eq!(s.label, LatentLabel::Artefact, "{s:?}");

    // puppetlens's format: f32 round trip is exact; bf16 halves the file.
    let dir = tmp("dict-roundtrip");
    cc.save(dir.join("f32")).unwrap();
    cc.save_as(dir.join("bf16"), DType::BF16).unwrap();
    let x = acts.narrow(0, 0, 512).unwrap();
    let f0 = cc.encode(&x).unwrap();
    let back = Dictionary::load(dir.join("f32"), &Device::Cpu).unwrap();
    let diff = (back.encode(&x).unwrap() - &f0)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    let half = Dictionary::load(dir.join("bf16"), &Device::Cpu).unwrap();
    let fvu_half = dict::evaluate(&half, &acts, 4096).unwrap().fvu;
    let size = |p: &str| {
        std::fs::metadata(dir.join(p).join(dict::WEIGHTS_FILE))
            .unwrap()
            .len()
    };
    eprintln!(
        "weights: f32 {} bytes, bf16 {} bytes; bf16 fvu {fvu_half:?}",
        size("f32"),
        size("bf16")
    );
    assert!(size("bf16") < size("f32") * 6 / 10 && size("f32") < 8 << 20);
    assert!(fvu_half.iter().all(|&f| f < 0.05), "{fvu_half:?}");
}

/// The same trainer as an SAE on model A alone (44 planted features: the 40 shared and the 4
/// A-only; 2.64 active per token on average), 128 latents, k = 3, 1500 steps.
///
/// Measured: 43/44 recovered (0.977; seeds 5 and 7: 0.955 and 0.977), FVU 0.049, L0 2.97. The
/// misses are merges: one latent sits between two planted features whose directions have a
/// cosine of 0.3-0.5 (its cosines to them e.g. 0.92 and 0.70). Fewer steps merge more (1000
/// steps: 0.93-1.0 over three seeds), and a k below the true L0 forces merges (k = 2: 0.886,
/// FVU 0.14). The crosscoder above, with two views of each shared feature, merged none.
/// Then the SAELens layout, checked against NumPy (`scripts/sae_crosscheck.py`).
#[test]
fn sae_recovers_planted_features_and_saelens_layout_matches_numpy() {
    let (feats, acts) = synthetic(16384, 40, 6, 4, 0.06, 2);
    let acts_a = acts.narrow(1, 0, 1).unwrap().contiguous().unwrap(); // [n, 1, D]
    let opts = DictOptions {
        n_latents: 128,
        k: 3,
        steps: 1500,
        batch_size: 256,
        dead_after_tokens: 5000,
        progress: false,
        seed: 4,
        ..Default::default()
    };
    let (mut sae, _log) = dict::train(&acts_a, &opts).unwrap();
    let m = dict::evaluate(&sae, &acts_a, 4096).unwrap();
    let (frac, best) = recovery(&sae, &feats, &[0]);
    let min_cos = best
        .iter()
        .flatten()
        .map(|b| b.0)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "sae: fvu {:?}, L0 {:.3}, dead {:.3}; recovered {frac:.3}, worst {min_cos:.4}",
        m.fvu, m.l0, m.dead_fraction
    );
    // Measured 0.977 (0.955..0.977 over seeds) and FVU 0.049 (0.041..0.050).
    assert!(frac >= 0.9, "recovered only {frac}");
    assert!(m.fvu[0] < 0.08, "{:?}", m.fvu);
    assert!((m.l0 - 3.0).abs() < 0.5, "L0 {}", m.l0);
    // SAE input may be [.., d] as well as [.., 1, d].
    let x = acts_a.narrow(0, 0, 512).unwrap().squeeze(1).unwrap(); // [512, D]
    assert_eq!(sae.encode(&x).unwrap().dims(), &[512, 128]);
    assert_eq!(
        sae.decode(&sae.encode(&x).unwrap()).unwrap().dims(),
        &[512, D]
    );

    let root = tmp("sae-crosscheck");
    // Case 1: the trained BatchTopK SAE, exported as SAELens's jumprelu.
    sae.meta
        .insert("hook_name".into(), "blocks.3.hook_resid_post".into());
    sae.save_saelens(root.join("case_trained/sae")).unwrap();
    let loaded = Dictionary::load_saelens(root.join("case_trained/sae"), &Device::Cpu).unwrap();
    assert!(matches!(loaded.activation(), Activation::JumpRelu { .. }));
    assert_eq!(
        loaded.meta.get("hook_name").map(String::as_str),
        Some("blocks.3.hook_resid_post")
    );
    write_case(
        &root.join("case_trained"),
        &loaded,
        &x,
        Some(&sae.reconstruct(&x).unwrap()),
    );

    // Cases 2 and 3: SAEs written here as SAELens would (not by puppetlens): a `standard` SAE
    // with f16 weights and `apply_b_dec_to_input: false`, and a `topk` SAE.
    let mut rng = Rng::new(9);
    let mut randn = |shape: &[usize], s: f64| {
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            (0..n).map(|_| (s * rng.gauss()) as f32).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap()
    };
    let l = 48;
    for (name, arch, extra, dtype) in [
        (
            "case_standard",
            "standard",
            serde_json::json!({"apply_b_dec_to_input": false}),
            DType::F16,
        ),
        ("case_topk", "topk", serde_json::json!({"k": 5}), DType::F32),
    ] {
        let dir = root.join(name).join("sae");
        let mut cfg = serde_json::json!({"architecture": arch, "d_in": D, "d_sae": l, "dtype": "float32",
            "normalize_activations": "none", "hook_name": "blocks.0.hook_resid_pre"});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        write_saelens(
            &dir,
            &cfg,
            &[
                ("W_enc", randn(&[D, l], 0.3)),
                ("b_enc", randn(&[l], 0.1)),
                ("W_dec", randn(&[l, D], 0.3)),
                ("b_dec", randn(&[D], 0.1)),
            ],
            dtype,
        );
        let sae = Dictionary::load_saelens(&dir, &Device::Cpu).unwrap();
        write_case(&root.join(name), &sae, &x, None);
    }
    let active = |d: &Dictionary| {
        d.encode(&x)
            .unwrap()
            .gt(0.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum(1)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let topk = Dictionary::load_saelens(root.join("case_topk/sae"), &Device::Cpu).unwrap();
    assert_eq!(active(&topk), 5.0);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sae_crosscheck.py");
    match std::process::Command::new("python3")
        .arg(&script)
        .arg(&root)
        .output()
    {
        Ok(out) if out.status.success() => eprintln!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let missing = err.contains("No module named");
            assert!(
                missing && std::env::var_os("CI").is_none(),
                "SAELens cross-check failed:\n{}\n{err}",
                String::from_utf8_lossy(&out.stdout)
            );
            eprintln!("safetensors/numpy not installed; cross-check skipped");
        }
        Err(e) => assert!(std::env::var_os("CI").is_none(), "python3: {e}"),
    }
}

fn write_saelens(dir: &Path, cfg: &serde_json::Value, tensors: &[(&str, Tensor)], dtype: DType) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("cfg.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();
    let map: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.to_dtype(dtype).unwrap()))
        .collect();
    candle_core::safetensors::save(&map, dir.join("sae_weights.safetensors")).unwrap();
}

/// `acts.safetensors` (`x`) and `ours.safetensors` (`f`, `x_hat`, optionally `x_hat_trained`).
fn write_case(dir: &Path, sae: &Dictionary, x: &Tensor, x_hat_trained: Option<&Tensor>) {
    let f = sae.encode(x).unwrap();
    let mut ours = std::collections::HashMap::new();
    ours.insert("x_hat".to_string(), sae.decode(&f).unwrap());
    ours.insert("f".to_string(), f);
    if let Some(t) = x_hat_trained {
        ours.insert("x_hat_trained".to_string(), t.clone());
    }
    candle_core::safetensors::save(&ours, dir.join("ours.safetensors")).unwrap();
    let acts = std::collections::HashMap::from([("x".to_string(), x.clone())]);
    candle_core::safetensors::save(&acts, dir.join("acts.safetensors")).unwrap();
}

/// Bad input: typed errors naming what is wrong.
#[test]
fn bad_input_gets_typed_errors() {
    let dev = Device::Cpu;
    let (_, acts) = synthetic(512, 8, 1, 1, 0.2, 5);
    let opts = DictOptions {
        n_latents: 16,
        k: 2,
        steps: 20,
        batch_size: 64,
        progress: false,
        ..Default::default()
    };
    let (cc, _) = dict::train(&acts, &opts).unwrap();

    // Wrong width: a crosscoder of width 32 given width 16, or one model's activations.
    let narrow = Tensor::zeros((4, 2, 16), DType::F32, &dev).unwrap();
    assert!(matches!(cc.encode(&narrow), Err(Error::Shape { .. })));
    let one = Tensor::zeros((4, D), DType::F32, &dev).unwrap();
    let e = cc.encode(&one).unwrap_err();
    assert!(e.to_string().contains("[.., 2, 32]"), "{e}");
    assert!(matches!(
        dict::evaluate(&cc, &narrow, 8),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        cc.decode(&Tensor::zeros((3, 7), DType::F32, &dev).unwrap()),
        Err(Error::Shape { .. })
    ));

    // Empty input.
    let empty = Tensor::zeros((0, 2, D), DType::F32, &dev).unwrap();
    assert!(matches!(
        dict::train(&empty, &opts),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        dict::evaluate(&cc, &empty, 8),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        dict::latents(&cc, &empty, &LabelOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        dict::train(
            &acts,
            &DictOptions {
                k: 17,
                ..opts.clone()
            }
        ),
        Err(Error::InvalidArgument { .. })
    ));
    // Per-latent base/tuned numbers need two models; SAELens holds one.
    let sae_acts = acts.narrow(1, 0, 1).unwrap().contiguous().unwrap();
    let (sae, _) = dict::train(&sae_acts, &opts).unwrap();
    assert!(matches!(
        dict::latents(&sae, &sae_acts, &LabelOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        cc.save_saelens(tmp("dict-bad-cc")),
        Err(Error::InvalidArgument { .. })
    ));

    // SAELens: unknown architecture, width that does not match the weights, truncated and
    // corrupt weights, missing threshold, unsupported normalisation.
    let root = tmp("dict-bad");
    let good = root.join("good");
    sae.save_saelens(&good).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(good.join("cfg.json")).unwrap()).unwrap();
    let variant = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = cfg.clone();
        edit(&mut c);
        std::fs::write(dir.join("cfg.json"), c.to_string()).unwrap();
        std::fs::copy(
            good.join("sae_weights.safetensors"),
            dir.join("sae_weights.safetensors"),
        )
        .unwrap();
        dir
    };
    let gated = variant("gated", &|c| c["architecture"] = "gated".into());
    let e = Dictionary::load_saelens(&gated, &dev).unwrap_err();
    assert!(
        matches!(&e, Error::UnknownArchitecture { arch, .. } if arch == "gated"),
        "{e}"
    );
    let wide = variant("wide", &|c| c["d_in"] = 64.into());
    let e = Dictionary::load_saelens(&wide, &dev).unwrap_err();
    assert!(
        matches!(&e, Error::Shape { what, .. } if what.contains("W_enc")),
        "{e}"
    );
    let normed = variant("normed", &|c| {
        c["normalize_activations"] = "expected_average_only_in".into()
    });
    assert!(
        matches!(Dictionary::load_saelens(&normed, &dev), Err(Error::Config { field, .. }) if field == "normalize_activations")
    );
    let no_width = variant("no_width", &|c| {
        c.as_object_mut().unwrap().remove("d_sae");
    });
    assert!(
        matches!(Dictionary::load_saelens(&no_width, &dev), Err(Error::Config { field, .. }) if field == "d_sae")
    );
    let truncated = variant("truncated", &|_| {});
    let w = truncated.join("sae_weights.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = Dictionary::load_saelens(&truncated, &dev).unwrap_err();
    assert!(
        matches!(&e, Error::Checkpoint { path, .. } if path.ends_with("sae_weights.safetensors")),
        "{e}"
    );
    let corrupt = variant("corrupt", &|_| {});
    std::fs::write(
        corrupt.join("sae_weights.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors",
    )
    .unwrap();
    assert!(matches!(
        Dictionary::load_saelens(&corrupt, &dev),
        Err(Error::Checkpoint { .. })
    ));
    // A jumprelu config whose weights lack `threshold`: a standard SAE's file.
    let st = tmp("dict-bad-standard");
    sae.clone().save(&st).unwrap();
    let relu = Dictionary::new(
        sae.w_enc().clone(),
        sae.b_enc().clone(),
        sae.w_dec().clone(),
        sae.b_dec().clone(),
        Activation::Relu,
    )
    .unwrap();
    relu.save_saelens(root.join("relu")).unwrap();
    let no_thr = root.join("relu");
    let mut c = cfg.clone();
    c["architecture"] = "jumprelu".into();
    std::fs::write(no_thr.join("cfg.json"), c.to_string()).unwrap();
    assert!(
        matches!(Dictionary::load_saelens(&no_thr, &dev), Err(Error::MissingTensor { name, .. }) if name == "threshold")
    );
    // puppetlens's own format: truncated weights and a broken config.
    let own = root.join("own");
    cc.save(&own).unwrap();
    let w = own.join(dict::WEIGHTS_FILE);
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        Dictionary::load(&own, &dev),
        Err(Error::Checkpoint { .. })
    ));
    std::fs::write(own.join(dict::CONFIG_FILE), "{\"format\": 3}").unwrap();
    assert!(matches!(
        Dictionary::load(&own, &dev),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        Dictionary::load(root.join("absent"), &dev),
        Err(Error::Io { .. })
    ));
}

/// A dense shift: the tuned model's activations are the base's (40 shared planted features) plus
/// one constant vector on every token, the shape of the sycophant's change at layer 8
/// (notebooks-data/crosscoder/FINDINGS.md). With per-model decoder biases the crosscoder puts
/// the shift into the difference of its two biases and no latent carries it; with one shared
/// bias (`DictOptions::shared_decoder_bias`, fixed at the base's mean) a latent does: its tuned
/// decoder direction is the shift, it is active on most tokens, and its relative decoder norm
/// leans to the tuned model, above the shared band, though short of the tuned-only cut.
///
/// Measured (seed 4 data, seed 3 training, 1500 steps): per-model biases: the bias difference is
/// the shift (norm 1.498 of 1.5, cosine 1.000), the best latent's tuned direction has cosine 0.584
/// with it (relative norm 0.41); shared bias: latent cosine 0.956, relative norm 0.768 ("other"),
/// active on 86% of tokens.
#[test]
fn a_dense_shift_goes_to_the_biases_unless_they_are_shared() {
    let (_, acts) = synthetic(16384, 40, 0, 0, 0.06, 4);
    let mut rng = Rng::new(99);
    let shift: Vec<f64> = rng.unit().iter().map(|v| 1.5 * v).collect();
    let s_t = Tensor::from_vec(
        shift.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (1, 1, D),
        &Device::Cpu,
    )
    .unwrap();
    let zero = Tensor::zeros((1, 1, D), DType::F32, &Device::Cpu).unwrap();
    let acts = acts
        .broadcast_add(&Tensor::cat(&[&zero, &s_t], 1).unwrap())
        .unwrap(); // [n, 2, D]: the shift in model 1 only
    let unit: Vec<f64> = {
        let n = shift.iter().map(|v| v * v).sum::<f64>().sqrt();
        shift.iter().map(|v| v / n).collect()
    };
    let opts = DictOptions {
        n_latents: 128,
        k: 4,
        steps: 1500,
        batch_size: 256,
        dead_after_tokens: 5000,
        progress: false,
        seed: 3,
        ..Default::default()
    };
    let cos = |a: &[f64], b: &[f64]| {
        let (na, nb) = (
            a.iter().map(|v| v * v).sum::<f64>().sqrt(),
            b.iter().map(|v| v * v).sum::<f64>().sqrt(),
        );
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (na * nb).max(1e-30)
    };
    let mut found = Vec::new();
    for shared in [false, true] {
        let (cc, _) = dict::train(
            &acts,
            &DictOptions {
                shared_decoder_bias: shared,
                ..opts.clone()
            },
        )
        .unwrap();
        let b = cc.b_dec().to_vec2::<f32>().unwrap();
        let sc = cc.scale();
        let bias_diff: Vec<f64> = (0..D)
            .map(|i| (b[1][i] * sc[1] - b[0][i] * sc[0]) as f64)
            .collect();
        let bias_cos = cos(&bias_diff, &unit);
        let bias_norm = bias_diff.iter().map(|v| v * v).sum::<f64>().sqrt();
        let (best_cos, j) = best_match(&cc, &unit, 1);
        let stats = dict::latents(&cc, &acts, &LabelOptions::default()).unwrap();
        eprintln!(
            "shared bias {shared}: bias difference norm {bias_norm:.3} (shift 1.5), cosine {bias_cos:.3}; \
             best latent {j}: cosine {best_cos:.3}, relative norm {:.3}, frequency {:.3}, {:?}",
            stats[j].rel_norm, stats[j].frequency, stats[j].label
        );
        found.push((
            bias_norm,
            bias_cos,
            best_cos,
            stats[j].rel_norm,
            stats[j].frequency,
        ));
    }
    let (per_model, shared) = (found[0], found[1]);
    assert!(
        per_model.1 >= 0.9 && per_model.0 >= 1.0,
        "per-model biases: {per_model:?}"
    );
    assert!(
        per_model.2 < 0.8,
        "per-model biases: a latent carries the shift: {per_model:?}"
    );
    assert!(
        shared.0 < 1e-4,
        "shared bias differs between models: {shared:?}"
    );
    assert!(
        shared.2 >= 0.9 && shared.3 > 0.6 && shared.4 > 0.5,
        "shared bias: no latent carries the shift: {shared:?}"
    );
}

/// Training is a function of (data, options): the same seed gives the same dictionary, another
/// seed another one.
#[test]
fn training_is_seeded() {
    let (_, acts) = synthetic(1024, 8, 1, 1, 0.2, 6);
    let opts = DictOptions {
        n_latents: 16,
        k: 2,
        steps: 30,
        batch_size: 64,
        progress: false,
        seed: 11,
        ..Default::default()
    };
    let w = |o: &DictOptions| {
        dict::train(&acts, o)
            .unwrap()
            .0
            .w_dec()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&opts), w(&opts));
    assert_ne!(
        w(&opts),
        w(&DictOptions {
            seed: 12,
            ..opts.clone()
        })
    );
}

/// The CPU's sparse training step against candle's autograd over a whole run (planted data,
/// AuxK at work from the eighth step on, a per-model and a shared decoder bias): the same loss
/// curve and the same dictionary up to float rounding. (The gradients of one step are compared
/// exactly in the library's unit test.)
#[test]
fn sparse_step_follows_autograd_over_a_run() {
    let (_, acts) = synthetic(4096, 20, 2, 2, 0.1, 6);
    for shared in [false, true] {
        let opts = DictOptions {
            n_latents: 64,
            k: 3,
            steps: 200,
            batch_size: 128,
            dead_after_tokens: 1000,
            shared_decoder_bias: shared,
            progress: false,
            seed: 5,
            ..Default::default()
        };
        let (a, la) = dict::train(&acts, &opts).unwrap();
        let (b, lb) = dict::train(
            &acts,
            &DictOptions {
                autograd: true,
                ..opts.clone()
            },
        )
        .unwrap();
        let rel = la
            .steps
            .iter()
            .zip(&lb.steps)
            .map(|(x, y)| (x.loss - y.loss).abs() / y.loss)
            .fold(0.0, f64::max);
        let dead = la.steps.iter().filter(|s| s.dead_fraction > 0.0).count();
        let w = |d: &Dictionary| {
            let mut v = d.w_dec().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.extend(d.w_enc().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            v.extend(d.b_dec().flatten_all().unwrap().to_vec1::<f32>().unwrap());
            v
        };
        let (wa, wb) = (w(&a), w(&b));
        let dw = wa
            .iter()
            .zip(&wb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = wb.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!(
            "shared {shared}: loss {:.4} -> {:.4} (autograd {:.4}); max relative loss diff {rel:.2e}; \
             {dead} steps with dead latents; max |weight diff| {dw:.2e} (largest weight {scale:.2}); \
             {:.0} vs {:.0} tokens/s",
            la.steps[0].loss,
            la.steps.last().unwrap().loss,
            lb.steps.last().unwrap().loss,
            la.tokens_per_s,
            lb.tokens_per_s
        );
        assert!(dead > 100, "AuxK was not exercised ({dead} steps)");
        // Measured: relative loss difference at most 2.1e-7 over the 200 steps, weights at most
        // 3.6e-7 apart (largest weight 0.58), in both settings.
        assert!(rel < 1e-5, "loss curves apart: {rel}");
        assert!(dw < 1e-4 * scale, "weights apart: {dw}");
    }
}

// ---------------------------------------------------------------------------------------------
// The committed crosscoders (notebooks-data/crosscoder/, built by `cargo run --release --example
// crosscoder`): gemma-3-270m vs the sycophant and vs the control at blocks.8.hook_resid_post.
// Nothing is trained here; the numbers recomputed are the cheap ones.

use crate::common;

use puppetlens::data::{ab_text_prompt, PromptFormat};
use puppetlens::dict::{
    decoder_direction, paired_corpus, CorpusOptions, PromptSet, Splice, SteerLatent,
};
use puppetlens::eval::AbCase;
use puppetlens::lora::Adapter;
use puppetlens::{Batch, HookPoint, Hooks, Model, Tokenizer};

const CC_POINT: HookPoint = HookPoint::ResidPost(8);
// Thresholds from the measurements (the example's results.json, and the first 24 training / 30
// test items recomputed here; see notebooks-data/crosscoder/README.md).
// (b): the chosen latent's tuned decoder direction against the mean tuned - base difference on
// the sycophancy tokens; measured 0.827 here (0.825 on all 220 training items in the example; the
// earlier builds without ShareGPT in the corpus: 0.770-0.781).
const CC_COSINE_MIN: f64 = 0.6;
// (c) is a null result: added to the base at the scale chosen on the validation items (4.62, four
// times its typical activation) the latent moves P(agree) by +0.024 here (0.587 -> 0.611 on 30
// items; +0.025 on all 74 test items in the example, where the control crosscoder's chosen latent
// moves it by +0.028), while the base-vs-sycophant difference at the same layer moves it by +0.072
// (tests/real/organisms.rs). The bound records that the latent does not carry the behaviour.
const CC_STEER_MAX: f64 = 0.05;

fn cc_dir(tuned: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks-data/crosscoder")
        .join(format!("gemma-3-270m__{tuned}"))
}

fn committed(tuned: &str) -> (Dictionary, serde_json::Value) {
    let dir = cc_dir(tuned);
    let cc = Dictionary::load(&dir, &Device::Cpu).unwrap();
    let res: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    (cc, res)
}

fn gemma_chat() -> (&'static Model, Tokenizer) {
    let (m, t) = common::gemma();
    let mut t = t.clone();
    t.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    (m, t)
}

fn organism(name: &str) -> Model {
    let (base, _) = common::gemma();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks-data/organisms")
        .join(name);
    base.with_adapter(&Adapter::load(dir, base.device()).unwrap())
        .unwrap()
}

fn sycophancy_cases(tok: &Tokenizer) -> puppetlens::data::Split<AbCase> {
    let parts = puppetlens::data::load_with_split(
        "probes/sycophancy_ab.jsonl",
        puppetlens::data::load_ab_json,
    )
    .unwrap();
    let fmt = PromptFormat::Chat { system: None };
    parts.map(|it| AbCase::from(ab_text_prompt(tok, &it, &fmt).unwrap()))
}

/// Mean P(agree) of `cases` under `hooks` (one batch; normalised over the two answers).
fn mean_p(model: &Model, cases: &[AbCase], hooks: &mut Hooks) -> f64 {
    let ids: Vec<&[u32]> = cases.iter().map(|c| c.ids.as_slice()).collect();
    let logits: Vec<Vec<f32>> = model
        .forward_last(&Batch::new(&ids).unwrap(), hooks)
        .unwrap()
        .to_vec2()
        .unwrap();
    cases
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
        / cases.len() as f64
}

/// The committed sycophant crosscoder: the chosen latent's tuned decoder direction is aligned
/// with the mean tuned - base difference on the sycophancy tokens of 24 training items
/// (recomputed), but steering the base along it at the scale chosen on the validation items
/// barely moves held-out P(agree) (30 test items): the method finds an aligned, sycophancy-prompt
/// latent, not one that carries the behaviour.
#[test]
fn committed_sycophant_crosscoder_latent_against_the_ground_truth() {
    let (base, tok) = gemma_chat();
    let cases = sycophancy_cases(&tok);
    let syc = organism("sycophant");
    let (cc, res) = committed("sycophant");
    assert!(
        std::fs::metadata(cc_dir("sycophant").join(dict::WEIGHTS_FILE))
            .unwrap()
            .len()
            < 8 << 20
    );
    let j = res["chosen"]["latent"].as_u64().unwrap() as usize;
    let scale = res["chosen"]["scale"].as_f64().unwrap();
    let prompts: Vec<Vec<u32>> = cases.train[..24].iter().map(|c| c.ids.clone()).collect();
    let opts = CorpusOptions {
        point: CC_POINT,
        progress: false,
        ..CorpusOptions::default()
    };
    let corpus =
        paired_corpus(base, &syc, &[PromptSet::new("sycophancy", prompts)], &opts).unwrap();
    let diff = corpus.mean_diff(None).unwrap();
    let cos = puppetlens::steer::cosine(&decoder_direction(&cc, j, 1).unwrap(), &diff).unwrap();
    let test = &cases.test[..30];
    let p0 = mean_p(base, test, &mut Hooks::new());
    let mut hooks = Hooks::new();
    hooks.add(CC_POINT, SteerLatent::new(&cc, j, 1, scale).unwrap());
    let p1 = mean_p(base, test, &mut hooks);
    eprintln!("latent {j}: cosine with the sycophancy mean difference {cos:.3}; P(agree) on 30 test items {p0:.3} -> {p1:.3} (scale {scale:.2})");
    assert!(cos >= CC_COSINE_MIN, "cosine {cos}");
    assert!((p1 - p0).abs() <= CC_STEER_MAX, "steering {p0} -> {p1}");
}

/// Splicing the crosscoder into the base (its reconstruction plus the error term, the
/// sycophant's activation as the partner) leaves the logits as they were; dropping the error term
/// changes them; wrong width, wrong hook point and corrupt weights give typed errors.
#[test]
fn crosscoder_hooks_splice_and_reject_bad_input() {
    let (base, tok) = gemma_chat();
    let (cc, _) = committed("sycophant");
    let syc = organism("sycophant");
    let ids = tok
        .encode("I think the moon is made of cheese, don't you agree?")
        .unwrap();
    let batch = Batch::single(&ids).unwrap();
    let mut partner = None;
    {
        let mut hooks = Hooks::new();
        hooks.add(
            CC_POINT,
            puppetlens::hook_fn(|x, _| {
                partner = Some(x.clone());
                Ok(None)
            }),
        );
        syc.run_hooks(&batch, &mut hooks).unwrap();
    }
    let partner = partner.unwrap(); // [1, s, 640]
    let plain = base.forward_last(&batch, &mut Hooks::new()).unwrap();
    let mut with_err = Hooks::new();
    with_err.add(
        CC_POINT,
        Splice::new(&cc, 0)
            .unwrap()
            .with_partner(partner.clone())
            .with_error(true),
    );
    let spliced = base.forward_last(&batch, &mut with_err).unwrap();
    let mut recon = Hooks::new();
    recon.add(
        CC_POINT,
        Splice::new(&cc, 0).unwrap().with_partner(partner.clone()),
    );
    let recon = base.forward_last(&batch, &mut recon).unwrap();
    let (d_err, d_rec) = (
        common::max_abs_diff(&plain, &spliced),
        common::max_abs_diff(&plain, &recon),
    );
    eprintln!("splice: max |logit change| with the error term {d_err:.2e}, reconstruction only {d_rec:.2e}");
    assert!(d_err < 1e-3 && d_rec > 10.0 * d_err, "{d_err} {d_rec}");

    // A crosscoder splice without the partner, at another layer, on a model of another width.
    let mut h = Hooks::new();
    h.add(CC_POINT, Splice::new(&cc, 0).unwrap());
    assert!(matches!(
        base.forward_last(&batch, &mut h),
        Err(Error::InvalidArgument { .. })
    ));
    let mut h = Hooks::new();
    h.add(
        HookPoint::ResidPost(4),
        SteerLatent::new(&cc, 0, 1, 1.0).unwrap(),
    );
    let e = base.forward_last(&batch, &mut h).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("blocks.8"),
        "{e}"
    );
    let (smol, stok) = common::smollm();
    let sb = Batch::single(&stok.encode("Hello there").unwrap()).unwrap();
    let mut h = Hooks::new();
    h.add(CC_POINT, SteerLatent::new(&cc, 0, 1, 1.0).unwrap());
    let e = smol.forward_last(&sb, &mut h).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("640"),
        "{e}"
    );
    assert!(matches!(
        SteerLatent::new(&cc, cc.n_latents(), 1, 1.0),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        SteerLatent::new(&cc, 0, 2, 1.0),
        Err(Error::IndexOutOfRange { .. })
    ));
    // A paired corpus from models of different widths, and a crosscoder read against a corpus
    // from another point.
    let e = paired_corpus(
        base,
        smol,
        &[PromptSet::new("x", vec![ids.clone()])],
        &CorpusOptions::default(),
    );
    assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
    let opts = CorpusOptions {
        point: HookPoint::ResidPost(3),
        progress: false,
        ..CorpusOptions::default()
    };
    let corpus =
        paired_corpus(base, &syc, &[PromptSet::new("x", vec![ids.clone()])], &opts).unwrap();
    assert!(matches!(
        corpus.latent_activations(&cc, 64),
        Err(Error::InvalidArgument { .. })
    ));
    let e = paired_corpus(base, &syc, &[PromptSet::new("x", vec![vec![2]])], &opts);
    assert!(matches!(e, Err(Error::InvalidArgument { .. })), "{e:?}");
    // A truncated copy of the committed weights.
    let dir = tmp("crosscoder-truncated");
    std::fs::copy(
        cc_dir("sycophant").join(dict::CONFIG_FILE),
        dir.join(dict::CONFIG_FILE),
    )
    .unwrap();
    let w = std::fs::read(cc_dir("sycophant").join(dict::WEIGHTS_FILE)).unwrap();
    std::fs::write(dir.join(dict::WEIGHTS_FILE), &w[..w.len() / 2]).unwrap();
    let e = Dictionary::load(&dir, &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, Error::Checkpoint { .. }) && e.to_string().contains(dict::WEIGHTS_FILE),
        "{e}"
    );
}

/// The one call (`dict::crosscoder`) on gemma-3-270m vs the sycophant, and its dashboard: the
/// contexts shown are each latent's top activations with the activation of every window token
/// read off the corpus, the files read back equal, the page has a row per latent and a section
/// per shown latent with every text escaped, and bad files give typed errors.
#[test]
fn one_call_crosscoder_and_its_dashboard() {
    use puppetlens::dict::{Dashboard, DashboardOptions, SteeringEffect};
    let (base, tok) = gemma_chat();
    let cases = sycophancy_cases(&tok);
    let syc = organism("sycophant");
    let neutral = [
        "The capital of France is Paris.",
        "Water boils at 100 degrees <C>.",
    ];
    let sets = [
        PromptSet::new(
            "sycophancy",
            cases.train[..16].iter().map(|c| c.ids.clone()).collect(),
        ),
        PromptSet::new(
            "neutral <&>",
            neutral.iter().map(|t| tok.encode(t).unwrap()).collect(),
        ),
    ];
    let opts = dict::CrosscoderOptions {
        corpus: CorpusOptions {
            point: CC_POINT,
            progress: false,
            ..CorpusOptions::default()
        },
        train: DictOptions {
            n_latents: 64,
            k: 8,
            steps: 60,
            progress: false,
            ..DictOptions::default()
        },
        dashboard: DashboardOptions {
            shown: 8,
            contexts: 4,
            window: 6,
            ..DashboardOptions::default()
        },
        names: ["gemma-3-270m".into(), "gemma-3-270m+sycophant".into()],
        ..dict::CrosscoderOptions::default()
    };
    let decode = |t: u32| tok.decode(&[t]).unwrap();
    let mut run = dict::crosscoder(base, &syc, &sets, decode, &opts).unwrap();
    assert_eq!(run.latents.len(), 64);
    assert_eq!(run.dict.meta["hook_name"], "blocks.8.hook_resid_post");
    assert_eq!(
        run.dashboard.corpus["neutral <&>"],
        run.corpus.set_counts()[1]
    );
    assert!(run.dashboard.contexts.len() >= 8);

    let f = run.f.to_vec2::<f32>().unwrap(); // [n_tokens, 64]
    let row_of = |set: usize, item: usize, pos: usize| {
        run.corpus
            .sources
            .iter()
            .position(|s| s.set == set && s.item == item && s.pos == pos)
    };
    for (&j, ctxs) in &run.dashboard.contexts {
        let col_max = f.iter().map(|r| r[j]).fold(0f32, f32::max);
        if col_max > 0.0 {
            assert_eq!(
                ctxs[0].activation, col_max,
                "latent {j}: not its top context"
            );
        }
        for w in ctxs.windows(2) {
            assert!(w[0].activation >= w[1].activation, "latent {j}: unsorted");
        }
        for c in ctxs {
            let set = run.corpus.sets.iter().position(|s| *s == c.set).unwrap();
            let prompt = &run.corpus.prompts[set][c.item];
            let n = c.tokens.len();
            assert!(n <= 6 && n == c.acts.len() && n > 0);
            assert_eq!(*c.acts.last().unwrap(), c.activation);
            assert!(!c.withheld);
            for (i, (t, a)) in c.tokens.iter().zip(&c.acts).enumerate() {
                let pos = c.pos + 1 + i - n;
                assert_eq!(
                    *t,
                    decode(prompt[pos]),
                    "latent {j}: token {i} of a context"
                );
                let want = row_of(set, c.item, pos).map_or(0.0, |r| f[r][j].max(0.0));
                assert_eq!(*a, want, "latent {j}: activation of context token {i}");
            }
        }
    }

    let effect = |latent: usize| SteeringEffect {
        latent,
        model: 1,
        scale: 2.0,
        measure: "P(agree)".into(),
        items: 4,
        before: 0.5,
        after: 0.6,
    };
    let f_t = run.f.clone();
    let err = run
        .dashboard
        .add_steering(effect(64), &run.corpus, &f_t, decode, &opts.dashboard)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::IndexOutOfRange {
                index: 64,
                len: 64,
                ..
            }
        ),
        "{err}"
    );
    let unshown = (0..64)
        .find(|j| !run.dashboard.contexts.contains_key(j))
        .unwrap();
    run.dashboard
        .add_steering(effect(unshown), &run.corpus, &f_t, decode, &opts.dashboard)
        .unwrap();
    assert!(run.dashboard.contexts.contains_key(&unshown));

    let dir = tmp("cc-dashboard");
    run.save(&dir, DType::BF16).unwrap();
    let back = Dashboard::load(&dir).unwrap();
    assert_eq!(back, run.dashboard);
    let html = std::fs::read_to_string(dir.join(dict::DASHBOARD_PAGE)).unwrap();
    assert_eq!(html, back.html());
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<tr><td data-v=").count(), 64);
    assert_eq!(
        html.matches("<section id=\"latent-").count(),
        run.dashboard.contexts.len()
    );
    assert!(html.contains(&format!("<a href=\"#latent-{unshown}\">{unshown}</a>")));
    assert!(html.contains("neutral &lt;&amp;&gt;") && !html.contains("neutral <&>"));
    assert!(!html.contains("<start_of_turn>") && !html.contains("<C>"));
    // A set's text withheld: the same contexts and activations, the tokens stored nowhere.
    let hidden = Dashboard::build(
        &run.dict,
        &run.corpus,
        &run.f,
        run.latents.clone(),
        None,
        decode,
        &DashboardOptions {
            withheld: vec!["sycophancy".into()],
            ..opts.dashboard.clone()
        },
    )
    .unwrap();
    let mut n_hidden = 0;
    for (j, ctxs) in &hidden.contexts {
        for (c, shown) in ctxs.iter().zip(&run.dashboard.contexts[j]) {
            assert_eq!(
                (c.item, c.pos, &c.acts),
                (shown.item, shown.pos, &shown.acts)
            );
            assert_eq!(c.withheld, c.set == "sycophancy");
            if c.withheld {
                n_hidden += 1;
                assert!(c.tokens.iter().all(|t| t == "\u{b7}"));
            }
        }
    }
    let page = hidden.html();
    assert!(n_hidden > 0 && page.contains("(text not stored)"));
    let turn = "&lt;start_of_turn&gt;"; // only the sycophancy prompts are chat turns
    assert!(
        html.contains(turn) && !page.contains(turn),
        "withheld text shown"
    );
    let csv = std::fs::read_to_string(dir.join(dict::LATENTS_CSV)).unwrap();
    assert_eq!(csv.lines().count(), 65);
    let cc = Dictionary::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(cc.meta["model.1"], "gemma-3-270m+sycophant");
    let log: dict::DictLog =
        serde_json::from_str(&std::fs::read_to_string(dir.join(dict::TRAIN_LOG)).unwrap()).unwrap();
    assert_eq!(log.steps.len(), 60);

    // Bad dashboard files: not JSON, and contexts of a latent the table lacks.
    std::fs::write(dir.join(dict::DASHBOARD_DATA), "{").unwrap();
    let err = Dashboard::load(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Config { path, .. } if path.ends_with(dict::DASHBOARD_DATA)),
        "{err}"
    );
    let mut bad = back.clone();
    bad.latents.truncate(3);
    bad.save(&dir).unwrap();
    let err = Dashboard::load(&dir).unwrap_err();
    assert!(err.to_string().contains("contexts of latent"), "{err}");
}

/// Tokens of outlying norm ("massive activations") are left out of a paired corpus: ShareGPT
/// user turns 40-49 (the first turns `TurnFilter::default()` keeps) hold turn 48, one of whose
/// tokens has a residual norm near 53,700 at layer 8 of gemma-3-270m, ten times the median
/// (measured on the first 400 turns: median 5,587, 99.9th percentile 8,635, then two tokens at
/// 53,159 and 53,724). With the default ratio (5x the median) exactly such tokens go, listed in
/// `dropped`; without it every token stays.
#[test]
fn outlier_tokens_are_dropped_from_a_paired_corpus() {
    let (base, tok) = gemma_chat();
    let chats = puppetlens::data::load_sharegpt(puppetlens::fetch::fetch_data("sharegpt").unwrap())
        .unwrap();
    let turns = chats.first_user_turns(&puppetlens::data::TurnFilter::default());
    let prompts: Vec<Vec<u32>> = turns[40..50]
        .iter()
        .map(|t| {
            tok.encode_chat(&[puppetlens::ChatMessage::user(t)], true)
                .unwrap()
        })
        .collect();
    let sets = [PromptSet::new("sharegpt", prompts)];
    let opts = CorpusOptions {
        point: CC_POINT,
        progress: false,
        ..CorpusOptions::default()
    };
    let kept = paired_corpus(base, base, &sets, &opts).unwrap();
    let all = paired_corpus(
        base,
        base,
        &sets,
        &CorpusOptions {
            max_norm_ratio: None,
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(all.dropped.is_empty());
    eprintln!("dropped {:?} of {} tokens", kept.dropped, all.len());
    assert!(!kept.dropped.is_empty() && kept.dropped.iter().all(|s| s.item == 8));
    assert_eq!(kept.len() + kept.dropped.len(), all.len());
    let norms: Vec<f32> = all
        .acts
        .get_on_dim(1, 0)
        .unwrap()
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut sorted = norms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    for (r, s) in all.sources.iter().enumerate() {
        let gone = kept.dropped.contains(s);
        assert_eq!(
            gone,
            norms[r] > 5.0 * median,
            "{s:?}: norm {} (median {median})",
            norms[r]
        );
        if gone {
            assert!(norms[r] > 40_000.0, "{s:?}: norm {}", norms[r]);
        }
    }

    // The corpus restricted to the prompts' last positions: the same rows, in order.
    let tail = all.last_positions(3).unwrap();
    let want: Vec<usize> = (0..all.len())
        .filter(|&r| {
            let s = all.sources[r];
            s.pos + 3 >= sets[0].prompts[s.item].len()
        })
        .collect();
    assert_eq!(tail.len(), want.len());
    assert_eq!(tail.len(), 3 * 10, "3 positions of each of the 10 prompts");
    for (i, &r) in want.iter().enumerate() {
        assert_eq!(tail.sources[i], all.sources[r]);
        assert_eq!(tail.tokens[i], all.tokens[r]);
    }
    assert_eq!(
        bits(&tail.acts),
        bits(
            &all.acts
                .index_select(
                    &Tensor::new(
                        want.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                        &Device::Cpu
                    )
                    .unwrap(),
                    0
                )
                .unwrap()
        )
    );
    assert_eq!(
        bits(&tail.last_positions(1).unwrap().acts),
        bits(
            &all.acts
                .index_select(&all.last_tokens("sharegpt").unwrap(), 0)
                .unwrap()
        )
    );
    assert!(matches!(
        all.last_positions(0),
        Err(Error::InvalidArgument { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The paired corpus on disk (`paired_corpus_to_dir`, `CorpusStore`, `train_streamed`).

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Copies the files of `src` into a fresh directory `name`.
fn copy_corpus(src: &Path, name: &str) -> PathBuf {
    let dst = tmp(name);
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn assert_names(e: Error, file: &str) {
    let path = match &e {
        Error::Checkpoint { path, .. } | Error::Config { path, .. } | Error::Io { path, .. } => {
            path.clone()
        }
        other => panic!("expected an error naming {file}, got {other:?}"),
    };
    assert!(path.ends_with(file), "{e} names {}", path.display());
}

/// The corpus streamed to disk shards (ShareGPT user turns 46-49, turn 48 holding an outlier
/// token, and four sycophancy prompts; base vs sycophant at layer 8; batches of 2 prompts, shards
/// of 100 tokens) reads back bit
/// for bit as the in-memory corpus (rows, token ids, sources, dropped outliers); a killed run
/// resumes to the same corpus; training from disk is deterministic for a seed; metrics, Latent
/// Scaling, top contexts and the dashboard on disk agree with the in-memory ones; truncated or
/// corrupt files give typed errors naming the file.
#[test]
fn streamed_corpus_matches_memory_resumes_and_rejects_corrupt_files() {
    use puppetlens::dict::{
        paired_corpus_to_dir, train_streamed, CorpusStore, Dashboard, DashboardOptions,
        CORPUS_MANIFEST, CORPUS_PROMPTS,
    };
    use puppetlens::extract::StoreMeta;
    let t0 = std::time::Instant::now();
    let (base, tok) = gemma_chat();
    let syc = organism("sycophant");
    let chats = puppetlens::data::load_sharegpt(puppetlens::fetch::fetch_data("sharegpt").unwrap())
        .unwrap();
    let turns = chats.first_user_turns(&puppetlens::data::TurnFilter::default());
    let chat: Vec<Vec<u32>> = turns[46..50]
        .iter()
        .map(|t| {
            tok.encode_chat(&[puppetlens::ChatMessage::user(t)], true)
                .unwrap()
        })
        .collect();
    let cases = sycophancy_cases(&tok);
    let sets = [
        PromptSet::new("sharegpt", chat),
        PromptSet::new(
            "sycophancy",
            cases.train[..4].iter().map(|c| c.ids.clone()).collect(),
        ),
    ];
    let opts = CorpusOptions {
        point: CC_POINT,
        batch_size: 2,
        shard_tokens: 100,
        progress: false,
        ..CorpusOptions::default()
    };
    let mem = paired_corpus(base, &syc, &sets, &opts).unwrap();
    let dir = tmp("streamed-corpus");
    let meta = StoreMeta::default();
    let store = paired_corpus_to_dir(base, &syc, &sets, &opts, &dir, &meta).unwrap();
    eprintln!(
        "{} tokens ({} dropped) in {} shards; both corpora in {:.1} s",
        store.len(),
        store.dropped().len(),
        store.n_shards(),
        t0.elapsed().as_secs_f64()
    );
    assert!(store.n_shards() >= 3);
    assert!(!mem.dropped.is_empty());
    let back = store.load().unwrap();
    assert_eq!(bits(&back.acts), bits(&mem.acts));
    assert_eq!(back.tokens, mem.tokens);
    assert_eq!(back.sources, mem.sources);
    assert_eq!(back.dropped, mem.dropped);
    assert_eq!((&back.sets, &back.prompts), (&mem.sets, &mem.prompts));
    // Per-row reads, the set views, and the filter applied at reading.
    let last = mem.last_tokens("sycophancy").unwrap();
    let last_v = last.to_vec1::<u32>().unwrap();
    assert_eq!(
        store
            .last_tokens("sycophancy")
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        last_v
    );
    let rows: Vec<usize> = last_v.iter().rev().map(|&r| r as usize).collect();
    let rev = Tensor::from_vec(
        rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
        rows.len(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        bits(&store.rows(&rows).unwrap()),
        bits(&mem.acts.index_select(&rev, 0).unwrap())
    );
    assert_eq!(store.set_counts(), mem.set_counts());
    for set in [None, Some("sycophancy")] {
        let (a, b) = (store.mean_diff(set).unwrap(), mem.mean_diff(set).unwrap());
        let err = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
        let scale = b.abs().unwrap().max_all().unwrap();
        assert!(
            err.to_scalar::<f32>().unwrap() <= 1e-4 * scale.to_scalar::<f32>().unwrap(),
            "mean_diff({set:?})"
        );
    }
    let unfiltered = store.clone().with_max_norm_ratio(None).unwrap();
    assert!(unfiltered.dropped().is_empty());
    assert_eq!(unfiltered.len(), mem.len() + mem.dropped.len());

    // Training from disk: deterministic for a seed.
    let dopts = DictOptions {
        n_latents: 64,
        k: 8,
        steps: 30,
        batch_size: 64,
        stream_window: 2,
        progress: false,
        ..DictOptions::default()
    };
    let (a, la) = train_streamed(&store, &dopts, &Device::Cpu).unwrap();
    let (b, lb) = train_streamed(&store, &dopts, &Device::Cpu).unwrap();
    assert_eq!(bits(a.w_dec()), bits(b.w_dec()));
    assert_eq!(bits(a.w_enc()), bits(b.w_enc()));
    let losses = |l: &dict::DictLog| l.steps.iter().map(|s| s.loss).collect::<Vec<_>>();
    assert_eq!(losses(&la), losses(&lb));
    assert!(la.steps.last().unwrap().loss < la.steps[0].loss);

    // Downstream on disk against the same in memory, the same crosscoder.
    let (md, mm) = (
        store.evaluate(&a, 128).unwrap(),
        dict::evaluate(&a, &mem.acts, 128).unwrap(),
    );
    for i in 0..2 {
        assert!((md.fvu[i] - mm.fvu[i]).abs() < 1e-4, "{md:?} {mm:?}");
    }
    assert!((md.l0 - mm.l0).abs() < 0.05, "{md:?} {mm:?}");
    let (sd, sm) = (
        store.latents(&a, &LabelOptions::default()).unwrap(),
        dict::latents(&a, &mem.acts, &LabelOptions::default()).unwrap(),
    );
    for (x, y) in sd.iter().zip(&sm) {
        assert_eq!(x.rel_norm, y.rel_norm);
        assert!((x.frequency - y.frequency).abs() < 0.01, "{x:?} {y:?}");
    }
    let f = mem.latent_activations(&a, 128).unwrap(); // [n, 64]
    let fd = store.latent_activations(&a, 128).unwrap();
    let err = (&f - &fd).unwrap().abs().unwrap().max_all().unwrap();
    assert!(err.to_scalar::<f32>().unwrap() < 1e-3);
    let active: Vec<usize> = (0..64).filter(|&j| sm[j].frequency > 0.0).take(6).collect();
    let tops = store.top_contexts(&a, &active, 5, 8, 128).unwrap();
    for (&j, top) in active.iter().zip(&tops) {
        let want = mem.top_contexts(&f, j, 5, 8).unwrap();
        assert_eq!(top.len(), want.len());
        for (x, y) in top.iter().zip(&want) {
            assert!((x.activation - y.activation).abs() < 1e-3 * y.activation.max(1.0));
            assert_eq!(
                x.window,
                mem.prompts[x.source.set][x.source.item][..=x.source.pos]
                    [x.source.pos + 1 - x.window.len()..]
            );
        }
    }
    let dopt = DashboardOptions {
        shown: 4,
        ..DashboardOptions::default()
    };
    let decode = |t: u32| tok.decode(&[t]).unwrap_or_default();
    let dd =
        Dashboard::build_streamed(&a, &store, sd.clone(), Some(md), decode, &dopt, 128).unwrap();
    let dm = Dashboard::build(&a, &mem, &f, sm.clone(), Some(mm), decode, &dopt).unwrap();
    assert_eq!(
        dd.contexts.keys().collect::<Vec<_>>(),
        dm.contexts.keys().collect::<Vec<_>>()
    );
    assert!(dd.contexts.values().any(|c| !c.is_empty()));
    // The one call on the corpus on disk: training, metrics, table, dashboard, saved.
    let run = dict::crosscoder_on_store(
        store.clone(),
        decode,
        &dict::CrosscoderOptions {
            train: dopts.clone(),
            dashboard: dopt.clone(),
            eval_batch: 128,
            ..dict::CrosscoderOptions::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(bits(run.dict.w_dec()), bits(a.w_dec()));
    assert_eq!(run.dict.meta["hook_name"], CC_POINT.to_string());
    let out = tmp("streamed-corpus-run");
    run.save(&out, DType::F32).unwrap();
    assert_eq!(
        Dashboard::load(&out).unwrap().contexts,
        run.dashboard.contexts
    );

    // A run killed before its last shard resumes to the same corpus; other data is refused.
    let part = copy_corpus(&dir, "streamed-corpus-part");
    let mpath = part.join(CORPUS_MANIFEST);
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    let last_shard = m["shards"].as_array_mut().unwrap().pop().unwrap();
    m["median_norms"] = serde_json::Value::Null;
    std::fs::write(&mpath, m.to_string()).unwrap();
    std::fs::remove_file(part.join(last_shard["file"].as_str().unwrap())).unwrap();
    std::fs::remove_file(part.join(CORPUS_PROMPTS)).unwrap();
    assert_names(CorpusStore::open(&part).unwrap_err(), CORPUS_MANIFEST);
    let resumed = paired_corpus_to_dir(base, &syc, &sets, &opts, &part, &meta).unwrap();
    assert_eq!(bits(&resumed.load().unwrap().acts), bits(&mem.acts));
    assert_eq!(resumed.dropped(), mem.dropped.as_slice());
    let e = paired_corpus_to_dir(base, &syc, &sets[..1], &opts, &dir, &meta).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");

    // Truncated or corrupt files: typed errors naming the file.
    let shard = |s: usize| format!("shard-{s:05}.safetensors");
    let d = copy_corpus(&dir, "streamed-corpus-truncated");
    let f1 = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join(shard(1)))
        .unwrap();
    let len = f1.metadata().unwrap().len();
    f1.set_len(len / 2).unwrap();
    assert_names(CorpusStore::open(&d).unwrap_err(), &shard(1));
    // Truncated after opening: the read names it, and so does training.
    let d = copy_corpus(&dir, "streamed-corpus-late");
    let opened = CorpusStore::open(&d).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.join(shard(0)))
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_names(opened.shard(0).unwrap_err(), &shard(0));
    assert_names(
        train_streamed(&opened, &dopts, &Device::Cpu).unwrap_err(),
        &shard(0),
    );
    let d = copy_corpus(&dir, "streamed-corpus-header");
    let mut bytes = std::fs::read(d.join(shard(2))).unwrap();
    bytes[8..24].copy_from_slice(b"{\"acts\":{\"dtype\"");
    bytes[24..40].fill(b'!');
    std::fs::write(d.join(shard(2)), bytes).unwrap();
    assert_names(CorpusStore::open(&d).unwrap_err(), &shard(2));
    let d = copy_corpus(&dir, "streamed-corpus-missing");
    std::fs::remove_file(d.join(shard(2))).unwrap();
    assert_names(CorpusStore::open(&d).unwrap_err(), &shard(2));
    let d = copy_corpus(&dir, "streamed-corpus-manifest");
    std::fs::write(
        d.join(CORPUS_MANIFEST),
        "{\"format\": \"puppetlens.paired_c",
    )
    .unwrap();
    assert_names(CorpusStore::open(&d).unwrap_err(), CORPUS_MANIFEST);
    let d = copy_corpus(&dir, "streamed-corpus-prompts");
    std::fs::write(d.join(CORPUS_PROMPTS), b"\x08\0\0\0\0\0\0\0{}").unwrap();
    assert_names(CorpusStore::open(&d).unwrap_err(), CORPUS_PROMPTS);
    eprintln!("done in {:.1} s", t0.elapsed().as_secs_f64());
}
