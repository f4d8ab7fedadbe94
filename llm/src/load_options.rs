//! What is fixed when a model is loaded: context size, batch, GPU layers, threads.

use kvrec_core::options::Options;
use serde::Serialize;

/// Sequences a context decodes at once: candidates scored in parallel per decode.
pub const MAX_SEQUENCES: u32 = 64;

/// Options fixed at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadOptions {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_gpu_layers: u32,
    pub n_threads: u32,
}

impl LoadOptions {
    pub fn from_options(options: &Options) -> LoadOptions {
        LoadOptions {
            n_ctx: options.n_ctx.unwrap_or(2048),
            n_batch: options.n_batch.unwrap_or(512),
            n_gpu_layers: options.n_gpu_layers.unwrap_or(0),
            n_threads: options
                .n_threads
                .unwrap_or_else(|| crate::limits::get().max_threads),
        }
    }

    /// Sequences per context: llama.cpp asserts unless n_seq_max <= n_batch.
    pub fn n_seq_max(&self) -> u32 {
        MAX_SEQUENCES.min(self.n_batch)
    }
}
