//! The SQLite side: schema migrations and the MovieLens importer.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{params, Connection};

use crate::movielens::Dataset;
use crate::protocol::{Instance, Split};

/// Schema migrations in order; `PRAGMA user_version` records how many were applied.
const MIGRATIONS: [&str; 2] = [
    include_str!("../../migrations/0001_movielens.sql"),
    include_str!("../../migrations/0002_requests.sql"),
];

/// Brings `db` up to the newest schema.
pub fn migrate(db: &Connection) -> Result<()> {
    let applied: usize = db.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        db.execute_batch(sql)
            .with_context(|| format!("applying migration {}", i + 1))?;
        db.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(())
}

/// Counts of what an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub users: usize,
    pub movies: usize,
    pub ratings: usize,
}

/// Writes `data` into the database at `path` (created if needed), replacing rows with the
/// same keys, in one transaction.
pub fn import(path: &Path, data: &Dataset) -> Result<Imported> {
    let mut db = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    migrate(&db)?;
    let tx = db.transaction()?;
    {
        let mut users = tx.prepare(
            "INSERT OR REPLACE INTO users(user_id, gender, age, occupation, zip_code) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for u in &data.users {
            users.execute(params![u.id, u.gender, u.age, u.occupation, u.zip_code])?;
        }
        let mut movies = tx.prepare(
            "INSERT OR REPLACE INTO movies(movie_id, title, genres, year) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for m in &data.movies {
            movies.execute(params![m.id, m.title, m.genres, m.year])?;
        }
        let mut ratings = tx.prepare(
            "INSERT OR REPLACE INTO ratings(user_id, movie_id, rating, ts) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for r in &data.ratings {
            ratings.execute(params![r.user_id, r.movie_id, r.rating, r.ts])?;
        }
    }
    tx.commit()?;
    Ok(Imported {
        users: data.users.len(),
        movies: data.movies.len(),
        ratings: data.ratings.len(),
    })
}

/// Replaces the `requests` table's rows with `instances`, in one transaction.
pub fn write_requests(path: &Path, instances: &[&Instance]) -> Result<usize> {
    let mut db = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    migrate(&db)?;
    let tx = db.transaction()?;
    tx.execute("DELETE FROM requests", [])?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO requests(user_id, split, user, history, candidates, positive) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for i in instances {
            let split = match i.split {
                Split::Train => "train",
                Split::Test => "test",
            };
            insert.execute(params![
                i.user_id,
                split,
                i.user.to_string(),
                i.history.to_string(),
                i.candidates.to_string(),
                i.positive
            ])?;
        }
    }
    tx.commit()?;
    Ok(instances.len())
}
