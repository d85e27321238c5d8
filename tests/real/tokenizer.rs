//! Checks `puppetlens::tokenize` against the reference (Hugging Face) tokenizers of the two real
//! checkpoints, using the golden files written by `scripts/golden_tokens.py`.
//!
//! The GGUFs come from `puppetlens::fetch` (a no-op once cached).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use puppetlens::tokenize::{ChatMessage, Tokenizer};
use puppetlens::Error;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Golden {
    model: String,
    gguf: String,
    vocab_size: usize,
    bos_token: Option<String>,
    bos_id: Option<u32>,
    eos_token: Option<String>,
    eos_id: Option<u32>,
    add_bos_token: bool,
    chat_template_source: String,
    chat_template: Option<String>,
    tokens: std::collections::BTreeMap<String, String>,
    cases: Vec<Case>,
    chat: Vec<Chat>,
}

#[derive(Debug, Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_no_special: Vec<u32>,
    decoded: String,
    decoded_no_special: String,
}

#[derive(Debug, Deserialize)]
struct Chat {
    name: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    text: String,
    ids: Vec<u32>,
}

fn golden(model: &str) -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(format!("tokens_{model}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let golden: Golden =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(golden.model, model);
    golden
}

/// The tokenizer built from the model's GGUF, once per test binary; `None` when the file is absent.
fn load(model: &str, gguf: &str) -> Option<Tokenizer> {
    // Fetched like every real-checkpoint test (a no-op once cached).
    let path = puppetlens::fetch::fetch(model).unwrap_or_else(|e| panic!("fetching {model}: {e}"));
    assert!(path.ends_with(gguf), "{} is not {gguf}", path.display());
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&content, &path.display().to_string()).unwrap();
    let took = start.elapsed();
    eprintln!("{model}: tokenizer built in {took:?}");
    Some(tok)
}

struct Model {
    golden: Golden,
    tok: Option<Tokenizer>,
}

fn smollm() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let golden = golden("smollm2-135m-instruct");
        let tok = load(&golden.model, &golden.gguf);
        Model { golden, tok }
    })
}

fn gemma() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let golden = golden("gemma-3-270m");
        let tok = load(&golden.model, &golden.gguf);
        Model { golden, tok }
    })
}

fn check_specials(m: &Model) {
    let Some(tok) = &m.tok else { return };
    let g = &m.golden;
    assert_eq!(tok.vocab_size(), g.vocab_size, "{}: vocab size", g.model);
    assert_eq!(tok.bos_id(), g.bos_id, "{}: bos id", g.model);
    assert_eq!(tok.eos_id(), g.eos_id, "{}: eos id", g.model);
    assert_eq!(
        tok.bos_token(),
        g.bos_token.as_deref(),
        "{}: bos token",
        g.model
    );
    assert_eq!(
        tok.eos_token(),
        g.eos_token.as_deref(),
        "{}: eos token",
        g.model
    );
    assert_eq!(tok.adds_bos(), g.add_bos_token, "{}: adds bos", g.model);
    for (id, token) in &g.tokens {
        let id: u32 = id.parse().unwrap();
        assert_eq!(
            tok.id_to_token(id).as_deref(),
            Some(token.as_str()),
            "{}: id_to_token({id})",
            g.model
        );
        assert_eq!(
            tok.token_to_id(token),
            Some(id),
            "{}: token_to_id({token:?})",
            g.model
        );
    }
}

fn check_cases(m: &Model) {
    let Some(tok) = &m.tok else { return };
    let g = &m.golden;
    let mut failures = Vec::new();
    for case in &g.cases {
        let ids = tok.encode(&case.text).unwrap();
        if ids != case.ids {
            failures.push(format!(
                "encode({:?}):\n  got      {ids:?}\n  expected {:?}",
                case.text, case.ids
            ));
        }
        let raw = tok.encode_with(&case.text, false).unwrap();
        if raw != case.ids_no_special {
            failures.push(format!(
                "encode_with({:?}, false):\n  got      {raw:?}\n  expected {:?}",
                case.text, case.ids_no_special
            ));
        }
        let with_bos = tok.encode_with(&case.text, tok.adds_bos()).unwrap();
        assert_eq!(
            with_bos, ids,
            "{}: encode_with(adds_bos) vs encode on {:?}",
            g.model, case.text
        );
    }
    assert!(
        failures.is_empty(),
        "{}: {} mismatches\n{}",
        g.model,
        failures.len(),
        failures.join("\n")
    );
}

fn check_decode(m: &Model) {
    let Some(tok) = &m.tok else { return };
    let g = &m.golden;
    for case in &g.cases {
        assert_eq!(
            tok.decode(&case.ids).unwrap(),
            case.decoded,
            "{}: decode of {:?}",
            g.model,
            case.text
        );
        assert_eq!(
            tok.decode(&case.ids_no_special).unwrap(),
            case.decoded_no_special,
            "{}: decode (no special) of {:?}",
            g.model,
            case.text
        );
        // Plain strings (those the reference round-trips) come back unchanged.
        if case.decoded_no_special == case.text {
            let ids = tok.encode_with(&case.text, false).unwrap();
            assert_eq!(
                tok.decode(&ids).unwrap(),
                case.text,
                "{}: round trip",
                g.model
            );
        }
    }
}

/// The tokenizer the chat cases use: the GGUF's own template, or the one the golden file applied.
fn chat_tokenizer(m: &Model) -> Option<Tokenizer> {
    let tok = m.tok.as_ref()?;
    let g = &m.golden;
    let mut tok = tok.clone();
    if g.chat_template_source == "gguf" {
        assert_eq!(
            tok.chat_template(),
            g.chat_template.as_deref(),
            "{}: chat template",
            g.model
        );
    } else {
        assert!(
            tok.chat_template().is_none(),
            "{}: expected no chat template in the GGUF",
            g.model
        );
        tok.set_chat_template(g.chat_template.clone());
    }
    Some(tok)
}

fn check_chat(m: &Model) {
    let Some(tok) = chat_tokenizer(m) else { return };
    let g = &m.golden;
    assert!(!g.chat.is_empty());
    for chat in &g.chat {
        let text = tok
            .apply_chat_template(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(text, chat.text, "{}: chat `{}` text", g.model, chat.name);
        let ids = tok
            .encode_chat(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(ids, chat.ids, "{}: chat `{}` ids", g.model, chat.name);
        if let Some(bos) = tok.bos_id() {
            assert!(
                ids.len() < 2 || ids[..2] != [bos, bos],
                "{}: doubled BOS",
                g.model
            );
        }
    }
}

fn check_hf_round_trip(m: &Model) {
    let Some(tok) = chat_tokenizer(m) else { return };
    let g = &m.golden;
    let dir = std::env::temp_dir().join(format!(
        "puppetlens-tokenizer-test-{}-{}",
        std::process::id(),
        g.model
    ));
    tok.save_hf_dir(&dir).unwrap();
    let start = Instant::now();
    let back = Tokenizer::from_hf_dir(&dir).unwrap();
    eprintln!(
        "{}: tokenizer.json read back in {:?}",
        g.model,
        start.elapsed()
    );
    assert_eq!(back.vocab_size(), tok.vocab_size());
    assert_eq!((back.bos_id(), back.eos_id()), (tok.bos_id(), tok.eos_id()));
    assert_eq!(back.adds_bos(), tok.adds_bos());
    assert_eq!(back.chat_template(), tok.chat_template());
    for case in &g.cases {
        assert_eq!(
            back.encode(&case.text).unwrap(),
            case.ids,
            "{}: hf dir encode {:?}",
            g.model,
            case.text
        );
        assert_eq!(
            back.encode_with(&case.text, false).unwrap(),
            case.ids_no_special
        );
        assert_eq!(back.decode(&case.ids).unwrap(), case.decoded);
    }
    for chat in &g.chat {
        assert_eq!(
            back.encode_chat(&chat.messages, chat.add_generation_prompt)
                .unwrap(),
            chat.ids
        );
    }
    // Saving again over the same directory works (files are replaced atomically).
    back.save_hf_dir(&dir).unwrap();
    assert_eq!(
        Tokenizer::from_hf_dir(&dir)
            .unwrap()
            .encode("Hello world")
            .unwrap(),
        tok.encode("Hello world").unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smollm_special_tokens() {
    check_specials(smollm());
}

#[test]
fn smollm_golden_ids() {
    check_cases(smollm());
}

#[test]
fn smollm_decode() {
    check_decode(smollm());
}

#[test]
fn smollm_chat() {
    check_chat(smollm());
}

#[test]
fn smollm_hf_dir_round_trip() {
    check_hf_round_trip(smollm());
}

#[test]
fn smollm_has_no_prefix_space() {
    let Some(tok) = &smollm().tok else { return };
    // "Hello" and " Hello" are different tokens; nothing is prepended.
    let hello = tok.encode("Hello").unwrap();
    let spaced = tok.encode(" Hello").unwrap();
    assert_eq!(hello.len(), 1);
    assert_eq!(spaced.len(), 1);
    assert_ne!(hello, spaced);
    assert_eq!(tok.id_to_token(spaced[0]).as_deref(), Some("ĠHello"));
}

#[test]
fn gemma_special_tokens() {
    check_specials(gemma());
}

#[test]
fn gemma_golden_ids() {
    check_cases(gemma());
}

#[test]
fn gemma_decode() {
    check_decode(gemma());
}

#[test]
fn gemma_chat() {
    check_chat(gemma());
}

#[test]
fn gemma_hf_dir_round_trip() {
    check_hf_round_trip(gemma());
}

#[test]
fn gemma_gguf_has_no_chat_template() {
    let Some(tok) = &gemma().tok else { return };
    match tok.apply_chat_template(&[ChatMessage::user("hi")], true) {
        Err(Error::ChatTemplate { source_name, msg }) => {
            assert!(
                source_name.ends_with("gemma-3-270m-q4_k_m.gguf"),
                "{source_name}"
            );
            assert!(msg.contains("no chat template"), "{msg}");
        }
        other => panic!("expected Error::ChatTemplate, got {other:?}"),
    }
}

#[test]
fn gemma_template_rejects_bad_roles() {
    let Some(tok) = chat_tokenizer(gemma()) else {
        return;
    };
    let msgs = [ChatMessage::user("a"), ChatMessage::user("b")];
    match tok.apply_chat_template(&msgs, true) {
        Err(Error::ChatTemplate { msg, .. }) => {
            assert!(msg.contains("Conversation roles must alternate"), "{msg}")
        }
        other => panic!("expected Error::ChatTemplate, got {other:?}"),
    }
}

#[test]
fn gguf_without_tokens_names_the_key() {
    let Some(_) = &smollm().tok else { return };
    let golden = &smollm().golden;
    let path = puppetlens::fetch::fetch(&golden.model).unwrap();
    let mut content = Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    content.metadata.remove("tokenizer.ggml.tokens");
    match Tokenizer::from_gguf(&content, &path.display().to_string()) {
        Err(Error::Tokenizer { source_name, msg }) => {
            assert!(source_name.ends_with(&golden.gguf), "{source_name}");
            assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");
        }
        other => panic!("expected Error::Tokenizer, got {other:?}"),
    }
}

/// puppetlens's own Gemma 3 template renders every golden chat (made with the instruction-tuned
/// Gemma 3 template by `transformers`) to the same text and ids.
#[test]
fn gemma_builtin_template_matches_golden_chats() {
    let m = gemma();
    let Some(tok) = m.tok.as_ref() else { return };
    let mut tok = tok.clone();
    tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.to_string()));
    assert!(!m.golden.chat.is_empty());
    for chat in &m.golden.chat {
        let text = tok
            .apply_chat_template(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(text, chat.text, "chat `{}`", chat.name);
        let ids = tok
            .encode_chat(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        assert_eq!(ids, chat.ids, "chat `{}` ids", chat.name);
    }
}
