#!/usr/bin/env python3
"""Rows/s of kvrec.ray on a running Ray cluster, with 1 and with 2 actors (one per node), against
single-process DuckDB recommend() on the same requests, in the same run. Run it inside the
two-node cluster of tests/python/ray_cluster.sh, with the wheel installed:

    unshare -n sh tests/python/ray_cluster.sh VENV 6390 VENV/bin/python scripts/bench_ray.py \\
        --requests target/default-file-e30/data/test.jsonl --model models/kvrec-default.gguf

On a 2-core machine both nodes share the same cores, so this measures Ray's overhead, not a
speed-up.
"""
import argparse
import json
import time

import duckdb
import kvrec
import kvrec.ray
import ray


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", required=True, help="JSON lines with user, history, candidates")
    parser.add_argument("--model", default=kvrec.default_model())
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=10, help="rank the requests this many times over")
    args = parser.parse_args()
    requests = [json.loads(line) for line in open(args.requests)][: args.n] * args.repeat
    rows = [{"id": i, "user": json.dumps(r["user"]), "history": json.dumps(r["history"]),
             "candidates": json.dumps(r["candidates"])} for i, r in enumerate(requests)]

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    kvrec.load_duckdb(con, None)
    con.execute("SELECT kvrec_load_model('m', ?, '{\"n_threads\": 1}')", [args.model]).fetchall()
    import pandas as pd
    con.register("requests", pd.DataFrame(rows))
    start = time.perf_counter()
    con.execute("SELECT recommend('m', user, history, candidates) FROM requests").fetchall()
    single = len(rows) / (time.perf_counter() - start)

    ray.init(address="auto", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    results = [("DuckDB recommend(), one process, 1 thread", single)]
    for actors in (1, 2):
        dataset = ray.data.from_items(rows).materialize()
        start = time.perf_counter()
        out = kvrec.ray.score(dataset, args.model, actors=actors, batch_size=args.batch_size).take_all()
        assert len(out) == len(rows)
        results.append((f"kvrec.ray, {actors} actor(s) on {min(actors, nodes)} node(s)",
                        len(rows) / (time.perf_counter() - start)))
    print(f"| path | rows/s | vs single process |  ({len(rows)} requests, {args.model})")
    print("|---|---|---|")
    for name, rate in results:
        print(f"| {name} | {rate:.1f} | {rate / single:.2f} |")


if __name__ == "__main__":
    main()
