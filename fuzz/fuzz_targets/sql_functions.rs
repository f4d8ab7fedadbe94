#![no_main]
// The model-free SQL functions through a real SQLite with the built extension loaded
// (KVREC_EXTENSION, default ../target/release/libkvrec.so): any argument bytes, as text or
// blob, must give a result or an SQL error, never a crash.
use std::sync::{Mutex, OnceLock};

use rusqlite::{types::Value, Connection};

fn db() -> &'static Mutex<Connection> {
    static DB: OnceLock<Mutex<Connection>> = OnceLock::new();
    DB.get_or_init(|| {
        let path = std::env::var("KVREC_EXTENSION")
            .unwrap_or_else(|_| "../target/release/libkvrec.so".into());
        let db = Connection::open_in_memory().unwrap();
        // SAFETY: loading the workspace's own extension.
        unsafe {
            db.load_extension_enable().unwrap();
            db.load_extension(&path, None::<&str>).expect("build the extension first");
        }
        Mutex::new(db)
    })
}

const CALLS: &[&str] = &[
    "SELECT kvrec_prompt(?1, ?2, ?3, ?4)",
    "SELECT kvrec_augment(?1, ?2, ?3, ?5, 7, ?4)",
    "SELECT kvrec_target(?3, 1, ?4)",
    "SELECT kvrec_parse_answer(?5, ?3)",
    "SELECT count(*) FROM kvrec_augmentations(?1, ?2, ?3, ?5, 7, 2, ?4)",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut fields: Vec<Value> = data
        .splitn(5, |&b| b == 0xFF)
        .map(|f| match std::str::from_utf8(f) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Blob(f.to_vec()),
        })
        .collect();
    fields.resize(5, Value::Null);
    let db = db().lock().unwrap();
    for sql in CALLS {
        let mut stmt = db.prepare_cached(sql).unwrap();
        let _ = stmt.query_row(rusqlite::params_from_iter(fields.iter()), |r| {
            r.get::<_, Value>(0)
        });
    }
});
