//! Item-to-item co-watch scores: the co-occurrence ranker's arithmetic, and the prior a fitted
//! model carries so that serving adds what counting knows to what the model learned.
//!
//! A sequence model squeezes "what follows item a" through a few dozen dimensions; when the
//! next item is mostly an arbitrary successor of the last one (product lines, series), the
//! co-watch table holds that map exactly. The prior adds `weight · ln(1 + co-watch score)` to
//! the model's log-probabilities, with the weight chosen on validation requests by `fit`
//! (0 where the model alone is best).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The GGUF metadata key holding a model's [`CoWatchPrior`] as JSON.
pub const COWATCH_METADATA_KEY: &str = "kvrec.cowatch";

/// How a co-watch score weighs history and popularity; the defaults are the tuned baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoWatchParams {
    /// Two items co-occur when they are at most `window` positions apart in a sequence.
    pub window: usize,
    /// Weight of the i-th most recent history item is `decay^i` (1.0: all equal).
    pub decay: f64,
    /// Divide by (candidate popularity + 1) to this power (0.0: raw counts).
    pub normalize: f64,
}

impl Default for CoWatchParams {
    fn default() -> Self {
        CoWatchParams {
            window: 10,
            decay: 0.8,
            normalize: 0.5,
        }
    }
}

/// The co-watch score of every item that co-occurs with `history` (oldest first): counts with
/// each history item weighted by recency, divided by (popularity + 1)^normalize. Items left out
/// score 0.
pub fn neighbour_scores<'a>(
    history: &[i64],
    params: &CoWatchParams,
    neighbours: impl Fn(i64) -> &'a [(i64, u32)],
    popularity: impl Fn(i64) -> u32,
) -> HashMap<i64, f64> {
    let mut co: HashMap<i64, f64> = HashMap::new();
    for (age, &h) in history.iter().rev().enumerate() {
        let weight = params.decay.powi(age as i32);
        for &(item, count) in neighbours(h) {
            *co.entry(item).or_insert(0.0) += f64::from(count) * weight;
        }
    }
    for (item, score) in co.iter_mut() {
        *score /= (f64::from(popularity(*item)) + 1.0).powf(params.normalize);
    }
    co
}

/// A co-watch table cut to each item's strongest neighbours, and the weight its scores get
/// beside a model's log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct CoWatchPrior {
    pub params: CoWatchParams,
    pub weight: f64,
    neighbours: HashMap<i64, Vec<(i64, u32)>>,
    popularity: HashMap<i64, u32>,
}

/// The JSON form: parallel arrays, so a catalog of 20k items stays a few megabytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    window: usize,
    decay: f64,
    normalize: f64,
    weight: f64,
    items: Vec<i64>,
    popularity: Vec<u32>,
    /// Per item: its neighbours and their counts, interleaved (`[id, count, id, count, …]`).
    neighbours: Vec<Vec<i64>>,
}

impl CoWatchPrior {
    /// The prior over `neighbours` (each item's co-watched items with their counts) and the
    /// items' `popularity`.
    pub fn new(
        params: CoWatchParams,
        weight: f64,
        neighbours: HashMap<i64, Vec<(i64, u32)>>,
        popularity: HashMap<i64, u32>,
    ) -> Self {
        CoWatchPrior {
            params,
            weight,
            neighbours,
            popularity,
        }
    }

    pub fn with_weight(self, weight: f64) -> Self {
        CoWatchPrior { weight, ..self }
    }

    /// What the prior adds to the log-probability of each item co-watched with `history`
    /// (oldest first); every other item gets 0.
    pub fn terms(&self, history: &[i64]) -> HashMap<i64, f64> {
        let mut scores = neighbour_scores(
            history,
            &self.params,
            |h| self.neighbours.get(&h).map_or(&[][..], Vec::as_slice),
            |item| self.popularity.get(&item).copied().unwrap_or(0),
        );
        for score in scores.values_mut() {
            *score = self.weight * score.ln_1p();
        }
        scores
    }

    /// `log_probs` of `ids` (a distribution over them) with the prior's terms added, made a
    /// distribution again.
    pub fn apply(&self, history: &[i64], ids: &[i64], log_probs: &mut [f64]) {
        let terms = self.terms(history);
        for (l, id) in log_probs.iter_mut().zip(ids) {
            *l += terms.get(id).copied().unwrap_or(0.0);
        }
        let max = log_probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max.is_finite() {
            let log_sum = max + log_probs.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            log_probs.iter_mut().for_each(|l| *l -= log_sum);
        }
    }

    pub fn to_json(&self) -> String {
        let mut items: Vec<i64> = self
            .popularity
            .keys()
            .chain(self.neighbours.keys())
            .copied()
            .collect();
        items.sort_unstable();
        items.dedup();
        let stored = Stored {
            window: self.params.window,
            decay: self.params.decay,
            normalize: self.params.normalize,
            weight: self.weight,
            popularity: items
                .iter()
                .map(|i| self.popularity.get(i).copied().unwrap_or(0))
                .collect(),
            neighbours: items
                .iter()
                .map(|i| {
                    self.neighbours.get(i).map_or_else(Vec::new, |n| {
                        n.iter()
                            .flat_map(|&(id, count)| [id, i64::from(count)])
                            .collect()
                    })
                })
                .collect(),
            items,
        };
        serde_json::to_string(&stored).expect("a prior is plain numbers")
    }

    /// The prior `to_json` wrote; the error says what is wrong with it.
    pub fn from_json(json: &str) -> std::result::Result<Self, String> {
        let stored: Stored = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let n = stored.items.len();
        if stored.popularity.len() != n || stored.neighbours.len() != n {
            return Err(format!(
                "{n} items but {} popularities and {} neighbour lists",
                stored.popularity.len(),
                stored.neighbours.len()
            ));
        }
        if !stored.weight.is_finite() || !stored.decay.is_finite() || !stored.normalize.is_finite()
        {
            return Err("its weight, decay and normalize must be finite numbers".into());
        }
        let mut neighbours = HashMap::with_capacity(n);
        for (&item, flat) in stored.items.iter().zip(&stored.neighbours) {
            if flat.len() % 2 != 0 {
                return Err(format!(
                    "item {item}'s neighbours are not (id, count) pairs"
                ));
            }
            let pairs = flat
                .chunks_exact(2)
                .map(|p| {
                    u32::try_from(p[1])
                        .map(|count| (p[0], count))
                        .map_err(|_| format!("item {item}: count {} is out of range", p[1]))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            if !pairs.is_empty() {
                neighbours.insert(item, pairs);
            }
        }
        Ok(CoWatchPrior {
            params: CoWatchParams {
                window: stored.window,
                decay: stored.decay,
                normalize: stored.normalize,
            },
            weight: stored.weight,
            popularity: stored
                .items
                .into_iter()
                .zip(stored.popularity)
                .filter(|&(_, count)| count > 0)
                .collect(),
            neighbours,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior(weight: f64) -> CoWatchPrior {
        let neighbours = HashMap::from([(1, vec![(2, 3), (3, 1)]), (2, vec![(1, 3)])]);
        let popularity = HashMap::from([(1, 4), (2, 3), (3, 1)]);
        let params = CoWatchParams {
            window: 2,
            decay: 0.5,
            normalize: 0.0,
        };
        CoWatchPrior::new(params, weight, neighbours, popularity)
    }

    #[test]
    fn terms_are_the_weighted_log_of_one_plus_the_co_watch_score() {
        let terms = prior(2.0).terms(&[2, 1]);
        // Item 1 is the most recent: its neighbours count fully, item 2's by half.
        assert_eq!(terms[&2], 2.0 * 4f64.ln());
        assert_eq!(terms[&3], 2.0 * 2f64.ln());
        assert_eq!(terms[&1], 2.0 * 2.5f64.ln());
        assert!(!terms.contains_key(&4));
    }

    #[test]
    fn applying_keeps_a_distribution_and_moves_co_watched_items_up() {
        let mut log_probs = vec![0.6f64.ln(), 0.4f64.ln()];
        prior(1.0).apply(&[1], &[4, 2], &mut log_probs);
        assert!(log_probs[1] > log_probs[0], "{log_probs:?}");
        let total: f64 = log_probs.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let mut unchanged = vec![0.6f64.ln(), 0.4f64.ln()];
        prior(0.0).apply(&[1], &[4, 2], &mut unchanged);
        assert!((unchanged[0] - 0.6f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn json_round_trips_and_bad_json_says_why() {
        let p = prior(1.5);
        assert_eq!(CoWatchPrior::from_json(&p.to_json()).unwrap(), p);
        let odd = r#"{"window":1,"decay":1,"normalize":0,"weight":1,"items":[1],"popularity":[1],"neighbours":[[2]]}"#;
        assert!(CoWatchPrior::from_json(odd)
            .unwrap_err()
            .contains("not (id, count) pairs"));
        let short = r#"{"window":1,"decay":1,"normalize":0,"weight":1,"items":[1,2],"popularity":[1],"neighbours":[[],[]]}"#;
        assert!(CoWatchPrior::from_json(short)
            .unwrap_err()
            .contains("2 items but 1 popularities"));
    }
}
