//! Closing the model registry for hosts that serve SQL to strangers: paths confined to
//! KVREC_MODEL_DIR (with errors that do not reveal whether a file exists) and the one-way
//! kvrec_lock_models(). The lock is process-wide, so this file holds one test.

use kvrec_test_support as common;

use rusqlite::Connection;

fn error(db: &Connection, sql: &str, arg: &str) -> String {
    db.query_row(sql, [arg], |r| r.get::<_, String>(0))
        .unwrap_err()
        .to_string()
}

#[test]
fn model_paths_stay_inside_the_model_dir_and_the_lock_is_one_way() {
    let root = std::env::temp_dir().join(format!("kvrec-lock-{}", std::process::id()));
    let dir = root.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let inside = dir.join("m.gguf");
    kvrec_llm::tiny::write_tiny_llama(&inside, 7, None).unwrap();
    let outside = root.join("outside.gguf");
    kvrec_llm::tiny::write_tiny_llama(&outside, 7, None).unwrap();
    let link = dir.join("link.gguf");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    // Inside the directory: a folder, a text file and a truncated GGUF.
    std::fs::create_dir_all(dir.join("folder.gguf")).unwrap();
    std::fs::write(dir.join("notes.gguf"), "not a model").unwrap();
    let bytes = std::fs::read(&inside).unwrap();
    std::fs::write(dir.join("cut.gguf"), &bytes[..bytes.len() / 2]).unwrap();
    // SAFETY: set before any thread of this test process reads the environment.
    unsafe { std::env::set_var("KVREC_MODEL_DIR", &dir) };

    let db = common::connect(None);
    let load = "SELECT kvrec_load_model('m', ?1)";
    db.query_row(load, [inside.to_str().unwrap()], |_| Ok(()))
        .unwrap();
    // Outside, missing, escaping with '..', a link that leads out, and inside the directory
    // a folder, a text file, a truncated GGUF or a missing file: one answer for all.
    let refusals: Vec<String> = [
        outside.clone(),
        root.join("missing.gguf"),
        dir.join("../outside.gguf"),
        link,
        "/etc/passwd".into(),
        dir.join("folder.gguf"),
        dir.join("notes.gguf"),
        dir.join("cut.gguf"),
        dir.join("missing.gguf"),
    ]
    .iter()
    .map(|p| error(&db, "SELECT kvrec_load_model('x', ?1)", p.to_str().unwrap()))
    .collect();
    for refusal in &refusals {
        assert_eq!(refusal, &refusals[0]);
    }
    assert!(
        refusals[0].contains("not a loadable model inside the model directory")
            && refusals[0].contains("KVREC_MODEL_DIR")
            && !refusals[0].contains(dir.to_str().unwrap()),
        "{}",
        refusals[0]
    );
    // Unlocked, kvrec_models() shows where each model came from.
    let path: String = db
        .query_row(
            "SELECT path FROM kvrec_models() WHERE name = 'm'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(path, inside.to_str().unwrap());
    let adapter = error(
        &db,
        "SELECT kvrec_load_model('y', ?1, json_object('lora', '/etc/passwd'))",
        inside.to_str().unwrap(),
    );
    assert_eq!(adapter, refusals[0]);

    // The lock: loading and unloading refuse, serving goes on.
    db.query_row("SELECT kvrec_lock_models()", [], |_| Ok(()))
        .unwrap();
    let locked = error(
        &db,
        "SELECT kvrec_load_model('z', ?1)",
        inside.to_str().unwrap(),
    );
    assert!(locked.contains("registry is locked"), "{locked}");
    let unload = error(&db, "SELECT kvrec_unload_model(?1)", "m");
    assert!(unload.contains("registry is locked"), "{unload}");
    let ranked: String = db
        .query_row(
            "SELECT recommend('m', ?1, ?2, ?3)",
            [common::USER, common::HISTORY, common::CANDIDATES],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(serde_json::from_str::<Vec<i64>>(&ranked).unwrap().len(), 5);
    // Locking again is harmless, and the lock holds on every connection.
    let other = common::connect(None);
    other
        .query_row("SELECT kvrec_lock_models()", [], |_| Ok(()))
        .unwrap();
    let again = error(&other, "SELECT kvrec_unload_model(?1)", "m");
    assert!(again.contains("registry is locked"), "{again}");
    // Locked, callers may be strangers: the file name, never the server's directories.
    let path: String = other
        .query_row(
            "SELECT path FROM kvrec_models() WHERE name = 'm'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(path, "m.gguf");
}
