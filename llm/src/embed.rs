//! Text embeddings from a GGUF language model: llama.cpp's mean of the last hidden state over
//! a text's tokens. `data --item-text-model` turns each item's title and genres into a vector
//! with it, so the sequence model learns from what a title says as well as from who rated it.

use std::num::NonZeroU32;
use std::path::Path;

use kvrec_core::{KvrecError, Result};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

use crate::model::{check_file, detail};
use crate::{backend, logs};

/// Texts decoded together: one sequence each, in one batch of at most [`BATCH_TOKENS`].
const SEQUENCES: u32 = 32;
/// Tokens a text keeps (titles and genre lists are far shorter).
pub const MAX_TOKENS: usize = 64;
const BATCH_TOKENS: u32 = SEQUENCES * MAX_TOKENS as u32;

/// Each of `texts` as the mean of `path`'s last hidden state over its tokens (BOS included,
/// at most [`MAX_TOKENS`]), run on `threads` CPU threads.
pub fn embed_texts(path: &Path, texts: &[String], threads: u32) -> Result<Vec<Vec<f32>>> {
    check_file(path)?;
    let shown = path.display().to_string();
    let backend = backend()?;
    let mark = logs::mark();
    let model =
        LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| {
            KvrecError::ModelLoad {
                path: shown.clone(),
                detail: detail(&e.to_string(), mark),
            }
        })?;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(BATCH_TOKENS))
        .with_n_batch(BATCH_TOKENS)
        .with_n_ubatch(BATCH_TOKENS)
        .with_n_seq_max(SEQUENCES)
        // One KV cache for all sequences keeps the batch in one piece: split per sequence,
        // llama.cpp would pool a longer text over its tail only.
        .with_kv_unified(true)
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let backend_error = |what: &str, e: &dyn std::fmt::Display, mark| KvrecError::Backend {
        detail: format!("{what} with {shown}: {}", detail(&e.to_string(), mark)),
    };
    let mark = logs::mark();
    let mut context = model
        .new_context(backend, params)
        .map_err(|e| backend_error("creating an embedding context", &e, mark))?;
    let mut out = Vec::with_capacity(texts.len());
    let mut batch = LlamaBatch::new(BATCH_TOKENS as usize, SEQUENCES as i32);
    for chunk in texts.chunks(SEQUENCES as usize) {
        batch.clear();
        for (seq, text) in chunk.iter().enumerate() {
            let mut tokens = model.vocab().tokenize(text.as_bytes(), true, false);
            tokens.truncate(MAX_TOKENS);
            for (pos, token) in tokens.into_iter().enumerate() {
                batch
                    .add(token, pos as i32, &[seq as i32], true)
                    .map_err(|e| backend_error("batching an item's text", &e, mark))?;
            }
        }
        let mark = logs::mark();
        context.clear_kv_cache();
        context
            .decode(&mut batch)
            .map_err(|e| backend_error("embedding item texts", &e, mark))?;
        for seq in 0..chunk.len() {
            let vector = context
                .embeddings_seq_ith(seq as i32)
                .map_err(|e| backend_error("reading an embedding", &e, mark))?;
            out.push(vector.to_vec());
        }
    }
    Ok(out)
}
