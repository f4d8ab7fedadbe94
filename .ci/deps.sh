# Installs what a fresh Debian/Ubuntu machine lacks for kvrec's build and tests.
# Sourced by .ci/run and examples/demo.sh.
#   cmake, clang, libclang-dev: llama.cpp (llama-cpp-2) and bindgen (sqlite-loadable)
#   sqlite3: the CLI host the extension is tested in
#   python3 + the duckdb package (pinned): the DuckDB host the DuckDB extension is tested in
#   python3-venv: the wheel test's virtual environment (datasette, sqlite-utils, apsw from PyPI)
#     (the duckdb crate's bundled DuckDB would cost ~27 min of C++ build)
KVREC_DUCKDB_VERSION=2.0.1
kvrec_install_deps() {
  local need=()
  command -v cmake >/dev/null 2>&1 || need+=(cmake)
  command -v clang >/dev/null 2>&1 || need+=(clang)
  compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null || need+=(libclang-dev)
  command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
  command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
  # The wheel test installs into a venv of the system Python (its sqlite3 loads extensions).
  /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    return 1
  fi
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    echo "installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! python3 -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$KVREC_DUCKDB_VERSION')" 2>/dev/null; then
    echo "installing duckdb==$KVREC_DUCKDB_VERSION (python)" >&2
    python3 -m pip install -q --disable-pip-version-check "duckdb==$KVREC_DUCKDB_VERSION" 2>/dev/null \
      || python3 -m pip install -q --disable-pip-version-check --user --break-system-packages "duckdb==$KVREC_DUCKDB_VERSION"
  fi
}
kvrec_install_deps
