//! `recommend()` and the model registry through the built extension, on the tiny test model.
//! The registry is process-wide, so each test uses its own model names.

use kvrec_test_support as common;

use std::path::PathBuf;
use std::sync::OnceLock;

use rusqlite::{params, Connection};
use serde_json::Value;

use common::{CANDIDATES, HISTORY, USER};
use kvrec_core::TemplateSpec;

fn open() -> Connection {
    common::connect(None)
}

fn tiny(template: Option<&TemplateSpec>, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-sqlite-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    kvrec_llm::tiny::write_tiny_llama(&path, 7, template).unwrap();
    path
}

fn model_path() -> &'static str {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| tiny(None, "plain")).to_str().unwrap()
}

fn load(db: &Connection, name: &str) {
    db.query_row(
        "SELECT kvrec_load_model(?1, ?2)",
        [name, model_path()],
        |_| Ok(()),
    )
    .unwrap();
}

fn recommend(db: &Connection, model: &str) -> Vec<i64> {
    let json: String = db
        .query_row(
            "SELECT recommend(?1, ?2, ?3, ?4)",
            params![model, USER, HISTORY, CANDIDATES],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[test]
fn kvrec_load_model_lists_and_unloads() {
    let db = open();
    let info: Value = serde_json::from_str(
        &db.query_row(
            "SELECT kvrec_load_model('listed', ?1, '{\"n_ctx\": 1024}')",
            [model_path()],
            |r| r.get::<_, String>(0),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(info["architecture"], "llama");
    assert_eq!(info["n_ctx"], 1024);
    let row: (String, i64, i64, String) = db
        .query_row("SELECT architecture, n_ctx, template_version, template_source FROM kvrec_models() WHERE name = 'listed'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    let version = i64::from(kvrec_core::template::TEMPLATE_VERSION);
    assert_eq!(row, ("llama".into(), 1024, version, "default".into()));
    let name: String = db
        .query_row("SELECT kvrec_unload_model('listed')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "listed");
    let left: i64 = db
        .query_row(
            "SELECT count(*) FROM kvrec_models() WHERE name = 'listed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn recommend_ranks_every_candidate_and_matches_recommend_each() {
    let db = open();
    load(&db, "each");
    let ids = recommend(&db, "each");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [661, 914, 1193, 2355, 3408]);
    assert_eq!(recommend(&db, "each"), ids, "same inputs, same answer");
    let mut stmt = db
        .prepare("SELECT rank, id, score, dropped_history FROM recommend_each('each', ?1, ?2, ?3) ORDER BY rank")
        .unwrap();
    let rows: Vec<(i64, i64, f64, i64)> = stmt
        .query_map(params![USER, HISTORY, CANDIDATES], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), ids);
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(rows.windows(2).all(|w| w[0].2 >= w[1].2), "scores descend");
    assert!(rows.iter().all(|r| r.3 == 0));
    let top2: String = db
        .query_row(
            "SELECT recommend('each', ?1, ?2, ?3, '{\"k\": 2}')",
            params![USER, HISTORY, CANDIDATES],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(serde_json::from_str::<Vec<i64>>(&top2).unwrap(), ids[..2]);
    db.query_row("SELECT kvrec_unload_model('each')", [], |_| Ok(()))
        .unwrap();
}

#[test]
fn recommend_with_three_arguments_uses_the_default_model() {
    let db = open();
    let err = db
        .query_row(
            "SELECT recommend(?1, ?2, ?3)",
            params![USER, HISTORY, CANDIDATES],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("no model named 'default'"), "{err}");
    load(&db, "default");
    let json: String = db
        .query_row(
            "SELECT recommend(?1, ?2, ?3)",
            params![USER, HISTORY, CANDIDATES],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<i64>>(&json).unwrap(),
        recommend(&db, "default")
    );
    db.query_row("SELECT kvrec_unload_model('default')", [], |_| Ok(()))
        .unwrap();
}

#[test]
fn concurrent_calls_give_the_serial_answers() {
    let db = open();
    load(&db, "concurrent");
    let requests: Vec<String> = (0..5)
        .map(|shift| {
            let mut c: Vec<Value> = serde_json::from_str(CANDIDATES).unwrap();
            c.rotate_left(shift);
            serde_json::to_string(&c).unwrap()
        })
        .collect();
    let answer = |db: &Connection, c: &str| -> String {
        db.query_row(
            "SELECT recommend('concurrent', ?1, ?2, ?3)",
            params![USER, HISTORY, c],
            |r| r.get(0),
        )
        .unwrap()
    };
    let serial: Vec<String> = requests.iter().map(|c| answer(&db, c)).collect();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (requests, serial) = (&requests, &serial);
            scope.spawn(move || {
                let db = open();
                for i in 0..200 {
                    let k = (i + t) % requests.len();
                    assert_eq!(answer(&db, &requests[k]), serial[k], "thread {t} call {i}");
                }
            });
        }
    });
    db.query_row("SELECT kvrec_unload_model('concurrent')", [], |_| Ok(()))
        .unwrap();
}

#[test]
fn a_template_in_the_model_is_used() {
    let db = open();
    let spec = TemplateSpec {
        instruction: "Rank.".into(),
        ..TemplateSpec::default()
    };
    let path = tiny(Some(&spec), "templated");
    db.query_row(
        "SELECT kvrec_load_model('templated', ?1)",
        [path.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    let source: String = db
        .query_row(
            "SELECT template_source FROM kvrec_models() WHERE name = 'templated'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(source, "model");
    // A shorter instruction gives a shorter prompt: the model's template was rendered.
    load(&db, "untemplated");
    let tokens = |model: &str| -> i64 {
        db.query_row(
            "SELECT prompt_tokens FROM recommend_each(?1, ?2, ?3, ?4) LIMIT 1",
            params![model, USER, HISTORY, CANDIDATES],
            |r| r.get(0),
        )
        .unwrap()
    };
    let expected_drop = (TemplateSpec::default().instruction.len() - "Rank.".len()) as i64;
    assert!(
        tokens("untemplated") - tokens("templated") >= expected_drop / 2,
        "{} vs {}",
        tokens("untemplated"),
        tokens("templated")
    );
    for name in ["templated", "untemplated"] {
        db.query_row("SELECT kvrec_unload_model(?1)", [name], |_| Ok(()))
            .unwrap();
    }
}

/// `gguf` with its `general.architecture` value replaced by `arch` (same length as `llama`).
fn with_architecture(gguf: &[u8], arch: &[u8; 5]) -> Vec<u8> {
    let key = b"general.architecture";
    let at = gguf
        .windows(key.len())
        .position(|w| w == key)
        .expect("the architecture key");
    // key, then the value's type (u32) and length (u64), then the value.
    let value = at + key.len() + 4 + 8;
    assert_eq!(&gguf[value..value + 5], b"llama");
    let mut out = gguf.to_vec();
    out[value..value + 5].copy_from_slice(arch);
    out
}

#[test]
fn model_errors_are_clear() {
    let db = open();
    load(&db, "errors");
    let dir = std::env::temp_dir().join(format!("kvrec-sqlite-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("empty.gguf"), b"").unwrap();
    std::fs::write(dir.join("text.gguf"), b"not a model").unwrap();
    let bytes = std::fs::read(model_path()).unwrap();
    std::fs::write(dir.join("truncated.gguf"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(
        dir.join("unknown-arch.gguf"),
        with_architecture(&bytes, b"llamb"),
    )
    .unwrap();
    let d = dir.display();
    let cases = [
        (
            "unknown model",
            "SELECT recommend('nope', '{}', '[]', '[{\"id\": 1}]')".to_string(),
        ),
        (
            "missing file",
            "SELECT kvrec_load_model('m', '/no/such/model.gguf')".to_string(),
        ),
        (
            "empty file",
            format!("SELECT kvrec_load_model('m', '{d}/empty.gguf')"),
        ),
        (
            "not a GGUF",
            format!("SELECT kvrec_load_model('m', '{d}/text.gguf')"),
        ),
        (
            "architecture llama.cpp lacks",
            format!("SELECT kvrec_load_model('m', '{d}/unknown-arch.gguf')"),
        ),
        (
            "adapter file missing",
            format!(
                "SELECT kvrec_load_model('m', '{}', '{{\"lora\": \"/no/such/adapter.gguf\"}}')",
                model_path()
            ),
        ),
        (
            "adapter is not text",
            format!(
                "SELECT kvrec_load_model('m', '{}', '{{\"lora\": 5}}')",
                model_path()
            ),
        ),
        (
            "adapter is a whole model",
            format!(
                "SELECT kvrec_load_model('m', '{}', '{{\"lora\": \"{}\"}}')",
                model_path(),
                model_path()
            ),
        ),
        (
            "registered twice",
            format!("SELECT kvrec_load_model('errors', '{}')", model_path()),
        ),
        (
            "unload unknown",
            "SELECT kvrec_unload_model('never-loaded')".to_string(),
        ),
        (
            "load option per call",
            "SELECT recommend('errors', '{}', '[]', '[{\"id\": 1}]', '{\"n_ctx\": 4096}')"
                .to_string(),
        ),
        (
            "n_ctx zero",
            format!(
                "SELECT kvrec_load_model('m', '{}', '{{\"n_ctx\": 0}}')",
                model_path()
            ),
        ),
        (
            "n_threads huge",
            format!(
                "SELECT kvrec_load_model('m', '{}', '{{\"n_threads\": 1000000}}')",
                model_path()
            ),
        ),
        (
            "bad mode",
            "SELECT recommend('errors', '{}', '[]', '[{\"id\": 1}]', '{\"mode\": \"fast\"}')"
                .to_string(),
        ),
        (
            "empty candidates",
            "SELECT recommend('errors', '{}', '[]', '[]')".to_string(),
        ),
        (
            "NULL model",
            "SELECT recommend(NULL, '{}', '[]', '[{\"id\": 1}]')".to_string(),
        ),
        (
            "table function without model",
            "SELECT * FROM recommend_each(NULL, '{}', '[]', '[{\"id\": 1}]')".to_string(),
        ),
    ];
    let mut report = String::new();
    for (label, sql) in &cases {
        let outcome = match db.query_row(sql, [], |r| r.get::<_, Option<String>>(0)) {
            Ok(v) => format!("OK {v:?}"),
            Err(e) => e.to_string(),
        };
        report.push_str(&format!("{label}:\n  {outcome}\n"));
    }
    // Other tests load models concurrently: the list of loaded names varies from run to run.
    insta::with_settings!({filters => vec![(d.to_string().as_str(), "[dir]"), (model_path(), "[model]"), (r"\(loaded: [^)]*\)", "(loaded: [...])")]}, {
        insta::assert_snapshot!(report);
    });
    // A truncated file is refused by llama.cpp; its wording varies by version, so check the frame.
    let err = db
        .query_row(
            &format!("SELECT kvrec_load_model('m', '{d}/truncated.gguf')"),
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("kvrec_load_model: llama.cpp could not load"),
        "{err}"
    );
    assert_eq!(
        recommend(&db, "errors").len(),
        5,
        "the host and the model still work"
    );
    db.query_row("SELECT kvrec_unload_model('errors')", [], |_| Ok(()))
        .unwrap();
}
