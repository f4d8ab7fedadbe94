"""Checks kvrec.duckdb_extension inside a real DuckDB (the `duckdb` Python package).

Run by tests/duckdb_extension.rs, which builds the inputs and compares the recommendations
written to OUT with SQLite's recommend() on the same requests and model:

    python3 check_extension.py EXTENSION MODEL_A MODEL_B REQUESTS_JSONL OUT_JSON

MODEL_A and MODEL_B are two different tiny GGUF models (for the reload check).
"""
import json
import math
import sys

import duckdb

ext, model_a, model_b, requests_path, out_path = sys.argv[1:6]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")


def one(sql, params=None):
    return con.execute(sql, params or []).fetchall()[0][0]


def fails(sql, *needles):
    try:
        con.execute(sql).fetchall()
    except duckdb.Error as e:
        text = str(e)
        for needle in needles:
            assert needle in text, f"{needle!r} not in error {text!r}"
        return text
    raise AssertionError(f"no error from {sql}")


# Model-free functions, with JSON text and with DuckDB STRUCT / LIST values alike.
assert one("SELECT kvrec_version()").startswith("v")
assert "devices" in one("SELECT kvrec_debug()")
assert json.loads(one("SELECT kvrec_template()"))["format"] == "kvrec-instructmk"
as_json = one("""SELECT kvrec_prompt('{"gender": "F", "age": "25-34"}',
    '[{"title": "Heat (1995)", "rating": 4, "genres": "Action"}]',
    '[{"id": 1, "title": "A"}, {"id": 22, "title": "B"}]')""")
as_struct = one("""SELECT kvrec_prompt({'gender': 'F', 'age': '25-34'},
    [{'title': 'Heat (1995)', 'rating': 4, 'genres': 'Action'}],
    [{'id': 1, 'title': 'A'}, {'id': 22, 'title': 'B'}])""")
assert as_json == as_struct, (as_json, as_struct)
assert "Candidate set: [1: A; 22: B]" in as_json
assert one("SELECT kvrec_target('[{\"id\": 1}, {\"id\": 22}]', 22)").startswith("22")
parsed = json.loads(one("SELECT kvrec_parse_answer('22, 1', [{'id': 1}, {'id': 22}])"))
assert parsed["valid"] and parsed["ids"] == [22, 1], parsed
augmented = json.loads(one("""SELECT kvrec_augment({'gender': 'F'}, [],
    [{'id': 1, 'title': 'A'}, {'id': 2, 'title': 'B'}, {'id': 3, 'title': 'C'}], 'SC', 7)"""))
assert sorted(c["id"] for c in augmented["candidates"]) == [1, 2, 3]

# Errors name the function, the cause and the row.
fails("SELECT kvrec_prompt('{', '[]', '[]')", "kvrec_prompt", "not valid JSON", "row 1")
fails("SELECT kvrec_augment('{}', '[]', '[]', 'XX', 1)", "kvrec_augment")
fails("SELECT recommend('nope', '{}', '[]', '[{\"id\": 1}]')", "no model named 'nope'", "kvrec_load_model")
fails(f"SELECT kvrec_load_model('m', '{ext}.missing')", "does not exist")

# Models: load, list, recommend over a table.
info = json.loads(one(f"SELECT kvrec_load_model('a', '{model_a}')"))
assert info["architecture"] == "llama"
assert con.execute("SELECT name, architecture FROM kvrec_models()").fetchall() == [("a", "llama")]
# The columns of SQLite's kvrec_models(), in its order (docs/sql.md).
columns = [d[0] for d in con.execute("SELECT * FROM kvrec_models()").description]
assert columns == ["name", "path", "architecture", "size_bytes", "n_params", "n_ctx", "n_ctx_train",
                   "n_gpu_layers", "template_version", "template_source", "n_items"], columns
requests = [json.loads(line) for line in open(requests_path)]
con.execute("CREATE TABLE requests(i INTEGER, u VARCHAR, h VARCHAR, c VARCHAR)")
con.executemany("INSERT INTO requests VALUES (?, ?, ?, ?)",
                [(i, json.dumps(r["user"]), json.dumps(r["history"]), json.dumps(r["candidates"]))
                 for i, r in enumerate(requests)])
rows = con.execute("SELECT i, recommend('a', u, h, c) FROM requests ORDER BY i").fetchall()
ranked = [ids for _, ids in rows]
for r, ids in zip(requests, ranked):
    assert sorted(ids) == sorted(c["id"] for c in r["candidates"]), ids
top2 = con.execute("SELECT recommend('a', u, h, c, {'k': 2}) FROM requests ORDER BY i").fetchall()
assert [t[0] for t in top2] == [ids[:2] for ids in ranked]

# recommend_each: the same ranking as rows, scores a distribution over the candidates.
r0 = requests[0]
each = con.execute("SELECT rank, id, score, dropped_history, prompt_tokens FROM recommend_each('a', ?, ?, ?)",
                   [json.dumps(r0["user"]), json.dumps(r0["history"]), json.dumps(r0["candidates"])]).fetchall()
assert [row[1] for row in each] == ranked[0], (each, ranked[0])
assert [row[0] for row in each] == list(range(1, len(each) + 1))
assert abs(sum(math.exp(row[2]) for row in each) - 1) < 1e-6
assert all(row[4] > 0 and row[3] == 0 for row in each)
best = con.execute("SELECT id FROM recommend_each('a', ?, ?, ?, options := '{\"k\": 1}')",
                   [json.dumps(r0["user"]), json.dumps(r0["history"]), json.dumps(r0["candidates"])]).fetchall()
assert best == [(ranked[0][0],)], best
fails("SELECT * FROM recommend_each('a', '{}', '[]', '[]')", "recommend_each", "candidate")

# The default model and the three-argument form.
con.execute(f"SELECT kvrec_load_model('default', '{model_a}')")
default_rows = [x[0] for x in con.execute("SELECT recommend(u, h, c) FROM requests ORDER BY i").fetchall()]
assert default_rows == ranked

# A bad row fails the query, naming the row; the good rows alone still score.
con.execute("INSERT INTO requests VALUES (999, '{}', '[]', 'not json')")
fails("SELECT recommend('a', u, h, c) FROM requests ORDER BY i", "recommend", "candidates", "row")
con.execute("DELETE FROM requests WHERE i = 999")

# Volatile: the same prepared query after a reload with another model answers anew.
query = "SELECT list(recommend('v', u, h, c) ORDER BY i) FROM requests"
con.execute(f"SELECT kvrec_load_model('v', '{model_a}')")
before = one(query)
con.execute("SELECT kvrec_unload_model('v')")
con.execute(f"SELECT kvrec_load_model('v', '{model_b}')")
after = one(query)
assert before == ranked
assert before != after, "a reloaded model must not serve the old answers"

# Concurrency: a table scored at DuckDB's default thread count while another connection
# loads and unloads a second model; the rows must be the serial answers.
import threading
import time

con.execute("CREATE TABLE big AS SELECT r.*, k FROM requests r, range(40) t(k)")
loads = []
def load_second_model():
    other = con.cursor()
    for n in range(5):
        other.execute(f"SELECT kvrec_load_model('second', '{model_b}')").fetchall()
        other.execute("SELECT recommend('second', u, h, c) FROM requests LIMIT 2").fetchall()
        other.execute("SELECT kvrec_unload_model('second')").fetchall()
        loads.append(time.monotonic())
loader = threading.Thread(target=load_second_model)
started = time.monotonic()
loader.start()
scored = con.execute("SELECT i, recommend('a', u, h, c) FROM big").fetchall()
finished = time.monotonic()
loader.join(timeout=120)
assert not loader.is_alive(), "loading a second model deadlocked"
assert len(loads) == 5, loads
assert loads[0] < finished, f"the loads did not overlap the scoring: {loads}, {finished}"
assert len(scored) == 40 * len(requests)
assert all(ids == ranked[i] for i, ids in scored), "concurrent scoring changed answers"
threads = one("SELECT current_setting('threads')")

# Cut short: a call's timeout_ms ends the query with an error, and the model serves the next
# query. (DuckDB's own interrupt is not visible to a scalar function: DuckDB looks at it
# between row groups, so a chunk's calls are bounded by their time limit alone.)
con.execute("CREATE TABLE huge AS SELECT r.*, k FROM requests r, range(20000) t(k)")
started = time.monotonic()
fails("SELECT count(recommend('a', u, h, c, '{\"timeout_ms\": 50}')) FROM huge",
      "time limit of 50 ms", "fewer candidates or rows")
cut_after = time.monotonic() - started
assert cut_after < 2.0, f"a 50 ms limit ended the query after {cut_after:.2f} s"
again = [x[0] for x in con.execute("SELECT recommend('a', u, h, c) FROM requests ORDER BY i").fetchall()]
assert again == ranked

json.dump({"ranked": ranked, "threads": threads, "duckdb": one("SELECT version()")}, open(out_path, "w"))
print(f"duckdb {one('SELECT version()')}: all checks passed on {len(requests)} requests; "
      f"{len(scored)} rows scored on {threads} threads while a second model loaded 5 times; "
      f"a 240,000-row query with a 50 ms limit cut after {cut_after:.2f} s")
