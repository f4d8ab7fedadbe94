//! Item keys for the sequence stage (`train --item-keys`): the paper's item keys (category or
//! genre, and the year a title carries) as embeddings shared by every item that has them. A rare
//! item's own embedding learns from a few ratings; its genres' learn from thousands.
//!
//! `data` writes each item's keys ([`ITEM_KEYS_FILE`]); the trainer turns them into a fixed
//! `(vocab, keys)` matrix whose row for an item token weighs each of its keys so that every
//! kind of key (the part before `=`) sums to one: a comedy-drama is half comedy, half drama,
//! and wholly of its decade. The model adds `matrix · keys` to its token embedding and head
//! (see `model::ITEM_KEY_MATRIX`), and export folds the sum into the GGUF's tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::item_vectors::{self, ItemVector};
use super::model::Transformer;
use super::sequence::ItemClasses;
use crate::interactions::Item;

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

/// The fixed `(vocab, keys)` matrix of `items` over a vocabulary of `vocab` tokens, and the
/// keys its columns stand for (sorted). Items beyond the model's item tokens are refused.
pub fn matrix(
    items: &[ItemKeys],
    classes: &ItemClasses,
    vocab: usize,
) -> Result<(Tensor, Vec<String>)> {
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
    Ok((matrix, names))
}

/// Gives `model` the item keys in `keys` (an [`ITEM_KEYS_FILE`]) and the text vectors in
/// `vectors` (an [`super::item_vectors::ITEM_VECTORS_FILE`]), side by side in one fixed matrix, their embeddings
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
        let items = crate::io::read_jsonl::<ItemKeys>(path)?;
        parts.push(
            matrix(&items, classes, vocab)
                .with_context(|| format!("the item keys in {}", path.display()))?,
        );
    }
    if let Some(path) = vectors {
        let items = crate::io::read_jsonl::<ItemVector>(path)?;
        parts.push(
            item_vectors::matrix(&items, classes, vocab)
                .with_context(|| format!("the item vectors in {}", path.display()))?,
        );
    }
    if parts.is_empty() {
        return Ok(());
    }
    let columns: usize = parts.iter().map(|(_, names)| names.len()).sum();
    let matrix = Tensor::cat(&parts.iter().map(|(m, _)| m).collect::<Vec<_>>(), 1)?;
    let zeros = || Tensor::zeros((columns, model.shape.n_embd), DType::F32, &Device::Cpu);
    let output = if model.tied { None } else { Some(zeros()?) };
    model.attach_item_keys(matrix, zeros()?, output)?;
    Ok(())
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
