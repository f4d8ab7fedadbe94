//! Catalog scalars as DuckDB vectorised functions: each row's arguments become [`RowArgs`];
//! text results are VARCHAR, id results `LIST(BIGINT)`; a failing row fails the query with the
//! function's name, the row and the shared error text (which says what to do).

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::ffi;
use duckdb::vscalar::{ScalarFunctionSignature, VScalar};
use duckdb::vtab::arrow::WritableVector;

use crate::functions::catalog::{Body, Kind, Scalar, SCALARS};
use crate::functions::{guarded, RowArgs, SqlArgs};
use kvrec_core::error::KvrecError;
use kvrec_core::ItemId;

use super::values::cell_at;

pub fn logical_type(kind: Kind) -> LogicalTypeHandle {
    match kind {
        Kind::Json => LogicalTypeId::Any.into(),
        Kind::Text => LogicalTypeId::Varchar.into(),
        Kind::Int => LogicalTypeId::Bigint.into(),
    }
}

/// Reads row `row` of every column of `input`.
fn row_args(input: &DataChunkHandle, row: usize, params: &'static [&'static str]) -> RowArgs {
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

/// Catalog scalar number `I` (DuckDB asks a function type, not a value, for its signatures).
pub struct CatalogScalar<const I: usize>;

impl<const I: usize> CatalogScalar<I> {
    const FUNCTION: &'static Scalar = &SCALARS[I];
}

impl<const I: usize> VScalar for CatalogScalar<I> {
    type State = ();

    fn invoke(
        _: &(),
        input: &mut DataChunkHandle,
        output: &mut dyn WritableVector,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let f = Self::FUNCTION;
        let rows: Vec<RowArgs> = (0..input.len())
            .map(|row| row_args(input, row, f.params))
            .collect();
        match f.body {
            Body::Text(body) => {
                let out = output.flat_vector();
                for (row, args) in rows.iter().enumerate() {
                    let text = guarded(|| body(args)).map_err(|e| row_error(f.name, row, &e))?;
                    out.insert(row, text.as_str());
                }
            }
            Body::Ids(body) => {
                let refs: Vec<&dyn SqlArgs> = rows.iter().map(|r| r as &dyn SqlArgs).collect();
                let ranked = guarded(|| Ok(body(&refs)))
                    .map_err(|e| row_error(f.name, 0, &e))?
                    .map_err(|(row, e)| row_error(f.name, row, &e))?;
                let mut list = output.list_vector();
                let all: Vec<i64> = ranked
                    .iter()
                    .flatten()
                    .map(|id| match id {
                        ItemId::Int(v) => Ok(*v),
                        ItemId::Text(_) => Err(row_error(
                            f.name,
                            0,
                            &KvrecError::TextIds { function: f.name },
                        )),
                    })
                    .collect::<std::result::Result<_, _>>()?;
                // SAFETY: the child of a LIST(BIGINT) result holds i64 values.
                unsafe { list.set_child(&all) };
                let mut offset = 0;
                for (row, ids) in ranked.iter().enumerate() {
                    list.set_entry(row, offset, ids.len());
                    offset += ids.len();
                }
            }
        }
        Ok(())
    }

    fn signatures() -> Vec<ScalarFunctionSignature> {
        let f = Self::FUNCTION;
        let returns = || match f.body {
            Body::Text(_) => LogicalTypeId::Varchar.into(),
            Body::Ids(_) => LogicalTypeHandle::list(&LogicalTypeId::Bigint.into()),
        };
        f.forms()
            .into_iter()
            .map(|kinds| {
                ScalarFunctionSignature::exact(
                    kinds.into_iter().map(logical_type).collect(),
                    returns(),
                )
            })
            .collect()
    }

    fn volatile() -> bool {
        // Model functions: a reloaded model must never serve cached results.
        Self::FUNCTION.model
    }
}
