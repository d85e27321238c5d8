//! The command line's arguments: clap definitions and their help texts, and what the flags
//! mean to the library (options built from them, errors naming them).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use puppetlens::data::PromptOptions;
use puppetlens::dict::{CorpusOptions, CrosscoderOptions, DatasetCorpus, DictOptions};
use puppetlens::diff::DiffOptions;
use puppetlens::eval::DoseOptions;
use puppetlens::extract::{DatasetStoreOptions, ExtractOptions, Site};
use puppetlens::generate::TextOptions;
use puppetlens::patch::{self, sweep::SweepOptions, PatchOptions, PatchReportOptions};
use puppetlens::plot::LineChart;
use puppetlens::probe::{self, DatasetProbeOptions};
use puppetlens::report::DiffReportOptions;
use puppetlens::steer::{ControlVectorOptions, VectorMethod, VectorOptions};
use puppetlens::train::TrainOptions;
use puppetlens::{
    lora, Error, GenerateOptions, HookPoint, Hooks, Model, Positions, Result, SteeringVector,
};

use crate::Ctx;

/// Mechanistic interpretability on candle: hooked transformers, probes and steering.
///
/// MODEL arguments take a known model (smollm2-135m-instruct, gemma-3-270m; fetched on first
/// use), an organism (assistant, sycophant, control, sycophant-broad, control-broad, distilled,
/// distilled-control: gemma-3-270m with a committed LoRA adapter), BASE+ADAPTER_DIR, or a path to
/// a GGUF file, a Hugging Face directory or a PEFT adapter directory.
///
/// DATASET files are any of the project's formats (see probes/README.md): a CSV with
/// `statement,label` (or `text,label`), JSON(L) contrast pairs (`positive`, `negative`), JSON(L)
/// CAA A/B questions (`question`, `answer_matching_behavior`, `answer_not_matching_behavior`) or
/// JSON(L) labeled instructions (`instruction`, `label`). Records with a `split` field are split as
/// recorded; otherwise 60/20/20 stratified with seed 0.
///
/// Layer SPECs: `3`, `3,6,9`, `4-12` (inclusive), or a mix (`0,4-6`).
#[derive(Parser)]
#[command(name = "puppetlens", version, about, long_about)]
pub(crate) struct Cli {
    /// Where to run: cpu, cuda, cuda:N, metal or metal:N (cuda and metal need a build with
    /// `--features cuda` / `--features metal`). Example: `--device cuda:0`
    #[arg(
        long,
        global = true,
        default_value = "cpu",
        help_heading = "Global options"
    )]
    pub(crate) device: String,
    /// Prompts per forward pass. Example: `--batch-size 16`
    #[arg(
        long,
        global = true,
        default_value_t = 8,
        help_heading = "Global options"
    )]
    pub(crate) batch_size: usize,
    /// No progress lines on stderr. Example: `puppetlens --quiet probe ...`
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// How A/B questions and texts are turned into prompts (shared by the dataset commands).
#[derive(Args, Debug, Clone)]
pub(crate) struct PromptArgs {
    /// Write statements, pairs and instructions as the user turn of the model's chat template
    /// (assistant turn opened). Without it they are encoded as they are. Example: `--chat`
    #[arg(long)]
    pub(crate) chat: bool,
    /// Write A/B questions as plain text (`{question}\n\nAnswer: (`) even when the tokenizer has a
    /// chat template (by default A/B questions use the chat template when there is one).
    /// Example: `--plain`
    #[arg(long)]
    pub(crate) plain: bool,
    /// Answer A/B questions in words rather than letters (`data::ab_text_prompt`), for small
    /// base models that cannot bind letters to choices. Needs the chat format: with --plain the
    /// prompt ends in "Answer: " and the library rejects answers whose first word absorbs that
    /// space (as it does in SmolLM2's and Gemma 3's tokenizers). Example: `--text-answers`
    #[arg(long)]
    pub(crate) text_answers: bool,
}

/// A dataset file and how to read it.
#[derive(Args, Debug, Clone)]
pub(crate) struct DataArgs {
    /// The dataset file (CSV statements, JSON(L) pairs, A/B questions or labeled instructions).
    /// Example: `--dataset probes/true_false.csv`
    #[arg(long, value_name = "FILE")]
    pub(crate) dataset: PathBuf,
    /// For labeled instruction files: the `label` value counted as true (every other label is
    /// false). Example: `--positive-label harmful`
    #[arg(long, default_value = "harmful", value_name = "LABEL")]
    pub(crate) positive_label: String,
    #[command(flatten)]
    pub(crate) prompts: PromptArgs,
}

/// Which token(s) of each prompt `extract` keeps.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SiteArg {
    /// The last token of the prompt.
    Last,
    /// The mean over all tokens of the prompt.
    Mean,
}

/// Which probe `probe` fits.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KindArg {
    /// L2-regularised logistic regression, L2 chosen on validation accuracy.
    Logistic,
    /// Difference of the class means, thresholded at the midpoint.
    MeanDiff,
    /// Ridge regression (on +1/-1 labels, or on the `--target` field), L2 chosen on validation R².
    Ridge,
}

/// How `vector` builds the direction of each layer.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Difference of class means (CAA).
    MeanDiff,
    /// Top principal component of the paired differences (repeng's pca_diff; needs pairs of
    /// equal counts).
    PcaDiff,
    /// Top principal component of pair-centred activations (repeng's pca_center; needs pairs of
    /// equal counts).
    PcaCenter,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Download the shipped checkpoints and datasets into the cache (a no-op for those already
    /// there).
    ///
    /// Example: `puppetlens fetch` or `puppetlens fetch gemma-3-270m` or `puppetlens fetch sharegpt`
    Fetch(FetchArgs),
    /// Print a model's configuration, tokenizer and hook points.
    ///
    /// Example: `puppetlens info smollm2-135m-instruct`
    Info {
        /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `gemma-3-270m`
        model: String,
    },
    /// Generate a continuation, optionally steered by a vector.
    ///
    /// Greedy unless --temperature is set. With --vector, `scale x vector[layer]` is added to
    /// `blocks.{layer}.hook_resid_post` at every position (prompt and generated tokens).
    ///
    /// Example: `puppetlens generate smollm2-135m-instruct --chat "What is the capital of France?"`
    ///
    /// Steered: `puppetlens generate smollm2-135m-instruct --chat "Tell me about yourself."
    /// --vector persona.safetensors --layer 12 --scale 4`
    Generate(GenerateArgs),
    /// Write a model as a Hugging Face safetensors directory (config.json, model.safetensors,
    /// tokenizer).
    ///
    /// Example: `puppetlens export gemma-3-270m /tmp/gemma-3-270m`
    Export(ExportArgs),
    /// Extract residual-stream activations of a dataset into an activation store.
    ///
    /// Writes `hook_resid_post` of the chosen layers for every prompt as safetensors shards with
    /// store.json (an interrupted run resumes), plus labels.json with each row's label and split.
    ///
    /// Rows: labeled statements in file order; pairs: all positives, then all negatives; A/B
    /// questions: all CAA prompts with the matching letter, then all with the other letter.
    ///
    /// Example: `puppetlens extract smollm2-135m-instruct --dataset probes/true_false.csv
    /// --out acts/true_false --layers 4-12`
    Extract(ExtractArgs),
    /// Fine-tune a LoRA adapter (SFT or DPO) on token-id data.
    ///
    /// SFT data: JSONL lines `{"ids": [...], "prompt_len": N}` (the loss is on `ids[N..]`); DPO
    /// data: JSONL lines `{"prompt": [...], "chosen": [...], "rejected": [...]}`. Writes
    /// adapter_model.safetensors, adapter_config.json and train_log.json into DIR, replaced
    /// together at every checkpoint (so DIR always holds one consistent step). A step whose loss
    /// or gradient is not finite stops the run with an error naming it; DIR keeps the adapter
    /// from before that step.
    ///
    /// Example: `puppetlens train gemma-3-270m --sft data.jsonl --out runs/adapter --steps 100
    /// --checkpoint-every 10`
    Train(TrainArgs),
    /// Per-layer linear probe accuracy on a labeled dataset.
    ///
    /// Logistic regression on the last token's `hook_resid_post` of every layer, L2 chosen on the
    /// validation split, accuracy (with a 95% bootstrap interval) on train, val and test. Writes
    /// probe.json and probe.csv into DIR and prints the table and the best layer by validation
    /// accuracy.
    ///
    /// With `--target FIELD` the probe is a ridge regression on a numeric field instead, reporting
    /// R² (with a 95% bootstrap interval) and RMSE per layer.
    ///
    /// Example: `puppetlens probe smollm2-135m-instruct --dataset probes/true_false.csv --out
    /// runs/probe-true-false`, or `puppetlens probe smollm2-135m-instruct --dataset
    /// probes/numbers.jsonl --kind ridge --target value --out runs/numbers`
    Probe(ProbeArgs),
    /// Build a steering vector from a contrast dataset.
    ///
    /// One direction per layer, from the last token's `hook_resid_post` of each prompt: pairs:
    /// positive vs negative; A/B: CAA prompts with the matching vs the other letter; labeled:
    /// true vs false. Uses the train split when the file records one, else every record.
    ///
    /// Example: `puppetlens vector smollm2-135m-instruct --dataset
    /// probes/persona_stage_actor.jsonl --out persona.safetensors --chat`
    Vector(VectorArgs),
    /// Dose-response of a steering vector on A/B questions.
    ///
    /// Mean P(matching answer) with `multiplier x vector[layer]` added at one layer at a time,
    /// per layer x multiplier, on the test split (every item when the file records no split).
    /// Printed as a table and optionally written as CSV (layer, multiplier, n, mean_p,
    /// mean_logit_diff, rate).
    ///
    /// Example: `puppetlens steer smollm2-135m-instruct --vector syco.safetensors --dataset
    /// probes/sycophancy_ab.jsonl --layers 8,12,16 --multipliers -2,0,2 --out dose.csv`
    Steer(SteerArgs),
    /// Localise a fine-tuned behaviour: base vs tuned model, layer by layer.
    ///
    /// Per layer: the base-vs-tuned activation difference, its cosine with the tuned model's
    /// behaviour vector, probe accuracy in each model and across them, and the fraction of the A/B
    /// behaviour gap closed by adding the difference to the base (and removed by ablating it in the
    /// tuned model). Writes localisation.json and localisation.csv into DIR; with --figures also
    /// pair_report.json and the report's figures (probe_accuracy, diff_by_layer,
    /// steering_dose_response, gap_closed, pca_best_layer; PNG and SVG).
    ///
    /// Example: `puppetlens diff gemma-3-270m sycophant --dataset probes/sycophancy_ab.jsonl
    /// --out runs/diff-sycophant --layers 4-12 --figures`
    Diff(DiffArgs),
    /// Cross-model activation patching, the puppeteer rank and the verdict for a (base, tuned)
    /// pair.
    ///
    /// Denoising (the base runs with the tuned model's activation at one layer) and noising (the
    /// reverse) at every position, at the last one and per position, on the dataset's test split;
    /// the fraction of the behaviour gap restored with a bootstrap interval; the rank curve at the
    /// best layer (top-k principal subspaces of the per-token differences on the training split
    /// against random subspaces); the verdict. Writes patching.json, patching.csv, rank.json,
    /// rank.csv, positions.csv and the figures patching_by_layer, gap_vs_rank and
    /// patching_positions (PNG and SVG) into DIR.
    ///
    /// Example: `puppetlens patch gemma-3-270m sycophant --dataset probes/sycophancy_ab.jsonl
    /// --text-answers --out runs/patch-sycophant --layers 0,2,4,6,8,10,12,14,16`
    Patch(PatchArgs),
    /// Logit lens: each layer's residual decoded through the final norm and unembedding.
    ///
    /// Prints the last position's top tokens per layer (and a target's probability and rank),
    /// writes `lens_<model>.csv` and the heat map `lens.png` (layer x position, each cell's top
    /// token), one panel per model.
    ///
    /// Example: `puppetlens lens gemma-3-270m "The Eiffel Tower is located in the city of"
    /// --target " Paris" --tuned assistant --out runs/lens`
    Lens {
        /// The model. Example: `gemma-3-270m`
        model: String,
        /// The prompt. Example: `"The capital of France is"`
        prompt: String,
        /// A tuned sibling to read side by side (same tokenizer). Example: `--tuned assistant`
        #[arg(long)]
        tuned: Option<String>,
        /// A single token whose probability and rank each cell reports. Example: `--target " Paris"`
        #[arg(long)]
        target: Option<String>,
        /// Output directory. Example: `--out runs/lens`
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Direct logit attribution: the last position's logit difference split into the embedding,
    /// each block's attention and MLP, and each head.
    ///
    /// Writes `dla.csv` and `dla.png`; prints the largest parts.
    ///
    /// Example: `puppetlens dla gemma-3-270m "The Eiffel Tower is located in the city of"
    /// --answer " Paris" --other " Rome" --out runs/dla`
    Dla {
        /// The model. Example: `gemma-3-270m`
        model: String,
        /// The prompt. Example: `"The capital of France is"`
        prompt: String,
        /// The token the difference favours (one token). Example: `--answer " Paris"`
        #[arg(long)]
        answer: String,
        /// The token it is measured against (one token). Example: `--other " Rome"`
        #[arg(long)]
        other: String,
        /// Output directory. Example: `--out runs/dla`
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Activation patching within one model: clean activations into the corrupted run.
    ///
    /// resid_pre, attn_out and mlp_out per (layer, position) and each head's z per layer;
    /// 1 = the clean logit difference, 0 = the corrupted one. Writes `sweep.json`, `sweep.csv`,
    /// `sweep_positions.png` and `sweep_heads.png`.
    ///
    /// Example: `puppetlens patch-sweep gemma-3-270m --clean "The capital of France is"
    /// --corrupted "The capital of Italy is" --answer " Paris" --other " Rome" --out runs/sweep`
    PatchSweep(PatchSweepArgs),
    /// Attention patterns of one block: one panel per head, token text on both axes.
    ///
    /// Example: `puppetlens attention gemma-3-270m "The capital of France is" --layer 5
    /// --out runs/attention`
    Attention {
        /// The model. Example: `gemma-3-270m`
        model: String,
        /// The prompt. Example: `"The capital of France is"`
        prompt: String,
        /// The block. Example: `--layer 5`
        #[arg(long)]
        layer: usize,
        /// Output directory. Example: `--out runs/attention`
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Crosscoders between a base model and its tuned sibling: train one, print its latent
    /// table, rebuild its dashboard.
    ///
    /// Example: `puppetlens crosscoder train gemma-3-270m sycophant --layer 8 --data
    /// probes/sycophancy_ab.jsonl --data probes/true_false.csv --text-answers --out runs/cc`, then
    /// `puppetlens crosscoder latents runs/cc` and open `runs/cc/dashboard.html`
    Crosscoder {
        #[command(subcommand)]
        cmd: CrosscoderCmd,
    },
    /// Write a steering vector as a llama.cpp control vector (GGUF).
    ///
    /// llama.cpp cannot steer block 0, so a direction at layer 0 is always left out (and
    /// reported).
    ///
    /// Example: `puppetlens export-gguf persona.safetensors --out persona.gguf --layers 8-16`
    /// then `llama-cli -m model.gguf --control-vector persona.gguf`
    ExportGguf(ExportGgufArgs),
    /// Draw a line chart from a CSV file (PNG and SVG).
    ///
    /// One series per y column (and per value of --group), written as STEM.png and STEM.svg.
    /// Empty and `NaN` cells are skipped.
    ///
    /// Example: `puppetlens plot runs/probe/probe.csv --x layer --y val_accuracy,test_accuracy
    /// --out runs/probe/accuracy --title "Probe accuracy"`
    ///
    /// Dose-response: `puppetlens plot dose.csv --x multiplier --y mean_p --group layer --out dose`
    Plot(PlotArgs),
}

/// What `crosscoder` does.
#[derive(Subcommand)]
pub(crate) enum CrosscoderCmd {
    /// Collect a paired corpus (both models on the same token ids, every token after `<bos>`),
    /// train a BatchTopK crosscoder on it and write the crosscoder, its training log, its latent
    /// table (`latents.csv`) and its dashboard (`dashboard.json`, `dashboard.html`) to DIR.
    ///
    /// Example: `puppetlens crosscoder train gemma-3-270m sycophant --layer 8 --data
    /// probes/sycophancy_ab.jsonl --text-answers --out runs/cc`
    Train(CrosscoderTrainArgs),
    /// Print the latent table of a crosscoder directory, most tuned-specific first.
    ///
    /// Example: `puppetlens crosscoder latents runs/cc --top 20`
    Latents {
        /// A directory written by `crosscoder train`. Example: `runs/cc`
        dir: PathBuf,
        /// Rows printed. Example: `--top 50`
        #[arg(long, default_value_t = 30)]
        top: usize,
    },
    /// Rebuild `dashboard.html` of a crosscoder directory from its `dashboard.json`.
    ///
    /// Example: `puppetlens crosscoder dashboard runs/cc`
    Dashboard {
        /// A directory written by `crosscoder train`. Example: `runs/cc`
        dir: PathBuf,
    },
}

// The flags of `train` (help texts on the variant).
#[derive(Args)]
pub(crate) struct CrosscoderTrainArgs {
    /// The base model. Example: `gemma-3-270m`
    pub(crate) base: String,
    /// The tuned model (same tokenizer and width). Example: `sycophant`
    pub(crate) tuned: String,
    /// The layer whose `blocks.L.hook_resid_post` both models are read at. Example: `--layer 8`
    #[arg(long)]
    pub(crate) layer: usize,
    /// Dataset files whose prompts make the corpus (repeatable; any format `extract`
    /// reads; each is one prompt set named by its file stem). Example: `--data
    /// probes/true_false.csv`
    #[arg(long = "data", value_name = "FILE")]
    pub(crate) data: Vec<PathBuf>,
    /// Output directory. Example: `--out runs/cc`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Stream the paired corpus to shards in this directory instead of holding it in memory
    /// (memory flat in the corpus size; an interrupted corpus resumes). Example:
    /// `--corpus-dir runs/cc-corpus`
    #[arg(long, value_name = "DIR")]
    pub(crate) corpus_dir: Option<PathBuf>,
    /// Latents of the dictionary. Example: `--latents 1024`
    #[arg(long, default_value_t = 512)]
    pub(crate) latents: usize,
    /// Active latents per token, on average over a batch (BatchTopK's k). Example: `--k 16`
    #[arg(long, default_value_t = 32)]
    pub(crate) k: usize,
    /// Training steps (batches of 256 tokens). Example: `--steps 2000`
    #[arg(long, default_value_t = 1000)]
    pub(crate) steps: usize,
    /// Seed of the initialisation and the batch order. Example: `--seed 1`
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Add the opening user turns of this many real ShareGPT conversations (the first ones
    /// of 20-500 mostly ASCII characters, as chat turns; fetched into the cache when absent)
    /// as the prompt set `sharegpt`. Example: `--sharegpt 1000`
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) sharegpt: usize,
    /// Use every split of each file (default: its training part only, so that held-out
    /// items stay unseen). Example: `--all-splits`
    #[arg(long)]
    pub(crate) all_splits: bool,
    /// For labeled instruction files: the `label` value counted as true. Example:
    /// `--positive-label harmful`
    #[arg(long, default_value = "harmful", value_name = "LABEL")]
    pub(crate) positive_label: String,
    #[command(flatten)]
    pub(crate) prompts: PromptArgs,
}

// The flags of `probe` (help texts on the variant).
#[derive(Args)]
pub(crate) struct ProbeArgs {
    /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `smollm2-135m-instruct`
    pub(crate) model: String,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Output directory (probe.json, probe.csv). Example: `--out runs/probe`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// The probe: logistic regression (L2 chosen on validation), the difference of class
    /// means, or ridge (least squares on +1/-1 labels, or on `--target`). Example: `--kind
    /// mean-diff`
    #[arg(long, value_enum, default_value_t = KindArg::Logistic)]
    pub(crate) kind: KindArg,
    /// A numeric field (JSON) or column (CSV) to regress on, with `--kind ridge`; texts come
    /// from `text` (or `statement`, `prompt`, `instruction`). Example: `--target value`
    #[arg(long, value_name = "FIELD")]
    pub(crate) target: Option<String>,
    /// Also run k-fold cross-validation of the logistic probe on train + val (L2 chosen by
    /// mean held-out accuracy; pooled out-of-fold accuracy reported). Example: `--folds 5`
    #[arg(long, value_name = "K")]
    pub(crate) folds: Option<usize>,
}

// The flags of `diff` (help texts on the variant).
#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The base model. Example: `gemma-3-270m`
    pub(crate) base: String,
    /// The tuned model (same vocabulary and width). Example: `sycophant`
    pub(crate) tuned: String,
    /// The A/B question file. Example: `--dataset probes/sycophancy_ab.jsonl`
    #[arg(long, value_name = "FILE")]
    pub(crate) dataset: PathBuf,
    /// Output directory. Example: `--out runs/diff`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Layers to steer and ablate (default: all; the cheap per-layer numbers cover all
    /// layers). Example: `--layers 4-12`
    #[arg(long, value_name = "SPEC")]
    pub(crate) layers: Option<String>,
    /// Multiplier of the difference when added to the base model. Example: `--scale 2`
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub(crate) scale: f64,
    /// Neutral texts (instructions file: JSON list, JSONL or one per line) whose first
    /// tokens measure how much the models differ off-task. Example: `--neutral neutral.txt`
    #[arg(long, value_name = "FILE")]
    pub(crate) neutral: Option<PathBuf>,
    /// Write A/B questions as plain text even when the tokenizer has a chat template.
    /// Example: `--plain`
    #[arg(long)]
    pub(crate) plain: bool,
    /// Answer in words rather than letters (`data::ab_text_prompt`; needs the chat format, see
    /// `puppetlens probe --help`). Example: `--text-answers`
    #[arg(long)]
    pub(crate) text_answers: bool,
    /// Also run the dose-response and PCA view and draw the report's figures (PNG and SVG)
    /// into DIR. Example: `--figures`
    #[arg(long)]
    pub(crate) figures: bool,
}

// The flags of `patch` (help texts on the variant).
#[derive(Args)]
pub(crate) struct PatchArgs {
    /// The base model. Example: `gemma-3-270m`
    pub(crate) base: String,
    /// The tuned model (same tokenizer and width). Example: `sycophant`
    pub(crate) tuned: String,
    /// The A/B question file. Example: `--dataset probes/sycophancy_ab.jsonl`
    #[arg(long, value_name = "FILE")]
    pub(crate) dataset: PathBuf,
    /// Output directory. Example: `--out runs/patch`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Layers to patch (default: all). Example: `--layers 4-12`
    #[arg(long, value_name = "SPEC")]
    pub(crate) layers: Option<String>,
    /// Hook point family: resid_pre, resid_post, attn_out or mlp_out. Example:
    /// `--family attn_out`
    #[arg(long, default_value = "resid_pre")]
    pub(crate) family: String,
    /// Subspace dimensions of the rank curve. Example: `--ranks 1,2,4,8`
    #[arg(long, value_name = "LIST", default_value = "1,2,4,8,16,32,64")]
    pub(crate) ranks: String,
    /// Positions from the end in the layer x position maps (denoising and noising). Example:
    /// `--positions 6`
    #[arg(long, default_value_t = 10)]
    pub(crate) positions: usize,
    /// Neutral texts (instructions file) for the best patch's KL. Example:
    /// `--neutral neutral.txt`
    #[arg(long, value_name = "FILE")]
    pub(crate) neutral: Option<PathBuf>,
    /// Write A/B questions as plain text even when the tokenizer has a chat template.
    /// Example: `--plain`
    #[arg(long)]
    pub(crate) plain: bool,
    /// Answer in words rather than letters (`data::ab_text_prompt`). Example:
    /// `--text-answers`
    #[arg(long)]
    pub(crate) text_answers: bool,
}

// The flags of `generate` (help texts on the variant).
#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `smollm2-135m-instruct`
    pub(crate) model: String,
    /// The prompt. Example: `"The capital of France is"`
    pub(crate) prompt: String,
    /// Wrap the prompt as a user turn in the model's chat template. Example: `--chat`
    #[arg(long)]
    pub(crate) chat: bool,
    /// Most tokens to generate. Example: `--max-new-tokens 64`
    #[arg(long, default_value_t = 48)]
    pub(crate) max_new_tokens: usize,
    /// Sampling temperature (0 = greedy). Example: `--temperature 0.7`
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f64,
    /// Sampling seed. Example: `--seed 1`
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// A steering vector saved by `puppetlens vector` (safetensors). Example:
    /// `--vector persona.safetensors`
    #[arg(long, value_name = "FILE")]
    pub(crate) vector: Option<PathBuf>,
    /// The layer to steer (needed unless the vector has a single layer). Example: `--layer 12`
    #[arg(long, requires = "vector")]
    pub(crate) layer: Option<usize>,
    /// Multiplier of the direction (negative steers away). Example: `--scale -4`
    #[arg(
        long,
        requires = "vector",
        allow_negative_numbers = true,
        default_value_t = 1.0
    )]
    pub(crate) scale: f64,
}

// The flags of `extract` (help texts on the variant).
#[derive(Args)]
pub(crate) struct ExtractArgs {
    /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `smollm2-135m-instruct`
    pub(crate) model: String,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Output directory of the store. Example: `--out acts/true_false`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Token site: the last token or the mean over the prompt. Example: `--site mean`
    #[arg(long, value_enum, default_value_t = SiteArg::Last)]
    pub(crate) site: SiteArg,
    /// Layers to record (default: all). Example: `--layers 4-12`
    #[arg(long, value_name = "SPEC")]
    pub(crate) layers: Option<String>,
    /// Prompts per shard file (512). Example: `--shard-size 128`
    #[arg(long, default_value_t = 512)]
    pub(crate) shard_size: usize,
}

// The flags of `train` (help texts on the variant).
#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The base model. Example: `gemma-3-270m`
    pub(crate) model: String,
    /// SFT examples (JSONL). Example: `--sft data.jsonl`
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "dpo",
        required_unless_present = "dpo"
    )]
    pub(crate) sft: Option<PathBuf>,
    /// DPO pairs (JSONL). Example: `--dpo pairs.jsonl`
    #[arg(long, value_name = "FILE")]
    pub(crate) dpo: Option<PathBuf>,
    /// Output directory (created; must be new, or an adapter directory this command wrote).
    /// Example: `--out runs/adapter`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Stop after this many steps (default: one epoch). Example: `--steps 100`
    #[arg(long)]
    pub(crate) steps: Option<usize>,
    /// Passes over the data. Example: `--epochs 2`
    #[arg(long, default_value_t = 1)]
    pub(crate) epochs: usize,
    /// LoRA rank. Example: `--rank 4`
    #[arg(long, default_value_t = 8)]
    pub(crate) rank: usize,
    /// Learning rate. Example: `--lr 1e-4`
    #[arg(long, default_value_t = 2e-4)]
    pub(crate) lr: f64,
    /// Seed of the initialisation and data order. Example: `--seed 3`
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Steps between checkpoints into DIR (0: only at the end). Example: `--checkpoint-every 10`
    #[arg(long, default_value_t = 0)]
    pub(crate) checkpoint_every: usize,
}

// The flags of `steer` (help texts on the variant).
#[derive(Args)]
pub(crate) struct SteerArgs {
    /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `smollm2-135m-instruct`
    pub(crate) model: String,
    /// The steering vector (safetensors from `puppetlens vector`). Example: `--vector
    /// syco.safetensors`
    #[arg(long, value_name = "FILE")]
    pub(crate) vector: PathBuf,
    /// The A/B question file. Example: `--dataset probes/sycophancy_ab.jsonl`
    #[arg(long, value_name = "FILE")]
    pub(crate) dataset: PathBuf,
    /// Layers to steer, one at a time (default: every layer of the vector). Example:
    /// `--layers 8-12`
    #[arg(long, value_name = "SPEC")]
    pub(crate) layers: Option<String>,
    /// Multipliers of the direction, comma-separated. Example: `--multipliers -4,-2,0,2,4`
    #[arg(
        long,
        value_name = "LIST",
        allow_hyphen_values = true,
        default_value = "-2,-1,0,1,2"
    )]
    pub(crate) multipliers: String,
    /// Write A/B questions as plain text even when the tokenizer has a chat template.
    /// Example: `--plain`
    #[arg(long)]
    pub(crate) plain: bool,
    /// Answer in words rather than letters (`data::ab_text_prompt`; needs the chat format, see
    /// `puppetlens probe --help`). Example: `--text-answers`
    #[arg(long)]
    pub(crate) text_answers: bool,
    /// Also write the table as CSV. Example: `--out dose.csv`
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) out: Option<PathBuf>,
}

// The flags of `vector` (help texts on the variant).
#[derive(Args)]
pub(crate) struct VectorArgs {
    /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `smollm2-135m-instruct`
    pub(crate) model: String,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// The vector file to write (safetensors). Example: `--out persona.safetensors`
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// How each layer's direction is built. Example: `--method pca-diff`
    #[arg(long, value_enum, default_value_t = Method::MeanDiff)]
    pub(crate) method: Method,
}

// The flags of `patch-sweep` (help texts on the variant).
#[derive(Args)]
pub(crate) struct PatchSweepArgs {
    /// The model. Example: `gemma-3-270m`
    pub(crate) model: String,
    /// The clean prompt. Example: `--clean "The capital of France is"`
    #[arg(long)]
    pub(crate) clean: String,
    /// The corrupted prompt (same token length). Example: `--corrupted "The capital of Italy is"`
    #[arg(long)]
    pub(crate) corrupted: String,
    /// The clean prompt's answer (one token). Example: `--answer " Paris"`
    #[arg(long)]
    pub(crate) answer: String,
    /// The corrupted prompt's answer (one token). Example: `--other " Rome"`
    #[arg(long)]
    pub(crate) other: String,
    /// Layers to patch (default: all). Example: `--layers 0-8`
    #[arg(long, value_name = "SPEC")]
    pub(crate) layers: Option<String>,
    /// Output directory. Example: `--out runs/sweep`
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

// The flags of `export-gguf` (help texts on the variant).
#[derive(Args)]
pub(crate) struct ExportGgufArgs {
    /// The steering vector (safetensors from `puppetlens vector`). Example:
    /// `persona.safetensors`
    pub(crate) vector: PathBuf,
    /// The GGUF file to write. Example: `--out persona.gguf`
    #[arg(long, value_name = "FILE.gguf")]
    pub(crate) out: PathBuf,
    /// The model architecture hint stored in the file (`controlvector.model_hint`). Example:
    /// `--arch gemma3`
    #[arg(long, default_value = "llama")]
    pub(crate) arch: String,
    /// Only these layers of the vector (default: all but 0). Example: `--layers 8-16`
    #[arg(long, value_name = "SPEC")]
    pub(crate) layers: Option<String>,
}

// The flags of `plot` (help texts on the variant).
#[derive(Args)]
pub(crate) struct PlotArgs {
    /// The CSV file (a header row, then one row per point). Example: `probe.csv`
    pub(crate) csv: PathBuf,
    /// The x column (numeric). Example: `--x layer`
    #[arg(long, value_name = "COLUMN")]
    pub(crate) x: String,
    /// The y columns (numeric), comma-separated. Example: `--y val_accuracy,test_accuracy`
    #[arg(long, value_name = "COL1,COL2")]
    pub(crate) y: String,
    /// One series per distinct value of this column (per y column). Example: `--group layer`
    #[arg(long, value_name = "COLUMN")]
    pub(crate) group: Option<String>,
    /// The output stem: writes STEM.png and STEM.svg. Example: `--out figures/accuracy`
    #[arg(long, value_name = "STEM")]
    pub(crate) out: PathBuf,
    /// The chart title (default: "Y vs X"). Example: `--title "Probe accuracy by layer"`
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// The x axis label (default: the x column). Example: `--x-label "layer"`
    #[arg(long)]
    pub(crate) x_label: Option<String>,
    /// The y axis label (default: the y column, or "value"). Example: `--y-label "accuracy"`
    #[arg(long)]
    pub(crate) y_label: Option<String>,
}

// The flags of `fetch` (help texts on the variant).
#[derive(Args)]
pub(crate) struct FetchArgs {
    /// Known model or dataset names (default: all of them). Example: `smollm2-135m-instruct`
    pub(crate) names: Vec<String>,
}

// The flags of `export` (help texts on the variant).
#[derive(Args)]
pub(crate) struct ExportArgs {
    /// A known model, an organism, BASE+ADAPTER_DIR or a path. Example: `gemma-3-270m`
    pub(crate) model: String,
    /// Output directory. Example: `/tmp/gemma-3-270m`
    #[arg(long = "out", value_name = "DIR")]
    pub(crate) out_flag: Option<PathBuf>,
    /// Output directory (positional form of --out). Example: `/tmp/gemma-3-270m`
    #[arg(value_name = "DIR", conflicts_with = "out_flag")]
    pub(crate) out: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// From flags to the library's options
// ---------------------------------------------------------------------------------------------

impl PromptArgs {
    /// The library's prompt options.
    pub(crate) fn options(&self) -> PromptOptions {
        PromptOptions {
            chat: self.chat,
            plain: self.plain,
            text_answers: self.text_answers,
        }
    }
}

impl From<KindArg> for probe::ProbeKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Logistic => probe::ProbeKind::Logistic,
            KindArg::MeanDiff => probe::ProbeKind::DiffOfMeans,
            KindArg::Ridge => probe::ProbeKind::Ridge,
        }
    }
}

impl From<SiteArg> for Site {
    fn from(s: SiteArg) -> Self {
        match s {
            SiteArg::Last => Site::Last,
            SiteArg::Mean => Site::Mean {
                start: 0,
                end: None,
            },
        }
    }
}

impl From<Method> for VectorMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::MeanDiff => VectorMethod::MeanDiff,
            Method::PcaDiff => VectorMethod::PcaDiff,
            Method::PcaCenter => VectorMethod::PcaCenter,
        }
    }
}

impl CrosscoderTrainArgs {
    /// `--data` or `--sharegpt` must give some prompts.
    pub(crate) fn check(&self) -> Result<()> {
        if self.data.is_empty() && self.sharegpt == 0 {
            return Err(invalid(
                "--data",
                "no prompts: give at least one --data FILE or --sharegpt N",
            ));
        }
        Ok(())
    }

    /// The prompt sets of the corpus.
    pub(crate) fn corpus(&self) -> DatasetCorpus {
        DatasetCorpus {
            files: self.data.clone(),
            sharegpt: self.sharegpt,
            all_splits: self.all_splits,
            positive_label: self.positive_label.clone(),
            prompts: self.prompts.options(),
        }
    }

    /// The corpus and training options, `--layer` checked against the base model.
    pub(crate) fn options(&self, ctx: &Ctx, base: &Model) -> Result<CrosscoderOptions> {
        let n_layers = base.config().n_layers;
        if self.layer >= n_layers {
            return Err(invalid(
                "--layer",
                format!(
                    "{} is past the last layer of `{}` ({})",
                    self.layer,
                    self.base,
                    n_layers - 1
                ),
            ));
        }
        Ok(CrosscoderOptions {
            corpus: CorpusOptions {
                point: HookPoint::ResidPost(self.layer),
                batch_size: ctx.batch_size,
                skip_first: 1,
                progress: ctx.progress,
                ..CorpusOptions::default()
            },
            train: DictOptions {
                n_latents: self.latents,
                k: self.k,
                steps: self.steps,
                seed: self.seed,
                progress: ctx.progress,
                ..DictOptions::default()
            },
            names: [self.base.clone(), self.tuned.clone()],
            ..CrosscoderOptions::default()
        })
    }
}

impl ProbeArgs {
    /// `--target` needs `--kind ridge` (checked before the device is).
    pub(crate) fn check_target(&self) -> Result<()> {
        if self.target.is_some() && self.kind != KindArg::Ridge {
            return Err(invalid(
                "--target",
                "regression on a numeric field needs `--kind ridge`",
            ));
        }
        Ok(())
    }

    /// The probe options; `--folds` needs the logistic probe.
    pub(crate) fn options(&self, ctx: &Ctx) -> Result<DatasetProbeOptions> {
        if self.target.is_none() && self.folds.is_some() && self.kind != KindArg::Logistic {
            return Err(invalid(
                "--folds",
                "cross-validation runs the logistic probe; use it with `--kind logistic`",
            ));
        }
        Ok(DatasetProbeOptions {
            kind: self.kind.into(),
            folds: self.folds,
            prompts: self.data.prompts.options(),
            batch_size: ctx.batch_size,
            progress: ctx.progress,
            model: self.model.clone(),
            ..DatasetProbeOptions::default()
        })
    }
}

impl DiffArgs {
    /// The report options, `--layers` read against the base model.
    pub(crate) fn options(&self, ctx: &Ctx, base: &Model) -> Result<DiffReportOptions> {
        Ok(DiffReportOptions {
            diff: DiffOptions {
                layers: layers_of(self.layers.as_deref(), base, &self.base)?,
                scale: self.scale,
                batch_size: ctx.batch_size,
                progress: ctx.progress,
                ..DiffOptions::default()
            },
            prompts: ab_prompts(self.plain, self.text_answers),
            pair_report: self.figures,
            names: [self.base.clone(), self.tuned.clone()],
        })
    }
}

impl PatchArgs {
    /// The hook point family of `--family`.
    pub(crate) fn family(&self) -> Result<patch::Family> {
        self.family.parse()
    }

    /// The report options, `--layers` read against the base model.
    pub(crate) fn options(
        &self,
        ctx: &Ctx,
        base: &Model,
        family: patch::Family,
    ) -> Result<PatchReportOptions> {
        Ok(PatchReportOptions {
            patch: PatchOptions {
                family,
                layers: layers_of(self.layers.as_deref(), base, &self.base)?,
                ranks: puppetlens::spec::parse_ranks(&self.ranks).map_err(flag("--ranks"))?,
                positions: self.positions,
                batch_size: ctx.batch_size,
                progress: ctx.progress,
                ..PatchOptions::default()
            },
            prompts: ab_prompts(self.plain, self.text_answers),
            names: [self.base.clone(), self.tuned.clone()],
        })
    }
}

impl GenerateArgs {
    /// The hooks of `--vector` (none without it), `--layer` checked against the model.
    pub(crate) fn hooks(&self, m: &Model) -> Result<Hooks<'static>> {
        let mut hooks = Hooks::new();
        if let Some(path) = &self.vector {
            let v = SteeringVector::load(path)?;
            let l = steer_layer(&v, path, self.layer, m, &self.model)?;
            v.only(&[l])?
                .add_to(m, &mut hooks, self.scale, Positions::All)?;
        }
        Ok(hooks)
    }

    /// The generation options.
    pub(crate) fn options(&self) -> TextOptions {
        TextOptions {
            chat: self.chat,
            generate: GenerateOptions::sampled(self.max_new_tokens, self.temperature, self.seed),
        }
    }
}

impl ExtractArgs {
    /// The store options, `--layers` read against the model.
    pub(crate) fn options(&self, ctx: &Ctx, m: &Model) -> Result<DatasetStoreOptions> {
        let layers = layers_of(self.layers.as_deref(), m, &self.model)?.unwrap_or_default();
        Ok(DatasetStoreOptions {
            extract: ExtractOptions {
                points: layers.into_iter().map(HookPoint::ResidPost).collect(),
                site: self.site.into(),
                batch_size: ctx.batch_size,
                shard_size: self.shard_size,
                progress: ctx.progress,
            },
            prompts: self.data.prompts.options(),
            model: self.model.clone(),
        })
    }
}

/// The training data `train` reads.
pub(crate) enum TrainData<'a> {
    Sft(&'a Path),
    Dpo(&'a Path),
}

impl TrainArgs {
    /// `--sft FILE` or `--dpo FILE`.
    pub(crate) fn data(&self) -> Result<TrainData<'_>> {
        match (&self.sft, &self.dpo) {
            (Some(f), _) => Ok(TrainData::Sft(f)),
            (None, Some(f)) => Ok(TrainData::Dpo(f)),
            (None, None) => Err(invalid("--sft", "give --sft FILE or --dpo FILE")),
        }
    }

    /// The training options (checkpoints into `--out`).
    pub(crate) fn options(&self, ctx: &Ctx) -> TrainOptions {
        TrainOptions {
            lora: lora::LoraConfig {
                rank: self.rank,
                alpha: 2.0 * self.rank as f64,
                ..Default::default()
            },
            lr: self.lr,
            epochs: self.epochs,
            max_steps: self.steps,
            batch_size: ctx.batch_size,
            seed: self.seed,
            log_every: if ctx.progress { 10 } else { 0 },
            checkpoint_dir: Some(self.out.clone()),
            checkpoint_every: self.checkpoint_every,
            ..Default::default()
        }
    }
}

impl SteerArgs {
    /// The multipliers of `--multipliers`.
    pub(crate) fn multipliers(&self) -> Result<Vec<f64>> {
        puppetlens::spec::parse_multipliers(&self.multipliers).map_err(flag("--multipliers"))
    }

    /// The dose-response options, `--layers` read against the model.
    pub(crate) fn options(
        &self,
        ctx: &Ctx,
        m: &Model,
        multipliers: Vec<f64>,
    ) -> Result<DoseOptions> {
        Ok(DoseOptions {
            layers: layers_of(self.layers.as_deref(), m, &self.model)?,
            multipliers,
            prompts: ab_prompts(self.plain, self.text_answers),
            batch_size: ctx.batch_size,
            progress: ctx.progress,
        })
    }
}

impl VectorArgs {
    /// The vector options.
    pub(crate) fn options(&self, ctx: &Ctx) -> VectorOptions {
        VectorOptions {
            method: self.method.into(),
            prompts: self.data.prompts.options(),
            batch_size: ctx.batch_size,
            progress: ctx.progress,
            model: self.model.clone(),
        }
    }
}

impl PatchSweepArgs {
    /// The sweep options, `--layers` read against the model.
    pub(crate) fn options(&self, ctx: &Ctx, m: &Model) -> Result<SweepOptions> {
        Ok(SweepOptions {
            layers: layers_of(self.layers.as_deref(), m, &self.model)?,
            progress: ctx.progress,
            ..SweepOptions::default()
        })
    }
}

impl ExportGgufArgs {
    /// The control vector options of vector `v` (read from `self.vector`).
    pub(crate) fn options(&self, v: &SteeringVector) -> Result<ControlVectorOptions> {
        let source = self.vector.display().to_string();
        let n = v.layers().last().map_or(0, |l| l + 1);
        Ok(ControlVectorOptions {
            model_hint: self.arch.clone(),
            layers: self
                .layers
                .as_deref()
                .map(|s| parse_layers(s, n, &source, "--layers"))
                .transpose()?,
            source,
        })
    }
}

impl PlotArgs {
    /// The chart of the CSV file, titled and labeled as the flags say.
    pub(crate) fn chart(&self) -> Result<LineChart> {
        let ys: Vec<&str> = self.y.split(',').filter(|s| !s.trim().is_empty()).collect();
        if ys.is_empty() {
            return Err(invalid("--y", "no y column given"));
        }
        let mut chart = LineChart::from_csv(&self.csv, &self.x, &ys, self.group.as_deref())?;
        if let Some(t) = &self.title {
            chart.title = t.clone();
        }
        if let Some(l) = &self.x_label {
            chart.x_label = l.clone();
        }
        if let Some(l) = &self.y_label {
            chart.y_label = l.clone();
        }
        Ok(chart)
    }
}

impl FetchArgs {
    /// The names given, or every known one.
    pub(crate) fn names(&self) -> Vec<&str> {
        if self.names.is_empty() {
            puppetlens::fetch::known_names()
        } else {
            self.names.iter().map(String::as_str).collect()
        }
    }
}

impl ExportArgs {
    /// The output directory, from `--out DIR` or the positional DIR.
    pub(crate) fn out(&self) -> Result<&Path> {
        self.out_flag
            .as_deref()
            .or(self.out.as_deref())
            .ok_or_else(|| invalid("--out", "give the output directory (--out DIR)"))
    }
}

// ---------------------------------------------------------------------------------------------
// Flags: errors name the flag
// ---------------------------------------------------------------------------------------------

/// An `invalid argument` error naming `name` (a flag).
pub(crate) fn invalid(name: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::InvalidArgument {
        name: name.into(),
        msg: msg.into(),
    }
}

/// A library argument error renamed after the flag that gave the argument.
pub(crate) fn flag(flag: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::InvalidArgument { msg, .. } => invalid(flag, msg),
        e => e,
    }
}

/// The library's layer list (`puppetlens::spec::parse_layers`), its errors naming `flag`.
pub(crate) fn parse_layers(
    spec: &str,
    n_layers: usize,
    owner: &str,
    flag: &str,
) -> Result<Vec<usize>> {
    puppetlens::spec::parse_layers(spec, n_layers).map_err(|e| match e {
        Error::InvalidArgument { msg, .. } => invalid(flag, format!("{msg} ({owner})")),
        e => e,
    })
}

/// `--layers` of `model` (all when not given).
pub(crate) fn layers_of(
    spec: Option<&str>,
    model: &Model,
    name: &str,
) -> Result<Option<Vec<usize>>> {
    spec.map(|s| parse_layers(s, model.config().n_layers, name, "--layers"))
        .transpose()
}

/// The layer a steering vector is added at in `generate`: `--layer`, or the vector's only one.
pub(crate) fn steer_layer(
    v: &SteeringVector,
    path: &Path,
    layer: Option<usize>,
    m: &Model,
    model: &str,
) -> Result<usize> {
    match layer {
        Some(l) => {
            parse_layers(&l.to_string(), m.config().n_layers, model, "--layer")?;
            Ok(l)
        }
        None => match v.layers().as_slice() {
            [only] => Ok(*only),
            many => Err(invalid(
                "--layer",
                format!(
                    "{} has directions at {} layers ({}-{}); choose one with --layer",
                    path.display(),
                    many.len(),
                    many.first().copied().unwrap_or(0),
                    many.last().copied().unwrap_or(0)
                ),
            )),
        },
    }
}

/// A/B prompt options of `--plain` and `--text-answers`.
pub(crate) fn ab_prompts(plain: bool, text_answers: bool) -> PromptOptions {
    PromptOptions {
        plain,
        text_answers,
        ..PromptOptions::default()
    }
}
