//! The tokens of the short texts every call tokenizes again: each candidate's answer prefix
//! and, in the sequence layout, each history id (` 531`).
//!
//! llama.cpp's BPE tokenizer took about a third of a `recommend()` call of the default model
//! (profiled on ML-1M requests: ~260 µs of ~800 µs on the calling thread), spent on the same
//! few thousand ids over and over. A text always tokenizes to the same tokens, so the map is
//! exact; the prompt is built from pieces only where the model's tokenizer is checked to
//! split there ([`PieceTokens::start_if_split`]).

use std::collections::HashMap;
use std::sync::RwLock;

use llama_cpp_2::token::LlamaToken;

/// Texts remembered at most; past it the map starts over, so hostile requests with ever
/// new ids cost memory in proportion to this, not to their number.
pub const MAX_TEXTS: usize = 1 << 16;

#[derive(Default)]
pub struct PieceTokens {
    texts: RwLock<HashMap<String, Vec<LlamaToken>>>,
}

impl PieceTokens {
    /// The tokens of each of `texts`, in order: the remembered ones under one read lock, the
    /// others by `tokenize` and then remembered.
    pub fn get_all(
        &self,
        texts: &[String],
        tokenize: impl Fn(&str) -> Vec<LlamaToken>,
    ) -> Vec<Vec<LlamaToken>> {
        let mut out: Vec<Option<Vec<LlamaToken>>> = {
            let known = self.texts.read().unwrap_or_else(|p| p.into_inner());
            texts.iter().map(|t| known.get(t).cloned()).collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let made: Vec<(usize, Vec<LlamaToken>)> = missing
                .into_iter()
                .map(|i| (i, tokenize(&texts[i])))
                .collect();
            let mut known = self.texts.write().unwrap_or_else(|p| p.into_inner());
            if known.len() + made.len() > MAX_TEXTS {
                known.clear();
            }
            for (i, tokens) in made {
                known.insert(texts[i].clone(), tokens.clone());
                out[i] = Some(tokens);
            }
        }
        out.into_iter().map(|t| t.unwrap_or_default()).collect()
    }

    /// How many texts are remembered.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.texts.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The start tokens of a prompt made of `pieces` (` a`, ` b`, … as the template renders a
    /// sample of the ids requests carry), when tokenizing them as one prompt (`bos`) gives
    /// those and then each piece's own tokens; `None` when it does not. A GPT-2 style
    /// pre-tokenizer cuts before every space-led number, so kvrec's catalog models pass; a
    /// model whose tokenizer merges across the space keeps tokenizing whole prompts.
    pub fn start_if_split(
        pieces: &[String],
        tokenize: impl Fn(&str, bool) -> Vec<LlamaToken>,
    ) -> Option<Vec<LlamaToken>> {
        let start = tokenize("", true);
        let mut joined = start.clone();
        for piece in pieces {
            joined.extend(tokenize(piece, false));
        }
        (!pieces.is_empty() && tokenize(&pieces.concat(), true) == joined).then_some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fake(text: &str) -> Vec<LlamaToken> {
        text.bytes().map(|b| LlamaToken(i32::from(b))).collect()
    }

    #[test]
    fn each_text_is_tokenized_once_and_returned_in_order() {
        let cache = PieceTokens::default();
        let calls = AtomicUsize::new(0);
        let tokenize = |t: &str| {
            calls.fetch_add(1, Ordering::SeqCst);
            fake(t)
        };
        let texts: Vec<String> = [" 1", " 22", " 1"].map(String::from).to_vec();
        let first = cache.get_all(&texts, tokenize);
        assert_eq!(first, texts.iter().map(|t| fake(t)).collect::<Vec<_>>());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "misses of one call are all tokenized"
        );
        let again = cache.get_all(&texts, tokenize);
        assert_eq!(again, first);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "the second call tokenizes nothing"
        );
    }

    #[test]
    fn the_map_starts_over_past_its_cap() {
        let cache = PieceTokens::default();
        let texts: Vec<String> = (0..MAX_TEXTS).map(|i| format!(" {i}")).collect();
        cache.get_all(&texts, fake);
        cache.get_all(&[" new".to_string()], fake);
        assert_eq!(cache.texts.read().unwrap().len(), 1);
    }

    /// `fake` with a start token when `bos`.
    fn with_bos(text: &str, bos: bool) -> Vec<LlamaToken> {
        let start = bos.then_some(LlamaToken(1));
        start.into_iter().chain(fake(text)).collect()
    }

    #[test]
    fn splitting_is_checked_against_the_whole_text() {
        let pieces: Vec<String> = [" 5", " 61", " 700"].map(String::from).to_vec();
        assert_eq!(
            PieceTokens::start_if_split(&pieces, with_bos),
            Some(vec![LlamaToken(1)])
        );
        // A tokenizer that merges a space with what came before does not split at ids.
        let merging = |t: &str, bos: bool| with_bos(&t.replace("1 7", "#"), bos);
        assert!(PieceTokens::start_if_split(&pieces, merging).is_none());
        // Nor does one whose start token depends on the text.
        let odd_start = |t: &str, bos: bool| with_bos(t, bos && !t.is_empty());
        assert!(PieceTokens::start_if_split(&pieces, odd_start).is_none());
        assert!(PieceTokens::start_if_split(&[], with_bos).is_none());
    }
}
