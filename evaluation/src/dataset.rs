//! A data folder: what `data` writes from interactions (MovieLens or a recipe) and `train`,
//! `eval` and `fit` read — the protocol's requests, the training sequences, item keys, item
//! text vectors and the app's id map — written aside and renamed into place, so an
//! interrupted run never leaves a folder that looks complete.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::interactions::Interactions;
use crate::item_features::keys::{self as item_keys, ITEM_KEYS_FILE};
use crate::item_features::vectors::{self as item_vectors, ITEM_VECTORS_FILE};
use crate::protocol::{self, ProtocolConfig, ProtocolData};
use crate::{db, io, recipe, training_data};

/// The file that marks a complete data folder.
pub const MANIFEST: &str = "manifest.json";
pub const TRAIN: &str = "train.jsonl";
pub const TEST: &str = "test.jsonl";
pub const SEQUENCES: &str = "train_sequences.jsonl";

/// What a data folder is written with, beyond the protocol.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// A GGUF language model that reads each item's text into `item_vectors.jsonl`.
    pub item_text_model: Option<PathBuf>,
    pub threads: Option<u32>,
    /// Augmentation variants of InstructMK training rows (`train-<variant>.jsonl`).
    pub variants: Vec<String>,
    /// Enhanced copies per original row.
    pub copies: usize,
    /// Also write the requests into this SQLite file's `requests` table.
    pub sqlite: Option<PathBuf>,
}

/// Builds the protocol's data from `interactions` and writes the folder `out`; `source` is
/// recorded in the manifest.
pub fn write(
    interactions: &Interactions,
    config: &ProtocolConfig,
    extras: &Extras,
    source: &Path,
    out: &Path,
) -> Result<ProtocolData> {
    let data = protocol::build_from(interactions, config);
    let min = config.min_interactions;
    if data.train_sequences.is_empty() {
        bail!(
            "no user has {min} interactions with items that have {min} too (the \
             {min}-core filter); lower --min-interactions or add data"
        );
    }
    let partial = io::partial_dir(out, MANIFEST)?;
    io::write_jsonl(&partial.join(TRAIN), &data.train)?;
    io::write_jsonl(&partial.join(TEST), &data.test)?;
    io::write_jsonl(&partial.join(SEQUENCES), &data.train_sequences)?;
    io::write_jsonl(
        &partial.join(ITEM_KEYS_FILE),
        &item_keys::of_items(&interactions.items),
    )?;
    if let Some(model) = &extras.item_text_model {
        let threads = extras.threads.unwrap_or_else(kvrec_llm::limits::cores);
        let vectors = item_vectors::of_items(&interactions.items, model, threads)?;
        io::write_jsonl(&partial.join(ITEM_VECTORS_FILE), &vectors)?;
    }
    if let Some(ids) = &interactions.item_ids {
        io::write_atomically(
            &partial.join(recipe::ITEM_IDS_FILE),
            serde_json::to_string(ids)?.as_bytes(),
        )?;
    }
    if let Some(path) = &extras.sqlite {
        let all: Vec<_> = data.train.iter().chain(&data.test).collect();
        db::write_requests(path, &all)?;
    }
    let mut written = json!({});
    for variant in &extras.variants {
        let rows = training_data::rows(&data.train, variant, extras.copies, config.seed)?;
        let file = format!("train-{}.jsonl", variant.replace('+', "_"));
        io::write_jsonl(&partial.join(&file), &rows)?;
        written[file] = json!(rows.len());
    }
    let manifest = json!({
        "source": source.display().to_string(),
        "config": config,
        "copies": extras.copies,
        "train": data.train.len(),
        "test": data.test.len(),
        "users": data.train_sequences.len(),
        "training_files": written,
    });
    std::fs::write(
        partial.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    io::finish_dir(&partial, out)?;
    Ok(data)
}

/// The protocol configuration a complete data folder was written with, if `dir` is one.
pub fn written_config(dir: &Path) -> Result<Option<ProtocolConfig>> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Ok(None);
    }
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    Ok(serde_json::from_value(manifest["config"].clone()).ok())
}
