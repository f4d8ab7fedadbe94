"""datasette-kvrec: recommend() in Datasette's SQL box and JSON API.

Every connection gets the kvrec extension. Once per process the plugin loads the configured
models (by default the bundled model as 'default') and then calls kvrec_lock_models(), so
that visitors cannot load files, fill memory with models or unload the one everyone uses.

    plugins:
      datasette-kvrec:
        models: {default: /srv/models/kvrec-default.gguf, shop: /srv/models/shop.gguf}
        lock: true        # the default; false leaves kvrec_load_model() open to every visitor
"""
import threading

import kvrec
from datasette import hookimpl

_started = threading.Lock()
_done = False


def _configure(conn, config):
    global _done
    with _started:
        if _done:
            return
        models = config.get("models") or {"default": kvrec.default_model()}
        loaded = {row[0] for row in conn.execute("SELECT name FROM kvrec_models()").fetchall()}
        for name, path in models.items():
            if name not in loaded:
                conn.execute("SELECT kvrec_load_model(?, ?)", [name, path]).fetchall()
        if config.get("lock", True):
            conn.execute("SELECT kvrec_lock_models()").fetchall()
        _done = True


@hookimpl
def prepare_connection(conn, database, datasette):
    if not hasattr(conn, "enable_load_extension"):
        raise RuntimeError("datasette-kvrec: " + kvrec._NO_LOADING)
    conn.enable_load_extension(True)
    try:
        conn.load_extension(kvrec.loadable_path())
    finally:
        conn.enable_load_extension(False)
    _configure(conn, datasette.plugin_config("datasette-kvrec") or {})
