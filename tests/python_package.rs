//! The Python distribution as a user installs it: scripts/build_wheels.py builds the kvrec,
//! datasette-kvrec and sqlite-utils-kvrec wheels from the extension this test run built; they
//! are installed into a virtual environment of a Python whose sqlite3 can load extensions
//! (Debian's /usr/bin/python3), with pinned datasette, sqlite-utils, duckdb and apsw from PyPI,
//! and checked there (tests/python/). Datasette is served on 127.0.0.1 and queried over HTTP;
//! the test stops it even when a check fails. kvrec.ray runs on a two-node Ray cluster started
//! on 127.0.0.1 (one `ray start --head`, one `ray start --address`) in a network namespace of
//! its own (tests/python/ray_cluster.sh), stopped the same way.
//! Without that Python or PyPI the tests say so and pass, unless KVREC_REQUIRE_WHEEL is set
//! (CI sets it).

use kvrec_test_support as common;
use kvrec_test_support::run;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the checks run against, pinned.
const PINS: &[&str] = &[
    "datasette==0.65.5",
    "sqlite-utils==4.2.1",
    "duckdb==2.0.1",
    "apsw==3.54.1.0",
    "ray[data]==2.60.0",
];
/// The Python whose sqlite3 module can load extensions.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn required() -> bool {
    std::env::var_os("KVREC_REQUIRE_WHEEL").is_some()
}

/// A virtual environment with the pinned packages, cached under ~/.cache/kvrec between runs
/// (named by the pins, so changing a pin makes a new one); `None` when it cannot be made.
fn environment() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let key: String = PINS
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
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
        && pip_install(&python)
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

/// `datasette serve` of a one-table `dir/app.db` on a free port of 127.0.0.1, with the
/// plugin's defaults and `KVREC_MODEL_DIR` when given; returns once it listens.
fn serve_datasette(venv: &Path, dir: &Path, model_dir: Option<&Path>) -> (Served, u16) {
    let db = dir.join("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let port = free_port();
    let mut command = Command::new(venv.join("bin/datasette"));
    command
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(model_dir) = model_dir {
        command.env("KVREC_MODEL_DIR", model_dir);
    }
    let mut served = Served(command.spawn().expect("datasette starts"));
    wait_until_up(port, &mut served);
    (served, port)
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

/// The wheels built from this run's extension and installed into the environment, once per
/// test process: `(venv, dist)`, or `None` when skipped.
fn installed() -> Option<&'static (PathBuf, PathBuf)> {
    static INSTALLED: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            if !Path::new(SYSTEM_PYTHON).exists() {
                assert!(
                    !required(),
                    "KVREC_REQUIRE_WHEEL is set but {SYSTEM_PYTHON} is missing"
                );
                eprintln!("skipped: {SYSTEM_PYTHON} not found");
                return None;
            }
            let venv = environment()?;
            let dir = std::env::temp_dir().join(format!("kvrec-wheel-{}", std::process::id()));
            let dist = dir.join("dist");
            std::fs::create_dir_all(&dist).unwrap();
            let built = run(Command::new(SYSTEM_PYTHON)
                .arg(common::repo_root().join("scripts/build_wheels.py"))
                .arg("--lib")
                .arg(common::extension_path())
                .arg("--bin")
                .arg(common::finetune_binary())
                .arg("--strip")
                .arg("--out")
                .arg(&dist));
            let wheels: Vec<&str> = built.lines().filter(|l| l.ends_with(".whl")).collect();
            assert_eq!(wheels.len(), 3, "{built}");
            run(pip_install(&venv.join("bin/python"))
                .args(["--force-reinstall", "--no-deps"])
                .args(&wheels));
            Some((venv, dist))
        })
        .as_ref()
}

/// `python -m pip install -q`, quiet about pip's own version; the caller adds what to install.
fn pip_install(python: &Path) -> Command {
    let mut command = Command::new(python);
    command.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
    command
}

/// Held by the tests that start servers (Datasette, the Ray cluster), so that the attack's
/// time limits are measured on cores no other server is using.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn machine() -> std::sync::MutexGuard<'static, ()> {
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_wheels_install_and_serve_in_sqlite_duckdb_sqlite_utils_and_datasette() {
    let Some((venv, dist)) = installed() else {
        return;
    };
    let _machine = machine();
    let root = common::repo_root();
    let dir = scratch("wheel-check");
    let python = venv.join("bin/python");
    let request = write_request(&dir);
    let said = run(Command::new(&python)
        .arg(root.join("tests/python/check_package.py"))
        .arg(&request)
        .arg(dist));
    eprintln!("{said}");

    // A Python that cannot load extensions (pyenv's python3, where there is one) is told so.
    let target = dir.join("pyenv-site");
    let pyenv_python = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(':memory:'); sys.exit(hasattr(c, 'enable_load_extension'))"])
        .status()
        .is_ok_and(|s| s.success());
    if pyenv_python {
        // kvrec and sqlite-utils-kvrec with sqlite-utils itself: pure Python, any version.
        let wheels: Vec<PathBuf> = std::fs::read_dir(dist)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("kvrec-") || name.starts_with("sqlite_utils_kvrec-")
            })
            .collect();
        assert_eq!(wheels.len(), 2, "{wheels:?}");
        run(pip_install(&python)
            .arg("--target")
            .arg(&target)
            .arg(PINS[1])
            .args(&wheels));
        let said = run(Command::new("python3")
            .arg(root.join("tests/python/check_no_loading.py"))
            .env("PYTHONPATH", &target));
        eprintln!("{said}");
    }

    // Datasette on 127.0.0.1 with the plugin: models loaded, registry locked.
    let (served, port) = serve_datasette(venv, &dir, None);
    let said = run(Command::new(&python)
        .arg(root.join("tests/python/check_datasette.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("app")
        .arg(&request));
    eprintln!("{said}");
    drop(served);
}

/// The attack of tests/python/check_datasette_attack.py on a locked Datasette with default
/// settings (1 s time limit) and a `KVREC_MODEL_DIR` holding a model: every answer within the
/// time limit + 0.5 s, `select 1` within 1 s, threads and memory bounded, no server path shown.
#[test]
fn a_locked_datasette_survives_a_bounded_attack() {
    let Some((venv, _)) = installed() else {
        return;
    };
    let _machine = machine();
    let root = common::repo_root();
    let dir = scratch("datasette-attack");
    let request = write_request(&dir);
    let model_dir = dir.join("models");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::copy(
        root.join("models/kvrec-default.gguf"),
        model_dir.join("kvrec-default.gguf"),
    )
    .unwrap();
    let (served, port) = serve_datasette(venv, &dir, Some(&model_dir));
    let said = run(Command::new(venv.join("bin/python"))
        .arg(root.join("tests/python/check_datasette_attack.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("app")
        .arg(&request)
        .arg(served.0.id().to_string())
        .arg(&model_dir));
    eprintln!("{said}");
    drop(served);
}

/// Stops every Ray process of this machine when dropped: ray_cluster.sh stops its cluster
/// itself, and this is the net under it when the script is killed.
struct Cluster(PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.0)
            .args(["stop", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The items of the Ray test's catalog model.
const RAY_ITEMS: i64 = 60;

/// 2,000 requests over the catalog: 10 candidates and up to 19 history items each, varied by
/// request; a sequence-layout model reads ~20 tokens of them, so ranking is cheap and the test
/// measures Ray's machinery rather than the model.
fn many_requests() -> Vec<Value> {
    (0..2000i64)
        .map(|i| {
            let item = |j: i64| (i * 7 + j * 11) % RAY_ITEMS + 1;
            let history: Vec<Value> = (0..i % 20).map(|j| json!({"id": item(j)})).collect();
            let mut seen = std::collections::HashSet::new();
            let candidates: Vec<Value> = (0..)
                .map(|j| (i * 13 + j * 5) % RAY_ITEMS + 1)
                .filter(|id| seen.insert(*id))
                .take(10)
                .map(|id| json!({"id": id}))
                .collect();
            json!({"user": {"segment": format!("s{}", i % 3)}, "history": history, "candidates": candidates})
        })
        .collect()
}

#[test]
fn kvrec_ray_ranks_on_a_two_node_cluster_and_survives_a_killed_worker() {
    let Some((venv, _)) = installed() else {
        return;
    };
    let _machine = machine();
    let dir = scratch("ray");
    let model = dir.join("m.gguf");
    let items: Vec<i64> = (1..=RAY_ITEMS).collect();
    kvrec_llm::tiny::write_tiny_catalog_llama(&model, 7, &items, true, None).unwrap();
    let requests = many_requests();
    // What single-process recommend() answers, to compare every Ray ranking with.
    let db = common::connect(None);
    db.query_row(
        "SELECT kvrec_load_model('ray-expected', ?1)",
        [model.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    let expected = common::sqlite_rankings(&db, "ray-expected", &requests);
    let requests_path = dir.join("requests.jsonl");
    let lines: String = requests.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&requests_path, lines).unwrap();
    let expected_path = dir.join("expected.json");
    std::fs::write(&expected_path, Value::Array(expected).to_string()).unwrap();

    // The cluster lives in a network namespace of its own (see ray_cluster.sh).
    let isolated = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up"])
        .status()
        .is_ok_and(|s| s.success());
    if !isolated {
        // Never a cluster reachable from outside: without a namespace of its own the test
        // does not start one, and says so loudly (CI machines run it as root).
        eprintln!(
            "WARNING: skipped the Ray cluster test: `unshare -n` with `ip` (iproute2) is not \
             available here (needs root or user namespaces), and without a network namespace \
             Ray would listen on every interface"
        );
        return;
    }
    let cluster = Cluster(venv.join("bin/ray"));
    let root = common::repo_root();
    let said = run(Command::new("unshare")
        .args(["-n", "sh"])
        .arg(root.join("tests/python/ray_cluster.sh"))
        .arg(venv)
        .arg(free_port().to_string())
        .arg(venv.join("bin/python"))
        .arg(root.join("tests/python/check_ray.py"))
        .arg("auto")
        .arg(&model)
        .arg(&requests_path)
        .arg(&expected_path)
        .arg(dir.join("loads.log")));
    eprintln!("{said}");
    drop(cluster);
}
