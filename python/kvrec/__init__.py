"""kvrec: LLM-based recommendation inside SQLite and DuckDB.

The package carries the loadable extension (one library that is both the SQLite and the
DuckDB extension) and kvrec's default model, so that

    import sqlite3, kvrec
    conn = sqlite3.connect("app.db")
    kvrec.load(conn)                      # the extension, and the default model as 'default'
    conn.execute("SELECT recommend(:user, :history, :candidates)", request)

works without building anything. See docs/python.md in the kvrec repository.
"""
import pathlib

__all__ = [
    "loadable_path",
    "duckdb_extension_path",
    "default_model",
    "load",
    "load_duckdb",
]

_HERE = pathlib.Path(__file__).resolve().parent

_NO_LOADING = (
    "this Python's sqlite3 module was built without extension loading "
    "(SQLITE_OMIT_LOAD_EXTENSION, as pyenv builds it by default), so no SQLite extension can "
    "be loaded into its connections. Use apsw instead (pip install apsw; "
    "conn = apsw.Connection('app.db'); kvrec.load(conn)), or a Python whose sqlite3 can load "
    "extensions (Debian's and Ubuntu's /usr/bin/python3 can)"
)


def loadable_path() -> str:
    """The SQLite extension: pass it to load_extension() or the sqlite3 CLI's .load."""
    return str(_HERE / "libkvrec.so")


def duckdb_extension_path() -> str:
    """The DuckDB extension (unsigned: the connection needs allow_unsigned_extensions)."""
    return str(_HERE / "kvrec.duckdb_extension")


def default_model() -> str:
    """The path of the bundled default model (a GGUF served by recommend())."""
    return str(_HERE / "models" / "kvrec-default.gguf")


def _load_default(execute, name):
    if name is None:
        return
    loaded = [row[0] for row in execute("SELECT name FROM kvrec_models()")]
    if name not in loaded:
        list(execute("SELECT kvrec_load_model(?, ?)", (name, default_model())))


def load(conn, default_model_name: str = "default") -> None:
    """Loads the extension into `conn`, a `sqlite3` or `apsw` connection, and the bundled
    default model under `default_model_name` unless a model of that name is loaded already
    (models are shared by every connection of the process). Pass None to load no model."""
    module = type(conn).__module__
    if module.startswith("apsw"):
        conn.enable_load_extension(True)
        try:
            conn.load_extension(loadable_path())
        finally:
            conn.enable_load_extension(False)
        _load_default(lambda sql, args=(): conn.execute(sql, args), default_model_name)
        return
    if not hasattr(conn, "enable_load_extension"):
        raise RuntimeError("kvrec.load: " + _NO_LOADING)
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        conn.enable_load_extension(False)
    _load_default(lambda sql, args=(): conn.execute(sql, args).fetchall(), default_model_name)


def load_duckdb(con, default_model_name: str = "default") -> None:
    """Loads the DuckDB extension into `con` and the default model as in `load`. The
    extension is unsigned: open the connection with
    duckdb.connect(config={"allow_unsigned_extensions": "true"})."""
    try:
        con.execute(f"LOAD '{duckdb_extension_path()}'")
    except Exception as e:  # duckdb.Error, without importing duckdb for sqlite users
        if "unsigned" in str(e).lower() or "signature" in str(e).lower():
            raise RuntimeError(
                "kvrec.load_duckdb: DuckDB refuses unsigned extensions on this connection; "
                'open it with duckdb.connect(config={"allow_unsigned_extensions": "true"})'
            ) from e
        raise
    _load_default(lambda sql, args=(): con.execute(sql, list(args)).fetchall(), default_model_name)
