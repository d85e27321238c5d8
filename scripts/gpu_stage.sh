#!/usr/bin/env bash
# Prepares the GPU check (scripts/gpu_check.sh) on this machine, which has no GPU: builds the peer
# benchmark with `--features cuda`, packs it with the shipped checkpoints into parts small enough
# for the device tool's 64 MiB per call, and prints the calls that move them and run the check.
#
# Why parts: the GPU machine reaches no registry (it cannot fetch the checkpoints) and each call
# carries at most 64 MiB, the tracked tree (~15 MiB) included. The GPU machine keeps /tmp between
# calls while it stays warm (30 s after a call), so the parts are sent by back-to-back calls, each
# appending its part to /tmp/pl-stage there, and the last call assembles them, checks their sha256
# and runs scripts/gpu_check.sh.
#
#   scripts/gpu_stage.sh                          # both checkpoints (9 parts)
#   GPU_MODELS=smollm2-135m-instruct scripts/gpu_stage.sh   # one checkpoint (3 parts)
#   PART_MIB=40 (default) sets the part size.
#
# Output: .gpu/part-NN and .gpu/SHA256SUMS (.gpu/ is ignored by git), and the list of calls.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODELS=${GPU_MODELS:-smollm2-135m-instruct gemma-3-270m}
PART_MIB=${PART_MIB:-40}

# GPU_STAGE_BIN=path stages that binary instead (a CPU build of the bench: a dry run here).
if [ -z "${GPU_STAGE_BIN:-}" ]; then
  scripts/build_cuda.sh --bench
fi
BIN=${GPU_STAGE_BIN:-$(ls -t target/cuda/release/deps/peers-* | grep -v '\.d$' | head -1)}
echo ">> bench binary: $BIN"

STAGE=$REPO/.gpu/stage
rm -rf "$REPO/.gpu"
mkdir -p "$STAGE/cache/models"
cp "$BIN" "$STAGE/peers"
strip "$STAGE/peers"
for m in $MODELS; do
  src=${PUPPETLENS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/puppetlens}/models/$m
  [ -d "$src" ] || cargo run --release --quiet --bin puppetlens -- fetch
  [ -d "$src" ] || { echo "no cached checkpoint $src" >&2; exit 1; }
  cp -r "$src" "$STAGE/cache/models/"
done
# gzip -1: the binary shrinks ~3x, the quantized weights barely (~400 MB -> ~350 MB in all).
(cd "$REPO/.gpu" && tar -I 'gzip -1' -cf stage.tgz stage && sha256sum stage.tgz > SHA256SUMS \
  && split -d -a 2 -b "${PART_MIB}M" stage.tgz part- && rm -rf stage stage.tgz)
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
echo ">> tracked tree $((tracked / 1048576)) MiB + one part of ${PART_MIB} MiB per call (limit 64 MiB)"
parts=(.gpu/part-*)
echo ">> ${#parts[@]} parts; on a lent GPU machine make these device calls back to back:"
for p in "${parts[@]:0:${#parts[@]}-1}"; do
  echo "   run carry=[\"$p\"] command=\"mkdir -p /tmp/pl-stage && cp $p /tmp/pl-stage/\" timeout_s=120"
done
last=${parts[${#parts[@]}-1]}
echo "   run carry=[\"$last\", \".gpu/SHA256SUMS\"] command=\"bash scripts/gpu_check.sh\" timeout_s=540"
