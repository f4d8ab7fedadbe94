//! `train`: a llama-architecture model trained from scratch on InstructMK rows (prompt →
//! ranked ids), with the loss on the answer tokens only, checkpoints that resume to the same
//! loss curve, a loss CSV and a run manifest; `export` writes the GGUF `recommend()` serves.
//!
//! Prompts and answers are rendered by kvrec-core with the template stored in the model, and
//! tokenized apart (BOS + prompt, then answer + EOS), as kvrec-llm does when it serves.

pub mod average;
pub mod base;
pub mod bpe;
pub mod checkpoint;
pub mod export;
pub mod item_features;
pub mod lora;
pub mod model;
pub mod optimizer;
pub mod plot;
pub mod sequence;
pub mod targets;
pub mod threads;

mod config;
mod examples;
mod schedule;
mod tokenizer;
mod trainer;

pub use config::{TargetOptions, TrainConfig};
pub use examples::{batch, examples, Batch, Example};
pub use schedule::{batch_indices, bucketed_batch_indices, learning_rate};
pub use tokenizer::TextTokenizer;
pub use trainer::{
    carry_item_ids, keep_freed_memory, run, run_corpus, run_within, Corpus, Limits, RunSummary,
    CATALOG_FILE,
};
