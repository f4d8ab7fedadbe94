//! What the protocol needs from any data set: who interacted with which item when (and the
//! rating, if there is one), plus the key-values of users and items. MovieLens folders and
//! recipes over an app's own tables both become this; ids here are the model's dense ones,
//! with the app's ids kept beside them when they differ.

use std::collections::HashMap;

use kvrec_core::ItemId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::movielens;

/// A user's interactions in time order, the unit the baselines learn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    pub user_id: i64,
    pub items: Vec<i64>,
    /// Each item's time (seconds), where the source has them. Items of one second came in one
    /// submission, in an order the data does not record (see `train --shuffle-ties`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<i64>,
}

/// An item's key-values. `title` and `genres` are the keys the InstructMK prompt names; the
/// rest are rendered as they come.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    pub title: Option<String>,
    pub genres: Option<String>,
    pub year: Option<i32>,
    pub keys: Map<String, Value>,
}

/// One interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub user: i64,
    pub item: i64,
    pub rating: Option<i64>,
    /// Seconds (any epoch); only the order matters.
    pub time: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Interactions {
    /// Each user's key-values (the prompt's user keys); users without any are absent.
    pub users: HashMap<i64, Map<String, Value>>,
    pub items: HashMap<i64, Item>,
    /// In source order: with `TieOrder::File`, events in the same second keep it.
    pub events: Vec<Event>,
    /// The app's id of dense item id `i + 1`, when the source's ids were mapped.
    pub item_ids: Option<Vec<ItemId>>,
    /// The app's id of dense user id `i + 1`, when the source's ids were mapped.
    pub user_ids: Option<Vec<ItemId>>,
}

impl Item {
    /// The item as a history entry: id, title, the user's rating, genres, then its other keys.
    pub fn history_json(item: Option<&Item>, id: i64, rating: Option<i64>) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), json!(id));
        if let Some(title) = item.and_then(|i| i.title.as_ref()) {
            object.insert("title".into(), json!(title));
        }
        if let Some(rating) = rating {
            object.insert("rating".into(), json!(rating));
        }
        if let Some(genres) = item.and_then(|i| i.genres.as_ref()) {
            object.insert("genres".into(), json!(genres));
        }
        if let Some(item) = item {
            object.extend(item.keys.clone());
        }
        Value::Object(object)
    }
}

impl From<&movielens::Dataset> for Interactions {
    fn from(data: &movielens::Dataset) -> Interactions {
        Interactions {
            users: data
                .users
                .iter()
                .map(|u| {
                    let keys =
                        json!({"gender": u.gender, "age": u.age, "occupation": u.occupation});
                    (u.id, keys.as_object().cloned().unwrap_or_default())
                })
                .collect(),
            items: data
                .movies
                .iter()
                .map(|m| {
                    let item = Item {
                        title: Some(m.title.clone()),
                        genres: Some(m.genres.clone()),
                        year: m.year,
                        keys: Map::new(),
                    };
                    (m.id, item)
                })
                .collect(),
            events: data
                .ratings
                .iter()
                .map(|r| Event {
                    user: r.user_id,
                    item: r.movie_id,
                    rating: Some(r.rating),
                    time: r.ts,
                })
                .collect(),
            item_ids: None,
            user_ids: None,
        }
    }
}
