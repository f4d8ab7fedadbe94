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
