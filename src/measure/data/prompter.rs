//! [`Prompter`]: a dataset's records written as token ids for one tokenizer, in the formats the
//! project's commands share (texts as they are or as chat turns; A/B questions in the chat template
//! when there is one, answered by letter or in words).

use super::{ab_prompt, ab_text_prompt, text_prompt, AbItem, PromptFormat, Records};
use crate::eval::AbCase;
use crate::tokenize::Tokenizer;
use crate::Result;

/// How texts and A/B questions become prompts (the options of [`Prompter`]). The default writes
/// statements, pairs and instructions as they are, and A/B questions in the tokenizer's chat
/// template when it has one (plain text otherwise), answered by letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptOptions {
    /// Write statements, pairs and instructions as the user turn of the chat template (assistant
    /// turn opened) rather than as they are.
    pub chat: bool,
    /// Write A/B questions as plain text (`{question}\n\nAnswer: (`) even when the tokenizer has a
    /// chat template.
    pub plain: bool,
    /// Answer A/B questions in words ([`ab_text_prompt`]) rather than by letter ([`ab_prompt`]).
    pub text_answers: bool,
}

/// The two sides of a contrast as prompts: (true / positive / matching, false / negative / other).
pub type Sides = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// Writes texts and A/B questions as prompts for one tokenizer (see [`PromptOptions`]).
///
/// ```no_run
/// use puppetlens::data::{Dataset, PromptOptions, Prompter};
/// let (_model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
/// let ds = Dataset::load("probes/true_false.csv", "harmful")?;
/// let pr = Prompter::new(&tok, &PromptOptions::default());
/// let rows = pr.labeled(&ds.records)?; // (token ids, label) per statement
/// println!("{} prompts ({})", rows.len(), pr.note(&ds.records));
/// # Ok::<(), puppetlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Prompter<'a> {
    tok: &'a Tokenizer,
    text: PromptFormat,
    ab: PromptFormat,
    text_answers: bool,
}

impl<'a> Prompter<'a> {
    /// A prompter for `tok` with `opts`.
    pub fn new(tok: &'a Tokenizer, opts: &PromptOptions) -> Self {
        let text = if opts.chat {
            PromptFormat::Chat { system: None }
        } else {
            PromptFormat::Plain
        };
        let ab = if !opts.plain && tok.chat_template().is_some() {
            PromptFormat::Chat { system: None }
        } else {
            PromptFormat::Plain
        };
        Prompter {
            tok,
            text,
            ab,
            text_answers: opts.text_answers,
        }
    }

    /// A statement or an instruction as a prompt ([`text_prompt`]).
    pub fn text(&self, s: &str) -> Result<Vec<u32>> {
        text_prompt(self.tok, s, &self.text)
    }

    /// An A/B question as a scored case: the prompt ending before the answer, and the ids of the
    /// matching and the other answer.
    pub fn case(&self, item: &AbItem) -> Result<AbCase> {
        let p = if self.text_answers {
            ab_text_prompt(self.tok, item, &self.ab)?
        } else {
            ab_prompt(self.tok, item, &self.ab)?
        };
        Ok(AbCase::from(p))
    }

    /// [`case`](Self::case) of every item, in order.
    pub fn cases(&self, items: &[AbItem]) -> Result<Vec<AbCase>> {
        items.iter().map(|it| self.case(it)).collect()
    }

    /// How texts are written, for provenance: `text prompts: plain` or `text prompts: chat
    /// template`.
    pub fn text_note(&self) -> String {
        format!("text prompts: {}", format_name(&self.text))
    }

    /// How `records` are written, for provenance (`A/B prompts: chat template, letter answers`,
    /// `text prompts: plain`, ...).
    pub fn note(&self, records: &Records) -> String {
        match records {
            Records::Ab(_) => format!(
                "A/B prompts: {}, {} answers",
                format_name(&self.ab),
                if self.text_answers { "text" } else { "letter" }
            ),
            _ => self.text_note(),
        }
    }

    /// Labeled prompts of `records`: statements with their label; pairs as all positives (true)
    /// then all negatives (false); A/B questions as all CAA prompts with the matching letter
    /// (true) then all with the other letter (false).
    pub fn labeled(&self, records: &Records) -> Result<Vec<(Vec<u32>, bool)>> {
        match records {
            Records::Labeled(v) => v
                .iter()
                .map(|l| Ok((self.text(&l.text)?, l.label)))
                .collect(),
            _ => {
                let (pos, neg) = self.contrast(records)?;
                Ok(pos
                    .into_iter()
                    .map(|p| (p, true))
                    .chain(neg.into_iter().map(|n| (n, false)))
                    .collect())
            }
        }
    }

    /// The two sides of a contrast: (true / positive / matching, false / negative / other), A/B
    /// questions as CAA prompts ([`crate::diff::caa_prompts`]).
    pub fn contrast(&self, records: &Records) -> Result<Sides> {
        match records {
            Records::Labeled(v) => {
                let side = |label: bool| {
                    v.iter()
                        .filter(|l| l.label == label)
                        .map(|l| self.text(&l.text))
                        .collect::<Result<Vec<_>>>()
                };
                Ok((side(true)?, side(false)?))
            }
            Records::Pairs(v) => Ok((
                v.iter()
                    .map(|p| self.text(&p.positive))
                    .collect::<Result<_>>()?,
                v.iter()
                    .map(|p| self.text(&p.negative))
                    .collect::<Result<_>>()?,
            )),
            Records::Ab(v) => Ok(crate::diff::caa_prompts(&self.cases(v)?)),
        }
    }

    /// Prompts of `records` as corpus text: statements and instructions, both sides of each pair
    /// (in turn), A/B questions up to their answer.
    pub fn corpus(&self, records: &Records) -> Result<Vec<Vec<u32>>> {
        match records {
            Records::Labeled(v) => v.iter().map(|l| self.text(&l.text)).collect(),
            Records::Pairs(v) => v
                .iter()
                .flat_map(|p| [&p.positive, &p.negative])
                .map(|t| self.text(t))
                .collect(),
            Records::Ab(v) => Ok(self.cases(v)?.into_iter().map(|c| c.ids).collect()),
        }
    }
}

/// A format in words, for provenance notes.
fn format_name(f: &PromptFormat) -> &'static str {
    match f {
        PromptFormat::Plain => "plain",
        PromptFormat::Chat { .. } => "chat template",
    }
}
