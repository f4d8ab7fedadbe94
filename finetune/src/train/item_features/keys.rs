//! Item keys (`train --item-keys`): the paper's item keys (category or genre, and the year a
//! title carries) as embeddings shared by every item that has them. A rare item's own
//! embedding learns from a few ratings; its genres' learn from thousands.
//!
//! `data` writes each item's keys ([`ITEM_KEYS_FILE`]); the trainer turns them into fixed
//! columns whose row for an item token weighs each of its keys so that every kind of key (the
//! part before `=`) sums to one: a comedy-drama is half comedy, half drama, and wholly of its
//! decade.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::columns::{item_row, kinds, FeatureColumns};
use crate::interactions::Item;
use crate::train::sequence::ItemClasses;

/// The file `data` writes beside the training sequences.
pub const ITEM_KEYS_FILE: &str = "item_keys.jsonl";

/// One item's keys, each `kind=value` (e.g. `genre=Comedy`, `decade=1990`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemKeys {
    pub id: i64,
    pub keys: Vec<String>,
}

/// The keys of every item that has some, by id: each of its genres and categories (the
/// paper's item key; an app's `category`, `|`-separated like MovieLens genres) and the decade
/// of its year. Other keys are left out: a title or a price would make a key of nearly every
/// item, which is what the item's own embedding already is.
pub fn of_items(items: &HashMap<i64, Item>) -> Vec<ItemKeys> {
    let mut out: Vec<ItemKeys> = items
        .iter()
        .map(|(&id, item)| {
            let mut keys: Vec<String> = kinds(item)
                .map(|(kind, value)| format!("{kind}={value}"))
                .collect();
            keys.extend(
                item.year
                    .map(|y| format!("decade={}", y.div_euclid(10) * 10)),
            );
            ItemKeys { id, keys }
        })
        .filter(|item| !item.keys.is_empty())
        .collect();
    out.sort_by_key(|item| item.id);
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(genres: &str, year: Option<i32>) -> Item {
        Item {
            genres: Some(genres.into()),
            year,
            ..Item::default()
        }
    }

    #[test]
    fn genres_categories_and_the_decade_become_keys() {
        let items = HashMap::from([
            (2, item("Comedy|Drama", Some(1995))),
            (1, item("Horror", None)),
            (3, item("", None)),
            (
                4,
                Item {
                    keys: serde_json::json!({"category": "shoes|kids", "price": 12})
                        .as_object()
                        .cloned()
                        .unwrap(),
                    ..Item::default()
                },
            ),
        ]);
        let keys = of_items(&items);
        assert_eq!(
            keys,
            vec![
                ItemKeys {
                    id: 1,
                    keys: vec!["genre=Horror".into()]
                },
                ItemKeys {
                    id: 2,
                    keys: vec![
                        "genre=Comedy".into(),
                        "genre=Drama".into(),
                        "decade=1990".into()
                    ]
                },
                ItemKeys {
                    id: 4,
                    keys: vec!["category=shoes".into(), "category=kids".into()]
                },
            ]
        );
    }
}
