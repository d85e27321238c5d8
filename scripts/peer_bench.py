#!/usr/bin/env python3
"""The PyTorch side of the peer benchmark (`cargo bench --bench peers` runs it; see BENCHMARKS.md).

PyTorch + Hugging Face `transformers`, loaded from puppetlens's safetensors export of the same
weights (f32), doing what nnsight / repeng / steering-vectors do underneath: forward hooks on the
decoder layers. The Rust harness writes the work (token ids, sizes) as JSON, runs this script once
per task, and sets the numbers side by side with its own rows measured in the same run.

Tasks (``--task``):
  prefill   one prompt, best of N: no hooks, and every decoder layer's output (resid_post) cached
  extract   all prompts, batches of similar length, last token of every layer, to safetensors shards
            with TransformerLens keys; wall time and the process's peak RSS before and after
  generate  greedy generation with an additive hook on one layer's output (KV cache)
  tl        the prefill rows with TransformerLens (its TransformerBridge), when it is installed
  sweep     a steering dose-response: for each layer and multiplier, a forward hook adding
            multiplier x vector to that layer's output (real tokens), one forward per cell and
            batch of A/B items, P(matching) from the two answers' last-position logits
  patch     cross-model activation patching: the tuned model's inputs of every decoder layer
            (resid_pre) cached, then for each layer the base run with a forward pre-hook that
            replaces its input by the tuned model's (every position; then each of the last N
            positions alone)

Usage: peer_bench.py --task T --model-dir DIR --work work.json --out result.json [--threads 2]
       [--device cuda]   (a GPU: timings synchronise the device; peak memory is the GPU's)
"""

import argparse
import json
import os
import resource
import sys
import time

DEVICE = "cpu"  # set from --device


def sync():
    if DEVICE != "cpu":
        import torch
        torch.cuda.synchronize()


def peak_mib():
    if DEVICE != "cpu":
        import torch
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(reps, f):
    f()  # warm-up
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def load(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(DEVICE)
    model.eval()
    return model


def tensor(x, dtype=None):
    import torch
    return torch.tensor(x, dtype=dtype or torch.long, device=DEVICE)


def layer_output(out):
    # Decoder layers return a tensor or a tuple whose first element is the hidden state.
    return out[0] if isinstance(out, (tuple, list)) else out


def cache_hooks(model, store):
    handles = []
    for i, layer in enumerate(model.model.layers):
        def hook(_m, _inp, out, i=i):
            store[f"blocks.{i}.hook_resid_post"] = layer_output(out)
        handles.append(layer.register_forward_hook(hook))
    return handles


def task_prefill(model_dir, work):
    import torch

    model = load(model_dir)
    ids = tensor([work["prompt"]])
    reps = work["reps"]
    res = {}
    with torch.inference_mode():
        res["no_hooks_s"] = best_of(reps, lambda: model(input_ids=ids, logits_to_keep=1))
        store = {}
        handles = cache_hooks(model, store)
        res["cached_s"] = best_of(reps, lambda: model(input_ids=ids, logits_to_keep=1))
        batch = ids.repeat(work["batch"], 1)  # [batch, seq]
        res["batch_cached_s"] = best_of(reps, lambda: model(input_ids=batch, logits_to_keep=1))
        for h in handles:
            h.remove()
        assert len(store) == len(model.model.layers)
        res["batch_no_hooks_s"] = best_of(reps, lambda: model(input_ids=batch, logits_to_keep=1))
    return res


def task_extract(model_dir, work, out_dir):
    import torch
    from safetensors.torch import save_file

    model = load(model_dir)
    after_load = peak_mib()
    prompts = work["extract_prompts"]
    bs, shard_size = work["batch_size"], work["shard_size"]
    pad = work["pad_id"]
    n_layers = len(model.model.layers)
    # Batches of similar length, as puppetlens forms them (less padding); results kept in order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    rows = [None] * len(prompts)
    store = {}
    handles = cache_hooks(model, store)
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    shard, written = {}, 0
    with torch.inference_mode():
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                p = prompts[i]
                ids[r, width - len(p):] = torch.tensor(p)
                mask[r, width - len(p):] = 1
            ids, mask = ids.to(DEVICE), mask.to(DEVICE)
            # Positions count real tokens only (left padding), as puppetlens's batches do.
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
            # Left padding: the last position is every row's last token. [batch, n_layers, d_model]
            last = torch.stack([store[f"blocks.{l}.hook_resid_post"][:, -1] for l in range(n_layers)], 1)
            for r, i in enumerate(idx):
                rows[i] = last[r].cpu()
        # Shards of `shard_size` prompts in input order, TransformerLens keys.
        for s in range(0, len(prompts), shard_size):
            block = torch.stack(rows[s:s + shard_size])  # [n, n_layers, d_model]
            shard = {f"blocks.{l}.hook_resid_post": block[:, l].contiguous() for l in range(n_layers)}
            save_file(shard, os.path.join(out_dir, f"shard-{written:05}.safetensors"))
            written += 1
    secs = time.perf_counter() - t
    for h in handles:
        h.remove()
    return {"seconds": secs, "peak_after_load_mib": after_load, "peak_after_mib": peak_mib(), "shards": written}


def task_generate(model_dir, work):
    import torch

    model = load(model_dir)
    ids = tensor([work["gen_prompt"]])
    vec = tensor(work["steer_vector"], torch.float32)
    layer = model.model.layers[work["steer_layer"]]

    def add(_m, _inp, out):
        if isinstance(out, (tuple, list)):
            return (out[0] + vec,) + tuple(out[1:])
        return out + vec

    h = layer.register_forward_hook(add)
    n = work["gen_new_tokens"]

    def run():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + n, out.shape
        return out

    with torch.inference_mode():
        secs = best_of(work["gen_reps"], run)
        tokens = run()[0, ids.shape[1]:].tolist()
    h.remove()
    return {"seconds": secs, "new_tokens": n, "tokens": tokens}


def task_tl(model_dir, work):
    """TransformerLens on the same weights: its TransformerBridge wrapped around the HF model.

    TransformerLens 4.0 removed HookedTransformer (and HookedTransformerConfig, from_pretrained and
    the per-architecture weight converters); its successor, TransformerBridge, wraps a loaded HF
    model and runs that model's own weights through TransformerLens components and hook points
    (`blocks.{l}.hook_resid_post` and the rest). `TransformerBridge.boot_transformers` would also
    accept the pre-loaded model, but it then insists on loading a tokenizer from `model_dir`, and
    these exports ship none; `build_bridge_from_module` is the same assembly without the tokenizer
    (token ids go in directly here). Without `enable_compatibility_mode()` no weights are folded or
    centred, so the logits must equal the HF model's; the difference is measured and reported.
    """
    import torch
    try:
        from importlib.metadata import version
        from transformer_lens.model_bridge.sources import build_bridge_from_module
        from transformer_lens.utilities.attn_implementation import force_eager_attention
    except Exception as e:  # not installed, too old (3.x has no bridge builder), or does not import
        return {"skipped": f"TransformerLens's TransformerBridge unavailable: {e}"}

    hf = load(model_dir)
    ids = tensor([work["prompt"]])
    reps = work["reps"]
    # The HF model's own logits first: the bridge swaps its components into `hf` in place.
    with torch.inference_mode():
        hf_logits = hf(input_ids=ids).logits
    # What boot_transformers does to a pre-loaded model: eager attention, so that the attention
    # hooks (hook_attn_scores, hook_pattern) can fire. The bridge's attention computes the
    # scores itself either way; this keeps the mask construction on the same path as boot's.
    force_eager_attention(hf)
    arch = type(hf).__name__  # LlamaForCausalLM, Gemma3ForCausalLM: the adapter's key
    try:
        model = build_bridge_from_module(hf, arch, hf_config=hf.config, dtype=torch.float32,
                                         device=DEVICE, model_name=model_dir)
    except Exception as e:  # no adapter for this architecture in this version, or it fails
        return {"skipped": f"TransformerBridge could not wrap {arch}: {e}"}
    model.eval()

    res = {
        "tl_version": version("transformer_lens"),
        "tl_route": f"TransformerBridge around HF {arch} (build_bridge_from_module, "
                    "eager attention, no weight processing)",
    }
    names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    with torch.inference_mode():
        logits = model(ids)  # [1, seq, vocab], like HF's without logits_to_keep
        res["max_abs_logit_diff_vs_hf"] = (logits - hf_logits).abs().max().item()
        _, cache = model.run_with_cache(ids, names_filter=names)
        # The cache also holds each one under its bridge-native name, blocks.{l}.hook_out, of
        # which hook_resid_post is an alias.
        assert all(n in cache for n in names), list(cache.keys())
        del logits, hf_logits, cache
        # Last-position logits only, as in the other prompt rows (the bridge passes
        # logits_to_keep through to the HF model).
        last = model(ids, logits_to_keep=1)
        assert last.shape[1] == 1, last.shape
        res["no_hooks_s"] = best_of(reps, lambda: model(ids, logits_to_keep=1))
        res["cached_s"] = best_of(
            reps, lambda: model.run_with_cache(ids, names_filter=names, logits_to_keep=1))
    return res


def ab_batches(work):
    """The A/B items in batches of similar length (as puppetlens forms them), left-padded."""
    import torch

    items, bs, pad = work["items"], work["batch_size"], work["pad_id"]
    order = sorted(range(len(items)), key=lambda i: len(items[i]["ids"]))
    out = []
    for s in range(0, len(order), bs):
        idx = order[s:s + bs]
        width = max(len(items[i]["ids"]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            p = items[i]["ids"]
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        ans = torch.tensor([[items[i]["matching"], items[i]["not_matching"]] for i in idx])
        out.append((idx, ids.to(DEVICE), mask.to(DEVICE), pos.to(DEVICE), ans.to(DEVICE)))
    return out


def p_matching(model, ids, mask, pos, ans):
    """P(matching) of each row from the two answers' last-position logits."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
    two = torch.gather(logits, 1, ans)  # [b, 2]
    return torch.sigmoid(two[:, 0] - two[:, 1]).tolist()


def task_sweep(model_dir, work):
    import torch

    model = load(model_dir)
    batches = ab_batches(work)
    layers, mults = work["layers"], work["multipliers"]
    vec = tensor(work["vector"], torch.float32)
    n = len(work["items"])
    p = [[[None] * n for _ in mults] for _ in layers]
    state = {}

    def add(_m, _inp, out):
        h = layer_output(out)
        h = h + state["mult"] * vec * state["mask"].unsqueeze(-1).to(h.dtype)
        return (h,) + tuple(out[1:]) if isinstance(out, (tuple, list)) else h

    with torch.inference_mode():
        p_matching(model, *batches[0][1:])  # warm-up
        sync()
        t = time.perf_counter()
        for li, l in enumerate(layers):
            h = model.model.layers[l].register_forward_hook(add)
            for mi, m in enumerate(mults):
                state["mult"] = m
                for idx, ids, mask, pos, ans in batches:
                    state["mask"] = mask
                    for i, v in zip(idx, p_matching(model, ids, mask, pos, ans)):
                        p[li][mi][i] = v
            h.remove()
        sync()
        secs = time.perf_counter() - t
    return {"seconds": secs, "p": [v for per_l in p for per_m in per_l for v in per_m]}


def pre_hook(fn):
    """A forward pre-hook on a decoder layer that maps its input hidden states with `fn`."""
    def hook(_m, args, kwargs):
        if args:
            return (fn(args[0]),) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = fn(kwargs["hidden_states"])
        return args, kwargs
    return hook


def task_patch(model_dir, work):
    import torch

    base, tuned = load(model_dir), load(work["tuned_dir"])
    batches = ab_batches(work)
    layers, n_pos = work["layers"], work["positions"]
    n = len(work["items"])
    p_base, p_tuned = [None] * n, [None] * n
    p_full = [[None] * n for _ in layers]
    p_pos = [[[None] * n for _ in range(n_pos)] for _ in layers]
    res = {}
    with torch.inference_mode():
        p_matching(base, *batches[0][1:])  # warm-up
        p_matching(tuned, *batches[0][1:])
        sync()
        t = time.perf_counter()
        cached = []  # per batch: layer -> the tuned model's input of that layer
        for idx, ids, mask, pos, ans in batches:
            store = {}
            hs = [tuned.model.layers[l].register_forward_pre_hook(
                pre_hook(lambda x, l=l: store.__setitem__(l, x) or x), with_kwargs=True)
                for l in layers]
            for i, v in zip(idx, p_matching(tuned, ids, mask, pos, ans)):
                p_tuned[i] = v
            for h in hs:
                h.remove()
            cached.append(store)
            for i, v in zip(idx, p_matching(base, ids, mask, pos, ans)):
                p_base[i] = v
            for li, l in enumerate(layers):
                h = base.model.layers[l].register_forward_pre_hook(
                    pre_hook(lambda x, l=l: store[l]), with_kwargs=True)
                for i, v in zip(idx, p_matching(base, ids, mask, pos, ans)):
                    p_full[li][i] = v
                h.remove()
        sync()
        res["full_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        for (idx, ids, mask, pos, ans), store in zip(batches, cached):
            for li, l in enumerate(layers):
                for o in range(n_pos):
                    def one(x, l=l, o=o):
                        x = x.clone()
                        c = x.shape[1] - 1 - o
                        x[:, c] = store[l][:, c]
                        return x
                    h = base.model.layers[l].register_forward_pre_hook(pre_hook(one), with_kwargs=True)
                    for i, v in zip(idx, p_matching(base, ids, mask, pos, ans)):
                        p_pos[li][o][i] = v
                    h.remove()
        sync()
        res["positions_seconds"] = time.perf_counter() - t
    res.update({
        "p_base": p_base, "p_tuned": p_tuned,
        "p_full": [v for row in p_full for v in row],
        "p_positions": [v for per_l in p_pos for per_o in per_l for v in per_o],
    })
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=["prefill", "extract", "generate", "tl", "sweep", "patch"])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--store", default=None, help="extract: output directory for the shards")
    ap.add_argument("--device", default="cpu", help="cpu, or a GPU such as cuda or cuda:0")
    a = ap.parse_args()
    global DEVICE
    DEVICE = a.device
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    with open(a.work) as f:
        work = json.load(f)
    if a.task == "prefill":
        res = task_prefill(a.model_dir, work)
    elif a.task == "extract":
        res = task_extract(a.model_dir, work, a.store or a.out + ".store")
    elif a.task == "generate":
        res = task_generate(a.model_dir, work)
    elif a.task == "sweep":
        res = task_sweep(a.model_dir, work)
    elif a.task == "patch":
        res = task_patch(a.model_dir, work)
    else:
        res = task_tl(a.model_dir, work)
    res["torch"] = torch.__version__
    res["transformers"] = transformers.__version__
    res["threads"] = torch.get_num_threads()
    res["device"] = torch.cuda.get_device_name() if DEVICE != "cpu" else "cpu"
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    sys.exit(main())
