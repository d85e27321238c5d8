//! One loader for every dataset file the project reads: [`load_any`] tells the format from the
//! file (labeled statements, A/B questions, contrast pairs, labeled instructions) and keeps the
//! split each record carries; [`Dataset::split_records`] gives train / val / test parts.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    config_err, load_ab_json, load_labeled_csv, load_labeled_instructions, load_numeric,
    load_pairs_jsonl, load_split_tags, split, split_stratified, AbItem, Labeled, Pair, Scored,
    Split, SplitPart,
};
use crate::{Error, Result};

/// A dataset's records, in file order: one of the project's three kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    /// Statements or instructions with a true/false label (`statement,label` CSV, or
    /// `instruction` + `label` JSONL).
    Labeled(Vec<Labeled>),
    /// Contrast pairs (`positive`, `negative`).
    Pairs(Vec<Pair>),
    /// A/B questions (CAA's `question`, `answer_matching_behavior`,
    /// `answer_not_matching_behavior`).
    Ab(Vec<AbItem>),
}

/// A dataset file: its records and, when the file records one, each record's split.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file read.
    pub path: PathBuf,
    /// Its records, in file order.
    pub records: Records,
    /// Each record's split, when the file records one (a `split` field or column).
    pub tags: Option<Vec<SplitPart>>,
}

/// The format of a dataset file, told from its extension and its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    /// A `.csv` file of labeled statements (`statement,label`).
    Csv,
    /// JSON or JSONL A/B questions.
    Ab,
    /// JSONL contrast pairs.
    Pairs,
    /// JSON or JSONL instructions with labels.
    Instructions,
}

/// Tells the format of `path` (from its extension and its first record) and whether its records
/// carry a `split`. A file of no known format is an [`Error::Config`] naming the record and the
/// keys it has.
pub fn sniff(path: impl AsRef<Path>) -> Result<(DatasetFormat, bool)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_start_matches('\u{feff}');
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        let header = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let has_split = header
            .split(',')
            .any(|h| h.trim().trim_matches('"').eq_ignore_ascii_case("split"));
        return Ok((DatasetFormat::Csv, has_split));
    }
    let (first, field) = if text.trim_start().starts_with('[') {
        let first = serde_json::from_str::<Vec<Value>>(text)
            .ok()
            .and_then(|v| v.into_iter().next());
        (first, "[0]".to_string())
    } else {
        match text.lines().enumerate().find(|(_, l)| !l.trim().is_empty()) {
            Some((i, l)) => (
                serde_json::from_str::<Value>(l).ok(),
                format!("line {}", i + 1),
            ),
            None => (None, "(whole file)".to_string()),
        }
    };
    let Some(Value::Object(obj)) = first else {
        // Not JSON records (or an empty file): the loader says what is wrong, naming the record.
        load_ab_json(path)?;
        return Err(config_err(path, field, "cannot tell the dataset's format"));
    };
    let has = |k: &str| obj.contains_key(k);
    let format = if has("question") || has("answer_matching_behavior") {
        DatasetFormat::Ab
    } else if has("positive") || has("negative") {
        DatasetFormat::Pairs
    } else if has("instruction") {
        DatasetFormat::Instructions
    } else {
        return Err(config_err(
            path,
            field,
            format!(
                "cannot tell the dataset's format from the keys {}: expected `question`, \
                 `answer_matching_behavior`, `answer_not_matching_behavior` (A/B questions), \
                 `positive`, `negative` (contrast pairs) or `instruction`, `label` (labeled \
                 instructions); labeled statements are a .csv file with `statement,label`",
                obj.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    Ok((format, has("split")))
}

/// Loads a dataset file of any of the project's formats, told from the file itself: labeled
/// statements (`.csv`), A/B questions, contrast pairs or labeled instructions (JSON or JSONL), with
/// each record's split when the file records one. `positive_label` is the label of instructions
/// that count as positive (e.g. `harmful`).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("pl-any-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("pairs.jsonl");
/// std::fs::write(&path, "{\"positive\": \"I love it\", \"negative\": \"I hate it\"}\n")?;
/// let ds = puppetlens::data::load_any(&path, "harmful")?;
/// assert_eq!(ds.records.kind(), "contrast pairs");
/// assert_eq!(ds.records.len(), 1);
/// assert!(ds.tags.is_none()); // no recorded split: `Dataset::split` makes a seeded one
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_any(path: impl AsRef<Path>, positive_label: &str) -> Result<Dataset> {
    Dataset::load(path, positive_label)
}

impl Dataset {
    /// Loads a dataset file of any of the project's formats: [`load_any`].
    pub fn load(path: impl AsRef<Path>, positive_label: &str) -> Result<Dataset> {
        let path = path.as_ref();
        let (format, has_split) = sniff(path)?;
        let records = match format {
            DatasetFormat::Csv => Records::Labeled(load_labeled_csv(path)?),
            DatasetFormat::Ab => Records::Ab(load_ab_json(path)?),
            DatasetFormat::Pairs => Records::Pairs(load_pairs_jsonl(path)?),
            DatasetFormat::Instructions => {
                Records::Labeled(load_labeled_instructions(path, positive_label)?)
            }
        };
        let tags = if has_split {
            let tags = load_split_tags(path)?;
            if tags.len() != records.len() {
                return Err(config_err(
                    path,
                    "split",
                    format!("{} split tags for {} records", tags.len(), records.len()),
                ));
            }
            Some(tags)
        } else {
            None
        };
        Ok(Dataset {
            path: path.to_path_buf(),
            records,
            tags,
        })
    }

    /// Loads an A/B question file, or says (naming `command`, what needs them) that the file
    /// holds something else.
    pub fn load_ab(path: impl AsRef<Path>, command: &str) -> Result<(Dataset, Vec<AbItem>)> {
        let ds = Dataset::load(path, "harmful")?;
        let items = ds.ab_items(command)?.to_vec();
        Ok((ds, items))
    }

    /// The A/B questions of the file, or says (naming `command`, what needs them) that it holds
    /// something else.
    pub fn ab_items(&self, command: &str) -> Result<&[AbItem]> {
        match &self.records {
            Records::Ab(items) => Ok(items),
            other => Err(config_err(
                &self.path,
                "(whole file)",
                format!(
                    "holds {}; `{command}` needs A/B questions (`question`, \
                     `answer_matching_behavior`, `answer_not_matching_behavior`)",
                    other.kind()
                ),
            )),
        }
    }

    /// The file's stem, for reports.
    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// `items` split as the file records, or 60/20/20 stratified by `class` with seed 0.
    pub fn split<T: Clone, K: Ord>(
        &self,
        items: &[T],
        class: impl Fn(&T) -> K,
    ) -> Result<Split<T>> {
        match &self.tags {
            Some(tags) => Split::from_tags(items.to_vec(), tags),
            None => split_stratified(items, (0.6, 0.2, 0.2), 0, class),
        }
    }

    /// How the split was made, for reports.
    pub fn split_note(&self) -> &'static str {
        if self.tags.is_some() {
            "split as recorded in the file"
        } else {
            "split 60/20/20 stratified, seed 0"
        }
    }
}

impl Records {
    /// How many records.
    pub fn len(&self) -> usize {
        match self {
            Records::Labeled(v) => v.len(),
            Records::Pairs(v) => v.len(),
            Records::Ab(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the records are, in words (`labeled statements`, `contrast pairs`, `A/B questions`).
    pub fn kind(&self) -> &'static str {
        match self {
            Records::Labeled(_) => "labeled statements",
            Records::Pairs(_) => "contrast pairs",
            Records::Ab(_) => "A/B questions",
        }
    }
}

impl Dataset {
    /// The records split into train, val and test parts, in that order: as the file records, or
    /// 60/20/20 with seed 0, stratified by label (labeled records) or matching answer (A/B).
    pub fn split_records(&self) -> Result<[(SplitPart, Records); 3]> {
        fn parts<T>(s: Split<T>, wrap: impl Fn(Vec<T>) -> Records) -> [(SplitPart, Records); 3] {
            [
                (SplitPart::Train, wrap(s.train)),
                (SplitPart::Val, wrap(s.val)),
                (SplitPart::Test, wrap(s.test)),
            ]
        }
        Ok(match &self.records {
            Records::Labeled(v) => parts(self.split(v, |l| l.label)?, Records::Labeled),
            Records::Pairs(v) => parts(self.split(v, |_| 0u8)?, Records::Pairs),
            Records::Ab(v) => parts(self.split(v, |it| it.matching.clone())?, Records::Ab),
        })
    }
}

/// A file of texts with a numeric target ([`load_numeric`]), split into train, val and test.
#[derive(Debug, Clone)]
pub struct NumericDataset {
    /// The file read.
    pub path: PathBuf,
    /// The target's field (JSON) or column (CSV).
    pub field: String,
    /// The items, split as the file records (a `split` field or column) or 60/20/20 with seed 0.
    pub parts: Split<Scored>,
    /// How the split was made, for reports.
    pub split_note: &'static str,
}

impl NumericDataset {
    /// Loads the texts and `field` of `path` ([`load_numeric`]) and splits them: as recorded when
    /// the first record (or the CSV header) has a `split`, else 60/20/20 with seed 0 ([`split`]).
    ///
    /// ```no_run
    /// let ds = puppetlens::data::NumericDataset::load("probes/numbers.jsonl", "value")?;
    /// println!("{} training items ({})", ds.parts.train.len(), ds.split_note);
    /// # Ok::<(), puppetlens::Error>(())
    /// ```
    pub fn load(path: impl AsRef<Path>, field: &str) -> Result<NumericDataset> {
        let path = path.as_ref();
        let items = load_numeric(path, field)?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let has_split =
            first.contains("\"split\"") || first.split(',').any(|h| h.trim() == "split");
        let (parts, split_note) = if has_split {
            let tags = load_split_tags(path)?;
            (
                Split::from_tags(items, &tags)?,
                "split as recorded in the file",
            )
        } else {
            (split(&items, (0.6, 0.2, 0.2), 0)?, "split 60/20/20, seed 0")
        };
        Ok(NumericDataset {
            path: path.to_path_buf(),
            field: field.to_string(),
            parts,
            split_note,
        })
    }
}
