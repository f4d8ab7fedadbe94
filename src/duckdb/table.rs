//! Catalog table functions in DuckDB: required parameters positional, optional ones named
//! (`options := '…'`); the rows are computed when the scan starts and written a chunk at a time.

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};

use crate::functions::catalog::{optional, Column, Kind, Table, Value, TABLES};
use crate::functions::{guarded, table_fns, Cell, RowArgs};

use super::pending::Pending;
use super::scalar::row_error;

/// Catalog table function number `I`.
pub struct CatalogTable<const I: usize>;

impl<const I: usize> CatalogTable<I> {
    const FUNCTION: &'static Table = &TABLES[I];
}

/// A table parameter's DuckDB type: JSON arguments are text here (wrap STRUCT / LIST values
/// in `to_json()`), since a bound parameter's nested value has no JSON form.
fn parameter_type(kind: Kind) -> LogicalTypeHandle {
    match kind {
        Kind::Int => LogicalTypeId::Bigint.into(),
        Kind::Json | Kind::Text => LogicalTypeId::Varchar.into(),
    }
}

fn cell(value: Option<duckdb::vtab::Value>, kind: Kind) -> Cell {
    match value {
        None => Cell::Null,
        Some(v) if v.is_null() => Cell::Null,
        Some(v) if kind == Kind::Int => Cell::Int(v.to_int64()),
        Some(v) => Cell::Text(v.to_string()),
    }
}

impl<const I: usize> VTab for CatalogTable<I> {
    type InitData = Pending<Vec<Value>>;
    /// The call's arguments, one cell per parameter.
    type BindData = Vec<Cell>;

    fn bind(bind: &BindInfo) -> Result<Vec<Cell>, Box<dyn std::error::Error>> {
        let f = Self::FUNCTION;
        let required = f.required();
        let cells: Vec<Cell> = f
            .params
            .iter()
            .zip(f.kinds)
            .enumerate()
            .map(|(i, (param, &kind))| {
                let value = if i < required {
                    Some(bind.get_parameter(i as u64))
                } else {
                    bind.get_named_parameter(param.trim_end_matches('?'))
                };
                cell(value, kind)
            })
            .collect();
        let text_ids = f.columns.iter().any(|(_, c)| *c == Column::Id)
            && table_fns::text_ids(&RowArgs {
                cells: cells.clone(),
                params: f.params,
            });
        for (name, column) in f.columns {
            let ty = match column {
                Column::Int => LogicalTypeId::Bigint,
                Column::Real => LogicalTypeId::Double,
                Column::Text => LogicalTypeId::Varchar,
                Column::Id if text_ids => LogicalTypeId::Varchar,
                Column::Id => LogicalTypeId::Bigint,
            };
            bind.add_result_column(name, LogicalTypeHandle::from(ty));
        }
        Ok(cells)
    }

    fn init(init: &InitInfo) -> Result<Pending<Vec<Value>>, Box<dyn std::error::Error>> {
        let f = Self::FUNCTION;
        // SAFETY: DuckDB keeps the bind data that `bind` returned alive until the scan ends.
        let cells = unsafe { &*init.get_bind_data::<Vec<Cell>>() };
        let args = RowArgs {
            cells: cells.clone(),
            params: f.params,
        };
        let rows = guarded(|| (f.rows)(&args)).map_err(|e| row_error(f.name, 0, &e))?;
        Ok(Pending::new(rows))
    }

    fn func(
        func: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let rows = func.get_init_data().next_chunk();
        for (row, values) in rows.iter().enumerate() {
            for (c, value) in values.iter().enumerate() {
                let mut vector = output.flat_vector(c);
                // SAFETY: each column has the type bind declared for the catalog's column, and
                // `row` is below the chunk's capacity.
                match value {
                    Value::Int(v) => unsafe { vector.as_mut_slice::<i64>()[row] = *v },
                    Value::Real(v) => unsafe { vector.as_mut_slice::<f64>()[row] = *v },
                    Value::Text(v) => vector.insert(row, v.as_str()),
                    Value::Null => vector.set_null(row),
                }
            }
        }
        output.set_len(rows.len());
        Ok(())
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        let f = Self::FUNCTION;
        Some(
            f.kinds[..f.required()]
                .iter()
                .map(|&k| parameter_type(k))
                .collect(),
        )
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        let f = Self::FUNCTION;
        Some(
            f.params
                .iter()
                .zip(f.kinds)
                .filter(|(p, _)| optional(p))
                .map(|(p, &k)| (p.trim_end_matches('?').to_string(), parameter_type(k)))
                .collect(),
        )
    }
}
