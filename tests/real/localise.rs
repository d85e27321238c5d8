//! The localisation report against a known ground truth: a "tuned" SmolLM2 whose only change is a
//! bias on the value projection of one layer. Attention weights sum to one, so that bias adds the
//! same vector `c = W_o · repeat(b_v)` to `blocks.{L}.hook_attn_out` at every token — a puppeteer of
//! known place and direction. `c` is chosen along the base model's "answer B rather than A"
//! direction, so the tuned model prefers B more: a behaviour gap the report must attribute to layer L.

use crate::common;

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
    edited_at(base, dir, L, b_v)
}

/// [`edited`] with the value bias at `layer`.
fn edited_at(base: &Model, dir: &std::path::Path, layer: usize, b_v: &Tensor) {
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
        let v = if l == layer {
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

/// The value bias `b_v = (W_o R)^T t` (R repeats the kv heads for the query heads) and the vector
/// `c = W_o R b_v` it adds to the attention output at every token (attention weights sum to one),
/// which has a positive component along `t`.
fn value_bias_towards(w_o: &Tensor, cfg: &puppetlens::Config, t: &Tensor) -> (Tensor, Tensor) {
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
    (b_v, c)
}

/// The injected puppeteer: A/B items whose behaviour is "answer B", the value bias `b_v` of layer
/// L along the base model's "B rather than A" direction entering layer L, and the vector
/// `c = W_o R b_v` it adds to `blocks.{L}.hook_attn_out` at every token (12 |t| long).
struct Injected {
    cases: Vec<AbCase>,
    b_v: Tensor,
    c: Tensor,
    /// The base model's weights in Hugging Face names.
    weights: HashMap<String, Tensor>,
}

fn injected() -> Injected {
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
        // Held out for the patching test (the direction and the report use the first twelve).
        "Which is warmer?\n (A) ice\n (B) fire",
        "Pick a drink.\n (A) water\n (B) juice",
        "Which sounds nicer?\n (A) drums\n (B) violin",
        "Choose a pet.\n (A) fish\n (B) bird",
        "Which is faster?\n (A) walking\n (B) running",
        "Pick a colour.\n (A) green\n (B) yellow",
        "Which do you want?\n (A) bread\n (B) rice",
        "Choose a season.\n (A) spring\n (B) autumn",
        "Which is heavier?\n (A) a feather\n (B) a stone",
        "Pick a number.\n (A) three\n (B) seven",
        "Which is older?\n (A) the town\n (B) the city",
        "Choose a place.\n (A) the beach\n (B) the mountains",
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
    let (pos, neg) = puppetlens::diff::caa_prompts(&cases[..12]);
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
    let (b_v, c) = value_bias_towards(w_o, &cfg, &t);
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
    let _ = tok;
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

    Injected {
        cases,
        b_v,
        c,
        weights: w,
    }
}

#[test]
fn localisation_finds_an_injected_direction_at_its_layer() {
    let (base, _) = common::smollm();
    let Injected { cases, b_v, c, .. } = injected();
    let dir =
        std::env::temp_dir().join(format!("puppetlens-localise-tuned-{}", std::process::id()));
    edited(base, &dir, &b_v);
    let tuned = Model::load(&dir, &LoadOptions::default()).unwrap();

    // Mechanics: the attention output of layer L differs by exactly c at every token; nothing
    // before layer L differs beyond f32 noise.
    let prompts: Vec<Vec<u32>> = cases[..12].iter().map(|c| c.ids.clone()).collect();
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

/// Cross-model patching on two puppeteers of known place and rank: the value bias above (rank 1,
/// a constant vector at `blocks.8.hook_attn_out`), and the same bias plus a rank-2 edit of layer
/// 8's output projection that adds zero-mean, high-variance noise along two directions
/// orthogonal to it (rank 3: the two noise directions carry more of the difference's squared
/// norm than the behaviour's direction, so the top two principal directions do not drive the
/// behaviour and the rank finder must reach k = 3).
#[test]
fn patching_finds_injected_puppeteers_and_their_rank() {
    // Second moment of each noise coefficient, in units of |c3|^2.
    const NOISE: f64 = 1.5;
    use puppetlens::patch::{patching, Family, PatchOptions, VerdictKind};
    let (base, _) = common::smollm();
    let cfg = base.config().clone();
    let Injected {
        cases,
        b_v,
        weights,
        ..
    } = injected();
    // A third of the localisation test's push: a clear gap with less collateral damage (at the
    // full push P(B) rises to 0.604, at a third to 0.622; random directions then move P less).
    let b_v = (b_v / 3.0).unwrap();
    let splits = AbSplits {
        train: cases[..12].to_vec(),
        val: Vec::new(),
        test: cases[12..].to_vec(),
    };
    let opts = PatchOptions {
        family: Family::AttnOut,
        layers: Some(vec![L - 2, L]),
        ranks: vec![1, 2, 3, 4],
        rank_layers: Some(vec![L]),
        random_seeds: 2,
        positions: 3,
        bootstrap: 200,
        progress: false,
        ..PatchOptions::default()
    };
    let dir1 = std::env::temp_dir().join(format!("puppetlens-patch-rank1-{}", std::process::id()));
    edited(base, &dir1, &b_v);
    let t1 = Model::load(&dir1, &LoadOptions::default()).unwrap();
    let r1 = patching(base, &t1, &splits, &opts).unwrap();
    let show = |name: &str, r: &puppetlens::patch::Patching| {
        println!("{name}: P(B) base {:.3} tuned {:.3}", r.p_base, r.p_tuned);
        for l in &r.layers {
            println!(
                "  layer {}: full {:?} last {:?} rank1 {:?} random1 {:?} noise {:?}",
                l.layer,
                l.full.fraction,
                l.last.fraction,
                l.rank1.fraction,
                l.random1.fraction,
                l.noise_full.fraction
            );
        }
        for cv in &r.ranks {
            for p in &cv.points {
                println!(
                    "  rank curve layer {} k={}: of full {:.3}, variance {:.3}, random {:.3} +/- {:.3}",
                    cv.layer, p.k, p.of_full, p.variance, p.random_of_full, p.random_spread
                );
            }
        }
        println!("  verdict: {}", r.verdict.reading);
    };
    show("rank 1", &r1);
    let curve = &r1.ranks[0];
    let of = |cv: &puppetlens::patch::RankCurve, k: usize| {
        cv.points.iter().find(|p| p.k == k).unwrap().clone()
    };
    assert!(r1.p_tuned - r1.p_base > 0.15, "no gap");
    assert_eq!(r1.verdict.best_layer, Some(L));
    let row = |r: &puppetlens::patch::Patching, l: usize| {
        r.layers.iter().find(|x| x.layer == l).unwrap().clone()
    };
    assert!(
        row(&r1, L).full.fraction.unwrap() > 0.95,
        "{:?}",
        row(&r1, L).full
    );
    assert!(row(&r1, L).noise_full.fraction.unwrap() > 0.95);
    assert!(row(&r1, L - 2).full.fraction.unwrap().abs() < 0.05);
    assert_eq!((curve.rank50, curve.rank80), (Some(1), Some(1)));
    assert!(
        of(curve, 1).random_of_full.abs() < 0.2,
        "{:?}",
        of(curve, 1)
    );
    assert_eq!(r1.verdict.kind, VerdictKind::Puppeteer);
    // The plain layer sweep runs the same engine: its cells are the report's (the report stacks
    // four subspace patches as rows of one batch, the plain sweep one: float rounding apart).
    let plain = puppetlens::patch::patch_layers(
        base,
        &t1,
        &splits.test,
        Family::AttnOut,
        &[L - 2, L],
        3,
        8,
    )
    .unwrap();
    let mean_p = |s: &[puppetlens::eval::AbScore]| {
        s.iter().map(|x| x.p_matching).sum::<f64>() / s.len() as f64
    };
    assert_eq!(mean_p(&plain.base), r1.p_base);
    assert_eq!(mean_p(&plain.tuned), r1.p_tuned);
    for (i, l) in [L - 2, L].into_iter().enumerate() {
        assert!((mean_p(&plain.full[i]) - row(&r1, l).full.p).abs() < 1e-5);
        assert_eq!(plain.positions[i].len(), 3);
        assert!((mean_p(&plain.positions[i][0]) - row(&r1, l).last.p).abs() < 1e-5);
        for (o, cells) in plain.positions[i].iter().enumerate() {
            let dp = mean_p(cells) - r1.p_base;
            assert!(
                (dp - r1.positions.delta_p[i][o]).abs() < 1e-5,
                "layer {l}, offset {o}"
            );
        }
    }
    let too_many = splits.test.iter().map(|c| c.ids.len()).min().unwrap() + 1;
    let e = puppetlens::patch::patch_layers(
        base,
        &t1,
        &splits.test,
        Family::AttnOut,
        &[L],
        too_many,
        8,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("positions"), "{e}");

    // Rank 3, at the last block (L3), where nothing but the final norm and the unembedding reads
    // the residual: a value bias adds c3 along the final norm's view of W_U[B] - W_U[A] (the
    // behaviour), and a rank-2 edit of the output projection adds noise along u1, u2 (orthonormal,
    // orthogonal to c3 and to the readout) with coefficients g_i . attn_out, g_i orthogonal to the
    // mean attention output so that they have mean zero, and E[(g_i . attn_out)^2] = NOISE |c3|^2.
    // The noise carries more of the difference's squared norm than c3 but moves no answer: the top
    // two principal directions restore nothing, the top three everything.
    let l3 = cfg.n_layers - 1;
    let (a_id, b_id) = (cases[0].not_matching, cases[0].matching);
    let emb = &weights["model.embed_tokens.weight"]; // [vocab, d] (tied unembedding)
    let gamma = &weights["model.norm.weight"]; // [d]
    let w_read = ((emb.get(b_id as usize).unwrap() - emb.get(a_id as usize).unwrap()).unwrap()
        * gamma)
        .unwrap(); // [d]
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.ids.clone()).collect();
    let (mut rows, mut rms) = (Vec::new(), 0f64);
    for p in &prompts {
        let batch = puppetlens::Batch::single(p).unwrap();
        let cache = base
            .cache(&batch, |q| {
                q == HookPoint::AttnOut(l3) || q == HookPoint::ResidPost(l3)
            })
            .unwrap();
        rows.push(
            cache
                .require(HookPoint::AttnOut(l3))
                .unwrap()
                .squeeze(0)
                .unwrap(),
        ); // [s, d]
        let last = cache
            .require(HookPoint::ResidPost(l3))
            .unwrap()
            .get(0)
            .unwrap()
            .get(p.len() - 1)
            .unwrap(); // [d]
        rms += last
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
    }
    let rms = rms / prompts.len() as f64;
    let norm = |v: &Tensor| {
        v.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let dot = |a: &Tensor, b: &Tensor| {
        (a * b)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let wo_name = format!("model.layers.{l3}.self_attn.o_proj.weight");
    let w_o = &weights[&wo_name]; // [d, heads * head_dim]
    let (b3, c3) = value_bias_towards(w_o, &cfg, &w_read);
    // Sized to move the last token's logit difference by about 2 nats.
    let k = 2.0 * rms / dot(&c3, &w_read) as f64;
    let (b3, c3) = ((b3 * k).unwrap(), (c3 * k).unwrap());
    let x = Tensor::cat(&rows, 0)
        .unwrap()
        .broadcast_add(&c3.unsqueeze(0).unwrap())
        .unwrap(); // [tokens, d]: the edited model's attention output before the noise
    let mu = x.mean(0).unwrap(); // [d]
    let xc = x.broadcast_sub(&mu.unsqueeze(0).unwrap()).unwrap(); // [tokens, d]
    let mut rng = puppetlens::data::SplitMix64::new(5);
    let mut random = || {
        let v: Vec<f32> = (0..cfg.d_model)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        Tensor::from_vec(v, cfg.d_model, &Device::Cpu).unwrap()
    };
    let orth = |mut v: Tensor, against: &[&Tensor]| {
        for _ in 0..2 {
            for a in against {
                let k = dot(&v, a) / dot(a, a);
                v = (&v - (*a * k as f64).unwrap()).unwrap();
            }
        }
        let n = norm(&v) as f64;
        (v / n).unwrap()
    };
    let u1 = orth(random(), &[&c3, &w_read]);
    let u2 = orth(random(), &[&c3, &w_read, &u1]);
    let g1 = orth(random(), &[&mu]);
    let g2 = orth(random(), &[&mu, &g1]);
    let c2 = (norm(&c3) as f64).powi(2);
    let scaled = |g: Tensor| {
        let var = xc
            .matmul(&g.unsqueeze(1).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        (g * (NOISE * c2 / var).sqrt()).unwrap()
    };
    let (g1, g2) = (scaled(g1), scaled(g2));
    println!("rank 3 at layer {l3}: |c3| = {:.2}, final rms {rms:.2}, noise variance {NOISE} |c3|^2 per direction", norm(&c3));
    let u = Tensor::stack(&[&u1, &u2], 1).unwrap(); // [d, 2]
    let g = Tensor::stack(&[&g1, &g2], 0).unwrap(); // [2, d]
    let w_new = (w_o + u.matmul(&g).unwrap().matmul(w_o).unwrap()).unwrap();
    let dir3 = std::env::temp_dir().join(format!("puppetlens-patch-rank3-{}", std::process::id()));
    edited_at(base, &dir3, l3, &b3);
    let st = dir3.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    tensors.insert(wo_name, w_new);
    candle_core::safetensors::save(&tensors, &st).unwrap();
    let t3 = Model::load(&dir3, &LoadOptions::default()).unwrap();
    let r3 = patching(
        base,
        &t3,
        &splits,
        &PatchOptions {
            layers: Some(vec![l3]),
            rank_layers: Some(vec![l3]),
            positions: 3,
            ..opts.clone()
        },
    )
    .unwrap();
    show("rank 3", &r3);
    let curve = &r3.ranks[0];
    assert!(r3.p_tuned - r3.p_base > 0.15, "no gap");
    assert!(row(&r3, l3).full.fraction.unwrap() > 0.95);
    // The position maps: at the last block only the last position is read (its attention output
    // at earlier positions feeds nothing the answer depends on), so patching the last position
    // restores (denoising) and removes (noising) the whole gap, and any earlier position nothing.
    let m = &r3.positions;
    println!(
        "  positions at layer {l3}: denoising {:?}, noising {:?}",
        m.fraction, m.noise_fraction
    );
    for (map, what) in [(&m.fraction, "denoising"), (&m.noise_fraction, "noising")] {
        let row = &map.as_ref().expect("gap large enough")[0];
        assert!(row[0] > 0.95, "{what}, last position: {row:?}");
        assert!(
            row[1..].iter().all(|x| x.abs() < 0.05),
            "{what}, earlier positions: {row:?}"
        );
    }
    assert_eq!(m.noise_delta_p[0][0], row(&r3, l3).noise_last.delta_p);
    for k in [1, 2] {
        assert!(
            of(curve, k).of_full.abs() < 0.2,
            "k = {k}: {:?}",
            of(curve, k)
        );
    }
    assert!(of(curve, 3).of_full > 0.95, "{:?}", of(curve, 3));
    assert_eq!((curve.rank50, curve.rank80), (Some(3), Some(3)));
    assert!(
        of(curve, 3).random_of_full.abs() < 0.2,
        "{:?}",
        of(curve, 3)
    );

    // Patching a model with its own activations changes nothing: bit for bit where the patched
    // forward resumes from the cached residual, within float rounding where a single position
    // reuses the cached keys and values.
    let own = patching(
        base,
        base,
        &splits,
        &PatchOptions {
            layers: Some(vec![L]),
            rank_layers: Some(vec![]),
            positions: 2,
            ..opts.clone()
        },
    )
    .unwrap();
    let r = &own.layers[0];
    for e in [&r.full, &r.rank1, &r.mean_diff, &r.random1, &r.noise_full] {
        assert_eq!(e.delta_p, 0.0, "{e:?}");
    }
    for e in [&r.last, &r.noise_last] {
        assert!(e.delta_p.abs() < 1e-6, "{e:?}");
    }
    let m = &own.positions;
    for x in m.delta_p.iter().chain(&m.noise_delta_p).flatten() {
        assert!(x.abs() < 1e-6, "own activations at one position: {x}");
    }
    // Batched equals one by one.
    let one = PatchOptions {
        layers: Some(vec![L]),
        rank_layers: Some(vec![]),
        positions: 2,
        ..opts.clone()
    };
    let a = patching(
        base,
        &t1,
        &splits,
        &PatchOptions {
            batch_size: 1,
            ..one.clone()
        },
    )
    .unwrap();
    // The rank-1 run above had batches of 8.
    let (ra, rb) = (&a.layers[0], &row(&r1, L));
    for (x, y) in [
        (&ra.full, &rb.full),
        (&ra.last, &rb.last),
        (&ra.rank1, &rb.rank1),
        (&ra.random1, &rb.random1),
        (&ra.noise_last, &rb.noise_last),
    ] {
        assert!(
            (x.p - y.p).abs() < 1e-5 && (x.logit_diff - y.logit_diff).abs() < 1e-4,
            "{x:?} vs {y:?}"
        );
    }

    // Bad input: typed errors naming what is wrong.
    let err = |o: PatchOptions, s: &AbSplits| patching(base, &t1, s, &o).unwrap_err().to_string();
    let n = cfg.n_layers;
    assert!(err(
        PatchOptions {
            layers: Some(vec![n]),
            ..one.clone()
        },
        &splits
    )
    .contains(&format!("layer {n}")));
    let e = err(
        PatchOptions {
            ranks: vec![cfg.d_model + 1],
            ..one.clone()
        },
        &splits,
    );
    assert!(
        e.contains("ranks") && e.contains(&format!("{}", cfg.d_model + 1)),
        "{e}"
    );
    let few = AbSplits {
        test: splits.test[..3].to_vec(),
        ..splits.clone()
    };
    let e = err(one.clone(), &few);
    assert!(
        e.contains("3 held-out items") && e.contains("at least"),
        "{e}"
    );
    let (gemma, _) = common::gemma();
    let e = patching(base, gemma, &splits, &one)
        .unwrap_err()
        .to_string();
    assert!(e.contains("base and tuned"), "{e}");
    std::fs::remove_dir_all(&dir1).ok();
    std::fs::remove_dir_all(&dir3).ok();
}
