"""A bounded attack on a locked Datasette with datasette-kvrec and default settings (started
and stopped by tests/python_package.rs, on 127.0.0.1): two anonymous visitors send the
requests that used to stall the server (generation over many candidates, huge thread counts,
100,000 candidates, many-row recommend() queries, concurrent long calls, load / unload /
lock / configure attempts) while a third asks `select 1` twice a second. Checks:

- every request is answered or cut within the time limit + 0.5 s;
- `select 1` answers within 1 s throughout;
- the server's threads stay within its own count + 2 x cores (no call starts 512 threads);
- its memory after the attack is within 50 MB of before;
- no answer shows the model directory or any other server path;
- the server is alive and recommend() answers as before.

    python check_datasette_attack.py BASE_URL DATABASE REQUEST_JSON SERVER_PID MODEL_DIR
"""
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

base, database, request_path, pid, model_dir = sys.argv[1:6]
request = json.load(open(request_path))
params = {
    "u": json.dumps(request["user"]),
    "h": json.dumps(request["history"]),
    "c": json.dumps(request["candidates"]),
}
TIME_LIMIT_S = 1.0  # Datasette's default sql_time_limit_ms
ATTACK_S = 12.0
CORES = os.cpu_count()


def query(sql):
    q = urllib.parse.urlencode({"sql": sql, "_shape": "array", **params})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{base}/{database}.json?{q}", timeout=60) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    return status, body, time.perf_counter() - start


def status_of(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["Threads"])


def candidates(n):
    """n candidates built inside SQLite, so the request itself stays small."""
    return (
        f"(WITH RECURSIVE i(n) AS (VALUES(1) UNION ALL SELECT n + 1 FROM i WHERE n < {n}) "
        "SELECT json_group_array(json_object('id', n)) FROM i)"
    )


def rows(n, call):
    return (
        f"WITH RECURSIVE r(n) AS (VALUES(1) UNION ALL SELECT n + 1 FROM r WHERE n < {n}) "
        f"SELECT {call} FROM r"
    )


ATTACKS = {
    "generate, 300 candidates": f"SELECT recommend(:u, :h, {candidates(300)}, '{{\"mode\": \"generate\"}}')",
    "generate, 200 candidates": f"SELECT recommend(:u, :h, {candidates(200)}, '{{\"mode\": \"generate\"}}')",
    "generate, 10 candidates x 50 rows": rows(50, "recommend(:u, :h, :c, '{\"mode\": \"generate\"}')"),
    "512 threads": "SELECT recommend(:u, :h, :c, '{\"n_threads\": 512}')",
    "100,000 candidates": f"SELECT recommend(:u, :h, {candidates(100000)})",
    "900 candidates x 200 rows": rows(200, f"recommend(:u, :h, {candidates(900)})"),
    "a long timeout": "SELECT recommend(:u, :h, :c, '{\"timeout_ms\": 600000}')",
    "load a system file": "SELECT kvrec_load_model('x', '/etc/passwd')",
    "load from the model dir": f"SELECT kvrec_load_model('x', '{model_dir}/kvrec-default.gguf')",
    "unload the model in use": "SELECT kvrec_unload_model('default')",
    "lock the registry": "SELECT kvrec_lock_models()",
    "lift the caps": "SELECT kvrec_configure('{\"max_call_ms\": 0, \"max_candidates\": 1000000}')",
    "list the models": "SELECT * FROM kvrec_models()",
    "debug": "SELECT kvrec_debug()",
    "4 arguments, user first": "SELECT recommend(:u, :h, :c, '{\"k\": 2}')",
}
# Paths of this server: the model directory, where Python and the wheel live.
SERVER_PATHS = [model_dir, os.path.dirname(os.__file__), sys.prefix, "site-packages"]

rss_before, threads_before = status_of(pid)
status, body, _ = query("SELECT recommend(:u, :h, :c) AS ranked")
assert status == 200, (status, body)
ranked = json.loads(json.loads(body)[0]["ranked"])

failures, slowest, probes, max_threads = [], {}, [], threads_before
stop = threading.Event()


def attacker(offset):
    names = list(ATTACKS)
    i = offset
    while not stop.is_set():
        name = names[i % len(names)]
        i += 1
        status, body, took = query(ATTACKS[name])
        slowest[name] = max(slowest.get(name, 0), took)
        if took > TIME_LIMIT_S + 0.5:
            failures.append(f"{name}: answered after {took:.2f} s")
        # What the server says: the rows or the error (Datasette also echoes the query itself).
        try:
            answer = json.loads(body)
            said = json.dumps(answer.get("error") if isinstance(answer, dict) else answer)
        except ValueError:
            said = body
        for path in SERVER_PATHS:
            if path and path in said:
                failures.append(f"{name}: the answer shows the server path {path!r}: {body[:300]}")


def prober():
    global max_threads
    while not stop.is_set():
        status, body, took = query("SELECT 1 AS one")
        probes.append(took)
        if status != 200:
            failures.append(f"select 1 failed during the attack: {status} {body[:200]}")
        max_threads = max(max_threads, status_of(pid)[1])
        time.sleep(0.5)


workers = [threading.Thread(target=attacker, args=(k * 7,)) for k in range(2)]
workers.append(threading.Thread(target=prober))
for w in workers:
    w.start()
time.sleep(ATTACK_S)
stop.set()
for w in workers:
    w.join()

assert max(probes) <= 1.0, f"select 1 took up to {max(probes):.2f} s during the attack: {probes}"
assert max_threads <= threads_before + 2 * CORES, (threads_before, max_threads)
time.sleep(1)
status, body, _ = query("SELECT recommend(:u, :h, :c) AS ranked")
assert status == 200 and json.loads(json.loads(body)[0]["ranked"]) == ranked, (status, body)
rss_after, _ = status_of(pid)
assert rss_after - rss_before <= 50, f"RSS grew from {rss_before} to {rss_after} MB"
assert not failures, "\n".join(failures)
assert len(slowest) == len(ATTACKS), sorted(set(ATTACKS) - set(slowest))
print(
    f"datasette under attack: {len(ATTACKS)} kinds of request, slowest answer "
    f"{max(slowest.values()):.2f} s ({max(slowest, key=slowest.get)}); select 1 at most "
    f"{max(probes):.2f} s; threads {threads_before} -> at most {max_threads}; "
    f"RSS {rss_before} -> {rss_after} MB"
)
