//! The adapter from DuckDB's vectorised scalar calls to the shared row functions: each row's
//! arguments become [`RowArgs`], each result a VARCHAR; a failing row fails the query with the
//! function's name, the row and the shared error text (which says what to do).

use std::marker::PhantomData;

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::ffi;
use duckdb::vscalar::{ScalarFunctionSignature, VScalar};
use duckdb::vtab::arrow::WritableVector;

use crate::functions::{RowArgs, SqlArgs};
use kvrec_core::error::{KvrecError, Result};

use super::values::cell_at;

/// How a parameter is declared to DuckDB.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON text or any STRUCT / LIST value (declared ANY; nested values become JSON).
    Json,
    Text,
    Int,
}

impl Kind {
    fn logical_type(self) -> LogicalTypeHandle {
        match self {
            Kind::Json => LogicalTypeId::Any.into(),
            Kind::Text => LogicalTypeId::Varchar.into(),
            Kind::Int => LogicalTypeId::Bigint.into(),
        }
    }
}

/// One SQL function shared with SQLite: its name, parameter names (`?` = optional, trailing)
/// and their kinds, whether it depends on loaded models, and the row function.
pub trait RowFunction {
    const NAME: &'static str;
    const PARAMS: &'static [&'static str];
    const KINDS: &'static [Kind];
    /// Model functions: a reloaded model must never serve cached results.
    const VOLATILE: bool;
    fn call(args: &dyn SqlArgs) -> Result<String>;
}

/// The overloads: one per number of given optional parameters.
pub fn signatures(
    params: &[&'static str],
    kinds: &[Kind],
    returns: impl Fn() -> LogicalTypeHandle,
) -> Vec<ScalarFunctionSignature> {
    let required = params.iter().filter(|n| !n.ends_with('?')).count();
    (required..=params.len())
        .map(|n| {
            ScalarFunctionSignature::exact(
                kinds[..n].iter().map(|k| k.logical_type()).collect(),
                returns(),
            )
        })
        .collect()
}

/// Reads row `row` of every column of `input`.
pub fn row_args(input: &DataChunkHandle, row: usize, params: &'static [&'static str]) -> RowArgs {
    let cells = (0..input.num_columns())
        // SAFETY: `c` is a column of the chunk DuckDB passed in, alive for this call.
        .map(|c| {
            cell_at(
                unsafe { ffi::duckdb_data_chunk_get_vector(input.get_ptr(), c as u64) },
                row,
            )
        })
        .collect();
    RowArgs { cells, params }
}

/// The message DuckDB shows for `error` in row `row` (0-based in the chunk) of `name`.
pub fn row_error(name: &str, row: usize, error: &KvrecError) -> String {
    format!("{name}: {error} (in row {} of this chunk)", row + 1).replace('\0', "\\0")
}

/// A shared function returning VARCHAR.
pub struct TextFunction<F>(PhantomData<F>);

impl<F: RowFunction> VScalar for TextFunction<F> {
    type State = ();

    fn invoke(
        _: &(),
        input: &mut DataChunkHandle,
        output: &mut dyn WritableVector,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let out = output.flat_vector();
        for row in 0..input.len() {
            let args = row_args(input, row, F::PARAMS);
            let text = crate::functions::guarded(|| F::call(&args))
                .map_err(|e| row_error(F::NAME, row, &e))?;
            out.insert(row, text.as_str());
        }
        Ok(())
    }

    fn signatures() -> Vec<ScalarFunctionSignature> {
        signatures(F::PARAMS, F::KINDS, || LogicalTypeId::Varchar.into())
    }

    fn volatile() -> bool {
        F::VOLATILE
    }
}
