//! `kvrec_augmentations(user, history, candidates, strategy, seed [, copies [, options]])`:
//! a table-valued function yielding the original request (copy 0) and `copies` augmented
//! copies (default 4, the paper's 1:4), each with its rendered prompt and answer.

use std::mem;
use std::os::raw::c_int;

use sqlite_loadable::prelude::*;
use sqlite_loadable::table::{BestIndexError, IndexInfo, VTab, VTabArguments, VTabCursor};
use sqlite_loadable::{api, Error};

use super::call::{error_text, guarded};
use super::table_args::{plan, TableArgs};
use crate::functions::prompt_fns::{
    augmented_json, CANDIDATES, HISTORY, OPTIONS, SEED, STRATEGY, USER,
};
use kvrec_core::augment::{augment_dataset, Strategy, DEFAULT_COPIES};
use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::Options;
use kvrec_core::request::Request;

const NAME: &str = "kvrec_augmentations";
const SCHEMA: &str = "CREATE TABLE x(copy INTEGER, augmentation TEXT, request TEXT, prompt TEXT, \
     answer TEXT, masked TEXT, user HIDDEN, history HIDDEN, candidates HIDDEN, strategy HIDDEN, \
     seed HIDDEN, copies HIDDEN, options HIDDEN)";
/// Index of the first hidden (argument) column in `SCHEMA`.
const FIRST_ARG: usize = 6;
/// Parameter names of the hidden columns, in order; `?` marks optional ones.
const PARAMS: [&str; 7] = [
    "user",
    "history",
    "candidates",
    "strategy",
    "seed",
    "copies?",
    "options?",
];
/// Copies above this are refused: each copy is a full prompt held in memory.
const MAX_COPIES: i64 = 10_000;

#[repr(C)]
pub struct AugmentationsTable {
    base: sqlite3_vtab,
}

impl<'vtab> VTab<'vtab> for AugmentationsTable {
    type Aux = ();
    type Cursor = AugmentationsCursor;

    fn connect(
        _: *mut sqlite3,
        _: Option<&()>,
        _: VTabArguments,
    ) -> sqlite_loadable::Result<(String, Self)> {
        let base: sqlite3_vtab = unsafe { mem::zeroed() };
        Ok((SCHEMA.to_owned(), AugmentationsTable { base }))
    }

    fn best_index(&self, info: IndexInfo) -> core::result::Result<(), BestIndexError> {
        plan(info, FIRST_ARG)
    }

    fn open(&mut self) -> sqlite_loadable::Result<AugmentationsCursor> {
        Ok(AugmentationsCursor {
            base: unsafe { mem::zeroed() },
            rows: Vec::new(),
            index: 0,
        })
    }
}

struct Row {
    augmentation: String,
    request: String,
    prompt: String,
    answer: Option<String>,
    masked: String,
}

#[repr(C)]
pub struct AugmentationsCursor {
    base: sqlite3_vtab_cursor,
    rows: Vec<Row>,
    index: usize,
}

fn compute_rows(args: &TableArgs) -> Result<Vec<Row>> {
    let request = Request::from_json_texts(
        args.required(0, USER)?,
        args.required(1, HISTORY)?,
        args.required(2, CANDIDATES)?,
    )?;
    let strategy = Strategy::parse(args.required(3, STRATEGY)?)?;
    let seed = args.int(4, SEED)?.ok_or(KvrecError::NullArgument {
        arg: "seed",
        expected: SEED,
    })?;
    let copies = args
        .int(5, "an INTEGER number of copies")?
        .unwrap_or(DEFAULT_COPIES as i64);
    if !(0..=MAX_COPIES).contains(&copies) {
        return Err(KvrecError::OutOfRange {
            arg: "copies",
            problem: format!("must be between 0 and {MAX_COPIES}, got {copies}"),
        });
    }
    let options = Options::parse(
        args.text(6, OPTIONS)?,
        &["positive", "max_history", "template"],
    )?;
    let spec = options.template_spec();
    let copies = augment_dataset(
        &request,
        options.positive,
        &strategy,
        seed as u64,
        copies as usize,
    )?;
    Ok(copies
        .iter()
        .enumerate()
        .map(|(i, copy)| Row {
            augmentation: if i == 0 {
                "none".into()
            } else {
                strategy.name().into()
            },
            request: augmented_json(copy).to_string(),
            prompt: spec.render_prompt(&copy.request),
            answer: copy.target.as_ref().map(|ids| spec.render_answer(ids)),
            masked: serde_json::Value::from(copy.masked.clone()).to_string(),
        })
        .collect())
}

impl VTabCursor for AugmentationsCursor {
    fn filter(
        &mut self,
        idx_num: c_int,
        _: Option<&str>,
        values: &[*mut sqlite3_value],
    ) -> sqlite_loadable::Result<()> {
        self.index = 0;
        self.rows.clear();
        let args = TableArgs {
            mask: idx_num,
            values,
            params: &PARAMS,
        };
        match guarded(|| compute_rows(&args)) {
            Ok(rows) => {
                self.rows = rows;
                Ok(())
            }
            Err(error) => Err(Error::new_message(error_text(NAME, &error))),
        }
    }

    fn next(&mut self) -> sqlite_loadable::Result<()> {
        self.index += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.index >= self.rows.len()
    }

    fn column(&self, ctx: *mut sqlite3_context, i: c_int) -> sqlite_loadable::Result<()> {
        let Some(row) = self.rows.get(self.index) else {
            api::result_null(ctx);
            return Ok(());
        };
        match i {
            0 => api::result_int64(ctx, self.index as i64),
            1 => api::result_text(ctx, &row.augmentation)?,
            2 => api::result_text(ctx, &row.request)?,
            3 => api::result_text(ctx, &row.prompt)?,
            4 => match &row.answer {
                Some(answer) => api::result_text(ctx, answer)?,
                None => api::result_null(ctx),
            },
            5 => api::result_text(ctx, &row.masked)?,
            _ => api::result_null(ctx),
        }
        Ok(())
    }

    fn rowid(&self) -> sqlite_loadable::Result<i64> {
        Ok(self.index as i64)
    }
}
