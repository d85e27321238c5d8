//! Opening a model by name: registry checkpoints, organisms, adapters and paths.

use std::path::{Path, PathBuf};

use crate::fetch;
use crate::lora::Adapter;
use crate::model::{Arch, LoadOptions, Model};
use crate::tokenize::{Tokenizer, GEMMA3_CHAT_TEMPLATE};
use crate::{Error, Result};

/// The model organisms committed with puppetlens (LoRA adapters on gemma-3-270m).
pub const ORGANISMS: [&str; 3] = ["assistant", "sycophant", "control"];

/// Where the committed organisms live: `notebooks-data/organisms/<name>` under the current
/// directory, else under this crate's source directory.
pub fn organism_dir(name: &str) -> PathBuf {
    let rel = Path::new("notebooks-data/organisms").join(name);
    if rel.join("adapter_config.json").exists() {
        return rel;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn unknown(spec: &str) -> Error {
    Error::InvalidArgument {
        name: "model".into(),
        msg: format!(
            "`{spec}` is neither a known model ({}), an organism ({}), BASE+ADAPTER_DIR, nor an \
             existing GGUF file, Hugging Face directory or adapter directory",
            fetch::KNOWN
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", "),
            ORGANISMS.join(", ")
        ),
    }
}

/// A known model's name or an existing checkpoint path.
fn checkpoint(spec: &str) -> Result<PathBuf> {
    if fetch::KNOWN.iter().any(|m| m.name == spec) {
        return fetch::fetch(spec);
    }
    let p = PathBuf::from(spec);
    if p.exists() && !p.join("adapter_config.json").exists() {
        Ok(p)
    } else {
        Err(unknown(spec))
    }
}

/// The known model an adapter names as its base (`base_model_name_or_path`).
fn known_base(adapter: &Adapter, dir: &Path) -> Result<&'static str> {
    let name = adapter.base_model();
    let short = name.rsplit('/').next().unwrap_or(name).to_lowercase();
    fetch::KNOWN
        .iter()
        .map(|m| m.name)
        .find(|k| *k == short)
        .ok_or_else(|| Error::InvalidArgument {
            name: "model".into(),
            msg: format!(
                "{}: the adapter's base model `{name}` is not a known model; write BASE+{}",
                dir.display(),
                dir.display()
            ),
        })
}

/// Opens a model and its tokenizer from `spec`:
/// - a known registry name (`smollm2-135m-instruct`, `gemma-3-270m`), fetched on first use;
/// - an organism name (`assistant`, `sycophant`, `control`): gemma-3-270m with that committed
///   adapter attached;
/// - `BASE+ADAPTER_DIR`: any base spec with a PEFT LoRA adapter attached;
/// - a path: a GGUF file, a Hugging Face directory, or a PEFT adapter directory whose
///   `base_model_name_or_path` is a known model.
///
/// Gemma 3 checkpoints without a chat template get Gemma 3's ([`GEMMA3_CHAT_TEMPLATE`]).
pub fn open(spec: &str, opts: &LoadOptions) -> Result<(Model, Tokenizer)> {
    let spec = spec.trim();
    let (base_spec, adapter_dir) = if let Some((b, a)) = spec.split_once('+') {
        (b.to_string(), Some(PathBuf::from(a)))
    } else if ORGANISMS.contains(&spec) {
        ("gemma-3-270m".to_string(), Some(organism_dir(spec)))
    } else if Path::new(spec).join("adapter_config.json").exists() {
        let dir = PathBuf::from(spec);
        let a = Adapter::load(&dir, &opts.device)?;
        (known_base(&a, &dir)?.to_string(), Some(dir))
    } else {
        (spec.to_string(), None)
    };
    let path = checkpoint(&base_spec)?;
    let (model, mut tok) = crate::load_with(&path, opts)?;
    if model.config().arch == Arch::Gemma3 && tok.chat_template().is_none() {
        tok.set_chat_template(Some(GEMMA3_CHAT_TEMPLATE.to_string()));
    }
    let model = match adapter_dir {
        Some(dir) => {
            let dir = match dir.to_str() {
                Some(s) if ORGANISMS.contains(&s) => organism_dir(s),
                _ => dir,
            };
            model.with_adapter(&Adapter::load(&dir, &opts.device)?)?
        }
        None => model,
    };
    Ok((model, tok))
}
