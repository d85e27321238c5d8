//! Sparse dictionaries: BatchTopK SAEs and crosscoders, their metrics, per-latent model-diffing
//! numbers (relative decoder norm, Latent Scaling) and the SAELens layout.
//!
//! A [`Dictionary`] encodes activations into sparse latents and decodes them back. One trainer,
//! [`train`], fits both kinds from activations `[n_tokens, n_models, d]`:
//! - an **SAE** (`n_models` = 1);
//! - a **crosscoder** (`n_models` = 2: model 0 the base, model 1 its tuned sibling, on the same
//!   tokens): one encoder over the concatenation `[base; tuned]`, one decoder per model, so
//!   that each latent has a direction in each model (Anthropic's crosscoder model diffing, 2024).
//!
//! Sparsity is BatchTopK (Bussmann et al. 2024; the crosscoder of Minder, Dumas et al. 2025):
//! the `k · batch` largest decoder-norm-weighted activations of a batch are kept, and a threshold
//! estimated during training replaces the batch at inference. An auxiliary loss (AuxK) revives
//! dead latents. [`evaluate`] measures the fraction of variance unexplained per model, L0 and the
//! dead fraction; [`latents`] gives per latent of a crosscoder the relative decoder norm, the
//! cosine of its two directions, Latent Scaling and a [`LatentLabel`] (shared, tuned-only,
//! base-only, artefact). [`Dictionary::save`] / [`Dictionary::load`] use puppetlens's own format
//! (`dict.json` + `dict.safetensors`); [`Dictionary::save_saelens`] /
//! [`Dictionary::load_saelens`] the SAELens layout, so that published SAEs (Gemma Scope's
//! JumpReLU SAEs among them) load.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use puppetlens::dict::{self, DictOptions, LabelOptions};
//! // Toy paired activations: 2000 tokens, 2 models, width 8.
//! let acts = Tensor::randn(0f32, 1.0, (2000, 2, 8), &Device::Cpu)?.relu()?;
//! let opts = DictOptions { n_latents: 32, k: 4, steps: 100, progress: false, ..Default::default() };
//! let (cc, log) = dict::train(&acts, &opts)?;
//! println!("final loss {:.3}", log.steps.last().unwrap().loss);
//! let f = cc.encode(&acts.narrow(0, 0, 10)?)?;            // [10, 32]
//! let x_hat = cc.decode(&f)?;                              // [10, 2, 8]
//! assert_eq!(x_hat.dims(), &[10, 2, 8]);
//! let m = dict::evaluate(&cc, &acts, 512)?;
//! println!("FVU base {:.3} tuned {:.3}, L0 {:.1}", m.fvu[0], m.fvu[1], m.l0);
//! for s in dict::latents(&cc, &acts, &LabelOptions::default())?.iter().take(3) {
//!     println!("latent {}: rel. norm {:.2}, {:?}", s.index, s.rel_norm, s.label);
//! }
//! let dir = std::env::temp_dir().join("puppetlens-doc-dict");
//! cc.save(&dir)?;
//! let back = puppetlens::dict::Dictionary::load(&dir, &Device::Cpu)?;
//! assert_eq!(back.n_latents(), 32);
//! # Ok::<(), puppetlens::Error>(())
//! ```
//!
//! [`paired_corpus`] runs a base and its tuned sibling on identical token ids and keeps every
//! real token's activations at one hook point, `[n_tokens, 2, d]` in memory, with each token's
//! source (for top-activating contexts). [`SteerLatent`] and [`Splice`] put a dictionary into a
//! forward pass (steer along one latent; replace the activation with the reconstruction).
//!
//! Two paths, the same numbers. In memory (small corpora, a few tens of thousands of tokens):
//! [`paired_corpus`] gives a [`PairedCorpus`] whose `acts` tensor goes to [`train`],
//! [`evaluate`] and [`latents`]. On disk (memory flat in the corpus size):
//! [`paired_corpus_to_dir`] streams the same rows to safetensors shards (the activation store's
//! layout, written atomically, resumable) and returns a [`CorpusStore`], read shard by shard by
//! [`train_streamed`], [`CorpusStore::evaluate`], [`CorpusStore::latents`],
//! [`CorpusStore::top_contexts`], [`CorpusStore::mean_diff`] and [`Dashboard::build_streamed`].
//!
//! [`crosscoder`] is the one call for a (base, tuned) pair: corpus, training, metrics, latent
//! table and a [`Dashboard`] (a static HTML page of the latents, their top contexts shaded by
//! activation, and their steering effects), saved together by [`CrosscoderRun::save`];
//! [`crosscoder_datasets`] builds its prompt sets from dataset files ([`DatasetCorpus`]);
//! [`crosscoder_streamed`] is the same with the corpus on disk.

mod corpus;
mod dashboard;
mod dictionary;
mod hooks;
mod io;
mod latents;
mod metrics;
mod run;
mod saelens;
mod select;
mod sparse;
mod store;
mod train;

pub use corpus::{paired_corpus, Context, CorpusOptions, PairedCorpus, PromptSet, TokenSource};
pub use dashboard::{
    Dashboard, DashboardOptions, ShownContext, SteeringEffect, DASHBOARD_DATA, DASHBOARD_PAGE,
};
pub use dictionary::{Activation, Dictionary};
pub use hooks::{decoder_direction, Splice, SteerLatent};
pub use io::{CONFIG_FILE, WEIGHTS_FILE};
pub use latents::{latents, LabelOptions, LatentLabel, LatentScaling, LatentStats};
pub use metrics::{evaluate, Metrics};
pub use run::{
    crosscoder, crosscoder_datasets, crosscoder_datasets_streamed, crosscoder_on,
    crosscoder_on_store, crosscoder_streamed, latents_csv, latents_table, CrosscoderOptions,
    CrosscoderRun, DatasetCorpus, StreamedRun, LATENTS_CSV, TRAIN_LOG,
};
pub use saelens::{SAELENS_CONFIG, SAELENS_WEIGHTS};
pub use store::{
    paired_corpus_to_dir, CorpusManifest, CorpusShard, CorpusStore, CORPUS_FORMAT, CORPUS_MANIFEST,
    CORPUS_PROMPTS,
};
pub use train::{train, train_streamed, DictLog, DictOptions, DictStep};
