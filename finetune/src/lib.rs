//! kvrec-finetune: trains kvrec models — from scratch (candle) or LoRA on a pre-trained GGUF —
//! to a GGUF that llama.cpp serves, and `fit`, from a recipe to a served model in one call. The
//! data and its evaluation are kvrec-evaluation's (re-exported here under the same names); the
//! prompt, answer and augmentation code is kvrec-core's, so training data and SQL serving
//! cannot drift apart.

pub use kvrec_evaluation::{
    baselines, bench, catalog_eval, cowatch, dataset, db, eval, interactions, io, item_features,
    metrics, movielens, paired, protocol, recipe, table, training_data,
};

pub mod fit;
pub mod train;
