#!/usr/bin/env bash
# The GPU check, run on a lent GPU machine from the repository's root after scripts/gpu_stage.sh's
# parts have reached /tmp/pl-stage (see that script). It assembles and verifies the stage, then runs
# the peer benchmark built with `--features cuda` on the GPU: for each checkpoint it first checks
# the GPU against the CPU on the same weights (last-position logits, every hook point of a padded
# batch, steered greedy tokens; it stops on a disagreement beyond f32 tolerance), then times
# puppetlens and the machine's own PyTorch + transformers on the same GPU and prints one table.
#
# Needs there: an NVIDIA driver of the 580 series (CUDA 13), python3 with torch and transformers
# (their CUDA 13 wheels also bring the cuBLAS, cuRAND, NVRTC and runtime libraries the binary
# loads). Writes gpu_check.log and the table to $OUT when that is set. Takes ~4 minutes.
#
#   bash scripts/gpu_check.sh                      # both checkpoints, full repetitions
#   PUPPETLENS_BENCH_QUICK=1 bash scripts/gpu_check.sh
set -euo pipefail
REPO=$(pwd)
STAGE=${PL_STAGE:-/tmp/pl-stage}
OUT=${OUT:-$STAGE/out}
mkdir -p "$STAGE" "$OUT"
# The last part and the checksums come with this call.
cp .gpu/part-* .gpu/SHA256SUMS "$STAGE"/ 2>/dev/null || true
cd "$STAGE"
if [ ! -x stage/peers ]; then
  cat part-* > stage.tgz
  sha256sum -c SHA256SUMS
  tar xzf stage.tgz && rm -f stage.tgz part-*
fi

PY=${PYTHON:-python3}
export PUPPETLENS_BENCH_DEVICE=${PUPPETLENS_BENCH_DEVICE:-cuda:0}
if [ "$PUPPETLENS_BENCH_DEVICE" != cpu ]; then   # cpu: a dry run of this script without a GPU
  # The CUDA libraries: PyTorch's wheels' copies (nvidia/*/lib), else the toolkit's.
  SITE=$("$PY" -c 'import site; print(" ".join(site.getsitepackages()))')
  LIBS=""
  for so in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
    d=$(find $SITE /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib -name "$so" 2>/dev/null | head -1 | xargs -r dirname)
    [ -n "$d" ] || { echo "gpu_check: $so not found under $SITE or /usr/local/cuda" >&2; exit 1; }
    case ":$LIBS:" in *":$d:"*) ;; *) LIBS="$LIBS:$d" ;; esac
  done
  # The driver's libcuda.so.1, where GPU containers mount it.
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
  export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ldd "$STAGE/stage/peers" | grep "not found" && { echo "gpu_check: libraries missing" >&2; exit 1; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
export PUPPETLENS_CACHE=$STAGE/stage/cache PUPPETLENS_REPO=$REPO PUPPETLENS_PEER_PYTHON=$PY
# The checkpoints staged, and no others (nothing can be fetched there).
export PUPPETLENS_PEER_MODELS=${PUPPETLENS_PEER_MODELS:-$(ls "$PUPPETLENS_CACHE/models" | paste -sd,)}
set -o pipefail
"$STAGE/stage/peers" --bench 2>&1 | tee "$OUT/gpu_check.log"
