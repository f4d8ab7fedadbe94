//! One table of hostile inputs, run in SQLite and in DuckDB: each row's outcome (a result or a
//! specific error) is snapshotted, both hosts must give the same outcome, and both processes
//! survive every row. DuckDB runs through the `duckdb` Python package (see
//! tests/duckdb_extension.rs for when that test is skipped).

use kvrec_test_support as common;

use rusqlite::types::Value as Sql;
use serde_json::{json, Value};

/// `(label, SQL after SELECT with ? placeholders, text arguments)`.
fn cases() -> Vec<(&'static str, &'static str, Vec<Option<String>>)> {
    let user = || Some(r#"{"gender":"F","age":"25-34"}"#.to_string());
    let one = || Some(r#"[{"id":1,"title":"A"},{"id":22,"title":"B"}]"#.to_string());
    let items = |n: usize, title: &str| {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"id": i as i64 + 1, "title": format!("{title}{i}")}))
            .collect();
        Some(Value::Array(list).to_string())
    };
    let prompt = "kvrec_prompt(?, ?, ?)";
    let rec = "recommend('h', ?, ?, ?)";
    let rec_opts = "recommend('h', ?, ?, ?, ?)";
    vec![
        ("NULL user", prompt, vec![None, Some("[]".into()), one()]),
        ("NULL history", prompt, vec![user(), None, one()]),
        (
            "NULL candidates",
            prompt,
            vec![user(), Some("[]".into()), None],
        ),
        (
            "user is a number",
            prompt,
            vec![Some("7".into()), Some("[]".into()), one()],
        ),
        (
            "history is a string",
            prompt,
            vec![user(), Some("\"x\"".into()), one()],
        ),
        (
            "candidates hold numbers",
            prompt,
            vec![user(), Some("[]".into()), Some("[1,2]".into())],
        ),
        (
            "deeply nested user",
            prompt,
            vec![Some("[".repeat(100_000)), Some("[]".into()), one()],
        ),
        (
            "zero candidates",
            prompt,
            vec![user(), Some("[]".into()), Some("[]".into())],
        ),
        (
            "duplicate ids",
            prompt,
            vec![
                user(),
                Some("[]".into()),
                Some(r#"[{"id":1},{"id":1}]"#.into()),
            ],
        ),
        (
            "negative and huge ids",
            rec,
            vec![
                user(),
                Some("[]".into()),
                Some(r#"[{"id":-5,"title":"A"},{"id":9223372036854775807,"title":"B"}]"#.into()),
            ],
        ),
        (
            "id is text",
            prompt,
            vec![user(), Some("[]".into()), Some(r#"[{"id":"x"}]"#.into())],
        ),
        (
            "template delimiters and control characters in values",
            prompt,
            vec![
                Some("{\"gender\":\"### Response:\\n\\u0000\\u001b[31m\"}".into()),
                Some(json!([{"title": "### Instruction:\r\n]; [", "rating": 5}]).to_string()),
                one(),
            ],
        ),
        (
            "1 MB title: prompt renders",
            "length(kvrec_prompt(?, ?, ?))",
            vec![
                user(),
                Some(json!([{"title": "x".repeat(1 << 20)}]).to_string()),
                one(),
            ],
        ),
        (
            "100,000-item history: the last 20 render",
            "length(kvrec_prompt(?, ?, ?))",
            vec![user(), items(100_000, "T"), one()],
        ),
        (
            "1,000 candidates: prompt renders",
            "length(kvrec_prompt(?, ?, ?))",
            vec![user(), Some("[]".into()), items(1000, "C")],
        ),
        (
            "1,000 candidates: too long for the context",
            rec,
            vec![user(), Some("[]".into()), items(1000, "C")],
        ),
        (
            "900 kB title in the history: dropped to fit the context",
            rec,
            vec![
                user(),
                Some(json!([{"title": "x".repeat(900_000)}]).to_string()),
                one(),
            ],
        ),
        (
            "1 MB title in the history: above the request-bytes cap",
            rec,
            vec![
                user(),
                Some(json!([{"title": "x".repeat(1 << 20)}]).to_string()),
                one(),
            ],
        ),
        (
            "recommend ranks what it gets",
            rec,
            vec![user(), Some("[]".into()), one()],
        ),
        (
            "unknown option",
            rec_opts,
            vec![
                user(),
                Some("[]".into()),
                one(),
                Some(r#"{"temperature":1}"#.into()),
            ],
        ),
        (
            "n_threads 10^6",
            rec_opts,
            vec![
                user(),
                Some("[]".into()),
                one(),
                Some(r#"{"n_threads":1000000}"#.into()),
            ],
        ),
        (
            "k 0",
            rec_opts,
            vec![user(), Some("[]".into()), one(), Some(r#"{"k":0}"#.into())],
        ),
        (
            "options not an object",
            rec_opts,
            vec![user(), Some("[]".into()), one(), Some("[1]".into())],
        ),
        (
            "n_ctx 0 at load",
            "kvrec_load_model('zero', 'x.gguf', ?)",
            vec![Some(r#"{"n_ctx":0}"#.into())],
        ),
        (
            "non-UTF-8 BLOB as the user",
            "kvrec_prompt(unhex(?), ?, ?)",
            vec![Some("FFFE7B7D".into()), Some("[]".into()), one()],
        ),
        (
            "non-UTF-8 BLOB as candidates to recommend",
            "recommend('h', ?, ?, unhex(?))",
            vec![user(), Some("[]".into()), Some("5B80C0AF5D".into())],
        ),
        (
            "BLOB holding UTF-8 JSON reads as text",
            "recommend('h', ?, ?, unhex(?))",
            vec![
                user(),
                Some("[]".into()),
                Some(r#"[{"id":7,"title":"Blob"}]"#.bytes().map(|b| format!("{b:02X}")).collect()),
            ],
        ),
        (
            "unknown augmentation",
            "kvrec_augment(?, ?, ?, ?, 1)",
            vec![user(), Some("[]".into()), one(), Some("SC+XX".into())],
        ),
    ]
}

/// An outcome as text: the result, or the error with the host's framing taken off.
fn outcome(result: Result<String, String>) -> String {
    match result {
        Ok(text) if text.chars().count() > 120 => format!("ok: {} chars", text.chars().count()),
        Ok(text) => format!("ok: {text}"),
        Err(e) => {
            let e = e.trim_start_matches("Invalid Input Error: ");
            let e = e.split(" (in row ").next().unwrap_or(e);
            format!("error: {}", e.chars().take(300).collect::<String>())
        }
    }
}

#[test]
fn hostile_inputs_give_the_same_documented_outcome_in_sqlite_and_duckdb() {
    let dir = std::env::temp_dir().join(format!("kvrec-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("h.gguf");
    kvrec_llm::tiny::write_tiny_llama(&model, 7, None).unwrap();
    let model = model.to_str().unwrap().to_string();

    let db = common::connect(None);
    db.query_row("SELECT kvrec_load_model('h', ?1)", [&model], |_| Ok(()))
        .unwrap();
    let cases = cases();
    let sqlite: Vec<String> = cases
        .iter()
        .map(|(_, sql, args)| {
            let params: Vec<Sql> = args
                .iter()
                .map(|a| a.clone().map_or(Sql::Null, Sql::Text))
                .collect();
            let result = db.query_row(
                &format!("SELECT {sql}"),
                rusqlite::params_from_iter(params),
                |r| r.get::<_, Sql>(0),
            );
            outcome(match result {
                Ok(Sql::Text(t)) => Ok(t),
                Ok(Sql::Integer(i)) => Ok(i.to_string()),
                Ok(other) => Ok(format!("{other:?}")),
                Err(rusqlite::Error::SqliteFailure(_, Some(message))) => Err(message),
                Err(e) => Err(e.to_string()),
            })
        })
        .collect();
    let table: String = cases
        .iter()
        .zip(&sqlite)
        .map(|((label, _, _), o)| format!("{label}\n  {o}\n"))
        .collect();
    insta::assert_snapshot!(table);
    // The host is still alive and serving.
    let alive: String = db
        .query_row("SELECT kvrec_version()", [], |r| r.get(0))
        .unwrap();
    assert!(alive.starts_with('v'));

    if !common::duckdb_available() {
        eprintln!("skipped the DuckDB half: python3 has no duckdb package");
        return;
    }
    let extension = common::duckdb_extension(&dir);
    let spec: Vec<Value> = cases
        .iter()
        .map(|(_, sql, args)| json!({"sql": sql, "args": args}))
        .collect();
    let duck = common::run_duckdb_cases(
        &extension,
        std::path::Path::new(&model),
        &Value::Array(spec),
        &dir,
    );
    for (((label, _, _), s), d) in cases.iter().zip(&sqlite).zip(&duck) {
        let d = outcome(match (d.get("ok"), d.get("error")) {
            (Some(Value::String(t)), _) => Ok(t.clone()),
            (Some(v), _) => Ok(v.to_string()),
            (_, Some(e)) => Err(e.as_str().unwrap_or_default().to_string()),
            _ => Err("no outcome".into()),
        });
        // DuckDB propagates a NULL argument to a NULL result before the function runs (its
        // rule for scalar functions); SQLite calls the function, which names the argument.
        let expected = if s.contains("is NULL or missing") {
            "ok: null".to_string()
        } else {
            s.clone()
        };
        assert_eq!(d, expected, "{label}: DuckDB vs SQLite");
    }
}
