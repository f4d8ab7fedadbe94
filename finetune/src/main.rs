use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kvrec_core::options::Mode;
use serde_json::json;

use kvrec_finetune::baselines::{CoOccurrenceScorer, PopularityScorer, RandomScorer, Scorer};
use kvrec_finetune::protocol::{ProtocolConfig, Sequence, CANDIDATE_KEYS};
use kvrec_finetune::{bench, db, eval, io, movielens, protocol, training_data};

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
    /// Benchmark recommend() through SQLite against raw llama.cpp on the same prompts.
    Bench {
        #[arg(long)]
        model: PathBuf,
        /// Requests (JSONL from `data`).
        #[arg(long)]
        test: PathBuf,
        #[arg(long, default_value_t = 100)]
        n: usize,
        /// The built extension.
        #[arg(long, default_value = "target/release/libkvrec.so")]
        extension: PathBuf,
        /// Load options (JSON), e.g. '{"n_threads": 2}'.
        #[arg(long, default_value = "{}")]
        options: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the tiny random test model (llama architecture, 0.2 M parameters) as GGUF.
    TinyModel {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
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
        sequences: Option<PathBuf>,
        /// Also (or only, with --baseline none) evaluate this GGUF model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// How the model ranks: score (every candidate, ER 0) or generate (the paper's way).
        #[arg(long, value_delimiter = ',', default_value = "score")]
        mode: Vec<String>,
        /// Evaluate only the first N requests.
        #[arg(long)]
        limit: Option<usize>,
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
        Command::Bench {
            model,
            test,
            n,
            extension,
            options,
            json,
        } => {
            let mut instances: Vec<kvrec_finetune::protocol::Instance> = io::read_jsonl(&test)?;
            instances.truncate(n);
            let rows = bench::run(&model, &extension, &instances, &options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", bench::markdown(&rows));
            }
        }
        Command::TinyModel { out, seed } => {
            kvrec_llm::tiny::write_tiny_llama(&out, seed, None)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Eval {
            test,
            sqlite,
            table,
            sequences,
            model,
            mode,
            limit,
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
            let mut instances = instances;
            if let Some(n) = limit {
                instances.truncate(n);
            }
            let none = baseline.iter().any(|b| b == "none");
            let sequences: Vec<Sequence> = match &sequences {
                Some(path) => io::read_jsonl(path)?,
                None if none => Vec::new(),
                None => bail!("pass --sequences <train_sequences.jsonl> for the baselines, or --baseline none"),
            };
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
            if scorers.is_empty() && !none {
                bail!("no known baseline in {baseline:?}; use random, popularity, cooccurrence, all or none");
            }
            let mut rows = scorers
                .iter()
                .map(|s| eval::evaluate(s.as_ref(), &instances))
                .collect::<Result<Vec<_>>>()?;
            if let Some(path) = model {
                let name = path
                    .file_stem()
                    .map_or("model".into(), |s| s.to_string_lossy().into_owned());
                let path = path.to_str().context("model path is not UTF-8")?;
                kvrec_llm::registry::load(&name, path, &kvrec_core::options::Options::default())?;
                let loaded = kvrec_llm::registry::get(&name)?;
                for m in &mode {
                    let mode = match m.as_str() {
                        "score" => Mode::Score,
                        "generate" => Mode::Generate,
                        other => bail!("unknown mode '{other}'; use score or generate"),
                    };
                    rows.push(eval::evaluate_model(&loaded, &instances, mode)?);
                }
            }
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
