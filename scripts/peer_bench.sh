#!/usr/bin/env bash
# The peer benchmark: puppetlens vs PyTorch + transformers (and TransformerLens when it installs) on
# the same weights, side by side in one run. Installs the Python side into a venv in the
# puppetlens cache (PyPI's Linux torch wheel brings its CUDA libraries; it runs on the CPU here),
# then runs `cargo bench --bench peers`. Not part of CI (it downloads ~4 GB the first time).
#
#   scripts/peer_bench.sh            # full run (~10 min on 2 cores)
#   PUPPETLENS_BENCH_QUICK=1 scripts/peer_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PUPPETLENS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/puppetlens}"
venv="$cache/bench-venv"
if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check torch transformers safetensors numpy
fi
# TransformerLens is optional: its row is skipped when it does not install or load.
"$venv/bin/python" -c "import transformer_lens" 2>/dev/null \
    || "$venv/bin/pip" install --quiet --disable-pip-version-check transformer_lens \
    || echo "TransformerLens did not install; its rows are skipped" >&2
PUPPETLENS_PEER_PYTHON="$venv/bin/python" cargo bench --bench peers
