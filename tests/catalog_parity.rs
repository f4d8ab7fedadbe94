//! Every SQL function of the catalog, in both hosts, on the same inputs: the cases are built
//! from `kvrec_functions()` (the catalog as SQL), so a new function is covered the day it is
//! added. Each call form, a NULL in each parameter and generate mode run in SQLite (here) and
//! in DuckDB (its Python package); results, errors and table columns must agree.

use kvrec_test_support as common;

use rusqlite::types::Value as Sql;
use serde_json::{json, Value};

use common::{CANDIDATES, HISTORY, USER};

/// A catalog row of `kvrec_functions()`.
#[derive(Debug, Clone, PartialEq)]
struct Function {
    name: String,
    table: bool,
    params: Vec<String>,
    returns: Value,
}

fn functions(db: &rusqlite::Connection) -> Vec<Function> {
    let mut stmt = db
        .prepare("SELECT name, type, params, returns FROM kvrec_functions()")
        .unwrap();
    stmt.query_map([], |r| {
        let params: String = r.get(2)?;
        let returns: String = r.get(3)?;
        Ok(Function {
            name: r.get(0)?,
            table: r.get::<_, String>(1)? == "table",
            params: serde_json::from_str(&params).unwrap(),
            returns: serde_json::from_str(&returns).unwrap_or(Value::String(returns)),
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The argument a parameter gets in the valid calls. A parameter without a sample fails the
/// test: give it one when adding a function.
fn sample(function: &str, param: &str, n_args: usize, model: &str) -> Sql {
    let text = |s: &str| Sql::Text(s.to_string());
    match param.trim_end_matches('?') {
        "user" => text(USER),
        "history" => text(HISTORY),
        "candidates" => text(CANDIDATES),
        "options" => text("{}"),
        "model" => text("p"),
        "name" if function == "kvrec_load_model" => text(&format!("loaded-{n_args}")),
        "name" => text("loaded-2"),
        "path" => text(model),
        "text" => text("1193, 661"),
        "positive_id" => Sql::Integer(661),
        "strategy" => text("SC"),
        "seed" => Sql::Integer(7),
        "copies" => Sql::Integer(2),
        "k" => Sql::Integer(3),
        "settings" => text("{}"),
        other => panic!("no sample argument for parameter '{other}' of {function}"),
    }
}

/// The parameter lists a function is called with: for scalars, without the leading optional
/// parameters (`model?`: the default model) or with them and any number of trailing optional
/// ones; table functions take all their parameters.
fn forms(f: &Function) -> Vec<Vec<String>> {
    if f.table {
        return vec![f.params.clone()];
    }
    let optional = |p: &String| p.ends_with('?');
    let lead = f.params.iter().take_while(|p| optional(p)).count();
    let trail = f.params[lead..]
        .iter()
        .rev()
        .take_while(|p| optional(p))
        .count();
    let n = f.params.len();
    let mut forms = Vec::new();
    if lead > 0 {
        forms.push(f.params[lead..n - trail].to_vec());
    }
    forms.extend((0..=trail).map(|t| f.params[..n - trail + t].to_vec()));
    forms
}

struct Case {
    label: String,
    function: String,
    /// SQLite query and arguments; DuckDB's differs only in how a table's optional
    /// parameters are named.
    sqlite: String,
    duckdb: String,
    args: Vec<Sql>,
    /// DuckDB answers NULL for a scalar with a NULL argument without calling it.
    null_scalar: bool,
    must_succeed: bool,
}

fn call(
    f: &Function,
    params: &[String],
    args: Vec<Sql>,
    label: String,
    must_succeed: bool,
) -> Case {
    let marks = vec!["?"; params.len()].join(", ");
    let (sqlite, duckdb) = if f.table {
        let named: Vec<String> = params
            .iter()
            .map(|p| match p.strip_suffix('?') {
                Some(name) => format!("{name} := ?"),
                None => "?".into(),
            })
            .collect();
        (
            format!("SELECT * FROM {}({marks})", f.name),
            format!("SELECT * FROM {}({})", f.name, named.join(", ")),
        )
    } else {
        let q = format!("SELECT {}({marks})", f.name);
        (q.clone(), q)
    };
    let null_scalar = !f.table && args.contains(&Sql::Null);
    Case {
        label,
        function: f.name.clone(),
        sqlite,
        duckdb,
        args,
        null_scalar,
        must_succeed,
    }
}

fn cases(catalog: &[Function], model: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for f in catalog {
        for form in forms(f) {
            let args: Vec<Sql> = form
                .iter()
                .map(|p| sample(&f.name, p, form.len(), model))
                .collect();
            let label = format!("{}({})", f.name, form.join(", "));
            cases.push(call(f, &form, args.clone(), label.clone(), true));
            if form.iter().any(|p| p.trim_end_matches('?') == "options")
                && form.iter().any(|p| p.trim_end_matches('?') == "candidates")
                && f.name.starts_with("recommend")
            {
                let mut generate = args.clone();
                *generate.last_mut().unwrap() = Sql::Text(r#"{"mode":"generate"}"#.into());
                cases.push(call(f, &form, generate, format!("{label} generate"), false));
            }
        }
        // A NULL in each parameter of the longest form.
        let longest = forms(f)
            .into_iter()
            .max_by_key(Vec::len)
            .unwrap_or_default();
        for (i, p) in longest.iter().enumerate() {
            if f.name == "kvrec_load_model" || f.name == "kvrec_unload_model" {
                continue; // a NULL name or path is covered by the model tests
            }
            let mut args: Vec<Sql> = longest
                .iter()
                .map(|q| sample(&f.name, q, longest.len(), model))
                .collect();
            args[i] = Sql::Null;
            let label = format!("{}: NULL {p}", f.name);
            cases.push(call(f, &longest, args, label, false));
        }
    }
    cases
}

/// Rows as JSON values, reals rounded so both hosts' doubles compare.
fn normal(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => json!(format!("{:.6}", n.as_f64().unwrap())),
        other => other,
    }
}

fn sqlite_outcome(
    db: &rusqlite::Connection,
    case: &Case,
) -> Result<(Vec<String>, Vec<Vec<Value>>), String> {
    let mut stmt = db.prepare(&case.sqlite).map_err(|e| e.to_string())?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let n = columns.len();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(case.args.iter()), |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get::<_, Sql>(i)? {
                        Sql::Null => Value::Null,
                        Sql::Integer(v) => json!(v),
                        Sql::Real(v) => json!(v),
                        Sql::Text(t) => json!(t),
                        Sql::Blob(_) => json!("<blob>"),
                    })
                })
                .collect::<rusqlite::Result<Vec<Value>>>()
        })
        .map_err(|e| e.to_string())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            e => e.to_string(),
        })?;
    Ok((columns, rows))
}

/// An error's own text: from the function's name to the end, without DuckDB's row note.
fn error_text(function: &str, message: &str) -> String {
    let from = message.find(&format!("{function}:")).unwrap_or(0);
    let text = &message[from..];
    text.split(" (in row ").next().unwrap_or(text).to_string()
}

#[test]
fn every_catalog_function_gives_the_same_outcome_in_sqlite_and_duckdb() {
    let dir = std::env::temp_dir().join(format!("kvrec-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A sequence-layout model whose catalog holds the fixture's items: every function,
    // recommend_topk included, has a model it can run on.
    let model = dir.join("p.gguf");
    let items: Vec<i64> = vec![1, 260, 661, 914, 1193, 1196, 2028, 2355, 3408, 42, 7];
    kvrec_llm::tiny::write_tiny_catalog_llama(&model, 5, &items, true, None).unwrap();
    let model = model.to_str().unwrap().to_string();

    let db = common::connect(None);
    for name in ["p", "default"] {
        db.query_row(
            "SELECT kvrec_load_model(?1, ?2)",
            [name, &model],
            |_| Ok(()),
        )
        .unwrap();
    }
    let catalog = functions(&db);
    assert!(catalog.iter().any(|f| f.name == "recommend_topk"));
    let cases = cases(&catalog, &model);
    let sqlite: Vec<_> = cases.iter().map(|c| sqlite_outcome(&db, c)).collect();
    for (case, outcome) in cases.iter().zip(&sqlite) {
        if case.must_succeed {
            assert!(outcome.is_ok(), "{}: {outcome:?}", case.label);
        }
    }

    if !common::duckdb_available() {
        eprintln!("skipped the DuckDB half: python3 has no duckdb package");
        return;
    }
    let extension = common::duckdb_extension(&dir);
    let as_json = |a: &Sql| match a {
        Sql::Null => Value::Null,
        Sql::Integer(v) => json!(v),
        Sql::Text(t) => json!(t),
        other => panic!("no JSON form for {other:?}"),
    };
    let mut spec: Vec<Value> = vec![json!({
        "query": "SELECT name, type, params, returns FROM kvrec_functions()", "args": []
    })];
    spec.extend(cases.iter().map(
        |c| json!({"query": c.duckdb, "args": c.args.iter().map(as_json).collect::<Vec<_>>()}),
    ));
    let models = json!({"p": model, "default": model});
    let duck = common::run_duckdb_cases(
        &extension,
        std::path::Path::new(&model),
        &json!({"models": models, "cases": spec}),
        &dir,
    );

    // The catalog DuckDB lists is SQLite's.
    let duck_catalog: Vec<Value> = duck[0]["rows"].as_array().unwrap().clone();
    let sqlite_catalog: Vec<Value> = catalog
        .iter()
        .map(|f| {
            json!([
                f.name,
                if f.table { "table" } else { "scalar" },
                Value::from(f.params.clone()).to_string(),
                match &f.returns {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ])
        })
        .collect();
    assert_eq!(duck_catalog, sqlite_catalog);

    assert_eq!(duck.len(), cases.len() + 1);
    for ((case, s), d) in cases.iter().zip(&sqlite).zip(&duck[1..]) {
        let label = &case.label;
        eprintln!(
            "{label}: {}",
            match s {
                Ok((_, rows)) => format!("{} rows", rows.len()),
                Err(e) => e.chars().take(110).collect(),
            }
        );
        match (s, d.get("error")) {
            (Ok(_), _) if case.null_scalar => {}
            (Err(e), _) if case.null_scalar => {
                assert!(e.contains("is NULL or missing"), "{label}: {e}");
                assert_eq!(
                    d["rows"],
                    json!([[null]]),
                    "{label}: DuckDB passes NULL through"
                );
            }
            (Ok((columns, rows)), None) => {
                let d_columns: Vec<String> = serde_json::from_value(d["columns"].clone()).unwrap();
                if case.sqlite.starts_with("SELECT * FROM") {
                    assert_eq!(&d_columns, columns, "{label}: column order");
                }
                let norm = |rows: &Vec<Vec<Value>>| -> Vec<Vec<Value>> {
                    rows.iter()
                        .map(|r| r.iter().cloned().map(normal).collect())
                        .collect()
                };
                let d_rows: Vec<Vec<Value>> = serde_json::from_value(d["rows"].clone()).unwrap();
                assert_eq!(norm(&d_rows), norm(rows), "{label}: rows");
            }
            (Err(e), Some(de)) => assert_eq!(
                error_text(&case.function, de.as_str().unwrap()),
                error_text(&case.function, e),
                "{label}: errors"
            ),
            (s, _) => panic!("{label}: SQLite {s:?}, DuckDB {d}"),
        }
    }
}
