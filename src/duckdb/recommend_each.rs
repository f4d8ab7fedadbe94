//! `recommend_each(model, user, history, candidates [, options := '…'])`: the ranking as rows
//! `(rank, id, score, dropped_history, prompt_tokens)`, best first. Arguments are JSON text
//! (wrap STRUCT / LIST values in `to_json()`); table-function options are a named parameter.

use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use kvrec_core::options::Options;
use kvrec_core::Request;
use kvrec_llm::{rank, registry};

use crate::functions::model_fns::{checked, parse_call};
use crate::functions::{guarded, Cell, RowArgs};

use super::pending::Pending;
use super::scalar::row_error;

const NAME: &str = "recommend_each";
const PARAMS: &[&str] = &["model", "user", "history", "candidates", "options?"];
const COLUMNS: [&str; 5] = ["rank", "id", "score", "dropped_history", "prompt_tokens"];

pub struct RecommendEach;

pub struct Call(String, Request, Options);

/// One output row: rank, id, score, dropped_history, prompt_tokens.
type Row = (i64, i64, f64, i64, i64);

fn cell(value: duckdb::vtab::Value) -> Cell {
    if value.is_null() {
        Cell::Null
    } else {
        Cell::Text(value.to_string())
    }
}

impl VTab for RecommendEach {
    type InitData = Pending<Row>;
    type BindData = Call;

    fn bind(bind: &BindInfo) -> Result<Call, Box<dyn std::error::Error>> {
        for (i, name) in COLUMNS.iter().enumerate() {
            let ty = if i == 2 {
                LogicalTypeId::Double
            } else {
                LogicalTypeId::Bigint
            };
            bind.add_result_column(name, LogicalTypeHandle::from(ty));
        }
        let mut cells: Vec<Cell> = (0..4).map(|i| cell(bind.get_parameter(i))).collect();
        cells.push(bind.get_named_parameter("options").map_or(Cell::Null, cell));
        let args = RowArgs {
            cells,
            params: PARAMS,
        };
        let (model, request, options) =
            guarded(|| parse_call(&args)).map_err(|e| row_error(NAME, 0, &e))?;
        Ok(Call(model, request, options))
    }

    fn init(init: &InitInfo) -> Result<Pending<Row>, Box<dyn std::error::Error>> {
        // SAFETY: DuckDB keeps the bind data that `bind` returned alive until the scan ends.
        let Call(model, request, options) = unsafe { &*init.get_bind_data::<Call>() };
        let ranking = guarded(|| {
            let model = registry::get(model)?;
            checked(rank(&model, request, options)?, options)
        })
        .map_err(|e| format!("{NAME}: {e}"))?;
        let rows: Vec<Row> = ranking
            .ids
            .iter()
            .zip(&ranking.scores)
            .enumerate()
            .map(|(i, (&id, &score))| {
                let dropped = ranking.dropped_history as i64;
                (
                    i as i64 + 1,
                    id,
                    score,
                    dropped,
                    ranking.prompt_tokens as i64,
                )
            })
            .collect();
        Ok(Pending::new(rows))
    }

    fn func(
        func: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let rows = func.get_init_data().next_chunk();
        for (row, &(rank, id, score, dropped, tokens)) in rows.iter().enumerate() {
            // SAFETY: each column has the type bind declared, and `row` < 2048 (the chunk size).
            unsafe {
                output.flat_vector(0).as_mut_slice::<i64>()[row] = rank;
                output.flat_vector(1).as_mut_slice::<i64>()[row] = id;
                output.flat_vector(2).as_mut_slice::<f64>()[row] = score;
                output.flat_vector(3).as_mut_slice::<i64>()[row] = dropped;
                output.flat_vector(4).as_mut_slice::<i64>()[row] = tokens;
            }
        }
        output.set_len(rows.len());
        Ok(())
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some((0..4).map(|_| LogicalTypeId::Varchar.into()).collect())
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        Some(vec![("options".into(), LogicalTypeId::Varchar.into())])
    }
}
