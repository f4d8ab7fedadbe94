//! kvrec-finetune: MovieLens (or any key-value tables) → SQLite → InstructMK instruction data,
//! training from scratch (candle) to a GGUF, and the evaluation built on it. The prompt, answer and
//! augmentation code is kvrec-core's, so training data and SQL serving cannot drift apart.

pub mod baselines;
pub mod bench;
pub mod catalog_eval;
pub mod cowatch;
pub mod dataset;
pub mod db;
pub mod eval;
pub mod fit;
pub mod interactions;
pub mod io;
pub mod metrics;
pub mod movielens;
pub mod paired;
pub mod protocol;
pub mod recipe;
pub mod table;
pub mod train;
pub mod training_data;
