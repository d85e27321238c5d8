//! The probing / steering / diffing pipeline on the real checkpoints. Thresholds come from the
//! measurements recorded in the issue notes (2-core CPU, f32, seeds and splits as committed).

mod common;

use puppetlens::data::{self, PromptFormat};
use puppetlens::diff::{localise, AbSplits, DiffOptions};
use puppetlens::eval::{ab_summary, dose_response, AbCase, Intervention};
use puppetlens::extract::{extract, ExtractOptions, Site};
use puppetlens::probe::{sweep, ProbeOptions};
use puppetlens::{Error, Model, SteeringVector, Tokenizer};

fn manifest(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn labeled_prompts(
    tok: &Tokenizer,
    items: &[data::Labeled],
    fmt: &PromptFormat,
) -> (Vec<Vec<u32>>, Vec<bool>) {
    (
        items
            .iter()
            .map(|x| data::text_prompt(tok, &x.text, fmt).unwrap())
            .collect(),
        items.iter().map(|x| x.label).collect(),
    )
}

fn ab_cases(tok: &Tokenizer, items: &[data::AbItem], fmt: &PromptFormat) -> Vec<AbCase> {
    items
        .iter()
        .map(|it| {
            let p = data::ab_prompt(tok, it, fmt).unwrap();
            AbCase {
                matching: p.matching_id(),
                not_matching: p.not_matching_id(),
                ids: p.ids,
            }
        })
        .collect()
}

fn resid(model: &Model, prompts: &[Vec<u32>]) -> Vec<candle_core::Tensor> {
    let opts = ExtractOptions {
        progress: false,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    extract(model, prompts, &opts)
        .unwrap()
        .layers(model.config().n_layers)
        .unwrap()
}

/// Measured (issue note): test accuracy 40-48% in layers 0-8, 70-74% in layers 11-15, 50-60% at the
/// end; the layer chosen on validation (12) scores 62.8% on the 86 test statements, bootstrap 95%
/// interval 52.3-73.3%.
#[test]
fn smollm2_true_false_probe_beats_chance_and_varies_with_depth() {
    let (model, tok) = common::smollm();
    let s =
        data::load_with_split(manifest("probes/true_false.csv"), data::load_labeled_csv).unwrap();
    let (ptr, ytr) = labeled_prompts(tok, &s.train, &PromptFormat::Plain);
    let (pva, yva) = labeled_prompts(tok, &s.val, &PromptFormat::Plain);
    let (pte, yte) = labeled_prompts(tok, &s.test, &PromptFormat::Plain);
    let report = sweep(
        &resid(model, &ptr),
        &ytr,
        &resid(model, &pva),
        &yva,
        &resid(model, &pte),
        &yte,
        &ProbeOptions::default(),
    )
    .unwrap();
    let acc: Vec<f64> = report.iter().map(|r| r.test.accuracy).collect();
    println!(
        "test accuracy per layer: {:?}",
        acc.iter()
            .map(|a| (a * 1000.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let best = report
        .iter()
        .max_by(|a, b| {
            a.val
                .accuracy
                .total_cmp(&b.val.accuracy)
                .then(b.layer.cmp(&a.layer))
        })
        .unwrap();
    println!(
        "best layer by validation: {} test {:.3} CI {:?}",
        best.layer, best.test.accuracy, best.test.accuracy_ci
    );
    // Beats chance clearly: the whole bootstrap interval of the held-out accuracy lies above 0.5.
    assert!(best.test.accuracy_ci.0 > 0.5, "{:?}", best.test.accuracy_ci);
    // Varies with depth: the best and worst layers differ by far more than the ~10-point CI half-width.
    let (lo, hi) = acc
        .iter()
        .fold((1f64, 0f64), |(lo, hi), a| (lo.min(*a), hi.max(*a)));
    assert!(hi - lo > 0.2, "accuracy range {lo}..{hi}");
    // Early layers cannot know the truth of a statement from its last token ('.') yet.
    assert!(acc[..4].iter().all(|a| *a < 0.6), "{acc:?}");
}

/// gemma-3-270m (the base side of the base/tuned pair): extraction, CAA vector, probes, dose-response
/// and the localisation report run end to end on a small slice (plain prompts; the model has no chat
/// template). The pair here is (base, base), so every difference is zero and no gap exists.
#[test]
fn gemma3_pipeline_runs_end_to_end() {
    let (model, tok) = common::gemma();
    let s =
        data::load_with_split(manifest("probes/sycophancy_ab.jsonl"), data::load_ab_json).unwrap();
    let take = |v: &[data::AbItem], n: usize| ab_cases(tok, &v[..n], &PromptFormat::Plain);
    let splits = AbSplits {
        train: take(&s.train, 12),
        val: take(&s.val, 8),
        test: take(&s.test, 8),
    };
    let (pos, neg) = puppetlens::diff::caa_prompts(&splits.train);
    let n_layers = model.config().n_layers;
    let opts = ExtractOptions {
        progress: false,
        ..ExtractOptions::resid_post(model, Site::Last)
    };
    let v = SteeringVector::mean_diff(
        &extract(model, &pos, &opts).unwrap(),
        &extract(model, &neg, &opts).unwrap(),
        n_layers,
    )
    .unwrap();
    assert_eq!(v.layers().len(), n_layers);
    let base = ab_summary(model, &splits.test, &Intervention::None, 8).unwrap();
    assert!(base.mean_p.is_finite() && base.mean_p > 0.0 && base.mean_p < 1.0);
    let rows = dose_response(model, &splits.test, &v, &[n_layers / 2], &[-4.0, 4.0], 8).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.summary.mean_p.is_finite()));
    let report = localise(
        model,
        model,
        &splits,
        &[tok.encode("The weather today is").unwrap()],
        &DiffOptions {
            layers: Some(vec![n_layers / 2]),
            progress: false,
            probe: ProbeOptions {
                bootstrap: 100,
                ..ProbeOptions::default()
            },
            ..DiffOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.rows.len(), n_layers);
    for r in &report.rows {
        assert_eq!(
            r.diff_norm, 0.0,
            "identical models differ at layer {}",
            r.layer
        );
        assert!(r.probe_acc_base.is_finite() && r.probe_transfer == r.probe_acc_base);
        assert!(
            r.gap_closed.is_none(),
            "no gap to close between identical models"
        );
    }
    let dir = std::env::temp_dir().join(format!("puppetlens-localise-{}", std::process::id()));
    report.write(&dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("localisation.json")).unwrap())
            .unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), n_layers);
    let csv = std::fs::read_to_string(dir.join("localisation.csv")).unwrap();
    assert_eq!(csv.lines().count(), n_layers + 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_to_the_pipeline_give_clear_errors() {
    let (model, tok) = common::smollm();
    // Empty dataset.
    assert!(matches!(
        ab_summary(model, &[], &Intervention::None, 8),
        Err(Error::InvalidArgument { .. })
    ));
    // A vector of the wrong width, or for a layer the model lacks.
    let mut d = std::collections::BTreeMap::new();
    d.insert(
        3,
        candle_core::Tensor::zeros(640, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    let wide = SteeringVector::new(d, "wrong width").unwrap();
    let err = wide.check(model).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("576"),
        "{err}"
    );
    let mut d = std::collections::BTreeMap::new();
    d.insert(
        40,
        candle_core::Tensor::zeros(576, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    let deep = SteeringVector::new(d, "too deep").unwrap();
    assert!(matches!(
        deep.check(model),
        Err(Error::LayerOutOfRange {
            layer: 40,
            n_layers: 30
        })
    ));
    let case = AbCase {
        ids: tok.encode("Hi").unwrap(),
        matching: 1,
        not_matching: 2,
    };
    let iv = Intervention::Add {
        vector: &deep,
        scale: 1.0,
        positions: puppetlens::Positions::All,
    };
    assert!(matches!(
        ab_summary(model, &[case], &iv, 8),
        Err(Error::LayerOutOfRange { .. })
    ));
    // Unbalanced labels for a probe.
    let x = resid(
        model,
        &[
            tok.encode("a").unwrap(),
            tok.encode("b").unwrap(),
            tok.encode("c").unwrap(),
        ],
    );
    let y = [true, true, true];
    assert!(matches!(
        sweep(&x, &y, &x, &y, &x, &y, &ProbeOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
}

/// KL side effects on neutral text: zero without an intervention, and growing with the multiplier
/// of an added vector (the difference of two prompts' residuals at layer 6).
#[test]
fn kl_side_effect_is_zero_unsteered_and_grows_with_the_multiplier() {
    let (model, tok) = common::smollm();
    let neutral: Vec<Vec<u32>> = [
        "The weather today is mild.",
        "Trains leave the station every hour.",
    ]
    .iter()
    .map(|t| tok.encode(t).unwrap())
    .collect();
    let a = resid(model, &[tok.encode("I love this!").unwrap()]);
    let b = resid(model, &[tok.encode("I hate this!").unwrap()]);
    let mut d = std::collections::BTreeMap::new();
    d.insert(6, (&a[6] - &b[6]).unwrap().squeeze(0).unwrap());
    let v = SteeringVector::new(d, "love-hate").unwrap();
    let kl = |m: f64| {
        let iv = Intervention::Add {
            vector: &v,
            scale: m,
            positions: puppetlens::Positions::All,
        };
        puppetlens::eval::kl_side_effect(model, &neutral, &iv, 8).unwrap()
    };
    let none = puppetlens::eval::kl_side_effect(model, &neutral, &Intervention::None, 8).unwrap();
    let (k1, k4) = (kl(1.0), kl(4.0));
    println!("KL: none {none:e}, x1 {k1:e}, x4 {k4:e}");
    assert_eq!(none, 0.0);
    assert!(k1 > 0.0 && k4 > k1, "{k1} {k4}");
}
