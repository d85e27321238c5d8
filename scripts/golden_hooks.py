#!/usr/bin/env python3
"""Write the golden activations inside attention and the MLP that `tests/reference_hooks.rs` checks
puppetlens's hook points against, computed by PyTorch `transformers` (an independent implementation).

How to run (from the repository root; no network is used):

    target/release/puppetlens export smollm2-135m-instruct /tmp/export-smollm2
    target/release/puppetlens export gemma-3-270m /tmp/export-gemma
    HF_HUB_OFFLINE=1 python3 scripts/golden_hooks.py /tmp/export-smollm2 smollm2-135m-instruct
    HF_HUB_OFFLINE=1 python3 scripts/golden_hooks.py /tmp/export-gemma gemma-3-270m

Needs `torch`, `transformers` (5.x), `safetensors`, `numpy` (the peer benchmark's venv has them:
`~/.cache/puppetlens/bench-venv/bin/python`).

The export is puppetlens's own Hugging Face safetensors directory of the dequantized GGUF weights
(`puppetlens export`), so both sides compute with the same f32 weights. The model runs in f32 with
eager attention (`output_attentions=True`); forward hooks record, at blocks 0, the middle block and
the last block:

* `attn.hook_q`, `hook_k`, `hook_v`: the outputs of `q_proj`, `k_proj`, `v_proj`, reshaped to
  `[pos, heads, d_head]` (before Gemma 3's q/k norms and the rotary embedding, where puppetlens and
  TransformerLens put them);
* `attn.hook_pattern`: the attention probabilities, `[head, pos, pos]`;
* `attn.hook_z`: the input of `o_proj`, `[pos, head, d_head]`;
* `mlp.hook_pre`, `mlp.hook_pre_linear`: the outputs of `gate_proj` and `up_proj`, `[pos, d_mlp]`;
* `mlp.hook_post`: the input of `down_proj`, `[pos, d_mlp]`.

(Logits are checked against candle-transformers in `tests/real/reference.rs`.)

Prompts: two cases of `tests/golden/tokens_<model>.json` (their `ids`, special tokens included), run
one at a time (batch 1, no padding; the Rust test runs them as one left-padded batch).

Writes `tests/golden/hooks_<model>.safetensors` (f32; names `p{i}.blocks.{l}.<hook>`) and
`tests/golden/hooks_<model>.json` (the prompts' ids, the layers, versions).
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file

PROMPTS = ["The capital of France is", "def foo(x):\n    return x * 2\n"]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    export_dir, name = sys.argv[1], sys.argv[2]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    golden = os.path.join(root, "tests", "golden")
    with open(os.path.join(golden, f"tokens_{name}.json")) as f:
        cases = {c["text"]: c["ids"] for c in json.load(f)["cases"]}
    prompts = [cases[p] for p in PROMPTS]

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    n_heads = cfg.num_attention_heads
    n_kv = cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    layers = sorted({0, n_layers // 2, n_layers - 1})
    blocks = model.model.layers

    out = {}
    for pi, ids in enumerate(prompts):
        rec = {}
        handles = []

        def keep(key, heads=None, from_input=False):
            def hook(_module, args, output=None):
                t = args[0] if from_input else output
                t = t.detach()[0]  # [pos, width]
                if heads is not None:
                    t = t.reshape(t.shape[0], heads, head_dim)
                rec[key] = t.float().numpy().copy()

            return hook

        for l in layers:
            attn, mlp = blocks[l].self_attn, blocks[l].mlp
            pre = f"p{pi}.blocks.{l}."
            handles += [
                attn.q_proj.register_forward_hook(keep(pre + "attn.hook_q", n_heads)),
                attn.k_proj.register_forward_hook(keep(pre + "attn.hook_k", n_kv)),
                attn.v_proj.register_forward_hook(keep(pre + "attn.hook_v", n_kv)),
                attn.o_proj.register_forward_pre_hook(
                    keep(pre + "attn.hook_z", n_heads, from_input=True)
                ),
                mlp.gate_proj.register_forward_hook(keep(pre + "mlp.hook_pre")),
                mlp.up_proj.register_forward_hook(keep(pre + "mlp.hook_pre_linear")),
                mlp.down_proj.register_forward_pre_hook(
                    keep(pre + "mlp.hook_post", from_input=True)
                ),
            ]
        with torch.no_grad():
            res = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
        for h in handles:
            h.remove()
        for l in layers:
            rec[f"p{pi}.blocks.{l}.attn.hook_pattern"] = (
                res.attentions[l][0].float().numpy().copy()
            )
        out.update(rec)

    path = os.path.join(golden, f"hooks_{name}.safetensors")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}, path + ".tmp")
    os.replace(path + ".tmp", path)
    meta = {
        "model": name,
        "prompts": PROMPTS,
        "ids": prompts,
        "layers": layers,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
    }
    with open(os.path.join(golden, f"hooks_{name}.json") + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(golden, f"hooks_{name}.json") + ".tmp",
               os.path.join(golden, f"hooks_{name}.json"))
    size = os.path.getsize(path)
    print(f"{name}: {len(out)} tensors at layers {layers}, {size / 1e6:.2f} MB -> {path}")


if __name__ == "__main__":
    main()
