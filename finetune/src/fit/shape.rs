//! The shape of a data set, as far as choosing a training configuration goes: how many users
//! and items, how long the sequences are, how densely the items are used, whether times tie,
//! and which item features there are.

use std::collections::HashSet;

use serde::Serialize;

use crate::protocol::Sequence;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataShape {
    /// Users with a training sequence.
    pub users: usize,
    /// Distinct items in the training sequences.
    pub items: usize,
    /// The largest item id, of the sequences' and the featured items' (each id up to it is
    /// one token: item keys and vectors need their items' tokens).
    pub max_item_id: i64,
    /// Training interactions.
    pub events: usize,
    /// The 95th percentile of the sequence lengths.
    pub p95_length: usize,
    /// Share of consecutive interactions that share their time: the order within a tie is
    /// not the order of events (0 where the data has no times).
    pub tie_share: f64,
    /// Items with keys (genres, category, …) that `--item-keys` embeds.
    pub items_with_keys: usize,
    /// Items with a text vector (`--item-vectors`).
    pub items_with_vectors: usize,
}

impl DataShape {
    /// The shape of `sequences`, with the ids of the items that have keys and text vectors.
    pub fn of(sequences: &[Sequence], keyed: &[i64], with_vectors: &[i64]) -> Self {
        let mut lengths: Vec<usize> = sequences.iter().map(|s| s.items.len()).collect();
        lengths.sort_unstable();
        let p95_length = lengths
            .get((lengths.len() * 95 / 100).min(lengths.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0);
        let items: HashSet<i64> = sequences
            .iter()
            .flat_map(|s| s.items.iter().copied())
            .collect();
        let (mut pairs, mut ties) = (0usize, 0usize);
        for times in sequences.iter().map(|s| &s.times) {
            for pair in times.windows(2) {
                pairs += 1;
                ties += usize::from(pair[0] == pair[1]);
            }
        }
        DataShape {
            users: sequences.len(),
            items: items.len(),
            max_item_id: items
                .iter()
                .chain(keyed)
                .chain(with_vectors)
                .copied()
                .max()
                .unwrap_or(0),
            events: lengths.iter().sum(),
            p95_length,
            tie_share: if pairs == 0 {
                0.0
            } else {
                ties as f64 / pairs as f64
            },
            items_with_keys: keyed.len(),
            items_with_vectors: with_vectors.len(),
        }
    }

    /// Training interactions per item: how much each item embedding learns from.
    pub fn events_per_item(&self) -> f64 {
        self.events as f64 / self.items.max(1) as f64
    }
}
