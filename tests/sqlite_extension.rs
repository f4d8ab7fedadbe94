//! The built extension loaded into a real SQLite (rusqlite's bundled one) as a host would.

use kvrec_test_support as common;

use rusqlite::{params, Connection};
use serde_json::Value;

use common::{CANDIDATES, HISTORY, USER};
use kvrec_core::augment::{augment, Strategy};
use kvrec_core::{Request, TemplateSpec};

fn open() -> Connection {
    common::connect(None)
}

fn text(db: &Connection, sql: &str) -> rusqlite::Result<String> {
    db.query_row(sql, [], |r| r.get(0))
}

fn text_with(db: &Connection, sql: &str, p: impl rusqlite::Params) -> String {
    db.query_row(sql, p, |r| r.get(0)).unwrap()
}

#[test]
fn kvrec_version_and_debug() {
    let db = open();
    assert_eq!(
        text(&db, "SELECT kvrec_version()").unwrap(),
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    let debug = text(&db, "SELECT kvrec_debug()").unwrap();
    assert!(
        debug.starts_with(&format!("kvrec v{}", env!("CARGO_PKG_VERSION"))),
        "{debug}"
    );
    assert!(
        debug.contains(&format!(
            "template: kvrec-instructmk v{}",
            kvrec_core::template::TEMPLATE_VERSION
        )),
        "{debug}"
    );
}

#[test]
fn kvrec_template_is_the_default_spec() {
    let db = open();
    let json: Value = serde_json::from_str(&text(&db, "SELECT kvrec_template()").unwrap()).unwrap();
    assert_eq!(
        TemplateSpec::from_json(&json).unwrap(),
        TemplateSpec::default()
    );
}

#[test]
fn kvrec_prompt_matches_the_core_renderer() {
    let db = open();
    let prompt = text_with(
        &db,
        "SELECT kvrec_prompt(?1, ?2, ?3)",
        params![USER, HISTORY, CANDIDATES],
    );
    assert_eq!(
        prompt,
        TemplateSpec::default().render_prompt(&common::request())
    );
    let with_options = text_with(
        &db,
        "SELECT kvrec_prompt(?1, ?2, ?3, json_object('max_history', 1, 'template', json_object('instruction', 'Rank them.')))",
        params![USER, HISTORY, CANDIDATES],
    );
    assert!(
        with_options.contains("### Instruction:\nRank them.\n"),
        "{with_options}"
    );
    assert!(with_options.contains("History watched movie titles: [Saving Private Ryan (1998)]\n"));
}

#[test]
fn kvrec_prompt_from_sql_built_json() {
    let db = open();
    db.execute_batch(
        "CREATE TABLE movies(movie_id INTEGER PRIMARY KEY, title TEXT, genres TEXT);
         INSERT INTO movies VALUES (1, 'Toy Story (1995)', 'Animation|Comedy'), (2, 'Heat (1995)', 'Action'), (3, 'Babe (1995)', 'Comedy');",
    )
    .unwrap();
    let prompt = text(
        &db,
        "SELECT kvrec_prompt(json_object('gender', 'female', 'age', '25-34'),
                             (SELECT json_group_array(json_object('title', title, 'genres', genres, 'rating', 4)) FROM movies WHERE movie_id < 3),
                             (SELECT json_group_array(json_object('id', movie_id, 'title', title)) FROM movies WHERE movie_id = 3))",
    )
    .unwrap();
    assert!(prompt.contains("Gender: female\nAge: 25-34\n"), "{prompt}");
    assert!(prompt.contains("Corresponding categories of these movies: [Animation|Comedy; Action]"));
    assert!(prompt.ends_with("Candidate set: [3: Babe (1995)]\n\n### Response:\n"));
}

#[test]
fn a_ten_thousand_item_history_renders_the_last_twenty() {
    let db = open();
    let prompt = text(
        &db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         SELECT kvrec_prompt('{}', (SELECT json_group_array(json_object('title', 'Movie ' || i, 'rating', i % 5 + 1)) FROM n),
                             '[{\"id\": 1, \"title\": \"A\"}]')",
    )
    .unwrap();
    assert!(prompt.contains("[Movie 9981; Movie 9982;"), "{prompt}");
    assert!(prompt.contains("Movie 10000]"));
    assert!(!prompt.contains("Movie 9980;"));
}

#[test]
fn kvrec_target_ranks_the_positive_first() {
    let db = open();
    assert_eq!(
        text_with(&db, "SELECT kvrec_target(?1, 914)", [CANDIDATES]),
        "914, 1193, 661, 3408, 2355"
    );
    let custom = text_with(
        &db,
        "SELECT kvrec_target(?1, 914, '{\"template\": {\"answer_separator\": \" > \"}}')",
        [CANDIDATES],
    );
    assert_eq!(custom, "914 > 1193 > 661 > 3408 > 2355");
}

#[test]
fn kvrec_parse_answer_reports_validity() {
    let db = open();
    let parsed: Value = serde_json::from_str(&text_with(
        &db,
        "SELECT kvrec_parse_answer('661, 42, 661', ?1)",
        [CANDIDATES],
    ))
    .unwrap();
    assert_eq!(parsed["ids"], serde_json::json!([661]));
    assert_eq!(parsed["invalid"], serde_json::json!(["42"]));
    assert_eq!(parsed["duplicates"], serde_json::json!([661]));
    assert_eq!(parsed["valid"], Value::Bool(false));
    let ok: i64 = db
        .query_row(
            "SELECT json_extract(kvrec_parse_answer(kvrec_target(?1, 661), ?1), '$.valid')",
            [CANDIDATES],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ok, 1);
}

#[test]
fn kvrec_augment_matches_the_core_and_is_deterministic() {
    let db = open();
    let sql = "SELECT kvrec_augment(?1, ?2, ?3, 'SC+SO+M1', 42, '{\"positive\": 661}')";
    let first = text_with(&db, sql, params![USER, HISTORY, CANDIDATES]);
    assert_eq!(
        first,
        text_with(&db, sql, params![USER, HISTORY, CANDIDATES])
    );
    let json: Value = serde_json::from_str(&first).unwrap();
    let expected = augment(
        &common::request(),
        Some(661),
        &Strategy::parse("SC+SO+M1").unwrap(),
        42,
        0,
    )
    .unwrap();
    assert_eq!(Request::from_object(&json).unwrap(), expected.request);
    assert_eq!(json["target"], serde_json::json!(expected.target.unwrap()));
    assert_eq!(json["masked"].as_array().unwrap().len(), 3);
    // The augmented request feeds straight back into kvrec_prompt.
    let prompt = text_with(
        &db,
        "SELECT kvrec_prompt(json_extract(?1, '$.user'), json_extract(?1, '$.history'), json_extract(?1, '$.candidates'))",
        [&first],
    );
    assert_eq!(
        prompt,
        TemplateSpec::default().render_prompt(&expected.request)
    );
}

#[test]
fn kvrec_augmentations_yields_original_plus_copies() {
    let db = open();
    let mut stmt = db
        .prepare("SELECT copy, augmentation, prompt, answer, masked FROM kvrec_augmentations(?1, ?2, ?3, 'M3', 7, 4, '{\"positive\": 914}')")
        .unwrap();
    let rows: Vec<(i64, String, String, String, String)> = stmt
        .query_map(params![USER, HISTORY, CANDIDATES], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(rows[0].1, "none");
    assert_eq!(
        rows[0].2,
        TemplateSpec::default().render_prompt(&common::request())
    );
    let masked: Vec<usize> = rows
        .iter()
        .map(|r| serde_json::from_str::<Vec<String>>(&r.4).unwrap().len())
        .collect();
    assert_eq!(masked, [0, 3, 4, 3, 4]);
    assert!(
        rows.iter().all(|r| r.3 == "914, 1193, 661, 3408, 2355"),
        "M3 keeps the label"
    );
    // Default copies is the paper's 1:4; without a positive there is no answer.
    let count: i64 = db
        .query_row(
            "SELECT count(*), count(answer) FROM kvrec_augmentations(?1, ?2, ?3, 'SC', 1)",
            params![USER, HISTORY, CANDIDATES],
            |r| {
                assert_eq!(r.get::<_, i64>(1)?, 0);
                r.get(0)
            },
        )
        .unwrap();
    assert_eq!(count, 5);
}

#[test]
fn kvrec_augmentations_joins_over_a_table() {
    let db = open();
    db.execute_batch(
        "CREATE TABLE requests(user_id INTEGER, u TEXT, h TEXT, c TEXT, positive INTEGER)",
    )
    .unwrap();
    for uid in 1..=3 {
        db.execute(
            "INSERT INTO requests VALUES (?1, ?2, ?3, ?4, 661)",
            params![uid, USER, HISTORY, CANDIDATES],
        )
        .unwrap();
    }
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM requests r, kvrec_augmentations(r.u, r.h, r.c, 'SO', r.user_id, 2, json_object('positive', r.positive)) a
             WHERE json_extract(kvrec_parse_answer(a.answer, r.c), '$.valid')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        n, 9,
        "3 requests x (original + 2 copies), every answer valid"
    );
}

#[test]
fn pure_functions_are_deterministic_and_model_functions_direct_only() {
    let db = open();
    let mut stmt = db
        .prepare("SELECT name, flags FROM pragma_function_list WHERE name LIKE 'kvrec%' OR name LIKE 'recommend%'")
        .unwrap();
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(rows.len() >= 10, "{rows:?}");
    const DETERMINISTIC: i64 = 0x800;
    const DIRECTONLY: i64 = 0x80000;
    const INNOCUOUS: i64 = 0x200000;
    // The catalog says which functions read models.
    let model_functions: Vec<String> = db
        .prepare("SELECT name FROM kvrec_functions() WHERE type = 'scalar' AND reads_models")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(model_functions.contains(&"recommend".to_string()));
    for (name, flags) in rows {
        if model_functions.contains(&name) {
            assert!(
                flags & DIRECTONLY != 0 && flags & (DETERMINISTIC | INNOCUOUS) == 0,
                "{name}: flags {flags:#x}"
            );
        } else {
            assert!(
                flags & DETERMINISTIC != 0 && flags & INNOCUOUS != 0,
                "{name}: flags {flags:#x}"
            );
        }
    }
}

/// Every bad input gets an SQL error naming the function, the cause and the fix; the host
/// connection keeps working afterwards.
#[test]
fn bad_input_gives_clear_errors() {
    let db = open();
    let one = r#"'[{"id": 1, "title": "A"}]'"#;
    let cases: Vec<(&str, String)> = vec![
        (
            "malformed user JSON",
            format!("SELECT kvrec_prompt('{{', '[]', {one})"),
        ),
        (
            "NULL user",
            format!("SELECT kvrec_prompt(NULL, '[]', {one})"),
        ),
        (
            "NULL history",
            format!("SELECT kvrec_prompt('{{}}', NULL, {one})"),
        ),
        (
            "NULL candidates",
            "SELECT kvrec_prompt('{}', '[]', NULL)".into(),
        ),
        (
            "user is an array",
            format!("SELECT kvrec_prompt('[]', '[]', {one})"),
        ),
        (
            "history is an object",
            format!("SELECT kvrec_prompt('{{}}', '{{}}', {one})"),
        ),
        (
            "candidates hold numbers",
            "SELECT kvrec_prompt('{}', '[]', '[1, 2]')".into(),
        ),
        (
            "integer user",
            format!("SELECT kvrec_prompt(42, '[]', {one})"),
        ),
        (
            "non-UTF-8 blob",
            format!("SELECT kvrec_prompt(X'FFFE7B7D', '[]', {one})"),
        ),
        (
            "empty candidates",
            "SELECT kvrec_prompt('{}', '[]', '[]')".into(),
        ),
        (
            "candidate without id",
            "SELECT kvrec_prompt('{}', '[]', '[{\"title\": \"A\"}]')".into(),
        ),
        (
            "fractional id",
            "SELECT kvrec_prompt('{}', '[]', '[{\"id\": 1.5}]')".into(),
        ),
        (
            "duplicate candidates",
            "SELECT kvrec_prompt('{}', '[]', '[{\"id\": 1}, {\"id\": 1}]')".into(),
        ),
        (
            "history without title",
            format!("SELECT kvrec_prompt('{{}}', '[{{\"rating\": 5}}]', {one})"),
        ),
        (
            "nested user value",
            format!("SELECT kvrec_prompt('{{\"a\": {{\"b\": 1}}}}', '[]', {one})"),
        ),
        (
            "unknown option",
            format!("SELECT kvrec_prompt('{{}}', '[]', {one}, '{{\"max_hist\": 3}}')"),
        ),
        (
            "negative max_history",
            format!("SELECT kvrec_prompt('{{}}', '[]', {one}, '{{\"max_history\": -1}}')"),
        ),
        (
            "options not an object",
            format!("SELECT kvrec_prompt('{{}}', '[]', {one}, '[1]')"),
        ),
        (
            "bad template field",
            format!(
                "SELECT kvrec_prompt('{{}}', '[]', {one}, '{{\"template\": {{\"colour\": 1}}}}')"
            ),
        ),
        (
            "future template version",
            format!(
                "SELECT kvrec_prompt('{{}}', '[]', {one}, '{{\"template\": {{\"version\": 99}}}}')"
            ),
        ),
        (
            "too few arguments",
            "SELECT kvrec_prompt('{}', '[]')".into(),
        ),
        ("too many arguments", "SELECT kvrec_version(1)".into()),
        (
            "positive not a candidate",
            format!("SELECT kvrec_target({one}, 7)"),
        ),
        (
            "positive as text",
            format!("SELECT kvrec_target({one}, '1')"),
        ),
        (
            "NULL answer text",
            format!("SELECT kvrec_parse_answer(NULL, {one})"),
        ),
        (
            "unknown strategy",
            format!("SELECT kvrec_augment('{{}}', '[]', {one}, 'SX', 1)"),
        ),
        (
            "SO without positive",
            format!("SELECT kvrec_augment('{{}}', '[]', {one}, 'SO', 1)"),
        ),
        (
            "seed as real",
            format!("SELECT kvrec_augment('{{}}', '[]', {one}, 'SC', 1.5)"),
        ),
        (
            "table function without strategy",
            format!("SELECT * FROM kvrec_augmentations('{{}}', '[]', {one})"),
        ),
        (
            "table function with negative copies",
            format!("SELECT * FROM kvrec_augmentations('{{}}', '[]', {one}, 'SC', 1, -1)"),
        ),
        (
            "table function with bad JSON",
            "SELECT * FROM kvrec_augmentations('{}', '[', '[]', 'SC', 1)".into(),
        ),
        (
            "NUL byte in an option key",
            format!("SELECT kvrec_prompt('{{}}', '[]', {one}, '{{\"a\\u0000b\": 1}}')"),
        ),
    ];
    let mut report = String::new();
    for (label, sql) in &cases {
        let outcome = match db
            .prepare(sql)
            .and_then(|mut s| s.query_row([], |r| r.get::<_, Option<String>>(0)))
        {
            Ok(v) => format!("OK {v:?}"),
            Err(e) => e.to_string(),
        };
        report.push_str(&format!("{label}:\n  {outcome}\n"));
    }
    insta::assert_snapshot!(report);
    assert_eq!(
        text(&db, "SELECT kvrec_version()").unwrap(),
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
}

/// Fails when a registered SQL function or table function has no test calling it, or no
/// entry in docs/sql.md (whose table tests/docs.rs generates from the catalog).
#[test]
fn every_sql_function_is_tested_and_documented() {
    let db = open();
    let mut stmt = db
        .prepare(
            "SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'kvrec%' OR name LIKE 'recommend%'
             UNION SELECT name FROM pragma_module_list WHERE name LIKE 'kvrec%' OR name LIKE 'recommend%'",
        )
        .unwrap();
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        names.contains(&"kvrec_augmentations".to_string()),
        "{names:?}"
    );
    let root = common::repo_root();
    let mut tests = String::new();
    for dir in ["tests", "finetune/tests"] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "rs") {
                tests.push_str(&std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    let reference = std::fs::read_to_string(root.join("docs/sql.md")).unwrap_or_default();
    let untested: Vec<_> = names
        .iter()
        .filter(|n| !tests.contains(&format!("{n}(")))
        .collect();
    let undocumented: Vec<_> = names
        .iter()
        .filter(|n| !reference.contains(&format!("`{n}(")))
        .collect();
    assert!(
        untested.is_empty(),
        "SQL functions without a test calling them: {untested:?}"
    );
    assert!(
        undocumented.is_empty(),
        "SQL functions missing from docs/sql.md: {undocumented:?}"
    );
}
