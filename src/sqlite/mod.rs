//! The SQLite loadable extension: entry point and the list of SQL functions.
//!
//! Load with `.load target/release/libkvrec` (sqlite3 CLI) or `load_extension(...)`; SQLite
//! derives the entry point `sqlite3_kvrec_init` from the file name.

mod augmentations;
pub mod call;
mod models_table;
mod recommend_each;
mod table_args;

use sqlite_loadable::prelude::*;
use sqlite_loadable::{define_table_function, Error};

use crate::functions::{meta, model_fns, prompt_fns};
use call::{error_text, guarded, scalar};

/// Registers every kvrec function on `db`: one line per SQL function.
fn register(db: *mut sqlite3) -> sqlite_loadable::Result<()> {
    let pure = FunctionFlags::UTF8 | FunctionFlags::DETERMINISTIC | FunctionFlags::INNOCUOUS;
    scalar(db, "kvrec_version", &[], pure, meta::version)?;
    scalar(db, "kvrec_debug", &[], pure, meta::debug)?;
    scalar(db, "kvrec_template", &[], pure, meta::template)?;
    scalar(
        db,
        "kvrec_prompt",
        &["user", "history", "candidates", "options?"],
        pure,
        prompt_fns::prompt,
    )?;
    scalar(
        db,
        "kvrec_target",
        &["candidates", "positive_id", "options?"],
        pure,
        prompt_fns::target,
    )?;
    scalar(
        db,
        "kvrec_parse_answer",
        &["text", "candidates"],
        pure,
        prompt_fns::parse,
    )?;
    scalar(
        db,
        "kvrec_augment",
        &[
            "user",
            "history",
            "candidates",
            "strategy",
            "seed",
            "options?",
        ],
        pure,
        prompt_fns::augment,
    )?;
    define_table_function::<augmentations::AugmentationsTable>(db, "kvrec_augmentations", None)?;
    // Model functions read files and registry state: neither deterministic nor innocuous.
    let model = FunctionFlags::UTF8 | FunctionFlags::DIRECTONLY;
    scalar(
        db,
        "kvrec_load_model",
        &["name", "path", "options?"],
        model,
        model_fns::load,
    )?;
    scalar(
        db,
        "kvrec_unload_model",
        &["name"],
        model,
        model_fns::unload,
    )?;
    scalar(
        db,
        "recommend",
        &["model?", "user", "history", "candidates", "options?"],
        model,
        model_fns::recommend,
    )?;
    define_table_function::<models_table::ModelsTable>(db, "kvrec_models", None)?;
    define_table_function::<recommend_each::RecommendEachTable>(db, "recommend_each", None)?;
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
