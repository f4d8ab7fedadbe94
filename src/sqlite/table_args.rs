//! Arguments of table-valued functions, which SQLite passes as constraints on hidden columns.
//! `plan` hands every equality constraint on a hidden column to xFilter and records in idxNum
//! which were given; [`TableArgs`] then looks them up by parameter index.

use sqlite_loadable::api;
use sqlite_loadable::prelude::*;
use sqlite_loadable::table::{BestIndexError, ConstraintOperator, IndexInfo};

use kvrec_core::error::{KvrecError, Result};

/// xBestIndex for a table function whose hidden argument columns start at `first_arg`.
pub fn plan(mut info: IndexInfo, first_arg: usize) -> core::result::Result<(), BestIndexError> {
    let mut given = Vec::new();
    for constraint in info.constraints() {
        let Some(arg) = usize::try_from(constraint.column_idx())
            .ok()
            .and_then(|c| c.checked_sub(first_arg))
        else {
            continue;
        };
        if !constraint.usable() || constraint.op() != Some(ConstraintOperator::EQ) {
            return Err(BestIndexError::Constraint);
        }
        given.push((arg, constraint));
    }
    given.sort_by_key(|(arg, _)| *arg);
    let mut mask = 0;
    for (argv, (arg, constraint)) in given.iter_mut().enumerate() {
        constraint.set_argv_index(argv as i32 + 1);
        constraint.set_omit(true);
        mask |= 1 << *arg;
    }
    info.set_idxnum(mask);
    info.set_estimated_cost(1000.0);
    info.set_estimated_rows(10);
    Ok(())
}

/// The arguments of one call, by parameter index, whatever subset was given.
pub struct TableArgs<'a> {
    pub mask: i32,
    pub values: &'a [*mut sqlite3_value],
    /// Parameter names in column order; `?` marks optional ones.
    pub params: &'static [&'static str],
}

impl TableArgs<'_> {
    fn name(&self, param: usize) -> &'static str {
        self.params[param].trim_end_matches('?')
    }

    fn value(&self, param: usize) -> Option<*mut sqlite3_value> {
        if self.mask & (1 << param) == 0 {
            return None;
        }
        let position = (0..param).filter(|p| self.mask & (1 << p) != 0).count();
        self.values.get(position).copied()
    }

    /// Text argument, `None` when missing or NULL.
    pub fn text(&self, param: usize, expected: &'static str) -> Result<Option<&str>> {
        match self.value(param) {
            None => Ok(None),
            Some(v) if api::value_type(&v) == api::ValueType::Null => Ok(None),
            Some(v) => api::value_text(&v)
                .map(Some)
                .map_err(|_| KvrecError::NotUtf8 {
                    arg: self.name(param),
                    expected,
                }),
        }
    }

    pub fn required(&self, param: usize, expected: &'static str) -> Result<&str> {
        self.text(param, expected)?.ok_or(KvrecError::NullArgument {
            arg: self.name(param),
            expected,
        })
    }

    /// Integer argument, `None` when missing or NULL.
    pub fn int(&self, param: usize, expected: &'static str) -> Result<Option<i64>> {
        match self.value(param) {
            None => Ok(None),
            Some(v) => match api::value_type(&v) {
                api::ValueType::Null => Ok(None),
                api::ValueType::Integer => Ok(Some(api::value_int64(&v))),
                _ => Err(KvrecError::WrongType {
                    arg: self.name(param),
                    expected,
                    got: "a non-INTEGER value".into(),
                }),
            },
        }
    }
}
