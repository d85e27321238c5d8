//! Prompts: plain text or a chat template, and A/B questions answered by letter or by the
//! answers' own words.

use super::*;

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
///
/// What rendering an [`AbItem`] gave (the text as encoded, the tokens of `A` and `B`, which
/// letter shows the behaviour); [`crate::eval::AbCase::from`] keeps what scoring reads.
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
pub(super) fn encode_prompt_text(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let starts_with_bos = tok
        .bos_token()
        .is_some_and(|b| !b.is_empty() && text.starts_with(b));
    tok.encode_with(text, tok.adds_bos() && !starts_with_bos)
}

/// Renders the chat for `user` (after `system`, if any) with the assistant turn opened.
pub(super) fn render_chat(tok: &Tokenizer, user: &str, system: Option<&str>) -> Result<String> {
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
pub(super) fn single_token_continuation(
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
pub(super) fn split_choices(item: &AbItem) -> Result<(String, String, String)> {
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
pub(super) fn content_first(answer: &str) -> String {
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
