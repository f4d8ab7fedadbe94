//! Recipes over an app's own tables: ids of every kind become dense item ids and back, CSV
//! files work as tables, and every bad input is an error naming the row, column or fix
//! (snapshotted), with nothing half-written left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvrec_core::ItemId;
use kvrec_finetune::recipe;
use rusqlite::Connection;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-test-{}-recipe-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `users` users who each buy `per_user` items in a cycle over `ids`, one a day.
fn orders(ids: &[&str], users: usize, per_user: usize) -> String {
    let mut sql = String::from("CREATE TABLE orders(customer TEXT, sku, at TEXT, stars);\n");
    for u in 0..users {
        for t in 0..per_user {
            let item = ids[(u + t) % ids.len()];
            sql.push_str(&format!(
                "INSERT INTO orders VALUES ('c{u}', {item}, '2024-01-{:02} 10:00:00', {});\n",
                t + 1,
                1 + (u + t) % 5
            ));
        }
    }
    sql
}

/// A folder with `shop.db` built from `sql` and `recipe.toml` with `recipe`.
fn app(name: &str, sql: &str, recipe: &str) -> PathBuf {
    let dir = scratch(name);
    Connection::open(dir.join("shop.db"))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
    std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
    dir
}

const RECIPE: &str = r#"
[source]
sqlite = "shop.db"
[interactions]
sql = "SELECT customer AS user, sku AS item, at AS time, stars AS rating FROM orders"
"#;

const SKUS: [&str; 6] = ["'b-2'", "'a-1'", "'c-3'", "'d-4'", "'e-5'", "'f-6'"];

#[test]
fn text_64_bit_and_negative_ids_map_to_dense_ids_in_their_order() {
    let ids = ["9223372036854775807", "-5", "0", "'x'", "'10'", "42"];
    let dir = app("ids", &orders(&ids, 8, 6), RECIPE);
    let data = recipe::read(&dir.join("recipe.toml")).unwrap();
    assert_eq!(
        data.item_ids.as_deref().unwrap(),
        [
            ItemId::Int(-5),
            ItemId::Int(0),
            ItemId::Int(42),
            ItemId::Int(i64::MAX),
            ItemId::Text("10".into()),
            ItemId::Text("x".into()),
        ]
    );
    assert_eq!(data.events.len(), 48);
    // c0's first order is ids[0] (i64::MAX, dense 4) on 2024-01-01 10:00 UTC, rated 1.
    let first = data.events[0];
    assert_eq!((first.user, first.item, first.rating), (1, 4, Some(1)));
    assert_eq!(first.time, 1_704_103_200);
}

#[test]
fn data_writes_the_id_map_and_csv_files_work_as_tables() {
    let dir = scratch("csv");
    let mut csv = String::from("customer,sku,at\n");
    for u in 0..8 {
        for t in 0..6 {
            csv.push_str(&format!(
                "u{u},SKU-{},{}\n",
                (u + t) % 6,
                1_700_000_000 + t * 60
            ));
        }
    }
    std::fs::write(dir.join("orders.csv"), csv).unwrap();
    std::fs::write(
        dir.join("recipe.toml"),
        r#"
[source]
csv = { orders = "orders.csv" }
[interactions]
sql = "SELECT customer AS user, sku AS item, at AS time FROM orders"
"#,
    )
    .unwrap();
    let out = dir.join("data");
    let bin = env!("CARGO_BIN_EXE_kvrec-finetune");
    kvrec_test_support::run(
        Command::new(bin)
            .args(["data", "--recipe"])
            .arg(dir.join("recipe.toml"))
            .arg("--out")
            .arg(&out)
            .args(["--variants", "none", "--copies", "0", "--test-users", "4"]),
    );
    let ids: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("item_ids.json")).unwrap()).unwrap();
    assert_eq!(ids, ["SKU-0", "SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5"]);
    let test = std::fs::read_to_string(out.join("test.jsonl")).unwrap();
    assert_eq!(test.lines().count(), 4);
    // Requests carry dense ids; no rating key when the recipe has none.
    let first: serde_json::Value = serde_json::from_str(test.lines().next().unwrap()).unwrap();
    assert!(first["history"][0]["id"].is_i64());
    assert!(first["history"][0].get("rating").is_none());
}

/// `data --recipe` on `dir`'s recipe: its error text, with the folder's path replaced.
fn data_error(dir: &Path) -> String {
    let out = dir.join("data");
    let result = Command::new(env!("CARGO_BIN_EXE_kvrec-finetune"))
        .args(["data", "--recipe"])
        .arg(dir.join("recipe.toml"))
        .arg("--out")
        .arg(&out)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!result.status.success());
    assert!(!out.exists(), "a failed run leaves no output folder");
    String::from_utf8_lossy(&result.stderr)
        .replace(&dir.display().to_string(), "<dir>")
        .trim()
        .to_string()
}

#[test]
fn bad_input_is_an_error_that_names_the_row_the_column_or_the_fix() {
    let good = orders(&SKUS, 8, 6);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "missing_column",
            good.clone(),
            RECIPE.replace("at AS time", "at AS ordered_at"),
        ),
        (
            "null_item",
            format!("{good}UPDATE orders SET sku = NULL WHERE rowid = 7;"),
            RECIPE.into(),
        ),
        (
            "empty_user",
            format!("{good}UPDATE orders SET customer = '' WHERE rowid = 3;"),
            RECIPE.into(),
        ),
        (
            "duplicate_event",
            format!("{good}INSERT INTO orders SELECT * FROM orders WHERE rowid = 2;"),
            RECIPE.into(),
        ),
        (
            "bad_time",
            format!("{good}UPDATE orders SET at = 'last tuesday' WHERE rowid = 5;"),
            RECIPE.into(),
        ),
        (
            "missing_table",
            good.clone(),
            RECIPE.replace("FROM orders", "FROM purchases"),
        ),
        ("too_few_events", orders(&SKUS, 8, 3), RECIPE.into()),
        (
            "no_rows",
            good.clone(),
            RECIPE.replace("orders\"", "orders WHERE 0\""),
        ),
        (
            "unknown_key",
            good.clone(),
            RECIPE.replace("[interactions]", "[interaction]"),
        ),
        (
            "missing_database",
            good.clone(),
            RECIPE.replace("shop.db", "gone.db"),
        ),
        (
            "items_twice",
            good.clone(),
            format!("{RECIPE}[items]\nsql = \"SELECT sku AS item, 'x' AS title FROM orders\"\n"),
        ),
    ];
    for (name, sql, recipe) in cases {
        let dir = app(name, &sql, &recipe);
        insta::assert_snapshot!(name, data_error(&dir));
    }
}

#[test]
fn an_interrupted_run_keeps_the_previous_output_whole() {
    let dir = app("rerun", &orders(&SKUS, 8, 6), RECIPE);
    let bin = env!("CARGO_BIN_EXE_kvrec-finetune");
    let data = |recipe: &Path| {
        Command::new(bin)
            .args(["data", "--recipe"])
            .arg(recipe)
            .arg("--out")
            .arg(dir.join("data"))
            .args(["--variants", "none", "--copies", "0"])
            .output()
            .unwrap()
    };
    assert!(data(&dir.join("recipe.toml")).status.success());
    let before = std::fs::read_to_string(dir.join("data/test.jsonl")).unwrap();
    // A second run that fails part way (its items query is broken) leaves the first intact.
    std::fs::write(
        dir.join("broken.toml"),
        format!("{RECIPE}[items]\nsql = \"SELECT nothing FROM orders\"\n"),
    )
    .unwrap();
    assert!(!data(&dir.join("broken.toml")).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("data/test.jsonl")).unwrap(),
        before
    );
    // A folder that is not an earlier output is never replaced.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let refused = Command::new(bin)
        .args(["data", "--recipe"])
        .arg(dir.join("recipe.toml"))
        .arg("--out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not an earlier output"));
    assert!(other.join("notes.txt").exists());
}

#[test]
fn a_duckdb_source_gives_what_the_same_tables_give_in_sqlite() {
    if !kvrec_test_support::duckdb_available() {
        return;
    }
    let sql = orders(&SKUS, 8, 6);
    let dir = app("duckdb", &sql, RECIPE);
    kvrec_test_support::run(
        Command::new("python3")
            .args([
                "-c",
                "import duckdb, sys; con = duckdb.connect(sys.argv[1]); \
             [con.execute(s) for s in sys.argv[2].split(';\\n') if s.strip()]",
            ])
            .arg(dir.join("shop.duckdb"))
            // DuckDB wants typed columns, and `at` is one of its keywords.
            .arg(sql.replacen(
                "CREATE TABLE orders(customer TEXT, sku, at TEXT, stars)",
                "CREATE TABLE orders(customer TEXT, sku TEXT, \"at\" TEXT, stars INTEGER)",
                1,
            )),
    );
    std::fs::write(
        dir.join("duck.toml"),
        RECIPE
            .replace("sqlite = \"shop.db\"", "duckdb = \"shop.duckdb\"")
            // DuckDB's own time function, as a DuckDB user would write it.
            .replace("at AS time", r#"epoch(\"at\"::TIMESTAMP)::BIGINT AS time"#),
    )
    .unwrap();
    let from_sqlite = recipe::read(&dir.join("recipe.toml")).unwrap();
    let from_duckdb = recipe::read(&dir.join("duck.toml")).unwrap();
    assert_eq!(from_duckdb.item_ids, from_sqlite.item_ids);
    assert_eq!(from_duckdb.user_ids, from_sqlite.user_ids);
    let mut a = from_sqlite.events.clone();
    let mut b = from_duckdb.events.clone();
    a.sort_by_key(|e| (e.user, e.time));
    b.sort_by_key(|e| (e.user, e.time));
    assert_eq!(a, b);
}
