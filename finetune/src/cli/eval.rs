use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use kvrec_core::options::{Mode, Options};
use kvrec_finetune::baselines::{CoOccurrenceScorer, PopularityScorer, RandomScorer, Scorer};
use kvrec_finetune::cowatch::CoWatchParams;
use kvrec_finetune::protocol::{Instance, Sequence};
use kvrec_finetune::{catalog_eval, eval, io};
use kvrec_llm::model::Model;

/// How `eval` has a model rank.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RankMode {
    /// Every candidate scored (Error Rate 0).
    Score,
    /// Greedy generation, parsed (the paper's way).
    Generate,
}

impl From<RankMode> for Mode {
    fn from(mode: RankMode) -> Mode {
        match mode {
            RankMode::Score => Mode::Score,
            RankMode::Generate => Mode::Generate,
        }
    }
}

/// The rankers that need no model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    Random,
    Popularity,
    Cooccurrence,
    All,
    /// Only the model.
    None,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Test requests (JSONL from `data`).
    #[arg(long, conflicts_with = "sqlite")]
    test: Option<PathBuf>,
    /// Or a SQLite file holding a table of requests (see --table).
    #[arg(long)]
    sqlite: Option<PathBuf>,
    /// Or a DuckDB file holding a table of requests (read with python3's duckdb package).
    #[arg(long, conflicts_with_all = ["test", "sqlite"])]
    duckdb: Option<PathBuf>,
    #[arg(long, default_value = "requests")]
    table: String,
    /// Training sequences for the popularity and co-occurrence baselines.
    #[arg(long)]
    sequences: Option<PathBuf>,
    /// Also (or only, with --baseline none) evaluate this GGUF model; repeat it to compare
    /// models on the same requests (the last is paired against every other method).
    #[arg(long)]
    model: Vec<PathBuf>,
    /// How the model ranks: score (every candidate, ER 0) or generate (the paper's way).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "score")]
    mode: Vec<RankMode>,
    /// Evaluate only the first N requests.
    #[arg(long)]
    limit: Option<usize>,
    /// Baselines to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    baseline: Vec<Baseline>,
    /// Co-occurrence window in positions.
    #[arg(long, default_value_t = CoWatchParams::default().window)]
    window: usize,
    /// Co-occurrence: weight of the i-th most recent history item is decay^i.
    #[arg(long, default_value_t = CoWatchParams::default().decay)]
    decay: f64,
    /// Co-occurrence: divide by (candidate popularity + 1)^normalize.
    #[arg(long, default_value_t = CoWatchParams::default().normalize)]
    normalize: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print JSON instead of a markdown table.
    #[arg(long)]
    json: bool,
    /// Also write the table (or JSON) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write each request's rank of the positive per method (CSV) to this file.
    #[arg(long)]
    per_request: Option<PathBuf>,
    /// Rank the whole catalog instead of the 10 candidates: every item of --sequences the
    /// user has not trained on, the model through recommend_topk's code (HR@1/10/50,
    /// NDCG@10).
    #[arg(long, requires = "sequences")]
    catalog: bool,
}

impl EvalArgs {
    fn instances(&self) -> Result<Vec<Instance>> {
        let mut instances = match (&self.test, &self.sqlite, &self.duckdb) {
            (Some(path), _, _) => io::read_jsonl(path)?,
            (None, Some(path), _) => io::read_sqlite(path, &self.table)?,
            (None, None, Some(path)) => io::read_duckdb(path, &self.table)?,
            (None, None, None) => {
                bail!(
                    "pass --test <test.jsonl>, --sqlite <file> or --duckdb <file> [--table <name>]"
                )
            }
        };
        if let Some(n) = self.limit {
            instances.truncate(n);
        }
        Ok(instances)
    }

    fn scorers(&self, sequences: &[Sequence]) -> Vec<Box<dyn Scorer>> {
        let wants = |b: Baseline| self.baseline.iter().any(|&x| x == b || x == Baseline::All);
        let mut scorers: Vec<Box<dyn Scorer>> = Vec::new();
        if wants(Baseline::Random) {
            scorers.push(Box::new(RandomScorer { seed: self.seed }));
        }
        if wants(Baseline::Popularity) {
            scorers.push(Box::new(PopularityScorer::new(sequences)));
        }
        if wants(Baseline::Cooccurrence) {
            let params = CoWatchParams {
                window: self.window,
                decay: self.decay,
                normalize: self.normalize,
            };
            scorers.push(Box::new(CoOccurrenceScorer::new(sequences, params)));
        }
        scorers
    }

    /// The models, loaded under [`registry_names`].
    fn models(&self) -> Result<Vec<std::sync::Arc<Model>>> {
        let names = registry_names(&self.model)?;
        for (name, path) in names.iter().zip(&self.model) {
            let text = path.to_str().context("model path is not UTF-8")?;
            kvrec_llm::registry::load(name, text, &Options::default())?;
        }
        names
            .iter()
            .map(|name| Ok(kvrec_llm::registry::get(name)?))
            .collect()
    }

    pub fn run(self) -> Result<()> {
        let instances = self.instances()?;
        let only_model = self.baseline.contains(&Baseline::None);
        let sequences: Vec<Sequence> = match &self.sequences {
            Some(path) => io::read_jsonl(path)?,
            None if only_model => Vec::new(),
            None => bail!(
                "pass --sequences <train_sequences.jsonl> for the baselines, or --baseline none"
            ),
        };
        let scorers = self.scorers(&sequences);
        let models = self.models()?;
        let text = if self.catalog {
            let eligible = catalog_eval::Eligible::new(&sequences);
            let mut rows = scorers
                .iter()
                .map(|s| catalog_eval::evaluate(s.as_ref(), &instances, &eligible))
                .collect::<Result<Vec<_>>>()?;
            for model in &models {
                rows.push(catalog_eval::evaluate_model(model, &instances, &eligible)?);
            }
            if self.json {
                serde_json::to_string_pretty(&rows)?
            } else {
                catalog_eval::markdown(&rows)
            }
        } else {
            let mut rows = scorers
                .iter()
                .map(|s| eval::evaluate(s.as_ref(), &instances))
                .collect::<Result<Vec<_>>>()?;
            for model in &models {
                for &mode in &self.mode {
                    rows.push(eval::evaluate_model(model, &instances, mode.into())?);
                }
            }
            if let Some(path) = &self.per_request {
                io::write_atomically(path, eval::per_request_csv(&rows, &instances).as_bytes())?;
            }
            if self.json {
                serde_json::to_string_pretty(&rows)?
            } else {
                format!(
                    "{}\n{}",
                    eval::markdown(&rows),
                    eval::paired_markdown(&rows, self.seed)
                )
            }
        };
        println!("{text}");
        if let Some(path) = &self.out {
            io::write_atomically(path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// Each model's name in the table: its file's stem, or its folder and stem where two stems
/// are the same (every run exports `model.gguf`), so that the rows tell the models apart.
fn registry_names(paths: &[PathBuf]) -> Result<Vec<String>> {
    let stem = |p: &PathBuf| {
        p.file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    };
    let mut names: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        let mut name = stem(path);
        if paths.iter().filter(|p| stem(p) == name).count() > 1 {
            let folder = path
                .parent()
                .and_then(|p| p.file_name())
                .map_or(String::new(), |f| f.to_string_lossy().into_owned());
            name = format!("{folder}/{name}");
        }
        if names.contains(&name) {
            bail!(
                "--model {} is given twice; pass each model once",
                path.display()
            );
        }
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_named_by_stem_or_by_folder_where_stems_repeat() {
        let paths: Vec<PathBuf> = [
            "models/kvrec-default.gguf",
            "runs/a/model.gguf",
            "runs/b/model.gguf",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            registry_names(&paths).unwrap(),
            ["kvrec-default", "a/model", "b/model"]
        );
        let twice = [
            PathBuf::from("runs/a/model.gguf"),
            PathBuf::from("runs/a/model.gguf"),
        ];
        let error = registry_names(&twice).unwrap_err().to_string();
        assert!(error.contains("given twice"), "{error}");
    }
}
