//! The `puppetlens` command line: thin wrappers, each subcommand one library call.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use puppetlens::{fetch, ChatMessage, GenerateOptions, Hooks, LoadOptions};

/// Mechanistic interpretability on candle: hooked transformers, probes and steering.
#[derive(Parser)]
#[command(name = "puppetlens", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download the shipped checkpoints into the cache (a no-op for those already there).
    ///
    /// Example: `puppetlens fetch` or `puppetlens fetch gemma-3-270m`
    Fetch {
        /// Known model names (default: all of them).
        names: Vec<String>,
    },
    /// Print a model's configuration and hook points.
    ///
    /// Example: `puppetlens info smollm2-135m-instruct`
    Info {
        /// A known model name, a GGUF file or a Hugging Face safetensors directory.
        model: String,
    },
    /// Generate a continuation (greedy unless --temperature is set).
    ///
    /// Example: `puppetlens generate smollm2-135m-instruct --chat "What is the capital of France?"`
    Generate {
        /// A known model name, a GGUF file or a Hugging Face safetensors directory.
        model: String,
        /// The prompt.
        prompt: String,
        /// Wrap the prompt as a user turn in the model's chat template.
        #[arg(long)]
        chat: bool,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 48)]
        max_new_tokens: usize,
        /// Sampling temperature (0 = greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write a model as a Hugging Face safetensors directory (config.json, model.safetensors, tokenizer).
    ///
    /// Example: `puppetlens export gemma-3-270m /tmp/gemma-3-270m`
    Export {
        /// A known model name, a GGUF file or a Hugging Face safetensors directory.
        model: String,
        /// Output directory.
        out: PathBuf,
    },
}

/// A known model name (fetched on demand) or a path.
fn resolve(model: &str) -> puppetlens::Result<PathBuf> {
    if fetch::KNOWN.iter().any(|m| m.name == model) {
        return fetch::fetch(model);
    }
    let p = PathBuf::from(model);
    if p.exists() {
        Ok(p)
    } else {
        Err(puppetlens::Error::InvalidArgument {
            name: "model".into(),
            msg: format!(
                "`{model}` is neither a known model ({}) nor an existing path",
                fetch::KNOWN
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

fn run(cli: Cli) -> puppetlens::Result<()> {
    match cli.cmd {
        Cmd::Fetch { names } => {
            let names: Vec<String> = if names.is_empty() {
                fetch::KNOWN.iter().map(|m| m.name.to_string()).collect()
            } else {
                names
            };
            for n in names {
                let p = fetch::fetch(&n)?;
                println!("{n}\t{}", p.display());
            }
        }
        Cmd::Info { model } => {
            let (m, tok) = puppetlens::load(resolve(&model)?)?;
            println!("{:#?}", m.config());
            println!(
                "tokenizer: vocab {}, bos {:?}, eos {:?}, adds bos {}, chat template {}",
                tok.vocab_size(),
                tok.bos_token(),
                tok.eos_token(),
                tok.adds_bos(),
                tok.chat_template().is_some()
            );
            println!("hook points ({}):", m.hook_points().len());
            for p in m.hook_points() {
                println!("  {p}");
            }
        }
        Cmd::Generate {
            model,
            prompt,
            chat,
            max_new_tokens,
            temperature,
            seed,
        } => {
            let (m, tok) = puppetlens::load(resolve(&model)?)?;
            let ids = if chat {
                tok.encode_chat(&[ChatMessage::user(prompt)], true)?
            } else {
                tok.encode(&prompt)?
            };
            let opts = GenerateOptions {
                max_new_tokens,
                temperature,
                seed,
                stop_tokens: tok.eos_id().into_iter().collect(),
                ..GenerateOptions::default()
            };
            let out = m.generate(&[ids], &opts, &mut Hooks::new())?;
            println!("{}", tok.decode(&out[0])?);
        }
        Cmd::Export { model, out } => {
            let path = resolve(&model)?;
            let (m, tok) = puppetlens::load_with(&path, &LoadOptions::default())?;
            m.export_safetensors(&out)?;
            tok.save_hf_dir(&out)?;
            println!("{}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
