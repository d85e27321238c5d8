//! Tokenizers that reproduce the reference (Hugging Face) tokenizer exactly.
//!
//! A [`Tokenizer`] is built either from a GGUF checkpoint's metadata ([`Tokenizer::from_gguf`]), or
//! from a Hugging Face directory holding `tokenizer.json` and `tokenizer_config.json`
//! ([`Tokenizer::from_hf_dir`]). Either way it wraps a [`tokenizers::Tokenizer`] and adds what a
//! `tokenizer.json` alone does not say: the BOS/EOS tokens, whether the model wants a BOS in front of
//! every prompt, and the model's own chat template, which is rendered with
//! [minijinja](https://docs.rs/minijinja) the way `transformers` renders it with Jinja2.
//!
//! # Reproducing the reference from a GGUF
//!
//! A GGUF carries no `tokenizer.json`: it stores the vocabulary, the merges or scores, the token
//! types and the special token ids under llama.cpp's `tokenizer.ggml.*` keys. The tokenizer is rebuilt
//! the way `transformers` rebuilds it (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`), which
//! matches the model's Hugging Face `tokenizer.json`:
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE with the file's merges. **No prefix space** is
//!   added (`add_prefix_space = false`, as in SmolLM2's `tokenizer.json`). `tokenizer.ggml.pre` picks
//!   the split: `smollm`/`starcoder` split digits one by one before the GPT-2 regex, the Llama 3,
//!   Qwen 2, GPT-4o and Tekken families use their own regex, anything else the GPT-2 regex.
//! * `tokenizer.ggml.model = "llama"`: a SentencePiece vocabulary, run as a BPE model with byte
//!   fallback (`<0xXX>` tokens) whose merges are recovered from the vocabulary. For the Gemma family
//!   (`general.architecture` = `gemma`, `gemma2`, `gemma3`, `gemma3n`) spaces become `▁` with no dummy
//!   prefix, the merge order is the order of the tokens in the file, and the runs of spaces that the
//!   file spells with real spaces are respelled with `▁`. Other SentencePiece models get the Llama
//!   `Metaspace` pre-tokenizer (prefix `▁` on the first word unless `tokenizer.ggml.add_space_prefix`
//!   is false), or Phi-3's normalizer for `phi3`.
//! * Tokens typed *control* (3) become special added tokens and tokens typed *user-defined* (4)
//!   plain added tokens, so that `<|im_start|>` or `<start_of_turn>` written in a prompt stay one
//!   token and `"\n\n"` or `<h1>` match whole, as in the reference.
//! * A BOS is added when `tokenizer.ggml.add_bos_token` says so (SentencePiece files without the key
//!   default to adding it, as llama.cpp and `transformers` do).
//!
//! `tests/real/tokenizer.rs` checks the ids, decodes and chat renderings of SmolLM2 and Gemma 3 against
//! golden files written by `scripts/golden_tokens.py` from `transformers`.
//!
//! # Where this differs from `transformers` on purpose
//!
//! * [`Tokenizer::encode_chat`] puts a BOS in front when the model adds one and the rendered
//!   template does not start with it; `apply_chat_template(tokenize=True)` never adds one. For
//!   templates that write `{{ bos_token }}` (Gemma, Llama) and models without a BOS (SmolLM2) the
//!   two agree.
//! * The `smollm`/`starcoder` digit split, which `transformers`' GGUF path leaves out, is the one in
//!   the models' own `tokenizer.json` (it changes no ids for SmolLM2's vocabulary).
//! * Templates run on minijinja, not Jinja2: Python-only behaviour outside `pycompat` (e.g. `None`
//!   printed as `none`) can differ.
//!
//! # Example
//!
//! A tiny byte-level vocabulary, built from GGUF-style metadata:
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::quantized::gguf_file::Value;
//! use puppetlens::tokenize::{ChatMessage, Tokenizer};
//!
//! # fn main() -> puppetlens::Result<()> {
//! let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
//! let mut metadata = HashMap::new();
//! metadata.insert("tokenizer.ggml.model".to_string(), Value::String("gpt2".into()));
//! metadata.insert(
//!     "tokenizer.ggml.tokens".to_string(),
//!     strings(&["<s>", "h", "i", "Ġ", "hi", "Ġhi"]),
//! );
//! metadata.insert(
//!     "tokenizer.ggml.token_type".to_string(),
//!     Value::Array([3, 1, 1, 1, 1, 1].into_iter().map(Value::I32).collect()),
//! );
//! metadata.insert("tokenizer.ggml.merges".to_string(), strings(&["h i", "Ġ hi"]));
//! metadata.insert("tokenizer.ggml.bos_token_id".to_string(), Value::U32(0));
//! metadata.insert("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(true));
//! metadata.insert(
//!     "tokenizer.chat_template".to_string(),
//!     Value::String("{{ bos_token }}{% for m in messages %}{{ m.content.strip() }}{% endfor %}".into()),
//! );
//!
//! let tok = Tokenizer::from_gguf_metadata(&metadata, "example.gguf")?;
//! assert_eq!(tok.encode("hi hi")?, vec![0, 4, 5]); // BOS, "hi", " hi"
//! assert_eq!(tok.encode_with("hi", false)?, vec![4]);
//! assert_eq!(tok.decode(&[4, 5])?, "hi hi");
//! // The rendered chat starts with `<s>`, so no second BOS is added.
//! let ids = tok.encode_chat(&[ChatMessage::user("  hi ")], false)?;
//! assert_eq!(ids, vec![0, 4]);
//! # Ok(())
//! # }
//! ```
//!
//! From a real checkpoint:
//!
//! ```no_run
//! use puppetlens::tokenize::Tokenizer;
//! # fn main() -> puppetlens::Result<()> {
//! let tok = Tokenizer::from_gguf_path("gemma-3-270m-q4_k_m.gguf".as_ref())?;
//! let ids = tok.encode(" The capital of France is")?;
//! assert_eq!(ids[0], 2); // Gemma adds `<bos>`
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::{Error, Result};

mod chat;
mod gguf;

use chat::*;
use gguf::*;

/// The `tokenizers` crate's tokenizer, which [`Tokenizer`] wraps.
type HfTokenizer = tokenizers::Tokenizer;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Gemma 3's chat format, for Gemma 3 checkpoints whose GGUF carries no template (the base
/// models): `<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n...`, a system
/// message folded into the first user turn, contents trimmed, roles alternating. For text
/// messages it renders what the instruction-tuned Gemma 3 template renders.
pub const GEMMA3_CHAT_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set prefix = messages[0]['content'] + '\\n\\n' -%}{%- set turns = messages[1:] -%}\
{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}\
{%- for m in turns -%}\
{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
{%- endif -%}\
{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' }}\
{{- (prefix if loop.first else '') + (m['content'] | trim) + '<end_of_turn>\\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}";
const KEY_ARCH: &str = "general.architecture";

/// One message of a conversation, as chat templates see it (`message['role']`,
/// `message['content']`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// Who speaks: `system`, `user`, `assistant` (or whatever roles the template knows).
    pub role: String,
    /// What they say.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

/// A chat message as templates see it: a map whose keys enumerate in Python's order (`role`,
/// then `content`), so `tojson` and `.items()` agree with `transformers`.
#[derive(Debug)]
struct MessageObject(ChatMessage);

impl minijinja::value::Object for MessageObject {
    fn get_value(self: &std::sync::Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        match key.as_str()? {
            "role" => Some(minijinja::Value::from(self.0.role.as_str())),
            "content" => Some(minijinja::Value::from(self.0.content.as_str())),
            _ => None,
        }
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Str(&["role", "content"])
    }
}

/// A special token: its id and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Special {
    id: u32,
    text: String,
}

/// A tokenizer that reproduces the model's reference (Hugging Face) tokenizer.
///
/// See the [module documentation](self) for how it is built and an example.
#[derive(Clone)]
pub struct Tokenizer {
    inner: HfTokenizer,
    bos: Option<Special>,
    eos: Option<Special>,
    unk_token: Option<String>,
    pad_token: Option<String>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
    source_name: String,
}

/// Instructions a chat template may run (plus 1,000 per byte of the messages): real templates use
/// a few thousand per message, a loop without end runs out within a second.
const TEMPLATE_FUEL: u64 = 5_000_000;
/// Bytes a chat template may write (plus 16 per byte of the messages).
const TEMPLATE_OUTPUT: usize = 1 << 20;

/// The message of a caught panic.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// A render target that refuses to grow past `limit` bytes.
struct CappedOutput {
    text: Vec<u8>,
    limit: usize,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            self.text
                .extend_from_slice(&buf[..self.limit.saturating_sub(self.text.len())]);
            self.text.push(0); // marks the overflow: the text is now longer than the limit
            return Err(std::io::Error::other("chat template output limit reached"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source_name)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes, from its metadata.
    ///
    /// `source_name` (usually the file's path) names the file in errors. A missing or mistyped
    /// `tokenizer.ggml.*` key gives [`Error::Tokenizer`] naming the source and the key.
    pub fn from_gguf(content: &Content, source_name: &str) -> Result<Self> {
        Self::from_gguf_metadata(&content.metadata, source_name)
    }

    /// Opens a GGUF file, reads its metadata and builds its tokenizer (see [`Tokenizer::from_gguf`]).
    pub fn from_gguf_path(path: &Path) -> Result<Self> {
        let (content, _) = crate::gguf::read(path)?;
        Self::from_gguf(&content, &path.display().to_string())
    }

    /// Builds the tokenizer from GGUF metadata (the `metadata` map of a
    /// [`Content`]); `source_name` names the file in errors.
    pub fn from_gguf_metadata(
        metadata: &HashMap<String, Value>,
        source_name: &str,
    ) -> Result<Self> {
        let meta = Meta {
            md: metadata,
            source: source_name,
        };
        let kind = meta.required_str(KEY_MODEL)?;
        let tokens = meta.required_str_array(KEY_TOKENS)?;
        if tokens.is_empty() {
            return Err(meta.err(KEY_TOKENS, "is empty"));
        }
        let token_types = meta.int_array(KEY_TOKEN_TYPE)?;
        if let Some(types) = &token_types {
            if types.len() != tokens.len() {
                return Err(meta.err(
                    KEY_TOKEN_TYPE,
                    format!(
                        "has {} entries but there are {} tokens",
                        types.len(),
                        tokens.len()
                    ),
                ));
            }
        }
        let arch = meta.str(KEY_ARCH)?.unwrap_or("");

        let (mut inner, default_add_bos, force_no_bos) = match kind {
            "gpt2" => {
                let pre = meta.str(KEY_PRE)?;
                let merges = meta.required_str_array(KEY_MERGES)?;
                (
                    build_byte_level(&meta, &tokens, &merges, pre)?,
                    false,
                    false,
                )
            }
            "llama" | "gemma4" => {
                let family = if kind == "gemma4" {
                    SpmFamily::Gemma4
                } else if matches!(arch, "gemma" | "gemma2" | "gemma3" | "gemma3n") {
                    SpmFamily::Gemma
                } else if arch == "phi3" {
                    SpmFamily::Phi3
                } else {
                    SpmFamily::Llama {
                        add_space_prefix: meta.bool(KEY_ADD_SPACE_PREFIX)?.unwrap_or(true),
                    }
                };
                let inner = build_sentencepiece(&meta, &tokens, family)?;
                // Older files have no flag, and SentencePiece models add BOS unless told otherwise.
                // Gemma 4's template writes `<bos>` itself, and the reference adds none.
                (inner, true, family == SpmFamily::Gemma4)
            }
            other => {
                return Err(meta.err(
                    KEY_MODEL,
                    format!(
                    "tokenizer model `{other}` is not supported (supported: gpt2, llama, gemma4)"
                ),
                ))
            }
        };

        // Control tokens become special added tokens, user-defined ones plain added tokens.
        // A token whose spelling is not in the vocabulary (a mislabelled byte-level token, or a
        // respelled run of spaces) is left out, as the reference does.
        let in_vocab = |inner: &HfTokenizer, t: &str| inner.get_model().token_to_id(t).is_some();
        if let Some(types) = &token_types {
            let mut control = Vec::new();
            let mut user_defined = Vec::new();
            for (token, &ty) in tokens.iter().zip(types) {
                if !in_vocab(&inner, token) {
                    continue;
                }
                if ty == TOKEN_TYPE_CONTROL {
                    control.push(AddedToken::from(*token, true).normalized(false));
                } else if ty == TOKEN_TYPE_USER_DEFINED {
                    user_defined.push(AddedToken::from(*token, false).normalized(false));
                }
            }
            if !control.is_empty() {
                inner
                    .add_special_tokens(control)
                    .map_err(|e| meta.tok_err(format!("adding control tokens: {e}")))?;
            }
            if !user_defined.is_empty() {
                inner
                    .add_tokens(user_defined)
                    .map_err(|e| meta.tok_err(format!("adding user-defined tokens: {e}")))?;
            }
        }

        let special = |key: &str| -> Result<Option<Special>> {
            match meta.u32(key)? {
                None => Ok(None),
                Some(id) => match tokens.get(id as usize) {
                    Some(text) => Ok(Some(Special {
                        id,
                        text: (*text).to_string(),
                    })),
                    None => Err(meta.err(
                        key,
                        format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    )),
                },
            }
        };
        let bos = special(KEY_BOS)?;
        let eos = special(KEY_EOS)?;
        let unk = special(KEY_UNK)?;
        let pad = special(KEY_PAD)?;
        // The reference also registers its named special tokens as special added tokens.
        let named: Vec<AddedToken> = [&bos, &eos, &unk, &pad]
            .into_iter()
            .flatten()
            .filter(|s| {
                in_vocab(&inner, &s.text) && !inner.get_added_vocabulary().is_special_token(&s.text)
            })
            .map(|s| AddedToken::from(s.text.clone(), true).normalized(false))
            .collect();
        if !named.is_empty() {
            inner
                .add_special_tokens(named)
                .map_err(|e| meta.tok_err(format!("adding special tokens: {e}")))?;
        }

        let add_bos =
            !force_no_bos && meta.bool(KEY_ADD_BOS)?.unwrap_or(default_add_bos) && bos.is_some();
        let add_eos = meta.bool(KEY_ADD_EOS)?.unwrap_or(false) && eos.is_some();
        let chat_template = meta.str(KEY_CHAT_TEMPLATE)?.map(str::to_string);

        let mut tok = Tokenizer {
            inner,
            bos,
            eos,
            unk_token: unk.map(|s| s.text),
            pad_token: pad.map(|s| s.text),
            add_bos,
            add_eos,
            chat_template,
            source_name: source_name.to_string(),
        };
        tok.set_post_processor(add_bos, add_eos)?;
        Ok(tok)
    }

    /// Loads a Hugging Face tokenizer directory: `tokenizer.json`, plus `tokenizer_config.json`
    /// (when present) for `bos_token`, `eos_token`, `add_bos_token`, `add_eos_token` and
    /// `chat_template`, and `chat_template.jinja` (when present, it wins over the config's template).
    ///
    /// As in `transformers`, an explicit `add_bos_token`/`add_eos_token` rebuilds the
    /// post-processor; otherwise the one in `tokenizer.json` is kept and [`Tokenizer::adds_bos`]
    /// reports what it does.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let source_name = tok_path.display().to_string();
        let bytes = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
        let bad = |msg: String| Error::Tokenizer {
            source_name: source_name.clone(),
            msg: format!("cannot parse tokenizer.json: {msg}"),
        };
        // `tokenizers` panics on some malformed files (invalid JSON under `decoder`, a bad
        // `Precompiled` normalizer): check the JSON first, and turn any panic into an error.
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| bad(e.to_string()))?;
        let inner = std::panic::catch_unwind(|| HfTokenizer::from_bytes(&bytes))
            .map_err(|p| {
                bad(format!(
                    "the tokenizers library panicked: {}",
                    panic_text(&p)
                ))
            })?
            .map_err(|e| bad(e.to_string()))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg_name = cfg_path.display().to_string();
        let cfg: serde_json::Value = match std::fs::read(&cfg_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Tokenizer {
                source_name: cfg_name.clone(),
                msg: format!("cannot parse tokenizer_config.json: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Value::Null,
            Err(e) => return Err(Error::io(&cfg_path, e)),
        };

        let cfg_err = |field: &str, msg: String| Error::Tokenizer {
            source_name: cfg_name.clone(),
            msg: format!("field `{field}`: {msg}"),
        };
        let special = |field: &str| -> Result<Option<Special>> {
            let text = match cfg.get(field) {
                None | Some(serde_json::Value::Null) => return Ok(None),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Object(o)) => {
                    match o.get("content").and_then(|c| c.as_str()) {
                        Some(s) => s.to_string(),
                        None => {
                            return Err(cfg_err(
                                field,
                                "is an object without a string `content`".into(),
                            ))
                        }
                    }
                }
                Some(other) => {
                    return Err(cfg_err(field, format!("expected a string, got {other}")))
                }
            };
            match inner.token_to_id(&text) {
                Some(id) => Ok(Some(Special { id, text })),
                None => Err(cfg_err(
                    field,
                    format!("token `{text}` is not in the vocabulary"),
                )),
            }
        };
        let bos = special("bos_token")?;
        let eos = special("eos_token")?;
        // Only the template sees these; one missing from the vocabulary is not worth a failure.
        let unk_token = special("unk_token").ok().flatten().map(|s| s.text);
        let pad_token = special("pad_token").ok().flatten().map(|s| s.text);
        let flag = |field: &str| -> Result<Option<bool>> {
            match cfg.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(cfg_err(field, format!("expected a bool, got {other}"))),
            }
        };
        let add_bos_flag = flag("add_bos_token")?;
        let add_eos_flag = flag("add_eos_token")?;

        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = match std::fs::read_to_string(&jinja_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match cfg.get("chat_template") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => {
                    // A list of named templates: take `default`, else the first.
                    let named = |name: Option<&str>| {
                        list.iter()
                            .find(|t| {
                                name.is_none() || t.get("name").and_then(|n| n.as_str()) == name
                            })
                            .and_then(|t| t.get("template"))
                            .and_then(|t| t.as_str())
                            .map(str::to_string)
                    };
                    named(Some("default")).or_else(|| named(None))
                }
                Some(other) => {
                    return Err(cfg_err(
                        "chat_template",
                        format!("expected a string or a list, got {other}"),
                    ))
                }
            },
            Err(e) => return Err(Error::io(&jinja_path, e)),
        };

        let mut tok = Tokenizer {
            inner,
            bos,
            eos,
            unk_token,
            pad_token,
            add_bos: false,
            add_eos: false,
            chat_template,
            source_name,
        };
        if add_bos_flag.is_some() || add_eos_flag.is_some() {
            let add_bos = add_bos_flag.unwrap_or(false) && tok.bos.is_some();
            let add_eos = add_eos_flag.unwrap_or(false) && tok.eos.is_some();
            tok.set_post_processor(add_bos, add_eos)?;
        }
        // What the post-processor does is the truth: probe it.
        let probe = tok.encode_raw("", true)?;
        tok.add_bos = matches!((&tok.bos, probe.first()), (Some(b), Some(&id)) if b.id == id);
        tok.add_eos = matches!((&tok.eos, probe.last()), (Some(e), Some(&id)) if e.id == id);
        Ok(tok)
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed) so that
    /// [`Tokenizer::from_hf_dir`] (and `transformers`) read back the same tokenizer. Each file is
    /// written to a temporary file first and renamed into place.
    pub fn save_hf_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| self.tok_err(format!("cannot serialize: {e}")))?;
        let mut config = serde_json::Map::new();
        config.insert("add_bos_token".into(), self.add_bos.into());
        config.insert("add_eos_token".into(), self.add_eos.into());
        let text = |s: Option<&str>| s.map_or(serde_json::Value::Null, |s| s.into());
        config.insert("bos_token".into(), text(self.bos_token()));
        config.insert("eos_token".into(), text(self.eos_token()));
        config.insert("unk_token".into(), text(self.unk_token.as_deref()));
        config.insert("pad_token".into(), text(self.pad_token.as_deref()));
        config.insert("clean_up_tokenization_spaces".into(), false.into());
        config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
        if let Some(t) = &self.chat_template {
            config.insert("chat_template".into(), t.as_str().into());
        }
        let config = serde_json::to_string_pretty(&serde_json::Value::Object(config))
            .map_err(|e| self.tok_err(format!("cannot serialize tokenizer_config.json: {e}")))?;
        crate::util::atomic_write_bytes(&dir.join("tokenizer.json"), json.as_bytes())?;
        crate::util::atomic_write_bytes(&dir.join("tokenizer_config.json"), config.as_bytes())?;
        // A stale `chat_template.jinja` would override the template just written.
        let jinja = dir.join("chat_template.jinja");
        match std::fs::remove_file(&jinja) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&jinja, e)),
        }
    }

    /// Encodes `text` as the reference does with `add_special_tokens=True`: the model's BOS (and
    /// EOS, for the rare model that wants one) is added. Special tokens written in the text (e.g.
    /// `<|im_start|>`) are parsed as special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_raw(text, true)
    }

    /// Encodes `text` with no special tokens added, then puts the BOS in front when `add_bos` is
    /// true (an error if the model has no BOS token). Special tokens written in the text are still
    /// parsed as special tokens.
    pub fn encode_with(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let ids = self.encode_raw(text, false)?;
        if !add_bos {
            return Ok(ids);
        }
        let bos = self
            .bos
            .as_ref()
            .ok_or_else(|| self.tok_err("a BOS token was asked for, but the model has none"))?;
        let mut out = Vec::with_capacity(ids.len() + 1);
        out.push(bos.id);
        out.extend(ids);
        Ok(out)
    }

    /// Decodes ids back to text, special tokens included (`skip_special_tokens=False`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let vocab = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(self.tok_err(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| self.tok_err(format!("decoding failed: {e}")))
    }

    /// The BOS token id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|s| s.id)
    }

    /// The EOS token id, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|s| s.id)
    }

    /// The BOS token's text (e.g. `<bos>`), if the model has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|s| s.text.as_str())
    }

    /// The EOS token's text (e.g. `<|im_end|>`), if the model has one.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|s| s.text.as_str())
    }

    /// Whether [`Tokenizer::encode`] puts the BOS token in front.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`Tokenizer::encode`] appends the EOS token.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// The number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, given its spelling in the vocabulary (e.g. `▁the` or `Ġthe`).
    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    /// The spelling of a token in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The model's chat template (Jinja source), if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Replaces (or, with `None`, removes) the chat template.
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Where this tokenizer came from (a GGUF or a `tokenizer.json` path); errors name it.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Renders the model's chat template for `messages`, as `transformers`'
    /// `apply_chat_template(tokenize=False)` does: Jinja with `trim_blocks` and `lstrip_blocks`,
    /// Python string methods (`.strip()`, `.startswith()`...), `raise_exception`, a Python-style
    /// `tojson`, and the variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`,
    /// `unk_token`, `pad_token`.
    ///
    /// Fails with [`Error::ChatTemplate`] when the model has no template, or the template does not
    /// parse or raises.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::ChatTemplate {
                source_name: self.source_name.clone(),
                msg: "the model has no chat template".into(),
            })?;
        let chat_err = |what: &str, e: minijinja::Error| Error::ChatTemplate {
            source_name: self.source_name.clone(),
            msg: format!("{what}: {e}"),
        };
        // The template is code from the checkpoint: it runs with a budget of instructions and of
        // output, and without a loader (no `include`/`import` of files) or environment access.
        let input: usize = messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum();
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL + 1_000 * input as u64));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", py_tojson);
        let tmpl = env
            .template_from_str(template)
            .map_err(|e| chat_err("cannot parse the template", e))?;
        let ctx = minijinja::context! {
            messages => minijinja::Value::from_iter(
                messages.iter().map(|m| minijinja::Value::from_object(MessageObject(m.clone())))
            ),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token(),
            eos_token => self.eos_token(),
            unk_token => self.unk_token.as_deref(),
            pad_token => self.pad_token.as_deref(),
        };
        let limit = TEMPLATE_OUTPUT + 16 * input;
        let mut out = CappedOutput {
            text: Vec::new(),
            limit,
        };
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
                return Err(Error::ChatTemplate {
                    source_name: self.source_name.clone(),
                    msg: format!(
                        "rendering ran out of its budget of {} instructions (does the template loop without end?)",
                        TEMPLATE_FUEL + 1_000 * input as u64
                    ),
                })
            }
            Err(_) if out.text.len() > limit => {
                return Err(Error::ChatTemplate {
                    source_name: self.source_name.clone(),
                    msg: format!("rendering wrote more than {limit} bytes"),
                })
            }
            Err(e) => return Err(chat_err("rendering failed", e)),
        }
        String::from_utf8(out.text).map_err(|e| Error::ChatTemplate {
            source_name: self.source_name.clone(),
            msg: format!("rendering produced invalid UTF-8: {e}"),
        })
    }

    /// Renders the chat template, then encodes the text. The BOS is put in front when the model
    /// adds one and the rendered text does not already start with it (Gemma's template writes
    /// `{{ bos_token }}` itself), so there is never a doubled BOS. No EOS is appended.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        let starts_with_bos = self
            .bos_token()
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        self.encode_with(&text, self.add_bos && !starts_with_bos)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn encode_raw(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| self.tok_err(format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn tok_err(&self, msg: impl Into<String>) -> Error {
        Error::Tokenizer {
            source_name: self.source_name.clone(),
            msg: msg.into(),
        }
    }

    /// Sets a `TemplateProcessing` post-processor that adds BOS/EOS as asked, the way
    /// `transformers` builds it (`<bos>:0 $A:0 <eos>:0`, and the pair form).
    fn set_post_processor(&mut self, add_bos: bool, add_eos: bool) -> Result<()> {
        let bos = if add_bos { self.bos.clone() } else { None };
        let eos = if add_eos { self.eos.clone() } else { None };
        let special = |s: &Special, type_id: u32| serde_json::json!({"SpecialToken": {"id": s.text, "type_id": type_id}});
        let seq = |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
        let mut single = Vec::new();
        let mut pair = Vec::new();
        for (out, pieces) in [
            (&mut single, vec![("A", 0u32)]),
            (&mut pair, vec![("A", 0), ("B", 1)]),
        ] {
            for (id, type_id) in pieces {
                if let Some(b) = &bos {
                    out.push(special(b, type_id));
                }
                out.push(seq(id, type_id));
                if let Some(e) = &eos {
                    out.push(special(e, type_id));
                }
            }
        }
        let mut specials = serde_json::Map::new();
        for s in bos.iter().chain(eos.iter()) {
            specials.insert(
                s.text.clone(),
                serde_json::json!({"id": s.text, "ids": [s.id], "tokens": [s.text]}),
            );
        }
        let processor = serde_json::json!({
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": specials,
        });
        let processor: PostProcessorWrapper = serde_json::from_value(processor)
            .map_err(|e| self.tok_err(format!("cannot build the BOS/EOS post-processor: {e}")))?;
        self.inner.with_post_processor(Some(processor));
        self.add_bos = add_bos;
        self.add_eos = add_eos;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
    }

    /// A tiny byte-level vocabulary: `<s>`, `</s>`, letters, `Ġ`, and a few merges.
    fn tiny_gpt2() -> HashMap<String, Value> {
        let mut md = HashMap::new();
        md.insert(KEY_MODEL.to_string(), Value::String("gpt2".into()));
        md.insert(
            KEY_TOKENS.to_string(),
            strings(&[
                "<s>", "</s>", "h", "i", "Ġ", "hi", "Ġhi", "Ċ", "<tool>", "1", "2",
            ]),
        );
        md.insert(
            KEY_TOKEN_TYPE.to_string(),
            Value::Array(
                [3, 3, 1, 1, 1, 1, 1, 1, 4, 1, 1]
                    .into_iter()
                    .map(Value::I32)
                    .collect(),
            ),
        );
        md.insert(KEY_MERGES.to_string(), strings(&["h i", "Ġ hi"]));
        md.insert(KEY_BOS.to_string(), Value::U32(0));
        md.insert(KEY_EOS.to_string(), Value::U32(1));
        md
    }

    /// A tiny SentencePiece vocabulary in the Gemma layout.
    fn tiny_gemma() -> HashMap<String, Value> {
        let mut md = HashMap::new();
        md.insert(KEY_MODEL.to_string(), Value::String("llama".into()));
        md.insert(KEY_ARCH.to_string(), Value::String("gemma3".into()));
        let mut tokens = vec!["<pad>", "<eos>", "<bos>", "<unk>", "\n", "  "];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(String::as_str));
        tokens.extend(["▁", "h", "i", "hi", "▁hi"]);
        let mut types = vec![3, 3, 3, 3, 4, 4];
        types.extend(std::iter::repeat_n(6, 256));
        types.extend([1, 1, 1, 1, 1]);
        md.insert(KEY_TOKENS.to_string(), strings(&tokens));
        md.insert(
            KEY_TOKEN_TYPE.to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        );
        md.insert(
            KEY_SCORES.to_string(),
            Value::Array((0..tokens.len()).map(|i| Value::F32(-(i as f32))).collect()),
        );
        md.insert(KEY_BOS.to_string(), Value::U32(2));
        md.insert(KEY_EOS.to_string(), Value::U32(1));
        md.insert(KEY_UNK.to_string(), Value::U32(3));
        md.insert(KEY_ADD_BOS.to_string(), Value::Bool(true));
        md
    }

    fn expect_tokenizer_err<T: fmt::Debug>(r: Result<T>, needles: &[&str]) {
        match r {
            Err(Error::Tokenizer { source_name, msg }) => {
                let full = format!("{source_name}: {msg}");
                for n in needles {
                    assert!(full.contains(n), "`{full}` does not mention `{n}`");
                }
            }
            other => panic!("expected Error::Tokenizer, got {other:?}"),
        }
    }

    #[test]
    fn missing_tokens_names_source_and_key() {
        let mut md = tiny_gpt2();
        md.remove(KEY_TOKENS);
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "broken.gguf"),
            &["broken.gguf", KEY_TOKENS, "missing"],
        );
    }

    #[test]
    fn missing_model_and_unknown_model() {
        let mut md = tiny_gpt2();
        md.remove(KEY_MODEL);
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "a.gguf"),
            &["a.gguf", KEY_MODEL],
        );
        md.insert(KEY_MODEL.to_string(), Value::String("wordpiece".into()));
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "a.gguf"),
            &["wordpiece", "not supported"],
        );
    }

    #[test]
    fn wrong_types_are_reported() {
        let mut md = tiny_gpt2();
        md.insert(
            KEY_TOKENS.to_string(),
            Value::Array(vec![Value::String("a".into()), Value::U32(3)]),
        );
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "t.gguf"),
            &[KEY_TOKENS, "element 1", "u32"],
        );

        let mut md = tiny_gpt2();
        md.insert(KEY_BOS.to_string(), Value::String("<s>".into()));
        expect_tokenizer_err(Tokenizer::from_gguf_metadata(&md, "t.gguf"), &[KEY_BOS]);

        let mut md = tiny_gpt2();
        md.insert(KEY_BOS.to_string(), Value::U32(999));
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "t.gguf"),
            &[KEY_BOS, "999", "outside"],
        );

        let mut md = tiny_gpt2();
        md.insert(
            KEY_TOKEN_TYPE.to_string(),
            Value::Array(vec![Value::I32(1)]),
        );
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "t.gguf"),
            &[KEY_TOKEN_TYPE, "1 entries"],
        );

        let mut md = tiny_gpt2();
        md.remove(KEY_MERGES);
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "t.gguf"),
            &[KEY_MERGES, "missing"],
        );

        let mut md = tiny_gpt2();
        md.insert(KEY_MERGES.to_string(), strings(&["h i x"]));
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "t.gguf"),
            &[KEY_MERGES, "element 0"],
        );

        let mut md = tiny_gemma();
        md.remove(KEY_SCORES);
        md.insert(KEY_ARCH.to_string(), Value::String("llama".into()));
        expect_tokenizer_err(
            Tokenizer::from_gguf_metadata(&md, "t.gguf"),
            &[KEY_SCORES, "missing"],
        );
    }

    #[test]
    fn byte_level_has_no_prefix_space_and_parses_specials() {
        let tok = Tokenizer::from_gguf_metadata(&tiny_gpt2(), "t.gguf").unwrap();
        assert!(!tok.adds_bos());
        assert_eq!(tok.encode("hi hi").unwrap(), vec![5, 6]);
        assert_eq!(tok.encode(" hi").unwrap(), vec![6]);
        assert_eq!(tok.encode("<s>hi</s>").unwrap(), vec![0, 5, 1]);
        assert_eq!(tok.encode("hi<tool>hi").unwrap(), vec![5, 8, 5]);
        assert_eq!(tok.encode_with("hi", true).unwrap(), vec![0, 5]);
        assert_eq!(tok.decode(&[0, 5, 6, 7]).unwrap(), "<s>hi hi\n");
        assert_eq!(tok.vocab_size(), 11);
        assert_eq!(tok.token_to_id("Ġhi"), Some(6));
        assert_eq!(tok.id_to_token(6).as_deref(), Some("Ġhi"));
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
        assert_eq!(
            (tok.bos_token(), tok.eos_token()),
            (Some("<s>"), Some("</s>"))
        );
        expect_tokenizer_err(tok.decode(&[11]), &["11", "outside"]);
    }

    #[test]
    fn smollm_pre_tokenizer_splits_digits() {
        let mut md = tiny_gpt2();
        md.insert(KEY_PRE.to_string(), Value::String("smollm".into()));
        let tok = Tokenizer::from_gguf_metadata(&md, "t.gguf").unwrap();
        assert_eq!(tok.encode("12").unwrap(), vec![9, 10]);
    }

    #[test]
    fn add_bos_flag_is_honoured() {
        let mut md = tiny_gpt2();
        md.insert(KEY_ADD_BOS.to_string(), Value::Bool(true));
        let tok = Tokenizer::from_gguf_metadata(&md, "t.gguf").unwrap();
        assert!(tok.adds_bos());
        assert_eq!(tok.encode("hi").unwrap(), vec![0, 5]);
        assert_eq!(tok.encode("").unwrap(), vec![0]);
        assert_eq!(tok.encode_with("hi", false).unwrap(), vec![5]);
    }

    #[test]
    fn gemma_style_sentencepiece() {
        let tok = Tokenizer::from_gguf_metadata(&tiny_gemma(), "g.gguf").unwrap();
        assert!(tok.adds_bos());
        // No dummy prefix; `▁` for spaces; runs of spaces respelled; "\n" an added token.
        assert_eq!(tok.encode("hi hi").unwrap(), vec![2, 265, 266]);
        assert_eq!(tok.id_to_token(5).as_deref(), Some("▁▁"));
        assert_eq!(tok.encode_with("  hi\n", false).unwrap(), vec![5, 265, 4]);
        // Byte fallback for characters outside the vocabulary.
        assert_eq!(
            tok.encode_with("é", false).unwrap(),
            vec![6 + 0xC3, 6 + 0xA9]
        );
        assert_eq!(
            tok.decode(&[2, 265, 266, 6 + 0xC3, 6 + 0xA9]).unwrap(),
            "<bos>hi hié"
        );
        assert_eq!(tok.encode_with("<eos>", false).unwrap(), vec![1]);
    }

    #[test]
    fn generated_merges_follow_the_reference_order() {
        let spelled: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vocab = vocab_of(&spelled);
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0];
        let merges = merges_from_vocab(&spelled, &vocab, &scores);
        let expect = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(merges, expect);
    }

    #[test]
    fn chat_template_renders_like_transformers() {
        let mut md = tiny_gpt2();
        md.insert(
            KEY_CHAT_TEMPLATE.to_string(),
            Value::String(
                "{% for m in messages %}\n{{ '<' + m['role'] + '>' }}{{ m.content.strip() }}\n{% endfor %}\n{% if add_generation_prompt %}{{ eos_token }}{% endif %}\n"
                    .into(),
            ),
        );
        let tok = Tokenizer::from_gguf_metadata(&md, "t.gguf").unwrap();
        let msgs = [ChatMessage::system(" be brief "), ChatMessage::user("hi")];
        // trim_blocks drops the newline after a block tag; the final newline is dropped too.
        assert_eq!(
            tok.apply_chat_template(&msgs, true).unwrap(),
            "<system>be brief\n<user>hi\n</s>"
        );
        assert_eq!(
            tok.apply_chat_template(&msgs, false).unwrap(),
            "<system>be brief\n<user>hi\n"
        );
    }

    #[test]
    fn chat_template_errors() {
        let tok = Tokenizer::from_gguf_metadata(&tiny_gpt2(), "t.gguf").unwrap();
        match tok.apply_chat_template(&[ChatMessage::user("x")], true) {
            Err(Error::ChatTemplate { source_name, msg }) => {
                assert_eq!(source_name, "t.gguf");
                assert!(msg.contains("no chat template"), "{msg}");
            }
            other => panic!("expected ChatTemplate error, got {other:?}"),
        }
        let mut tok = tok;
        tok.set_chat_template(Some("{{ raise_exception('roles must alternate') }}".into()));
        match tok.encode_chat(&[ChatMessage::user("x")], true) {
            Err(Error::ChatTemplate { msg, .. }) => {
                assert!(msg.contains("roles must alternate"), "{msg}")
            }
            other => panic!("expected ChatTemplate error, got {other:?}"),
        }
        tok.set_chat_template(Some("{% for %}".into()));
        assert!(matches!(
            tok.apply_chat_template(&[], false),
            Err(Error::ChatTemplate { .. })
        ));
    }

    #[test]
    fn encode_chat_never_doubles_bos() {
        let mut md = tiny_gemma();
        md.insert(
            KEY_CHAT_TEMPLATE.to_string(),
            Value::String(
                "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}".into(),
            ),
        );
        let mut tok = Tokenizer::from_gguf_metadata(&md, "g.gguf").unwrap();
        assert_eq!(
            tok.encode_chat(&[ChatMessage::user("hi")], false).unwrap(),
            vec![2, 265]
        );
        tok.set_chat_template(Some(
            "{% for m in messages %}{{ m.content }}{% endfor %}".into(),
        ));
        assert_eq!(
            tok.encode_chat(&[ChatMessage::user("hi")], false).unwrap(),
            vec![2, 265]
        );
    }

    #[test]
    fn tojson_matches_python() {
        let mut tok = Tokenizer::from_gguf_metadata(&tiny_gpt2(), "t.gguf").unwrap();
        tok.set_chat_template(Some(
            "{{ messages[0] | tojson }}|{{ [1, 2.5, none, true, 'é<'] | tojson }}|{{ {'a': [1]} | tojson(indent=2) }}".into(),
        ));
        let out = tok
            .apply_chat_template(&[ChatMessage::user("say \"hi\"\n")], false)
            .unwrap();
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"say \\\"hi\\\"\\n\"}|[1, 2.5, null, true, \"é<\"]|{\n  \"a\": [\n    1\n  ]\n}"
        );
    }

    #[test]
    fn hf_dir_round_trip() {
        let mut md = tiny_gemma();
        md.insert(
            KEY_CHAT_TEMPLATE.to_string(),
            Value::String("{{ bos_token }}x".into()),
        );
        let tok = Tokenizer::from_gguf_metadata(&md, "g.gguf").unwrap();
        let dir =
            std::env::temp_dir().join(format!("puppetlens-tokenize-unit-{}", std::process::id()));
        tok.save_hf_dir(&dir).unwrap();
        let back = Tokenizer::from_hf_dir(&dir).unwrap();
        for text in ["hi hi", "  hi\n", "é<eos>", ""] {
            assert_eq!(
                back.encode(text).unwrap(),
                tok.encode(text).unwrap(),
                "{text:?}"
            );
        }
        assert_eq!(back.chat_template(), tok.chat_template());
        assert_eq!(
            (back.bos_id(), back.eos_id(), back.adds_bos()),
            (Some(2), Some(1), true)
        );
        assert_eq!(back.vocab_size(), tok.vocab_size());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hf_dir_errors() {
        let dir = std::env::temp_dir().join(format!(
            "puppetlens-tokenize-missing-{}",
            std::process::id()
        ));
        match Tokenizer::from_hf_dir(&dir) {
            Err(Error::Io { path, .. }) => assert!(path.ends_with("tokenizer.json")),
            other => panic!("expected Io error, got {other:?}"),
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "{not json").unwrap();
        expect_tokenizer_err(
            Tokenizer::from_hf_dir(&dir),
            &["tokenizer.json", "cannot parse"],
        );
        let tok = Tokenizer::from_gguf_metadata(&tiny_gpt2(), "t.gguf").unwrap();
        tok.save_hf_dir(&dir).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"bos_token": "<nope>"}"#,
        )
        .unwrap();
        expect_tokenizer_err(
            Tokenizer::from_hf_dir(&dir),
            &["tokenizer_config.json", "bos_token", "<nope>"],
        );
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"add_bos_token": "yes"}"#,
        )
        .unwrap();
        expect_tokenizer_err(Tokenizer::from_hf_dir(&dir), &["add_bos_token", "bool"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
