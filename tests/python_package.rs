//! The Python distribution as a user installs it: scripts/build_wheels.py builds the kvrec,
//! datasette-kvrec and sqlite-utils-kvrec wheels from the extension this test run built; they
//! are installed into a virtual environment of a Python whose sqlite3 can load extensions
//! (Debian's /usr/bin/python3), with pinned datasette, sqlite-utils, duckdb and apsw from PyPI,
//! and checked there (tests/python/). Datasette is served on 127.0.0.1 and queried over HTTP;
//! the test stops it even when a check fails. Without that Python or PyPI the test says so
//! and passes, unless KVREC_REQUIRE_WHEEL is set (CI sets it).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the checks run against, pinned.
const PINS: &[&str] = &[
    "datasette==0.65.5",
    "sqlite-utils==4.2.1",
    "duckdb==2.0.1",
    "apsw==3.54.1.0",
];
/// The Python whose sqlite3 module can load extensions.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn run(command: &mut Command) -> String {
    let out = command.output().expect("command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

fn required() -> bool {
    std::env::var_os("KVREC_REQUIRE_WHEEL").is_some()
}

/// A virtual environment with the pinned packages, cached under ~/.cache/kvrec between runs
/// (named by the pins, so changing a pin makes a new one); `None` when it cannot be made.
fn environment() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let key: String = PINS.join("-").replace(['=', '.'], "_");
    let venv = home.join(".cache/kvrec").join(format!("venv-{key}"));
    let python = venv.join("bin/python");
    let ready = venv.join(".ready");
    if ready.exists() {
        return Some(venv);
    }
    let made = Command::new(SYSTEM_PYTHON)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    let installed = made
        && Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(PINS)
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            !required(),
            "KVREC_REQUIRE_WHEEL is set but {SYSTEM_PYTHON} could not make a venv with {PINS:?}"
        );
        eprintln!(
            "skipped: no venv of {SYSTEM_PYTHON} with {PINS:?} (needs python3-venv and PyPI)"
        );
        return None;
    }
    std::fs::write(ready, "").unwrap();
    Some(venv)
}

/// A running `datasette serve`, stopped when dropped (a failing check included).
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_up(port: u16, served: &mut Served) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = served.0.try_wait().unwrap() {
            panic!("datasette exited before serving: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "datasette did not listen on 127.0.0.1:{port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_request(dir: &Path) -> PathBuf {
    let request = serde_json::json!({
        "user": serde_json::from_str::<serde_json::Value>(common::USER).unwrap(),
        "history": serde_json::from_str::<serde_json::Value>(common::HISTORY).unwrap(),
        "candidates": serde_json::from_str::<serde_json::Value>(common::CANDIDATES).unwrap(),
    });
    let path = dir.join("request.json");
    std::fs::write(&path, request.to_string()).unwrap();
    path
}

#[test]
fn the_wheels_install_and_serve_in_sqlite_duckdb_sqlite_utils_and_datasette() {
    if !Path::new(SYSTEM_PYTHON).exists() {
        assert!(
            !required(),
            "KVREC_REQUIRE_WHEEL is set but {SYSTEM_PYTHON} is missing"
        );
        eprintln!("skipped: {SYSTEM_PYTHON} not found");
        return;
    }
    let Some(venv) = environment() else { return };
    let root = common::repo_root();
    let dir = std::env::temp_dir().join(format!("kvrec-wheel-{}", std::process::id()));
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let built = run(Command::new(SYSTEM_PYTHON)
        .arg(root.join("scripts/build_wheels.py"))
        .arg("--lib")
        .arg(common::extension_path())
        .arg("--strip")
        .arg("--out")
        .arg(&dist));
    let wheels: Vec<&str> = built.lines().filter(|l| l.ends_with(".whl")).collect();
    assert_eq!(wheels.len(), 3, "{built}");
    let python = venv.join("bin/python");
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
        ])
        .args(&wheels));
    let request = write_request(&dir);
    let said = run(Command::new(&python)
        .arg(root.join("tests/python/check_package.py"))
        .arg(&request));
    eprintln!("{said}");

    // A Python that cannot load extensions (pyenv's python3, where there is one) is told so.
    let target = dir.join("pyenv-site");
    let pyenv_python = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(':memory:'); sys.exit(hasattr(c, 'enable_load_extension'))"])
        .status()
        .is_ok_and(|s| s.success());
    if pyenv_python {
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
            ])
            .arg(&target)
            .arg(wheels[0]));
        let said = run(Command::new("python3")
            .arg(root.join("tests/python/check_no_loading.py"))
            .env("PYTHONPATH", &target));
        eprintln!("{said}");
    }

    // Datasette on 127.0.0.1 with the plugin: models loaded, registry locked.
    let db = dir.join("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let port = free_port();
    let mut served = Served(
        Command::new(venv.join("bin/datasette"))
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("datasette starts"),
    );
    wait_until_up(port, &mut served);
    let said = run(Command::new(&python)
        .arg(root.join("tests/python/check_datasette.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("app")
        .arg(&request));
    eprintln!("{said}");
    drop(served);
}
