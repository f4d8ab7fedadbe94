//! What each position of a sequence window is trained toward. By default that is its next item
//! alone, over every item (SASRec's cross-entropy). Two options change the distribution the
//! softmax is pulled toward, never the prompt or the exported model:
//!
//! - `--mask-seen` leaves out of each position's softmax the items its user rated before the
//!   target. A request's candidates are items the user never rated, so telling a seen item
//!   from an unseen one is nothing scoring asks of the model, and otherwise a large share of
//!   the gradient goes to pushing seen (often popular) items down.
//! - `--future-items K` spreads the target over the next K items, the j-th after the next
//!   weighted `decay^j`. Half of ML-1M's consecutive ratings share their second, and the order
//!   within a second is not the order they were watched: the items of the next few positions
//!   are about equally likely to be "next", and a one-hot target over one of them is noise.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::examples::Example;

/// A window's place in its user's whole sequence: `ids[offset + k]` of the example is item
/// `items[start + k]`.
#[derive(Debug, Clone)]
pub struct SequenceSpan {
    pub items: Arc<[i64]>,
    pub start: usize,
    pub offset: usize,
}

/// The run's choice of targets (part of its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetOptions {
    /// Leave each target's earlier items out of its softmax.
    #[serde(default)]
    pub mask_seen: bool,
    /// Spread the target over this many items from the next on (0 and 1: the next only).
    #[serde(default)]
    pub future_items: usize,
    /// Weight of the j-th item after the next, relative to the next: `decay^j`.
    #[serde(default = "half")]
    pub future_decay: f64,
}

fn half() -> f64 {
    0.5
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            mask_seen: false,
            future_items: 0,
            future_decay: half(),
        }
    }
}

impl TargetOptions {
    pub fn check(&self) -> Result<()> {
        if self.future_items > 1 && !(self.future_decay > 0.0 && self.future_decay <= 1.0) {
            bail!(
                "--future-decay {} is not a weight: give one in (0, 1], e.g. 0.5",
                self.future_decay
            );
        }
        Ok(())
    }

    /// Whether a run trains toward anything but its next item.
    pub fn any(&self) -> bool {
        self.mask_seen || self.future_items > 1
    }
}

/// A batch's targets: position `r` of the loss rows is pulled toward class `c` with weight
/// `w` for every `(r·classes + c, w)` in `picks`/`weights` (each row's weights sum to one);
/// `mask` (rows × classes) is added to the logits first.
pub struct Goal {
    pub picks: Tensor,
    pub weights: Tensor,
    pub mask: Option<Tensor>,
    pub rows: usize,
}

impl Goal {
    /// Mean cross-entropy of `logits` (rows × classes) toward the goal's distributions.
    pub fn loss(&self, logits: &Tensor) -> candle_core::Result<Tensor> {
        let logits = match &self.mask {
            Some(mask) => (logits + mask)?,
            None => logits.clone(),
        };
        let log_probs = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
        let picked = log_probs.flatten_all()?.index_select(&self.picks, 0)?;
        (picked * &self.weights)?.sum_all()?.neg()? / self.rows as f64
    }
}

/// The logit that leaves a class out of a softmax. Finite, so that a weight of zero times
/// its log-probability stays zero.
const LEFT_OUT: f32 = -1e9;

/// The goal of a batch of sequence `examples` whose loss rows carry `targets` (the class of
/// each row's next item, in the order [`super::batch`] lists rows) over `classes` items.
pub fn goal(
    examples: &[&Example],
    targets: &[u32],
    classes: usize,
    options: &TargetOptions,
) -> Result<Goal> {
    let rows = targets.len();
    let mut picks = Vec::with_capacity(rows);
    let mut weights = Vec::with_capacity(rows);
    let mut mask = options.mask_seen.then(|| vec![0f32; rows * classes]);
    let mut row = 0;
    for example in examples {
        for &position in &example.prompt_targets {
            let next = *targets.get(row).ok_or_else(|| {
                anyhow::anyhow!("the batch lists fewer targets than its examples")
            })?;
            let base = row * classes;
            match (&example.span, options.any()) {
                (Some(span), true) => {
                    let at = span.start + position - span.offset;
                    let class = |item: i64| -> Result<usize> {
                        usize::try_from(item)
                            .ok()
                            .filter(|&c| c < classes)
                            .ok_or_else(|| anyhow::anyhow!("item {item} has no class"))
                    };
                    if class(span.items[at])? != next as usize {
                        bail!("a window's target is not the item its sequence has there");
                    }
                    let ahead = options.future_items.max(1).min(span.items.len() - at);
                    let decay = options.future_decay;
                    let total: f64 = (0..ahead).map(|j| decay.powi(j as i32)).sum();
                    let first = picks.len();
                    for (j, &item) in span.items[at..at + ahead].iter().enumerate() {
                        picks.push((base + class(item)?) as u32);
                        weights.push((decay.powi(j as i32) / total) as f32);
                    }
                    if let Some(mask) = mask.as_mut() {
                        for &seen in &span.items[..at] {
                            let at_class = base + class(seen)?;
                            // An item seen before and a target again (a repeat) stays in.
                            if !picks[first..].contains(&(at_class as u32)) {
                                mask[at_class] = LEFT_OUT;
                            }
                        }
                    }
                }
                _ => {
                    picks.push((base + next as usize) as u32);
                    weights.push(1.0);
                }
            }
            row += 1;
        }
    }
    if row != rows {
        bail!("the batch lists {rows} targets for {row} positions of its examples");
    }
    let device = Device::Cpu;
    Ok(Goal {
        picks: Tensor::new(picks.as_slice(), &device)?,
        weights: Tensor::new(weights.as_slice(), &device)?,
        mask: mask
            .map(|m| Tensor::from_vec(m, (rows, classes), &device))
            .transpose()?,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window over items 5 6 7 8 9 of the sequence 3 4 5 6 7 8 9, `[BOS]` first: targets at
    /// ids 2..=4 (items 6, 7, 8), item 9 beyond the window's targets.
    fn window() -> Example {
        Example {
            ids: vec![100, 105, 106, 107, 108, 109],
            answer_start: 6,
            loss_end: 6,
            prompt_targets: vec![2, 3, 4],
            span: Some(SequenceSpan {
                items: Arc::from(vec![3, 4, 5, 6, 7, 8, 9]),
                start: 2,
                offset: 1,
            }),
        }
    }

    fn rows_of(goal: &Goal, classes: usize) -> Vec<Vec<(usize, f32)>> {
        let picks: Vec<u32> = goal.picks.to_vec1().unwrap();
        let weights: Vec<f32> = goal.weights.to_vec1().unwrap();
        let mut rows = vec![Vec::new(); goal.rows];
        for (p, w) in picks.iter().zip(weights) {
            rows[*p as usize / classes].push((*p as usize % classes, w));
        }
        rows
    }

    #[test]
    fn the_next_item_alone_by_default() {
        let example = window();
        let goal = goal(&[&example], &[6, 7, 8], 12, &TargetOptions::default()).unwrap();
        assert_eq!(
            rows_of(&goal, 12),
            [vec![(6, 1.0)], vec![(7, 1.0)], vec![(8, 1.0)]]
        );
        assert!(goal.mask.is_none());
    }

    #[test]
    fn future_items_share_the_target_by_decay_up_to_the_sequence_end() {
        let example = window();
        let options = TargetOptions {
            future_items: 3,
            future_decay: 0.5,
            ..Default::default()
        };
        let goal = goal(&[&example], &[6, 7, 8], 12, &options).unwrap();
        let rows = rows_of(&goal, 12);
        let close = |got: &[(usize, f32)], want: &[(usize, f32)]| {
            got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() < 1e-6)
        };
        // Weights 1, ½, ¼ normalised; the last target has only item 9 after it.
        assert!(close(&rows[0], &[(6, 4. / 7.), (7, 2. / 7.), (8, 1. / 7.)]));
        assert!(close(&rows[1], &[(7, 4. / 7.), (8, 2. / 7.), (9, 1. / 7.)]));
        assert!(close(&rows[2], &[(8, 2. / 3.), (9, 1. / 3.)]), "{rows:?}");
        assert!(goal.mask.is_none());
    }

    #[test]
    fn the_mask_leaves_out_every_earlier_item_even_before_the_window() {
        let example = window();
        let options = TargetOptions {
            mask_seen: true,
            ..Default::default()
        };
        let goal = goal(&[&example], &[6, 7, 8], 12, &options).unwrap();
        let mask: Vec<Vec<f32>> = goal.mask.unwrap().to_vec2().unwrap();
        let left_out =
            |row: &[f32]| -> Vec<usize> { (0..12).filter(|&c| row[c] == LEFT_OUT).collect() };
        // Items 3 and 4 precede the window; they are seen all the same.
        assert_eq!(left_out(&mask[0]), [3, 4, 5]);
        assert_eq!(left_out(&mask[1]), [3, 4, 5, 6]);
        assert_eq!(left_out(&mask[2]), [3, 4, 5, 6, 7]);
        assert!(mask.iter().flatten().all(|&v| v == 0.0 || v == LEFT_OUT));
    }

    #[test]
    fn the_loss_is_cross_entropy_toward_the_goal() {
        let example = window();
        let logits = Tensor::new(
            &[
                [
                    0.5f32, -1.0, 2.0, 0.1, 0.3, 1.5, 0.2, -0.4, 0.9, 1.1, 0.0, -2.0,
                ],
                [
                    1.0, 0.0, -0.5, 2.5, 0.7, 0.2, -1.2, 0.4, 0.6, -0.3, 1.8, 0.1,
                ],
                [
                    -0.2, 0.8, 0.3, 0.0, 1.4, -0.6, 0.5, 2.2, -1.0, 0.9, 0.4, 0.3,
                ],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let targets = [6u32, 7, 8];
        let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap();
        let plain = goal(&[&example], &targets, 12, &TargetOptions::default()).unwrap();
        let expected =
            candle_nn::loss::cross_entropy(&logits, &Tensor::new(&targets, &Device::Cpu).unwrap())
                .unwrap();
        assert!((scalar(plain.loss(&logits).unwrap()) - scalar(expected)).abs() < 1e-6);

        // By hand: row r's softmax over the classes its mask leaves in, toward its weights.
        let options = TargetOptions {
            mask_seen: true,
            future_items: 2,
            future_decay: 0.5,
        };
        let spread = goal(&[&example], &targets, 12, &options).unwrap();
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        let wanted = [
            [(6, 2. / 3.), (7, 1. / 3.)],
            [(7, 2. / 3.), (8, 1. / 3.)],
            [(8, 2. / 3.), (9, 1. / 3.)],
        ];
        let mut by_hand = 0.0;
        for (r, row) in rows.iter().enumerate() {
            let seen = 3..6 + r;
            let norm: f64 = (0..12)
                .filter(|c| !seen.contains(c))
                .map(|c| f64::from(row[c]).exp())
                .sum();
            for (c, w) in wanted[r] {
                by_hand -= w * (f64::from(row[c]) - norm.ln());
            }
        }
        by_hand /= 3.0;
        let ours = f64::from(scalar(spread.loss(&logits).unwrap()));
        assert!((ours - by_hand).abs() < 1e-5, "{ours} vs {by_hand}");
    }

    #[test]
    fn a_target_that_disagrees_with_its_sequence_is_refused() {
        let example = window();
        let options = TargetOptions {
            mask_seen: true,
            ..Default::default()
        };
        let error = goal(&[&example], &[6, 9, 8], 12, &options).err().unwrap();
        assert!(error.to_string().contains("not the item"), "{error}");
        let error = goal(&[&example], &[6, 7], 12, &options).err().unwrap();
        assert!(error.to_string().contains("fewer targets"), "{error}");
    }
}
