//! The tokenizers a run trains with: its own BPE (from scratch) or a base model's.

use anyhow::Result;

use super::bpe;

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
