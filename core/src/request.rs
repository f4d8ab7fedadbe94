//! A recommendation request as key-value data: who the user is, what they watched, what to rank.
//!
//! Keys are data: any key a caller supplies is kept, in the order given, and rendered by the
//! template. Values are scalars (string, number, boolean) or arrays of scalars (e.g. genres);
//! a JSON `null` value means "no value" and the key is left out.

use serde_json::{Map, Value};

use crate::error::{json_type_name, KvrecError, Result};

/// One key and its value, in the caller's order.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Value,
}

/// A watched item. `id` is optional: the paper renders history by title, genres and rating.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    pub id: Option<i64>,
    pub fields: Vec<KeyValue>,
}

/// An item to rank. The answer is a list of candidate ids, so every candidate has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: i64,
    pub fields: Vec<KeyValue>,
}

/// User key-values, history (oldest first) and candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub user: Vec<KeyValue>,
    pub history: Vec<HistoryItem>,
    pub candidates: Vec<Candidate>,
}

/// Looks a key up in an ordered field list.
pub fn field<'a>(fields: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    fields.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

impl HistoryItem {
    pub fn get(&self, key: &str) -> Option<&Value> {
        field(&self.fields, key)
    }
}

impl Candidate {
    pub fn get(&self, key: &str) -> Option<&Value> {
        field(&self.fields, key)
    }
}

impl Request {
    /// Parses the three JSON texts the SQL functions take.
    pub fn from_json_texts(user: &str, history: &str, candidates: &str) -> Result<Request> {
        Request::from_values(
            &parse_json("user", user)?,
            &parse_json("history", history)?,
            &parse_json("candidates", candidates)?,
        )
    }

    /// Builds a request from already-parsed JSON values.
    pub fn from_values(user: &Value, history: &Value, candidates: &Value) -> Result<Request> {
        Request::from_owned(user.clone(), history.clone(), candidates.clone())
    }

    /// [`Request::from_values`] taking the values, whose keys and values move into the
    /// request rather than being copied (a `recommend()` call's own parse).
    pub fn from_owned(user: Value, history: Value, candidates: Value) -> Result<Request> {
        let mut request = Request::without_candidates_owned(user, history)?;
        let candidate_objects = items(candidates, "candidates")?;
        if candidate_objects.is_empty() {
            return Err(KvrecError::EmptyCandidates);
        }
        request.candidates = candidate_objects
            .into_iter()
            .enumerate()
            .map(|(i, obj)| candidate(obj, i))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = std::collections::HashSet::with_capacity(request.candidates.len());
        for c in &request.candidates {
            if !seen.insert(c.id) {
                return Err(KvrecError::DuplicateCandidate { id: c.id });
            }
        }
        Ok(request)
    }

    /// A request of user key-values and history only: what ranking a model's whole catalog
    /// (`recommend_topk`) takes.
    pub fn without_candidates(user: &Value, history: &Value) -> Result<Request> {
        Request::without_candidates_owned(user.clone(), history.clone())
    }

    /// [`Request::without_candidates`] taking the values.
    pub fn without_candidates_owned(user: Value, history: Value) -> Result<Request> {
        let user = match user {
            Value::Object(map) => key_values(map, "user")?,
            other => {
                return Err(KvrecError::wrong_type(
                    "user",
                    "a JSON object of key-values, e.g. {\"gender\": \"F\", \"age\": \"25-34\"}",
                    &other,
                ))
            }
        };
        let history = items(history, "history")?
            .into_iter()
            .enumerate()
            .map(|(i, obj)| history_item(obj, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Request {
            user,
            history,
            candidates: Vec::new(),
        })
    }

    /// Parses a self-contained request object `{"user":…, "history":…, "candidates":…}`.
    pub fn from_object(value: &Value) -> Result<Request> {
        let obj = value.as_object().ok_or_else(|| {
            KvrecError::wrong_type(
                "request",
                "a JSON object with user, history and candidates",
                value,
            )
        })?;
        let empty = Value::Array(Vec::new());
        Request::from_values(
            obj.get("user").unwrap_or(&Value::Object(Map::new())),
            obj.get("history").unwrap_or(&empty),
            obj.get("candidates").unwrap_or(&empty),
        )
    }

    pub fn candidate_ids(&self) -> Vec<i64> {
        self.candidates.iter().map(|c| c.id).collect()
    }

    /// Fails unless `id` is one of the candidates.
    pub fn check_positive(&self, id: i64) -> Result<()> {
        if self.candidates.iter().any(|c| c.id == id) {
            Ok(())
        } else {
            Err(KvrecError::PositiveNotCandidate { id })
        }
    }

    /// History keys in order of first appearance; `id` is structural and not listed.
    pub fn history_keys(&self) -> Vec<String> {
        history_keys(&self.history)
    }

    /// The JSON form `{"user":{…},"history":[…],"candidates":[…]}`, ids first in each item.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("user".into(), Value::Object(to_map(&self.user)));
        out.insert(
            "history".into(),
            Value::Array(
                self.history
                    .iter()
                    .map(|h| item_json(h.id, &h.fields))
                    .collect(),
            ),
        );
        out.insert(
            "candidates".into(),
            Value::Array(
                self.candidates
                    .iter()
                    .map(|c| item_json(Some(c.id), &c.fields))
                    .collect(),
            ),
        );
        Value::Object(out)
    }
}

/// Keys of `history` items in order of first appearance.
pub fn history_keys(history: &[HistoryItem]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for item in history {
        for kv in &item.fields {
            if !keys.iter().any(|k| k == &kv.key) {
                keys.push(kv.key.clone());
            }
        }
    }
    keys
}

pub fn parse_json(arg: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| KvrecError::InvalidJson {
        arg,
        detail: e.to_string(),
    })
}

fn items(value: Value, arg: &'static str) -> Result<Vec<Map<String, Value>>> {
    let array = match value {
        Value::Array(array) => array,
        other => {
            return Err(KvrecError::wrong_type(
                arg,
                "a JSON array of objects, e.g. [{\"id\": 1, \"title\": \"Toy Story (1995)\"}]",
                &other,
            ))
        }
    };
    array
        .into_iter()
        .map(|v| match v {
            Value::Object(map) => Ok(map),
            other => Err(KvrecError::WrongType {
                arg,
                expected: "an array of objects",
                got: format!("an array holding {}", json_type_name(&other)),
            }),
        })
        .collect()
}

fn key_values(map: Map<String, Value>, location: &str) -> Result<Vec<KeyValue>> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        check_value(&value, || format!("{location}.{key}"))?;
        out.push(KeyValue { key, value });
    }
    Ok(out)
}

fn check_value(value: &Value, location: impl Fn() -> String) -> Result<()> {
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    let ok = match value {
        Value::Array(items) => items.iter().all(scalar),
        v => scalar(v),
    };
    if ok {
        Ok(())
    } else {
        Err(KvrecError::NotScalar {
            location: location(),
            got: json_type_name(value).to_string(),
        })
    }
}

fn parse_id(value: &Value, arg: &'static str, index: usize) -> Result<i64> {
    let bad = || KvrecError::BadId {
        arg,
        index,
        got: value.to_string().chars().take(40).collect(),
    };
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(bad),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn split_id(
    obj: Map<String, Value>,
    arg: &'static str,
    index: usize,
) -> Result<(Option<i64>, Vec<KeyValue>)> {
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_id(v, arg, index)?),
    };
    let mut fields = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        if key == "id" || value.is_null() {
            continue;
        }
        check_value(&value, || format!("{arg}[{index}].{key}"))?;
        fields.push(KeyValue { key, value });
    }
    Ok((id, fields))
}

fn history_item(obj: Map<String, Value>, index: usize) -> Result<HistoryItem> {
    let (id, fields) = split_id(obj, "history", index)?;
    // An id alone names an item (what a sequence-layout model reads); else a title must.
    if id.is_none() && field(&fields, "title").is_none() {
        return Err(KvrecError::MissingField {
            arg: "history",
            index,
            field: "title",
            example: "{\"id\": 1, \"title\": \"Toy Story (1995)\", \"rating\": 5}",
        });
    }
    Ok(HistoryItem { id, fields })
}

fn candidate(obj: Map<String, Value>, index: usize) -> Result<Candidate> {
    let (id, fields) = split_id(obj, "candidates", index)?;
    let id = id.ok_or(KvrecError::MissingField {
        arg: "candidates",
        index,
        field: "id",
        example: "{\"id\": 1, \"title\": \"Toy Story (1995)\"}",
    })?;
    Ok(Candidate { id, fields })
}

fn to_map(fields: &[KeyValue]) -> Map<String, Value> {
    fields
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect()
}

fn item_json(id: Option<i64>, fields: &[KeyValue]) -> Value {
    let mut map = Map::new();
    if let Some(id) = id {
        map.insert("id".into(), Value::from(id));
    }
    map.extend(to_map(fields));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_drops_nulls() {
        let r = Request::from_json_texts(
            r#"{"occupation":"writer","gender":"F","zip":null}"#,
            r#"[{"id":"7","title":"A (1990)","rating":4}]"#,
            r#"[{"id":1,"title":"B"},{"id":2.0}]"#,
        )
        .unwrap();
        let keys: Vec<_> = r.user.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["occupation", "gender"]);
        assert_eq!(r.history[0].id, Some(7));
        assert_eq!(r.candidate_ids(), [1, 2]);
        let back = Request::from_object(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn rejects_bad_shapes() {
        let err = |u: &str, h: &str, c: &str| Request::from_json_texts(u, h, c).unwrap_err();
        assert!(matches!(
            err("[]", "[]", r#"[{"id":1}]"#),
            KvrecError::WrongType { arg: "user", .. }
        ));
        assert_eq!(err("{}", "[]", "[]"), KvrecError::EmptyCandidates);
        assert!(matches!(
            err("{}", "[]", r#"[{"title":"x"}]"#),
            KvrecError::MissingField { field: "id", .. }
        ));
        assert!(matches!(
            err("{}", r#"[{"rating":5}]"#, r#"[{"id":1}]"#),
            KvrecError::MissingField { field: "title", .. }
        ));
        assert_eq!(
            err("{}", "[]", r#"[{"id":1},{"id":1}]"#),
            KvrecError::DuplicateCandidate { id: 1 }
        );
        assert!(matches!(
            err("{}", "[]", r#"[{"id":1.5}]"#),
            KvrecError::BadId { .. }
        ));
        assert!(matches!(
            err(r#"{"a":{"b":1}}"#, "[]", r#"[{"id":1}]"#),
            KvrecError::NotScalar { .. }
        ));
        assert!(matches!(
            err("{", "[]", "[]"),
            KvrecError::InvalidJson { arg: "user", .. }
        ));
    }
}
