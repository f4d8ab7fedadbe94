"""Run by a Python whose sqlite3 cannot load extensions (pyenv's default build): kvrec.load
must say so and name the way out, and apsw (when importable) must work instead."""
import sqlite3
import sys

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
