//! The SQL functions' behaviour, shared by the SQLite and DuckDB extensions: each host reads
//! its arguments through [`SqlArgs`], so both give the same results and the same errors.

pub mod catalog;
pub mod meta;
pub mod model_fns;
pub mod prompt_fns;
pub mod table_fns;
pub mod values;

use std::panic::{catch_unwind, AssertUnwindSafe};

use kvrec_core::error::{KvrecError, Result};

/// One call's arguments as a host passes them, with the declared parameter names for
/// messages (a trailing `?` marks an optional parameter).
pub trait SqlArgs {
    fn len(&self) -> usize;
    /// The arguments from `skip` on, named by `params` (for overloads such as
    /// `recommend(user, history, candidates)` next to `recommend(model, user, …)`).
    fn tail<'s>(&'s self, skip: usize, params: &'static [&'static str]) -> Box<dyn SqlArgs + 's>;
    /// Required text argument `i`; `expected` describes it for the error message.
    fn text(&self, i: usize, expected: &'static str) -> Result<&str>;
    /// Required integer argument; text or real values are refused rather than coerced.
    fn int(&self, i: usize, expected: &'static str) -> Result<i64>;
    fn is_null(&self, i: usize) -> bool;

    /// Asks the host whether it interrupted the statement this call belongs to (its time
    /// limit or a cancel); `None` when the host gives no way to ask.
    fn host_probe(&self) -> Option<Box<dyn Fn() -> bool + Sync + '_>> {
        None
    }

    /// Bytes of the call's text arguments together, for the `max_request_bytes` cap.
    fn text_bytes(&self) -> usize {
        (0..self.len())
            .filter_map(|i| self.text(i, "").ok())
            .map(str::len)
            .sum()
    }

    /// Optional text argument: `None` when absent or NULL.
    fn opt_text(&self, i: usize, expected: &'static str) -> Result<Option<&str>> {
        if self.is_null(i) {
            Ok(None)
        } else {
            self.text(i, expected).map(Some)
        }
    }
}

/// The name of parameter `i` of `params`, for messages.
pub fn param_name(params: &[&'static str], i: usize) -> &'static str {
    params
        .get(i)
        .map(|p| p.trim_end_matches('?'))
        .unwrap_or("argument")
}

/// One argument value as a host hands it over.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    /// Bytes that are not UTF-8 (a BLOB): refused as SQLite refuses them.
    NotUtf8,
    /// Any other type, by its SQL name.
    Other(&'static str),
}

/// Owned arguments of one row (the DuckDB extension reads a chunk's columns into these).
pub struct RowArgs {
    pub cells: Vec<Cell>,
    pub params: &'static [&'static str],
}

impl RowArgs {
    /// The error for argument `i` holding `cell` where `expected` was wanted.
    fn mismatch(&self, i: usize, cell: Option<&Cell>, expected: &'static str) -> KvrecError {
        let arg = param_name(self.params, i);
        let got = match cell {
            None | Some(Cell::Null) => return KvrecError::NullArgument { arg, expected },
            Some(Cell::Text(_)) => "VARCHAR",
            Some(Cell::Int(_)) => "BIGINT",
            Some(Cell::NotUtf8) => return KvrecError::NotUtf8 { arg, expected },
            Some(Cell::Other(name)) => name,
        };
        KvrecError::WrongType {
            arg,
            expected,
            got: got.into(),
        }
    }
}

impl SqlArgs for RowArgs {
    fn len(&self) -> usize {
        self.cells.len()
    }

    fn tail<'s>(&'s self, skip: usize, params: &'static [&'static str]) -> Box<dyn SqlArgs + 's> {
        Box::new(RowArgs {
            cells: self.cells[skip.min(self.cells.len())..].to_vec(),
            params,
        })
    }

    fn text(&self, i: usize, expected: &'static str) -> Result<&str> {
        match self.cells.get(i) {
            Some(Cell::Text(text)) => Ok(text),
            other => Err(self.mismatch(i, other, expected)),
        }
    }

    fn int(&self, i: usize, expected: &'static str) -> Result<i64> {
        match self.cells.get(i) {
            Some(Cell::Int(v)) => Ok(*v),
            other => Err(self.mismatch(i, other, expected)),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        matches!(self.cells.get(i), None | Some(Cell::Null))
    }
}

/// Runs `body`, turning a panic into [`KvrecError::Internal`] instead of unwinding into C.
pub fn guarded<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(panic) => Err(KvrecError::Internal {
            detail: panic_message(panic.as_ref()),
        }),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}
