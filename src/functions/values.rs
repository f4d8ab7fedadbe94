//! The values the catalog's functions take and give, shared by the catalog, the bodies and
//! the hosts: a leaf, so that the catalog can name its bodies and the bodies its types.

use kvrec_core::error::KvrecError;
use kvrec_core::ItemId;

/// How a parameter is declared to DuckDB (SQLite takes any value and the body checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON text; in DuckDB scalars also any STRUCT / LIST value, which becomes JSON.
    Json,
    Text,
    Int,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Text => "text",
            Kind::Int => "int",
        }
    }
}

/// Ids of many rows (the app's ids: integers, or text for models trained on text ids), or
/// the first failing row (0-based) and its error.
pub type IdRows = std::result::Result<Vec<Vec<ItemId>>, (usize, KvrecError)>;

/// A table function's column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Int,
    Real,
    Text,
    /// An item id: INTEGER, or TEXT for a model trained on text ids (DuckDB decides when it
    /// binds the call, from the model it names).
    Id,
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Int => "int",
            Column::Real => "real",
            Column::Text => "text",
            Column::Id => "id",
        }
    }
}

/// One cell of a table function's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}
