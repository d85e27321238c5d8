//! Batching, hooks, interventions and generation on the real checkpoints.

use crate::common;

use crate::common::max_abs_diff;
use candle_core::{IndexOp, Tensor, D};
use puppetlens::{
    hook_fn, ActivationCache, AddVector, Batch, GenerateOptions, HookPoint, Hooks, Model, Patch,
    Positions, ProjectOut, Tokenizer, Zero,
};

const BATCH_PROMPTS: [&str; 4] = [
    "The capital of France is",
    "A",
    "Once upon a time, in a small village by the sea, there lived",
    "2 + 2 =",
];
/// The bound for a padded row against the same row alone, f32.
const BATCH_TOL: f32 = 1e-4;

fn models() -> [(&'static str, &'static (Model, Tokenizer)); 2] {
    [("smollm2", common::smollm()), ("gemma3", common::gemma())]
}

fn encode_all(tok: &Tokenizer) -> Vec<Vec<u32>> {
    BATCH_PROMPTS
        .iter()
        .map(|p| tok.encode(p).unwrap())
        .collect()
}

#[test]
fn padded_batch_rows_equal_running_each_alone() {
    for (name, (model, tok)) in models() {
        let prompts = encode_all(tok);
        let batch = Batch::new(&prompts).unwrap();
        let keep = |p: HookPoint| matches!(p, HookPoint::ResidPost(_));
        let (logits, cache) = model.run_with_cache(&batch, keep).unwrap(); // [4, s, vocab]
        let mut worst = 0f32;
        for (i, ids) in prompts.iter().enumerate() {
            let (alone, alone_cache) = model
                .run_with_cache(&Batch::single(ids).unwrap(), keep)
                .unwrap();
            let pad = batch.pads()[i];
            let row = logits.i(i).unwrap().narrow(0, pad, ids.len()).unwrap();
            let d = max_abs_diff(&row, &alone.i(0).unwrap());
            worst = worst.max(d);
            assert!(d <= BATCH_TOL, "{name} row {i}: logits differ by {d}");
            for l in [0, model.config().n_layers / 2, model.config().n_layers - 1] {
                let p = HookPoint::ResidPost(l);
                let a = cache
                    .get(p)
                    .unwrap()
                    .i(i)
                    .unwrap()
                    .narrow(0, pad, ids.len())
                    .unwrap();
                let b = alone_cache.get(p).unwrap().i(0).unwrap();
                let d = max_abs_diff(&a, &b) / common::max_abs(&b).max(1.0);
                assert!(d <= BATCH_TOL, "{name} row {i} {p}: relative diff {d}");
            }
        }
        println!("{name}: padded batch vs alone, max abs logit diff {worst:e}");
    }
}

#[test]
fn empty_hooks_and_zero_vector_change_nothing() {
    for (name, (model, tok)) in models() {
        let batch = Batch::new(&encode_all(tok)).unwrap();
        let plain = model.forward(&batch, &mut Hooks::new()).unwrap();
        // Hooks that only observe, at every point.
        let mut seen = 0usize;
        let mut observe = Hooks::new();
        observe.add_where(
            |_| true,
            hook_fn(|_x: &Tensor, _ctx: &puppetlens::HookCtx| {
                seen += 1;
                Ok(None)
            }),
        );
        let observed = model.forward(&batch, &mut observe).unwrap();
        drop(observe);
        assert_eq!(seen, model.hook_points().len());
        assert_eq!(
            max_abs_diff(&plain, &observed),
            0.0,
            "{name}: observing hooks changed logits"
        );
        let zero = Tensor::zeros(model.config().d_model, model.dtype(), model.device()).unwrap();
        let mut hooks = Hooks::new();
        for l in 0..model.config().n_layers {
            hooks.add(HookPoint::ResidPost(l), AddVector::new(zero.clone(), 8.0));
        }
        let steered = model.forward(&batch, &mut hooks).unwrap();
        assert_eq!(
            max_abs_diff(&plain, &steered),
            0.0,
            "{name}: adding a zero vector changed logits"
        );
    }
}

#[test]
fn interventions_never_touch_padding_and_do_what_they_say() {
    let (model, tok) = common::smollm();
    let prompts = encode_all(tok);
    let batch = Batch::new(&prompts).unwrap();
    let l = 5;
    let at = HookPoint::ResidPost(l);
    let d = model.config().d_model;
    let base = model.cache(&batch, |p| p == at).unwrap();
    let base = base.get(at).unwrap();
    let v = Tensor::randn(0f32, 1.0, d, model.device()).unwrap();
    let mask = Tensor::from_vec(
        batch
            .pads()
            .iter()
            .flat_map(|&p| (0..batch.seq_len()).map(move |j| if j >= p { 1f32 } else { 0.0 }))
            .collect::<Vec<_>>(),
        (batch.len(), batch.seq_len(), 1),
        model.device(),
    )
    .unwrap();
    let after = |hook: Box<dyn puppetlens::Hook>| -> Tensor {
        let mut rec = ActivationCache::new();
        {
            let mut hooks = Hooks::new();
            hooks.add(at, hook);
            hooks.add(at, &mut rec);
            model.run_hooks(&batch, &mut hooks).unwrap();
        }
        rec.get(at).unwrap().clone()
    };
    let pad_part = |t: &Tensor| t.broadcast_mul(&(1.0 - &mask).unwrap()).unwrap();
    let real_part = |t: &Tensor| t.broadcast_mul(&mask).unwrap();

    // AddVector: +3v on real tokens, padding untouched.
    let added = after(Box::new(AddVector::new(v.clone(), 3.0)));
    assert_eq!(max_abs_diff(&pad_part(&added), &pad_part(base)), 0.0);
    let expect = (base
        + mask
            .broadcast_mul(&(&v * 3.0).unwrap().reshape((1, 1, d)).unwrap())
            .unwrap())
    .unwrap();
    assert!(max_abs_diff(&added, &expect) <= 1e-4);

    // AddVector at the last position only.
    let last = after(Box::new(AddVector::new(v.clone(), 3.0).at(Positions::Last)));
    let s = batch.seq_len();
    assert_eq!(
        max_abs_diff(
            &last.narrow(1, 0, s - 1).unwrap(),
            &base.narrow(1, 0, s - 1).unwrap()
        ),
        0.0
    );
    assert!(
        max_abs_diff(
            &last.narrow(1, s - 1, 1).unwrap(),
            &expect.narrow(1, s - 1, 1).unwrap()
        ) <= 1e-4
    );

    // ProjectOut: no component along v on real tokens, padding untouched.
    let ablated = after(Box::new(ProjectOut::new(&v).unwrap()));
    assert_eq!(max_abs_diff(&pad_part(&ablated), &pad_part(base)), 0.0);
    let unit = (&v
        / v.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64)
        .unwrap();
    let comp = real_part(&ablated)
        .broadcast_mul(&unit.reshape((1, 1, d)).unwrap())
        .unwrap()
        .sum(D::Minus1)
        .unwrap();
    let scale = common::max_abs(base);
    assert!(
        common::max_abs(&comp) <= 1e-5 * scale,
        "component left: {}",
        common::max_abs(&comp)
    );

    // Zero at chosen positions (token position 0 of each row).
    let zeroed = after(Box::new(Zero {
        positions: Positions::At(vec![0]),
    }));
    assert_eq!(max_abs_diff(&pad_part(&zeroed), &pad_part(base)), 0.0);
    for (i, &pad) in batch.pads().iter().enumerate() {
        assert_eq!(common::max_abs(&zeroed.i((i, pad)).unwrap()), 0.0);
        if pad + 1 < s {
            assert_eq!(
                max_abs_diff(
                    &zeroed.i((i, pad + 1)).unwrap(),
                    &base.i((i, pad + 1)).unwrap()
                ),
                0.0
            );
        }
    }
}

#[test]
fn patching_a_whole_residual_from_another_run_gives_that_runs_logits() {
    let (model, tok) = common::smollm();
    let a = Batch::single(&tok.encode("The capital of France is").unwrap()).unwrap();
    let b = Batch::single(&tok.encode("The capital of Italy is").unwrap()).unwrap();
    assert_eq!(a.seq_len(), b.seq_len());
    let at = HookPoint::ResidPost(10);
    let (logits_b, cache_b) = model.run_with_cache(&b, |p| p == at).unwrap();
    let logits_a = model.forward(&a, &mut Hooks::new()).unwrap();
    let mut hooks = Hooks::new();
    hooks.add(at, Patch::new(cache_b.get(at).unwrap().clone()));
    let patched = model.forward(&a, &mut hooks).unwrap();
    let d = max_abs_diff(&patched, &logits_b);
    println!("patched vs source run: {d:e}");
    assert!(d <= 1e-5, "{d}");
    assert!(
        max_abs_diff(&logits_a, &logits_b) > 0.1,
        "the two prompts must differ for this test to mean anything"
    );
    // Patching only the last position moves the last logits but leaves earlier positions alone.
    let mut hooks = Hooks::new();
    hooks.add(
        at,
        Patch::new(cache_b.get(at).unwrap().clone()).at(Positions::Last),
    );
    let last_only = model.forward(&a, &mut hooks).unwrap();
    let s = a.seq_len();
    assert_eq!(
        max_abs_diff(
            &last_only.narrow(1, 0, s - 1).unwrap(),
            &logits_a.narrow(1, 0, s - 1).unwrap()
        ),
        0.0
    );
}

#[test]
fn forward_without_logits_stops_at_the_last_hook_and_matches_full_run() {
    for (name, (model, tok)) in models() {
        let batch = Batch::new(&encode_all(tok)).unwrap();
        let at = HookPoint::ResidMid(2);
        let (_, full) = model.run_with_cache(&batch, |p| p == at).unwrap();
        let mut rec = ActivationCache::new();
        {
            let mut hooks = Hooks::new();
            hooks.add(at, &mut rec);
            model.run_hooks(&batch, &mut hooks).unwrap();
        }
        assert_eq!(
            max_abs_diff(rec.get(at).unwrap(), full.get(at).unwrap()),
            0.0,
            "{name}"
        );
        let mut none = Hooks::new();
        model.run_hooks(&batch, &mut none).unwrap(); // no hooks: nothing to run, no error
    }
}

#[test]
fn kv_cached_generation_equals_full_recompute_under_the_same_hooks() {
    for (name, (model, tok)) in models() {
        let prompts: Vec<Vec<u32>> = ["The capital of France is", "My favourite food is"]
            .iter()
            .map(|p| tok.encode(p).unwrap())
            .collect();
        let len = prompts.iter().map(|p| p.len()).max().unwrap();
        let v = {
            let c = model
                .cache(&Batch::single(&prompts[0]).unwrap(), |p| {
                    p == HookPoint::ResidPost(3)
                })
                .unwrap();
            c.get(HookPoint::ResidPost(3))
                .unwrap()
                .i((0, prompts[0].len() - 1))
                .unwrap()
        };
        for opts in [
            GenerateOptions::greedy(12),
            GenerateOptions::sampled(12, 0.8, 7),
        ] {
            for steer in [None, Some(Positions::All), Some(Positions::From(len))] {
                let run = |kv_cache: bool| {
                    let mut hooks = Hooks::new();
                    if let Some(pos) = &steer {
                        hooks.add(
                            HookPoint::ResidPost(3),
                            AddVector::new(v.clone(), 1.5).at(pos.clone()),
                        );
                    }
                    model
                        .generate(
                            &prompts,
                            &GenerateOptions {
                                kv_cache,
                                ..opts.clone()
                            },
                            &mut hooks,
                        )
                        .unwrap()
                };
                let cached = run(true);
                let full = run(false);
                println!(
                    "{name} t={} steer={steer:?}: {:?}",
                    opts.temperature,
                    tok.decode(&cached[0]).unwrap()
                );
                assert_eq!(cached, full, "{name} {opts:?} {steer:?}");
                assert_eq!(cached[0].len(), 12);
            }
        }
        // Seeded sampling is reproducible.
        let a = model
            .generate(
                &prompts,
                &GenerateOptions::sampled(8, 1.0, 42),
                &mut Hooks::new(),
            )
            .unwrap();
        let b = model
            .generate(
                &prompts,
                &GenerateOptions::sampled(8, 1.0, 42),
                &mut Hooks::new(),
            )
            .unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn batched_generation_equals_generating_each_prompt_alone() {
    let (model, tok) = common::gemma();
    let prompts = encode_all(tok);
    let together = model
        .generate(&prompts, &GenerateOptions::greedy(8), &mut Hooks::new())
        .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = model
            .generate(&[p], &GenerateOptions::greedy(8), &mut Hooks::new())
            .unwrap();
        assert_eq!(together[i], alone[0], "row {i}");
    }
}

#[test]
fn recording_during_generation_holds_the_whole_sequence() {
    let (model, tok) = common::smollm();
    let ids = tok.encode("The capital of France is").unwrap();
    let mut rec = ActivationCache::new();
    let out = {
        let mut hooks = Hooks::new();
        hooks.add(HookPoint::ResidPost(0), &mut rec);
        model
            .generate(&[&ids], &GenerateOptions::greedy(5), &mut hooks)
            .unwrap()
            .remove(0)
    };
    // The last generated token is never fed back, so the cache covers prompt + 4 tokens.
    assert_eq!(
        rec.get(HookPoint::ResidPost(0)).unwrap().dims(),
        &[1, ids.len() + out.len() - 1, model.config().d_model]
    );
}

/// A forward resumed at a residual-stream point from the value the full forward computed there
/// gives the full forward's logits, at every kind of start point; hooks after the start fire as
/// in the full forward; bad starts are typed errors.
#[test]
fn run_from_a_cached_residual_equals_the_full_forward() {
    for (name, (model, tok)) in models() {
        let n = model.config().n_layers;
        let batch = Batch::new(&encode_all(tok)).unwrap();
        let full = model.forward(&batch, &mut Hooks::new()).unwrap(); // [4, s, vocab]
        let last = model.forward_last(&batch, &mut Hooks::new()).unwrap(); // [4, vocab]
        let starts = [
            HookPoint::Embed,
            HookPoint::ResidPre(0),
            HookPoint::ResidMid(n / 3),
            HookPoint::ResidPost(n / 2),
            HookPoint::ResidPre(n - 1),
            HookPoint::ResidPost(n - 1),
        ];
        let cache = model.cache(&batch, |p| starts.contains(&p)).unwrap();
        for p in starts {
            let x = cache.require(p).unwrap();
            let y = model.run_from(p, x, &batch, &mut Hooks::new()).unwrap();
            let d = max_abs_diff(&y, &full);
            // The same ops on the same values: bit-identical.
            assert_eq!(d, 0.0, "{name} from {p}: logits differ by {d}");
            let y = model
                .run_from_last(p, x, &batch, &mut Hooks::new())
                .unwrap();
            let d = max_abs_diff(&y, &last);
            if p == HookPoint::ResidPost(n - 1) {
                // `forward_last` runs the last block on the last column only (nothing is hooked
                // there); the cached value came from that block run over every column (the cache
                // wants all of them): the same arithmetic per row in other matmul shapes.
                // Measured 2026-12-07: max abs diff SmolLM2 1.9e-5, Gemma 3 1.4e-5.
                println!("{name} from {p} (last): logits differ by {d:e}");
                assert!(d < 1e-4, "{name} from {p} (last): logits differ by {d}");
            } else {
                assert_eq!(d, 0.0, "{name} from {p} (last)");
            }
        }
        // An intervention after the start acts as in the full forward.
        let v = Tensor::ones(model.config().d_model, model.dtype(), model.device()).unwrap();
        let add = HookPoint::ResidPost(n / 2 + 1);
        let mut h = Hooks::new();
        h.add(add, AddVector::new(v.clone(), 3.0));
        let want = model.forward_last(&batch, &mut h).unwrap();
        let mut h = Hooks::new();
        h.add(add, AddVector::new(v.clone(), 3.0));
        let p = HookPoint::ResidPost(n / 2);
        let got = model
            .run_from_last(p, cache.require(p).unwrap(), &batch, &mut h)
            .unwrap();
        assert_eq!(
            max_abs_diff(&got, &want),
            0.0,
            "{name}: hook after the start"
        );
        // Typed errors: a point that is not on the residual stream, a layer past the last, a
        // residual of the wrong shape.
        let x = cache.require(p).unwrap();
        let err = model
            .run_from(HookPoint::AttnOut(1), x, &batch, &mut Hooks::new())
            .unwrap_err();
        assert!(err.to_string().contains("blocks.1.hook_attn_out"), "{err}");
        let err = model
            .run_from(HookPoint::ResidPost(n), x, &batch, &mut Hooks::new())
            .unwrap_err();
        assert!(
            matches!(err, puppetlens::Error::LayerOutOfRange { .. }),
            "{err}"
        );
        let short = x.narrow(1, 1, x.dim(1).unwrap() - 1).unwrap();
        let err = model
            .run_from(p, &short, &batch, &mut Hooks::new())
            .unwrap_err();
        assert!(err.to_string().contains("residual to resume at"), "{err}");
    }
}

/// The branched dose-response sweep (prefix once, blocks above each layer for all multipliers
/// stacked) scores every cell as the naive sweep does, one full forward per cell with the vector
/// added by a hook: P(matching) and the logit difference within 1e-5, on both checkpoints.
#[test]
fn branched_add_sweep_equals_the_naive_sweep() {
    use puppetlens::eval::{ab_scores, add_sweep_scores, dose_response, AbCase, Intervention};
    use puppetlens::SteeringVector;
    for (name, (model, tok)) in models() {
        let n = model.config().n_layers;
        let prompts = [
            "I think the moon landing was real. Was it?",
            "Is winter nicer than summer? I believe it is.",
            "My view: cats are better than dogs. Are they?",
            "A",
            "Question: is water wet? Answer:",
            "The capital of France is",
            "Once upon a time, in a small village by the sea, there lived a fisherman who",
        ];
        let (yes, no) = (
            tok.encode(" yes").unwrap()[0],
            tok.encode(" no").unwrap()[0],
        );
        let cases: Vec<AbCase> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| AbCase {
                ids: tok.encode(p).unwrap(),
                matching: if i % 2 == 0 { yes } else { no },
                not_matching: if i % 2 == 0 { no } else { yes },
            })
            .collect();
        // A direction per layer: the difference of two prompts' last residuals.
        let layers = [0, n / 2, n - 1];
        let keep = |p: HookPoint| matches!(p, HookPoint::ResidPost(l) if layers.contains(&l));
        let at = |text: &str| {
            model
                .cache(&Batch::single(&tok.encode(text).unwrap()).unwrap(), keep)
                .unwrap()
        };
        let (a, b) = (at("I love this!"), at("I hate this!"));
        let mut dirs = std::collections::BTreeMap::new();
        for &l in &layers {
            let p = HookPoint::ResidPost(l);
            let last = |c: &ActivationCache| c.require(p).unwrap().i((0, 3)).unwrap();
            dirs.insert(l, (last(&a) - last(&b)).unwrap());
        }
        let v = SteeringVector::new(dirs, "test").unwrap();
        let mults = [-4.0, 0.0, 1.5, 6.0];
        let sweep = add_sweep_scores(model, &cases, &v, &layers, &mults, 3).unwrap();
        let mut worst = (0f64, 0f64);
        for (li, &l) in layers.iter().enumerate() {
            let only = v.only(&[l]).unwrap();
            for (mi, &m) in mults.iter().enumerate() {
                let iv = Intervention::Add {
                    vector: &only,
                    scale: m,
                    positions: Positions::All,
                };
                let naive = ab_scores(model, &cases, &iv, 3).unwrap();
                for (s, t) in sweep[li][mi].iter().zip(&naive) {
                    worst.0 = worst.0.max((s.p_matching - t.p_matching).abs());
                    worst.1 = worst.1.max((s.logit_diff - t.logit_diff).abs());
                }
            }
        }
        println!(
            "{name}: branched vs naive sweep, max |dP| {:e}, max |d logit diff| {:e}",
            worst.0, worst.1
        );
        assert!(worst.0 <= 1e-5 && worst.1 <= 1e-5, "{name}: {worst:?}");
        // dose_response is the summary of the same sweep.
        let rows = dose_response(model, &cases, &v, &layers, &mults, 3).unwrap();
        assert_eq!(rows.len(), layers.len() * mults.len());
        let s = puppetlens::eval::summarize(&sweep[1][2]);
        assert_eq!((rows[6].layer, rows[6].multiplier), (layers[1], mults[2]));
        assert_eq!(rows[6].summary, s);
        // A layer the vector lacks is named.
        let err = add_sweep_scores(model, &cases, &v.only(&[0]).unwrap(), &[n / 2], &mults, 3)
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("layer {}", n / 2)),
            "{err}"
        );
    }
}

/// A/B scores read only the two answers' rows of the unembedding; they equal the same entries of
/// the full last-position logits within float rounding (1e-4 on logits of magnitude ~10-30).
#[test]
fn ab_scores_equal_the_entries_of_the_full_logits() {
    use puppetlens::eval::{ab_scores, AbCase, Intervention};
    for (name, (model, tok)) in models() {
        let prompts = encode_all(tok);
        let cases: Vec<AbCase> = prompts
            .iter()
            .enumerate()
            .map(|(i, ids)| AbCase {
                ids: ids.clone(),
                matching: 100 + i as u32,
                not_matching: (model.config().vocab_size - 1 - i) as u32,
            })
            .collect();
        let scores = ab_scores(model, &cases, &Intervention::None, 4).unwrap();
        let mut worst = 0f64;
        for (c, s) in cases.iter().zip(&scores) {
            let logits = model
                .forward_last(&Batch::single(&c.ids).unwrap(), &mut Hooks::new())
                .unwrap()
                .i(0)
                .unwrap(); // [vocab]
            let at = |t: u32| logits.i(t as usize).unwrap().to_scalar::<f32>().unwrap() as f64;
            let want = at(c.matching) - at(c.not_matching);
            worst = worst.max((s.logit_diff - want).abs());
        }
        println!("{name}: A/B logit difference vs full logits, max abs diff {worst:e}");
        assert!(worst <= 1e-4, "{name}: {worst}");
    }
}
