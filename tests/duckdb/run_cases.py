"""Runs SQL cases in DuckDB with the kvrec extension and writes each outcome as JSON lines:
{"ok": <text>} or {"error": <message>}. Lists (recommend's LIST(BIGINT)) are written as
compact JSON, as SQLite's recommend() returns them. The process itself must survive them all.

    python3 run_cases.py EXTENSION MODEL CASES_JSON OUT_JSON
"""
import json
import sys

import duckdb

ext, model, cases_path, out_path = sys.argv[1:5]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
con.execute(f"SELECT kvrec_load_model('h', '{model}')")
outcomes = []
for case in json.load(open(cases_path)):
    try:
        value = con.execute("SELECT " + case["sql"], case["args"]).fetchall()[0][0]
        if isinstance(value, list):
            value = json.dumps(value, separators=(",", ":"))
        outcomes.append({"ok": value})
    except duckdb.Error as e:
        outcomes.append({"error": str(e)})
json.dump(outcomes, open(out_path, "w"))
