//! `kvrec_models()`: the loaded models, one row each.

use std::mem;
use std::os::raw::c_int;

use kvrec_llm::{registry, ModelInfo};
use sqlite_loadable::api;
use sqlite_loadable::prelude::*;
use sqlite_loadable::table::{BestIndexError, IndexInfo, VTab, VTabArguments, VTabCursor};

const SCHEMA: &str = "CREATE TABLE x(name TEXT, path TEXT, architecture TEXT, size_bytes INTEGER, \
     n_params INTEGER, n_ctx INTEGER, n_ctx_train INTEGER, n_gpu_layers INTEGER, \
     template_version INTEGER, template_source TEXT)";

#[repr(C)]
pub struct ModelsTable {
    base: sqlite3_vtab,
}

impl<'vtab> VTab<'vtab> for ModelsTable {
    type Aux = ();
    type Cursor = ModelsCursor;

    fn connect(
        _: *mut sqlite3,
        _: Option<&()>,
        _: VTabArguments,
    ) -> sqlite_loadable::Result<(String, Self)> {
        let base: sqlite3_vtab = unsafe { mem::zeroed() };
        Ok((SCHEMA.to_owned(), ModelsTable { base }))
    }

    fn best_index(&self, mut info: IndexInfo) -> core::result::Result<(), BestIndexError> {
        info.set_estimated_rows(4);
        Ok(())
    }

    fn open(&mut self) -> sqlite_loadable::Result<ModelsCursor> {
        Ok(ModelsCursor {
            base: unsafe { mem::zeroed() },
            models: Vec::new(),
            index: 0,
        })
    }
}

#[repr(C)]
pub struct ModelsCursor {
    base: sqlite3_vtab_cursor,
    models: Vec<ModelInfo>,
    index: usize,
}

impl VTabCursor for ModelsCursor {
    fn filter(
        &mut self,
        _: c_int,
        _: Option<&str>,
        _: &[*mut sqlite3_value],
    ) -> sqlite_loadable::Result<()> {
        self.models = registry::list();
        self.index = 0;
        Ok(())
    }

    fn next(&mut self) -> sqlite_loadable::Result<()> {
        self.index += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.index >= self.models.len()
    }

    fn column(&self, ctx: *mut sqlite3_context, i: c_int) -> sqlite_loadable::Result<()> {
        let Some(m) = self.models.get(self.index) else {
            api::result_null(ctx);
            return Ok(());
        };
        match i {
            0 => api::result_text(ctx, &m.name)?,
            1 => api::result_text(ctx, &m.path)?,
            2 => api::result_text(ctx, &m.architecture)?,
            3 => api::result_int64(ctx, m.size_bytes as i64),
            4 => api::result_int64(ctx, m.n_params as i64),
            5 => api::result_int64(ctx, i64::from(m.n_ctx)),
            6 => api::result_int64(ctx, i64::from(m.n_ctx_train)),
            7 => api::result_int64(ctx, i64::from(m.n_gpu_layers)),
            8 => api::result_int64(ctx, i64::from(m.template_version)),
            9 => api::result_text(ctx, m.template_source)?,
            _ => api::result_null(ctx),
        }
        Ok(())
    }

    fn rowid(&self) -> sqlite_loadable::Result<i64> {
        Ok(self.index as i64)
    }
}
