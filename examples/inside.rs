//! Inside the blocks of gemma-3-270m: the logit lens (base and the assistant organism side by
//! side), direct logit attribution, causal tracing of a fact by activation patching, and the
//! attention patterns of the block that moves it.
//!
//! `cargo run --release --example inside` writes `notebooks-data/inside/` (about a minute on two
//! cores).

use anyhow::Result;
use puppetlens::lens;
use puppetlens::patch::sweep::{sweep_report, SweepOptions};
use puppetlens::LoadOptions;

fn main() -> Result<()> {
    let out = std::path::Path::new("notebooks-data/inside");
    let opts = LoadOptions::default();
    let (base, tok) = puppetlens::open("gemma-3-270m", &opts)?;
    let (assistant, atok) = puppetlens::open("assistant", &opts)?;

    // 1. Where does " Paris" appear? Each layer's residual read through the unembedding.
    let prompt = "The Eiffel Tower is located in the city of";
    let lenses = lens::lens_report(
        &[
            ("gemma-3-270m", &base, &tok),
            ("assistant", &assistant, &atok),
        ],
        prompt,
        Some(" Paris"),
        out.join("lens"),
    )?;
    println!("base:\n{}", lenses[0].table(&tok));

    // 2. Which blocks and heads write " Paris" over " Rome"?
    let dla = lens::dla_report(&base, &tok, prompt, " Paris", " Rome", out.join("dla"))?;
    println!(
        "logit difference {:.2}: embed {:.2}, parts sum to {:.2}",
        dla.logit_diff, dla.embed, dla.total
    );

    // 3. Causal tracing: restore the clean run's activations in a run about another country.
    let sweep = sweep_report(
        &base,
        &tok,
        "The capital of France is",
        "The capital of Italy is",
        " Paris",
        " Rome",
        &SweepOptions {
            progress: true,
            ..Default::default()
        },
        out.join("sweep"),
    )?;
    let n = sweep.layers.len();
    let s = sweep.clean.len();
    println!(
        "resid_pre at ' France': layer 0 {:.2}, layer {} {:.2}; at the last token: layer {} {:.2}",
        sweep.resid_pre[0][s - 2],
        n - 1,
        sweep.resid_pre[n - 1][s - 2],
        n - 1,
        sweep.resid_pre[n - 1][s - 1]
    );
    let (layer, head, best) = sweep
        .heads
        .iter()
        .enumerate()
        .flat_map(|(l, r)| r.iter().enumerate().map(move |(h, &v)| (l, h, v)))
        .fold((0, 0, f32::MIN), |a, b| if b.2 > a.2 { b } else { a });
    println!("the head whose z restores most: block {layer} head {head} ({best:.2})");

    // 4. What that block's heads attend to.
    let ids = tok.encode("The capital of France is")?;
    lens::attention_figure(
        &base,
        &tok,
        &ids,
        layer,
        out.join(format!("attention_L{layer}")),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
