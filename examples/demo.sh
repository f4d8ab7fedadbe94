#!/usr/bin/env bash
# kvrec demo: import MovieLens into SQLite, load the kvrec extension into the sqlite3 CLI and
# print InstructMK prompts and augmented training rows for a few users.
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
SQL
