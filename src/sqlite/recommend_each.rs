//! `recommend_each(model, user, history, candidates [, options])`: the ranking as rows
//! `(rank, id, score, dropped_history, prompt_tokens)`, best first.

use std::mem;
use std::os::raw::c_int;

use kvrec_core::error::Result;
use kvrec_core::options::{Options, CALL_OPTIONS};
use kvrec_core::Request;
use kvrec_llm::{rank, registry, Ranking};
use sqlite_loadable::prelude::*;
use sqlite_loadable::table::{BestIndexError, IndexInfo, VTab, VTabArguments, VTabCursor};
use sqlite_loadable::{api, Error};

use super::call::{error_text, guarded};
use super::table_args::{plan, TableArgs};
use crate::functions::model_fns::MODEL;
use crate::functions::prompt_fns::{CANDIDATES, HISTORY, OPTIONS, USER};

const NAME: &str = "recommend_each";
const SCHEMA: &str = "CREATE TABLE x(rank INTEGER, id INTEGER, score REAL, dropped_history INTEGER, \
     prompt_tokens INTEGER, model HIDDEN, user HIDDEN, history HIDDEN, candidates HIDDEN, options HIDDEN)";
const FIRST_ARG: usize = 5;
const PARAMS: [&str; 5] = ["model", "user", "history", "candidates", "options?"];

#[repr(C)]
pub struct RecommendEachTable {
    base: sqlite3_vtab,
}

impl<'vtab> VTab<'vtab> for RecommendEachTable {
    type Aux = ();
    type Cursor = RecommendEachCursor;

    fn connect(
        _: *mut sqlite3,
        _: Option<&()>,
        _: VTabArguments,
    ) -> sqlite_loadable::Result<(String, Self)> {
        let base: sqlite3_vtab = unsafe { mem::zeroed() };
        Ok((SCHEMA.to_owned(), RecommendEachTable { base }))
    }

    fn best_index(&self, info: IndexInfo) -> core::result::Result<(), BestIndexError> {
        plan(info, FIRST_ARG)
    }

    fn open(&mut self) -> sqlite_loadable::Result<RecommendEachCursor> {
        Ok(RecommendEachCursor {
            base: unsafe { mem::zeroed() },
            ranking: None,
            index: 0,
        })
    }
}

#[repr(C)]
pub struct RecommendEachCursor {
    base: sqlite3_vtab_cursor,
    ranking: Option<Ranking>,
    index: usize,
}

fn compute(args: &TableArgs) -> Result<Ranking> {
    let model = registry::get(args.required(0, MODEL)?)?;
    let request = Request::from_json_texts(
        args.required(1, USER)?,
        args.required(2, HISTORY)?,
        args.required(3, CANDIDATES)?,
    )?;
    let options = Options::parse(args.text(4, OPTIONS)?, CALL_OPTIONS)?;
    rank(&model, &request, &options)
}

impl VTabCursor for RecommendEachCursor {
    fn filter(
        &mut self,
        idx_num: c_int,
        _: Option<&str>,
        values: &[*mut sqlite3_value],
    ) -> sqlite_loadable::Result<()> {
        self.index = 0;
        let args = TableArgs {
            mask: idx_num,
            values,
            params: &PARAMS,
        };
        match guarded(|| compute(&args)) {
            Ok(ranking) => {
                self.ranking = Some(ranking);
                Ok(())
            }
            Err(error) => {
                self.ranking = None;
                Err(Error::new_message(error_text(NAME, &error)))
            }
        }
    }

    fn next(&mut self) -> sqlite_loadable::Result<()> {
        self.index += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.ranking
            .as_ref()
            .is_none_or(|r| self.index >= r.ids.len())
    }

    fn column(&self, ctx: *mut sqlite3_context, i: c_int) -> sqlite_loadable::Result<()> {
        let Some(r) = self.ranking.as_ref().filter(|r| self.index < r.ids.len()) else {
            api::result_null(ctx);
            return Ok(());
        };
        match i {
            0 => api::result_int64(ctx, self.index as i64 + 1),
            1 => api::result_int64(ctx, r.ids[self.index]),
            2 => api::result_double(ctx, r.scores[self.index]),
            3 => api::result_int64(ctx, r.dropped_history as i64),
            4 => api::result_int64(ctx, r.prompt_tokens as i64),
            _ => api::result_null(ctx),
        }
        Ok(())
    }

    fn rowid(&self) -> sqlite_loadable::Result<i64> {
        Ok(self.index as i64)
    }
}
