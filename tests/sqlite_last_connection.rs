//! Closing the last connection that loaded the extension must not unload it from under the
//! threads that used it: SQLite dlcloses extensions with their connection, and a thread that
//! exits after that runs its thread-exit destructors. Its own test binary, so that no other
//! test's connection keeps the library loaded meanwhile.

use kvrec_test_support as common;

use rusqlite::params;

use common::{CANDIDATES, HISTORY, USER};

fn recommend(db: &rusqlite::Connection) -> String {
    db.query_row(
        "SELECT recommend('m', ?1, ?2, ?3)",
        params![USER, HISTORY, CANDIDATES],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn threads_exit_cleanly_after_the_last_connection_closes() {
    let dir = std::env::temp_dir().join(format!("kvrec-last-conn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    kvrec_llm::tiny::write_tiny_llama(&path, 7, None).unwrap();
    let path = path.to_str().unwrap().to_string();

    let first = std::thread::spawn(move || {
        let db = common::connect(None);
        db.query_row("SELECT kvrec_load_model('m', ?1)", [&path], |_| Ok(()))
            .unwrap();
        let ids = recommend(&db);
        drop(db); // the only connection: SQLite dlcloses the extension here
        ids
    });
    // Before the fix the thread's exit jumped into unmapped code (SIGSEGV).
    let ids = first.join().unwrap();

    // Loaded again in a fresh connection, the process-wide registry is still there.
    let db = common::connect(None);
    assert_eq!(recommend(&db), ids);
}
