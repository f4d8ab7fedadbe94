//! JSONL files and SQLite tables of requests.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::{Instance, Split};

/// Writes `path` through a temporary file renamed into place, so an interrupted write never
/// leaves a partial file that a later step would read as complete.
pub fn write_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A fresh `<dir>.partial` folder to write a whole output folder into before
/// [`finish_dir`] renames it to `dir`.
/// A `dir` that exists must be an earlier output (it holds `marker`) or empty, since
/// [`finish_dir`] replaces it.
pub fn partial_dir(dir: &Path, marker: &str) -> Result<std::path::PathBuf> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(marker).exists() {
            anyhow::bail!(
                "{} exists and is not an earlier output (it has no {marker}); choose a new \
                 or empty --out folder",
                dir.display()
            );
        }
    }
    let mut name = dir.as_os_str().to_owned();
    name.push(".partial");
    let partial = std::path::PathBuf::from(name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the leftover {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    Ok(partial)
}

/// Replaces `dir` (if any) with the completed `partial` folder.
pub fn finish_dir(partial: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(partial, dir).with_context(|| format!("writing {}", dir.display()))
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |out| Ok(out.write_all(bytes)?))
}

pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    write_with(path, |out| {
        for item in items {
            serde_json::to_writer(&mut *out, item)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
}

pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        items.push(
            serde_json::from_str(&line).with_context(|| {
                format!("{} line {}: not a request object", path.display(), i + 1)
            })?,
        );
    }
    Ok(items)
}

/// Test instances from a table in a DuckDB database file, read through the `duckdb` Python
/// package (kvrec does not link DuckDB itself): DuckDB writes the table as JSON lines with
/// `user`, `history` and `candidates` as JSON whether they are STRUCT / LIST values or JSON
/// text, and only `split = 'test'` rows when the table has a split column.
pub fn read_duckdb(path: &Path, table: &str) -> Result<Vec<Instance>> {
    const SCRIPT: &str = r#"
import duckdb, sys
path, table, out = sys.argv[1:4]
con = duckdb.connect(path, read_only=True)
quoted = '"' + table.replace('"', '""') + '"'
columns = [r[0] for r in con.execute(f"DESCRIBE {quoted}").fetchall()]
split = "split" if "split" in columns else "'test'"
where = "WHERE split = 'test'" if "split" in columns else ""
con.execute(f"""COPY (SELECT user_id, {split} AS split, "user"::JSON AS "user",
    history::JSON AS history, candidates::JSON AS candidates, positive
    FROM {quoted} {where}) TO '{out.replace("'", "''")}' (FORMAT json)""")
"#;
    let out = std::env::temp_dir().join(format!("kvrec-duckdb-{}.jsonl", std::process::id()));
    let result = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .arg(table)
        .arg(&out)
        .output()
        .context(
            "running python3 to read the DuckDB file (needs python3 with the duckdb package)",
        )?;
    if !result.status.success() {
        anyhow::bail!(
            "reading table {table} of {}: {}(needs python3 with the duckdb package, and columns user_id, user, history, candidates, positive)",
            path.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    let instances = read_jsonl(&out);
    let _ = std::fs::remove_file(&out);
    instances
}

/// Requests from a SQLite table with columns `user_id, user, history, candidates, positive`
/// (JSON text), e.g. one made from `temp.kvrec_requests` of sql/requests.sql. A table with a
/// `split` column (as `data --sqlite` writes) gives its test rows only.
pub fn read_sqlite(path: &Path, table: &str) -> Result<Vec<Instance>> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", path.display()))?;
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let has_split: bool = db
        .query_row(
            &format!(
                "SELECT count(*) FROM pragma_table_info('{}') WHERE name = 'split'",
                table.replace('\'', "''")
            ),
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .unwrap_or(false);
    let filter = if has_split {
        " WHERE split = 'test'"
    } else {
        ""
    };
    let mut stmt = db
        .prepare(&format!(
            "SELECT user_id, user, history, candidates, positive FROM {quoted}{filter}"
        ))
        .with_context(|| {
            format!("{table} needs columns user_id, user, history, candidates, positive")
        })?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user_id, user, history, candidates, positive) = row?;
        out.push(Instance {
            user_id,
            split: Split::Test,
            user: serde_json::from_str(&user)?,
            history: serde_json::from_str(&history)?,
            candidates: serde_json::from_str(&candidates)?,
            positive,
        });
    }
    Ok(out)
}
