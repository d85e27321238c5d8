//! Tokenizers rebuilt from GGUF metadata: the metadata reader, byte-level BPE (GPT-2 style) and
//! SentencePiece (Llama / Gemma style) vocabularies, merges recovered from scores.

use super::*;

/// Typed access to GGUF metadata, with errors that name the file and the key.
pub(super) struct Meta<'a> {
    pub(super) md: &'a HashMap<String, Value>,
    pub(super) source: &'a str,
}

impl<'a> Meta<'a> {
    pub(super) fn err(&self, key: &str, msg: impl fmt::Display) -> Error {
        Error::Tokenizer {
            source_name: self.source.to_string(),
            msg: format!("metadata key `{key}` {msg}"),
        }
    }

    pub(super) fn tok_err(&self, msg: impl Into<String>) -> Error {
        Error::Tokenizer {
            source_name: self.source.to_string(),
            msg: msg.into(),
        }
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(key, format!("should be a string, found {}", type_name(v)))),
        }
    }

    pub(super) fn required_str(&self, key: &str) -> Result<&'a str> {
        self.str(key)?.ok_or_else(|| self.err(key, "is missing"))
    }

    pub(super) fn u32(&self, key: &str) -> Result<Option<u32>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(v) => match as_i64(v).and_then(|i| u32::try_from(i).ok()) {
                Some(i) => Ok(Some(i)),
                None => Err(self.err(key, format!("should be a token id, found {}", describe(v)))),
            },
        }
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("should be a bool, found {}", describe(v)))),
        }
    }

    pub(super) fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.err(key, format!("should be an array, found {}", describe(v)))),
        }
    }

    pub(super) fn required_str_array(&self, key: &str) -> Result<Vec<&'a str>> {
        let arr = self
            .array(key)?
            .ok_or_else(|| self.err(key, "is missing"))?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.err(
                    key,
                    format!("element {i} should be a string, found {}", type_name(other)),
                )),
            })
            .collect()
    }

    pub(super) fn int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(arr) = self.array(key)? else {
            return Ok(None);
        };
        arr.iter()
            .enumerate()
            .map(|(i, v)| {
                as_i64(v).ok_or_else(|| {
                    self.err(
                        key,
                        format!("element {i} should be an integer, found {}", type_name(v)),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub(super) fn float_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(arr) = self.array(key)? else {
            return Ok(None);
        };
        arr.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::F32(f) => Ok(f64::from(*f)),
                Value::F64(f) => Ok(*f),
                other => as_i64(other).map(|i| i as f64).ok_or_else(|| {
                    self.err(
                        key,
                        format!("element {i} should be a number, found {}", type_name(other)),
                    )
                }),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

pub(super) fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::I8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}

/// A short description of a value for error messages (never a whole vocabulary).
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {} values", a.len()),
        Value::String(s) if s.chars().count() > 40 => {
            format!("a string `{}...`", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("a string `{s}`"),
        Value::Bool(b) => format!("bool {b}"),
        Value::F32(f) => format!("f32 {f}"),
        Value::F64(f) => format!("f64 {f}"),
        other => match as_i64(other) {
            Some(i) => format!("{} {i}", type_name(other)),
            None => type_name(other).to_string(),
        },
    }
}

/// GPT-2's reversible mapping of bytes to printable characters.
pub(super) fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let printable = (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        // Every value here is below 0x200, a valid scalar value.
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// The regex a byte-level vocabulary's merges were learned with, by `tokenizer.ggml.pre`, for the
/// families whose split is not GPT-2's (as `transformers` maps them).
pub(super) fn byte_level_split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

pub(super) fn vocab_of(tokens: &[String]) -> Vocab {
    // Later duplicates win, as in a Python dict built from the list.
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
pub(super) fn build_byte_level(
    meta: &Meta,
    tokens: &[&str],
    merges: &[&str],
    pre: Option<&str>,
) -> Result<HfTokenizer> {
    let table = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    // Tokens written with characters outside the byte alphabet are respelled byte by byte.
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.chars().all(|c| alphabet.contains(&c)) {
                (*t).to_string()
            } else {
                t.bytes().map(|b| table[b as usize]).collect()
            }
        })
        .collect();
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut parts = m.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(meta.err(
                    KEY_MERGES,
                    format!("element {i} (`{m}`) is not two tokens separated by one space"),
                )),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab = vocab_of(&spelled);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| meta.tok_err(format!("cannot build the BPE model: {e}")))?;
    let mut inner = HfTokenizer::new(bpe);

    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        Some("smollm") | Some("starcoder") => PreTokenizerSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])
        .into(),
        Some(p) => match byte_level_split_regex(p) {
            Some(re) => {
                let split = Split::new(
                    SplitPattern::Regex(re.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| meta.tok_err(format!("cannot compile the `{p}` split regex: {e}")))?;
                PreTokenizerSequence::new(vec![
                    PreTokenizerWrapper::Split(split),
                    PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
                ])
                .into()
            }
            None => byte_level.into(),
        },
        None => byte_level.into(),
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok(inner)
}

/// Which reference class a SentencePiece GGUF maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpmFamily {
    /// `GemmaTokenizer` via the Gemma GGUF fixes: spaces respelled, merges in file order.
    Gemma,
    /// `GemmaTokenizer` for `tokenizer.ggml.model = "gemma4"`: merges by score.
    Gemma4,
    /// Phi-3: `▁` prepended by a normalizer.
    Phi3,
    /// `LlamaTokenizer`: `Metaspace`, prefix `▁` on the first word when asked.
    Llama { add_space_prefix: bool },
}

/// Python's `str.isspace` for one character.
pub(super) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// SentencePiece vocabularies (`tokenizer.ggml.model = "llama"` or `"gemma4"`), as a BPE model
/// with byte fallback.
pub(super) fn build_sentencepiece(
    meta: &Meta,
    tokens: &[&str],
    family: SpmFamily,
) -> Result<HfTokenizer> {
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            // Gemma files store runs of spaces with real spaces; the vocabulary spells them `▁`.
            if family == SpmFamily::Gemma && t.contains(' ') && t.chars().all(py_isspace) {
                "\u{2581}".repeat(t.chars().count())
            } else {
                (*t).to_string()
            }
        })
        .collect();
    let vocab = vocab_of(&spelled);

    let merges = match meta.array(KEY_MERGES)? {
        Some(_) => meta
            .required_str_array(KEY_MERGES)?
            .iter()
            .enumerate()
            .map(|(i, m)| match m.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(meta.err(
                    KEY_MERGES,
                    format!("element {i} (`{m}`) is not two tokens separated by one space"),
                )),
            })
            .collect::<Result<Vec<_>>>()?,
        None => {
            let scores: Vec<f64> = if family == SpmFamily::Gemma {
                // Gemma's merge order is the order of the tokens in the file.
                (0..spelled.len()).map(|i| -(i as f64)).collect()
            } else {
                let scores = meta.float_array(KEY_SCORES)?.ok_or_else(|| {
                    meta.err(KEY_SCORES, "is missing (needed to recover the merges)")
                })?;
                if scores.len() != spelled.len() {
                    return Err(meta.err(
                        KEY_SCORES,
                        format!(
                            "has {} entries but there are {} tokens",
                            scores.len(),
                            spelled.len()
                        ),
                    ));
                }
                scores
            };
            merges_from_vocab(&spelled, &vocab, &scores)
        }
    };

    let unk = match meta.u32(KEY_UNK)? {
        Some(id) => spelled.get(id as usize).cloned(),
        None => vocab.contains_key("<unk>").then(|| "<unk>".to_string()),
    };
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| meta.tok_err(format!("cannot build the BPE model: {e}")))?;
    let mut inner = HfTokenizer::new(bpe);

    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| {
            meta.tok_err(format!(
                "cannot build a `{from}` -> `{to}` replacement: {e}"
            ))
        })
    };
    let mut decoders = vec![
        DecoderWrapper::Replace(replace("\u{2581}", " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    match family {
        SpmFamily::Gemma | SpmFamily::Gemma4 => {
            inner
                .with_normalizer(Some(NormalizerWrapper::Replace(replace(" ", "\u{2581}")?)))
                .map_err(|e| meta.tok_err(format!("cannot set the normalizer: {e}")))?;
            let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .map_err(|e| meta.tok_err(format!("cannot build the pre-tokenizer: {e}")))?;
            inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
        }
        SpmFamily::Phi3 => {
            let normalizer = NormalizerSequence::new(vec![
                NormalizerWrapper::Prepend(Prepend::new("\u{2581}".to_string())),
                NormalizerWrapper::Replace(replace(" ", "\u{2581}")?),
            ]);
            inner
                .with_normalizer(Some(NormalizerWrapper::Sequence(normalizer)))
                .map_err(|e| meta.tok_err(format!("cannot set the normalizer: {e}")))?;
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }
        SpmFamily::Llama { add_space_prefix } => {
            let scheme = if add_space_prefix {
                PrependScheme::First
            } else {
                PrependScheme::Never
            };
            inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
                '\u{2581}', scheme, false,
            ))));
            if add_space_prefix {
                decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
            }
        }
    }
    inner.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(inner)
}

/// Recovers BPE merges from a SentencePiece vocabulary, exactly as `transformers`'
/// `generate_merges(vocab, vocab_scores)` does: every split of every token into two tokens of the
/// vocabulary is a merge, ranked by the merged token's score (best first), then by the length of
/// the left part, then of the right part (longest first), ties keeping vocabulary order.
pub(super) fn merges_from_vocab(
    spelled: &[String],
    vocab: &Vocab,
    scores: &[f64],
) -> Vec<(String, String)> {
    struct Candidate {
        token: u32,
        split: u32,
        score: f64,
        len_l: u32,
        len_r: u32,
    }
    // A Python dict keeps a repeated key at its first position, with its last value; only a
    // vocabulary with repeated tokens needs the bookkeeping.
    let has_repeats = vocab.len() != spelled.len();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut candidates = Vec::with_capacity(spelled.len() * 2);
    let mut local = Vec::new();
    for (index, token) in spelled.iter().enumerate() {
        if has_repeats && !seen.insert(token.as_str()) {
            continue;
        }
        let Some(&last) = vocab.get(token.as_str()) else {
            continue;
        };
        let score = scores
            .get(last as usize)
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
        let total = token.chars().count() as u32;
        local.clear();
        for (n_left, (pos, _)) in token.char_indices().enumerate().skip(1) {
            let (l, r) = token.split_at(pos);
            let Some(&lid) = vocab.get(l) else { continue };
            if let Some(&rid) = vocab.get(r) {
                local.push((lid, rid, pos as u32, n_left as u32));
            }
        }
        local.sort_unstable_by_key(|&(lid, rid, _, _)| (lid, rid));
        candidates.extend(local.iter().map(|&(_, _, pos, n_left)| Candidate {
            token: index as u32,
            split: pos,
            score,
            len_l: n_left,
            len_r: total - n_left,
        }));
    }
    // Stable, descending: equal keys keep their order, as with Python's `sorted(reverse=True)`.
    candidates.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
    });
    candidates
        .into_iter()
        .map(|c| {
            let (l, r) = spelled[c.token as usize].split_at(c.split as usize);
            (l.to_string(), r.to_string())
        })
        .collect()
}
