"""Runs SQL cases in DuckDB with the kvrec extension and writes each outcome as JSON:
{"ok": <first value>, "rows": [[...], ...], "columns": [...]} or {"error": <message>}. Lists
(recommend's LIST(BIGINT)) are written as compact JSON, as SQLite's recommend() returns them.
The process itself must survive them all.

    python3 run_cases.py EXTENSION MODEL CASES_JSON OUT_JSON

A case is {"sql": <text after SELECT>, "args": [...]} or {"query": <whole query>, "args": [...]}.
CASES_JSON is a list of cases, with MODEL loaded as 'h', or {"models": {name: path}, "cases":
[...]} to load other models under other names (tests/catalog_parity.rs).
"""
import json
import sys

import duckdb

ext, model, cases_path, out_path = sys.argv[1:5]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
spec = json.load(open(cases_path))
if isinstance(spec, dict):
    models, cases = spec["models"], spec["cases"]
else:
    models, cases = {"h": model}, spec
for name, path in models.items():
    con.execute("SELECT kvrec_load_model(?, ?)", [name, path])


def plain(value):
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    return value


outcomes = []
for case in cases:
    try:
        query = case.get("query") or "SELECT " + case["sql"]
        cursor = con.execute(query, case["args"])
        rows = [[plain(v) for v in row] for row in cursor.fetchall()]
        columns = [d[0] for d in cursor.description]
        outcomes.append({"ok": rows[0][0] if rows else None, "rows": rows, "columns": columns})
    except duckdb.Error as e:
        outcomes.append({"error": str(e)})
json.dump(outcomes, open(out_path, "w"))
