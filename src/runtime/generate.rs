//! Text generation with a KV cache, greedy or sampled (seeded), hooks applied at every step.
//!
//! Hooks see the prompt at prefill (`offset == 0`) and then one new column per step; an
//! [`AddVector`](crate::AddVector) with [`Positions::From`](crate::Positions::From)`(prompt_len)` steers
//! only generated tokens. Without the cache (`kv_cache: false`) every step recomputes the whole
//! sequence; both give the same tokens. [`Model::generate_text`] goes from a prompt's text to its
//! continuation's text.
//!
//! ```no_run
//! use puppetlens::{GenerateOptions, Hooks, LoadOptions, Model};
//! let model = Model::load("model.gguf", &LoadOptions::default())?;
//! let out = model.generate(&[vec![1u32, 2, 3]], &GenerateOptions::greedy(20), &mut Hooks::new())?;
//! println!("{:?}", out[0]);
//! # Ok::<(), puppetlens::Error>(())
//! ```

use candle_core::DType;
use rand::{Rng, SeedableRng};

use crate::batch::Batch;
use crate::data::{text_prompt, PromptFormat};
use crate::hook::Hooks;
use crate::model::{KvCache, Model, Output};
use crate::tokenize::Tokenizer;
use crate::{Error, Result};

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate per prompt.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p before sampling.
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    pub seed: u64,
    /// A row stops after producing one of these (it is included in the output).
    pub stop_tokens: Vec<u32>,
    /// Use the KV cache (default true); false recomputes the whole sequence each step.
    pub kv_cache: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_tokens: Vec::new(),
            kv_cache: true,
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..Self::default()
        }
    }

    /// Sampling at `temperature` with `seed`.
    pub fn sampled(max_new_tokens: usize, temperature: f64, seed: u64) -> Self {
        Self {
            max_new_tokens,
            temperature,
            seed,
            ..Self::default()
        }
    }
}

/// Options of [`Model::generate_text`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextOptions {
    /// Write the prompt as the user turn of the chat template (assistant turn opened) rather
    /// than as it is.
    pub chat: bool,
    /// Length, sampling and seed; the tokenizer's EOS is added to `stop_tokens`.
    pub generate: GenerateOptions,
}

impl Model {
    /// The one call from a prompt's text to its continuation's text: the prompt written as it is
    /// or as a chat turn ([`text_prompt`]), [`generate`](Self::generate) with `hooks` (steering,
    /// say) until a stop token or the EOS, the text decoded without the stop tokens at its end.
    ///
    /// ```no_run
    /// use puppetlens::generate::TextOptions;
    /// use puppetlens::{GenerateOptions, Hooks};
    /// let (model, tok) = puppetlens::open("smollm2-135m-instruct", &Default::default())?;
    /// let opts = TextOptions { chat: true, generate: GenerateOptions::greedy(48) };
    /// println!("{}", model.generate_text(&tok, "What is the capital of France?", &opts, &mut Hooks::new())?);
    /// # Ok::<(), puppetlens::Error>(())
    /// ```
    pub fn generate_text(
        &self,
        tok: &Tokenizer,
        prompt: &str,
        opts: &TextOptions,
        hooks: &mut Hooks,
    ) -> Result<String> {
        let format = if opts.chat {
            PromptFormat::Chat { system: None }
        } else {
            PromptFormat::Plain
        };
        let ids = text_prompt(tok, prompt, &format)?;
        let mut gopts = opts.generate.clone();
        gopts.stop_tokens.extend(tok.eos_id());
        let out = self.generate(&[ids], &gopts, hooks)?;
        let mut new = out.into_iter().next().unwrap_or_default();
        while new.last().is_some_and(|t| gopts.stop_tokens.contains(t)) {
            new.pop();
        }
        tok.decode(&new)
    }

    /// Generates a continuation of each prompt; returns only the new tokens of each row.
    pub fn generate<P: AsRef<[u32]>>(
        &self,
        prompts: &[P],
        opts: &GenerateOptions,
        hooks: &mut Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
            return Err(Error::InvalidArgument {
                name: "temperature".into(),
                msg: format!("{} is not >= 0", opts.temperature),
            });
        }
        let prompt = Batch::new(prompts)?;
        hooks.check(self.config().n_layers)?;
        self.check_batch(&prompt, 0)?;
        let n = prompt.len();
        let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut done = vec![false; n];
        let max_new =
            opts.max_new_tokens
                .min(self.config().max_position.saturating_sub(
                    prompt.seq_len() - prompt.pads().iter().min().copied().unwrap_or(0),
                ));
        let mut kv = KvCache::new(self.config().n_layers, prompt.pads().to_vec());
        let mut logits = if max_new == 0 {
            return Ok(out);
        } else if opts.kv_cache {
            self.forward_cached(&prompt, &mut kv, hooks)?
        } else {
            self.run(&prompt, None, hooks, Output::LastLogits)?
                .ok_or_else(no_logits)?
        }; // [n, vocab]
        for step in 0..max_new {
            let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
            let mut next = Vec::with_capacity(n);
            for (i, row) in rows.iter().enumerate() {
                let tok = pick(row, opts, &mut rng)?;
                if !done[i] {
                    out[i].push(tok);
                    done[i] = opts.stop_tokens.contains(&tok);
                }
                next.push(tok);
            }
            if done.iter().all(|d| *d) || step + 1 == max_new {
                break;
            }
            logits = if opts.kv_cache {
                let cols: Vec<Vec<u32>> = next.iter().map(|t| vec![*t]).collect();
                let step_batch = Batch::new(&cols)?;
                self.forward_cached(&step_batch, &mut kv, hooks)?
            } else {
                let full: Vec<Vec<u32>> = (0..n)
                    .map(|i| {
                        let mut r = prompt.row(i).to_vec();
                        r.extend_from_slice(&out[i]);
                        // Finished rows keep growing with their last token so all rows stay aligned.
                        r.resize(prompt.row(i).len() + step + 1, *out[i].last().unwrap_or(&0));
                        r
                    })
                    .collect();
                let full = Batch::new(&full)?;
                self.run(&full, None, hooks, Output::LastLogits)?
                    .ok_or_else(no_logits)?
            };
        }
        Ok(out)
    }
}

fn no_logits() -> Error {
    Error::InvalidArgument {
        name: "generate".into(),
        msg: "no logits computed".into(),
    }
}

/// Picks the next token from one row of logits.
fn pick(logits: &[f32], opts: &GenerateOptions, rng: &mut impl Rng) -> Result<u32> {
    if logits.iter().any(|x| x.is_nan()) {
        return Err(Error::InvalidArgument {
            name: "logits".into(),
            msg: "NaN in logits during generation".into(),
        });
    }
    let argmax = || {
        let mut best = 0usize;
        for (i, v) in logits.iter().enumerate() {
            if *v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if opts.temperature == 0.0 {
        return Ok(argmax());
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if let Some(k) = opts.top_k {
        idx.truncate(k.max(1));
    }
    let max = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / opts.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(p) = opts.top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (j, q) in probs.iter().enumerate() {
            acc += q;
            if acc >= p {
                keep = j + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
    }
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (j, q) in probs.iter().enumerate() {
        acc += q;
        if u < acc {
            return Ok(idx[j] as u32);
        }
    }
    Ok(idx[probs.len() - 1] as u32)
}
