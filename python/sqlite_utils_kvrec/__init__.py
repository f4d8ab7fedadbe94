"""sqlite-utils-kvrec: the kvrec extension and its default model in every sqlite-utils
connection, so `sqlite-utils app.db "SELECT recommend(...)"` works. Under a Python that
cannot load SQLite extensions it says so in one line and leaves every other command working."""
import sys

import kvrec
import sqlite_utils

_said = False


@sqlite_utils.hookimpl
def prepare_connection(conn):
    global _said
    if not hasattr(conn, "enable_load_extension"):
        if not _said:
            _said = True
            print("sqlite-utils-kvrec: kvrec is not loaded: " + kvrec._NO_LOADING, file=sys.stderr)
        return
    kvrec.load(conn)
