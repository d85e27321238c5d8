//! Peak memory of paired-corpus extraction, in memory (`dict::paired_corpus`) against streamed to
//! disk shards (`dict::paired_corpus_to_dir`): gemma-3-270m vs the committed sycophant organism
//! at `blocks.8.hook_resid_post`, on the opening user turns of ShareGPT conversations in Gemma's
//! chat format, taken until the corpus holds the asked number of tokens.
//!
//! One mode and size per process: once the models and prompts are loaded, the heap's free pages
//! go back to the system (`malloc_trim`) and the peak resident set (VmHWM in /proc/self/status)
//! is reset (`5` written to /proc/self/clear_refs), so the growth printed is the extraction's
//! alone, over the resident set it started from.
//!
//! ```sh
//! cargo run --release --example corpus_memory -- memory 5000
//! cargo run --release --example corpus_memory -- disk 20000
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use puppetlens::dict::{self, CorpusOptions, PromptSet};
use puppetlens::lora::Adapter;
use puppetlens::{ChatMessage, HookPoint};

/// A field of /proc/self/status in MiB (`VmRSS`, `VmHWM`).
fn status_mib(field: &str) -> Result<f64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, target) = match args.as_slice() {
        [_, m, n] => (m.clone(), n.parse::<usize>()?),
        _ => bail!("usage: corpus_memory memory|disk N_TOKENS"),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (base, mut tok) = puppetlens::load(puppetlens::fetch::fetch("gemma-3-270m")?)?;
    tok.set_chat_template(Some(puppetlens::tokenize::GEMMA3_CHAT_TEMPLATE.into()));
    let adapter = Adapter::load(
        root.join("notebooks-data/organisms/sycophant"),
        base.device(),
    )?;
    let tuned = base.with_adapter(&adapter)?;

    // Opening user turns until the corpus (every token after <bos>) holds `target` tokens.
    let prompts = {
        let chats = puppetlens::data::load_sharegpt(puppetlens::fetch::fetch_data("sharegpt")?)?;
        let mut out = Vec::new();
        let mut n = 0;
        for t in chats.first_user_turns(&puppetlens::data::TurnFilter::default()) {
            if n >= target {
                break;
            }
            let ids = tok.encode_chat(&[ChatMessage::user(&t)], true)?;
            n += ids.len() - 1;
            out.push(ids);
        }
        out
    };
    let sets = [PromptSet::new("sharegpt", prompts)];
    let opts = CorpusOptions {
        point: HookPoint::ResidPost(8),
        progress: false,
        ..CorpusOptions::default()
    };
    // Hand the heap's free pages back (the ShareGPT file was parsed and dropped; puppetlens keeps
    // freed memory for reuse, see util::tune_malloc), then reset the peak: from here VmHWM is the
    // peak of the extraction.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the operating system.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")?;
    let start_rss = status_mib("VmRSS:")?;
    let t0 = Instant::now();
    let (tokens, shards) = match mode.as_str() {
        "memory" => {
            let c = dict::paired_corpus(&base, &tuned, &sets, &opts)?;
            (c.len() + c.dropped.len(), 0)
        }
        "disk" => {
            let dir = std::env::temp_dir().join(format!("puppetlens-corpus-memory-{target}"));
            let _ = std::fs::remove_dir_all(&dir);
            let meta = puppetlens::extract::StoreMeta::default();
            let c = dict::paired_corpus_to_dir(&base, &tuned, &sets, &opts, &dir, &meta)?;
            let out = (c.len() + c.dropped().len(), c.n_shards());
            std::fs::remove_dir_all(&dir)?;
            out
        }
        other => bail!("mode `{other}`: memory or disk"),
    };
    let secs = t0.elapsed().as_secs_f64();
    let peak = status_mib("VmHWM:")?;
    println!(
        "mode {mode} tokens {tokens} prompts {} shards {shards} seconds {secs:.1} \
         rss_start_mib {start_rss:.0} peak_mib {peak:.0} growth_mib {:.0}",
        sets[0].prompts.len(),
        peak - start_rss
    );
    Ok(())
}
