//! Every catalog table function as an SQLite eponymous virtual table: the output columns, then
//! one hidden column per parameter, which SQLite fills from the call's arguments.

use std::mem;
use std::os::raw::c_int;

use sqlite_loadable::prelude::*;
use sqlite_loadable::table::{BestIndexError, IndexInfo, VTab, VTabArguments, VTabCursor};
use sqlite_loadable::{api, Error};

use super::call::{error_text, guarded, Connection};
use super::table_args::{plan, TableArgs};
use crate::functions::catalog::{Column, Table, Value};

#[repr(C)]
pub struct CatalogTable {
    base: sqlite3_vtab,
    table: &'static Table,
    db: Connection,
}

/// `CREATE TABLE x(<columns>, <parameters> HIDDEN)`.
fn schema(table: &Table) -> String {
    let columns = table.columns.iter().map(|(name, column)| {
        let ty = match column {
            Column::Int => "INTEGER",
            Column::Real => "REAL",
            Column::Text => "TEXT",
            // Integer or text, by the model's ids: no declared type.
            Column::Id => "ANY",
        };
        format!("{name} {ty}")
    });
    let hidden = table
        .params
        .iter()
        .map(|p| format!("{} HIDDEN", p.trim_end_matches('?')));
    format!(
        "CREATE TABLE x({})",
        columns.chain(hidden).collect::<Vec<_>>().join(", ")
    )
}

impl<'vtab> VTab<'vtab> for CatalogTable {
    type Aux = &'static Table;
    type Cursor = CatalogCursor;

    fn connect(
        db: *mut sqlite3,
        aux: Option<&&'static Table>,
        _: VTabArguments,
    ) -> sqlite_loadable::Result<(String, Self)> {
        let table =
            *aux.ok_or_else(|| Error::new_message("kvrec: table function without entry"))?;
        let base: sqlite3_vtab = unsafe { mem::zeroed() };
        Ok((
            schema(table),
            CatalogTable {
                base,
                table,
                db: Connection(db),
            },
        ))
    }

    fn best_index(&self, info: IndexInfo) -> core::result::Result<(), BestIndexError> {
        plan(info, self.table.columns.len())
    }

    fn open(&mut self) -> sqlite_loadable::Result<CatalogCursor> {
        Ok(CatalogCursor {
            base: unsafe { mem::zeroed() },
            table: self.table,
            db: self.db,
            rows: Vec::new(),
            index: 0,
        })
    }
}

#[repr(C)]
pub struct CatalogCursor {
    base: sqlite3_vtab_cursor,
    table: &'static Table,
    db: Connection,
    rows: Vec<Vec<Value>>,
    index: usize,
}

impl VTabCursor for CatalogCursor {
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
            params: self.table.params,
            db: self.db,
        };
        let rows = guarded(|| (self.table.rows)(&args))
            .map_err(|e| Error::new_message(error_text(self.table.name, &e)))?;
        self.rows = rows;
        Ok(())
    }

    fn next(&mut self) -> sqlite_loadable::Result<()> {
        self.index += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.index >= self.rows.len()
    }

    fn column(&self, ctx: *mut sqlite3_context, i: c_int) -> sqlite_loadable::Result<()> {
        match self
            .rows
            .get(self.index)
            .and_then(|row| row.get(usize::try_from(i).ok()?))
        {
            Some(Value::Int(v)) => api::result_int64(ctx, *v),
            Some(Value::Real(v)) => api::result_double(ctx, *v),
            Some(Value::Text(v)) => api::result_text(ctx, v)?,
            Some(Value::Null) | None => api::result_null(ctx),
        }
        Ok(())
    }

    fn rowid(&self) -> sqlite_loadable::Result<i64> {
        Ok(self.index as i64)
    }
}
