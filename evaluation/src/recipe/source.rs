//! Where a recipe's queries run: a SQLite database (with CSV files attached as tables), or a
//! DuckDB database read through the `duckdb` Python package (kvrec does not link DuckDB; its
//! SQL also reads Parquet and CSV files directly, e.g. `FROM 'orders.parquet'`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value;

/// One value of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A query's result: column names in order, then the rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

pub enum Source {
    Sqlite(Connection),
    Duckdb(PathBuf),
}

impl Source {
    /// A SQLite database opened read-only (an in-memory one when there is only CSV), with
    /// each `(name, file)` of `csv` as a table `name` (all columns text, the first line the
    /// header).
    pub fn sqlite(db: Option<&Path>, csv: &[(String, PathBuf)]) -> Result<Source> {
        let conn = match db {
            Some(path) => {
                if !path.is_file() {
                    bail!(
                        "the recipe's SQLite database {} does not exist; fix [source] sqlite \
                         (relative paths are relative to the recipe file)",
                        path.display()
                    );
                }
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .with_context(|| format!("opening {}", path.display()))?
            }
            None => Connection::open_in_memory()?,
        };
        rusqlite::vtab::csvtab::load_module(&conn)?;
        for (name, file) in csv {
            if !file.is_file() {
                bail!(
                    "the recipe's CSV table '{name}' names {}, which does not exist; fix \
                     [source.csv] (relative paths are relative to the recipe file)",
                    file.display()
                );
            }
            let quote = |s: &str| s.replace('\'', "''");
            conn.execute_batch(&format!(
                "CREATE VIRTUAL TABLE temp.\"{}\" USING csv(filename='{}', header=yes)",
                name.replace('"', "\"\""),
                quote(&file.to_string_lossy())
            ))
            .with_context(|| format!("reading {} as table '{name}'", file.display()))?;
        }
        Ok(Source::Sqlite(conn))
    }

    pub fn duckdb(path: &Path) -> Result<Source> {
        if !path.is_file() {
            bail!(
                "the recipe's DuckDB database {} does not exist; fix [source] duckdb \
                 (relative paths are relative to the recipe file)",
                path.display()
            );
        }
        Ok(Source::Duckdb(path.to_path_buf()))
    }

    /// Runs `sql`; `what` names the query in errors (e.g. `[interactions] sql`).
    pub fn query(&self, sql: &str, what: &str) -> Result<Rows> {
        match self {
            Source::Sqlite(conn) => sqlite_query(conn, sql, what),
            Source::Duckdb(path) => duckdb_query(path, sql, what),
        }
    }
}

/// The tables and views a query could name, for "no such table" errors.
fn sqlite_tables(conn: &Connection) -> Vec<String> {
    conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
         UNION ALL SELECT name FROM temp.sqlite_schema WHERE type = 'table' ORDER BY 1",
    )
    .and_then(|mut s| {
        s.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .unwrap_or_default()
}

fn sqlite_query(conn: &Connection, sql: &str, what: &str) -> Result<Rows> {
    let mut statement = conn.prepare(sql).map_err(|e| {
        let mut message = format!("{what} failed: {e}");
        if e.to_string().contains("no such table") {
            let tables = sqlite_tables(conn);
            message.push_str(&format!(
                "; the source has tables: {}",
                if tables.is_empty() {
                    "none".to_string()
                } else {
                    tables.join(", ")
                }
            ));
        }
        anyhow::anyhow!(message)
    })?;
    let columns: Vec<String> = statement.column_names().map(String::from).collect();
    let n = columns.len();
    let mut rows = Vec::new();
    let mut cursor = statement
        .query([])
        .with_context(|| format!("{what} failed"))?;
    while let Some(row) = cursor.next().with_context(|| format!("{what} failed"))? {
        let mut cells = Vec::with_capacity(n);
        for (i, column) in columns.iter().enumerate() {
            cells.push(match row.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(_) => bail!(
                    "{what}: row {} column '{}' is a BLOB; select text or numbers (CAST(... AS TEXT))",
                    rows.len() + 1,
                    column
                ),
            });
        }
        rows.push(cells);
    }
    Ok(Rows { columns, rows })
}

fn duckdb_query(path: &Path, sql: &str, what: &str) -> Result<Rows> {
    // Column names first (a JSON line), then one JSON array per row: arrays keep the order
    // and the names survive an empty result.
    const SCRIPT: &str = r#"
import duckdb, json, sys
path, sql, out = sys.argv[1:4]
con = duckdb.connect(path, read_only=True)
cur = con.execute(sql)
names = [d[0] for d in cur.description]
def cell(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
with open(out, "w") as f:
    f.write(json.dumps(names) + "\n")
    while True:
        batch = cur.fetchmany(10000)
        if not batch:
            break
        for row in batch:
            f.write(json.dumps([cell(v) for v in row]) + "\n")
"#;
    let out = std::env::temp_dir().join(format!(
        "kvrec-recipe-{}-{}.jsonl",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .arg(sql)
        .arg(&out)
        .output()
        .context("running python3 to read the DuckDB database (install python3)")?;
    if !result.status.success() {
        let _ = std::fs::remove_file(&out);
        let stderr = String::from_utf8_lossy(&result.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        if stderr.contains("No module named 'duckdb'") {
            bail!("{what}: reading a DuckDB source needs the duckdb Python package: pip install duckdb");
        }
        bail!("{what} failed: {last}");
    }
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    let text = text.context("reading DuckDB's result")?;
    let mut lines = text.lines();
    let columns: Vec<String> = serde_json::from_str(lines.next().unwrap_or("[]"))?;
    let rows = lines
        .map(|line| {
            let values: Vec<Value> = serde_json::from_str(line)?;
            Ok(values
                .into_iter()
                .map(|v| match v {
                    Value::Null => Cell::Null,
                    Value::Number(n) => n
                        .as_i64()
                        .map(Cell::Int)
                        .unwrap_or_else(|| Cell::Real(n.as_f64().unwrap_or(f64::NAN))),
                    Value::String(s) => Cell::Text(s),
                    Value::Bool(b) => Cell::Int(i64::from(b)),
                    other => Cell::Text(other.to_string()),
                })
                .collect())
        })
        .collect::<Result<Vec<Vec<Cell>>>>()?;
    Ok(Rows { columns, rows })
}
