//! Steering a real chat model with a difference-of-means vector (ActAdd / CAA style).
//!
//! `cargo run --release --example steer [-- --quick] [--layer L] [--scale S] [--out DIR]`
//!
//! Loads SmolLM2-135M-Instruct (fetched on first run), records `hook_resid_post` at the last token
//! of contrasting prompts (joyful vs gloomy), takes the difference of the means at every layer, and
//! adds `scale x` that vector at one layer while generating from neutral prompts. Writes the vector
//! norms per layer and the generations to `notebooks-data/steer/steer_demo.json`.
//! (The full puppeteer search, base vs tuned, replaces this demo as the project grows.)

use anyhow::Context;
use candle_core::{IndexOp, Tensor};
use puppetlens::{AddVector, Batch, ChatMessage, GenerateOptions, HookPoint, Hooks};

const JOYFUL: [&str; 8] = [
    "I am so happy today, everything is wonderful!",
    "What a delightful surprise, I love it!",
    "This is the best day of my life.",
    "I feel joyful and full of energy.",
    "Everything turned out great, I'm thrilled.",
    "The sun is shining and I feel fantastic.",
    "I'm grateful for all the lovely people around me.",
    "We won! I'm overjoyed!",
];
const GLOOMY: [&str; 8] = [
    "I am so sad today, everything is terrible.",
    "What an awful surprise, I hate it.",
    "This is the worst day of my life.",
    "I feel miserable and drained.",
    "Everything turned out badly, I'm devastated.",
    "The sky is grey and I feel hopeless.",
    "I'm lonely and nobody cares about me.",
    "We lost. I'm heartbroken.",
];
const NEUTRAL: [&str; 3] = [
    "Tell me about your weekend.",
    "Describe the weather today.",
    "What do you think of Mondays?",
];

fn arg<T: std::str::FromStr>(args: &[String], flag: &str) -> Option<T> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out_dir = std::path::PathBuf::from(
        arg::<String>(&args, "--out").unwrap_or_else(|| "notebooks-data/steer".into()),
    );

    let path = puppetlens::fetch::fetch("smollm2-135m-instruct")?;
    let (model, tok) = puppetlens::load(&path)?;
    let n_layers = model.config().n_layers;
    let layer: usize = arg(&args, "--layer").unwrap_or(n_layers / 3);
    let scale: f64 = arg(&args, "--scale").unwrap_or(8.0);

    // Last-token residuals of each contrast set, every layer.
    let chat = |s: &str| tok.encode_chat(&[ChatMessage::user(s)], false);
    let mean_resid = |set: &[&str]| -> anyhow::Result<Vec<Tensor>> {
        let ids: Vec<Vec<u32>> = set.iter().map(|s| chat(s)).collect::<Result<_, _>>()?;
        let cache = model.cache(&Batch::new(&ids)?, |p| matches!(p, HookPoint::ResidPost(_)))?;
        (0..n_layers)
            .map(|l| {
                let r = cache.require(HookPoint::ResidPost(l))?; // [batch, pos, d_model]
                let last = r.i((.., r.dim(1)? - 1))?; // [batch, d_model] (left padding: last column)
                Ok(last.mean(0)?) // [d_model]
            })
            .collect()
    };
    let (pos, neg) = (mean_resid(&JOYFUL)?, mean_resid(&GLOOMY)?);
    let vectors: Vec<Tensor> = pos
        .iter()
        .zip(&neg)
        .map(|(p, n)| p - n)
        .collect::<Result<_, _>>()?;
    let norms: Vec<f32> = vectors
        .iter()
        .map(|v| v.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>())
        .collect::<Result<_, _>>()?;
    println!(
        "difference-of-means norm per layer: {:?}",
        norms
            .iter()
            .map(|n| (n * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );

    // Steer generation at `layer` with multiples of the raw difference of means (CAA's convention).
    let unit = vectors[layer].clone();
    let prompts: Vec<Vec<u32>> = NEUTRAL
        .iter()
        .take(if quick { 1 } else { 3 })
        .map(|s| tok.encode_chat(&[ChatMessage::user(*s)], true))
        .collect::<Result<_, _>>()?;
    let opts = GenerateOptions {
        max_new_tokens: if quick { 16 } else { 40 },
        stop_tokens: tok.eos_id().into_iter().collect(),
        ..GenerateOptions::default()
    };
    let mut runs = Vec::new();
    for mult in [-scale, 0.0, scale] {
        let mut hooks = Hooks::new();
        hooks.add(
            HookPoint::ResidPost(layer),
            AddVector::new(unit.clone(), mult),
        );
        let outs = model.generate(&prompts, &opts, &mut hooks)?;
        for (p, o) in NEUTRAL.iter().zip(&outs) {
            let text = tok.decode(o)?;
            println!(
                "[layer {layer}, x{mult:+.1}] {p} -> {}",
                text.replace('\n', " ")
            );
            runs.push(serde_json::json!({"prompt": p, "layer": layer, "multiplier": mult, "completion": text}));
        }
    }
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let summary = serde_json::json!({
        "model": "smollm2-135m-instruct", "method": "difference of means, last token, chat template",
        "layer": layer, "scale": scale, "vector_norm_per_layer": norms, "runs": runs,
    });
    let file = out_dir.join("steer_demo.json");
    let tmp = out_dir.join(".steer_demo.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&summary)?)?;
    std::fs::rename(&tmp, &file)?;
    println!("wrote {}", file.display());
    Ok(())
}
