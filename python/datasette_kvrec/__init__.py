"""datasette-kvrec: recommend() in Datasette's SQL box and JSON API.

Every connection gets the kvrec extension. Once per process the plugin makes one
kvrec_configure() call: it loads the configured models (by default the bundled model as
'default'), caps every call at Datasette's own time limit (sql_time_limit_ms), locks the
registry, and seals these settings, so that a visitor can neither load files, fill memory
with models, unload the model everyone uses, nor lift a cap.

    plugins:
      datasette-kvrec:
        models: {default: /srv/models/kvrec-default.gguf, shop: /srv/models/shop.gguf}
        lock: true        # the default; false lets visitors load models from KVREC_MODEL_DIR
        limits: {max_candidates: 200}   # any cap of kvrec_debug(); max_call_ms defaults
                                        # to sql_time_limit_ms
"""
import json
import sys
import threading

import kvrec
from datasette import hookimpl

_started = threading.Lock()
_done = False
_said = set()


def _say_once(line):
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


def settings(config, time_limit_ms):
    """The kvrec_configure() settings for the plugin's configuration."""
    limits = dict(config.get("limits") or {})
    if time_limit_ms:
        limits.setdefault("max_call_ms", int(time_limit_ms))
    return {
        "models": config.get("models") or {"default": kvrec.default_model()},
        "lock_models": bool(config.get("lock", True)),
        **limits,
    }


def _configure(conn, config, time_limit_ms):
    global _done
    with _started:
        if _done:
            return
        _done = True
        try:
            conn.execute(
                "SELECT kvrec_configure(?)", [json.dumps(settings(config, time_limit_ms))]
            ).fetchall()
        except Exception as e:  # sqlite3.Error: one line, and Datasette keeps serving
            print(f"datasette-kvrec: {e}", file=sys.stderr)


@hookimpl
def prepare_connection(conn, database, datasette):
    if not hasattr(conn, "enable_load_extension"):
        _say_once("datasette-kvrec: kvrec is not loaded: " + kvrec._NO_LOADING)
        return
    conn.enable_load_extension(True)
    try:
        conn.load_extension(kvrec.loadable_path())
    finally:
        conn.enable_load_extension(False)
    _configure(
        conn,
        datasette.plugin_config("datasette-kvrec") or {},
        datasette.setting("sql_time_limit_ms"),
    )
