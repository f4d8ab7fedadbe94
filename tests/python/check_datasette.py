"""Checks a running `datasette serve` with datasette-kvrec over HTTP (started and stopped by
tests/python_package.rs): recommend() answers in the JSON API; loading any path, loading many
models and unloading the model in use are all refused; recommend() still answers after.

    python check_datasette.py BASE_URL DATABASE REQUEST_JSON
"""
import json
import sys
import urllib.parse
import urllib.request

base, database, request_path = sys.argv[1:4]
request = json.load(open(request_path))
params = {
    "u": json.dumps(request["user"]),
    "h": json.dumps(request["history"]),
    "c": json.dumps(request["candidates"]),
}


def query(sql, **extra):
    q = urllib.parse.urlencode({"sql": sql, "_shape": "array", **params, **extra})
    try:
        with urllib.request.urlopen(f"{base}/{database}.json?{q}", timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


status, rows = query("SELECT recommend(:u, :h, :c) AS ranked")
assert status == 200, (status, rows)
ranked = json.loads(rows[0]["ranked"])
assert sorted(ranked) == sorted(c["id"] for c in request["candidates"]), ranked

refusals = {
    "probe a path": "SELECT kvrec_load_model('x', '/etc/passwd')",
    "probe a missing path": "SELECT kvrec_load_model('x', '/no/such/file.gguf')",
    "unload the model in use": "SELECT kvrec_unload_model('default')",
}
refusals.update({f"flood {i}": f"SELECT kvrec_load_model('m{i}', '/tmp/m{i}.gguf')" for i in range(20)})
texts = set()
for label, sql in refusals.items():
    status, body = query(sql)
    text = json.dumps(body)
    assert status != 200 and "registry is locked" in text, (label, status, text)
    error = body.get("error") if isinstance(body, dict) else text
    texts.add(error.split(": ", 1)[1])
# One answer for every refusal (after the function's name): nothing about the paths leaks.
assert len(texts) == 1, texts

status, rows = query("SELECT recommend(:u, :h, :c) AS ranked")
assert status == 200 and json.loads(rows[0]["ranked"]) == ranked, (status, rows)
status, rows = query("SELECT name FROM kvrec_models()")
assert [r["name"] for r in rows] == ["default"], rows
print(f"datasette: recommend() serves {ranked}; {len(refusals)} load/unload attempts refused")
