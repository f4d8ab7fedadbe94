//! The `kvrec-finetune` command line: one `Args` struct per command, by pipeline stage. The
//! defaults shown in `--help` are read from the library's configs (`ProtocolConfig`,
//! `TrainConfig`, `CoWatchParams`), so each lives in one place.

mod bench;
mod data;
mod eval;
mod fit;
mod train;

use anyhow::Result;
use clap::{ArgMatches, Parser, Subcommand};

/// kvrec's data, training and evaluation tool.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Your data to a served model in one command: data, a training configuration derived
    /// from the data, training within a time budget, export, and a report against
    /// popularity and co-occurrence on held-out users.
    Fit(Box<fit::FitArgs>),
    /// Import a MovieLens folder (ML-1M or ML-100K layout) into a SQLite database.
    Import(data::ImportArgs),
    /// Build the paper's train and test requests (JSONL) and augmented training data.
    Data(data::DataArgs),
    /// Train a llama-architecture model from scratch on training rows (candle, CPU).
    Train(Box<train::TrainArgs>),
    /// Write a training run's latest checkpoint as a GGUF that llama.cpp and recommend() load.
    Export(train::ExportArgs),
    /// Benchmark recommend() through SQLite against raw llama.cpp on the same prompts.
    Bench(bench::BenchArgs),
    /// Write the tiny random test model (llama architecture, 0.2 M parameters) as GGUF.
    TinyModel(bench::TinyModelArgs),
    /// Score rankers on test requests: HR@1/3/5, NDCG@3/5, Error Rate, requests/s.
    Eval(eval::EvalArgs),
}

impl Command {
    pub fn run(self, matches: &ArgMatches) -> Result<()> {
        let given = |name: &str| {
            matches
                .subcommand_matches(name)
                .cloned()
                .unwrap_or_default()
        };
        match self {
            Command::Fit(args) => args.run(&given("fit")),
            Command::Import(args) => args.run(),
            Command::Data(args) => args.run(),
            Command::Train(args) => args.run(&given("train")),
            Command::Export(args) => args.run(),
            Command::Bench(args) => args.run(),
            Command::TinyModel(args) => args.run(),
            Command::Eval(args) => args.run(),
        }
    }
}
