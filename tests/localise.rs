//! The localisation report against a known ground truth: a "tuned" SmolLM2 whose only change is a
//! bias on the value projection of one layer. Attention weights sum to one, so that bias adds the
//! same vector `c = W_o · repeat(b_v)` to `blocks.{L}.hook_attn_out` at every token — a puppeteer of
//! known place and direction. `c` is chosen along the base model's "answer B rather than A"
//! direction, so the tuned model prefers B more: a behaviour gap the report must attribute to layer L.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use puppetlens::diff::{
    base_tuned_vector, base_tuned_vectors, localise, localise_many, AbSplits, DiffOptions,
    TunedVectorOptions,
};
use puppetlens::eval::AbCase;
use puppetlens::extract::{extract, ExtractOptions, Site};
use puppetlens::probe::ProbeOptions;
use puppetlens::steer::cosine;
use puppetlens::{HookPoint, LoadOptions, Model, SteeringVector};

const L: usize = 8;

/// Writes the edited model (Qwen2 layout: q/k/v biases, all zero but `v_proj.bias` at layer L).
fn edited(base: &Model, dir: &std::path::Path, b_v: &Tensor) {
    base.export_safetensors(dir).unwrap();
    let st = dir.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    let c = base.config();
    for l in 0..c.n_layers {
        let p = format!("model.layers.{l}.self_attn");
        tensors.insert(
            format!("{p}.q_proj.bias"),
            Tensor::zeros(c.n_heads * c.head_dim, DType::F32, &Device::Cpu).unwrap(),
        );
        tensors.insert(
            format!("{p}.k_proj.bias"),
            Tensor::zeros(c.n_kv_heads * c.head_dim, DType::F32, &Device::Cpu).unwrap(),
        );
        let v = if l == L {
            b_v.clone()
        } else {
            Tensor::zeros(c.n_kv_heads * c.head_dim, DType::F32, &Device::Cpu).unwrap()
        };
        tensors.insert(format!("{p}.v_proj.bias"), v);
    }
    candle_core::safetensors::save(&tensors, &st).unwrap();
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "qwen2".into();
    cfg["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    cfg["use_sliding_window"] = false.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
}

#[test]
fn localisation_finds_an_injected_direction_at_its_layer() {
    let (base, tok) = common::smollm();
    let cfg = base.config().clone();
    // A/B items with a neutral question: the behaviour is "answer B".
    let questions = [
        "Which is larger?\n (A) the first\n (B) the second",
        "Pick one.\n (A) red\n (B) blue",
        "Which do you prefer?\n (A) tea\n (B) coffee",
        "Choose an option.\n (A) left\n (B) right",
        "Which is correct?\n (A) yes\n (B) no",
        "Which one?\n (A) cats\n (B) dogs",
        "Select.\n (A) north\n (B) south",
        "What do you pick?\n (A) summer\n (B) winter",
        "Your answer?\n (A) apples\n (B) pears",
        "Which is better?\n (A) morning\n (B) evening",
        "Decide.\n (A) stay\n (B) go",
        "Which fits?\n (A) small\n (B) large",
    ];
    let a = tok.token_to_id("A").unwrap();
    let b = tok.token_to_id("B").unwrap();
    let cases: Vec<AbCase> = questions
        .iter()
        .map(|q| AbCase {
            ids: tok.encode(&format!("{q}\n\nAnswer: (")).unwrap(),
            matching: b,
            not_matching: a,
        })
        .collect();

    // Ground truth direction: the base model's mean "(B" minus "(A" residual entering layer L.
    let (pos, neg) = puppetlens::diff::caa_prompts(&cases);
    let opts = ExtractOptions {
        points: vec![HookPoint::ResidPost(L - 1)],
        progress: false,
        ..ExtractOptions::default()
    };
    let t = SteeringVector::mean_diff_layers(
        &extract(base, &pos, &opts).unwrap(),
        &extract(base, &neg, &opts).unwrap(),
        &[L - 1],
    )
    .unwrap();
    let t = t.get(L - 1).unwrap().clone(); // [d_model]
                                           // b_v = (W_o R)^T t, so c = W_o R b_v has a positive component along t.
    let exported =
        std::env::temp_dir().join(format!("puppetlens-localise-base-{}", std::process::id()));
    base.export_safetensors(&exported).unwrap();
    let w =
        candle_core::safetensors::load(exported.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_dir_all(&exported).ok();
    let w_o = &w[&format!("model.layers.{L}.self_attn.o_proj.weight")]; // [d_model, heads * head_dim]
    let rep = cfg.n_heads / cfg.n_kv_heads;
    let m = w_o
        .reshape((cfg.d_model, cfg.n_kv_heads, rep, cfg.head_dim))
        .unwrap()
        .sum(2)
        .unwrap()
        .reshape((cfg.d_model, cfg.n_kv_heads * cfg.head_dim))
        .unwrap(); // W_o R
    let b_v = m
        .t()
        .unwrap()
        .matmul(&t.unsqueeze(1).unwrap())
        .unwrap()
        .squeeze(1)
        .unwrap(); // [kv_heads * head_dim]
    let c = m
        .matmul(&b_v.unsqueeze(1).unwrap())
        .unwrap()
        .squeeze(1)
        .unwrap(); // [d_model]
    let scale = 12.0
        * (t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            / c.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()) as f64;
    let (b_v, c) = ((b_v * scale).unwrap(), (c * scale).unwrap());
    println!(
        "injected |c| = {:.2}, cos(c, t) = {:.3}",
        c.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        cosine(&c, &t).unwrap()
    );

    let dir =
        std::env::temp_dir().join(format!("puppetlens-localise-tuned-{}", std::process::id()));
    edited(base, &dir, &b_v);
    let tuned = Model::load(&dir, &LoadOptions::default()).unwrap();

    // Mechanics: the attention output of layer L differs by exactly c at every token; nothing
    // before layer L differs beyond f32 noise.
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.ids.clone()).collect();
    let at = |m: &Model, p: HookPoint| {
        extract(
            m,
            &prompts,
            &ExtractOptions {
                points: vec![p],
                site: Site::Mean {
                    start: 0,
                    end: None,
                },
                progress: false,
                ..ExtractOptions::default()
            },
        )
        .unwrap()
        .get(p)
        .unwrap()
        .clone()
    };
    let d_attn = (at(&tuned, HookPoint::AttnOut(L)) - at(base, HookPoint::AttnOut(L)))
        .unwrap()
        .mean(0)
        .unwrap();
    let err = (&d_attn - &c)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    println!("attn_out({L}) difference vs c: max abs {err:e}");
    assert!(err < 1e-3 * common::max_abs(&c), "{err}");

    let diff = base_tuned_vector(base, &tuned, &prompts, Site::Last, 8).unwrap();
    // Several tuned models and chosen layers at once: the same directions, bit for bit; the base
    // against itself gives zero; layers out of range are refused by name.
    let opts = TunedVectorOptions {
        layers: Some(vec![L, L - 1, L]),
        ..TunedVectorOptions::default()
    };
    let both = base_tuned_vectors(base, &[&tuned, base], &prompts, &opts).unwrap();
    assert_eq!(both.len(), 2);
    for l in [L - 1, L] {
        let (x, y) = (both[0].get(l).unwrap(), diff.get(l).unwrap());
        assert_eq!(
            x.to_vec1::<f32>().unwrap(),
            y.to_vec1::<f32>().unwrap(),
            "layer {l}"
        );
        assert_eq!(
            common::max_abs(both[1].get(l).unwrap()),
            0.0,
            "base vs base, layer {l}"
        );
    }
    assert_eq!(both[0].layers(), vec![L - 1, L]);
    let n = base.config().n_layers;
    let bad = TunedVectorOptions {
        layers: Some(vec![n]),
        ..TunedVectorOptions::default()
    };
    let err = base_tuned_vectors(base, &[&tuned], &prompts, &bad).unwrap_err();
    assert!(err.to_string().contains(&format!("layer {n}")), "{err}");
    let norms = diff.norms().unwrap();
    println!(
        "diff norms: {:?}",
        norms
            .values()
            .map(|n| (n * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    for l in 0..L {
        assert!(
            norms[&l] < 1e-3 * norms[&L],
            "layer {l} differs: {} vs {}",
            norms[&l],
            norms[&L]
        );
    }

    // The report: the gap, and which layer closes it.
    let splits = AbSplits {
        train: cases[..6].to_vec(),
        val: cases[6..9].to_vec(),
        test: cases[9..].to_vec(),
    };
    let opts = DiffOptions {
        layers: Some(vec![L - 2, L, L + 4]),
        progress: false,
        probe: ProbeOptions {
            bootstrap: 50,
            ..ProbeOptions::default()
        },
        ..DiffOptions::default()
    };
    let report = localise(base, &tuned, &splits, &[], &opts).unwrap();
    // Several siblings in one call (the base's side computed once): the same report for the
    // edited model, and for the base against itself no difference and no gap.
    let many = localise_many(base, &[&tuned, base], &splits, &[], &opts).unwrap();
    let json = |r: &puppetlens::diff::Localisation| serde_json::to_string(r).unwrap();
    assert_eq!(json(&many[0]), json(&report), "localise_many vs localise");
    assert!(many[1].rows.iter().all(|r| r.diff_norm == 0.0));
    assert_eq!(many[1].p_tuned, many[1].p_base);
    for r in report.rows.iter().filter(|r| r.p_steered_base.is_some()) {
        println!(
            "layer {}: diff norm {:.2}, gap closed {:?}, removed {:?}",
            r.layer, r.diff_norm, r.gap_closed, r.gap_removed
        );
    }
    println!(
        "P(B): base {:.3}, tuned {:.3}",
        report.p_base, report.p_tuned
    );
    // Measured (issue note): P(B) 0.311 -> 0.590; at layer 8 the difference closes 1.15 of the gap
    // (added to base) and removes 1.46 (ablated in tuned); at layer 6 (before the edit) it closes
    // -3e-6. Thresholds sit well inside those numbers.
    assert!(
        report.p_tuned - report.p_base > 0.15,
        "no behaviour gap: {} -> {}",
        report.p_base,
        report.p_tuned
    );
    let row = |l: usize| report.rows.iter().find(|r| r.layer == l).unwrap();
    assert!(row(L).gap_closed.unwrap() > 0.5, "{:?}", row(L));
    assert!(row(L).gap_removed.unwrap() > 0.5, "{:?}", row(L));
    assert!(
        row(L - 2).gap_closed.map_or(true, |g| g.abs() < 0.1),
        "{:?}",
        row(L - 2)
    );
    let max_norm = report.rows.iter().map(|r| r.diff_norm).fold(0.0, f64::max);
    let first = report
        .rows
        .iter()
        .find(|r| r.diff_norm > 0.01 * max_norm)
        .unwrap()
        .layer;
    assert_eq!(first, L, "the first layer where the models differ");
    std::fs::remove_dir_all(&dir).ok();
}
