#!/usr/bin/env bash
# Builds, on this machine, what scripts/gpu-check.sh needs on a GPU machine without Rust: a
# release build with `dynamic-backends` (llama.cpp's backends as loadable modules; its own
# target dir, so the everyday build's cache is untouched), the shared libraries, the CPU backend
# modules, the vendored ggml source for the CUDA build, a model and requests.
#
#   bash scripts/gpu-bundle.sh [OUT] [MODEL] [REQUESTS]
#
# OUT defaults to target/gpu-bundle; MODEL to the default model; REQUESTS to the ML-1M test
# requests `data` writes (never committed: MovieLens may not be redistributed).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-bundle}
model=${2:-models/kvrec-default.gguf}
requests=${3:-target/default-file-e30/data/test.jsonl}
target=${KVREC_DYNAMIC_TARGET_DIR:-$HOME/.cache/kvrec/target-dynamic}
[ -f "$requests" ] || { echo "gpu-bundle: $requests missing; run kvrec-finetune data first" >&2; exit 1; }
CARGO_TARGET_DIR=$target cargo build --release --workspace --features dynamic-backends
sys=$(ls -d "$target"/release/build/llama-cpp-sys-2-*/out | head -1)
rm -rf "$out.tmp" && mkdir -p "$out.tmp"/{bin,lib,backends}
cp "$target/release/kvrec-finetune" "$out.tmp/bin/"
cp "$target/release/libkvrec.so" "$out.tmp/lib/"
find "$sys" -name 'lib*.so*' -not -path '*/backends/*' -exec cp -P {} "$out.tmp/lib/" \;
cp "$sys"/backends/*.so "$out.tmp/backends/"
src=$(ls -d "$HOME"/.cargo/registry/src/*/llama-cpp-sys-2-0.1.160/llama.cpp | head -1)
tar -czf "$out.tmp/ggml-src.tar.gz" -C "$src" ggml
cp "$model" "$out.tmp/model.gguf"
head -n 200 "$requests" >"$out.tmp/requests.jsonl"
rm -rf "$out" && mv "$out.tmp" "$out"
du -sh "$out"
