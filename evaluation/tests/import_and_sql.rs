//! The importer on the synthetic fixture and the shared MovieLens data, and the sql/ examples
//! run over the imported tables: in rusqlite with the built extension, and in the sqlite3 CLI.

use kvrec_test_support as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kvrec_core::{parse_answer, Request};
use kvrec_evaluation::{db, movielens};
use rusqlite::fallible_iterator::FallibleIterator as _;
use rusqlite::{Batch, Connection};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvrec-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ml.db");
    let _ = std::fs::remove_file(&path);
    path
}

fn import(dir: &Path, name: &str) -> PathBuf {
    let path = scratch(name);
    db::import(&path, &movielens::read(dir).unwrap()).unwrap();
    path
}

fn count(db: &Connection, table: &str) -> i64 {
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn imports_the_fixture_with_labels_and_latin1_titles() {
    let path = import(&common::ml_tiny(), "fixture");
    let db = Connection::open(&path).unwrap();
    assert_eq!(
        (
            count(&db, "users"),
            count(&db, "movies"),
            count(&db, "ratings")
        ),
        (12, 40, 310)
    );
    let title: String = db
        .query_row("SELECT title FROM movies WHERE movie_id = 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(title.starts_with("Café Lumière ("), "{title}");
    let bad_labels: i64 = db
        .query_row(
            "SELECT count(*) FROM users WHERE gender NOT IN ('male', 'female')
               OR age NOT IN ('Under 18', '18-24', '25-34', '35-44', '45-49', '50-55', '56+')
               OR occupation GLOB '[0-9]*'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad_labels, 0, "codes are turned into text labels");
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2, "both migrations applied");
    drop(db);
    // Importing again replaces rows instead of duplicating them.
    db::import(&path, &movielens::read(&common::ml_tiny()).unwrap()).unwrap();
    assert_eq!(count(&Connection::open(&path).unwrap(), "ratings"), 310);
}

#[test]
fn imports_shared_ml100k_and_ml1m() {
    if let Some(dir) = common::shared_data("ml-100k") {
        let db = Connection::open(import(&dir, "ml100k")).unwrap();
        assert_eq!(
            (
                count(&db, "users"),
                count(&db, "movies"),
                count(&db, "ratings")
            ),
            (943, 1682, 100_000)
        );
        let title: String = db
            .query_row("SELECT title FROM movies WHERE movie_id = 543", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(title, "Misérables, Les (1995)");
        let genres: String = db
            .query_row("SELECT genres FROM movies WHERE movie_id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(genres, "Animation|Children's|Comedy");
    }
    if let Some(dir) = common::shared_data("ml-1m-head2999") {
        let data = movielens::read(&dir).unwrap();
        assert_eq!((data.users.len(), data.movies.len()), (6040, 3883));
        assert_eq!(data.users[0].age, "Under 18");
        assert_eq!(data.users[0].occupation, "K-12 student");
        assert!(data.ratings.iter().all(|r| r.user_id <= 2999));
    }
}

/// Runs a sql/ file statement by statement, binding the named parameters it uses.
fn run_sql_file(db: &Connection, file: &str, params: &[(&str, i64)]) -> Vec<Vec<Option<String>>> {
    let sql = std::fs::read_to_string(common::repo_root().join("sql").join(file)).unwrap();
    let mut rows = Vec::new();
    let mut batch = Batch::new(db, &sql);
    while let Some(mut stmt) = batch.next().unwrap() {
        for (name, value) in params {
            if let Some(i) = stmt.parameter_index(name).unwrap() {
                stmt.raw_bind_parameter(i, value).unwrap();
            }
        }
        let n = stmt.column_count();
        let mut result = stmt.raw_query();
        while let Some(row) = result.next().unwrap() {
            rows.push(
                (0..n)
                    .map(|i| {
                        row.get::<_, Option<rusqlite::types::Value>>(i)
                            .unwrap()
                            .map(|v| match v {
                                rusqlite::types::Value::Text(t) => t,
                                rusqlite::types::Value::Integer(i) => i.to_string(),
                                other => format!("{other:?}"),
                            })
                    })
                    .collect(),
            );
        }
    }
    rows
}

fn open_with_extension(path: &Path) -> Connection {
    common::connect(Some(path))
}

#[test]
fn sql_examples_build_valid_requests() {
    let db = open_with_extension(&import(&common::ml_tiny(), "sql"));
    let range = [(":first_user", 1), (":last_user", 12)];
    run_sql_file(&db, "requests.sql", &range);
    let mut stmt = db
        .prepare("SELECT user_id, user, history, candidates, positive FROM temp.kvrec_requests")
        .unwrap();
    let requests: Vec<(i64, String, String, String, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(requests.len(), 12);
    for (user_id, user, history, candidates, positive) in &requests {
        let request = Request::from_json_texts(user, history, candidates).unwrap();
        assert_eq!(request.candidates.len(), 10, "user {user_id}");
        assert_eq!(
            request.history.len(),
            20,
            "user {user_id}: 20 history items"
        );
        request.check_positive(*positive).unwrap();
        let rated: Vec<i64> = db
            .prepare("SELECT movie_id FROM ratings WHERE user_id = ?1")
            .unwrap()
            .query_map([user_id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for id in request
            .candidate_ids()
            .into_iter()
            .filter(|id| id != positive)
        {
            assert!(
                !rated.contains(&id),
                "user {user_id}: negative {id} was rated"
            );
        }
        let latest: i64 = db
            .query_row("SELECT movie_id FROM ratings WHERE user_id = ?1 ORDER BY ts DESC, movie_id DESC LIMIT 1", [user_id], |r| r.get(0))
            .unwrap();
        assert_eq!(*positive, latest);
    }
    let prompts = run_sql_file(&db, "prompt_for_user.sql", &[]);
    assert_eq!(prompts.len(), 12);
    for row in &prompts {
        let prompt = row[1].as_deref().unwrap();
        assert!(prompt.starts_with("### Instruction:\n") && prompt.ends_with("### Response:\n"));
    }
    let training = run_sql_file(&db, "training_data.sql", &[]);
    assert_eq!(training.len(), 12 * 5, "each request plus 4 SO copies");
    for row in &training {
        let (user_id, answer) = (row[0].as_deref().unwrap(), row[4].as_deref().unwrap());
        let request = requests
            .iter()
            .find(|r| r.0.to_string() == user_id)
            .unwrap();
        let ids = Request::from_json_texts("{}", "[]", &request.3)
            .unwrap()
            .candidate_ids();
        let parsed = parse_answer(answer, &ids);
        assert!(parsed.valid && parsed.missing.is_empty(), "{answer}");
        assert_eq!(parsed.ids[0], request.4, "positive first");
    }
}

/// sql/next_for_user.sql: the whole catalog of a model ranked for a user of the imported
/// tables, straight from the ratings table, rated movies left out, titles joined.
#[test]
fn next_for_user_recommends_unrated_movies_from_the_whole_catalog() {
    let db = open_with_extension(&import(&common::ml_tiny(), "next"));
    let items: Vec<i64> = (1..=40).collect();
    let model = scratch("next-model").with_extension("gguf");
    kvrec_llm::tiny::write_tiny_catalog_llama(&model, 9, &items, true, None).unwrap();
    db.query_row(
        "SELECT kvrec_load_model('default', ?1)",
        [model.to_str().unwrap()],
        |_| Ok(()),
    )
    .unwrap();
    for user in [1, 7] {
        let rows = run_sql_file(&db, "next_for_user.sql", &[(":user_id", user), (":k", 5)]);
        assert_eq!(rows.len(), 5, "user {user}: {rows:?}");
        let rated: Vec<String> = db
            .prepare("SELECT movie_id FROM ratings WHERE user_id = ?1")
            .unwrap()
            .query_map([user], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row[0].as_deref(), Some((i + 1).to_string().as_str()));
            let id = row[1].as_deref().unwrap();
            assert!(
                !rated.iter().any(|r| r == id),
                "user {user}: {id} was rated"
            );
            assert!(
                !row[2].as_deref().unwrap_or("").is_empty(),
                "a title for {id}"
            );
        }
    }
}

/// The sqlite3 CLI (Debian 12 ships 3.40.1, older than rusqlite's) loads the extension and
/// renders prompts from the example queries over imported ML-100K (or the fixture).
#[test]
fn sqlite3_cli_renders_prompts_from_the_examples() {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("KVREC_REQUIRE_SQLITE3_CLI").is_none(),
            "sqlite3 CLI not found"
        );
        return;
    }
    let data = common::shared_data("ml-100k").unwrap_or_else(common::ml_tiny);
    let path = import(&data, "cli");
    let ext = common::extension_path();
    let ext = ext.with_extension("");
    let sql = common::repo_root().join("sql");
    // A script on stdin, as a user would type it: the CLI carries on after an error there.
    let script = format!(
        ".load {}\n.parameter set :first_user 1\n.parameter set :last_user 5\n.read {}\n\
         SELECT count(*) FROM temp.kvrec_requests;\n.read {}\n\
         SELECT kvrec_prompt('{{', '[]', '[]');\nSELECT 'still alive: ' || kvrec_version();\n",
        ext.display(),
        sql.join("requests.sql").display(),
        sql.join("prompt_for_user.sql").display()
    );
    let mut child = Command::new("sqlite3")
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with("5\n"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout.matches("### Response:\n").count(), 5, "{stdout}");
    assert!(
        stderr.contains("kvrec_prompt: argument 'user' is not valid JSON"),
        "{stderr}"
    );
    assert!(
        stdout.contains("still alive: v"),
        "the host survives the error: {stdout}"
    );
}

#[test]
fn protocol_requests_go_into_sqlite_and_recommend_reads_them() {
    use kvrec_evaluation::protocol::{build, ProtocolConfig};
    let path = import(&common::ml_tiny(), "requests");
    let data = build(
        &movielens::read(&common::ml_tiny()).unwrap(),
        &ProtocolConfig {
            candidates: 5,
            candidate_keys: vec!["popularity".into(), "co_watch".into()],
            ..ProtocolConfig::default()
        },
    );
    let all: Vec<_> = data.train.iter().chain(&data.test).collect();
    assert_eq!(db::write_requests(&path, &all).unwrap(), all.len());
    // Written twice: the table holds one copy.
    db::write_requests(&path, &all).unwrap();
    let db = open_with_extension(&path);
    assert_eq!(count(&db, "requests"), all.len() as i64);
    // eval --sqlite reads the test split only, unchanged.
    let read = kvrec_evaluation::io::read_sqlite(&path, "requests").unwrap();
    assert_eq!(read.len(), data.test.len());
    for (a, b) in read.iter().zip(&data.test) {
        assert_eq!(
            (a.user_id, &a.candidates, a.positive),
            (b.user_id, &b.candidates, b.positive)
        );
    }
    // The stored keys reach the prompt as data.
    let prompt: String = db
        .query_row(
            "SELECT kvrec_prompt(user, history, candidates) FROM requests WHERE split = 'test' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(prompt.contains("co watch: "), "{prompt}");
    assert!(prompt.contains("popularity: "), "{prompt}");
}

/// `eval --duckdb`: a DuckDB table of requests, with STRUCT / LIST columns (as `read_json`
/// makes them) or JSON text columns, reads back as the test split unchanged.
#[test]
fn protocol_requests_read_back_from_a_duckdb_table() {
    use kvrec_evaluation::protocol::{build, ProtocolConfig};
    if !common::duckdb_available() {
        eprintln!("skipped: python3 has no duckdb package");
        return;
    }
    let data = build(
        &movielens::read(&common::ml_tiny()).unwrap(),
        &ProtocolConfig {
            candidates: 5,
            candidate_keys: vec!["popularity".into()],
            ..ProtocolConfig::default()
        },
    );
    let dir = std::env::temp_dir().join(format!("kvrec-duckdb-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join("all.jsonl");
    let all: Vec<_> = data.train.iter().chain(&data.test).collect();
    kvrec_evaluation::io::write_jsonl(&jsonl, &all).unwrap();
    let file = dir.join("requests.duckdb");
    let _ = std::fs::remove_file(&file);
    let made = std::process::Command::new("python3")
        .args([
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); \
             con.execute(f\"CREATE TABLE structs AS SELECT * FROM read_json('{sys.argv[2]}')\"); \
             con.execute('CREATE TABLE texts AS SELECT user_id, split, to_json(\"user\")::VARCHAR AS \"user\", \
             to_json(history)::VARCHAR AS history, to_json(candidates)::VARCHAR AS candidates, positive FROM structs')",
        ])
        .arg(&file)
        .arg(&jsonl)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for table in ["structs", "texts"] {
        let read = kvrec_evaluation::io::read_duckdb(&file, table).unwrap();
        assert_eq!(read.len(), data.test.len(), "{table}");
        for (a, b) in read.iter().zip(&data.test) {
            assert_eq!(
                (a.user_id, &a.user, &a.history, &a.candidates, a.positive),
                (b.user_id, &b.user, &b.history, &b.candidates, b.positive),
                "{table}"
            );
        }
    }
    let err = kvrec_evaluation::io::read_duckdb(&file, "missing").unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
