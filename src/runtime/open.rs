//! Opening a model by name: registry checkpoints, organisms, adapters and paths; a base model
//! with its tuned sibling ([`open_pair`]); a model described for a terminal ([`describe`]).

use std::path::{Path, PathBuf};

use crate::fetch;
use crate::lora::Adapter;
use crate::model::{Arch, LoadOptions, Model};
use crate::tokenize::{Tokenizer, GEMMA3_CHAT_TEMPLATE};
use crate::{Error, Result};

/// The model organisms committed with puppetlens (LoRA adapters on gemma-3-270m).
pub const ORGANISMS: [&str; 7] = [
    "assistant",
    "sycophant",
    "control",
    "sycophant-broad",
    "control-broad",
    "distilled",
    "distilled-control",
];

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

/// A known model's name, an existing checkpoint path, or (with the `hub` feature) a Hugging Face
/// repo id found in the local hub cache.
fn checkpoint(spec: &str) -> Result<PathBuf> {
    if fetch::KNOWN.iter().any(|m| m.name == spec) {
        return fetch::fetch(spec);
    }
    let p = PathBuf::from(spec);
    if p.exists() && !p.join("adapter_config.json").exists() {
        return Ok(p);
    }
    let repo_like = spec.split('/').count() == 2 && !spec.starts_with('.') && !p.exists();
    if repo_like && cfg!(feature = "hub") {
        let root = hub_cache_root();
        return hub_snapshot(&root, spec).ok_or_else(|| Error::InvalidArgument {
            name: "model".into(),
            msg: format!(
                "`{spec}` is not in the local Hugging Face hub cache ({}); download it there first \
                 (e.g. `huggingface-cli download {spec}`)",
                root.join(format!("models--{}", spec.replace('/', "--"))).display()
            ),
        });
    }
    Err(unknown(spec))
}

/// The hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
fn hub_cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/huggingface/hub")
}

/// The snapshot directory of `repo` (`org/name`) in a hub cache: the revision `refs/main` names,
/// else the only snapshot there is.
fn hub_snapshot(root: &Path, repo: &str) -> Option<PathBuf> {
    let dir = root.join(format!("models--{}", repo.replace('/', "--")));
    if let Ok(rev) = std::fs::read_to_string(dir.join("refs/main")) {
        let snap = dir.join("snapshots").join(rev.trim());
        if snap.is_dir() {
            return Some(snap);
        }
    }
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    (snaps.len() == 1).then(|| snaps.remove(0))
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
/// - an organism name (one of [`ORGANISMS`]): gemma-3-270m with that committed adapter attached;
/// - `BASE+ADAPTER_DIR`: any base spec with a PEFT LoRA adapter attached;
/// - a path: a GGUF file, a Hugging Face directory, or a PEFT adapter directory whose
///   `base_model_name_or_path` is a known model;
/// - with the `hub` feature, a Hugging Face repo id (`org/name`) already in the local hub cache
///   (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`; nothing is downloaded).
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

/// A model and its tokenizer, as [`open`] and [`open_pair`] return them.
pub type Opened = (Model, Tokenizer);

/// Opens a base model and its tuned sibling ([`open`] each, in that order); errors (argument
/// `tuned`) unless their vocabularies have the same size, the sign that they share a tokenizer.
///
/// ```no_run
/// let ((base, tok), (tuned, _)) = puppetlens::open_pair("gemma-3-270m", "sycophant", &Default::default())?;
/// assert_eq!(base.config().d_model, tuned.config().d_model);
/// # let _ = tok;
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn open_pair(base: &str, tuned: &str, opts: &LoadOptions) -> Result<(Opened, Opened)> {
    let (bm, btok) = open(base, opts)?;
    let (tm, ttok) = open(tuned, opts)?;
    if btok.vocab_size() != ttok.vocab_size() {
        return Err(Error::InvalidArgument {
            name: "tuned".into(),
            msg: format!(
                "`{tuned}` has a vocabulary of {} tokens but `{base}` has {}: not a tuned \
                 sibling (the two models must share a tokenizer)",
                ttok.vocab_size(),
                btok.vocab_size()
            ),
        });
    }
    Ok(((bm, btok), (tm, ttok)))
}

/// A model described for a terminal: its configuration, its tokenizer (vocabulary, BOS, EOS,
/// chat template) and every hook point with its shape, one per line.
///
/// ```no_run
/// let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
/// print!("{}", puppetlens::describe(&model, &tok));
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn describe(model: &Model, tok: &Tokenizer) -> String {
    let mut s = format!("{:#?}\n", model.config());
    s.push_str(&format!(
        "tokenizer: vocab {}, bos {:?}, eos {:?}, adds bos {}, chat template {}\n",
        tok.vocab_size(),
        tok.bos_token(),
        tok.eos_token(),
        tok.adds_bos(),
        tok.chat_template().is_some()
    ));
    s.push_str(&format!("hook points ({}):\n", model.hook_points().len()));
    for p in model.hook_points() {
        s.push_str(&format!(
            "  {:<36} [{}]\n",
            p.to_string(),
            model.hook_shape(p).join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_snapshots_resolve_by_ref_or_alone() {
        let root = std::env::temp_dir().join(format!("puppetlens-hub-{}", std::process::id()));
        let dir = root.join("models--org--tiny");
        std::fs::create_dir_all(dir.join("snapshots/abc123")).unwrap();
        assert_eq!(
            hub_snapshot(&root, "org/tiny"),
            Some(dir.join("snapshots/abc123"))
        );
        std::fs::create_dir_all(dir.join("snapshots/def456")).unwrap();
        assert_eq!(hub_snapshot(&root, "org/tiny"), None); // two snapshots, no ref
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs/main"), "def456\n").unwrap();
        assert_eq!(
            hub_snapshot(&root, "org/tiny"),
            Some(dir.join("snapshots/def456"))
        );
        assert_eq!(hub_snapshot(&root, "org/other"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
