//! The DuckDB extension in a real DuckDB: the footer is appended with the project's script,
//! tests/duckdb/check_extension.py runs every function inside the `duckdb` Python package
//! (pinned in .ci/deps.sh), and its recommendations must equal SQLite's recommend() on the
//! same requests and model. Without that package the test says so and passes, unless
//! KVREC_REQUIRE_DUCKDB is set (CI sets it).

use kvrec_test_support as common;
use kvrec_test_support::run;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use common::{duckdb_available, CANDIDATES, HISTORY, USER};

/// Requests built from the fixture: candidates rotated, history cut, a few ids added.
fn requests() -> Vec<Value> {
    let user: Value = serde_json::from_str(USER).unwrap();
    let history: Vec<Value> = serde_json::from_str(HISTORY).unwrap();
    let candidates: Vec<Value> = serde_json::from_str(CANDIDATES).unwrap();
    (0..12)
        .map(|i| {
            let mut c = candidates.clone();
            let shift = i % c.len();
            c.rotate_left(shift);
            for extra in 0..(i % 4) {
                c.push(json!({"id": 5000 + 17 * i + extra, "title": format!("Extra {extra}")}));
            }
            json!({"user": user, "history": history[..(i % (history.len() + 1))], "candidates": c})
        })
        .collect()
}

#[test]
fn the_duckdb_extension_matches_sqlite() {
    if !duckdb_available() {
        eprintln!("skipped: python3 has no duckdb package (pip install duckdb==2.0.1)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("kvrec-duckdb-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model_a = dir.join("a.gguf");
    let model_b = dir.join("b.gguf");
    kvrec_llm::tiny::write_tiny_llama(&model_a, 7, None).unwrap();
    kvrec_llm::tiny::write_tiny_llama(&model_b, 8, None).unwrap();
    let extension = common::duckdb_extension(&dir);
    let root = common::repo_root();
    let requests = requests();
    let jsonl: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let requests_path = dir.join("requests.jsonl");
    std::fs::write(&requests_path, jsonl).unwrap();
    let out = dir.join("out.json");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let said = run(Command::new("python3")
        .arg(root.join("tests/duckdb/check_extension.py"))
        .args([
            path(&extension),
            path(&model_a),
            path(&model_b),
            path(&requests_path),
            path(&out),
        ]));
    eprintln!("{said}");
    let ranked: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let db = common::connect(None);
    db.query_row(
        "SELECT kvrec_load_model('duck-a', ?1)",
        [path(&model_a)],
        |_| Ok(()),
    )
    .unwrap();
    let sqlite = common::sqlite_rankings(&db, "duck-a", &requests);
    for (i, expected) in sqlite.iter().enumerate() {
        assert_eq!(
            &ranked["ranked"][i], expected,
            "request {i}: DuckDB vs SQLite"
        );
    }
}
