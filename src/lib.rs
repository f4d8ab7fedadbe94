//! kvrec: LLM-based recommendation inside the databases people already use.
//!
//! This crate is the loadable extension (entry point `sqlite3_kvrec_init`); the logic it
//! exposes lives in [`kvrec_core`], which the `finetune` crate shares. It builds as a cdylib
//! only: sqlite-loadable compiles its own SQLite amalgamation, which must never be linked into
//! a program that carries another SQLite.

pub use kvrec_core::*;

mod duckdb;
mod functions;
mod pin;
mod sqlite;
