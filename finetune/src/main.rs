use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use kvrec_finetune::baselines::{CoOccurrenceScorer, PopularityScorer, RandomScorer, Scorer};
use kvrec_finetune::protocol::{ProtocolConfig, Sequence, CANDIDATE_KEYS};
use kvrec_finetune::{db, eval, io, movielens, protocol, training_data};

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
    /// Build the paper's train and test requests (JSONL) and augmented training data.
    Data {
        /// The unpacked MovieLens folder.
        #[arg(long)]
        from: PathBuf,
        /// Output folder: train.jsonl, test.jsonl, train_sequences.jsonl, train-<variant>.jsonl, manifest.json
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        history: usize,
        #[arg(long, default_value_t = 10)]
        candidates: usize,
        #[arg(long, default_value_t = 1000)]
        test_users: usize,
        #[arg(long, default_value_t = 5)]
        min_interactions: usize,
        /// Augmentation variants to write (none, SC, SO, M1, M2, M3, or combinations like SC+SO).
        #[arg(long, value_delimiter = ',', default_value = "none,SO")]
        variants: Vec<String>,
        /// Enhanced copies per original (the paper's 1:4).
        #[arg(long, default_value_t = 4)]
        copies: usize,
        /// Extra candidate keys: genres, year, popularity.
        #[arg(long, value_delimiter = ',')]
        candidate_keys: Vec<String>,
    },
    /// Score rankers on test requests: HR@1/3/5, NDCG@3/5, Error Rate, requests/s.
    Eval {
        /// Test requests (JSONL from `data`).
        #[arg(long, conflicts_with = "sqlite")]
        test: Option<PathBuf>,
        /// Or a SQLite file holding a table of requests (see --table).
        #[arg(long)]
        sqlite: Option<PathBuf>,
        #[arg(long, default_value = "requests")]
        table: String,
        /// Training sequences for the popularity and co-occurrence baselines.
        #[arg(long)]
        sequences: PathBuf,
        /// Baselines to run: random, popularity, cooccurrence, or all.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        baseline: Vec<String>,
        /// Co-occurrence window in positions.
        #[arg(long, default_value_t = 10)]
        window: usize,
        /// Co-occurrence: weight of the i-th most recent history item is decay^i.
        #[arg(long, default_value_t = 0.8)]
        decay: f64,
        /// Co-occurrence: divide by (candidate popularity + 1)^normalize.
        #[arg(long, default_value_t = 0.5)]
        normalize: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Print JSON instead of a markdown table.
        #[arg(long)]
        json: bool,
        /// Also write the table (or JSON) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
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
        Command::Data {
            from,
            out,
            seed,
            history,
            candidates,
            test_users,
            min_interactions,
            variants,
            copies,
            candidate_keys,
        } => {
            if let Some(bad) = candidate_keys
                .iter()
                .find(|k| !CANDIDATE_KEYS.contains(&k.as_str()))
            {
                bail!(
                    "unknown candidate key '{bad}'; use any of {}",
                    CANDIDATE_KEYS.join(", ")
                );
            }
            let start = Instant::now();
            let config = ProtocolConfig {
                seed,
                min_interactions,
                max_history: history,
                candidates,
                test_users,
                candidate_keys,
            };
            let data = protocol::build(&movielens::read(&from)?, &config);
            std::fs::create_dir_all(&out)?;
            io::write_jsonl(&out.join("train.jsonl"), &data.train)?;
            io::write_jsonl(&out.join("test.jsonl"), &data.test)?;
            io::write_jsonl(&out.join("train_sequences.jsonl"), &data.train_sequences)?;
            let mut written = json!({});
            for variant in &variants {
                let rows = training_data::rows(&data.train, variant, copies, seed)?;
                let file = format!("train-{}.jsonl", variant.replace('+', "_"));
                io::write_jsonl(&out.join(&file), &rows)?;
                written[file] = json!(rows.len());
            }
            let manifest = json!({
                "source": from.display().to_string(),
                "config": config,
                "copies": copies,
                "train": data.train.len(),
                "test": data.test.len(),
                "users": data.train_sequences.len(),
                "training_files": written,
            });
            std::fs::write(
                out.join("manifest.json"),
                serde_json::to_string_pretty(&manifest)?,
            )?;
            eprintln!(
                "{} train and {} test requests, variants {:?}, written to {} in {:.1} s",
                data.train.len(),
                data.test.len(),
                variants,
                out.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::Eval {
            test,
            sqlite,
            table,
            sequences,
            baseline,
            window,
            decay,
            normalize,
            seed,
            json,
            out,
        } => {
            let instances = match (test, sqlite) {
                (Some(path), _) => io::read_jsonl(&path)?,
                (None, Some(path)) => io::read_sqlite(&path, &table)?,
                (None, None) => {
                    bail!("pass --test <test.jsonl> or --sqlite <file> [--table <name>]")
                }
            };
            let sequences: Vec<Sequence> = io::read_jsonl(&sequences)?;
            let all = baseline.iter().any(|b| b == "all");
            let wants = |name: &str| all || baseline.iter().any(|b| b == name);
            let mut scorers: Vec<Box<dyn Scorer>> = Vec::new();
            if wants("random") {
                scorers.push(Box::new(RandomScorer { seed }));
            }
            if wants("popularity") {
                scorers.push(Box::new(PopularityScorer::new(&sequences)));
            }
            if wants("cooccurrence") {
                let mut scorer = CoOccurrenceScorer::new(&sequences, window);
                scorer.decay = decay;
                scorer.normalize = normalize;
                scorers.push(Box::new(scorer));
            }
            if scorers.is_empty() {
                bail!("no known baseline in {baseline:?}; use random, popularity, cooccurrence or all");
            }
            let rows = scorers
                .iter()
                .map(|s| eval::evaluate(s.as_ref(), &instances))
                .collect::<Result<Vec<_>>>()?;
            let text = if json {
                serde_json::to_string_pretty(&rows)?
            } else {
                eval::markdown(&rows)
            };
            println!("{text}");
            if let Some(path) = out {
                std::fs::write(path, &text)?;
            }
        }
    }
    Ok(())
}
