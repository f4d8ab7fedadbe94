//! The shape of a data set, as far as choosing a training configuration goes: how many users
//! and items, how long the sequences are, how densely the items are used, whether times tie,
//! and which item features there are.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::protocol::Sequence;

/// A tie-order agreement at or above this says the source lists tied events in the order
/// they happened. An arbitrary order reads 0.50 over the thousands of informative pairs of a
/// data set with many ties (ML-100K, the generated `taste` shape), ML-1M's file 0.35 (its
/// tied ratings run against the order seen untied), and the generated `sparse` shape,
/// written as events happened with a quarter of its steps following an item series, 0.76.
pub const ORDERED_TIES: f64 = 0.6;

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
    /// Whether the source's order within a tie is the order of events: of the tied
    /// consecutive pairs whose two items also follow each other untied elsewhere, the share
    /// listed in the direction seen untied more often. Near 0.5 the order within a tie is
    /// arbitrary (ML-100K 0.50); a log written as events happened reads well above it (the
    /// generated `sparse` shape 0.76). 0.5 where nothing is tied.
    pub tie_order_agreement: f64,
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
        let tie_order_agreement = tie_order_agreement(sequences);
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
            tie_order_agreement,
            items_with_keys: keyed.len(),
            items_with_vectors: with_vectors.len(),
        }
    }

    /// Whether the order within ties carries the order of events (see the field).
    pub fn ties_keep_order(&self) -> bool {
        self.tie_order_agreement >= ORDERED_TIES
    }

    /// Training interactions per item: how much each item embedding learns from.
    pub fn events_per_item(&self) -> f64 {
        self.events as f64 / self.items.max(1) as f64
    }
}

/// See [`DataShape::tie_order_agreement`].
fn tie_order_agreement(sequences: &[Sequence]) -> f64 {
    let consecutive = || {
        sequences.iter().flat_map(|s| {
            s.items
                .windows(2)
                .zip(s.times.windows(2))
                .map(|(items, times)| ((items[0], items[1]), times[0] == times[1]))
        })
    };
    let mut untied: HashMap<(i64, i64), u32> = HashMap::new();
    for (pair, _) in consecutive().filter(|(_, tied)| !tied) {
        *untied.entry(pair).or_default() += 1;
    }
    let (mut agree, mut informative) = (0usize, 0usize);
    for ((a, b), _) in consecutive().filter(|(_, tied)| *tied) {
        let forward = untied.get(&(a, b)).copied().unwrap_or(0);
        let backward = untied.get(&(b, a)).copied().unwrap_or(0);
        if forward != backward {
            informative += 1;
            agree += usize::from(forward > backward);
        }
    }
    if informative == 0 {
        0.5
    } else {
        agree as f64 / informative as f64
    }
}
