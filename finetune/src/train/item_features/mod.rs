//! Item features for the sequence stage: what is known of an item besides its ratings, as
//! fixed columns over the vocabulary — its keys ([`keys`]: genres, categories, decade) and
//! what a language model reads in its title ([`vectors`]). The model learns an embedding for
//! each column, input and output, added to every item's own through the columns (see
//! `model::ITEM_FEATURE_MATRIX`), and export folds the sums into the GGUF's tables: the
//! served model is a plain llama.

pub mod columns;
pub mod keys;
pub mod vectors;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::train::model::Transformer;
use crate::train::sequence::ItemClasses;

/// Gives `model` the item keys in `keys` (a [`keys::ITEM_KEYS_FILE`]) and the text vectors in
/// `vectors` (a [`vectors::ITEM_VECTORS_FILE`]), side by side in one fixed matrix, their embeddings
/// at zero: a fresh run, or one continued from a run without them, begins as the model
/// without them.
pub fn attach(
    model: &mut Transformer,
    keys: Option<&Path>,
    vectors: Option<&Path>,
    classes: &ItemClasses,
) -> Result<()> {
    let vocab = model.shape.n_vocab;
    let mut parts = Vec::new();
    if let Some(path) = keys {
        let items = crate::io::read_jsonl::<keys::ItemKeys>(path)?;
        parts.push(
            keys::matrix(&items, classes, vocab)
                .with_context(|| format!("the item keys in {}", path.display()))?,
        );
    }
    if let Some(path) = vectors {
        let items = crate::io::read_jsonl::<vectors::ItemVector>(path)?;
        parts.push(
            vectors::matrix(&items, classes, vocab)
                .with_context(|| format!("the item vectors in {}", path.display()))?,
        );
    }
    if parts.is_empty() {
        return Ok(());
    }
    let columns: usize = parts.iter().map(|part| part.names.len()).sum();
    let matrix = Tensor::cat(
        &parts.iter().map(|part| &part.matrix).collect::<Vec<_>>(),
        1,
    )?;
    let zeros = || Tensor::zeros((columns, model.shape.n_embd), DType::F32, &Device::Cpu);
    let output = if model.tied { None } else { Some(zeros()?) };
    model.attach_item_features(matrix, zeros()?, output)?;
    Ok(())
}
