use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use kvrec_finetune::interactions::Interactions;
use kvrec_finetune::protocol::{ProtocolConfig, TieOrder, CANDIDATE_KEYS};
use kvrec_finetune::{dataset, db, movielens, recipe};

#[derive(Args)]
pub struct ImportArgs {
    /// The unpacked MovieLens folder, e.g. ../shared/data/movielens/ml-100k
    #[arg(long)]
    from: PathBuf,
    /// The SQLite file to create or update.
    #[arg(long)]
    db: PathBuf,
}

impl ImportArgs {
    pub fn run(self) -> Result<()> {
        let start = Instant::now();
        let data = movielens::read(&self.from)?;
        let n = db::import(&self.db, &data)?;
        eprintln!(
            "imported {} users, {} movies, {} ratings from {} into {} in {:.1} s",
            n.users,
            n.movies,
            n.ratings,
            self.from.display(),
            self.db.display(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct DataArgs {
    /// The unpacked MovieLens folder.
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    from: Option<PathBuf>,
    /// A recipe (TOML) with SQL queries over your own SQLite/DuckDB database or CSV
    /// files: interactions (user, item, time [, rating]), and optionally item and user
    /// keys. Your ids may be text or any integers; the model answers with them.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Output folder: train.jsonl, test.jsonl, train_sequences.jsonl, train-<variant>.jsonl, manifest.json
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = ProtocolConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = ProtocolConfig::default().max_history)]
    history: usize,
    #[arg(long, default_value_t = ProtocolConfig::default().candidates)]
    candidates: usize,
    #[arg(long, default_value_t = ProtocolConfig::default().test_users)]
    test_users: usize,
    #[arg(long, default_value_t = ProtocolConfig::default().min_interactions)]
    min_interactions: usize,
    /// Augmentation variants to write (none, SC, SO, M1, M2, M3, or combinations like SC+SO).
    #[arg(long, value_delimiter = ',', default_value = "none,SO")]
    variants: Vec<String>,
    /// Enhanced copies per original (the paper's 1:4).
    #[arg(long, default_value_t = 4)]
    copies: usize,
    /// Extra candidate keys rendered beside each candidate (see `ProtocolConfig`).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(CANDIDATE_KEYS.iter().copied()))]
    candidate_keys: Vec<String>,
    /// Training requests per user (targets at the second-to-last item and before it).
    #[arg(long, default_value_t = ProtocolConfig::default().train_targets)]
    train_targets: usize,
    /// Also write the train and test requests into this SQLite file's `requests` table.
    #[arg(long)]
    sqlite: Option<PathBuf>,
    /// Order of ratings within the same second: movie-id (SASRec's rule) or file (the
    /// ratings file's order, which carries no id cue).
    #[arg(long, value_enum, default_value_t = ProtocolConfig::default().tie_order)]
    tie_order: TieOrder,
    /// A GGUF language model (e.g. the one `scripts/fetch_gemma.sh` prints) that reads each
    /// item's title and genres; writes their vectors to item_vectors.jsonl for `train
    /// --item-vectors`.
    #[arg(long)]
    item_text_model: Option<PathBuf>,
    /// CPU threads for --item-text-model (default: all cores).
    #[arg(long)]
    threads: Option<u32>,
}

impl DataArgs {
    fn config(&self) -> ProtocolConfig {
        ProtocolConfig {
            seed: self.seed,
            min_interactions: self.min_interactions,
            max_history: self.history,
            candidates: self.candidates,
            test_users: self.test_users,
            candidate_keys: self.candidate_keys.clone(),
            train_targets: self.train_targets,
            tie_order: self.tie_order,
        }
    }

    pub fn run(self) -> Result<()> {
        let start = Instant::now();
        let config = self.config();
        let (source, interactions) = match (&self.from, &self.recipe) {
            (Some(dir), _) => (dir, Interactions::from(&movielens::read(dir)?)),
            (None, Some(path)) => (path, recipe::read(path)?),
            (None, None) => bail!("pass --from <MovieLens folder> or --recipe <recipe.toml>"),
        };
        let extras = dataset::Extras {
            item_text_model: self.item_text_model.clone(),
            threads: self.threads,
            variants: self.variants.clone(),
            copies: self.copies,
            sqlite: self.sqlite.clone(),
        };
        let data = dataset::write(&interactions, &config, &extras, source, &self.out)?;
        eprintln!(
            "{} train and {} test requests, variants {:?}, written to {} in {:.1} s",
            data.train.len(),
            data.test.len(),
            self.variants,
            self.out.display(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
