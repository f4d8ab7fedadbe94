//! What is known of an item besides its ratings, as `data` writes it beside the training
//! sequences: its keys ([`keys`]: genres, categories, decade) and what a language model reads
//! in its title ([`vectors`]). The trainer turns both into embeddings (kvrec-finetune's
//! `train::item_features`).

pub mod keys;
pub mod vectors;

use crate::interactions::Item;

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
