//! Patching from an A/B question file in one call, and the report's table for a terminal.

use super::*;
use crate::data::{Dataset, PromptOptions, Prompter};
use crate::tokenize::Tokenizer;

/// Options of [`patch_report`].
#[derive(Debug, Clone)]
pub struct PatchReportOptions {
    /// Family, layers, ranks, positions, batch size, progress (`neutral` is filled from
    /// [`patch_report`]'s texts).
    pub patch: PatchOptions,
    /// How the A/B questions and the neutral texts become prompts (`chat` is not used for the
    /// questions).
    pub prompts: PromptOptions,
    /// The base and the tuned model's names, for messages and figure labels.
    pub names: [String; 2],
}

impl Default for PatchReportOptions {
    fn default() -> Self {
        Self {
            patch: PatchOptions::default(),
            prompts: PromptOptions::default(),
            names: ["base".into(), "tuned".into()],
        }
    }
}

/// The one call from an A/B question file to cross-model patching of a (base, tuned) pair: the
/// items split as the file records or 60/20/20 stratified, the training and test items written
/// as prompts with each model's tokenizer (errors, argument `tuned`, unless both give the same
/// ids), `neutral` texts as prompts for the best patch's KL, then [`patching`]. Writes
/// [`Patching::write`]'s files and the figures ([`write_figures`]) into `dir`; returns the
/// report and every path written.
///
/// ```no_run
/// use puppetlens::data::Dataset;
/// use puppetlens::patch::{patch_report, PatchReportOptions};
/// let base = puppetlens::open("gemma-3-270m", &Default::default())?;
/// let tuned = puppetlens::open("sycophant", &Default::default())?;
/// let ds = Dataset::load("probes/sycophancy_ab.jsonl", "harmful")?;
/// let opts = PatchReportOptions::default();
/// let (rep, _files) = patch_report((&base.0, &base.1), (&tuned.0, &tuned.1), &ds, &[], &opts, "runs/patch")?;
/// print!("{}", rep.table());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn patch_report(
    base: (&Model, &Tokenizer),
    tuned: (&Model, &Tokenizer),
    ds: &Dataset,
    neutral: &[String],
    opts: &PatchReportOptions,
    dir: impl AsRef<Path>,
) -> Result<(Patching, Vec<PathBuf>)> {
    let dir = dir.as_ref();
    let [base_name, tuned_name] = &opts.names;
    let items = ds.ab_items("patch_report")?;
    let parts = ds.split(items, |it| it.matching.clone())?;
    // Both models must read the same ids: the prompts as each tokenizer writes them.
    let pr = Prompter::new(base.1, &opts.prompts);
    let tpr = Prompter::new(tuned.1, &opts.prompts);
    let data = AbSplits {
        train: pr.cases(&parts.train)?,
        val: Vec::new(),
        test: pr.cases(&parts.test)?,
    };
    let theirs = tpr.cases(&parts.test)?;
    if let Some(i) = (0..data.test.len()).find(|&i| data.test[i] != theirs[i]) {
        return Err(Error::InvalidArgument {
            name: "tuned".into(),
            msg: format!(
                "`{tuned_name}` and `{base_name}` tokenize test item {i} differently: patching \
                 needs the same token ids in both models"
            ),
        });
    }
    let popts = PatchOptions {
        neutral: neutral.iter().map(|t| pr.text(t)).collect::<Result<_>>()?,
        ..opts.patch.clone()
    };
    let rep = patching(base.0, tuned.0, &data, &popts)?;
    let mut files = rep.write(dir)?;
    files.extend(write_figures(&[(tuned_name, &rep)], dir, |id| {
        base.1.decode(&[id]).unwrap_or_default()
    })?);
    Ok((rep, files))
}

impl Patching {
    /// The report for a terminal: per layer the fraction restored (or the change of P when the
    /// gap is too small) by the full, last-position, rank-1, mean-direction and random patches
    /// and removed by noising; the rank curves; the verdict.
    pub fn table(&self) -> String {
        let mut t = String::from("layer     full     last   rank-1  mean-dir   random    noise\n");
        let v = |e: &Effect| e.fraction.unwrap_or(e.delta_p);
        for r in &self.layers {
            t.push_str(&format!(
                "{:>5} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>8.3} {:>8.3}\n",
                r.layer,
                v(&r.full),
                v(&r.last),
                v(&r.rank1),
                v(&r.mean_diff),
                v(&r.random1),
                v(&r.noise_full)
            ));
        }
        for c in &self.ranks {
            let pts: Vec<String> = c
                .points
                .iter()
                .map(|p| format!("k={} {:.2}", p.k, p.of_full))
                .collect();
            t.push_str(&format!(
                "rank curve at layer {} (of the full patch): {}\n",
                c.layer,
                pts.join(", ")
            ));
        }
        t.push_str(&format!("verdict: {}\n", self.verdict.reading));
        t
    }
}
