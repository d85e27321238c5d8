#!/usr/bin/env python3
"""Independent check of puppetlens's SAELens-layout SAEs, with safetensors + NumPy only.

Run by `cargo test --release --test real dict::sae_saelens_layout_matches_numpy`, which writes
`case_*/` directories under its temporary folder and then calls

    python3 scripts/sae_crosscheck.py DIR

Each `DIR/case_*/` holds
  sae/cfg.json, sae/sae_weights.safetensors  an SAE in the SAELens layout (written by puppetlens
                                             or by the test itself, f32 or f16 weights)
  acts.safetensors   `x` [n, d_in] f32: the activations to encode
  ours.safetensors   puppetlens's results: `f` [n, d_sae] (encode of the loaded SAE), `x_hat`
                     [n, d_in] (its decode), and optionally `x_hat_trained` (the reconstruction
                     by the dictionary before it was exported)

For every case this script encodes `x` with the architecture's own rule, in float64:
    pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
    standard:  f = relu(pre)
    jumprelu:  f = relu(pre) * (pre > threshold)
    topk:      the k largest pre per row, relu'd, the rest 0
decodes x_hat = f @ W_dec + b_dec, and prints one JSON line per case with the largest absolute
differences to puppetlens's arrays. It exits 1 if any difference exceeds 1e-4 (the values are
of order 1; f32 arithmetic differs from float64 by about 1e-6 here).
"""

import json
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file

TOL = 1e-4


def encode(cfg, w, x):
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if cfg.get("normalize_activations", "none") not in (None, "none"):
        raise SystemExit(f"unsupported normalize_activations {cfg['normalize_activations']}")
    b_dec = w["b_dec"] if apply_b_dec else 0.0
    pre = (x - b_dec) @ w["W_enc"] + w["b_enc"]
    arch = cfg["architecture"]
    if arch == "standard":
        return np.maximum(pre, 0.0)
    if arch == "jumprelu":
        return np.maximum(pre, 0.0) * (pre > w["threshold"])
    if arch == "topk":
        k = int(cfg["k"])
        idx = np.argpartition(-pre, k - 1, axis=1)[:, :k]
        f = np.zeros_like(pre)
        rows = np.arange(pre.shape[0])[:, None]
        f[rows, idx] = np.maximum(pre[rows, idx], 0.0)
        return f
    raise SystemExit(f"unknown architecture {arch}")


def main():
    root = pathlib.Path(sys.argv[1])
    worst = 0.0
    cases = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("case_"))
    if not cases:
        raise SystemExit(f"no case_* directories in {root}")
    for case in cases:
        cfg = json.loads((case / "sae" / "cfg.json").read_text())
        w = {k: v.astype(np.float64) for k, v in load_file(case / "sae" / "sae_weights.safetensors").items()}
        x = load_file(case / "acts.safetensors")["x"].astype(np.float64)
        ours = {k: v.astype(np.float64) for k, v in load_file(case / "ours.safetensors").items()}
        assert w["W_enc"].shape == (cfg["d_in"], cfg["d_sae"]), "W_enc shape"
        assert w["W_dec"].shape == (cfg["d_sae"], cfg["d_in"]), "W_dec shape"
        f = encode(cfg, w, x)
        x_hat = f @ w["W_dec"] + w["b_dec"]
        row = {
            "case": case.name,
            "architecture": cfg["architecture"],
            "n": int(x.shape[0]),
            "active_per_token": float((f > 0).sum(axis=1).mean()),
            "max_abs_f": float(np.abs(f - ours["f"]).max()),
            "max_abs_x_hat": float(np.abs(x_hat - ours["x_hat"]).max()),
        }
        if "x_hat_trained" in ours:
            row["max_abs_x_hat_trained"] = float(np.abs(x_hat - ours["x_hat_trained"]).max())
        worst = max(worst, *(v for k, v in row.items() if k.startswith("max_abs")))
        print(json.dumps(row))
    print(json.dumps({"worst_max_abs": worst, "tol": TOL}))
    sys.exit(0 if worst <= TOL else 1)


if __name__ == "__main__":
    main()
