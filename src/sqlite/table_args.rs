//! Arguments of table-valued functions, which SQLite passes as constraints on hidden columns.
//! `plan` hands every equality constraint on a hidden column to xFilter and records in idxNum
//! which were given; [`TableArgs`] then looks them up by parameter index.

use sqlite_loadable::api;
use sqlite_loadable::prelude::*;
use sqlite_loadable::table::{BestIndexError, ConstraintOperator, IndexInfo};

use super::call::Connection;
use crate::functions::{param_name, Cell, RowArgs, SqlArgs};
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

/// The arguments of one call, by parameter index, whatever subset was given; a parameter not
/// given reads as NULL.
pub struct TableArgs<'a> {
    pub mask: i32,
    pub values: &'a [*mut sqlite3_value],
    /// Parameter names in column order; `?` marks optional ones.
    pub params: &'static [&'static str],
    pub db: Connection,
}

impl TableArgs<'_> {
    fn value(&self, param: usize) -> Option<*mut sqlite3_value> {
        if param >= 31 || self.mask & (1 << param) == 0 {
            return None;
        }
        let position = (0..param).filter(|p| self.mask & (1 << p) != 0).count();
        self.values.get(position).copied()
    }
}

impl SqlArgs for TableArgs<'_> {
    fn len(&self) -> usize {
        self.params.len()
    }

    fn host_probe(&self) -> Option<Box<dyn Fn() -> bool + Sync + '_>> {
        Some(self.db.probe())
    }

    fn tail<'s>(&'s self, skip: usize, params: &'static [&'static str]) -> Box<dyn SqlArgs + 's> {
        let cells = (skip..self.params.len())
            .map(|i| match self.value(i) {
                None => Cell::Null,
                Some(v) => match api::value_type(&v) {
                    api::ValueType::Null => Cell::Null,
                    api::ValueType::Integer => Cell::Int(api::value_int64(&v)),
                    api::ValueType::Text => {
                        api::value_text(&v).map_or(Cell::NotUtf8, |t| Cell::Text(t.to_string()))
                    }
                    api::ValueType::Blob => Cell::NotUtf8,
                    api::ValueType::Float => Cell::Other("REAL"),
                },
            })
            .collect();
        Box::new(RowArgs { cells, params })
    }

    fn is_null(&self, i: usize) -> bool {
        self.value(i)
            .is_none_or(|v| api::value_type(&v) == api::ValueType::Null)
    }

    fn text(&self, i: usize, expected: &'static str) -> Result<&str> {
        let arg = param_name(self.params, i);
        match self.value(i) {
            Some(v) if api::value_type(&v) != api::ValueType::Null => {
                api::value_text(&v).map_err(|_| KvrecError::NotUtf8 { arg, expected })
            }
            _ => Err(KvrecError::NullArgument { arg, expected }),
        }
    }

    fn int(&self, i: usize, expected: &'static str) -> Result<i64> {
        let arg = param_name(self.params, i);
        match self.value(i) {
            Some(v) => match api::value_type(&v) {
                api::ValueType::Null => Err(KvrecError::NullArgument { arg, expected }),
                api::ValueType::Integer => Ok(api::value_int64(&v)),
                other => Err(KvrecError::WrongType {
                    arg,
                    expected,
                    got: super::call::sql_type_name(&other).into(),
                }),
            },
            None => Err(KvrecError::NullArgument { arg, expected }),
        }
    }
}
