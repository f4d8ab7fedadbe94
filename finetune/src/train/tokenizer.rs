//! The tokenizers a run trains with: its own BPE (from scratch) or a base model's.

use std::path::Path;

use anyhow::{Context, Result};
use kvrec_core::Request;

use super::{bpe, Corpus, TrainConfig};

/// Text → token ids, as the model that will serve the result tokenizes.
pub trait TextTokenizer: Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// The start token prepended to every prompt, if the model uses one.
    fn bos(&self) -> Result<Option<u32>>;
    fn eos(&self) -> Result<u32>;
}

impl TextTokenizer for tokenizers::Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        bpe::encode(self, text)
    }
    fn bos(&self) -> Result<Option<u32>> {
        bpe::token_id(self, bpe::BOS).map(Some)
    }
    fn eos(&self) -> Result<u32> {
        bpe::token_id(self, bpe::EOS)
    }
}

impl TextTokenizer for kvrec_llm::Model {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenize(text, false)
            .iter()
            .map(|t| t.0 as u32)
            .collect())
    }
    fn bos(&self) -> Result<Option<u32>> {
        Ok(self.tokenize("", true).first().map(|t| t.0 as u32))
    }
    fn eos(&self) -> Result<u32> {
        Ok(self.llama().vocab().eos().0 as u32)
    }
}

/// A from-scratch run's BPE: trained on the first rows' rendered text, or the run's own.
pub fn scratch_tokenizer(
    config: &TrainConfig,
    corpus: Corpus,
    out: &Path,
    resumed: bool,
) -> Result<tokenizers::Tokenizer> {
    let path = out.join("tokenizer.json");
    if resumed {
        return bpe::load(&path);
    }
    if let Some(run) = &config.init_from {
        std::fs::copy(run.join("tokenizer.json"), &path)
            .with_context(|| format!("copying the tokenizer of {}", run.display()))?;
        return bpe::load(&path);
    }
    let texts: Vec<String> = match corpus {
        Corpus::Rows(rows) => rows
            .iter()
            .take(4000)
            .map(|row| -> Result<String> {
                let request = Request::from_object(&row.request)?;
                Ok(format!(
                    "{}{}",
                    config.template.render_prompt(&request),
                    config.template.render_answer(&row.target)
                ))
            })
            .collect::<Result<_>>()?,
        Corpus::Sequences { sequences, .. } => sequences
            .iter()
            .take(4000)
            .map(|s| config.template.render_sequence(&s.items))
            .collect(),
    };
    // The sequence layout reads each id after a space: " 531" must be one token there.
    let spaced = config.template.layout == kvrec_core::template::Layout::Sequence;
    bpe::train(
        &texts,
        config.vocab_size,
        config.number_tokens,
        spaced,
        &path,
    )
}
