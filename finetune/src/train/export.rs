//! A trained run → the GGUF llama.cpp serves: weights (F16 matrices or F32), the BPE
//! vocabulary and the template, all from the run's folder.

use std::path::Path;

use anyhow::{Context, Result};
use kvrec_llm::gguf::TensorType;
use kvrec_llm::llama_file::{LlamaFile, LlamaShape};

use super::checkpoint;
use super::model::{RMS_EPS, ROPE_THETA};

/// Writes `<run>`'s latest checkpoint to `gguf`.
pub fn export(run: &Path, gguf: &Path, matrix_type: TensorType, name: &str) -> Result<LlamaShape> {
    let (weights, saved) = checkpoint::latest(run)?
        .with_context(|| format!("{} holds no checkpoint; run `train` first", run.display()))?;
    let vocab = super::bpe::gguf_vocab(&run.join("tokenizer.json"))?;
    let shape = LlamaShape {
        n_vocab: vocab.tokens.len(),
        ..saved.config.shape()
    };
    let (model, _) = checkpoint::load_model(&weights, shape, saved.config.tied)?;
    LlamaFile {
        name,
        shape,
        vocab: &vocab,
        template: Some(&saved.config.template),
        weights: model.weights()?.into_iter().map(|(_, _, w)| w).collect(),
        matrix_type,
        rope_theta: ROPE_THETA,
        rms_eps: RMS_EPS,
    }
    .write(gguf)
    .with_context(|| format!("writing {}", gguf.display()))?;
    Ok(shape)
}
