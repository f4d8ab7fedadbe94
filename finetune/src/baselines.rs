//! The rankers a user would otherwise pick, scored on exactly the same requests as the models.

use std::collections::HashMap;

use kvrec_core::rng::Rng;
use kvrec_core::Request;

use crate::cowatch::{CoWatch, CoWatchParams};
use crate::protocol::{popularity, Instance, Sequence};

/// Anything that scores a request's candidates (higher = more likely next).
pub trait Scorer: Sync {
    fn name(&self) -> String;
    /// One score per candidate, in the request's order.
    fn scores(&self, instance: &Instance, request: &Request) -> Vec<f64>;
}

/// Uniformly random scores, seeded per user: the floor (HR@1 ≈ 0.1 with 10 candidates).
pub struct RandomScorer {
    pub seed: u64,
}

impl Scorer for RandomScorer {
    fn name(&self) -> String {
        "random".into()
    }

    fn scores(&self, instance: &Instance, request: &Request) -> Vec<f64> {
        let mut rng = Rng::fork(self.seed, instance.user_id as u64);
        request
            .candidates
            .iter()
            .map(|_| rng.next_u64() as f64)
            .collect()
    }
}

/// How often each item was watched in the training sequences.
pub struct PopularityScorer {
    counts: HashMap<i64, usize>,
}

impl PopularityScorer {
    pub fn new(sequences: &[Sequence]) -> Self {
        PopularityScorer {
            counts: popularity(sequences),
        }
    }
}

impl Scorer for PopularityScorer {
    fn name(&self) -> String {
        "popularity".into()
    }

    fn scores(&self, _: &Instance, request: &Request) -> Vec<f64> {
        request
            .candidates
            .iter()
            .map(|c| self.counts.get(&c.id).copied().unwrap_or(0) as f64)
            .collect()
    }
}

/// Item-to-item co-occurrence: how often a candidate was watched within `window` positions of
/// each history item in the training sequences, summed over the history; popularity breaks ties.
/// `CoWatchParams::default()` is the tuned ranker every model is compared with.
pub struct CoOccurrenceScorer {
    table: CoWatch,
    params: CoWatchParams,
}

impl CoOccurrenceScorer {
    pub fn new(sequences: &[Sequence], params: CoWatchParams) -> Self {
        CoOccurrenceScorer {
            table: CoWatch::new(sequences, params.window),
            params,
        }
    }
}

impl Scorer for CoOccurrenceScorer {
    fn name(&self) -> String {
        format!(
            "co-occurrence (window {}, decay {}, norm {})",
            self.params.window, self.params.decay, self.params.normalize
        )
    }

    fn scores(&self, _: &Instance, request: &Request) -> Vec<f64> {
        let history: Vec<i64> = request.history.iter().filter_map(|h| h.id).collect();
        request
            .candidates
            .iter()
            .map(|c| {
                self.table.score(&history, c.id, &self.params, None)
                    + f64::from(self.table.popularity(c.id)) * 1e-6
            })
            .collect()
    }
}
