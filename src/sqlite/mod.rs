//! The SQLite loadable extension: entry point and the list of SQL functions.
//!
//! Load with `.load target/release/libkvrec` (sqlite3 CLI) or `load_extension(...)`; SQLite
//! derives the entry point `sqlite3_kvrec_init` from the file name.

pub mod call;
mod table;
mod table_args;

use sqlite_loadable::prelude::*;
use sqlite_loadable::{define_table_function, Error};

use crate::functions::catalog::{SCALARS, TABLES};
use call::{error_text, guarded, scalar};

/// Registers every function of the catalog on `db`.
fn register(db: *mut sqlite3) -> sqlite_loadable::Result<()> {
    let pure = FunctionFlags::UTF8 | FunctionFlags::DETERMINISTIC | FunctionFlags::INNOCUOUS;
    // Model functions read files and registry state: neither deterministic nor innocuous.
    let model = FunctionFlags::UTF8 | FunctionFlags::DIRECTONLY;
    for function in SCALARS {
        scalar(db, function, if function.model { model } else { pure })?;
    }
    for function in TABLES {
        define_table_function::<table::CatalogTable>(db, function.name, Some(function))?;
    }
    Ok(())
}

/// The extension's entry point. A failure or panic while registering is reported to the
/// host as an error, never unwound into it.
#[sqlite_entrypoint]
pub fn sqlite3_kvrec_init(db: *mut sqlite3) -> sqlite_loadable::Result<()> {
    guarded(|| {
        crate::pin::pin_library();
        register(db).map_err(|e| kvrec_core::error::KvrecError::Internal {
            detail: format!("registering functions failed: {}", e.result_error_message()),
        })
    })
    .map_err(|e| Error::new_message(error_text("kvrec", &e)))
}
