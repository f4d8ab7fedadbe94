#!/usr/bin/env python3
"""Rows/s of recommend() over a table: DuckDB's batched path against SQLite's row-at-a-time
path, same model, same requests, same machine, taking turns (DuckDB, SQLite, DuckDB, SQLite)
so drift reaches both. Model loading is not timed.

    python3 scripts/bench_duckdb.py --model M.gguf --requests data/ml1m/test.jsonl [--n 500]

Needs the release build (cargo build --release --workspace), the sqlite3 CLI and the duckdb
Python package (.ci/deps.sh installs both).
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import duckdb

ROOT = pathlib.Path(__file__).resolve().parent.parent


def sql_text(value) -> str:
    return "'" + json.dumps(value).replace("'", "''") + "'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", required=True, help="JSONL with user, history, candidates")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--lib", default=str(ROOT / "target/release/libkvrec.so"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    rows = []
    with open(args.requests) as f:
        for line in f:
            r = json.loads(line)
            rows.append((json.dumps(r["user"]), json.dumps(r["history"]), json.dumps(r["candidates"])))
            if len(rows) == args.n:
                break
    work = pathlib.Path(tempfile.mkdtemp(prefix="kvrec-bench-"))
    ext = work / "kvrec.duckdb_extension"
    subprocess.run([sys.executable, str(ROOT / "scripts/duckdb_extension.py"), "--lib", args.lib,
                    "--out", str(ext)], check=True, capture_output=True)

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{ext}'")
    con.execute("SELECT kvrec_load_model('bench', ?)", [args.model])
    con.execute("CREATE TABLE requests(u VARCHAR, h VARCHAR, c VARCHAR)")
    con.executemany("INSERT INTO requests VALUES (?, ?, ?)", rows)
    query = "SELECT sum(len(recommend('bench', u, h, c))) FROM requests"

    inserts = work / "requests.sql"
    with open(inserts, "w") as f:
        f.write("CREATE TABLE requests(u TEXT, h TEXT, c TEXT);\nBEGIN;\n")
        for u, h, c in rows:
            f.write(f"INSERT INTO requests VALUES ({sql_text(json.loads(u))}, {sql_text(json.loads(h))}, {sql_text(json.loads(c))});\n")
        f.write("COMMIT;\n")
    sqlite_script = (
        f".load {args.lib.removesuffix('.so')}\n.read {inserts}\n"
        f"SELECT kvrec_load_model('bench', '{args.model}') IS NOT NULL;\n.timer on\n"
        "SELECT sum(json_array_length(recommend('bench', u, h, c))) FROM requests;\n"
    )

    def duck() -> float:
        start = time.perf_counter()
        con.execute(query).fetchall()
        return time.perf_counter() - start

    def sqlite() -> float:
        out = subprocess.run(["sqlite3", ":memory:"], input=sqlite_script, text=True,
                             capture_output=True, check=True).stdout
        return float(re.findall(r"Run Time: real ([0-9.]+)", out)[-1])

    duck()  # warm-up: contexts created, caches filled
    times = {"DuckDB recommend() (chunk batched)": [], "SQLite recommend() (row at a time)": []}
    for _ in range(args.rounds):
        times["DuckDB recommend() (chunk batched)"].append(duck())
        times["SQLite recommend() (row at a time)"].append(sqlite())
    base = len(rows) / min(times["SQLite recommend() (row at a time)"])
    print(f"{len(rows)} requests, model {args.model}, duckdb {duckdb.__version__}, best of {args.rounds}\n")
    print("| path | rows/s | vs SQLite |\n|---|---|---|")
    for name, t in times.items():
        rate = len(rows) / min(t)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
