"""Run by a Python whose sqlite3 cannot load extensions (pyenv's default build): kvrec.load
must say so and name the way out, and apsw (when importable) must work instead; with the
sqlite-utils plugin installed, sqlite-utils commands keep working and the plugin says why it
is idle in one line."""
import os
import sqlite3
import subprocess
import sys
import tempfile

import kvrec

conn = sqlite3.connect(":memory:")
if hasattr(conn, "enable_load_extension"):
    sys.exit("this Python's sqlite3 can load extensions; the check needs one that cannot")
try:
    kvrec.load(conn)
    raise AssertionError("kvrec.load succeeded without extension loading")
except RuntimeError as e:
    text = str(e)
    assert "without extension loading" in text and "apsw" in text, text
print("a sqlite3 without extension loading gets:", text[:100], "…")

db = os.path.join(tempfile.mkdtemp(), "t.db")
sqlite3.connect(db).execute("CREATE TABLE t(x)")
tables = subprocess.run(
    [sys.executable, "-c", "from sqlite_utils.cli import cli; cli()", "tables", db],
    capture_output=True, text=True,
)
assert tables.returncode == 0, tables.stderr
assert '"table": "t"' in tables.stdout, tables.stdout
said = tables.stderr.strip().splitlines()
assert len(said) == 1 and said[0].startswith("sqlite-utils-kvrec: kvrec is not loaded"), said
print("sqlite-utils without extension loading:", said[0][:80], "…")
