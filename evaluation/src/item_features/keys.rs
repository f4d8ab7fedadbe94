//! Item keys: the paper's item keys (category or genre, and the year a title carries), which
//! `data` writes beside the training sequences ([`ITEM_KEYS_FILE`]) and the trainer gives
//! embeddings shared by every item that has them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::kinds;
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
