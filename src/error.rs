//! The crate's error type.
//!
//! Every fallible call in puppetlens returns [`Result<T>`]. Variants name the file, field, layer or
//! shape at fault so that a message alone tells the user what to fix.
//!
//! ```
//! use puppetlens::{Error, HookPoint};
//! let err = "blocks.x.hook_resid_post".parse::<HookPoint>().unwrap_err();
//! assert!(matches!(err, Error::BadHookName { .. }));
//! assert!(err.to_string().contains("blocks.x.hook_resid_post"));
//! ```

use std::path::PathBuf;

/// Everything that can go wrong in puppetlens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A checkpoint file is malformed (truncated, corrupt header, bad tensor table).
    #[error("{path}: malformed checkpoint: {msg}")]
    Checkpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A metadata or config field that the model needs is missing or has the wrong type.
    #[error("{path}: field `{field}`: {msg}")]
    Config {
        /// The file (GGUF or config.json) at fault.
        path: PathBuf,
        /// The metadata key or config.json field.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// The checkpoint's architecture is not one puppetlens implements.
    #[error("{path}: unknown architecture `{arch}` (supported: {supported})")]
    UnknownArchitecture {
        /// The file declaring it.
        path: PathBuf,
        /// The architecture name found.
        arch: String,
        /// The names puppetlens knows.
        supported: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's (Hugging Face) name.
        name: String,
    },
    /// A tensor has a storage type puppetlens cannot read.
    #[error("{path}: tensor `{name}` has unsupported type {dtype}")]
    UnsupportedTensorType {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The type found.
        dtype: String,
    },
    /// A tensor or vector has the wrong shape.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        /// What was checked (a tensor name, a hook point, a steering vector...).
        what: String,
        /// The expected shape.
        expected: String,
        /// The shape found.
        got: String,
    },
    /// A tensor has the wrong dtype or lives on the wrong device.
    #[error("{what}: expected {expected}, got {got}")]
    DtypeOrDevice {
        /// What was checked.
        what: String,
        /// The expected dtype/device.
        expected: String,
        /// The dtype/device found.
        got: String,
    },
    /// A layer index is out of range for the model.
    #[error("layer {layer} out of range: the model has {n_layers} layers (0..{n_layers})")]
    LayerOutOfRange {
        /// The layer asked for.
        layer: usize,
        /// How many layers the model has.
        n_layers: usize,
    },
    /// A hook point name could not be parsed.
    #[error("`{name}` is not a hook point name (expected e.g. `blocks.3.hook_resid_post`, `hook_embed`, `ln_final.hook_normalized`)")]
    BadHookName {
        /// The text given.
        name: String,
    },
    /// A prompt was empty.
    #[error("prompt {index} is empty (no tokens)")]
    EmptyPrompt {
        /// Index of the prompt in its batch.
        index: usize,
    },
    /// A prompt is longer than the model's context.
    #[error("prompt {index} has {len} tokens, more than the model's context of {max}")]
    PromptTooLong {
        /// Index of the prompt in its batch.
        index: usize,
        /// Its length in tokens.
        len: usize,
        /// The model's context length.
        max: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} at prompt {index} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// Index of the prompt in its batch.
        index: usize,
        /// The token id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Tokenizer construction or use failed.
    #[error("tokenizer ({source_name}): {msg}")]
    Tokenizer {
        /// Where the tokenizer came from (a file path or a GGUF).
        source_name: String,
        /// What went wrong.
        msg: String,
    },
    /// A chat template failed to parse or render.
    #[error("chat template ({source_name}): {msg}")]
    ChatTemplate {
        /// Where the template came from.
        source_name: String,
        /// What went wrong.
        msg: String,
    },
    /// Downloading or verifying a model failed.
    #[error("fetch {model}: {msg}")]
    Fetch {
        /// The model being fetched.
        model: String,
        /// What went wrong.
        msg: String,
    },
    /// An index (a head, a neuron, a position) is past the end of its axis.
    #[error("{what}: index {index} out of range (length {len})")]
    IndexOutOfRange {
        /// What was indexed, naming the hook point or option.
        what: String,
        /// The index asked for.
        index: usize,
        /// The axis length.
        len: usize,
    },
    /// An argument is invalid in a way no other variant describes.
    #[error("invalid argument `{name}`: {msg}")]
    InvalidArgument {
        /// The argument.
        name: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A figure could not be laid out, rendered or encoded.
    #[error("{path}: cannot draw figure: {msg}")]
    Plot {
        /// The figure file at fault.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Training stopped at a step whose loss or gradient is not finite.
    #[error("{objective} step {step}: {msg}{}", last_good.as_ref().map(|d| format!("; the last good adapter is in {}", d.display())).unwrap_or_default())]
    Training {
        /// `"sft"` or `"dpo"`.
        objective: String,
        /// The failed step, from 1.
        step: usize,
        /// What was not finite.
        msg: String,
        /// The checkpoint directory holding the last good adapter, when training kept one.
        last_good: Option<PathBuf>,
    },
    /// An error from linfa (a dataset check or a model's fit), as text.
    #[error("linfa: {0}")]
    Linfa(String),
    /// An error from candle's tensor library (shown without candle's backtrace).
    #[error("{}", candle_msg(.0))]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad file: `field` names where in it (a record, line, key or `(whole file)`).
    pub fn config(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<linfa::Error> for Error {
    fn from(e: linfa::Error) -> Self {
        Error::Linfa(e.to_string())
    }
}

/// candle's error text without any backtrace it carries.
pub(crate) fn candle_msg(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_msg(inner),
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", candle_msg(inner))
        }
        other => other.to_string(),
    }
}
