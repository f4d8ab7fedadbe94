use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kvrec_finetune::protocol::Instance;
use kvrec_finetune::{bench, io};

#[derive(Args)]
pub struct BenchArgs {
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
    /// n_batch of the contexts that score many requests per decode (rank_batch).
    #[arg(long, default_value_t = 2048)]
    batch_n_batch: u32,
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    pub fn run(self) -> Result<()> {
        let mut instances: Vec<Instance> = io::read_jsonl(&self.test)?;
        instances.truncate(self.n);
        let rows = bench::run(
            &self.model,
            &self.extension,
            &instances,
            &self.options,
            self.batch_n_batch,
        )?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        println!("{}", bench::markdown(&rows));
        if let Some(ratio) = bench::scaling(&rows) {
            println!(
                "{} callers at once: {ratio:.2}x the requests/s of one caller",
                bench::CALLERS
            );
        }
        let devices = kvrec_llm::devices();
        println!(
            "llama.cpp devices: {}",
            if devices.is_empty() {
                "none found".to_string()
            } else {
                devices.join("; ")
            }
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct TinyModelArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

impl TinyModelArgs {
    pub fn run(self) -> Result<()> {
        kvrec_llm::tiny::write_tiny_llama(&self.out, self.seed, None)?;
        eprintln!("wrote {}", self.out.display());
        Ok(())
    }
}
