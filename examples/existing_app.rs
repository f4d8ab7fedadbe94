//! Loading kvrec into an existing SQLite application: open a database the app already has,
//! load the extension, register a model and print recommendations for a few users.
//!
//!   cargo build --release
//!   target/release/kvrec-finetune import --from ../shared/data/movielens/ml-100k --db movies.db
//!   target/release/kvrec-finetune tiny-model --out tiny.gguf     # or a trained model
//!   cargo run --release --example existing_app -- movies.db tiny.gguf
use std::path::PathBuf;

use rusqlite::{params, Connection};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(db_path), Some(model)) = (args.next(), args.next()) else {
        eprintln!("usage: existing_app <movies.db> <model.gguf> [libkvrec path]");
        std::process::exit(2);
    };
    let extension = args
        .next()
        .map_or_else(|| PathBuf::from("target/release/libkvrec"), PathBuf::from);

    let db = Connection::open(db_path)?;
    // SAFETY: loading a trusted extension; loading is switched off again right after.
    unsafe {
        db.load_extension_enable()?;
        db.load_extension(&extension, None::<&str>)?;
        db.load_extension_disable()?;
    }
    db.query_row("SELECT kvrec_load_model('default', ?1)", [&model], |_| {
        Ok(())
    })?;

    db.execute_batch(
        &std::fs::read_to_string("sql/requests.sql")?
            .replace(":first_user", "1")
            .replace(":last_user", "5"),
    )?;
    let mut stmt = db.prepare(
        "SELECT user_id, positive, recommend(user, history, candidates) FROM temp.kvrec_requests ORDER BY user_id",
    )?;
    let rows = stmt.query_map(params![], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (user, watched_next, ranked) = row?;
        let ids: Vec<i64> = serde_json::from_str(&ranked)?;
        let titles: Vec<String> = ids
            .iter()
            .take(3)
            .map(|id| {
                db.query_row("SELECT title FROM movies WHERE movie_id = ?1", [id], |r| {
                    r.get(0)
                })
            })
            .collect::<Result<_, _>>()?;
        let hit = ids
            .iter()
            .position(|&id| id == watched_next)
            .map_or("-".into(), |i| (i + 1).to_string());
        println!(
            "user {user}: top 3 {titles:?}; the movie they watched next is ranked {hit} of {}",
            ids.len()
        );
    }
    Ok(())
}
