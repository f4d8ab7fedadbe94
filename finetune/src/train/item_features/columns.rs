//! What item keys and item text vectors share in training: the row of an item in a feature
//! matrix, and the columns each kind of feature adds.

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::train::sequence::ItemClasses;

/// Fixed feature columns over the vocabulary: `matrix` is `(vocab, names.len())`, a row per
/// token (zero for tokens that are not items or have no such feature).
pub struct FeatureColumns {
    pub matrix: Tensor,
    pub names: Vec<String>,
}

/// The row of item `id` in a `(vocab, …)` matrix of item features (`what`: keys, a vector),
/// refused when the model has no token for it.
pub fn item_row(classes: &ItemClasses, id: i64, what: &str) -> Result<usize> {
    match classes.token(id) {
        Ok(token) => Ok(token as usize),
        Err(_) => {
            bail!("item {id} has {what} but no item token; train with --number-tokens {id} or more")
        }
    }
}
