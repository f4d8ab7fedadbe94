use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

use kvrec_finetune::{db, movielens};

/// kvrec's data, training and evaluation tool.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a MovieLens folder (ML-1M or ML-100K layout) into a SQLite database.
    Import {
        /// The unpacked MovieLens folder, e.g. ../shared/data/movielens/ml-100k
        #[arg(long)]
        from: PathBuf,
        /// The SQLite file to create or update.
        #[arg(long)]
        db: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Import { from, db: path } => {
            let start = Instant::now();
            let data = movielens::read(&from)?;
            let n = db::import(&path, &data)?;
            eprintln!(
                "imported {} users, {} movies, {} ratings from {} into {} in {:.1} s",
                n.users,
                n.movies,
                n.ratings,
                from.display(),
                path.display(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
