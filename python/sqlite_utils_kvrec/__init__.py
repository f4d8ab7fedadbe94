"""sqlite-utils-kvrec: the kvrec extension and its default model in every sqlite-utils
connection, so `sqlite-utils app.db "SELECT recommend(...)"` works."""
import kvrec
import sqlite_utils


@sqlite_utils.hookimpl
def prepare_connection(conn):
    kvrec.load(conn)
