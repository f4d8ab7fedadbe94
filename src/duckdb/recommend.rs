//! `recommend([model,] user, history, candidates [, options])` → `LIST(BIGINT)`, best first,
//! scored a chunk at a time: every row of the chunk is parsed first (a bad row fails the
//! query before any model time is spent), then the rows that share a model and options go
//! to `rank_batch` together, which packs them into llama.cpp decodes and runs the model's
//! contexts side by side.

use std::collections::BTreeMap;

use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vscalar::{ScalarFunctionSignature, VScalar};
use duckdb::vtab::arrow::WritableVector;

use crate::functions::guarded;
use crate::functions::model_fns::{checked, parse_call};
use kvrec_core::error::Result;
use kvrec_core::options::Options;
use kvrec_core::Request;
use kvrec_llm::{rank_batch, registry};

use super::scalar::{row_args, row_error, signatures, Kind};

pub const NAME: &str = "recommend";
const NAMES: &[&str] = &["model", "user", "history", "candidates", "options?"];
const KINDS: &[Kind] = &[Kind::Text, Kind::Json, Kind::Json, Kind::Json, Kind::Json];
/// `recommend(user, history, candidates)`: the named form without model and options.
const DEFAULT_NAMES: &[&str] = &["user", "history", "candidates"];

pub struct Recommend;

/// Ids, best first, of every row of a chunk; `Err` is the message for the failing row.
fn rank_chunk(input: &DataChunkHandle) -> std::result::Result<Vec<Vec<i64>>, String> {
    let names = if input.num_columns() == 3 {
        DEFAULT_NAMES
    } else {
        NAMES
    };
    let mut calls: Vec<(String, Request, Options)> = Vec::with_capacity(input.len());
    for row in 0..input.len() {
        let args = row_args(input, row, names);
        calls.push(guarded(|| parse_call(&args)).map_err(|e| row_error(NAME, row, &e))?);
    }
    // Rows that share a model and options are ranked together, in row order.
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (row, (model, _, options)) in calls.iter().enumerate() {
        let key = format!("{options:?}");
        groups.entry((model.clone(), key)).or_default().push(row);
    }
    let mut ids = vec![Vec::new(); calls.len()];
    for ((model_name, _), rows) in groups {
        let first = rows[0];
        let model = registry::get(&model_name).map_err(|e| row_error(NAME, first, &e))?;
        let options = &calls[first].2;
        let requests: Vec<Request> = rows.iter().map(|&r| calls[r].1.clone()).collect();
        let results = guarded(|| Ok(rank_batch(&model, &requests, options)))
            .map_err(|e| row_error(NAME, first, &e))?;
        for (&row, result) in rows.iter().zip(results) {
            let ranking: Result<_> = result.and_then(|r| checked(r, options));
            ids[row] = ranking.map_err(|e| row_error(NAME, row, &e))?.ids;
        }
    }
    Ok(ids)
}

impl VScalar for Recommend {
    type State = ();

    fn invoke(
        _: &(),
        input: &mut DataChunkHandle,
        output: &mut dyn WritableVector,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ranked = rank_chunk(input)?;
        let mut list = output.list_vector();
        let all: Vec<i64> = ranked.iter().flatten().copied().collect();
        // SAFETY: the child of a LIST(BIGINT) result holds i64 values.
        unsafe { list.set_child(&all) };
        let mut offset = 0;
        for (row, ids) in ranked.iter().enumerate() {
            list.set_entry(row, offset, ids.len());
            offset += ids.len();
        }
        Ok(())
    }

    fn signatures() -> Vec<ScalarFunctionSignature> {
        let list = || LogicalTypeHandle::list(&LogicalTypeId::Bigint.into());
        let mut all = signatures(DEFAULT_NAMES, &KINDS[1..4], list);
        all.extend(signatures(NAMES, KINDS, list));
        all
    }

    fn volatile() -> bool {
        true
    }
}
