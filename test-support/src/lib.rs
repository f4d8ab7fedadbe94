//! Test helpers shared by the workspace's tests (a dev-dependency of each crate): the
//! MovieLens-shaped fixture request, the extension this test run built, a connection with it
//! loaded, and the shared data beside the checkout.

use std::path::{Path, PathBuf};

use kvrec_core::Request;

pub const USER: &str = r#"{"gender":"female","age":"25-34","occupation":"programmer"}"#;

pub const HISTORY: &str = r#"[
  {"id":1,"title":"Toy Story (1995)","rating":5,"genres":"Animation|Children's|Comedy"},
  {"id":260,"title":"Star Wars: Episode IV - A New Hope (1977)","rating":4,"genres":"Action|Adventure|Fantasy|Sci-Fi"},
  {"id":1196,"title":"Empire Strikes Back, The (1980)","rating":4,"genres":["Action","Adventure","Drama","Sci-Fi","War"]},
  {"id":2028,"title":"Saving Private Ryan (1998)","rating":3,"genres":"Action|Drama|War"}
]"#;

pub const CANDIDATES: &str = r#"[
  {"id":1193,"title":"One Flew Over the Cuckoo's Nest (1975)"},
  {"id":661,"title":"James and the Giant Peach (1996)"},
  {"id":914,"title":"My Fair Lady (1964)"},
  {"id":3408,"title":"Erin Brockovich (2000)"},
  {"id":2355,"title":"Bug's Life, A (1998)"}
]"#;

pub fn request() -> Request {
    Request::from_json_texts(USER, HISTORY, CANDIDATES).expect("fixture request parses")
}

/// The extension cargo built for this test run. `cargo test` leaves the fresh cdylib in
/// `target/<profile>/deps` (only `cargo build` copies it up a level), so look there first.
pub fn extension_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let file = format!(
        "{}kvrec{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let candidates = [
        deps.join(&file),
        deps.parent().expect("target/<profile>").join(&file),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{file} not built next to {}; run `cargo build`",
                deps.display()
            )
        })
}

/// `kvrec-finetune` as cargo built it for this test run (`target/<profile>/`), for tests
/// outside its own crate (where `CARGO_BIN_EXE_kvrec-finetune` is not set).
pub fn finetune_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let binary = profile.join(format!("kvrec-finetune{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is not built; run `cargo build --workspace`",
        binary.display()
    );
    binary
}

/// The workspace root, whichever member's tests include this module. Read at run time, not
/// with `env!`: cargo reuses a cached test binary built in another checkout of the workspace,
/// and it must look in this one.
pub fn repo_root() -> PathBuf {
    let manifest =
        PathBuf::from(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"));
    manifest
        .ancestors()
        .find(|dir| dir.join("migrations").is_dir())
        .expect("the workspace root holds migrations/")
        .to_path_buf()
}

/// A connection to `path` (`:memory:` when `None`) with the built extension loaded, as a host
/// application would load it.
pub fn connect(path: Option<&std::path::Path>) -> rusqlite::Connection {
    let db = match path {
        Some(p) => rusqlite::Connection::open(p),
        None => rusqlite::Connection::open_in_memory(),
    }
    .unwrap();
    // SAFETY: loading the extension this workspace just built; loading is switched off after.
    unsafe {
        db.load_extension_enable().unwrap();
        db.load_extension(extension_path(), None::<&str>)
            .expect("extension loads");
        db.load_extension_disable().unwrap();
    }
    db
}

/// Whether python3 can import the `duckdb` package the DuckDB tests run in. Without it they
/// say so and pass, unless KVREC_REQUIRE_DUCKDB is set (CI sets it), which makes this panic.
pub fn duckdb_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("KVREC_REQUIRE_DUCKDB").is_some() {
        panic!("KVREC_REQUIRE_DUCKDB is set but python3 cannot import duckdb; run .ci/deps.sh");
    }
    ok
}

/// `../shared/data/movielens/<name>` beside the checkout, where CI and developers keep it;
/// `None` when it is absent, unless KVREC_REQUIRE_SHARED_DATA is set (CI), which panics.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    present_or_required(
        repo_root().join("../shared/data/movielens").join(name),
        "KVREC_REQUIRE_SHARED_DATA",
        "put MovieLens under ../shared/data",
    )
}

/// `path` when it exists. Otherwise `None` (noted on stderr; the caller skips or falls back), unless the
/// environment variable `require` is set — CI sets it where skipping would hide a gap — and
/// then it panics with `fix`.
pub fn present_or_required(path: PathBuf, require: &str, fix: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{} is missing and {require} is set; {fix}",
        path.display()
    );
    eprintln!("note: {} not found; {fix}", path.display());
    None
}

/// The tiny MovieLens-layout fixture the training tests build their rows from.
pub fn ml_tiny() -> PathBuf {
    repo_root().join("tests/fixtures/ml-tiny")
}

/// Writes `dir/kvrec.duckdb_extension` from this test run's extension with the project's
/// script (the DuckDB metadata footer appended) and returns its path.
pub fn duckdb_extension(dir: &std::path::Path) -> PathBuf {
    let out = dir.join("kvrec.duckdb_extension");
    let made = std::process::Command::new("python3")
        .arg(repo_root().join("scripts/duckdb_extension.py"))
        .arg("--lib")
        .arg(extension_path())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        made.status.success(),
        "scripts/duckdb_extension.py failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    out
}

/// Runs SQL cases in DuckDB with the extension (tests/duckdb/run_cases.py; `spec` is its
/// CASES_JSON, `model` loaded as 'h' unless the spec names models) and returns each case's
/// outcome: `{"ok": …, "rows": […], "columns": […]}` or `{"error": …}`. DuckDB must survive
/// them all.
pub fn run_duckdb_cases(
    extension: &std::path::Path,
    model: &std::path::Path,
    spec: &serde_json::Value,
    dir: &std::path::Path,
) -> Vec<serde_json::Value> {
    let cases = dir.join("cases.json");
    std::fs::write(&cases, spec.to_string()).unwrap();
    let out = dir.join("outcomes.json");
    let run = std::process::Command::new("python3")
        .arg(repo_root().join("tests/duckdb/run_cases.py"))
        .arg(extension)
        .arg(model)
        .arg(&cases)
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "DuckDB did not survive:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// SQLite `recommend(model, user, history, candidates)` of each request object (`user`,
/// `history`, `candidates` as JSON values) on `db`: what other hosts are compared with.
pub fn sqlite_rankings(
    db: &rusqlite::Connection,
    model: &str,
    requests: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    requests
        .iter()
        .map(|r| {
            let text: String = db
                .query_row(
                    "SELECT recommend(?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        model,
                        r["user"].to_string(),
                        r["history"].to_string(),
                        r["candidates"].to_string()
                    ],
                    |row| row.get(0),
                )
                .unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

/// Runs `command`, asserting it succeeds; returns its stdout and stderr together.
pub fn run(command: &mut std::process::Command) -> String {
    let out = command.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}
