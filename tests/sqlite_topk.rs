//! `recommend_topk()` and `recommend_topk_each()`: the whole catalog ranked in one prompt pass,
//! through the built SQLite extension on a tiny sequence-layout model with one token per item.

use kvrec_test_support as common;

use std::path::PathBuf;

use rusqlite::{params, Connection};
use serde_json::{json, Value};

/// The tiny model's catalog: ids with one, two and three digits, and gaps.
fn catalog() -> Vec<i64> {
    (1..=30).chain([45, 99, 100, 123, 317]).collect()
}

fn model(name: &str, item_tokens: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-topk-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    kvrec_llm::tiny::write_tiny_catalog_llama(&path, 11, &catalog(), item_tokens, None).unwrap();
    path
}

fn loaded(name: &str, item_tokens: bool) -> Connection {
    let db = common::connect(None);
    let path = model(name, item_tokens);
    db.query_row(
        "SELECT kvrec_load_model(?1, ?2)",
        params![name, path.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    db
}

fn history(ids: &[i64]) -> String {
    Value::from(ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()).to_string()
}

const SEEN: [i64; 4] = [3, 17, 100, 5];

/// `(id, score)` rows of a table function call.
fn ranked_rows(db: &Connection, sql: &str, args: impl rusqlite::Params) -> Vec<(i64, f64)> {
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn topk_ranks_the_unseen_catalog_as_recommend_ranks_it_as_candidates() {
    let db = loaded("topk-a", true);
    let seen = history(&SEEN);
    let unseen: Vec<i64> = catalog()
        .into_iter()
        .filter(|id| !SEEN.contains(id))
        .collect();
    let all = ranked_rows(
        &db,
        "SELECT id, score FROM recommend_topk_each('topk-a', '{}', ?1, 1000) ORDER BY rank",
        [&seen],
    );
    // Every catalog item not yet seen, once, and the scores a distribution over them.
    let mut ids: Vec<i64> = all.iter().map(|r| r.0).collect();
    ids.sort();
    assert_eq!(ids, unseen);
    let total: f64 = all.iter().map(|r| r.1.exp()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    assert!(all.windows(2).all(|w| w[0].1 >= w[1].1), "{all:?}");
    // recommend() over the same items as candidates: the same order and the same scores.
    let candidates = Value::from(
        unseen
            .iter()
            .map(|id| json!({"id": id}))
            .collect::<Vec<_>>(),
    )
    .to_string();
    let each = ranked_rows(
        &db,
        "SELECT id, score FROM recommend_each('topk-a', '{}', ?1, ?2) ORDER BY rank",
        [&seen, &candidates],
    );
    assert_eq!(each.len(), all.len());
    for (a, b) in all.iter().zip(&each) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-4, "{a:?} vs {b:?}");
    }
    // The scalar is the first k of that ranking.
    let top: String = db
        .query_row(
            "SELECT recommend_topk('topk-a', '{}', ?1, 5)",
            [&seen],
            |r| r.get(0),
        )
        .unwrap();
    let top: Vec<i64> = serde_json::from_str(&top).unwrap();
    assert_eq!(top, all[..5].iter().map(|r| r.0).collect::<Vec<_>>());
}

#[test]
fn keep_history_lets_seen_items_back_in_and_the_default_model_form_works() {
    let db = loaded("default", true);
    let seen = history(&SEEN);
    let kept = ranked_rows(
        &db,
        "SELECT id, score FROM recommend_topk_each('default', '{}', ?1, 1000, '{\"keep_history\": true}')",
        [&seen],
    );
    assert_eq!(kept.len(), catalog().len());
    assert!(SEEN.iter().all(|s| kept.iter().any(|r| r.0 == *s)));
    let short: String = db
        .query_row("SELECT recommend_topk('{}', ?1, 3)", [&seen], |r| r.get(0))
        .unwrap();
    let named: String = db
        .query_row(
            "SELECT recommend_topk('default', '{}', ?1, 3)",
            [&seen],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(short, named);
    let n_items: i64 = db
        .query_row(
            "SELECT n_items FROM kvrec_models() WHERE name = 'default'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n_items, catalog().len() as i64);
}

#[test]
fn topk_errors_name_the_cause_and_the_fix() {
    let db = loaded("topk-split", false);
    let plain = std::env::temp_dir().join(format!("kvrec-topk-plain-{}.gguf", std::process::id()));
    kvrec_llm::tiny::write_tiny_llama(&plain, 7, None).unwrap();
    db.query_row(
        "SELECT kvrec_load_model('topk-plain', ?1)",
        [plain.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    let error = |sql: &str| -> String {
        db.query_row(sql, [], |r| r.get::<_, String>(0))
            .unwrap_err()
            .to_string()
    };
    let no_catalog = error("SELECT recommend_topk('topk-plain', '{}', '[]', 3)");
    assert!(
        no_catalog.contains("has no item catalog") && no_catalog.contains("recommend()"),
        "{no_catalog}"
    );
    let no_tokens = error("SELECT recommend_topk('topk-split', '{}', '[]', 3)");
    assert!(
        no_tokens.contains("does not give each item its own token")
            && no_tokens.contains("--sequence-window"),
        "{no_tokens}"
    );
    let k0 = error("SELECT recommend_topk('topk-split', '{}', '[]', 0)");
    assert!(k0.contains("argument 'k' must be between 1"), "{k0}");
    let k_text = error("SELECT recommend_topk('topk-split', '{}', '[]', 'ten')");
    assert!(
        k_text.contains("argument 'k' must be an INTEGER"),
        "{k_text}"
    );
    let option =
        error("SELECT recommend_topk('topk-split', '{}', '[]', 3, '{\"mode\": \"generate\"}')");
    assert!(option.contains("unknown option 'mode'"), "{option}");
    let table = error("SELECT * FROM recommend_topk_each('topk-plain', '{}', '[]', 3)");
    assert!(
        table.starts_with("recommend_topk_each: model 'topk-plain'"),
        "{table}"
    );
}
