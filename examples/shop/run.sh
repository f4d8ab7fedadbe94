#!/usr/bin/env bash
# Your own data end to end, on a small shop that is not about movies: build its SQLite
# database (text SKUs, its own column names), turn it into training data with a recipe,
# train a sequential model, export it, and serve recommend_topk() from SQL with the shop's
# own SKUs in and out.
#
#   bash examples/shop/run.sh [OUT]
#
# OUT: the work folder (default target/shop). KVREC_SHOP_EPOCHS shortens training (the test
# runs 2 epochs). Binaries come from CARGO_TARGET_DIR's release build unless KVREC_BIN names
# another folder holding kvrec-finetune (and KVREC_EXTENSION the SQLite extension).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/shop}
bin=${KVREC_BIN:-${CARGO_TARGET_DIR:-target}/release}
extension=${KVREC_EXTENSION:-$bin/libkvrec}
if [ -z "${KVREC_BIN:-}" ]; then cargo build --release --workspace; fi
mkdir -p "$out"

# 1. The shop's database (an app already has one), with the recipe beside it.
rm -f "$out/shop.db"
/usr/bin/python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).executescript(open(sys.argv[2]).read())" \
  "$out/shop.db" examples/shop/shop.sql
cp examples/shop/recipe.toml "$out/recipe.toml"

# 2. The recipe's queries → leave-one-out requests, training sequences and the SKU map.
"$bin/kvrec-finetune" data --recipe "$out/recipe.toml" --out "$out/data" \
  --variants none --copies 0 --test-users 100 --tie-order file

# 3. A small sequential model: next-item prediction over every SKU (60 of them), each
#    product's category an embedding its products share (--item-keys).
"$bin/kvrec-finetune" train --data "$out/data/train_sequences.jsonl" --valid "$out/data/train.jsonl" \
  --template models/kvrec-default.template.json --number-tokens 60 --vocab 300 \
  --sequence-window 12 --context 64 --d-model 32 --layers 1 --heads 1 --ff 64 --untied \
  --batch 32 --lr 3e-3 --warmup 10 --epochs "${KVREC_SHOP_EPOCHS:-20}" --patience 5 \
  --checkpoint-every 100000 --item-keys "$out/data/item_keys.jsonl" --out "$out/run"
"$bin/kvrec-finetune" export --run "$out/run" --out "$out/shop.gguf" --dtype f32 --name kvrec-shop

# 4. Its HR@1 on the held-out last purchases, next to co-occurrence.
"$bin/kvrec-finetune" eval --test "$out/data/test.jsonl" --model "$out/shop.gguf" \
  --sequences "$out/data/train_sequences.jsonl" --baseline cooccurrence --out "$out/eval.md"

# 5. Serve it from SQL: the next five SKUs for a customer, from their last orders.
/usr/bin/python3 - "$extension" "$out/shop.gguf" "$out/shop.db" <<'PY'
import sqlite3, sys
extension, model, db = sys.argv[1:4]
con = sqlite3.connect(db)
con.enable_load_extension(True)
con.load_extension(extension)
con.execute("SELECT kvrec_load_model('shop', ?)", (model,)).fetchone()
sql = open("examples/shop/next_for_customer.sql").read()
for customer in ("C00013", "C01300"):
    rows = con.execute(sql, {"customer": customer, "k": 5}).fetchall()
    print(customer, "bought", rows[0][0], "→ next:", [r[1] for r in rows])
PY
