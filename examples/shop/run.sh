#!/usr/bin/env bash
# Your own data end to end, on a small shop that is not about movies: build its SQLite
# database (text SKUs, its own column names), fit a model to it from a recipe in one
# command, and serve recommend_topk() from SQL with the shop's own SKUs in and out.
#
#   bash examples/shop/run.sh [OUT]
#
# OUT: the work folder (default target/shop). KVREC_SHOP_BUDGET bounds the fit (default 1m;
# it ends by itself in seconds). Binaries come from CARGO_TARGET_DIR's release build unless KVREC_BIN names
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

# 2. One command from the recipe to a model: data, a configuration derived from the data,
#    training within the budget, export, and report.md against popularity and co-occurrence.
rm -rf "$out/fit"
"$bin/kvrec-finetune" fit "$out/recipe.toml" --out "$out/fit" --budget "${KVREC_SHOP_BUDGET:-1m}" \
  --test-users 100

# 3. Serve it from SQL: the next five SKUs for a customer, from their last orders.
/usr/bin/python3 - "$extension" "$out/fit/model.gguf" "$out/shop.db" <<'PY'
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
