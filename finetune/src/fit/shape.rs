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
    /// Share of consecutive interactions that share their time (0 where the data has no
    /// times).
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
        let ties = Ties::of(sequences);
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
            tie_share: ties.share(),
            tie_order_agreement: ties.order_agreement(),
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

/// The consecutive pairs of the sequences: how many, the untied ones counted by direction,
/// and the tied ones as listed.
struct Ties {
    pairs: usize,
    untied: HashMap<(i64, i64), u32>,
    tied: Vec<(i64, i64)>,
}

impl Ties {
    fn of(sequences: &[Sequence]) -> Self {
        let mut ties = Ties {
            pairs: 0,
            untied: HashMap::new(),
            tied: Vec::new(),
        };
        for s in sequences {
            for (items, times) in s.items.windows(2).zip(s.times.windows(2)) {
                ties.pairs += 1;
                let pair = (items[0], items[1]);
                if times[0] == times[1] {
                    ties.tied.push(pair);
                } else {
                    *ties.untied.entry(pair).or_default() += 1;
                }
            }
        }
        ties
    }

    fn share(&self) -> f64 {
        if self.pairs == 0 {
            0.0
        } else {
            self.tied.len() as f64 / self.pairs as f64
        }
    }

    /// See [`DataShape::tie_order_agreement`].
    fn order_agreement(&self) -> f64 {
        let seen = |pair| self.untied.get(&pair).copied().unwrap_or(0);
        let (mut agree, mut informative) = (0usize, 0usize);
        for &(a, b) in &self.tied {
            let (forward, backward) = (seen((a, b)), seen((b, a)));
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
}
