#!/usr/bin/env bash
# The default recipe's table: a model per tie rule (scripts/train_default.sh), each scored on
# three protocol seeds (1,000 test users and their negatives each) against tuned
# co-occurrence on the same requests, paired.
#
#   bash scripts/eval_default.sh FILE_ORDER_MODEL MOVIE_ID_MODEL [OUT]
#
# Each seed's report (metrics, paired differences with 95 % bootstrap intervals, rank
# histograms) and per-request ranks go to OUT (default target/eval-default).
set -euo pipefail
cd "$(dirname "$0")/.."
file_model=$1
movie_id_model=$2
out=${3:-target/eval-default}
data=${KVREC_ML1M:-../shared/data/movielens/ml-1m-head2999}
bin="${CARGO_TARGET_DIR:-target}/release/kvrec-finetune"
mkdir -p "$out"
for tie in file movie-id; do
  model=$file_model
  [ "$tie" = movie-id ] && model=$movie_id_model
  for seed in ${KVREC_SEEDS:-42 43 44}; do
    dir="$out/$tie-$seed"
    "$bin" data --from "$data" --out "$dir" --tie-order "$tie" --seed "$seed" \
      --variants none --copies 0 >/dev/null
    "$bin" eval --test "$dir/test.jsonl" --sequences "$dir/train_sequences.jsonl" \
      --baseline popularity,cooccurrence --model "$model" --seed "$seed" \
      --per-request "$dir/per_request.csv" --out "$dir/report.md" >/dev/null
    echo "== tie order $tie, seed $seed"
    cat "$dir/report.md"
  done
done
