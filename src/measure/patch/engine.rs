//! The patching engine: both models' unpatched runs of a batch, then patched forwards resumed
//! at the patched layer (subspace patches stacked as rows; single positions on the recipient's
//! cached keys and values).

use super::*;

// ---------------------------------------------------------------------------------------------
// The engine: patched forwards resumed at the patched layer.

/// Which model receives the other's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    /// The base receives the tuned model's activation.
    Denoise,
    /// The tuned model receives the base's.
    Noise,
}

/// Which part of the difference is patched.
#[derive(Debug, Clone)]
pub(super) enum Sub {
    /// All of it.
    Full,
    /// Its projection on the span of orthonormal columns, `[d_model, k]` in the model's dtype.
    Span(Tensor),
}

/// A patch at every position.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) layer: usize,
    pub(super) dir: Dir,
    pub(super) sub: Sub,
}

/// A full patch at one position (`offset` from the end).
#[derive(Debug, Clone, Copy)]
pub(super) struct PosJob {
    pub(super) layer: usize,
    pub(super) dir: Dir,
    pub(super) offset: usize,
}

/// Per-item scores of every job.
pub(super) struct Runs {
    pub(super) base: Vec<AbScore>,
    pub(super) tuned: Vec<AbScore>,
    pub(super) jobs: Vec<Vec<AbScore>>,
    pub(super) pos: Vec<Vec<AbScore>>,
}

/// One model's side of a batch: its activations at the points patched, its keys and values.
pub(super) struct Side {
    pub(super) cache: ActivationCache,
    pub(super) kv: KvCache,
}

pub(super) struct Engine<'a> {
    pub(super) base: &'a Model,
    pub(super) tuned: &'a Model,
    pub(super) family: Family,
    pub(super) batch_size: usize,
}

impl Engine<'_> {
    pub(super) fn model(&self, base: bool) -> &Model {
        if base {
            self.base
        } else {
            self.tuned
        }
    }

    /// One model's unpatched run of a batch: scores (into `out`), activations, keys and values.
    pub(super) fn prefill(
        &self,
        model: &Model,
        batch: &Batch,
        answers: &[Vec<u32>],
        layers: &[usize],
        idx: &[usize],
        out: &mut [AbScore],
    ) -> Result<Side> {
        let family = self.family;
        let keep = |p: HookPoint| {
            layers.iter().any(|&l| {
                let (_, add) = family.resume(l);
                p == family.point(l) || Some(p) == add
            })
        };
        let mut cache = ActivationCache::new();
        let mut kv = KvCache::new(model.config().n_layers, batch.pads().to_vec());
        {
            let mut hooks = Hooks::new();
            hooks.add_where(keep, &mut cache);
            let logits =
                model.last_token_logits(batch, &mut hooks, None, Some(&mut kv), answers)?; // [b, 2]
            score_rows(&logits, idx, out)?;
        }
        Ok(Side { cache, kv })
    }

    /// Scores every job (all positions) and every single-position job on `cases`.
    pub(super) fn run(
        &self,
        cases: &[AbCase],
        jobs: &[Job],
        pos: &[PosJob],
        label: &str,
        progress: bool,
    ) -> Result<Runs> {
        let n = cases.len();
        let mut runs = Runs {
            base: vec![AbScore::NAN; n],
            tuned: vec![AbScore::NAN; n],
            jobs: vec![vec![AbScore::NAN; n]; jobs.len()],
            pos: vec![vec![AbScore::NAN; n]; pos.len()],
        };
        let mut layers: Vec<usize> = jobs.iter().map(|j| j.layer).collect();
        layers.extend(pos.iter().map(|j| j.layer));
        layers.sort_unstable();
        layers.dedup();
        // Jobs of one layer and direction run stacked as rows of one batch.
        let mut groups: BTreeMap<(usize, bool), Vec<usize>> = BTreeMap::new();
        for (i, j) in jobs.iter().enumerate() {
            groups
                .entry((j.layer, j.dir == Dir::Denoise))
                .or_default()
                .push(i);
        }
        let lens: Vec<usize> = cases.iter().map(|c| c.ids.len()).collect();
        let batches = length_batches(&lens, self.batch_size);
        let mut bar = Progress::new(label, batches.len() * (groups.len() + pos.len()), progress);
        for idx in batches {
            let ids: Vec<&[u32]> = idx.iter().map(|&i| cases[i].ids.as_slice()).collect();
            let batch = Batch::new(&ids)?;
            let answers = answer_ids(cases, &idx);
            let base = self.prefill(self.base, &batch, &answers, &layers, &idx, &mut runs.base)?;
            let tuned =
                self.prefill(self.tuned, &batch, &answers, &layers, &idx, &mut runs.tuned)?;
            let mask = real_tokens(&batch, self.base)?; // [b, s, 1]
            for (&(layer, denoise), members) in &groups {
                let (rec, don) = if denoise {
                    (&base, &tuned)
                } else {
                    (&tuned, &base)
                };
                let model = self.model(denoise);
                let values = self.patched_all(
                    rec,
                    don,
                    layer,
                    members.iter().map(|&i| &jobs[i].sub),
                    &mask,
                )?;
                let b = batch.len();
                let per = (SWEEP_ROWS / b).max(1);
                let (resume, _) = self.family.resume(layer);
                for (ci, chunk) in values.chunks(per).enumerate() {
                    let stacked = Tensor::cat(chunk, 0)?; // [chunk * b, s, d_model]
                    let rows: Vec<&[u32]> =
                        (0..chunk.len()).flat_map(|_| ids.iter().copied()).collect();
                    let ans: Vec<Vec<u32>> =
                        (0..chunk.len()).flat_map(|_| answers.clone()).collect();
                    let logits = model.last_token_logits(
                        &Batch::new(&rows)?,
                        &mut Hooks::new(),
                        Some((resume, &stacked)),
                        None,
                        &ans,
                    )?; // [chunk * b, 2]
                    for k in 0..chunk.len() {
                        let job = members[ci * per + k];
                        score_rows(&logits.narrow(0, k * b, b)?, &idx, &mut runs.jobs[job])?;
                    }
                }
                bar.advance(1);
            }
            for (pi, pj) in pos.iter().enumerate() {
                let (rec, don) = match pj.dir {
                    Dir::Denoise => (&base, &tuned),
                    Dir::Noise => (&tuned, &base),
                };
                let model = self.model(pj.dir == Dir::Denoise);
                let logits = self.patched_at(model, rec, don, &batch, &answers, *pj)?; // [b, 2]
                score_rows(&logits, &idx, &mut runs.pos[pi])?;
                bar.advance(1);
            }
        }
        bar.finish();
        Ok(runs)
    }

    /// The resumed forward's inputs (`[b, s, d_model]` each) of the subspace patches `subs` at
    /// `layer`: the recipient's activation plus the chosen part of `donor - recipient` on real
    /// tokens, added to the recipient's residual where the family is a block output.
    pub(super) fn patched_all<'s>(
        &self,
        rec: &Side,
        don: &Side,
        layer: usize,
        subs: impl Iterator<Item = &'s Sub>,
        mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let p = self.family.point(layer);
        let (_, add) = self.family.resume(layer);
        let r = rec.cache.require(p)?; // [b, s, d_model]
        let delta = (don.cache.require(p)? - r)?.broadcast_mul(mask)?; // [b, s, d_model]
        let (b, s, d) = delta.dims3()?;
        let flat = delta.reshape((b * s, d))?; // [b * s, d_model]
        subs.map(|sub| {
            let part = match sub {
                Sub::Full => delta.clone(),
                Sub::Span(q) => flat.matmul(q)?.matmul(&q.t()?)?.reshape((b, s, d))?, // [b, s, d_model]
            };
            let x = (r + part)?; // [b, s, d_model]
            Ok(match add {
                Some(a) => (rec.cache.require(a)? + x)?,
                None => x,
            })
        })
        .collect()
    }

    /// The two answers' logits (`[b, 2]`) with the donor's activation patched in at one position
    /// only: the recipient's keys and values before it are reused and only the columns from it
    /// on run, from the patched layer on.
    pub(super) fn patched_at(
        &self,
        model: &Model,
        rec: &Side,
        don: &Side,
        batch: &Batch,
        answers: &[Vec<u32>],
        job: PosJob,
    ) -> Result<Tensor> {
        let s = batch.seq_len();
        let c = s - 1 - job.offset;
        let n = s - c;
        let p = self.family.point(job.layer);
        let (resume, add) = self.family.resume(job.layer);
        let r = rec.cache.require(p)?; // [b, s, d_model]
        let mut parts = vec![don.cache.require(p)?.narrow(1, c, 1)?]; // [b, 1, d_model]
        if n > 1 {
            parts.push(r.narrow(1, c + 1, n - 1)?); // [b, n - 1, d_model]
        }
        let x = Tensor::cat(&parts, 1)?; // [b, n, d_model]
        let x = match add {
            Some(a) => (rec.cache.require(a)?.narrow(1, c, n)? + x)?,
            None => x,
        }; // [b, n, d_model]
        let mut kv = rec.kv.prefix(c)?;
        // Rows are stored without their padding; every row is real from column `c` on.
        let rows: Vec<&[u32]> = batch
            .rows()
            .zip(batch.pads())
            .map(|(row, &pad)| &row[c - pad..])
            .collect();
        model.last_token_logits(
            &Batch::new(&rows)?,
            &mut Hooks::new(),
            Some((resume, &x)),
            Some(&mut kv),
            answers,
        )
    }
}

/// 1 on a batch's real tokens, 0 on its padding: `[b, s, 1]` in the model's dtype.
pub(super) fn real_tokens(batch: &Batch, model: &Model) -> Result<Tensor> {
    Ok(batch
        .real_mask(model.device(), model.dtype())?
        .unsqueeze(D::Minus1)?) // [b, s, 1]
}
