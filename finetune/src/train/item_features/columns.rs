//! What item keys and item text vectors share: the kinds of an item's keys, the row of an
//! item in a feature matrix, and the columns each kind of feature adds.

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::interactions::Item;
use crate::train::sequence::ItemClasses;

/// Fixed feature columns over the vocabulary: `matrix` is `(vocab, names.len())`, a row per
/// token (zero for tokens that are not items or have no such feature).
pub struct FeatureColumns {
    pub matrix: Tensor,
    pub names: Vec<String>,
}

/// `item`'s genres (MovieLens) and categories (an app's `category` key), each `|`-separated
/// list split into `(kind, value)` pairs: what the keys and the item's text both list.
pub fn kinds(item: &Item) -> impl Iterator<Item = (&'static str, &str)> {
    let category = item.keys.get("category").and_then(|c| c.as_str());
    [("genre", item.genres.as_deref()), ("category", category)]
        .into_iter()
        .flat_map(|(kind, values)| {
            let values = values.unwrap_or_default().split('|').map(str::trim);
            values.filter(|v| !v.is_empty()).map(move |v| (kind, v))
        })
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
