//! kvrec-evaluation: the data path of kvrec, by the InstructMK protocol — MovieLens and
//! recipes over any tables into SQLite, the protocol's requests and training rows, item
//! features as files — and its evaluation: baselines, metrics, paired statistics, model
//! evaluation on the sampled candidates and the whole catalog, and the serving benchmark.
//! It trains nothing (kvrec-finetune does, on top of it) and links no candle.

pub mod baselines;
pub mod bench;
pub mod catalog_eval;
pub mod cowatch;
pub mod dataset;
pub mod db;
pub mod eval;
pub mod interactions;
pub mod io;
pub mod item_features;
pub mod metrics;
pub mod movielens;
pub mod paired;
pub mod protocol;
pub mod recipe;
pub mod table;
pub mod training_data;
