//! The own-data path end to end at tiny scale: `examples/shop/run.sh` builds a shop database
//! with text SKUs, fits a model to it from its recipe (data, training, export, report) and
//! serves `recommend_topk` from SQL; then the model is queried here with the shop's own ids in
//! and out.

use kvrec_test_support as common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::Connection;

fn run_example() -> PathBuf {
    let out = std::env::temp_dir().join(format!("kvrec-test-{}-shop", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let bin = Path::new(env!("CARGO_BIN_EXE_kvrec-finetune"));
    let printed = common::run(
        Command::new("bash")
            .arg(common::repo_root().join("examples/shop/run.sh"))
            .arg(&out)
            .env("KVREC_BIN", bin.parent().unwrap())
            .env("KVREC_EXTENSION", common::extension_path())
            .env("KVREC_SHOP_BUDGET", "40s"),
    );
    // fit's verdict against co-occurrence, whichever it is, and the SQL that serves it.
    assert!(printed.contains("tuned co-occurrence"), "{printed}");
    assert!(printed.contains("kvrec_load_model('fit', "), "{printed}");
    // The script's last step: SQL recommendations for two customers, in SKUs.
    assert!(printed.contains("C00013 bought SKU-"), "{printed}");
    assert!(printed.contains("→ next: ['SKU-"), "{printed}");
    out
}

fn skus(db: &Connection, sql: &str) -> Vec<String> {
    let text: String = db.query_row(sql, [], |r| r.get(0)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_shop_example_trains_and_serves_its_own_skus() {
    let out = run_example();
    let data = out.join("fit/data");
    for file in [
        "train.jsonl",
        "test.jsonl",
        "train_sequences.jsonl",
        "item_ids.json",
        "item_keys.jsonl",
    ] {
        assert!(data.join(file).exists(), "{file}");
    }
    assert!(!out.join("fit/data.partial").exists());
    assert!(out.join("fit/report.md").exists());
    let ids: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(data.join("item_ids.json")).unwrap())
            .unwrap();
    assert_eq!(ids.len(), 60);
    assert_eq!(ids[0], "SKU-1000", "dense ids follow the SKUs' order");
    let keys = std::fs::read_to_string(data.join("item_keys.jsonl")).unwrap();
    assert!(
        keys.lines().all(|line| line.contains("\"category=")),
        "every product has its category as a key:\n{keys}"
    );

    let db = common::connect(Some(&out.join("shop.db")));
    let model = out.join("fit/model.gguf");
    db.query_row(
        "SELECT kvrec_load_model('shop', ?1)",
        [model.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    let catalog: HashSet<String> = {
        let mut s = db.prepare("SELECT sku FROM products").unwrap();
        let rows = s.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let history = r#"[{"id":"SKU-1413"},{"id":"SKU-1350"},{"id":"SKU-1357"}]"#;
    let topk = format!("SELECT recommend_topk('shop', '{{}}', '{history}', 5)");
    let first = skus(&db, &topk);
    assert_eq!(first.len(), 5);
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 5, "distinct");
    for sku in &first {
        assert!(catalog.contains(sku), "{sku} is a product");
        assert!(
            !history.contains(sku.as_str()),
            "{sku} is not in the history"
        );
    }
    assert_eq!(skus(&db, &topk), first, "deterministic");

    // The table form gives the same SKUs, as text.
    let each: Vec<(String, String)> = {
        let mut s = db
            .prepare(&format!(
                "SELECT id, typeof(id) FROM recommend_topk_each('shop', '{{}}', '{history}', 5) ORDER BY rank"
            ))
            .unwrap();
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(
        each.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        first
    );
    assert!(each.iter().all(|(_, ty)| ty == "text"));

    // recommend() ranks the shop's own SKUs as candidates and answers with them.
    let candidates = r#"[{"id":"SKU-1364"},{"id":"SKU-1000"},{"id":"SKU-1007"}]"#;
    let ranked = skus(
        &db,
        &format!("SELECT recommend('shop', '{{}}', '{history}', '{candidates}')"),
    );
    let mut sorted = ranked.clone();
    sorted.sort();
    assert_eq!(sorted, ["SKU-1000", "SKU-1007", "SKU-1364"]);

    // An item the model never saw is an error that names it and the fix.
    let err = db
        .query_row(
            r#"SELECT recommend_topk('shop', '{}', '[{"id":"SKU-9999"}]', 5)"#,
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err();
    insta::assert_snapshot!("unknown_sku", err.to_string());
}
