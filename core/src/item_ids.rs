//! An app's own item ids (text SKUs, 64-bit or negative integers) mapped to the dense ids a
//! model was trained on, and back. A model whose catalog came from the app's tables carries
//! the map in its GGUF (`kvrec.item_ids`, parallel to `kvrec.items`), so SQL callers pass and
//! receive their own ids while the model reads and ranks dense ones.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{KvrecError, Result};

/// GGUF metadata key of the app ids of a model's catalog, a JSON array parallel to
/// `kvrec.items`.
pub const ITEM_IDS_METADATA_KEY: &str = "kvrec.item_ids";

/// One app id: an integer (any i64) or a text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ItemId {
    Int(i64),
    Text(String),
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemId::Int(v) => write!(f, "{v}"),
            ItemId::Text(s) => write!(f, "'{s}'"),
        }
    }
}

impl From<ItemId> for Value {
    fn from(id: ItemId) -> Value {
        match id {
            ItemId::Int(v) => Value::from(v),
            ItemId::Text(s) => Value::String(s),
        }
    }
}

impl ItemId {
    /// A JSON id as an app id; `None` for anything but an integer or a non-empty string.
    pub fn from_json(value: &Value) -> Option<ItemId> {
        match value {
            Value::Number(n) => n.as_i64().map(ItemId::Int),
            Value::String(s) if !s.trim().is_empty() => Some(ItemId::Text(s.clone())),
            _ => None,
        }
    }
}

/// Dense id ↔ app id for one model's catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemIds {
    to_app: HashMap<i64, ItemId>,
    to_dense: HashMap<ItemId, i64>,
    /// Whether any app id is text (then SQL results that hold ids must be text too).
    has_text: bool,
}

impl ItemIds {
    /// The map of `dense[i]` ↔ `app[i]`; both sides must be distinct.
    pub fn new(dense: &[i64], app: Vec<ItemId>) -> std::result::Result<ItemIds, String> {
        if dense.len() != app.len() {
            return Err(format!(
                "{} dense ids but {} app ids",
                dense.len(),
                app.len()
            ));
        }
        let mut to_app = HashMap::with_capacity(app.len());
        let mut to_dense = HashMap::with_capacity(app.len());
        let has_text = app.iter().any(|id| matches!(id, ItemId::Text(_)));
        for (&d, a) in dense.iter().zip(app) {
            if to_dense.insert(a.clone(), d).is_some() {
                return Err(format!("app id {a} appears twice"));
            }
            if to_app.insert(d, a).is_some() {
                return Err(format!("dense id {d} appears twice"));
            }
        }
        Ok(ItemIds {
            to_app,
            to_dense,
            has_text,
        })
    }

    /// Parses the `kvrec.item_ids` metadata against the catalog's dense ids.
    pub fn from_metadata(json: &str, dense: &[i64]) -> std::result::Result<ItemIds, String> {
        let app: Vec<ItemId> = serde_json::from_str(json)
            .map_err(|e| format!("not a JSON array of integer or text ids: {e}"))?;
        ItemIds::new(dense, app)
    }

    pub fn has_text(&self) -> bool {
        self.has_text
    }

    pub fn len(&self) -> usize {
        self.to_app.len()
    }

    pub fn is_empty(&self) -> bool {
        self.to_app.is_empty()
    }

    /// The app id of dense id `dense` (the dense id itself when it is not in the map, which
    /// a ranking of the model's own catalog never produces).
    pub fn app(&self, dense: i64) -> ItemId {
        self.to_app
            .get(&dense)
            .cloned()
            .unwrap_or(ItemId::Int(dense))
    }

    /// The dense id of a JSON id. A text of digits also finds an integer id and an integer
    /// also finds the same digits as text, since SQL hosts convert between the two freely.
    pub fn dense(&self, value: &Value) -> Option<i64> {
        let id = ItemId::from_json(value)?;
        if let Some(&d) = self.to_dense.get(&id) {
            return Some(d);
        }
        let other = match &id {
            ItemId::Int(v) => ItemId::Text(v.to_string()),
            ItemId::Text(s) => ItemId::Int(s.trim().parse().ok()?),
        };
        self.to_dense.get(&other).copied()
    }

    /// `history` and `candidates` with every `id` replaced by its dense id; an id the model
    /// does not know is an error that names where it is.
    pub fn to_dense_request(
        &self,
        model: &str,
        history: &Value,
        candidates: Option<&Value>,
    ) -> Result<(Value, Option<Value>)> {
        let history = self.map_items(model, history, "history")?;
        let candidates = candidates
            .map(|c| self.map_items(model, c, "candidates"))
            .transpose()?;
        Ok((history, candidates))
    }

    fn map_items(&self, model: &str, items: &Value, arg: &'static str) -> Result<Value> {
        // Shapes other than an array of objects are left for the request parser to report.
        let Value::Array(array) = items else {
            return Ok(items.clone());
        };
        let mut out = Vec::with_capacity(array.len());
        for (index, item) in array.iter().enumerate() {
            let Value::Object(object) = item else {
                out.push(item.clone());
                continue;
            };
            let mut mapped = Map::with_capacity(object.len());
            for (key, value) in object {
                if key == "id" && !value.is_null() {
                    let dense = self.dense(value).ok_or_else(|| KvrecError::UnknownItem {
                        model: model.to_string(),
                        arg,
                        index,
                        id: value.to_string().chars().take(60).collect(),
                        known: self.len(),
                    })?;
                    mapped.insert(key.clone(), Value::from(dense));
                } else {
                    mapped.insert(key.clone(), value.clone());
                }
            }
            out.push(Value::Object(mapped));
        }
        Ok(Value::Array(out))
    }
}

/// Assigns dense ids `1..=n` to distinct app ids in their natural order (integers by value,
/// then texts by bytes), so the same set of ids always gets the same dense ids whatever order
/// the rows came in.
pub fn assign_dense(ids: impl IntoIterator<Item = ItemId>) -> Vec<ItemId> {
    let mut all: Vec<ItemId> = ids.into_iter().collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shop() -> ItemIds {
        let app = assign_dense([
            ItemId::Text("SKU-b".into()),
            ItemId::Int(i64::MAX),
            ItemId::Int(-7),
            ItemId::Text("SKU-a".into()),
            ItemId::Int(-7),
        ]);
        let dense: Vec<i64> = (1..=app.len() as i64).collect();
        ItemIds::new(&dense, app).unwrap()
    }

    #[test]
    fn dense_ids_follow_the_natural_order_and_round_trip() {
        let ids = shop();
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.app(1), ItemId::Int(-7));
        assert_eq!(ids.app(2), ItemId::Int(i64::MAX));
        assert_eq!(ids.app(3), ItemId::Text("SKU-a".into()));
        for d in 1..=4 {
            let json = Value::from(ids.app(d));
            assert_eq!(ids.dense(&json), Some(d), "{json}");
        }
        assert!(ids.has_text());
        // The metadata form is the JSON of the app ids in dense order.
        let meta = serde_json::to_string(&[ids.app(1), ids.app(2), ids.app(3)]).unwrap();
        assert_eq!(meta, r#"[-7,9223372036854775807,"SKU-a"]"#);
        let back = ItemIds::from_metadata(&meta, &[1, 2, 3]).unwrap();
        assert_eq!(back.dense(&json!("SKU-a")), Some(3));
    }

    #[test]
    fn digits_and_integers_find_each_other() {
        let ids = ItemIds::new(&[1, 2], vec![ItemId::Int(42), ItemId::Text("7".into())]).unwrap();
        assert_eq!(ids.dense(&json!("42")), Some(1));
        assert_eq!(ids.dense(&json!(7)), Some(2));
        assert_eq!(ids.dense(&json!(1.5)), None);
        assert_eq!(ids.dense(&json!("")), None);
    }

    #[test]
    fn requests_are_mapped_and_unknown_ids_named() {
        let ids = shop();
        let (history, candidates) = ids
            .to_dense_request(
                "shop",
                &json!([{"id": "SKU-a", "name": "mug"}, {"name": "no id"}]),
                Some(&json!([{"id": -7}])),
            )
            .unwrap();
        assert_eq!(
            history,
            json!([{"id": 3, "name": "mug"}, {"name": "no id"}])
        );
        assert_eq!(candidates, Some(json!([{"id": 1}])));
        let err = ids
            .to_dense_request("shop", &json!([{"id": "SKU-zz"}]), None)
            .unwrap_err();
        assert_eq!(
            err,
            KvrecError::UnknownItem {
                model: "shop".into(),
                arg: "history",
                index: 0,
                id: "\"SKU-zz\"".into(),
                known: 4
            }
        );
    }

    #[test]
    fn duplicates_are_refused() {
        assert!(ItemIds::new(&[1, 2], vec![ItemId::Int(1), ItemId::Int(1)]).is_err());
        assert!(ItemIds::new(&[1, 1], vec![ItemId::Int(1), ItemId::Int(2)]).is_err());
        assert!(ItemIds::from_metadata("[1, {}]", &[1, 2]).is_err());
    }
}
