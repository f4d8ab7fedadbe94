//! The paper's metrics (§4.2): HR@1/3/5, NDCG@3/5 with one relevant item, and Error Rate.
//!
//! Score-based rankers may tie; a tie is scored as the expectation over a uniformly random
//! order of the tied items, so a constant scorer earns exactly the random baseline.

use serde::Serialize;

/// Every evaluated request's outcome; the averages and the paired comparisons
/// ([`crate::paired`]) are computed from these.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub outcomes: Vec<Outcome>,
}

/// One request: the positive's rank is uniform over `better + 1 ..= better + tied` (a
/// positive a generated answer leaves out is ranked past every cut-off).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    pub better: usize,
    pub tied: usize,
    pub valid: bool,
}

/// Rank of a positive a generated answer does not name.
const MISSING: usize = usize::MAX / 4;

impl Outcome {
    fn ranks(&self) -> std::ops::RangeInclusive<usize> {
        (self.better + 1)..=(self.better + self.tied)
    }

    /// Expected HR@k over the tied order.
    pub fn hr(&self, k: usize) -> f64 {
        self.ranks().filter(|&r| r <= k).count() as f64 / self.tied as f64
    }

    /// Expected NDCG@k over the tied order.
    pub fn ndcg(&self, k: usize) -> f64 {
        self.ranks().map(|r| gain(r, k)).sum::<f64>() / self.tied as f64
    }

    /// Probability that the positive sits at `rank` (1-based).
    pub fn at_rank(&self, rank: usize) -> f64 {
        if self.ranks().contains(&rank) {
            1.0 / self.tied as f64
        } else {
            0.0
        }
    }

    /// The expected rank (the middle of the tied run); a missing positive has none.
    pub fn expected_rank(&self) -> Option<f64> {
        (self.better < MISSING).then(|| self.better as f64 + (self.tied as f64 + 1.0) / 2.0)
    }
}

/// The averages, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub hr1: f64,
    pub hr3: f64,
    pub hr5: f64,
    pub ndcg3: f64,
    pub ndcg5: f64,
    pub error_rate: f64,
}

fn gain(rank: usize, k: usize) -> f64 {
    if rank <= k {
        1.0 / ((rank + 1) as f64).log2()
    } else {
        0.0
    }
}

impl Metrics {
    /// Adds a request ranked by `scores` (one per candidate, higher is better); the positive
    /// is candidate `positive`. NaN scores rank last.
    pub fn add_scores(&mut self, scores: &[f64], positive: usize) -> Outcome {
        let clean = |s: f64| if s.is_nan() { f64::NEG_INFINITY } else { s };
        let p = clean(scores[positive]);
        let outcome = Outcome {
            better: scores.iter().filter(|&&s| clean(s) > p).count(),
            tied: scores.iter().filter(|&&s| clean(s) == p).count(),
            valid: true,
        };
        self.outcomes.push(outcome);
        outcome
    }

    /// Adds a generated ranking: `ids` as parsed, `valid` as the parser judged it. A positive
    /// the answer does not name is a miss; an invalid answer counts toward Error Rate.
    pub fn add_generated(&mut self, ids: &[i64], positive: i64, valid: bool) -> Outcome {
        let outcome = Outcome {
            better: ids.iter().position(|&id| id == positive).unwrap_or(MISSING),
            tied: 1,
            valid,
        };
        self.outcomes.push(outcome);
        outcome
    }

    pub fn summary(&self) -> Summary {
        let n = self.outcomes.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Outcome) -> f64| self.outcomes.iter().map(f).sum::<f64>() / n;
        Summary {
            n: self.outcomes.len(),
            hr1: mean(&|o| o.hr(1)),
            hr3: mean(&|o| o.hr(3)),
            hr5: mean(&|o| o.hr(5)),
            ndcg3: mean(&|o| o.ndcg(3)),
            ndcg5: mean(&|o| o.ndcg(5)),
            error_rate: mean(&|o| f64::from(u8::from(!o.valid))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed_ranks() {
        let mut m = Metrics::default();
        m.add_scores(&[0.1, 0.9, 0.5], 1); // rank 1
        m.add_scores(&[0.1, 0.9, 0.5, 0.7], 2); // rank 3
        let s = m.summary();
        assert!(close(s.hr1, 0.5) && close(s.hr3, 1.0) && close(s.hr5, 1.0));
        assert!(close(s.ndcg3, (1.0 + 0.5) / 2.0), "{s:?}");
        assert_eq!(s.error_rate, 0.0);
    }

    #[test]
    fn ties_score_as_the_expected_random_order() {
        let mut m = Metrics::default();
        m.add_scores(&[1.0; 10], 4);
        let s = m.summary();
        assert!(close(s.hr1, 0.1) && close(s.hr3, 0.3) && close(s.hr5, 0.5));
        // The random-guess NDCG values quoted in paper-protocol.md §4.
        assert!(
            (s.ndcg3 - 0.2131).abs() < 1e-4 && (s.ndcg5 - 0.2949).abs() < 1e-4,
            "{s:?}"
        );
        let mut one_tie = Metrics::default();
        one_tie.add_scores(&[2.0, 1.0, 1.0, 0.0], 2); // rank 2 or 3
        let t = one_tie.summary();
        assert!(close(t.hr1, 0.0) && close(t.hr3, 1.0));
        assert!(close(t.ndcg3, (1.0 / 3f64.log2() + 0.5) / 2.0));
    }

    #[test]
    fn generated_answers_and_errors() {
        let mut m = Metrics::default();
        m.add_generated(&[5, 7, 9], 7, true); // rank 2
        m.add_generated(&[5, 9], 7, false); // missing positive, invalid
        m.add_generated(&[7], 7, false); // rank 1 but invalid (e.g. a hallucinated id)
        let s = m.summary();
        assert!(close(s.hr1, 1.0 / 3.0) && close(s.hr3, 2.0 / 3.0));
        assert!(close(s.ndcg3, (1.0 / 3f64.log2() + 1.0) / 3.0));
        assert!(close(s.error_rate, 2.0 / 3.0));
        assert_eq!(s.n, 3);
    }

    #[test]
    fn nan_ranks_last() {
        let mut m = Metrics::default();
        m.add_scores(&[f64::NAN, 0.0], 1);
        assert!(close(m.summary().hr1, 1.0));
    }
}
