//! What a served model computes, from the training forward: continuation log-probabilities and
//! constrained candidate scores, so tests compare them with llama.cpp's.

use candle_core::{Device, Result, Tensor, D};

use super::Transformer;

impl Transformer {
    /// Log-probability of `ids[from..]` given `ids[..from]`: what llama.cpp's scoring computes
    /// for a candidate's answer prefix, so the two can be compared.
    pub fn continuation_logprob(&self, ids: &[u32], from: usize) -> Result<f64> {
        if from == 0 || from >= ids.len() {
            candle_core::bail!("continuation must start inside the sequence");
        }
        let device = Device::Cpu;
        let input = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let rows: Vec<u32> = (from as u32 - 1..ids.len() as u32 - 1).collect();
        let logits = self.logits_at(
            &self.hidden(&input)?,
            &Tensor::new(rows.as_slice(), &device)?,
        )?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        Ok(log_probs
            .iter()
            .zip(&ids[from..])
            .map(|(row, &token)| f64::from(row[token as usize]))
            .sum())
    }

    /// Each candidate's score as kvrec-llm's constrained scoring computes it (log-probability
    /// renormalised over the candidates where their answer prefixes part ways), from this
    /// forward: what llama.cpp's `rank()` of an exported model must reproduce.
    pub fn candidate_scores(&self, prompt: &[u32], prefixes: &[Vec<u32>]) -> Result<Vec<f64>> {
        let as_i32: Vec<Vec<i32>> = prefixes
            .iter()
            .map(|p| p.iter().map(|&t| t as i32).collect())
            .collect();
        let trie = kvrec_llm::trie::CandidateTrie::new(&as_i32);
        let mut failed = None;
        let scores = trie.scores(|at, token| {
            let mut ids = prompt.to_vec();
            if let Some(node) = at {
                ids.extend(
                    trie.lineage(node)
                        .iter()
                        .map(|&n| trie.nodes[n].token as u32),
                );
            }
            let from = ids.len();
            ids.push(token as u32);
            self.continuation_logprob(&ids, from).unwrap_or_else(|e| {
                failed = Some(e);
                f64::NAN
            })
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(scores),
        }
    }
}
