//! Item text vectors as fixed columns (`train --item-vectors`): the model learns one
//! projection of them into its width, beside the item keys' ([`super::keys`]), so an item
//! with few ratings borrows from the items whose titles read alike.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

pub use kvrec_evaluation::item_features::vectors::{
    item_text, of_items, standardized, ItemVector, ITEM_VECTORS_FILE,
};

use super::columns::{item_row, FeatureColumns};
use crate::train::sequence::ItemClasses;

/// The fixed `(vocab, dim)` columns of `vectors` over a vocabulary of `vocab` tokens (rows of
/// items without a vector stay zero). Items beyond the model's item tokens, and vectors of
/// unequal length, are refused.
pub fn matrix(
    vectors: &[ItemVector],
    classes: &ItemClasses,
    vocab: usize,
) -> Result<FeatureColumns> {
    let Some(dim) = vectors.first().map(|v| v.vector.len()).filter(|&d| d > 0) else {
        bail!("the item vectors are empty; write them with `data --item-text-model`");
    };
    let mut values = vec![0f32; vocab * dim];
    for item in vectors {
        if item.vector.len() != dim {
            bail!(
                "item {} has a vector of {} values where the first has {dim}; write all with one `data` run",
                item.id,
                item.vector.len()
            );
        }
        let row = item_row(classes, item.id, "a vector")? * dim;
        values[row..row + dim].copy_from_slice(&item.vector);
    }
    let names = (0..dim).map(|i| format!("text.{i}")).collect();
    let matrix = Tensor::from_vec(values, (vocab, dim), &Device::Cpu)?;
    Ok(FeatureColumns { matrix, names })
}
