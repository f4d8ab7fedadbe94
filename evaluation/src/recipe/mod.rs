//! Recipes: an app's own tables as training data. A small TOML file says where the data is
//! and gives one SQL query per role; `data --recipe` then runs the same protocol as on
//! MovieLens. The app's ids (text, 64-bit, negative) become dense item ids `1..=n` in their
//! natural order, and the map travels to the model so it answers with the app's ids.
//!
//! ```toml
//! [source]
//! sqlite = "shop.db"            # or duckdb = "shop.duckdb"
//! csv = { returns = "returns.csv" }   # CSV files as extra tables (SQLite source)
//!
//! [interactions]                # required columns: user, item, time; optional: rating
//! sql = "SELECT customer_id AS user, sku AS item, ordered_at AS time FROM orders"
//!
//! [items]                       # optional: item, then title, genres and any other keys
//! sql = "SELECT sku AS item, name AS title, category FROM products"
//!
//! [users]                       # optional: user, then any keys
//! sql = "SELECT customer_id AS user, segment FROM customers"
//!
//! [train]                       # optional, for `fit`: training options over the derived ones
//! dropout = 0.3
//! ```

pub mod source;
pub mod time;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kvrec_core::item_ids::assign_dense;
use kvrec_core::ItemId;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::interactions::{Event, Interactions, Item};
use source::{Cell, Rows, Source};

/// The file `data --recipe` writes beside its requests: the app id of each dense item id
/// (index 0 is item 1), which `train` and `export` carry into the model.
pub const ITEM_IDS_FILE: &str = "item_ids.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub source: SourceSpec,
    pub interactions: Query,
    pub items: Option<Query>,
    pub users: Option<Query>,
    /// Training options `fit` sets over the ones it derives (see `TrainConfig`); paths in it
    /// are relative to the recipe.
    pub train: Option<toml::Table>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub sqlite: Option<PathBuf>,
    pub duckdb: Option<PathBuf>,
    /// Table name → CSV file, queried as SQLite tables.
    #[serde(default)]
    pub csv: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub sql: String,
}

impl Recipe {
    pub fn parse(text: &str, path: &Path) -> Result<Recipe> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "recipe {} is not valid: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }

    pub fn read(path: &Path) -> Result<Recipe> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the recipe {}", path.display()))?;
        Recipe::parse(&text, path)
    }

    /// Opens the source, paths taken relative to `dir` (the recipe's folder).
    pub fn open(&self, dir: &Path) -> Result<Source> {
        let at = |p: &PathBuf| dir.join(p);
        let csv: Vec<(String, PathBuf)> = self
            .source
            .csv
            .iter()
            .map(|(name, file)| (name.clone(), at(file)))
            .collect();
        match (&self.source.sqlite, &self.source.duckdb) {
            (Some(_), Some(_)) => {
                bail!("the recipe's [source] names both sqlite and duckdb; keep one")
            }
            (None, Some(db)) if !csv.is_empty() => bail!(
                "[source] csv tables go with a SQLite source; with duckdb = \"{}\", read the \
                 files in the SQL instead, e.g. FROM read_csv('orders.csv')",
                db.display()
            ),
            (None, Some(db)) => Source::duckdb(&at(db)),
            (db, None) => {
                if db.is_none() && csv.is_empty() {
                    bail!(
                        "the recipe's [source] names no data: set sqlite = \"app.db\", \
                         duckdb = \"app.duckdb\" or csv = {{ orders = \"orders.csv\" }}"
                    );
                }
                Source::sqlite(db.as_ref().map(at).as_deref(), &csv)
            }
        }
    }
}

/// Reads the recipe at `path` and its data.
pub fn read(path: &Path) -> Result<Interactions> {
    let recipe = Recipe::read(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let source = recipe.open(dir)?;
    load(&recipe, &source)
}

/// Runs the recipe's queries on `source`.
pub fn load(recipe: &Recipe, source: &Source) -> Result<Interactions> {
    let what = "[interactions] sql";
    let rows = source.query(&recipe.interactions.sql, what)?;
    let events = raw_events(&rows, what)?;
    let item_ids = assign_dense(events.iter().map(|e| e.item.clone()));
    let user_ids = assign_dense(events.iter().map(|e| e.user.clone()));
    let dense = |ids: &[ItemId]| -> HashMap<ItemId, i64> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as i64 + 1))
            .collect()
    };
    let (item_of, user_of) = (dense(&item_ids), dense(&user_ids));
    let mut data = Interactions {
        events: events
            .iter()
            .map(|e| Event {
                user: user_of[&e.user],
                item: item_of[&e.item],
                rating: e.rating,
                time: e.time,
            })
            .collect(),
        ..Default::default()
    };
    if let Some(items) = &recipe.items {
        let what = "[items] sql";
        for (id, mut keys) in keyed_rows(&source.query(&items.sql, what)?, "item", what)? {
            // Items nobody interacted with cannot be learnt or recommended: left out.
            let Some(&dense) = item_of.get(&id) else {
                continue;
            };
            let text = |v: Option<Value>| v.map(|v| v.as_str().map_or(v.to_string(), String::from));
            let title = text(keys.shift_remove("title"));
            let genres = text(keys.shift_remove("genres"));
            data.items.insert(
                dense,
                Item {
                    title,
                    genres,
                    year: None,
                    keys,
                },
            );
        }
    }
    if let Some(users) = &recipe.users {
        let what = "[users] sql";
        for (id, keys) in keyed_rows(&source.query(&users.sql, what)?, "user", what)? {
            if let Some(&dense) = user_of.get(&id) {
                data.users.insert(dense, keys);
            }
        }
    }
    data.item_ids = Some(item_ids);
    data.user_ids = Some(user_ids);
    Ok(data)
}

/// An interaction with the app's ids.
struct RawEvent {
    user: ItemId,
    item: ItemId,
    rating: Option<i64>,
    time: i64,
}

/// The position of each of `names` among `rows`' columns; a missing required one is an error
/// that lists what the query returned.
fn column_positions(
    rows: &Rows,
    required: &[&str],
    optional: &[&str],
    what: &str,
    example: &str,
) -> Result<Vec<Option<usize>>> {
    let find = |name: &str| {
        rows.columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
    };
    if let Some(missing) = required.iter().find(|n| find(n).is_none()) {
        bail!(
            "{what} returns the columns ({}) but no '{missing}'; it needs {}, named with AS, e.g. {example}",
            rows.columns.join(", "),
            required.join(", ")
        );
    }
    Ok(required.iter().chain(optional).map(|n| find(n)).collect())
}

fn raw_events(rows: &Rows, what: &str) -> Result<Vec<RawEvent>> {
    let at = column_positions(
        rows,
        &["user", "item", "time"],
        &["rating"],
        what,
        "SELECT customer_id AS user, sku AS item, ordered_at AS time FROM orders",
    )?;
    if rows.rows.is_empty() {
        bail!("{what} returned no rows; check its WHERE clause and that the table has data");
    }
    let (user, item, time, rating) = (at[0].unwrap(), at[1].unwrap(), at[2].unwrap(), at[3]);
    let mut seen: HashMap<(ItemId, ItemId, i64), usize> = HashMap::new();
    let mut events = Vec::with_capacity(rows.rows.len());
    for (i, row) in rows.rows.iter().enumerate() {
        let n = i + 1;
        let event = RawEvent {
            user: id_cell(&row[user], "user", n, what)?,
            item: id_cell(&row[item], "item", n, what)?,
            time: time_cell(&row[time], n, what)?,
            rating: rating
                .map(|c| rating_cell(&row[c], n, what))
                .transpose()?
                .flatten(),
        };
        let key = (event.user.clone(), event.item.clone(), event.time);
        if let Some(first) = seen.insert(key, n) {
            bail!(
                "{what}: rows {first} and {n} are the same event (user {}, item {}, time {}); \
                 drop duplicates in the query, e.g. SELECT DISTINCT",
                event.user,
                event.item,
                event.time
            );
        }
        events.push(event);
    }
    Ok(events)
}

fn id_cell(cell: &Cell, column: &str, row: usize, what: &str) -> Result<ItemId> {
    match cell {
        Cell::Int(v) => Ok(ItemId::Int(*v)),
        Cell::Real(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(ItemId::Int(*v as i64)),
        Cell::Text(s) if !s.trim().is_empty() => Ok(ItemId::Text(s.clone())),
        Cell::Null | Cell::Text(_) => bail!(
            "{what}: row {row} has no {column} (NULL or empty); leave such rows out, e.g. \
             WHERE {column}_column IS NOT NULL AND {column}_column <> ''"
        ),
        Cell::Real(v) => {
            bail!("{what}: row {row} has {column} {v}, a fraction; ids are integers or text")
        }
    }
}

fn time_cell(cell: &Cell, row: usize, what: &str) -> Result<i64> {
    let fix = "give seconds or ISO-8601 text such as '2024-03-01 14:05:09', e.g. \
               unixepoch(ordered_at) in SQLite or epoch(ordered_at) in DuckDB";
    match cell {
        Cell::Int(v) => Ok(*v),
        Cell::Real(v) if v.is_finite() => Ok(v.floor() as i64),
        Cell::Text(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| time::parse_iso(s))
            .with_context(|| {
                format!("{what}: row {row} has time '{s}', which is not a time; {fix}")
            }),
        Cell::Null | Cell::Real(_) => bail!("{what}: row {row} has no time (NULL); {fix}"),
    }
}

fn rating_cell(cell: &Cell, row: usize, what: &str) -> Result<Option<i64>> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Int(v) => Ok(Some(*v)),
        Cell::Real(v) if v.is_finite() => Ok(Some(v.round() as i64)),
        Cell::Text(s) if s.trim().is_empty() => Ok(None),
        Cell::Text(s) => s.trim().parse::<f64>().map(|v| Some(v.round() as i64)).map_err(|_| {
            anyhow::anyhow!("{what}: row {row} has rating '{s}', which is not a number; rate with numbers or leave rating out")
        }),
        Cell::Real(_) => bail!("{what}: row {row} has a rating that is not a finite number"),
    }
}

/// Rows keyed by their `key` column, each with its other non-NULL columns as key-values.
fn keyed_rows(rows: &Rows, key: &str, what: &str) -> Result<Vec<(ItemId, Map<String, Value>)>> {
    let example = format!("SELECT sku AS {key}, name AS title, category FROM products");
    let at = column_positions(rows, &[key], &[], what, &example)?[0].unwrap();
    let mut seen: HashMap<ItemId, usize> = HashMap::new();
    let mut out = Vec::with_capacity(rows.rows.len());
    for (i, row) in rows.rows.iter().enumerate() {
        let id = id_cell(&row[at], key, i + 1, what)?;
        if let Some(first) = seen.insert(id.clone(), i + 1) {
            bail!(
                "{what}: rows {first} and {} both describe {key} {id}; give one row per {key}",
                i + 1
            );
        }
        let mut keys = Map::new();
        for (c, cell) in row.iter().enumerate().filter(|(c, _)| *c != at) {
            let value = match cell {
                Cell::Null => continue,
                Cell::Int(v) => Value::from(*v),
                Cell::Real(v) => Value::from(*v),
                Cell::Text(s) => Value::from(s.clone()),
            };
            keys.insert(rows.columns[c].to_lowercase(), value);
        }
        out.push((id, keys));
    }
    Ok(out)
}
