//! linfa models on puppetlens activations: SmolLM2-135M-Instruct reads "The number is 37." style
//! prompts (`probes/numbers.jsonl`, values 0-99, recorded split); the last token's residual stream
//! of every layer becomes one linfa dataset per layer, and two linfa algorithms run per layer:
//!
//! - linfa-linear's `TweedieRegressor` with power 0 and the identity link (a Normal GLM with an L2
//!   penalty: ridge regression solved by L-BFGS) regresses the stated number. Why: the target is
//!   continuous, and with 180 training prompts in 576 dimensions ordinary least squares
//!   (`LinearRegression`) is underdetermined, so the penalised model is the right linear probe.
//! - linfa-logistic's `LogisticRegression` classifies "is the number at least 50?". Why: an
//!   independent solver (argmin's L-BFGS) as a second opinion on puppetlens's Newton-CG probe.
//!
//! Both go through `probe::regress_with` / `probe::sweep_with` (strength chosen on validation,
//! bootstrap intervals on test) beside puppetlens's own `regress` / `sweep` on the same data.
//! `cargo run --release --example linfa_probe` writes `notebooks-data/linfa_probe/`.

use linfa_linear::{Link, TweedieRegressor};
use linfa_logistic::LogisticRegression;
use ndarray::{Array2, Axis};
use puppetlens::data::{self, PromptFormat, Scored};
use puppetlens::extract::{extract, ExtractOptions, Site};
use puppetlens::plot::{LineChart, Series};
use puppetlens::probe::{self, layer_datasets, LayerDataset, ProbeOptions};
use puppetlens::{array, LoadOptions};

fn main() -> anyhow::Result<()> {
    let (model, tok) = puppetlens::open("smollm2-135m-instruct", &LoadOptions::default())?;
    let split = data::load_with_split("probes/numbers.jsonl", |p| data::load_numeric(p, "value"))?;
    let n_layers = model.config().n_layers;
    let acts = |items: &[Scored]| -> anyhow::Result<Vec<Array2<f32>>> {
        let ids = items
            .iter()
            .map(|s| data::text_prompt(&tok, &s.text, &PromptFormat::Plain))
            .collect::<puppetlens::Result<Vec<_>>>()?;
        let opts = ExtractOptions::resid_post(&model, Site::Last);
        Ok(array::layers_to_arrays(
            &extract(&model, &ids, &opts)?.layers(n_layers)?,
        )?)
    };
    let parts = [&split.train, &split.val, &split.test];
    let mut xs = parts
        .map(|p| acts(p))
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    // z-score every layer with the training split's statistics (L-BFGS on raw activations, whose
    // few "massive" dimensions are ~100x the rest, converges poorly).
    for l in 0..n_layers {
        let mean = xs[0][l]
            .mean_axis(Axis(0))
            .ok_or_else(|| anyhow::anyhow!("no items"))?;
        let sd = xs[0][l]
            .std_axis(Axis(0), 0.0)
            .mapv(|s| if s > 0.0 { s } else { 1.0 });
        for x in xs.iter_mut() {
            x[l] = (&x[l] - &mean) / &sd;
        }
    }
    let tensors = |x: &[Array2<f32>]| -> puppetlens::Result<Vec<_>> {
        x.iter().map(|a| array::from_array2(a.clone())).collect()
    };
    let value = |i: usize| parts[i].iter().map(|s| s.value).collect::<Vec<f64>>();
    let high = |i: usize| {
        parts[i]
            .iter()
            .map(|s| s.value >= 50.0)
            .collect::<Vec<bool>>()
    };
    let sets_f32 = |i: usize| -> puppetlens::Result<Vec<LayerDataset<f32>>> {
        let t: Vec<f32> = value(i).iter().map(|&v| v as f32).collect();
        layer_datasets(&tensors(&xs[i])?, &t)
    };
    let sets_bool = |i: usize| layer_datasets(&tensors(&xs[i])?, &high(i));
    let (opts, n) = (ProbeOptions::default(), parts[0].len() as f64); // l2 grid 1e-4..1

    // linfa-linear: ridge as a Normal GLM (its penalty alpha/2·||w||² is on the mean deviance).
    let (r_tr, r_va, r_te) = (sets_f32(0)?, sets_f32(1)?, sets_f32(2)?);
    let glm = |l2: f64| {
        TweedieRegressor::params()
            .power(0.0)
            .link(Link::Identity)
            .alpha(l2 as f32)
            .max_iter(500)
    };
    let tweedie = probe::regress_with(glm, &r_tr, &r_va, &r_te, &opts)?;
    let (t_tr, t_va, t_te) = (tensors(&xs[0])?, tensors(&xs[1])?, tensors(&xs[2])?);
    let ridge = probe::regress(&t_tr, &value(0), &t_va, &value(1), &t_te, &value(2), &opts)?;
    // linfa-logistic: alpha weighs the summed loss, so alpha = l2 · n for puppetlens's l2.
    let (c_tr, c_va, c_te) = (sets_bool(0)?, sets_bool(1)?, sets_bool(2)?);
    let logit = |l2: f64| {
        LogisticRegression::default()
            .alpha((l2 * n) as f32)
            .max_iterations(500)
    };
    let linfa_cls = probe::sweep_with(logit, &c_tr, &c_va, &c_te, &opts)?;
    let ours_cls = probe::sweep(&t_tr, &high(0), &t_va, &high(1), &t_te, &high(2), &opts)?;

    let dir = std::path::Path::new("notebooks-data/linfa_probe");
    let mut csv = String::from("layer,tweedie_test_r2,tweedie_ci_low,tweedie_ci_high,ridge_test_r2,linfa_logistic_test_acc,puppetlens_logistic_test_acc\n");
    println!("layer  R² TweedieRegressor [95% CI]   R² probe::regress   acc linfa-logistic   acc probe::sweep");
    for l in 0..n_layers {
        let (tw, rg, lc, oc) = (
            &tweedie[l].test,
            &ridge[l].test,
            &linfa_cls[l].test,
            &ours_cls[l].test,
        );
        println!(
            "{l:>5}  {:.3} [{:.3}, {:.3}]          {:.3}               {:.3}                {:.3}",
            tw.r2, tw.r2_ci.0, tw.r2_ci.1, rg.r2, lc.accuracy, oc.accuracy
        );
        csv += &format!(
            "{l},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
            tw.r2, tw.r2_ci.0, tw.r2_ci.1, rg.r2, lc.accuracy, oc.accuracy
        );
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("layers.csv"), csv)?;
    // linfa's lines dashed, so that they stay visible where they coincide with puppetlens's.
    let line = |label: &str, v: Vec<f64>| Series {
        dashed: label.contains("linfa"),
        ..Series::new(
            label,
            v.into_iter()
                .enumerate()
                .map(|(l, y)| (l as f64, y))
                .collect(),
        )
    };
    let chart = LineChart {
        title: "SmolLM2: the stated number, read per layer by linfa and puppetlens".into(),
        x_label: "layer".into(),
        y_label: "test R² / accuracy".into(),
        series: vec![
            line(
                "R², linfa-linear TweedieRegressor (ridge)",
                tweedie.iter().map(|r| r.test.r2).collect(),
            ),
            line(
                "R², probe::regress",
                ridge.iter().map(|r| r.test.r2).collect(),
            ),
            line(
                "accuracy (>= 50), linfa-logistic",
                linfa_cls.iter().map(|r| r.test.accuracy).collect(),
            ),
            line(
                "accuracy (>= 50), probe::sweep",
                ours_cls.iter().map(|r| r.test.accuracy).collect(),
            ),
        ],
        y_range: Some((0.0, 1.0)),
        ..LineChart::default()
    };
    chart.save(dir.join("layers"))?;
    println!("wrote {}", dir.display());
    Ok(())
}
