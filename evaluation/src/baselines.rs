//! The rankers a user would otherwise pick, scored on exactly the same requests as the models.

use std::collections::HashMap;
use std::sync::Arc;

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
    table: Arc<CoWatch>,
    params: CoWatchParams,
}

impl CoOccurrenceScorer {
    pub fn new(sequences: &[Sequence], params: CoWatchParams) -> Self {
        CoOccurrenceScorer {
            table: Arc::new(CoWatch::new(sequences, params.window)),
            params,
        }
    }

    /// The pair counts it ranks by.
    pub fn table(&self) -> &CoWatch {
        &self.table
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
        let tie_break = |id: i64| f64::from(self.table.popularity(id)) * 1e-6;
        if request.candidates.len() > SPARSE_ABOVE {
            // A whole catalog: only the history's neighbours score above zero.
            let co = self.table.scores_with(&history, &self.params);
            return request
                .candidates
                .iter()
                .map(|c| co.get(&c.id).copied().unwrap_or(0.0) + tie_break(c.id))
                .collect();
        }
        request
            .candidates
            .iter()
            .map(|c| self.table.score(&history, c.id, &self.params, None) + tie_break(c.id))
            .collect()
    }
}

/// Candidates above this many are scored through the history's neighbours (see
/// [`CoWatch::scores_with`]) rather than pair by pair.
const SPARSE_ABOVE: usize = 64;

/// The co-occurrence settings tried by [`tuned_cooccurrence`]: windows, decays, normalisations.
pub const COOCCURRENCE_GRID: ([usize; 3], [f64; 3], [f64; 3]) =
    ([3, 10, 30], [0.5, 0.8, 1.0], [0.0, 0.5, 1.0]);

/// Validation requests [`tuned_cooccurrence`] scores each setting on, at most.
pub const TUNING_REQUESTS: usize = 2000;

/// Co-occurrence tuned on `valid` (requests whose positive is each user's last training item,
/// counted on `sequences` without it): the grid's settings with the best HR@1, the default's
/// on a tie. Every data set gets the baseline at its best, not at settings chosen on ML-1M.
pub fn tuned_cooccurrence(
    sequences: &[Sequence],
    valid: &[Instance],
) -> anyhow::Result<CoWatchParams> {
    use rayon::prelude::*;
    // An even spread of at most this many requests tells the settings apart well enough.
    let step = valid.len().div_ceil(TUNING_REQUESTS).max(1);
    let valid: Vec<Instance> = valid.iter().step_by(step).cloned().collect();
    let valid = &valid[..];
    let (windows, decays, normalizations) = COOCCURRENCE_GRID;
    let mut best = (f64::NEG_INFINITY, CoWatchParams::default());
    for window in windows {
        let table = Arc::new(CoWatch::new(sequences, window));
        let candidates: Vec<CoWatchParams> = decays
            .iter()
            .flat_map(|&decay| {
                normalizations.iter().map(move |&normalize| CoWatchParams {
                    window,
                    decay,
                    normalize,
                })
            })
            .collect();
        let scored = candidates
            .par_iter()
            .map(|&params| {
                let scorer = CoOccurrenceScorer {
                    table: Arc::clone(&table),
                    params,
                };
                Ok((hr1_of(&scorer, valid)?, params))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (hr1, params) in scored {
            let default_tie = hr1 == best.0 && params == CoWatchParams::default();
            if hr1 > best.0 || default_tie {
                best = (hr1, params);
            }
        }
    }
    Ok(best.1)
}

/// HR@1 of `scorer` on `instances` (ties count their share).
fn hr1_of(scorer: &dyn Scorer, instances: &[Instance]) -> anyhow::Result<f64> {
    let mut metrics = crate::metrics::Metrics::default();
    for instance in instances {
        let request = instance.request()?;
        let positive = request
            .candidates
            .iter()
            .position(|c| c.id == instance.positive)
            .ok_or_else(|| {
                anyhow::anyhow!("user {}: positive is not a candidate", instance.user_id)
            })?;
        metrics.add_scores(&scorer.scores(instance, &request), positive);
    }
    Ok(metrics.summary().hr1)
}
