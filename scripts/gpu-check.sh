#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and the CUDA toolkit but no Rust: builds only
# llama.cpp's CUDA backend from the vendored ggml source that the bundle carries (the same source
# the extension was built from), then runs kvrec's benchmark on the same requests with
# n_gpu_layers 999 and with 0, and prints requests/s, p50 and recommend() / raw for both.
#
#   bash scripts/gpu-check.sh [--dry-run] [--arch 90a] [--n 200] BUNDLE
#
# BUNDLE is what scripts/gpu-bundle.sh writes on the build machine (a dynamic-backends release
# build): bin/kvrec-finetune, lib/ (libkvrec.so and llama.cpp's shared libraries), backends/
# (the CPU backend modules), ggml-src.tar.gz, model.gguf and requests.jsonl. --dry-run does
# everything but the CUDA build, on any machine: CI runs it on its own build so that this
# script works the first time a GPU is there. A bundle may also be assembled by hand; see
# tests/gpu_check.rs.
set -euo pipefail

usage="usage: bash scripts/gpu-check.sh [--dry-run] [--arch 90a] [--n 200] BUNDLE (a folder scripts/gpu-bundle.sh wrote)"
dry_run=0
arch=90a
n=200
bundle=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --arch) arch=${2:?$usage}; shift 2 ;;
    --n) n=${2:?$usage}; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "gpu-check: unknown option $1; $usage" >&2; exit 2 ;;
    *) [ -z "$bundle" ] || { echo "gpu-check: one BUNDLE only; $usage" >&2; exit 2; }; bundle=$1; shift ;;
  esac
done
[ -n "$bundle" ] || { echo "gpu-check: no BUNDLE given; $usage" >&2; exit 2; }
[ -d "$bundle" ] || { echo "gpu-check: $bundle is not a folder; $usage" >&2; exit 2; }
bundle=$(cd -- "$bundle" && pwd)
for f in bin/kvrec-finetune lib/libkvrec.so model.gguf requests.jsonl; do
  [ -e "$bundle/$f" ] || { echo "gpu-check: $bundle/$f is missing; build the bundle with scripts/gpu-bundle.sh" >&2; exit 1; }
done
mkdir -p "$bundle/backends"
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVREC_BACKENDS_DIR="$bundle/backends"

if [ "$dry_run" = 1 ]; then
  echo "gpu-check: dry run: the CUDA backend is not built; both runs use what the bundle has"
else
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [ -x "$nvcc" ] || { echo "gpu-check: nvcc not found (PATH or /usr/local/cuda/bin)" >&2; exit 1; }
  [ -f "$bundle/ggml-src.tar.gz" ] || { echo "gpu-check: $bundle/ggml-src.tar.gz is missing" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$bundle/ggml-src.tar.gz" -C "$work"
  start=$(date +%s)
  cmake -S "$work/ggml" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DGGML_BACKEND_DL=ON -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
    -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$work/cmake.log" 2>&1 \
    || { tail -30 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target ggml-cuda -j "$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; exit 1; }
  find "$work/build" -name 'libggml-cuda*.so' -exec cp {} "$bundle/backends/" \;
  echo "gpu-check: CUDA backend built in $(( $(date +%s) - start )) s"
fi

# One benchmark run: the bench's markdown table, whose first three rows are raw llama.cpp,
# rank() in process and SQLite recommend() on the same prompts.
bench() {
  "$bundle/bin/kvrec-finetune" bench --model "$bundle/model.gguf" --test "$bundle/requests.jsonl" \
    --n "$n" --extension "$bundle/lib/libkvrec.so" --options "$1"
}
summary() {
  awk -F'|' -v label="$1" '
    /raw llama.cpp prompt pass/ { raw = $4 + 0; raw_p50 = $6 + 0 }
    /SQLite recommend\(\)/ { rec = $4 + 0; rec_p50 = $6 + 0 }
    END {
      if (raw == 0 || rec == 0) { print "gpu-check: no benchmark rows for " label > "/dev/stderr"; exit 1 }
      printf "| %s | %.1f | %.2f | %.1f | %.2f | %.2f |\n", label, raw, raw_p50, rec, rec_p50, rec / raw
    }'
}
gpu=$(bench '{"n_gpu_layers": 999}')
cpu=$(bench '{"n_gpu_layers": 0}')
echo "$gpu"
echo
echo "$cpu"
echo
echo "| run | raw requests/s | raw p50 ms | recommend() requests/s | recommend() p50 ms | recommend() / raw |"
echo "|---|---|---|---|---|---|"
echo "$gpu" | summary "n_gpu_layers 999"
echo "$cpu" | summary "n_gpu_layers 0"
echo "$gpu" | grep '^llama.cpp devices:' || true
