//! Ranking candidates with a model.
//!
//! Scoring (the default) evaluates the prompt once and reads how likely the answer is to start
//! with each candidate's `<id>,`, with the model's choice restricted to the candidates (see
//! [`crate::trie`]): only the tokens where candidate ids part ways are decoded, as extra
//! sequences in the prompt's last batch, so a request is one decode call when they fit. The
//! result is always a permutation of the candidates. Generation decodes greedily and parses the
//! text, as the paper does.
//!
//! Answers are tokenized apart from the prompt, in training and serving alike.

mod batch;
mod generate;
mod prompt;
mod score;

use kvrec_core::answer::ParsedAnswer;
use kvrec_core::options::{Mode, Options};
use kvrec_core::{Request, Result};
use serde::Serialize;

use crate::cancel::Cancel;
use crate::model::Model;

pub use batch::rank_batch;
pub use prompt::prompt_pass;
pub(crate) use prompt::{decode_prompt, fit_prompt};

/// A ranking and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    /// Candidate ids, best first.
    pub ids: Vec<i64>,
    /// Log-probability of each ranked id being the answer's first item when the model may
    /// only answer with a candidate (scoring, with the model's co-watch prior added when it
    /// carries one; their exponentials sum to 1), or the negated
    /// rank (generation), aligned with `ids`.
    pub scores: Vec<f64>,
    /// History items left out, oldest first, so the prompt fits the context.
    pub dropped_history: usize,
    pub prompt_tokens: usize,
    /// Generation only: the raw text and what the parser made of it.
    pub generated: Option<String>,
    pub parsed: Option<ParsedAnswer>,
}

impl Ranking {
    /// Each of `request`'s candidates' scores, in the request's order (−∞ for one the ranking
    /// left out).
    pub fn by_candidate(&self, request: &Request) -> Vec<f64> {
        request
            .candidates
            .iter()
            .map(|c| {
                self.ids
                    .iter()
                    .position(|&id| id == c.id)
                    .map_or(f64::NEG_INFINITY, |i| self.scores[i])
            })
            .collect()
    }
}

/// Ranks the request's candidates with `model`, in the mode the options ask for.
pub fn rank(
    model: &Model,
    request: &Request,
    options: &Options,
    cancel: &Cancel,
) -> Result<Ranking> {
    let spec = options.spec_over(&model.template);
    let ranking = match options.mode.unwrap_or_default() {
        Mode::Score => score::score(model, request, &spec, options, cancel)?,
        Mode::Generate => generate::generate(model, request, &spec, options, cancel)?,
    };
    Ok(keep_best(ranking, options))
}

/// The ranking cut to the `k` best when the options ask for it.
fn keep_best(mut ranking: Ranking, options: &Options) -> Ranking {
    if let Some(k) = options.k {
        ranking.ids.truncate(k);
        ranking.scores.truncate(k);
    }
    ranking
}

/// Candidates sorted by score, best first.
fn finish(request: &Request, scores: Vec<f64>, dropped: usize, n_prompt: usize) -> Ranking {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable: equal scores keep the input order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Ranking {
        ids: order.iter().map(|&i| request.candidates[i].id).collect(),
        scores: order.iter().map(|&i| scores[i]).collect(),
        dropped_history: dropped,
        prompt_tokens: n_prompt,
        generated: None,
        parsed: None,
    }
}
