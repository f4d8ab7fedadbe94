//! Item-to-item co-watch counts from training sequences: the co-occurrence baseline's table,
//! and the `co_watch` candidate key the models read.
//!
//! A key computed for a user's own training request must not count that user's sequence (it
//! holds the train target itself), so scores can subtract one sequence's contributions.

use std::collections::HashMap;

use crate::interactions::Sequence;

pub use kvrec_core::cowatch::CoWatchParams;
use kvrec_core::cowatch::{neighbour_scores, CoWatchPrior};

/// Symmetric pair counts and item counts.
#[derive(Debug, Default, Clone)]
pub struct CoWatch {
    pub window: usize,
    pairs: HashMap<(i64, i64), u32>,
    popularity: HashMap<i64, u32>,
    /// Each item's co-watched items with their counts, made on first use: scoring a whole
    /// catalog walks the history's neighbours instead of every (history, item) pair.
    neighbours: std::sync::OnceLock<HashMap<i64, Vec<(i64, u32)>>>,
}

impl CoWatch {
    pub fn new(sequences: &[Sequence], window: usize) -> Self {
        let mut table = CoWatch {
            window,
            ..CoWatch::default()
        };
        for s in sequences {
            table.add(&s.items);
        }
        table
    }

    fn add(&mut self, items: &[i64]) {
        for (i, &a) in items.iter().enumerate() {
            *self.popularity.entry(a).or_default() += 1;
            for &b in items.iter().skip(i + 1).take(self.window) {
                *self.pairs.entry((a, b)).or_default() += 1;
                *self.pairs.entry((b, a)).or_default() += 1;
            }
        }
    }

    pub fn pair(&self, a: i64, b: i64) -> u32 {
        self.pairs.get(&(a, b)).copied().unwrap_or(0)
    }

    pub fn popularity(&self, item: i64) -> u32 {
        self.popularity.get(&item).copied().unwrap_or(0)
    }

    fn neighbours(&self) -> &HashMap<i64, Vec<(i64, u32)>> {
        self.neighbours.get_or_init(|| {
            let mut neighbours: HashMap<i64, Vec<(i64, u32)>> = HashMap::new();
            for (&(a, b), &count) in &self.pairs {
                neighbours.entry(a).or_default().push((b, count));
            }
            neighbours
        })
    }

    /// [`Self::score`] (without `own`) of every item that co-occurs with `history`; every
    /// other item scores 0. The sums run in the same order as `score`'s, so they are equal.
    pub fn scores_with(&self, history: &[i64], params: &CoWatchParams) -> HashMap<i64, f64> {
        let neighbours = self.neighbours();
        neighbour_scores(
            history,
            params,
            |h| neighbours.get(&h).map_or(&[][..], Vec::as_slice),
            |item| self.popularity(item),
        )
    }

    /// The table as a model's prior at `weight`: each item's `keep` most co-watched items (the
    /// smaller id first on a tie), which is all that ranking by it ever reads in practice.
    pub fn prior(&self, params: CoWatchParams, weight: f64, keep: usize) -> CoWatchPrior {
        let neighbours = self
            .neighbours()
            .iter()
            .map(|(&item, list)| {
                let mut list = list.clone();
                list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                list.truncate(keep);
                (item, list)
            })
            .collect();
        CoWatchPrior::new(params, weight, neighbours, self.popularity.clone())
    }

    /// Recency-weighted co-watches of `candidate` with `history` (oldest first), divided by
    /// its popularity^normalize; `own` (a table of one sequence) is subtracted first.
    pub fn score(
        &self,
        history: &[i64],
        candidate: i64,
        params: &CoWatchParams,
        own: Option<&CoWatch>,
    ) -> f64 {
        let minus = |count: u32, own_count: u32| f64::from(count.saturating_sub(own_count));
        let co: f64 = history
            .iter()
            .rev()
            .enumerate()
            .map(|(age, &h)| {
                minus(
                    self.pair(h, candidate),
                    own.map_or(0, |o| o.pair(h, candidate)),
                ) * params.decay.powi(age as i32)
            })
            .sum();
        let popularity = minus(
            self.popularity(candidate),
            own.map_or(0, |o| o.popularity(candidate)),
        );
        co / (popularity + 1.0).powf(params.normalize)
    }

    /// The table of one sequence, to pass as `own`.
    pub fn of_sequence(items: &[i64], window: usize) -> CoWatch {
        let mut table = CoWatch {
            window,
            ..CoWatch::default()
        };
        table.add(items);
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(user_id: i64, items: &[i64]) -> Sequence {
        Sequence {
            user_id,
            items: items.to_vec(),
            times: Vec::new(),
        }
    }

    #[test]
    fn counts_pairs_within_the_window_both_ways() {
        let table = CoWatch::new(&[seq(1, &[1, 2, 3]), seq(2, &[3, 1])], 1);
        assert_eq!(table.pair(1, 2), 1);
        assert_eq!(table.pair(2, 1), 1);
        assert_eq!(table.pair(1, 3), 1, "only user 2 has them adjacent");
        assert_eq!(table.pair(2, 3), 1);
        assert_eq!(table.popularity(3), 2);
    }

    #[test]
    fn own_sequence_is_subtracted() {
        let sequences = [seq(1, &[1, 2, 3]), seq(2, &[1, 3])];
        let table = CoWatch::new(&sequences, 5);
        let raw = CoWatchParams {
            window: 5,
            decay: 1.0,
            normalize: 0.0,
        };
        assert_eq!(table.score(&[1], 3, &raw, None), 2.0);
        let own = CoWatch::of_sequence(&sequences[0].items, 5);
        assert_eq!(table.score(&[1], 3, &raw, Some(&own)), 1.0);
        assert_eq!(table.score(&[1], 2, &raw, Some(&own)), 0.0);
    }

    #[test]
    fn recent_history_weighs_more() {
        let table = CoWatch::new(&[seq(1, &[1, 9]), seq(2, &[2, 8])], 1);
        let params = CoWatchParams {
            window: 1,
            decay: 0.5,
            normalize: 0.0,
        };
        // History oldest first: 1 then 2; 2 is the most recent.
        assert_eq!(table.score(&[1, 2], 8, &params, None), 1.0);
        assert_eq!(table.score(&[1, 2], 9, &params, None), 0.5);
    }

    #[test]
    fn scores_through_neighbours_equal_pair_by_pair_scores() {
        let mut rng = kvrec_core::rng::Rng::new(9);
        let sequences: Vec<Sequence> = (0..40)
            .map(|u| {
                seq(
                    u,
                    &(0..12).map(|_| rng.below(30) as i64).collect::<Vec<_>>(),
                )
            })
            .collect();
        let table = CoWatch::new(&sequences, 3);
        let params = CoWatchParams {
            window: 3,
            decay: 0.7,
            normalize: 0.5,
        };
        let history = [4, 17, 4, 9, 28];
        let sparse = table.scores_with(&history, &params);
        for item in 0..32 {
            let dense = table.score(&history, item, &params, None);
            assert_eq!(
                sparse.get(&item).copied().unwrap_or(0.0),
                dense,
                "item {item}"
            );
        }
    }
}
