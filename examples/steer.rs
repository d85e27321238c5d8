//! Steering a real chat model with a difference-of-means vector (ActAdd / CAA style).
//!
//! `cargo run --release --example steer [-- --quick] [--layer L] [--scale S] [--out DIR]`
//!
//! Loads SmolLM2-135M-Instruct (fetched on first run), records `hook_resid_post` at the last token
//! of contrasting prompts (joyful vs gloomy), takes the difference of the means at every layer, and
//! adds `scale x` that vector at one layer while generating from neutral prompts. Writes the vector
//! norms per layer, the generations and their KL side effects to `notebooks-data/steer/steer_demo.json`,
//! and the vector as safetensors and as a llama.cpp control vector.
//! (The full puppeteer search, base vs tuned, replaces this demo as the project grows.)

use anyhow::Context;
use puppetlens::eval::{kl_side_effect, Intervention};
use puppetlens::extract::{extract, ExtractOptions, Site};
use puppetlens::{ChatMessage, GenerateOptions, Hooks, Positions, SteeringVector};

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

    // Last-token residuals of each contrast set at every layer; the difference of their means.
    let chat = |s: &str, open: bool| tok.encode_chat(&[ChatMessage::user(s)], open);
    let encode = |set: &[&str]| {
        set.iter()
            .map(|s| chat(s, false))
            .collect::<puppetlens::Result<Vec<_>>>()
    };
    let opts = ExtractOptions {
        progress: false,
        ..ExtractOptions::resid_post(&model, Site::Last)
    };
    let joyful = extract(&model, &encode(&JOYFUL)?, &opts)?;
    let gloomy = extract(&model, &encode(&GLOOMY)?, &opts)?;
    let vector = SteeringVector::mean_diff(&joyful, &gloomy, n_layers)?
        .with_meta("dataset", "joyful vs gloomy (examples/steer.rs)");
    let norms = vector.norms()?;
    println!(
        "difference-of-means norm per layer: {:?}",
        norms
            .values()
            .map(|n| (n * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );

    // Steer generation at `layer` with multiples of the raw difference of means (CAA's convention),
    // and measure the side effect on neutral text as KL from the unsteered model.
    let at_layer = vector.only(&[layer])?;
    let prompts: Vec<Vec<u32>> = NEUTRAL
        .iter()
        .take(if quick { 1 } else { 3 })
        .map(|s| chat(s, true))
        .collect::<puppetlens::Result<_>>()?;
    let opts = GenerateOptions {
        max_new_tokens: if quick { 16 } else { 40 },
        stop_tokens: tok.eos_id().into_iter().collect(),
        ..GenerateOptions::default()
    };
    let mut runs = Vec::new();
    for mult in [-scale, 0.0, scale] {
        let iv = Intervention::Add {
            vector: &at_layer,
            scale: mult,
            positions: Positions::All,
        };
        let mut hooks = Hooks::new();
        iv.install(&model, &mut hooks)?;
        let outs = model.generate(&prompts, &opts, &mut hooks)?;
        drop(hooks);
        let kl = kl_side_effect(&model, &prompts, &iv, 8)?;
        for (p, o) in NEUTRAL.iter().zip(&outs) {
            let text = tok.decode(o)?;
            println!(
                "[layer {layer}, x{mult:+.1}, KL {kl:.3}] {p} -> {}",
                text.replace('\n', " ")
            );
            runs.push(serde_json::json!({"prompt": p, "layer": layer, "multiplier": mult, "kl_on_prompts": kl, "completion": text}));
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
    // The vector itself, for reuse (and for llama.cpp: drop block 0, which it cannot steer).
    vector.save(out_dir.join("joyful_vs_gloomy.safetensors"))?;
    vector
        .only(&(1..n_layers).collect::<Vec<_>>())?
        .to_control_vector_gguf(out_dir.join("joyful_vs_gloomy.gguf"), "llama")?;
    println!(
        "wrote {} and the vector (safetensors, llama.cpp control-vector GGUF)",
        file.display()
    );
    Ok(())
}
