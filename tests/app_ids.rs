//! Models that answer with the app's own ids (`kvrec.item_ids`): 64-bit and negative integers
//! and text SKUs go in and come out of every ranking function unchanged, in SQLite and in
//! DuckDB, while the model itself reads dense ids.

use kvrec_test_support as common;

use std::path::PathBuf;

use kvrec_core::ItemId;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-app-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny catalog model over dense ids 1..=n that maps them to `app`.
fn model(name: &str, app: &[ItemId]) -> PathBuf {
    let path = dir().join(format!("{name}.gguf"));
    let dense: Vec<i64> = (1..=app.len() as i64).collect();
    kvrec_llm::tiny::write_tiny_catalog_llama(&path, 21, &dense, true, Some(app)).unwrap();
    path
}

fn ints() -> Vec<ItemId> {
    [i64::MIN + 1, -5, 0, 42, 1 << 40, i64::MAX]
        .into_iter()
        .map(ItemId::Int)
        .collect()
}

fn skus() -> Vec<ItemId> {
    ["SKU-a", "SKU-b", "SKU-c", "SKU-d", "7", "é-1"]
        .into_iter()
        .map(|s| ItemId::Text(s.into()))
        .collect()
}

fn loaded(models: &[(&str, &[ItemId])]) -> Connection {
    let db = common::connect(None);
    for (name, app) in models {
        db.query_row(
            "SELECT kvrec_load_model(?1, ?2)",
            params![name, model(name, app).to_str().unwrap()],
            |_| Ok(()),
        )
        .unwrap();
    }
    db
}

fn json_of(db: &Connection, sql: &str, args: impl rusqlite::Params) -> Value {
    let text: String = db.query_row(sql, args, |r| r.get(0)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn items(ids: &[ItemId]) -> String {
    Value::from(
        ids.iter()
            .map(|id| json!({"id": Value::from(id.clone())}))
            .collect::<Vec<_>>(),
    )
    .to_string()
}

#[test]
fn integer_and_text_app_ids_round_trip_through_every_ranking_function() {
    let (ints, skus) = (ints(), skus());
    let db = loaded(&[("ints", &ints), ("skus", &skus)]);
    for (name, app) in [("ints", &ints), ("skus", &skus)] {
        let history = items(&app[..2]);
        let topk = json_of(
            &db,
            "SELECT recommend_topk(?1, '{}', ?2, 10)",
            params![name, history],
        );
        // Every id not in the history, exactly as the app wrote it (i64::MAX stays exact).
        let mut got: Vec<Value> = topk.as_array().unwrap().clone();
        got.sort_by_key(|v| v.to_string());
        let mut want: Vec<Value> = app[2..].iter().cloned().map(Value::from).collect();
        want.sort_by_key(|v| v.to_string());
        assert_eq!(got, want, "{name}");
        // recommend() over the same items as candidates ranks them in the same order.
        let ranked = json_of(
            &db,
            "SELECT recommend(?1, '{}', ?2, ?3)",
            params![name, history, items(&app[2..])],
        );
        assert_eq!(ranked, topk, "{name}");
    }
    // Integers given as digits (and digits as integers) find their item.
    let as_text = json_of(
        &db,
        r#"SELECT recommend('ints', '{}', '[]', '[{"id":"42"},{"id":-5}]')"#,
        [],
    );
    assert_eq!(as_text.as_array().unwrap().len(), 2);
    let err = db
        .query_row(
            r#"SELECT recommend('skus', '{}', '[]', '[{"id":"SKU-a"},{"id":"nope"}]')"#,
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("candidates[1].id \"nope\" is not an item model 'skus' knows"),
        "{err}"
    );
}

#[test]
fn duckdb_returns_integer_app_ids_as_bigint_and_text_ones_from_the_table_functions() {
    if !common::duckdb_available() {
        return;
    }
    let dir = dir();
    let extension = common::duckdb_extension(&dir);
    let (ints, skus) = (ints(), skus());
    let spec = json!({
        "models": {
            "ints": model("duck-ints", &ints),
            "skus": model("duck-skus", &skus),
        },
        "cases": [
            {"sql": "recommend_topk('ints', '{}', ?, 10)", "args": [items(&ints[..2])]},
            {"sql": "recommend_topk('skus', '{}', ?, 10)", "args": [items(&skus[..2])]},
            {"query": "SELECT id, typeof(id) FROM recommend_topk_each('skus', '{}', ?, 10) ORDER BY rank",
             "args": [items(&skus[..2])]},
            {"query": "SELECT id, typeof(id) FROM recommend_topk_each('ints', '{}', ?, 10) ORDER BY rank",
             "args": [items(&ints[..2])]},
        ]
    });
    let outcomes = common::run_duckdb_cases(&extension, &dir.join("unused.gguf"), &spec, &dir);
    // The registry is process-wide: the other test holds 'ints' and 'skus'.
    let sqlite = loaded(&[("d-ints", &ints), ("d-skus", &skus)]);
    let sqlite_topk = |name: &str, app: &[ItemId]| {
        json_of(
            &sqlite,
            "SELECT recommend_topk(?1, '{}', ?2, 10)",
            params![name, items(&app[..2])],
        )
    };
    // LIST(BIGINT) holds 64-bit ids exactly, in SQLite's order.
    let list: Value = serde_json::from_str(outcomes[0]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(list, sqlite_topk("d-ints", &ints));
    // Text ids cannot be a LIST(BIGINT): the error names the table function to use.
    let error = outcomes[1]["error"].as_str().unwrap();
    assert!(error.contains("use recommend_topk_each()"), "{error}");
    // …which returns them as VARCHAR, in the same order as SQLite's recommend_topk().
    let rows = outcomes[2]["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r[1] == "VARCHAR"), "{rows:?}");
    let ids: Vec<Value> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(Value::from(ids), sqlite_topk("d-skus", &skus));
    let rows = outcomes[3]["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r[1] == "BIGINT"), "{rows:?}");
}
