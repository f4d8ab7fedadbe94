#!/usr/bin/env bash
# kvrec demo: import MovieLens into SQLite, load the kvrec extension into the sqlite3 CLI,
# print InstructMK prompts and augmented training rows for a few users, and rank their
# candidates with recommend(). Until the trained default model ships (models/), the model is
# the tiny random test model: the rankings show the mechanics, not quality.
# Uses ../shared/data/movielens/ml-100k when present, else the synthetic fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/deps.sh

cargo build --release --workspace
target="${CARGO_TARGET_DIR:-target}/release"
data=../shared/data/movielens/ml-100k
[ -d "$data" ] || data=tests/fixtures/ml-tiny
mkdir -p target/demo
db=target/demo/movielens.db
rm -f "$db"
"$target/kvrec-finetune" import --from "$data" --db "$db"
model=models/kvrec-default.gguf
if [ ! -f "$model" ]; then
  model=target/demo/tiny.gguf
  "$target/kvrec-finetune" tiny-model --out "$model"
fi

sqlite3 "$db" <<SQL
.load $target/libkvrec
SELECT 'kvrec ' || kvrec_version() || ' loaded into SQLite ' || sqlite_version();
.parameter set :first_user 1
.parameter set :last_user 2
.read sql/requests.sql
.mode line
.read sql/prompt_for_user.sql
.mode list
SELECT '--- InstructMK-SO training rows (user, copy, answer):';
SELECT user_id, copy, answer FROM (SELECT * FROM temp.kvrec_requests WHERE user_id = 1) r,
       kvrec_augmentations(r.user, r.history, r.candidates, 'SO', 7, 4, json_object('positive', r.positive));
SELECT '--- recommend() with $model (user, actual next movie, ranking):';
SELECT json_extract(kvrec_load_model('default', '$model'), '$.architecture');
SELECT user_id, positive, recommend(user, history, candidates) FROM temp.kvrec_requests;
SQL
