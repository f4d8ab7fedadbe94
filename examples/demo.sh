#!/usr/bin/env bash
# kvrec demo: import MovieLens into SQLite, load the kvrec extension into the sqlite3 CLI,
# print an InstructMK prompt and augmented training rows, then rank held-out movies with
# recommend() and the default model (models/kvrec-default.gguf, a sequential recommender
# trained on ML-1M users 1-2999) and print its HR@1 over 1,000 test users next to tuned
# co-occurrence's on the same requests.
# Uses ../shared/data/movielens/ml-1m-head2999 when present (the model's movie ids), else the
# synthetic fixture, where the rankings show the mechanics only.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/deps.sh

cargo build --release --workspace
target="${CARGO_TARGET_DIR:-target}/release"
data=../shared/data/movielens/ml-1m-head2999
[ -d "$data" ] || data=tests/fixtures/ml-tiny
mkdir -p target/demo
db=target/demo/movielens.db
rm -f "$db"
"$target/kvrec-finetune" import --from "$data" --db "$db"
# Leave-one-out requests into `requests`, ratings in one second kept in file order (the order
# the default model was trained on), with `co_watch_rank` — tuned co-occurrence's rank of each
# candidate — to compare the model against.
"$target/kvrec-finetune" data --from "$data" --out target/demo/data --variants none \
  --copies 0 --candidate-keys co_watch_rank --tie-order file --sqlite "$db"
model=models/kvrec-default.gguf

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
SELECT '--- the default model:';
SELECT json_extract(kvrec_load_model('default', '$model'), '\$.path');
SELECT printf('%s: %d parameters, %.1f MB, template v%d from the model', name, n_params,
              size_bytes / 1e6, template_version) FROM kvrec_models();
SELECT '--- recommend() (user, actual next movie, ranking best first):';
SELECT user_id, positive, recommend(user, history, candidates) FROM requests
 WHERE split = 'test' ORDER BY user_id LIMIT 5;
SELECT '--- HR@1 over the test users (chance 0.10):';
SELECT printf('recommend(): %.3f, tuned co-occurrence (co_watch_rank = 1): %.3f, over %d users',
              avg(json_extract(recommend(user, history, candidates), '\$[0]') = positive),
              avg((SELECT 1.0 / count(*) FROM json_each(candidates) c
                   WHERE json_extract(c.value, '\$.co_watch_rank') = 1)
                  * EXISTS (SELECT 1 FROM json_each(candidates) c
                            WHERE json_extract(c.value, '\$.id') = positive
                              AND json_extract(c.value, '\$.co_watch_rank') = 1)),
              count(*))
  FROM requests WHERE split = 'test';
SQL
