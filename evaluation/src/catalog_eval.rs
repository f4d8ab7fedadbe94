//! Whole-catalog evaluation (`eval --catalog`): each test user's next item ranked among every
//! item of the training catalog the user has not seen, as `recommend_topk` serves it, rather
//! than among 10 candidates. Every method reads the request's history (the protocol's last 20
//! items) and ranks the same eligible items: the catalog minus the user's training items.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context, Result};
use kvrec_core::options::Options;
use kvrec_core::request::Candidate;
use serde::Serialize;

use crate::baselines::Scorer;
use crate::eval::progress;
use crate::protocol::{Instance, Sequence};

/// The cut-offs reported: HR@1, HR@10, HR@50 and NDCG@10.
const CUTS: [usize; 3] = [1, 10, 50];

#[derive(Debug, Clone, Serialize)]
pub struct CatalogRow {
    pub method: String,
    pub requests: usize,
    /// Eligible items per request, on average.
    pub eligible: f64,
    pub hr_at_1: f64,
    pub hr_at_10: f64,
    pub hr_at_50: f64,
    pub ndcg_at_10: f64,
    pub requests_per_s: f64,
}

/// The items to rank for each instance: the catalog minus what the user trained on.
pub struct Eligible {
    catalog: Vec<i64>,
    seen: HashMap<i64, HashSet<i64>>,
}

impl Eligible {
    pub fn new(sequences: &[Sequence]) -> Eligible {
        let mut catalog: Vec<i64> = sequences
            .iter()
            .flat_map(|s| s.items.iter().copied())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        catalog.sort_unstable();
        let seen = sequences
            .iter()
            .map(|s| (s.user_id, s.items.iter().copied().collect()))
            .collect();
        Eligible { catalog, seen }
    }

    fn seen(&self, instance: &Instance) -> HashSet<i64> {
        let mut seen = self
            .seen
            .get(&instance.user_id)
            .cloned()
            .unwrap_or_default();
        if let Some(history) = instance.history.as_array() {
            seen.extend(history.iter().filter_map(|h| h["id"].as_i64()));
        }
        seen.remove(&instance.positive);
        seen
    }

    fn items(&self, instance: &Instance) -> Vec<i64> {
        let seen = self.seen(instance);
        self.catalog
            .iter()
            .copied()
            .filter(|id| !seen.contains(id))
            .collect()
    }
}

/// Accumulates the positive's 0-based rank per request (`None`: not in the catalog).
#[derive(Default)]
struct Ranks {
    ranks: Vec<Option<usize>>,
    eligible: usize,
}

impl Ranks {
    fn row(self, method: String, seconds: f64) -> CatalogRow {
        let n = self.ranks.len().max(1) as f64;
        let hr = |k: usize| {
            self.ranks
                .iter()
                .filter(|r| r.is_some_and(|r| r < k))
                .count() as f64
                / n
        };
        let ndcg = self
            .ranks
            .iter()
            .filter_map(|r| r.filter(|&r| r < 10))
            .map(|r| 1.0 / (r as f64 + 2.0).log2())
            .sum::<f64>()
            / n;
        CatalogRow {
            method,
            requests: self.ranks.len(),
            eligible: self.eligible as f64 / n,
            hr_at_1: hr(CUTS[0]),
            hr_at_10: hr(CUTS[1]),
            hr_at_50: hr(CUTS[2]),
            ndcg_at_10: ndcg,
            requests_per_s: self.ranks.len() as f64 / seconds.max(1e-9),
        }
    }
}

/// The positive's rank under `scores` (aligned with `items`); ties count against it.
fn rank_of(items: &[i64], scores: &[f64], positive: i64) -> Option<usize> {
    let at = items.iter().position(|&id| id == positive)?;
    Some(scores.iter().filter(|&&s| s >= scores[at]).count() - 1)
}

/// A baseline over each instance's eligible items.
pub fn evaluate(
    scorer: &dyn Scorer,
    instances: &[Instance],
    eligible: &Eligible,
) -> Result<CatalogRow> {
    let bar = progress(instances.len(), &format!("{} (catalog)", scorer.name()));
    let start = Instant::now();
    let mut ranks = Ranks::default();
    for instance in instances {
        let items = eligible.items(instance);
        let mut request = instance
            .request()
            .with_context(|| format!("request of user {}", instance.user_id))?;
        request.candidates = items
            .iter()
            .map(|&id| Candidate {
                id,
                fields: Vec::new(),
            })
            .collect();
        let scores = scorer.scores(instance, &request);
        ranks
            .ranks
            .push(rank_of(&items, &scores, instance.positive));
        ranks.eligible += items.len();
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(ranks.row(scorer.name(), start.elapsed().as_secs_f64()))
}

/// A model through `rank_catalog`, the code `recommend_topk()` runs, its ranking cut to the
/// same eligible items.
pub fn evaluate_model(
    model: &kvrec_llm::Model,
    instances: &[Instance],
    eligible: &Eligible,
) -> Result<CatalogRow> {
    let name = format!("{} (recommend_topk)", model.info.name);
    let bar = progress(instances.len(), &name);
    let start = Instant::now();
    let mut ranks = Ranks::default();
    let all = model.items.as_ref().map_or(0, Vec::len);
    for instance in instances {
        let items = eligible.items(instance);
        let keep: HashSet<i64> = items.iter().copied().collect();
        let mut request = instance.request()?;
        request.candidates.clear();
        let ranking = kvrec_llm::rank_catalog(
            model,
            &request,
            all.max(1),
            &Options::default(),
            &kvrec_llm::Cancel::none(),
        )?;
        let rank = ranking
            .ids
            .iter()
            .filter(|id| keep.contains(id))
            .position(|&id| id == instance.positive);
        ranks.ranks.push(rank);
        ranks.eligible += items.len();
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(ranks.row(name, start.elapsed().as_secs_f64()))
}

pub fn markdown(rows: &[CatalogRow]) -> String {
    crate::table::markdown(
        &[
            "method",
            "requests",
            "eligible items",
            "HR@1",
            "HR@10",
            "HR@50",
            "NDCG@10",
            "requests/s",
        ],
        rows.iter().map(|r| {
            vec![
                r.method.clone(),
                r.requests.to_string(),
                format!("{:.0}", r.eligible),
                format!("{:.4}", r.hr_at_1),
                format!("{:.4}", r.hr_at_10),
                format!("{:.4}", r.hr_at_50),
                format!("{:.4}", r.ndcg_at_10),
                format!("{:.1}", r.requests_per_s),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_ties_against_the_positive_and_misses_are_none() {
        assert_eq!(rank_of(&[1, 2, 3], &[0.5, 0.9, 0.1], 1), Some(1));
        assert_eq!(rank_of(&[1, 2, 3], &[0.9, 0.9, 0.1], 1), Some(1));
        assert_eq!(rank_of(&[1, 2, 3], &[0.5, 0.9, 0.1], 7), None);
        let ranks = Ranks {
            ranks: vec![Some(0), Some(9), Some(10), None],
            eligible: 40,
        };
        let row = ranks.row("m".into(), 1.0);
        assert_eq!((row.hr_at_1, row.hr_at_10, row.hr_at_50), (0.25, 0.5, 0.75));
        let ndcg = (1.0 + 1.0 / 11f64.log2()) / 4.0;
        assert!((row.ndcg_at_10 - ndcg).abs() < 1e-12);
        assert_eq!(row.eligible, 10.0);
    }

    #[test]
    fn eligible_items_leave_out_what_the_user_trained_on_but_not_the_positive() {
        let sequences = vec![
            Sequence {
                user_id: 1,
                items: vec![1, 2, 3],
                times: Vec::new(),
            },
            Sequence {
                user_id: 2,
                items: vec![3, 4, 5],
                times: Vec::new(),
            },
        ];
        let eligible = Eligible::new(&sequences);
        let instance = Instance {
            user_id: 1,
            split: crate::protocol::Split::Test,
            user: serde_json::json!({}),
            history: serde_json::json!([{"id": 4}]),
            candidates: serde_json::json!([]),
            positive: 2,
        };
        assert_eq!(eligible.items(&instance), vec![2, 5]);
    }
}
