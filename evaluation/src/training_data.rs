//! Augmented training rows: each train instance plus its copies under a strategy (1:N), made by
//! kvrec-core's `augment_dataset` — the code `kvrec_augmentations` runs in SQL.

use anyhow::{Context, Result};
use kvrec_core::augment::{augment_dataset, Strategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::Instance;

/// One line of `train-<variant>.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRow {
    pub user_id: i64,
    pub copy: usize,
    pub augmentation: String,
    pub request: Value,
    pub positive: i64,
    /// The answer to train on, positive first.
    pub target: Vec<i64>,
}

/// Rows for `variant` (`none` gives the originals only); `copies` enhanced copies each.
pub fn rows(
    train: &[Instance],
    variant: &str,
    copies: usize,
    seed: u64,
) -> Result<Vec<TrainingRow>> {
    let strategy = Strategy::parse(variant)?;
    let copies = if strategy.is_identity() { 0 } else { copies };
    let mut out = Vec::with_capacity(train.len() * (copies + 1));
    for instance in train {
        let request = instance
            .request()
            .with_context(|| format!("train request of user {}", instance.user_id))?;
        let seed = seed ^ (instance.user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for (copy, augmented) in
            augment_dataset(&request, Some(instance.positive), &strategy, seed, copies)?
                .into_iter()
                .enumerate()
        {
            out.push(TrainingRow {
                user_id: instance.user_id,
                copy,
                augmentation: if copy == 0 {
                    "none".into()
                } else {
                    strategy.name().into()
                },
                request: augmented.request.to_json(),
                positive: instance.positive,
                target: augmented.target.unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// The target with the items after the positive ordered by candidate key `key` (ascending;
/// `-key` for descending), ties kept in their order. The positive stays first: the paper's
/// target says nothing about the order of the negatives, so giving them an order the keys
/// decide turns nine arbitrary copies per answer into nine learnable choices.
pub fn order_rest_by(row: &TrainingRow, key: &str) -> Result<Vec<i64>> {
    let (name, descending) = match key.strip_prefix('-') {
        Some(name) => (name, true),
        None => (key, false),
    };
    let candidates = row
        .request
        .get("candidates")
        .and_then(Value::as_array)
        .with_context(|| format!("training row of user {} has no candidates", row.user_id))?;
    let value_of = |id: i64| -> Result<f64> {
        candidates
            .iter()
            .find(|c| c.get("id").and_then(Value::as_i64) == Some(id))
            .and_then(|c| c.get(name))
            .and_then(Value::as_f64)
            .with_context(|| {
                format!(
                    "candidate {id} of user {} has no numeric key '{name}'; build the data with --candidate-keys {name}",
                    row.user_id
                )
            })
    };
    let mut rest = row
        .target
        .iter()
        .skip(1)
        .map(|&id| Ok((value_of(id)?, id)))
        .collect::<Result<Vec<_>>>()?;
    rest.sort_by(|a, b| {
        let order = a.0.total_cmp(&b.0);
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    Ok(row
        .target
        .iter()
        .take(1)
        .copied()
        .chain(rest.into_iter().map(|(_, id)| id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rest_follows_the_key_and_the_positive_stays_first() {
        let row = TrainingRow {
            user_id: 1,
            copy: 0,
            augmentation: "none".into(),
            request: json!({"candidates": [
                {"id": 5, "rank": 3}, {"id": 6, "rank": 1}, {"id": 7, "rank": 2}, {"id": 8, "rank": 4}
            ]}),
            positive: 8,
            target: vec![8, 5, 6, 7],
        };
        assert_eq!(order_rest_by(&row, "rank").unwrap(), vec![8, 6, 7, 5]);
        assert_eq!(order_rest_by(&row, "-rank").unwrap(), vec![8, 5, 7, 6]);
        let err = order_rest_by(&row, "year").unwrap_err().to_string();
        assert!(err.contains("--candidate-keys year"), "{err}");
    }
}
