"""Checks kvrec.ray on a running two-node Ray cluster (started and stopped by
tests/python_package.rs):

    python check_ray.py ADDRESS MODEL REQUESTS_JSONL EXPECTED_JSON LOAD_LOG

Every request must come back exactly once with the ranking single-process SQLite recommend()
gave (EXPECTED_JSON); actors must run on both nodes and load the model once each; a worker
killed mid-job must change nothing but the load count.
"""
import json
import os
import signal
import sys

import ray
import kvrec.ray

address, model, requests_path, expected_path, load_log = sys.argv[1:6]
requests = [json.loads(line) for line in open(requests_path)]
expected = json.load(open(expected_path))
rows = [
    {"id": i, "user": json.dumps(r["user"]), "history": json.dumps(r["history"]),
     "candidates": json.dumps(r["candidates"])}
    for i, r in enumerate(requests)
]

ray.init(address=address, runtime_env={"env_vars": {kvrec.ray.LOAD_LOG_ENV: load_log}},
         log_to_driver=False)
nodes = [n for n in ray.nodes() if n["Alive"]]
assert len(nodes) == 2, nodes
ray.data.DataContext.get_current().enable_progress_bars = False


def loads():
    if not os.path.exists(load_log):
        return []
    return [line.split() for line in open(load_log).read().splitlines()]


def check(ranked_rows, label):
    ids = [r["id"] for r in ranked_rows]
    assert sorted(ids) == list(range(len(requests))), f"{label}: lost or duplicated requests"
    for r in ranked_rows:
        assert list(r["ranked"]) == expected[r["id"]], (label, r["id"], list(r["ranked"]), expected[r["id"]])


# A plain run: two actors, one per node, each loading the model once.
dataset = ray.data.from_items(rows)
ranked = kvrec.ray.score(dataset, model, actors=2, batch_size=50).take_all()
check(ranked, "plain run")
first = loads()
assert len(first) == 2, first
assert len({node for _, node in first}) == 2, f"actors did not run on both nodes: {first}"

# A worker killed mid-job: restarted, its batch retried, every request still ranked once.
os.remove(load_log)
killed = None
out = []
stream = kvrec.ray.score(ray.data.from_items(rows), model, actors=2, batch_size=20)
for batch in stream.iter_batches(batch_size=20, batch_format="pandas"):
    out.extend(batch.to_dict("records"))
    if killed is None and len(loads()) >= 2:
        killed = int(loads()[0][0])
        os.kill(killed, signal.SIGKILL)
assert killed is not None, "no actor to kill: the job ended before two actors had loaded"
check(out, "run with a killed worker")
after = loads()
assert len(after) >= 3 and any(int(pid) != killed for pid, _ in after[2:]), after
print(f"ray: {len(requests)} requests on 2 nodes ranked as recommend() ranks them; "
      f"worker {killed} killed mid-job, restarted ({len(after)} loads), nothing lost or repeated")
