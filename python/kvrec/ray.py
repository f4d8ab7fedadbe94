"""Batch ranking on a Ray cluster: kvrec as a Ray Data stage.

    import ray, kvrec.ray
    ranked = kvrec.ray.score(ray.data.read_parquet("requests.parquet"), model="/models/m.gguf")
    ranked.write_parquet("ranked/")

Each actor of the pool loads the extension and the model once, then ranks a batch at a time
through DuckDB's batched `recommend()` (requests packed into llama.cpp decodes). Actors that die
are restarted and their batches retried, so every request is ranked exactly once. With GPU
offload in the load options (`n_gpu_layers`), each actor asks Ray for a GPU.

Command line:

    python -m kvrec.ray --input requests.parquet --output ranked/ --model M.gguf [--address auto] [--actors N]

Requests have columns `user`, `history` and `candidates` (JSON text, or nested values as
Parquet stores them); the output adds `ranked`, the candidate ids best first.
"""
import argparse
import json
import os

import kvrec

__all__ = ["score"]

# Set in a worker's environment, each model load appends the worker's pid and node to this
# file (the tests count loads per actor with it).
LOAD_LOG_ENV = "KVREC_RAY_LOAD_LOG"


def _plain(value):
    """Arrow/NumPy values as plain Python, for JSON."""
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _json(value):
    return value if isinstance(value, str) else json.dumps(_plain(value))


class Ranker:
    """One actor's ranking state: a DuckDB connection with the extension and the model."""

    def __init__(self, model, options=None, load_options=None, columns=("user", "history", "candidates")):
        import duckdb

        self.con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        kvrec.load_duckdb(self.con, default_model_name=None)
        self.con.execute(
            "SELECT kvrec_load_model('ray', ?, ?)", [model, json.dumps(load_options or {})]
        ).fetchall()
        log = os.environ.get(LOAD_LOG_ENV)
        if log:
            import ray

            with open(log, "a") as f:
                f.write(f"{os.getpid()} {ray.get_runtime_context().get_node_id()}\n")
        self.options = json.dumps(options or {})
        self.columns = columns

    def __call__(self, batch):
        import pandas as pd

        user, history, candidates = self.columns
        requests = pd.DataFrame({
            "i": range(len(batch)),
            "u": [_json(v) for v in batch[user]],
            "h": [_json(v) for v in batch[history]],
            "c": [_json(v) for v in batch[candidates]],
        })
        self.con.register("kvrec_requests", requests)
        try:
            rows = self.con.execute(
                "SELECT recommend('ray', u, h, c, ?) FROM kvrec_requests ORDER BY i", [self.options]
            ).fetchall()
        finally:
            self.con.unregister("kvrec_requests")
        batch = batch.copy()
        batch["ranked"] = [list(r[0]) for r in rows]
        return batch


def score(dataset, model, user="user", history="history", candidates="candidates", k=None,
          options=None, load_options=None, actors=2, batch_size=64, num_gpus=None):
    """`dataset` (a ray.data.Dataset of requests) with a `ranked` column added: the candidate
    ids best first (the best `k` when given). `options` are recommend()'s per-call options,
    `load_options` kvrec_load_model()'s; `actors` is the size of the actor pool."""
    options = dict(options or {})
    if k is not None:
        options["k"] = k
    load_options = dict(load_options or {})
    # Each actor holds one CPU of the cluster, so its model runs one thread unless told.
    load_options.setdefault("n_threads", 1)
    if num_gpus is None:
        num_gpus = 1 if load_options.get("n_gpu_layers", 0) > 0 else 0
    import ray.data

    # Ray Data restarts an actor pool's dead actors and retries their batches by default
    # (max_restarts and max_task_retries -1), and spreads actors over the nodes.
    return dataset.map_batches(
        Ranker,
        fn_constructor_args=(model, options, load_options, (user, history, candidates)),
        batch_format="pandas",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=num_gpus,
    )


def main(argv=None):
    import ray

    parser = argparse.ArgumentParser(prog="python -m kvrec.ray", description="Rank requests with kvrec on a Ray cluster.")
    parser.add_argument("--input", required=True, help="requests: Parquet (file or folder) or JSON lines")
    parser.add_argument("--output", required=True, help="folder for the ranked Parquet files")
    parser.add_argument("--model", default=kvrec.default_model())
    parser.add_argument("--address", default=None, help="a running cluster ('auto'), else a local one")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--load-options", default="{}", help="kvrec_load_model options (JSON)")
    args = parser.parse_args(argv)
    ray.init(address=args.address)
    if args.input.endswith((".jsonl", ".json")):
        dataset = ray.data.read_json(args.input)
    else:
        dataset = ray.data.read_parquet(args.input)
    ranked = score(dataset, args.model, k=args.k, load_options=json.loads(args.load_options),
                   actors=args.actors, batch_size=args.batch_size)
    ranked.write_parquet(args.output)
    print(f"ranked requests written to {args.output}")


if __name__ == "__main__":
    main()
