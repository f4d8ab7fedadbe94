//! The rows a table function has yet to write, handed out a DuckDB chunk at a time, in order.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Rows per output chunk (DuckDB's standard vector size).
const CHUNK: usize = 2048;

pub struct Pending<T>(Mutex<VecDeque<T>>);

impl<T> Pending<T> {
    pub fn new(rows: Vec<T>) -> Pending<T> {
        Pending(Mutex::new(rows.into()))
    }

    /// The next rows to write, at most a chunk; empty when the scan is done.
    pub fn next_chunk(&self) -> Vec<T> {
        let mut rows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = rows.len().min(CHUNK);
        rows.drain(..n).collect()
    }
}
