#!/usr/bin/env python3
"""The same BatchTopK crosscoder training loop as puppetlens's `dict::train`, written for PyTorch,
for the side-by-side throughput row of `cargo bench --bench dictionary` (benches/dictionary.rs).

Same algorithm and hyperparameters: activations [n, m, d] divided per model by the scalar that makes
their mean squared norm d; encoder over the concatenation, one decoder per model, decoder bias
initialised at the data mean; BatchTopK on relu(pre) * (sum over models of the decoder norms),
k * batch kept per batch; AuxK on dead latents (not active for `dead_after` tokens, aux_k = d / 2,
coefficient 1/32); AdamW (no weight decay) with linear warm-up and a linear decay over the last
20% of steps; after each step every latent rescaled so that its decoder norms sum to 1 (the encoder
column and bias compensating). Batches are drawn by a seeded shuffle, epoch after epoch (torch's
generator, so not the same batches as puppetlens's, nor the same initial weights: the comparison is
of throughput and of the loss reached, not of the weights).

    python3 scripts/crosscoder_bench.py ACTS.safetensors OUT.json N_LATENTS K STEPS BATCH THREADS
"""
import json
import sys
import time

import torch
from safetensors.torch import load_file


def main():
    acts_path, out_path = sys.argv[1], sys.argv[2]
    n_latents, k, steps, batch, threads = (int(v) for v in sys.argv[3:8])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = load_file(acts_path)["acts"].float()  # [n, m, d]
    n, m, d = x.shape
    scale = (x.pow(2).sum(-1).mean(0) / d).sqrt()  # [m]
    xn = (x / scale[None, :, None]).reshape(n, m * d)
    mean = xn.mean(0)
    w = torch.randn(n_latents, m, d)
    w = w / (w.norm(dim=-1, keepdim=True) * m)
    w_dec = w.reshape(n_latents, m * d).clone().requires_grad_(True)
    w_enc = w_dec.detach().t().contiguous().requires_grad_(True)
    b_enc = torch.zeros(n_latents, requires_grad=True)
    b_dec = mean.clone().requires_grad_(True)
    lr = 2e-3
    opt = torch.optim.AdamW([w_enc, w_dec, b_enc, b_dec], lr=lr, weight_decay=0.0)
    aux_k, aux_coeff, dead_after, warmup = max(d // 2, 1), 1.0 / 32, 20_000, 50
    decay_start = round(0.8 * steps)
    since = torch.zeros(n_latents, dtype=torch.long)
    order, cursor = torch.randperm(n), 0
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        if step <= warmup:
            cur = lr * step / warmup
        elif step > decay_start:
            cur = lr * (steps - step + 1) / (steps - decay_start)
        else:
            cur = lr
        for g in opt.param_groups:
            g["lr"] = cur
        if cursor + batch > n:
            order, cursor = torch.randperm(n), 0
        xb = xn[order[cursor:cursor + batch]]
        cursor += batch
        pre = (xb - b_dec) @ w_enc + b_enc
        act = torch.relu(pre)
        code_norm = w_dec.reshape(n_latents, m, d).norm(dim=-1).sum(1)
        score = (act * code_norm).detach().flatten()
        kept = torch.topk(score, k * batch).indices
        mask = torch.zeros_like(score)
        mask[kept] = (score[kept] > 0).float()
        mask = mask.reshape(batch, n_latents)
        f = act * mask
        xhat = f @ w_dec + b_dec
        err = xb - xhat
        mse = err.pow(2).sum() / batch
        fired = mask.sum(0) > 0
        since = torch.where(fired, torch.zeros_like(since), since + batch)
        dead = since >= dead_after
        loss = mse
        if dead.any():
            s = score.reshape(batch, n_latents).masked_fill(~dead, float("-inf"))
            top = torch.topk(s, min(aux_k, int(dead.sum())), dim=1).indices
            aux_mask = torch.zeros(batch, n_latents).scatter_(1, top, 1.0)
            ehat = (act * aux_mask) @ w_dec
            loss = mse + aux_coeff * (err.detach() - ehat).pow(2).sum() / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            c = w_dec.reshape(n_latents, m, d).norm(dim=-1).sum(1).clamp_min(1e-12)
            w_dec.div_(c[:, None])
            w_enc.mul_(c[None, :])
            b_enc.mul_(c)
        losses.append(float(loss))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pre = torch.relu((xn - b_dec) @ w_enc + b_enc)
        score = pre * w_dec.reshape(n_latents, m, d).norm(dim=-1).sum(1)
        keep = torch.topk(score.flatten(), k * n).indices
        mask = torch.zeros(n * n_latents)
        mask[keep] = 1.0
        xhat = (pre * mask.reshape(n, n_latents)) @ w_dec + b_dec
        fvu = float((xn - xhat).pow(2).sum() / (xn - xn.mean(0)).pow(2).sum())
    json.dump(
        {"seconds": seconds, "tokens": steps * batch, "tokens_per_s": steps * batch / seconds,
         "first_loss": losses[0], "final_loss": losses[-1], "fvu_batchtopk": fvu,
         "torch": torch.__version__, "threads": threads},
        open(out_path, "w"),
    )


if __name__ == "__main__":
    main()
