//! Paired comparisons of two rankers on the same requests: the difference in HR@1 and NDCG@3
//! with a bootstrap 95 % interval over requests, wins and losses, and the histogram of the
//! positive's rank. Two methods scored on one set of candidate lists differ far less by
//! chance than two separate draws, so a small gap can be told from noise.

use kvrec_core::rng::Rng;
use serde::Serialize;

use crate::metrics::Outcome;

/// `a` against `b` over the same requests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Paired {
    pub n: usize,
    pub hr1_diff: f64,
    pub hr1_ci: (f64, f64),
    pub ndcg3_diff: f64,
    pub ndcg3_ci: (f64, f64),
    /// Requests where `a`'s expected HR@1 is above `b`'s, and below.
    pub wins: usize,
    pub losses: usize,
}

/// Bootstrap resamples behind each interval.
pub const RESAMPLES: usize = 2000;

/// Compares `a` and `b` (outcomes of the same requests in the same order).
pub fn compare(a: &[Outcome], b: &[Outcome], seed: u64) -> Paired {
    assert_eq!(
        a.len(),
        b.len(),
        "paired outcomes must cover the same requests"
    );
    let diffs = |f: fn(&Outcome) -> f64| -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| f(x) - f(y)).collect()
    };
    let hr1 = diffs(|o| o.hr(1));
    let ndcg3 = diffs(|o| o.ndcg(3));
    Paired {
        n: a.len(),
        hr1_diff: mean(&hr1),
        hr1_ci: bootstrap_interval(&hr1, seed),
        ndcg3_diff: mean(&ndcg3),
        ndcg3_ci: bootstrap_interval(&ndcg3, seed ^ 1),
        wins: hr1.iter().filter(|&&d| d > 0.0).count(),
        losses: hr1.iter().filter(|&&d| d < 0.0).count(),
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The 2.5th and 97.5th percentiles of the mean over [`RESAMPLES`] resamples with
/// replacement (seeded, so a report is reproducible).
pub fn bootstrap_interval(values: &[f64], seed: u64) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            (0..values.len())
                .map(|_| values[rng.below(values.len())])
                .sum::<f64>()
                / values.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (at(0.025), at(0.975))
}

/// Share of requests whose positive lands at each rank 1..=`ranks` (ties spread evenly).
pub fn rank_histogram(outcomes: &[Outcome], ranks: usize) -> Vec<f64> {
    let n = outcomes.len().max(1) as f64;
    (1..=ranks)
        .map(|r| outcomes.iter().map(|o| o.at_rank(r)).sum::<f64>() / n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rank: usize) -> Outcome {
        Outcome {
            better: rank - 1,
            tied: 1,
            valid: true,
        }
    }

    #[test]
    fn hand_computed_pairs() {
        // a: ranks 1, 1, 2, 3; b: ranks 2, 1, 1, 3.
        let a = [at(1), at(1), at(2), at(3)];
        let b = [at(2), at(1), at(1), at(3)];
        let p = compare(&a, &b, 7);
        assert_eq!((p.n, p.wins, p.losses), (4, 1, 1));
        assert!(p.hr1_diff.abs() < 1e-12);
        // NDCG@3: a = 1 + 1 + 1/log2(3) + 1/2, b = 1/log2(3) + 1 + 1 + 1/2: equal.
        assert!(p.ndcg3_diff.abs() < 1e-12);
        assert!(p.hr1_ci.0 < 0.0 && p.hr1_ci.1 > 0.0, "{p:?}");

        let better = [at(1), at(1), at(1), at(1)];
        let worse = [at(2), at(3), at(1), at(2)];
        let p = compare(&better, &worse, 7);
        assert_eq!((p.wins, p.losses), (3, 0));
        assert!((p.hr1_diff - 0.75).abs() < 1e-12);
        let ndcg = (3.0 - 2.0 / 3f64.log2() - 0.5) / 4.0;
        assert!((p.ndcg3_diff - ndcg).abs() < 1e-12);
        // Every resampled mean lies between the smallest and largest difference.
        assert!(p.hr1_ci.0 >= 0.0 && p.hr1_ci.1 <= 1.0 && p.hr1_ci.0 <= 0.75);
    }

    #[test]
    fn a_constant_difference_has_a_point_interval() {
        let ci = bootstrap_interval(&[0.25; 50], 3);
        assert_eq!(ci, (0.25, 0.25));
    }

    #[test]
    fn the_histogram_spreads_ties_and_sums_to_one() {
        let tied = Outcome {
            better: 1,
            tied: 2,
            valid: true,
        };
        let h = rank_histogram(&[at(1), tied], 4);
        assert_eq!(h, vec![0.5, 0.25, 0.25, 0.0]);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
