//! CSV files: an RFC 4180 reader that names file, line and field in its errors, labeled
//! statements and numeric targets.

use super::*;

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
pub(super) type CsvTable = (Vec<String>, Vec<(usize, Vec<String>)>);

pub(super) fn read_csv(path: &Path) -> Result<CsvTable> {
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

pub(super) fn parse_label(s: &str) -> Option<bool> {
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
