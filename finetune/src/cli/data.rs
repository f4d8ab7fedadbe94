use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use kvrec_finetune::interactions::Interactions;
use kvrec_finetune::protocol::{self, ProtocolConfig, TieOrder, CANDIDATE_KEYS};
use kvrec_finetune::train::item_keys::{self, ITEM_KEYS_FILE};
use kvrec_finetune::train::item_vectors::{self, ITEM_VECTORS_FILE};
use kvrec_finetune::{db, io, movielens, recipe, training_data};
use serde_json::json;

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
        let data = protocol::build_from(&interactions, &config);
        let min = config.min_interactions;
        if data.train_sequences.is_empty() {
            bail!(
                "no user has {min} interactions with items that have {min} too (the \
                 {min}-core filter); lower --min-interactions or add data"
            );
        }
        // Everything goes to <out>.partial first and is renamed into place at the end, so an
        // interrupted run never leaves a folder that looks complete.
        let out = io::partial_dir(&self.out, "manifest.json")?;
        io::write_jsonl(&out.join("train.jsonl"), &data.train)?;
        io::write_jsonl(&out.join("test.jsonl"), &data.test)?;
        io::write_jsonl(&out.join("train_sequences.jsonl"), &data.train_sequences)?;
        io::write_jsonl(
            &out.join(ITEM_KEYS_FILE),
            &item_keys::of_items(&interactions.items),
        )?;
        if let Some(model) = &self.item_text_model {
            let threads = self.threads.unwrap_or_else(kvrec_llm::load_options::cores);
            let vectors = item_vectors::of_items(&interactions.items, model, threads)?;
            io::write_jsonl(&out.join(ITEM_VECTORS_FILE), &vectors)?;
        }
        if let Some(ids) = &interactions.item_ids {
            io::write_atomically(
                &out.join(recipe::ITEM_IDS_FILE),
                serde_json::to_string(ids)?.as_bytes(),
            )?;
        }
        if let Some(path) = &self.sqlite {
            let all: Vec<_> = data.train.iter().chain(&data.test).collect();
            db::write_requests(path, &all)?;
        }
        let mut written = json!({});
        for variant in &self.variants {
            let rows = training_data::rows(&data.train, variant, self.copies, self.seed)?;
            let file = format!("train-{}.jsonl", variant.replace('+', "_"));
            io::write_jsonl(&out.join(&file), &rows)?;
            written[file] = json!(rows.len());
        }
        let manifest = json!({
            "source": source.display().to_string(),
            "config": config,
            "copies": self.copies,
            "train": data.train.len(),
            "test": data.test.len(),
            "users": data.train_sequences.len(),
            "training_files": written,
        });
        std::fs::write(
            out.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)?,
        )?;
        io::finish_dir(&out, &self.out)?;
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
