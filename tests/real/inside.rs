//! Inside the blocks, on the real checkpoints: per-head and per-neuron interventions against their
//! residual-stream counterparts, attention knockout, the logit lens, direct logit attribution,
//! activation-patching sweeps against naive patched forwards, causal tracing of factual recall
//! (Meng et al. 2022) reproduced on gemma-3-270m, and bad input.
//!
//! (The activations inside attention and the MLP are checked against PyTorch `transformers` in
//! `tests/real/reference.rs`.) Run with `--nocapture` to see the measured numbers.

use crate::common;

use crate::common::{max_abs, max_abs_diff};
use candle_core::{IndexOp, Tensor};
use puppetlens::lens::{self, one_token, LensOptions};
use puppetlens::patch::sweep::{patch_sweep, SweepOptions, SweepPart};
use puppetlens::{
    hook_fn, Ablate, Batch, Error, HookPoint, Hooks, Knockout, Model, Patch, Positions, Tokenizer,
    Zero,
};

fn models() -> [(&'static str, &'static (Model, Tokenizer)); 2] {
    [
        (common::SMOLLM, common::smollm()),
        (common::GEMMA, common::gemma()),
    ]
}

fn logits(model: &Model, batch: &Batch, hooks: &mut Hooks) -> Tensor {
    model.forward(batch, hooks).unwrap()
}

/// Relative max abs difference of two logit tensors.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    max_abs_diff(a, b) / max_abs(b).max(1e-6)
}

/// Head-level and neuron-level interventions equal the residual-stream interventions they add up
/// to. Measured relative max abs logit differences (f32, SmolLM2 block 15 / Gemma 3 block 9):
/// zero-ablating all heads vs zeroing attn_out 0 / 0 (the same arithmetic: the output projection
/// and any post-norm map zero to zero); zeroing all neurons vs zeroing mlp_out 0 / 0; patching all
/// heads' z vs patching attn_out 0 / 0; replacing hook_result by a copy (the output is then the
/// heads' sum) 1.4e-6 / 2.9e-6; a knocked-out query's self-attention 1 exactly.
const EQUIV_TOL: f32 = 1e-5;

#[test]
fn head_and_neuron_interventions_equal_their_residual_counterparts() {
    for (name, (model, tok)) in models() {
        let cfg = model.config();
        let l = cfg.n_layers / 2;
        let a = tok.encode("The capital of France is").unwrap();
        let b = tok.encode("The capital of Italy is").unwrap();
        assert_eq!(a.len(), b.len(), "{name}: prompts of one length");
        let batch = Batch::new(&[a.clone(), tok.encode("Hi").unwrap()]).unwrap(); // left-padded
        let plain = logits(model, &batch, &mut Hooks::new());

        let heads = Ablate::heads(0..cfg.n_heads);
        let by_heads = logits(model, &batch, Hooks::new().add(HookPoint::AttnZ(l), heads));
        let by_out = logits(
            model,
            &batch,
            Hooks::new().add(HookPoint::AttnOut(l), Zero::default()),
        );
        let d_zero = rel(&by_heads, &by_out);
        assert!(
            rel(&by_out, &plain) > 1e-3,
            "{name}: zeroing attn_out changed nothing"
        );

        let neurons = Ablate::neurons(0..cfg.d_mlp);
        let by_neurons = logits(
            model,
            &batch,
            Hooks::new().add(HookPoint::MlpPost(l), neurons),
        );
        let by_mlp = logits(
            model,
            &batch,
            Hooks::new().add(HookPoint::MlpOut(l), Zero::default()),
        );
        let d_neurons = rel(&by_neurons, &by_mlp);

        // Patching every head's z from another run equals patching attn_out from it.
        let (ba, bb) = (Batch::single(&a).unwrap(), Batch::single(&b).unwrap());
        let src = model
            .cache(&bb, |p| {
                p == HookPoint::AttnZ(l) || p == HookPoint::AttnOut(l)
            })
            .unwrap();
        let z = src.require(HookPoint::AttnZ(l)).unwrap().clone();
        let out = src.require(HookPoint::AttnOut(l)).unwrap().clone();
        let by_z = logits(
            model,
            &ba,
            Hooks::new().add(HookPoint::AttnZ(l), Patch::new(z)),
        );
        let by_attn = logits(
            model,
            &ba,
            Hooks::new().add(HookPoint::AttnOut(l), Patch::new(out)),
        );
        let d_patch = rel(&by_z, &by_attn);

        // Replacing hook_result by a copy of itself: the output becomes the heads' sum.
        let copy = hook_fn(|x: &Tensor, _ctx: &puppetlens::HookCtx| Ok(Some((x * 1.0)?)));
        let by_result = logits(
            model,
            &batch,
            Hooks::new().add(HookPoint::AttnResult(l), copy),
        );
        let d_result = rel(&by_result, &plain);

        // Knocking nothing out changes nothing; knocking out every earlier key of the last query
        // leaves it attending to itself alone.
        let none = Knockout::new(Positions::Last, Vec::<usize>::new());
        let by_none = logits(
            model,
            &batch,
            Hooks::new().add(HookPoint::AttnScores(l), none),
        );
        assert_eq!(
            max_abs_diff(&by_none, &plain),
            0.0,
            "{name}: empty knockout"
        );
        let mut pattern = None;
        {
            let cut = Knockout::new(Positions::Last, 0..a.len());
            let mut hooks = Hooks::new();
            hooks.add(HookPoint::AttnScores(l), cut);
            hooks.add(
                HookPoint::AttnPattern(l),
                hook_fn(|x: &Tensor, _ctx: &puppetlens::HookCtx| {
                    pattern = Some(x.clone());
                    Ok(None)
                }),
            );
            model.forward(&ba, &mut hooks).unwrap();
        }
        let p = pattern.unwrap().i((0, .., a.len() - 1, ..)).unwrap(); // [head, keys]
        let own = p.i((.., a.len() - 1)).unwrap(); // [head]
        let ones = own.ones_like().unwrap();
        let d_knock = max_abs_diff(&own, &ones);
        println!(
            "{name} block {l}: heads vs attn_out {d_zero:e}, neurons vs mlp_out {d_neurons:e}, \
             z patch vs attn_out patch {d_patch:e}, result copy {d_result:e}, knocked-out query's \
             self-attention 1 - {d_knock:e}"
        );
        for (what, d) in [
            ("zero heads", d_zero),
            ("zero neurons", d_neurons),
            ("patch z", d_patch),
            ("result copy", d_result),
            ("knockout", d_knock),
        ] {
            assert!(d <= EQUIV_TOL, "{name}: {what}: {d:e}");
        }
    }
}

/// Mean ablation's reference is the mean over real tokens only.
#[test]
fn mean_ablation_uses_real_tokens_only() {
    let (model, tok) = common::gemma();
    let batch = Batch::new(&[
        tok.encode("The capital of France is").unwrap(),
        tok.encode("Hello").unwrap(),
    ])
    .unwrap();
    let l = 3;
    let cache = model.cache(&batch, |p| p == HookPoint::AttnZ(l)).unwrap();
    let z = cache.require(HookPoint::AttnZ(l)).unwrap(); // [2, s, h, hd]
    let mean = Ablate::mean_of(z, &batch).unwrap(); // [h, hd]
    let s = batch.seq_len();
    let rows: Vec<Tensor> = batch
        .pads()
        .iter()
        .enumerate()
        .map(|(r, &pad)| z.i(r).unwrap().narrow(0, pad, s - pad).unwrap())
        .collect();
    let manual = Tensor::cat(&rows, 0).unwrap().mean(0).unwrap(); // [h, hd]
    let d = max_abs_diff(&mean, &manual);
    assert!(d <= 1e-6, "mean_of vs manual mean {d:e}");
    // Mean-ablating a head writes that mean at every real token, and padding stays as it was.
    let mut seen = None;
    {
        let mut hooks = Hooks::new();
        hooks.add(
            HookPoint::AttnZ(l),
            Ablate::heads([1]).with_mean(mean.clone()),
        );
        hooks.add(
            HookPoint::AttnZ(l),
            hook_fn(|x: &Tensor, _ctx: &puppetlens::HookCtx| {
                seen = Some(x.clone());
                Ok(None)
            }),
        );
        model.forward(&batch, &mut hooks).unwrap();
    }
    let seen = seen.unwrap();
    let pad = batch.pads()[1];
    let written = seen.i((1, pad.., 1)).unwrap(); // [real, hd]
    let want = mean
        .i(1)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .broadcast_as(written.shape())
        .unwrap();
    assert!(max_abs_diff(&written, &want.contiguous().unwrap()) <= 1e-6);
    let padding_before = z.i((1, ..pad)).unwrap();
    let padding_after = seen.i((1, ..pad)).unwrap();
    assert_eq!(
        max_abs_diff(&padding_before, &padding_after),
        0.0,
        "padding touched"
    );
}

/// The lens's last row is the model's own output; DLA's parts add up. Measured: KL of the last
/// row 0 (it is the same computation); DLA residual <= 1.5e-6 and head residual <= 1e-6 on logit
/// differences of 5-7 (both models); the parts' total equals the model's logit difference within
/// 1e-5 (neither model soft-caps its logits).
#[test]
fn logit_lens_and_direct_logit_attribution_add_up() {
    for (name, (model, tok)) in models() {
        let ids = tok
            .encode("The Eiffel Tower is located in the city of")
            .unwrap();
        let paris = one_token(tok, " Paris", "target").unwrap();
        let rome = one_token(tok, " Rome", "other").unwrap();
        let lens = lens::logit_lens(
            model,
            &ids,
            &LensOptions {
                target: Some(paris),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(lens.rows.len(), model.config().n_layers + 1);
        let out = model
            .forward(&Batch::single(&ids).unwrap(), &mut Hooks::new())
            .unwrap()
            .i((0, ids.len() - 1))
            .unwrap(); // [vocab]
        let p = candle_nn::ops::softmax(&out, 0).unwrap();
        let p_paris = p.i(paris as usize).unwrap().to_scalar::<f32>().unwrap();
        let argmax = out.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        let last = lens.cells.last().unwrap().last().unwrap();
        assert!(
            last.kl_to_final <= 1e-5,
            "{name}: last row KL {}",
            last.kl_to_final
        );
        assert_eq!(last.top[0].0, argmax, "{name}: last row's top token");
        assert!((last.target_prob.unwrap() - p_paris).abs() <= 1e-5);
        let ranks: Vec<usize> = lens
            .cells
            .iter()
            .map(|r| r.last().unwrap().target_rank.unwrap())
            .collect();
        println!(
            "{name}: rank of \" Paris\" at the last position by layer {ranks:?}; P {p_paris:.3}"
        );
        // The target is found late, not at the embedding.
        assert!(
            ranks[0] > 100 && *ranks.last().unwrap() == 0,
            "{name}: {ranks:?}"
        );

        let dla = lens::direct_logit_attribution(model, &ids, paris, rome).unwrap();
        println!(
            "{name}: DLA total {:.4} (model {:.4}), residual {:.1e}, head residual {:.1e}",
            dla.total,
            dla.logit_diff,
            dla.residual(),
            dla.head_residual()
        );
        assert!(dla.residual() <= 1e-4, "{name}: parts do not add up");
        assert!(dla.head_residual() <= 1e-4, "{name}: heads do not add up");
        assert!(
            (dla.total - dla.logit_diff).abs() <= 1e-3,
            "{name}: total vs model"
        );
    }
}

/// Sweep cells equal naive patched forwards (hooks from the embeddings on). Measured max abs
/// difference of the normalised metric over the 16 checked cells: 1.6e-6 (Gemma 3).
const SWEEP_TOL: f32 = 1e-4;

#[test]
fn patch_sweep_cells_equal_naive_patched_forwards() {
    let (model, tok) = common::gemma();
    let clean = tok.encode("The capital of France is").unwrap();
    let corrupted = tok.encode("The capital of Italy is").unwrap();
    let (a, o) = (
        one_token(tok, " Paris", "a").unwrap(),
        one_token(tok, " Rome", "o").unwrap(),
    );
    let layers = vec![3, 12];
    let sweep = patch_sweep(
        model,
        &clean,
        &corrupted,
        a,
        o,
        &SweepOptions {
            layers: Some(layers.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let (bc, bx) = (
        Batch::single(&clean).unwrap(),
        Batch::single(&corrupted).unwrap(),
    );
    let cache = model.cache(&bc, |_| true).unwrap();
    let metric = |hooks: &mut Hooks| -> f32 {
        let l = model
            .forward(&bx, hooks)
            .unwrap()
            .i((0, clean.len() - 1))
            .unwrap();
        let v: Vec<f32> = l.to_vec1().unwrap();
        let d = v[a as usize] - v[o as usize];
        (d - sweep.corrupted_diff) / (sweep.clean_diff - sweep.corrupted_diff)
    };
    let mut worst = 0f32;
    let s = clean.len();
    for (row, &l) in layers.iter().enumerate() {
        for pos in [s - 2, s - 1] {
            for (map, point) in [
                (&sweep.resid_pre, HookPoint::ResidPre(l)),
                (&sweep.attn_out, HookPoint::AttnOut(l)),
                (&sweep.mlp_out, HookPoint::MlpOut(l)),
            ] {
                let src = cache.require(point).unwrap().clone();
                let naive =
                    metric(Hooks::new().add(point, Patch::new(src).at(Positions::At(vec![pos]))));
                worst = worst.max((naive - map[row][pos]).abs());
            }
        }
        for h in [0, 2] {
            let zc = cache.require(HookPoint::AttnZ(l)).unwrap().clone();
            let only = hook_fn(move |x: &Tensor, _ctx: &puppetlens::HookCtx| {
                let heads = x.dim(2)?;
                let pick: Vec<f32> = (0..heads).map(|i| if i == h { 1.0 } else { 0.0 }).collect();
                let pick = Tensor::from_vec(pick, (1, 1, heads, 1), x.device())?;
                Ok(Some(
                    (x.broadcast_mul(&(1.0 - &pick)?)? + zc.broadcast_mul(&pick)?)?,
                ))
            });
            let naive = metric(Hooks::new().add(HookPoint::AttnZ(l), only));
            worst = worst.max((naive - sweep.heads[row][h]).abs());
        }
    }
    println!("sweep vs naive patched forwards: max abs diff {worst:e}");
    assert!(worst <= SWEEP_TOL, "{worst:e}");
}

/// Factual-recall prompt pairs (subject swapped, same token length on gemma-3-270m, the model
/// ranking each clean answer above the corrupted prompt's).
const TRACING_PAIRS: [(&str, &str, &str, &str); 15] = [
    (
        "The capital of France is",
        "The capital of Italy is",
        " Paris",
        " Rome",
    ),
    (
        "The capital of Germany is",
        "The capital of Spain is",
        " Berlin",
        " Madrid",
    ),
    (
        "The capital of Japan is",
        "The capital of Russia is",
        " Tokyo",
        " Moscow",
    ),
    (
        "The capital of Egypt is",
        "The capital of China is",
        " Cairo",
        " Beijing",
    ),
    (
        "The Eiffel Tower is located in the city of",
        "The Colosseum is located in the city of",
        " Paris",
        " Rome",
    ),
    (
        "The Space Needle is located in the city of",
        "The Eiffel Tower is located in the city of",
        " Seattle",
        " Paris",
    ),
    (
        "Michael Jordan played the sport of",
        "Lionel Messi played the sport of",
        " basketball",
        " football",
    ),
    (
        "The Great Wall is located in the country of",
        "The Taj Mahal is located in the country of",
        " China",
        " India",
    ),
    (
        "Mount Fuji is located in the country of",
        "The Kremlin is located in the country of",
        " Japan",
        " Russia",
    ),
    (
        "The Amazon river flows through the country of",
        "The Nile river flows through the country of",
        " Brazil",
        " Egypt",
    ),
    (
        "The Prime Minister of Canada lives in the city of",
        "The Prime Minister of India lives in the city of",
        " Ottawa",
        " New",
    ),
    (
        "Toyota is a car company from the country of",
        "BMW is a car company from the country of",
        " Japan",
        " Germany",
    ),
    (
        "Paris is the capital of",
        "Rome is the capital of",
        " France",
        " Italy",
    ),
    (
        "Berlin is the capital of",
        "Madrid is the capital of",
        " Germany",
        " Spain",
    ),
    (
        "Tokyo is the capital of",
        "Moscow is the capital of",
        " Japan",
        " Russia",
    ),
];

/// Causal tracing (Meng et al. 2022) with the subject swapped instead of noised: restoring the
/// clean `resid_pre` at the last subject token works in early-to-middle layers, at the last token
/// in late layers, and not elsewhere. Thresholds sit below the measured means (see the note in
/// `TRACE_*`).
#[test]
fn causal_tracing_finds_the_last_subject_token_then_the_last_token() {
    let (model, tok) = common::gemma();
    let n = model.config().n_layers; // 18
    let layers: Vec<usize> = (0..n).step_by(3).chain([n - 1]).collect(); // 0, 3, .., 15, 17
    let early: Vec<usize> = layers.iter().copied().filter(|&l| l < n / 2).collect();
    let late: Vec<usize> = layers.iter().copied().filter(|&l| l >= 3 * n / 4).collect();
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let (mut subj_early, mut last_late, mut last_early, mut subj_late, mut elsewhere) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, x, a, o) in TRACING_PAIRS {
        let (ci, xi) = (tok.encode(c).unwrap(), tok.encode(x).unwrap());
        assert_eq!(ci.len(), xi.len(), "{c:?} / {x:?}: lengths");
        let (a, o) = (
            one_token(tok, a, "a").unwrap(),
            one_token(tok, o, "o").unwrap(),
        );
        let opts = SweepOptions {
            parts: vec![SweepPart::ResidPre],
            layers: Some(layers.clone()),
            progress: false,
        };
        let sw = patch_sweep(model, &ci, &xi, a, o, &opts).unwrap();
        assert!(
            sw.clean_diff > 0.0 && sw.corrupted_diff < 0.0,
            "{c:?}: the model does not know it"
        );
        let s = ci.len();
        let differ: Vec<usize> = (0..s).filter(|&i| ci[i] != xi[i]).collect();
        let subj = *differ.last().unwrap();
        let at = |ls: &[usize], p: usize| -> f32 {
            mean(
                &ls.iter()
                    .map(|&l| sw.resid_at(l, p).unwrap())
                    .collect::<Vec<_>>(),
            )
        };
        subj_early.push(at(&early, subj));
        subj_late.push(at(&late, subj));
        last_early.push(at(&early, s - 1));
        last_late.push(at(&late, s - 1));
        let others: Vec<f32> = layers
            .iter()
            .flat_map(|&l| {
                (0..s)
                    .filter(|p| *p != s - 1 && !differ.contains(p))
                    .map(move |p| (l, p))
            })
            .map(|(l, p)| sw.resid_at(l, p).unwrap().abs())
            .collect();
        elsewhere.push(mean(&others));
    }
    let (se, ll, le, sl, el) = (
        mean(&subj_early),
        mean(&last_late),
        mean(&last_early),
        mean(&subj_late),
        mean(&elsewhere),
    );
    let hits = subj_early
        .iter()
        .zip(&last_late)
        .filter(|(s, l)| **s > TRACE_PAIR && **l > TRACE_PAIR)
        .count();
    println!(
        "causal tracing on {} pairs, layers {layers:?}: last subject token early {se:.3}, late \
         {sl:.3}; last token early {le:.3}, late {ll:.3}; other positions |.| {el:.3}; pairs with \
         both > {TRACE_PAIR}: {hits}\n  subject early per pair {subj_early:.2?}\n  last late per \
         pair {last_late:.2?}",
        TRACING_PAIRS.len()
    );
    assert!(
        se >= TRACE_HIGH && ll >= TRACE_HIGH,
        "subject early {se}, last late {ll}"
    );
    assert!(
        le <= TRACE_LOW && sl <= TRACE_LOW && el <= TRACE_LOW,
        "{le} {sl} {el}"
    );
    assert!(hits >= TRACE_HITS, "{hits} pairs");
}

/// Measured on the 15 pairs (layers 0, 3, .., 15, 17; gemma-3-270m, f32): last subject token in
/// early layers (< 9) 0.873 and in late layers (>= 13) 0.022; last token early -0.001 and late
/// 0.929; other positions' mean |value| 0.005; pairs with both the subject-early and last-late
/// means above 0.3: 14 of 15 (the exception: "The Space Needle", 0.29, whose last subject token
/// "Needle" carries less of "Space"). The thresholds sit well below the high means and above the
/// low ones.
const TRACE_HIGH: f32 = 0.6;
const TRACE_LOW: f32 = 0.1;
const TRACE_PAIR: f32 = 0.3;
const TRACE_HITS: usize = 12;

#[test]
fn bad_input_inside_the_blocks_gives_typed_errors() {
    let (model, tok) = common::smollm();
    let batch = Batch::single(&tok.encode("Hello there").unwrap()).unwrap();
    // A head index out of range.
    let e = model
        .forward(
            &batch,
            Hooks::new().add(HookPoint::AttnZ(2), Ablate::heads([99])),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::IndexOutOfRange {
                index: 99,
                len: 9,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("blocks.2.attn.hook_z"), "{e}");
    // A pattern hook returning the wrong shape.
    let wrong = hook_fn(|x: &Tensor, _ctx: &puppetlens::HookCtx| Ok(Some(x.narrow(1, 0, 1)?)));
    let e = model
        .forward(&batch, Hooks::new().add(HookPoint::AttnPattern(4), wrong))
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(e.to_string().contains("blocks.4.attn.hook_pattern"), "{e}");
    // Knockout anywhere but the scores.
    let e = model
        .forward(
            &batch,
            Hooks::new().add(
                HookPoint::AttnPattern(4),
                Knockout::new(Positions::Last, [0]),
            ),
        )
        .unwrap_err();
    assert!(e.to_string().contains("hook_attn_scores"), "{e}");
    // A mean of the wrong shape.
    let m = Tensor::zeros(7, model.dtype(), model.device()).unwrap();
    let e = model
        .forward(
            &batch,
            Hooks::new().add(HookPoint::AttnZ(1), Ablate::heads([0]).with_mean(m)),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Clean and corrupted prompts of different lengths; a target that is not one token.
    let (a, b) = (
        tok.encode("The capital of France is").unwrap(),
        tok.encode("The capital of the United Kingdom is").unwrap(),
    );
    let e = patch_sweep(model, &a, &b, 1, 2, &SweepOptions::default()).unwrap_err();
    assert!(e.to_string().contains("equal length"), "{e}");
    let e = one_token(tok, " Parisienne-sur-mer", "target").unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("not one"),
        "{e}"
    );
    // Same prompt twice: nothing to restore.
    let e = patch_sweep(model, &a, &a, 1, 2, &SweepOptions::default()).unwrap_err();
    assert!(e.to_string().contains("nothing to restore"), "{e}");
    // A layer out of range.
    let e = patch_sweep(
        model,
        &a,
        &a,
        1,
        2,
        &SweepOptions {
            layers: Some(vec![30]),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::LayerOutOfRange { layer: 30, .. }), "{e}");
}
