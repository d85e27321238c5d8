#!/usr/bin/env bash
# Build puppetlens with `--features cuda` on a machine WITHOUT a GPU and
# without a system CUDA toolkit, using NVIDIA's CUDA wheels from PyPI.
#
# Why CUDA 13.0 and not 12.x: the CUDA 12 wheels on PyPI
# (nvidia-cuda-nvcc-cu12, every version 12.0 .. 12.9) ship only ptxas + libnvvm,
# not the `nvcc` driver, cicc, cudafe++ or fatbinary. The CUDA 13 wheels
# (nvidia-cuda-nvcc, nvidia-nvvm, ...) ship a complete nvcc. 13.0 is the
# CUDA version of the R580 driver, so the PTX it emits (ISA 9.0) is JIT-able
# by any 580-series driver. Do NOT bump to 13.1+: PTX from a newer toolkit is
# rejected by an older driver (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
#
# Usage (from the repo root):
#   scripts/build_cuda.sh                 # lib + bin + examples, release
#   scripts/build_cuda.sh --tests         # also `cargo test --no-run`
#   scripts/build_cuda.sh --bench         # also the peer benchmark's binary (scripts/gpu_stage.sh)
#   CUDA_COMPUTE_CAP=80 scripts/build_cuda.sh   # A100 instead of H100 (default 90)
#   CARGO_TARGET_DIR=target scripts/build_cuda.sh
#
# Output: $CARGO_TARGET_DIR/release/puppetlens (default target dir: target/cuda,
# kept apart from the CPU build so switching features does not rebuild all).
#
# Running the result on a GPU machine: the binary is dynamically linked
# (candle forces cudarc's `dynamic-linking`) against libcuda.so.1 (driver),
# libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and
# libnvrtc.so.13. The driver comes from the GPU machine; the others are in
# .cuda/root/nvidia/cu13/lib (an rpath relative to the binary is embedded), or
# set LD_LIBRARY_PATH. Never put .cuda/.../lib/stubs on a runtime path: the
# libcuda.so there is a link-time stub that fails every call.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

CUDA_DIR=${CUDA_DIR:-$REPO/.cuda}
WHEELS=$CUDA_DIR/wheels
ROOT=$CUDA_DIR/root
export CUDA_HOME=$ROOT/nvidia/cu13

# CUDA 13.0 update 2 component versions, pinned.
PKGS=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary, nvlink, cudafe++
  nvidia-nvvm==13.0.88          # cicc, libnvvm, libdevice
  nvidia-cuda-crt==13.0.88      # include/crt/*
  nvidia-cuda-runtime==13.0.96  # cudart + cuda.h, cuda_fp16.h, ...
  nvidia-cuda-cccl==13.0.85     # cub/thrust/libcu++ (include/cccl)
  nvidia-cuda-nvrtc==13.0.88    # libnvrtc.so.13
  nvidia-cublas==13.1.0.3       # libcublas.so.13, libcublasLt.so.13 (~420 MB wheel)
  nvidia-curand==10.4.0.35      # libcurand.so.10
)
PKG_NAMES=()
for p in "${PKGS[@]}"; do PKG_NAMES+=("${p%%#*}"); done

PYTHON=${PYTHON:-python3}
NICE=(nice -n "${NICE_LEVEL:-19}")

if [ ! -x "$CUDA_HOME/bin/nvcc" ] || [ ! -e "$CUDA_DIR/.stamp-13.0.2" ]; then
  echo ">> downloading CUDA 13.0 wheels into $WHEELS"
  rm -rf "$ROOT" "$WHEELS"
  mkdir -p "$WHEELS" "$ROOT"
  # --platform/--python-version make pip pick the manylinux x86_64 wheels
  # regardless of the local Python; --no-deps keeps it to exactly these.
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 \
    --platform manylinux2010_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 \
    -d "$WHEELS" "${PKG_NAMES[@]}"
  echo ">> unpacking"
  for w in "$WHEELS"/*.whl; do
    "$PYTHON" - "$w" "$ROOT" <<'PY'
import sys, zipfile, os
w, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(w) as z:
    for info in z.infolist():
        if not info.filename.startswith("nvidia/"):
            continue
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
  done
  # The wheels drop executable bits in some versions; make sure the tools run.
  chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/* 2>/dev/null || true
  rm -rf "$WHEELS"   # the unpacked tree is all we need (~1.2 GB)
  touch "$CUDA_DIR/.stamp-13.0.2"
fi

LIB=$CUDA_HOME/lib
# Linker names (the wheels only ship the versioned sonames).
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  ln -sfn "$so" "$LIB/${so%.so.*}.so"
done
# lib64 is where cudaforge expects libs; cudarc looks in lib/ and lib/stubs/.
ln -sfn lib "$CUDA_HOME/lib64"

# libcuda.so is the driver and is not on PyPI: make a link-time stub whose
# soname is libcuda.so.1, exporting every cu* entry point named by cuda.h and
# by cudarc's bindings. At run time the real driver's libcuda.so.1 is used.
STUBS=$LIB/stubs
if [ ! -e "$STUBS/libcuda.so" ]; then
  echo ">> generating libcuda.so link stub"
  mkdir -p "$STUBS"
  CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
  "${NICE[@]}" cargo fetch --quiet
  {
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$CUDA_HOME"/include/cuda.h \
      "$CUDA_HOME"/include/cudaProfiler*.h 2>/dev/null | tr -d ' \t('
    grep -ohE '^#define +cu[A-Z][A-Za-z0-9_]* +cu[A-Za-z0-9_]+' "$CUDA_HOME"/include/cuda.h | awk '{print $3}'
    grep -ohE '^pub unsafe fn cu[A-Z][A-Za-z0-9_]*' \
      "$CARGO_HOME_DIR"/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null | awk '{print $4}'
  } | sort -u | awk '{printf "int %s(void){return 999;}\n", $1}' > "$STUBS/libcuda_stub.c"
  gcc -shared -fPIC -O0 -w -Wl,-soname,libcuda.so.1 -o "$STUBS/libcuda.so" "$STUBS/libcuda_stub.c"
  rm -f "$STUBS/libcuda_stub.c"
fi

export PATH=$CUDA_HOME/bin:$PATH
export CUDA_PATH=$CUDA_HOME CUDA_ROOT=$CUDA_HOME CUDA_TOOLKIT_ROOT_DIR=$CUDA_HOME
export NVCC=$CUDA_HOME/bin/nvcc
# No GPU here to query: the target architecture must be given (90 = H100/H200).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/cuda}
# Find the wheel libraries at run time relative to the built artefacts
# (target/cuda/release/{,examples/,deps/}) without LD_LIBRARY_PATH.
mkdir -p "$CARGO_TARGET_DIR/release"
REL=$(realpath --relative-to="$CARGO_TARGET_DIR/release" "$LIB")
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,\$ORIGIN/$REL -C link-arg=-Wl,-rpath,\$ORIGIN/../$REL"

echo ">> nvcc: $("$NVCC" --version | tail -2 | head -1)"
echo ">> CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

"${NICE[@]}" cargo build --release --features cuda --lib --bins --examples
case "${1:-}" in
  --tests) "${NICE[@]}" cargo test --release --features cuda --no-run ;;
  --bench) "${NICE[@]}" cargo bench --features cuda --bench peers --no-run ;;
esac
echo ">> built: $CARGO_TARGET_DIR/release/puppetlens"
