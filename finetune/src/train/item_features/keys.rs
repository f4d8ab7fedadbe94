//! Item keys as fixed columns (`train --item-keys`): each item token's row weighs each of its
//! keys so that every kind of key (the part before `=`) sums to one: a comedy-drama is half
//! comedy, half drama, and wholly of its decade. A rare item's own embedding learns from a
//! few ratings; its genres' learn from thousands.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

pub use kvrec_evaluation::item_features::keys::{of_items, ItemKeys, ITEM_KEYS_FILE};

use super::columns::{item_row, FeatureColumns};
use crate::train::sequence::ItemClasses;

/// The fixed `(vocab, keys)` columns of `items` over a vocabulary of `vocab` tokens, named by
/// the keys they stand for (sorted). Items beyond the model's item tokens are refused.
pub fn matrix(items: &[ItemKeys], classes: &ItemClasses, vocab: usize) -> Result<FeatureColumns> {
    let names: Vec<String> = items
        .iter()
        .flat_map(|item| item.keys.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.is_empty() {
        bail!(
            "the item keys name no key; write them with `data` from a source with genres or years"
        );
    }
    let column: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut values = vec![0f32; vocab * names.len()];
    for item in items {
        let row = item_row(classes, item.id, "keys")? * names.len();
        let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for key in &item.keys {
            *per_kind.entry(kind(key)).or_default() += 1;
        }
        for key in &item.keys {
            values[row + column[key.as_str()]] += 1.0 / per_kind[kind(key)] as f32;
        }
    }
    let matrix = Tensor::from_vec(values, (vocab, names.len()), &Device::Cpu)?;
    Ok(FeatureColumns { matrix, names })
}

fn kind(key: &str) -> &str {
    key.split_once('=').map_or(key, |(kind, _)| kind)
}
