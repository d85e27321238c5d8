//! A crosscoder's latent dashboard: one static HTML page (no server, no network, no external
//! file) with the latent table, sortable by any column (tuned-specificity first), and per shown
//! latent its top-activating contexts with each token shaded by the latent's activation, its
//! decoder-norm and Latent Scaling numbers, and its steering effect where one was measured.
//!
//! [`Dashboard::build`] collects what the page shows from a crosscoder, its paired corpus and
//! [`latents`](super::latents)'s table; [`Dashboard::save`] writes `dashboard.json` (the data)
//! and `dashboard.html` (the page) atomically; [`Dashboard::load`] reads the data back, so that
//! the page can be rebuilt (`puppetlens crosscoder dashboard DIR`) without the models.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::corpus::PairedCorpus;
use super::latents::{LatentLabel, LatentStats};
use super::metrics::Metrics;
use super::store::{CorpusStore, Windows};
use super::Dictionary;
use crate::hook::HookPoint;
use crate::util::atomic_write_bytes;
use crate::{Error, Result};

/// The data file of a dashboard.
pub const DASHBOARD_DATA: &str = "dashboard.json";
/// The page.
pub const DASHBOARD_PAGE: &str = "dashboard.html";

/// What the dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DashboardOptions {
    /// Latents shown with their contexts: every latent labelled tuned-only, base-only or
    /// artefact, every latent with a measured steering effect, and up to this many more of
    /// those farthest from a relative decoder norm of 0.5 (64).
    pub shown: usize,
    /// Top-activating contexts per shown latent (8).
    pub contexts: usize,
    /// Tokens per context, ending at the activating one (16).
    pub window: usize,
    /// Prompt sets whose text the dashboard does not store (third-party data that must not be
    /// copied into a repository, say): their contexts keep their source, position and
    /// activations, the tokens become `·` (empty: none withheld).
    pub withheld: Vec<String>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            shown: 64,
            contexts: 8,
            window: 16,
            withheld: Vec::new(),
        }
    }
}

/// One top-activating context, decoded: the window's tokens and the latent's activation on each
/// (0 where the corpus holds no activation, such as a skipped `<bos>`); the last token is the
/// activating one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownContext {
    /// Name of the prompt set.
    pub set: String,
    /// Index of the prompt in its set.
    pub item: usize,
    /// Position of the activating token in the prompt.
    pub pos: usize,
    /// The latent's activation at the activating token.
    pub activation: f32,
    /// Decoded tokens of the window.
    pub tokens: Vec<String>,
    /// The latent's activation on each token of the window.
    pub acts: Vec<f32>,
    /// The text was not stored ([`DashboardOptions::withheld`]).
    #[serde(default)]
    pub withheld: bool,
}

/// A measured steering effect of one latent: behaviour with and without the latent's decoder
/// direction added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeringEffect {
    /// The latent.
    pub latent: usize,
    /// The model whose decoder direction was added (1 = tuned).
    pub model: usize,
    /// The scale of the added direction (latent activation units).
    pub scale: f64,
    /// What was measured, e.g. `"P(agree), test split"`.
    pub measure: String,
    /// Items measured.
    pub items: usize,
    /// Without the latent.
    pub before: f64,
    /// With it.
    pub after: f64,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// The page title.
    pub title: String,
    /// The hook point the crosscoder reads.
    pub hook_name: String,
    /// The two models' names (base, tuned).
    pub models: Vec<String>,
    /// Tokens in the corpus, per prompt set.
    pub corpus: BTreeMap<String, usize>,
    /// Reconstruction metrics on the corpus.
    pub metrics: Option<Metrics>,
    /// The per-latent table.
    pub latents: Vec<LatentStats>,
    /// Top contexts of the shown latents.
    pub contexts: BTreeMap<usize, Vec<ShownContext>>,
    /// Measured steering effects.
    pub steering: Vec<SteeringEffect>,
}

impl Dashboard {
    /// Collects the dashboard of crosscoder `dict` on `corpus`: `f` its latent activations
    /// (`[n_tokens, n_latents]`, from [`PairedCorpus::latent_activations`]), `latents` its table
    /// (from [`latents`](super::latents)), `decode` a token's text. For a corpus on disk:
    /// [`build_streamed`](Self::build_streamed).
    pub fn build(
        dict: &Dictionary,
        corpus: &PairedCorpus,
        f: &Tensor,
        latents: Vec<LatentStats>,
        metrics: Option<Metrics>,
        decode: impl Fn(u32) -> String,
        opts: &DashboardOptions,
    ) -> Result<Self> {
        corpus.check_dict(dict)?;
        let counts = corpus
            .sets
            .iter()
            .cloned()
            .zip(corpus.set_counts())
            .collect();
        let mut dash = Self::empty(dict, corpus.point, counts, latents, metrics)?;
        for j in dash.shown(opts.shown) {
            let c = window_acts(corpus, f, j, opts)?;
            dash.contexts
                .insert(j, shown_contexts(&corpus.sets, c, opts, &decode));
        }
        Ok(dash)
    }

    /// [`build`](Self::build) on a paired corpus on disk: the shown latents' top contexts come
    /// from one pass over the shards ([`CorpusStore::top_contexts`]), encoded `batch_size`
    /// tokens at a time; no `[n_tokens, n_latents]` matrix is held.
    pub fn build_streamed(
        dict: &Dictionary,
        corpus: &CorpusStore,
        latents: Vec<LatentStats>,
        metrics: Option<Metrics>,
        decode: impl Fn(u32) -> String,
        opts: &DashboardOptions,
        batch_size: usize,
    ) -> Result<Self> {
        corpus.check_dict(dict)?;
        let counts = corpus
            .sets()
            .iter()
            .cloned()
            .zip(corpus.set_counts())
            .collect();
        let mut dash = Self::empty(dict, corpus.point(), counts, latents, metrics)?;
        let shown = dash.shown(opts.shown);
        let tops = corpus.top_windows(dict, &shown, opts.contexts, opts.window, batch_size)?;
        for (j, c) in shown.into_iter().zip(tops) {
            dash.contexts
                .insert(j, shown_contexts(corpus.sets(), c, opts, &decode));
        }
        Ok(dash)
    }

    /// The dashboard's header and table, without contexts.
    fn empty(
        dict: &Dictionary,
        point: HookPoint,
        corpus: BTreeMap<String, usize>,
        latents: Vec<LatentStats>,
        metrics: Option<Metrics>,
    ) -> Result<Self> {
        if latents.len() != dict.n_latents() {
            return Err(Error::Shape {
                what: "latent table of the crosscoder".into(),
                expected: format!("{} rows", dict.n_latents()),
                got: format!("{} rows", latents.len()),
            });
        }
        let name = |key: &str, default: &str| {
            dict.meta
                .get(key)
                .cloned()
                .unwrap_or_else(|| default.to_string())
        };
        Ok(Dashboard {
            title: format!(
                "{} vs {} at {point}",
                name("model.0", "base"),
                name("model.1", "tuned")
            ),
            hook_name: point.to_string(),
            models: vec![name("model.0", "base"), name("model.1", "tuned")],
            corpus,
            metrics,
            latents,
            contexts: BTreeMap::new(),
            steering: Vec::new(),
        })
    }

    /// Adds a measured steering effect and, when its latent had none, its contexts.
    pub fn add_steering(
        &mut self,
        effect: SteeringEffect,
        corpus: &PairedCorpus,
        f: &Tensor,
        decode: impl Fn(u32) -> String,
        opts: &DashboardOptions,
    ) -> Result<()> {
        self.check_effect(&effect)?;
        if let Entry::Vacant(e) = self.contexts.entry(effect.latent) {
            let c = window_acts(corpus, f, effect.latent, opts)?;
            e.insert(shown_contexts(&corpus.sets, c, opts, &decode));
        }
        self.steering.push(effect);
        Ok(())
    }

    /// [`add_steering`](Self::add_steering) on a paired corpus on disk (`dict` the crosscoder,
    /// encoding `batch_size` tokens at a time when the latent's contexts are needed).
    pub fn add_steering_streamed(
        &mut self,
        effect: SteeringEffect,
        dict: &Dictionary,
        corpus: &CorpusStore,
        decode: impl Fn(u32) -> String,
        opts: &DashboardOptions,
        batch_size: usize,
    ) -> Result<()> {
        self.check_effect(&effect)?;
        if let Entry::Vacant(e) = self.contexts.entry(effect.latent) {
            let mut c = corpus.top_windows(
                dict,
                &[effect.latent],
                opts.contexts,
                opts.window,
                batch_size,
            )?;
            let c = c.pop().unwrap_or_default();
            e.insert(shown_contexts(corpus.sets(), c, opts, &decode));
        }
        self.steering.push(effect);
        Ok(())
    }

    fn check_effect(&self, effect: &SteeringEffect) -> Result<()> {
        if effect.latent >= self.latents.len() {
            return Err(Error::IndexOutOfRange {
                what: "latent".into(),
                index: effect.latent,
                len: self.latents.len(),
            });
        }
        Ok(())
    }

    /// The latents shown with contexts: model-only labels and artefacts, then the `extra`
    /// active ones farthest from a relative norm of 0.5.
    fn shown(&self, extra: usize) -> Vec<usize> {
        let special = |l: LatentLabel| {
            matches!(
                l,
                LatentLabel::TunedOnly | LatentLabel::BaseOnly | LatentLabel::Artefact
            )
        };
        let mut out: Vec<usize> = self
            .latents
            .iter()
            .filter(|s| special(s.label))
            .map(|s| s.index)
            .collect();
        let mut rest: Vec<&LatentStats> = self
            .latents
            .iter()
            .filter(|s| !special(s.label) && s.frequency > 0.0)
            .collect();
        rest.sort_by(|a, b| {
            (b.rel_norm - 0.5)
                .abs()
                .total_cmp(&(a.rel_norm - 0.5).abs())
        });
        out.extend(rest.iter().take(extra).map(|s| s.index));
        out
    }

    /// Writes `dashboard.json` and `dashboard.html` into `dir` (created if needed), atomically.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let json = serde_json::to_string(self).map_err(|e| Error::InvalidArgument {
            name: "dashboard".into(),
            msg: e.to_string(),
        })?;
        atomic_write_bytes(&dir.join(DASHBOARD_DATA), json.as_bytes())?;
        atomic_write_bytes(&dir.join(DASHBOARD_PAGE), self.html().as_bytes())
    }

    /// Reads `dashboard.json` from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(DASHBOARD_DATA);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let dash: Dashboard = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.clone(),
            field: "(document)".into(),
            msg: format!("not a puppetlens dashboard: {e}"),
        })?;
        for (j, _) in dash.contexts.iter() {
            if *j >= dash.latents.len() {
                return Err(Error::Config {
                    path,
                    field: "contexts".into(),
                    msg: format!(
                        "contexts of latent {j}, but the table has {} latents",
                        dash.latents.len()
                    ),
                });
            }
        }
        Ok(dash)
    }

    /// The page: self-contained HTML (inline style and script).
    pub fn html(&self) -> String {
        let mut h = String::new();
        let title = esc(&self.title);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>Crosscoder: {title}</h1>\n"
        );
        let corpus: Vec<String> = self
            .corpus
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let _ = write!(
            h,
            "<p class=\"meta\">Hook point <code>{}</code>; models {} (0) and {} (1); corpus tokens: {}.",
            esc(&self.hook_name),
            esc(self.models.first().map_or("", String::as_str)),
            esc(self.models.get(1).map_or("", String::as_str)),
            corpus.join(", ")
        );
        if let Some(m) = &self.metrics {
            let fvu: Vec<String> = m.fvu.iter().map(|x| format!("{x:.3}")).collect();
            let _ = write!(
                h,
                " FVU per model {}; L0 {:.1}; dead {:.3}.",
                fvu.join(" / "),
                m.l0,
                m.dead_fraction
            );
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in &self.latents {
            *counts.entry(label_name(s.label).into()).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(h, " Labels: {}.</p>", counts.join(", "));
        h.push_str(
            "<p class=\"meta\">Relative norm = |d<sub>tuned</sub>| / (|d<sub>base</sub>| + |d<sub>tuned</sub>|) \
             (1: tuned-only); &nu;<sup>&epsilon;</sup>, &nu;<sup>r</sup>: Latent Scaling ratios (near 0: \
             truly specific to its model). Click a column to sort; click a latent for its contexts.</p>\n",
        );

        // The steering effects measured.
        if !self.steering.is_empty() {
            h.push_str("<h2>Steering effects</h2>\n<table class=\"small\"><tr><th>latent</th><th>model</th><th>scale</th><th>measure</th><th>items</th><th>before</th><th>after</th></tr>\n");
            for e in &self.steering {
                let _ = writeln!(
                    h,
                    "<tr><td><a href=\"#latent-{j}\">{j}</a></td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                    e.model,
                    e.scale,
                    esc(&e.measure),
                    e.items,
                    e.before,
                    e.after,
                    j = e.latent
                );
            }
            h.push_str("</table>\n");
        }

        // The latent table, rows in order of tuned-specificity.
        let mut order: Vec<&LatentStats> = self.latents.iter().collect();
        order.sort_by(|a, b| b.rel_norm.total_cmp(&a.rel_norm));
        h.push_str("<h2>Latents</h2>\n<table id=\"latents\"><thead><tr>");
        for (i, c) in [
            "latent",
            "label",
            "rel. norm",
            "cosine",
            "frequency",
            "&nu;<sup>&epsilon;</sup>",
            "&nu;<sup>r</sup>",
            "|d<sub>base</sub>|",
            "|d<sub>tuned</sub>|",
            "steering",
        ]
        .iter()
        .enumerate()
        {
            let _ = write!(h, "<th onclick=\"sortBy({i})\">{c}</th>");
        }
        h.push_str("</tr></thead><tbody>\n");
        let num = |x: f64, digits: usize| -> (String, String) {
            if x.is_finite() {
                (format!("{x}"), format!("{x:.digits$}"))
            } else {
                ("-1e300".into(), "-".into())
            }
        };
        for s in order {
            let j = s.index;
            let (ne, nr) = s.nu();
            let steer = self
                .steering
                .iter()
                .find(|e| e.latent == j)
                .map_or(f64::NAN, |e| e.after - e.before);
            let link = if self.contexts.contains_key(&j) {
                format!("<a href=\"#latent-{j}\">{j}</a>")
            } else {
                j.to_string()
            };
            let _ = write!(
                h,
                "<tr><td data-v=\"{j}\">{link}</td><td data-v=\"{l}\" class=\"{l}\">{l}</td>",
                l = label_name(s.label)
            );
            for (x, d) in [
                (s.rel_norm, 3),
                (s.cosine, 3),
                (s.frequency, 4),
                (ne, 3),
                (nr, 3),
                (s.norms.first().copied().unwrap_or(f64::NAN), 3),
                (s.norms.get(1).copied().unwrap_or(f64::NAN), 3),
                (steer, 3),
            ] {
                let (v, shown) = num(x, d);
                let _ = write!(h, "<td data-v=\"{v}\">{shown}</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");

        // Per shown latent: its numbers and top contexts, tokens shaded by activation.
        h.push_str("<h2>Top-activating contexts</h2>\n");
        // (Contexts of a latent the table lacks are left out: `load` rejects such files.)
        let mut shown: Vec<usize> = self
            .contexts
            .keys()
            .copied()
            .filter(|&j| j < self.latents.len())
            .collect();
        shown.sort_by(|&a, &b| {
            self.latents[b]
                .rel_norm
                .total_cmp(&self.latents[a].rel_norm)
        });
        for j in shown {
            let s = &self.latents[j];
            let _ = write!(
                h,
                "<section id=\"latent-{j}\"><h3>Latent {j} <span class=\"{l}\">{l}</span></h3>\n<p class=\"meta\">relative norm {:.3}, cosine {:.3}, frequency {:.4}",
                s.rel_norm,
                s.cosine,
                s.frequency,
                l = label_name(s.label)
            );
            if let Some(x) = &s.scaling {
                let _ = write!(
                    h,
                    "; Latent Scaling (own model {}): &beta;<sup>&epsilon;</sup> {}, &beta;<sup>r</sup> {}, &nu;<sup>&epsilon;</sup> {:.3}, &nu;<sup>r</sup> {:.3}",
                    x.own_model,
                    fmt_list(&x.beta_error),
                    fmt_list(&x.beta_recon),
                    x.nu_error,
                    x.nu_recon
                );
            }
            for e in self.steering.iter().filter(|e| e.latent == j) {
                let _ = write!(
                    h,
                    "; steering at scale {:.3} (model {}'s direction): {} {:.3} &rarr; {:.3} ({} items)",
                    e.scale,
                    e.model,
                    esc(&e.measure),
                    e.before,
                    e.after,
                    e.items
                );
            }
            h.push_str("</p>\n");
            let ctxs = &self.contexts[&j];
            if ctxs.is_empty() {
                h.push_str("<p class=\"meta\">never active on the corpus</p>\n");
            }
            let top = ctxs.iter().map(|c| c.activation).fold(0f32, f32::max);
            for c in ctxs {
                let _ = write!(
                    h,
                    "<div class=\"ctx\"><span class=\"src\">{} #{} pos {} &middot; {:.2}{}</span> ",
                    esc(&c.set),
                    c.item,
                    c.pos,
                    c.activation,
                    if c.withheld { " (text not stored)" } else { "" }
                );
                let n = c.tokens.len();
                for (i, (t, a)) in c.tokens.iter().zip(&c.acts).enumerate() {
                    let alpha = if top > 0.0 {
                        (a / top).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let class = if i + 1 == n { " class=\"hit\"" } else { "" };
                    let _ = write!(
                        h,
                        "<span{class} style=\"background:rgba(255,110,0,{alpha:.2})\" title=\"{a:.3}\">{}</span>",
                        esc(&t.replace('\n', "\u{23ce}"))
                    );
                }
                h.push_str("</div>\n");
            }
            h.push_str("</section>\n");
        }
        let _ = write!(h, "<script>{SCRIPT}</script>\n</body></html>\n");
        h
    }
}

/// Top contexts of latent `j` of `f` (`[n_tokens, n_latents]`), each with the latent's
/// activation on every window token (0 where the corpus holds no row for it).
fn window_acts(
    corpus: &PairedCorpus,
    f: &Tensor,
    j: usize,
    opts: &DashboardOptions,
) -> Result<Windows> {
    let top = corpus.top_contexts(f, j, opts.contexts, opts.window)?;
    let col = f.narrow(1, j, 1)?.flatten_all()?.to_vec1::<f32>()?; // [n_tokens]
    Ok(top
        .into_iter()
        .map(|c| {
            let n = c.window.len();
            let acts = (0..n)
                .map(|i| {
                    // Window token i sits `n - 1 - i` positions before the activating one; its
                    // corpus row is that many rows before, when the corpus kept it.
                    let back = n - 1 - i;
                    c.row
                        .checked_sub(back)
                        .filter(|&r| {
                            let s = corpus.sources[r];
                            s.set == c.source.set
                                && s.item == c.source.item
                                && s.pos + back == c.source.pos
                        })
                        .map_or(0.0, |r| col[r].max(0.0))
                })
                .collect();
            (c, acts)
        })
        .collect())
}

/// Contexts decoded for the page (withheld sets' tokens hidden).
fn shown_contexts(
    sets: &[String],
    contexts: Windows,
    opts: &DashboardOptions,
    decode: &impl Fn(u32) -> String,
) -> Vec<ShownContext> {
    contexts
        .into_iter()
        .map(|(c, acts)| {
            let n = c.window.len();
            let set = sets[c.source.set].clone();
            let withheld = opts.withheld.contains(&set);
            ShownContext {
                item: c.source.item,
                pos: c.source.pos,
                activation: c.activation,
                tokens: if withheld {
                    vec!["\u{b7}".to_string(); n]
                } else {
                    c.window.iter().map(|&t| decode(t)).collect()
                },
                acts,
                withheld,
                set,
            }
        })
        .collect()
}

fn label_name(l: LatentLabel) -> &'static str {
    match l {
        LatentLabel::Shared => "shared",
        LatentLabel::TunedOnly => "tuned_only",
        LatentLabel::BaseOnly => "base_only",
        LatentLabel::Artefact => "artefact",
        LatentLabel::Other => "other",
        LatentLabel::Inactive => "inactive",
    }
}

fn fmt_list(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", s.join(", "))
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}h3{font-size:1em;margin:0.8em 0 0.2em}\
.meta{color:#555;font-size:0.9em}\
table{border-collapse:collapse;font-size:0.85em}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}\
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}\
#latents{display:block;max-height:28em;overflow-y:auto}\
.tuned_only{color:#b00;font-weight:bold}.base_only{color:#00b;font-weight:bold}.artefact{color:#a60}\
.ctx{font-family:monospace;font-size:0.85em;margin:2px 0;white-space:pre-wrap}\
.ctx span{border-radius:2px}.ctx .hit{outline:1px solid #b00}\
.src{color:#777;margin-right:0.5em}";

const SCRIPT: &str = "var dir={};function sortBy(c){var t=document.getElementById('latents').tBodies[0];\
var rows=Array.prototype.slice.call(t.rows);dir[c]=-(dir[c]||1);var d=dir[c];\
rows.sort(function(a,b){var x=a.cells[c].getAttribute('data-v'),y=b.cells[c].getAttribute('data-v');\
var fx=parseFloat(x),fy=parseFloat(y);if(!isNaN(fx)&&!isNaN(fy))return d*(fx-fy);return d*x.localeCompare(y);});\
rows.forEach(function(r){t.appendChild(r);});}";
