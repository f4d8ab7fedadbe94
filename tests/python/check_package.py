"""Checks the installed kvrec wheel as a user would use it (run by tests/python_package.rs in a
virtual environment holding the wheels, datasette, sqlite-utils, duckdb and apsw):

    python check_package.py REQUEST_JSON DIST

REQUEST_JSON holds {"user":…, "history":…, "candidates":…}; every host must rank it alike.
DIST is the folder the wheels were built into.
"""
import glob
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import zipfile

import apsw
import duckdb
import kvrec

request = json.load(open(sys.argv[1]))
args = [json.dumps(request["user"]), json.dumps(request["history"]), json.dumps(request["candidates"])]
ids = sorted(c["id"] for c in request["candidates"])

# The wheel as built: its files, and a tag that matches its library's ELF class and machine.
(wheel,) = glob.glob(os.path.join(sys.argv[2], "kvrec-*.whl"))
with zipfile.ZipFile(wheel) as z:
    names = sorted(n for n in z.namelist() if not n.startswith("kvrec-"))
    elf = z.read("kvrec/libkvrec.so")[:20]
assert names == ["kvrec/__init__.py", "kvrec/bin/kvrec-finetune", "kvrec/cli.py",
                 "kvrec/kvrec.duckdb_extension", "kvrec/libkvrec.so",
                 "kvrec/models/kvrec-default.gguf", "kvrec/ray.py"], names
assert elf[:4] == b"\x7fELF" and elf[4] == 2, "not a 64-bit ELF library"
elf_arch = {0x3E: "x86_64", 0xB7: "aarch64"}[int.from_bytes(elf[18:20], "little")]
assert wheel.endswith(f"-py3-none-linux_{elf_arch}.whl"), (wheel, elf_arch)

# The installed wheel's platform tag names the architecture the library was built for.
lib = pathlib.Path(kvrec.loadable_path())
machine = int.from_bytes(lib.read_bytes()[18:20], "little")
arch = {0x3E: "x86_64", 0xB7: "aarch64"}[machine]
wheel_file = glob.glob(str(lib.parent.parent / "kvrec-*.dist-info" / "WHEEL"))[0]
tag = [l.split(": ")[1] for l in open(wheel_file).read().splitlines() if l.startswith("Tag: ")][0]
assert tag == f"py3-none-linux_{arch}", (tag, arch)
assert os.uname().machine == arch, "a wheel for another architecture was installed"

# The `kvrec` console command is kvrec-finetune: training ships with serving.
command = pathlib.Path(sys.executable).parent / "kvrec"
said = subprocess.run([str(command), "fit", "--help"], capture_output=True, text=True)
assert said.returncode == 0, said.stderr
assert "--budget" in said.stdout and "recipe" in said.stdout.lower(), said.stdout
said = subprocess.run([str(command), "fit", "no-such-recipe.toml", "--out", "x"],
                      capture_output=True, text=True)
assert said.returncode != 0 and "no-such-recipe.toml" in said.stderr, said.stderr

# sqlite3: the extension and the bundled default model in two lines.
conn = sqlite3.connect(":memory:")
kvrec.load(conn)
ranked = json.loads(conn.execute("SELECT recommend(?, ?, ?)", args).fetchone()[0])
assert sorted(ranked) == ids, ranked
(name, path, n_items), = conn.execute("SELECT name, path, n_items FROM kvrec_models()").fetchall()
assert (name, path) == ("default", kvrec.default_model()), (name, path)
# A second connection shares the process's models: loading again is skipped, not an error.
other = sqlite3.connect(":memory:")
kvrec.load(other)
assert json.loads(other.execute("SELECT recommend(?, ?, ?)", args).fetchone()[0]) == ranked

# apsw: the same call, the same answer.
a = apsw.Connection(":memory:")
kvrec.load(a)
assert json.loads(a.execute("SELECT recommend(?, ?, ?)", args).fetchone()[0]) == ranked

# DuckDB: unsigned needs saying so; then LIST(BIGINT), the same ranking.
try:
    kvrec.load_duckdb(duckdb.connect())
    raise AssertionError("an unsigned extension loaded without allow_unsigned_extensions")
except RuntimeError as e:
    assert "allow_unsigned_extensions" in str(e), e
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
kvrec.load_duckdb(con)
assert con.execute("SELECT recommend(?, ?, ?)", args).fetchone()[0] == ranked

# sqlite-utils: the plugin loads the extension and the default model in its connections.
bin_dir = pathlib.Path(sys.executable).parent
out = subprocess.run(
    [str(bin_dir / "sqlite-utils"), "memory", "SELECT recommend(:u, :h, :c) AS r",
     "-p", "u", args[0], "-p", "h", args[1], "-p", "c", args[2]],
    capture_output=True, text=True, check=True).stdout
assert json.loads(json.loads(out)[0]["r"]) == ranked, out
print(f"kvrec wheel ({tag}): sqlite3, apsw, duckdb and sqlite-utils rank alike: {ranked}")
