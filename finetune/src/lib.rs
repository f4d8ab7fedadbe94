//! kvrec-finetune: MovieLens (or any key-value tables) → SQLite → InstructMK instruction data,
//! and the training and evaluation built on it. The prompt, answer and augmentation code is
//! the `kvrec` crate's, so training data and SQL serving cannot drift apart.

pub mod db;
pub mod movielens;
