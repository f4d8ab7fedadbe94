//! What each position of a sequence window is trained toward. By default that is its next item
//! alone, over every item (SASRec's cross-entropy). Two options change the distribution the
//! softmax is pulled toward, never the prompt or the exported model:
//!
//! - `--mask-seen` leaves out of each position's softmax the items its user rated before the
//!   target. A request's candidates are items the user never rated, so telling a seen item
//!   from an unseen one is nothing scoring asks of the model, and otherwise a large share of
//!   the gradient goes to pushing seen (often popular) items down.
//! - `--mask-later` also leaves out the items its user rates after the target (beyond the
//!   spread targets). A request's negatives are items its user never rated; in training, the
//!   items a user goes on to rate are the ones the model should rank high for that user, and
//!   a softmax that pushes them down at every earlier position teaches the opposite.
//! - `--future-items K` spreads the target over the next K items, the j-th after the next
//!   weighted `decay^j`. Half of ML-1M's consecutive ratings share their second, and the order
//!   within a second is not the order they were watched: the items of the next few positions
//!   are about equally likely to be "next", and a one-hot target over one of them is noise.
//! - `--sampled-negatives N` adds a second cross-entropy per position, over its next item and
//!   N items drawn uniformly from the catalog items its user never rated: the very choice a
//!   request poses (the protocol's 9 uniform negatives). The full softmax spends its gradient
//!   on the few items that compete hardest with the target; a request's negatives are mostly
//!   ordinary items, and this term trains the ranking against those.
//! - `--output-sample K` runs each step's softmax over the items its rows are pulled toward
//!   and K drawn uniformly from the catalog, corrected for the draw (sampled softmax): the
//!   output layer of a 20k-item catalog then costs a tenth as much.

use std::collections::HashSet;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

use kvrec_core::rng::Rng;

use super::config::TargetOptions;
use super::examples::{Example, SequenceSpan};
use crate::protocol::draw_unrated;

/// A batch's targets: position `r` of the loss rows is pulled toward class `c` with weight
/// `w` for every `(r·classes + c, w)` in `picks`/`weights` (each row's weights sum to one);
/// the logits of `left_out` (flat `r·classes + c`) are left out of their row's softmax, and
/// `bias` (one per class) is added to every row's logits (see [`Goal::mask`]).
/// `sampled`, when set, holds each row's next item and then its drawn negatives, as indices
/// into the flattened logits (rows × (1 + negatives)), and the weight of that term.
pub struct Goal {
    pub picks: Tensor,
    pub weights: Tensor,
    /// Kept sparse: a dense rows × classes mask of a 20k-item catalog is tens of MB a step,
    /// and a sampled output layer needs only its columns.
    pub left_out: Vec<u32>,
    pub classes: usize,
    pub bias: Option<Vec<f32>>,
    pub sampled: Option<(Tensor, f64)>,
    pub rows: usize,
}

impl Goal {
    /// What is added to the logits (rows × classes) before the softmax: [`LEFT_OUT`] where a
    /// class is left out of a row, plus the bias; `None` when nothing is.
    pub fn mask(&self) -> candle_core::Result<Option<Tensor>> {
        if self.left_out.is_empty() && self.bias.is_none() {
            return Ok(None);
        }
        let mut mask = match &self.bias {
            Some(bias) => bias.repeat(self.rows),
            None => vec![0f32; self.rows * self.classes],
        };
        for &at in &self.left_out {
            mask[at as usize] = LEFT_OUT;
        }
        Tensor::from_vec(mask, (self.rows, self.classes), &Device::Cpu).map(Some)
    }

    /// Mean cross-entropy of `logits` (rows × classes) toward the goal's distributions.
    pub fn loss(&self, logits: &Tensor) -> candle_core::Result<Tensor> {
        let masked = match self.mask()? {
            Some(mask) => (logits + mask)?,
            None => logits.clone(),
        };
        let log_probs = candle_nn::ops::log_softmax(&masked, candle_core::D::Minus1)?;
        let picked = log_probs.flatten_all()?.index_select(&self.picks, 0)?;
        let full = ((picked * &self.weights)?.sum_all()?.neg()? / self.rows as f64)?;
        let Some((choices, weight)) = &self.sampled else {
            return Ok(full);
        };
        let choices = logits
            .flatten_all()?
            .index_select(choices, 0)?
            .reshape((self.rows, ()))?;
        let log_probs = candle_nn::ops::log_softmax(&choices, candle_core::D::Minus1)?;
        let next = log_probs.narrow(1, 0, 1)?.sum_all()?.neg()? / self.rows as f64;
        full + (next? * *weight)?
    }
}

impl Goal {
    /// The goal over a sample of the classes (`train --output-sample`): every class some row is
    /// pulled toward, and `k` drawn uniformly from `catalog`; the softmax runs over those
    /// columns alone, so a step costs `rows × (targets + k)` instead of `rows × classes`.
    /// Each drawn column's logit is raised by `ln(catalog / k)`, the inverse of its chance to
    /// be drawn (sampled softmax's correction), so the sample estimates the full softmax.
    /// Returns the narrowed goal and the classes of its columns, ascending.
    pub fn over_sample(
        &self,
        catalog: &[u32],
        k: usize,
        rng: &mut Rng,
    ) -> Result<(Goal, Vec<u32>)> {
        let classes = self.classes;
        if self.sampled.is_some() {
            bail!("--output-sample and --sampled-negatives do not go together; pick one");
        }
        let picks: Vec<u32> = self.picks.to_vec1()?;
        let targets: HashSet<u32> = picks.iter().map(|&p| p % classes as u32).collect();
        let mut columns: Vec<u32> = targets.iter().copied().collect();
        // k distinct non-target catalog items: a partial shuffle of what is left.
        let mut rest: Vec<u32> = catalog
            .iter()
            .copied()
            .filter(|c| !targets.contains(c))
            .collect();
        let k = k.min(rest.len());
        for i in 0..k {
            let j = i + rng.below(rest.len() - i);
            rest.swap(i, j);
        }
        columns.extend(&rest[..k]);
        columns.sort_unstable();
        columns.dedup();
        let position: std::collections::HashMap<u32, u32> = columns
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        let narrowed: Vec<u32> = picks
            .iter()
            .map(|&p| p / classes as u32 * columns.len() as u32 + position[&(p % classes as u32)])
            .collect();
        let boost = (rest.len() as f64 / k.max(1) as f64).ln().max(0.0) as f32;
        let bias: Vec<f32> = columns
            .iter()
            .map(|c| if targets.contains(c) { 0.0 } else { boost })
            .collect();
        let width = columns.len();
        let left_out: Vec<u32> = self
            .left_out
            .iter()
            .filter_map(|&at| {
                let (row, class) = (at as usize / classes, at % classes as u32);
                let column = *position.get(&class)? as usize;
                Some((row * width + column) as u32)
            })
            .collect();
        Ok((
            Goal {
                picks: Tensor::new(narrowed.as_slice(), &Device::Cpu)?,
                weights: self.weights.clone(),
                left_out,
                classes: width,
                bias: Some(bias),
                sampled: None,
                rows: self.rows,
            },
            columns,
        ))
    }
}

/// The logit that leaves a class out of a softmax. Finite, so that a weight of zero times
/// its log-probability stays zero.
const LEFT_OUT: f32 = -1e9;

/// Where `--sampled-negatives` draws from: the catalog's classes (every item of the training
/// sequences, as the protocol's negatives are drawn from every item rated) and the stream.
pub struct NegativeDraw<'a> {
    pub catalog: &'a [u32],
    pub rng: Rng,
}

/// The goal of a batch of sequence `examples` whose loss rows carry `targets` (the class of
/// each row's next item, in the order [`super::batch`] lists rows) over `classes` items.
/// `draw` is needed with `--sampled-negatives` only.
pub fn goal(
    examples: &[&Example],
    targets: &[u32],
    classes: usize,
    options: &TargetOptions,
    mut draw: Option<NegativeDraw>,
) -> Result<Goal> {
    let rows = targets.len();
    let negatives = options.sampled_negatives;
    let mut gathered = Gathered::with_capacity(rows);
    let mut row = 0;
    for example in examples {
        let rated = rated_for_negatives(example, draw.as_ref(), negatives)?;
        for &position in &example.prompt_targets {
            let next = *targets.get(row).ok_or_else(|| {
                anyhow::anyhow!("the batch lists fewer targets than its examples")
            })?;
            let base = row * classes;
            match (&example.span, options.any()) {
                (Some(span), true) => {
                    let at = span.start + position - span.offset;
                    let here = RowAt {
                        span,
                        at,
                        base,
                        next,
                    };
                    gathered.spread(&here, classes, options, rated.as_ref(), draw.as_mut())?;
                }
                _ => {
                    gathered.picks.push((base + next as usize) as u32);
                    gathered.weights.push(1.0);
                }
            }
            row += 1;
        }
    }
    if row != rows {
        bail!("the batch lists {rows} targets for {row} positions of its examples");
    }
    if gathered.choices.len() != rows * (1 + negatives) && negatives > 0 {
        bail!("--sampled-negatives needs sequence windows (train_sequences.jsonl)");
    }
    let device = Device::Cpu;
    Ok(Goal {
        picks: Tensor::new(gathered.picks.as_slice(), &device)?,
        weights: Tensor::new(gathered.weights.as_slice(), &device)?,
        left_out: gathered.left_out,
        classes,
        bias: None,
        sampled: (negatives > 0)
            .then(|| {
                Tensor::new(gathered.choices.as_slice(), &device)
                    .map(|t| (t, options.sampled_weight))
            })
            .transpose()?,
        rows,
    })
}

/// The items a row's negatives may not be — all its user rated, as in the protocol — when
/// `--sampled-negatives` draws them; refused when too few unrated items are left.
fn rated_for_negatives(
    example: &Example,
    draw: Option<&NegativeDraw>,
    negatives: usize,
) -> Result<Option<HashSet<u32>>> {
    match (&example.span, draw) {
        (Some(span), Some(draw)) if negatives > 0 => {
            let rated: HashSet<u32> = span
                .items
                .iter()
                .filter_map(|&item| u32::try_from(item).ok())
                .collect();
            let unrated = draw.catalog.iter().filter(|c| !rated.contains(c)).count();
            if unrated < negatives {
                bail!(
                    "a user rated all but {unrated} of the catalog's {} items, and \
                     --sampled-negatives {negatives} needs that many unrated; give fewer",
                    draw.catalog.len()
                );
            }
            Ok(Some(rated))
        }
        (Some(_), None) if negatives > 0 => {
            bail!("--sampled-negatives needs the catalog to draw from")
        }
        _ => Ok(None),
    }
}

/// A loss row at position `at` of its user's whole sequence `span`: `base` is its first
/// class in the flattened `(rows, classes)` logits, `next` the class of its next item.
struct RowAt<'a> {
    span: &'a SequenceSpan,
    at: usize,
    base: usize,
    next: u32,
}

/// The goal's parts as the rows add them: the classes each row is pulled toward and their
/// weights, the classes left out of its softmax, and its sampled choice set.
struct Gathered {
    picks: Vec<u32>,
    weights: Vec<f32>,
    left_out: Vec<u32>,
    choices: Vec<u32>,
}

impl Gathered {
    fn with_capacity(rows: usize) -> Gathered {
        Gathered {
            picks: Vec::with_capacity(rows),
            weights: Vec::with_capacity(rows),
            left_out: Vec::new(),
            choices: Vec::new(),
        }
    }

    /// The row's target spread over its next items, the negatives drawn beside its next item,
    /// and the rated items its softmax leaves out, as the options ask.
    fn spread(
        &mut self,
        row: &RowAt,
        classes: usize,
        options: &TargetOptions,
        rated: Option<&HashSet<u32>>,
        draw: Option<&mut NegativeDraw>,
    ) -> Result<()> {
        let (span, at, base) = (row.span, row.at, row.base);
        let class = |item: i64| -> Result<usize> {
            usize::try_from(item)
                .ok()
                .filter(|&c| c < classes)
                .ok_or_else(|| anyhow::anyhow!("item {item} has no class"))
        };
        if class(span.items[at])? != row.next as usize {
            bail!("a window's target is not the item its sequence has there");
        }
        let ahead = options.future_items.max(1).min(span.items.len() - at);
        let decay = options.future_decay;
        let total: f64 = (0..ahead).map(|j| decay.powi(j as i32)).sum();
        let first = self.picks.len();
        for (j, &item) in span.items[at..at + ahead].iter().enumerate() {
            self.picks.push((base + class(item)?) as u32);
            self.weights.push((decay.powi(j as i32) / total) as f32);
        }
        if let (Some(rated), Some(draw)) = (rated, draw) {
            // The catalog holds the sequences' items, each a class: an item beyond the
            // classes fails tokenization before training starts.
            self.choices.push((base + row.next as usize) as u32);
            let drawn = draw_unrated(
                draw.catalog,
                rated,
                options.sampled_negatives,
                &mut draw.rng,
            );
            self.choices
                .extend(drawn.into_iter().map(|c| (base + c as usize) as u32));
        }
        if options.mask_seen || options.mask_later {
            let before = if options.mask_seen {
                &span.items[..at]
            } else {
                &[]
            };
            let after = if options.mask_later {
                &span.items[at + ahead..]
            } else {
                &[]
            };
            for &rated in before.iter().chain(after) {
                let at_class = (base + class(rated)?) as u32;
                // A rated item that is also a target here (a repeat) stays in.
                if !self.picks[first..].contains(&at_class) {
                    self.left_out.push(at_class);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let goal = goal(&[&example], &[6, 7, 8], 12, &TargetOptions::default(), None).unwrap();
        assert_eq!(
            rows_of(&goal, 12),
            [vec![(6, 1.0)], vec![(7, 1.0)], vec![(8, 1.0)]]
        );
        assert!(goal.mask().unwrap().is_none());
    }

    #[test]
    fn future_items_share_the_target_by_decay_up_to_the_sequence_end() {
        let example = window();
        let options = TargetOptions {
            future_items: 3,
            future_decay: 0.5,
            ..Default::default()
        };
        let goal = goal(&[&example], &[6, 7, 8], 12, &options, None).unwrap();
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
        assert!(goal.mask().unwrap().is_none());
    }

    #[test]
    fn the_mask_leaves_out_every_earlier_item_even_before_the_window() {
        let example = window();
        let options = TargetOptions {
            mask_seen: true,
            ..Default::default()
        };
        let goal = goal(&[&example], &[6, 7, 8], 12, &options, None).unwrap();
        let mask: Vec<Vec<f32>> = goal.mask().unwrap().unwrap().to_vec2().unwrap();
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
        let plain = goal(&[&example], &targets, 12, &TargetOptions::default(), None).unwrap();
        let expected =
            candle_nn::loss::cross_entropy(&logits, &Tensor::new(&targets, &Device::Cpu).unwrap())
                .unwrap();
        assert!((scalar(plain.loss(&logits).unwrap()) - scalar(expected)).abs() < 1e-6);

        // By hand: row r's softmax over the classes its mask leaves in, toward its weights.
        let options = TargetOptions {
            mask_seen: true,
            future_items: 2,
            future_decay: 0.5,
            ..Default::default()
        };
        let spread = goal(&[&example], &targets, 12, &options, None).unwrap();
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
        let error = goal(&[&example], &[6, 9, 8], 12, &options, None)
            .err()
            .unwrap();
        assert!(error.to_string().contains("not the item"), "{error}");
        let error = goal(&[&example], &[6, 7], 12, &options, None)
            .err()
            .unwrap();
        assert!(error.to_string().contains("fewer targets"), "{error}");
    }

    fn sampled(negatives: usize) -> TargetOptions {
        TargetOptions {
            sampled_negatives: negatives,
            sampled_weight: 0.5,
            ..Default::default()
        }
    }

    /// Items 0..12 with 1 and 2 outside the catalog: the window's user rated 3..=9, so a
    /// negative can only be 0, 10 or 11.
    const CATALOG: [u32; 10] = [0, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    fn choices_of(goal: &Goal, classes: usize) -> Vec<Vec<usize>> {
        let (choices, _) = goal.sampled.as_ref().unwrap();
        let flat: Vec<u32> = choices.to_vec1().unwrap();
        flat.chunks(flat.len() / goal.rows)
            .enumerate()
            .map(|(r, row)| {
                row.iter()
                    .map(|&p| {
                        assert_eq!(p as usize / classes, r, "a choice of another row");
                        p as usize % classes
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sampled_negatives_are_distinct_unrated_catalog_items_by_the_seed() {
        let example = window();
        let draw = |seed| {
            Some(NegativeDraw {
                catalog: &CATALOG,
                rng: Rng::new(seed),
            })
        };
        let rows_for = |seed| {
            let goal = goal(&[&example], &[6, 7, 8], 12, &sampled(2), draw(seed)).unwrap();
            choices_of(&goal, 12)
        };
        let mut differs = false;
        for seed in 0..20 {
            let rows = rows_for(seed);
            for (row, next) in rows.iter().zip([6, 7, 8]) {
                assert_eq!(row[0], next, "the next item comes first");
                assert_eq!(row.len(), 3);
                assert_ne!(row[1], row[2], "negatives are distinct");
                assert!(row[1..].iter().all(|c| [0, 10, 11].contains(c)), "{row:?}");
            }
            assert_eq!(rows, rows_for(seed), "the same seed, the same draw");
            differs |= rows != rows_for(seed + 1);
        }
        assert!(differs, "the seed changes the draw");

        // Three unrated items cannot give four negatives; the error says what to change.
        let error = goal(&[&example], &[6, 7, 8], 12, &sampled(4), draw(1))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("give fewer"), "{error}");
        let error = goal(&[&example], &[6, 7, 8], 12, &sampled(2), None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("catalog"), "{error}");
    }

    #[test]
    fn the_sampled_term_is_weighted_cross_entropy_among_the_choices() {
        let example = window();
        let logits: Vec<Vec<f32>> = (0..3)
            .map(|r| {
                (0..12)
                    .map(|c| ((c * 7 + r * 3) % 11) as f32 * 0.3 - 1.0)
                    .collect()
            })
            .collect();
        let tensor = Tensor::new(logits.clone(), &Device::Cpu).unwrap();
        let draw = NegativeDraw {
            catalog: &CATALOG,
            rng: Rng::new(5),
        };
        let goal = goal(&[&example], &[6, 7, 8], 12, &sampled(2), Some(draw)).unwrap();
        let mut by_hand = 0.0;
        for (r, row) in choices_of(&goal, 12).iter().enumerate() {
            let l = |c: usize| f64::from(logits[r][c]);
            let full: f64 = (0..12).map(|c| l(c).exp()).sum::<f64>().ln() - l(6 + r);
            let among: f64 = row.iter().map(|&c| l(c).exp()).sum::<f64>().ln() - l(row[0]);
            by_hand += (full + 0.5 * among) / 3.0;
        }
        let ours = f64::from(goal.loss(&tensor).unwrap().to_scalar::<f32>().unwrap());
        assert!((ours - by_hand).abs() < 1e-5, "{ours} vs {by_hand}");
    }

    #[test]
    fn a_sampled_weight_must_be_positive() {
        let options = TargetOptions {
            sampled_weight: 0.0,
            ..sampled(9)
        };
        let error = options.check().unwrap_err().to_string();
        assert!(error.contains("--sampled-weight 0"), "{error}");
        assert!(sampled(9).check().is_ok());
    }

    #[test]
    fn mask_later_leaves_out_what_the_user_rates_after_the_spread_targets() {
        let example = window();
        let left_out = |options: TargetOptions| -> Vec<Vec<usize>> {
            let goal = goal(&[&example], &[6, 7, 8], 12, &options, None).unwrap();
            let mask: Vec<Vec<f32>> = goal.mask().unwrap().unwrap().to_vec2().unwrap();
            mask.iter()
                .map(|row| (0..12).filter(|&c| row[c] == LEFT_OUT).collect())
                .collect()
        };
        let later = TargetOptions {
            mask_later: true,
            ..Default::default()
        };
        // The sequence is 3 4 5 6 7 8 9; targets 6, 7, 8: only what comes after each.
        assert_eq!(left_out(later), [vec![7, 8, 9], vec![8, 9], vec![9]]);
        // With the seen mask, every rated item but the targets; spread targets stay in.
        let both = TargetOptions {
            mask_seen: true,
            future_items: 2,
            ..later
        };
        assert_eq!(
            left_out(both),
            [
                vec![3, 4, 5, 8, 9],
                vec![3, 4, 5, 6, 9],
                vec![3, 4, 5, 6, 7]
            ]
        );
    }

    #[test]
    fn a_sample_of_the_whole_catalog_is_the_full_softmax() {
        let example = window();
        let options = TargetOptions {
            mask_seen: true,
            future_items: 2,
            ..Default::default()
        };
        let full = goal(&[&example], &[6, 7, 8], 12, &options, None).unwrap();
        let logits: Vec<Vec<f32>> = (0..3)
            .map(|r| {
                (0..12)
                    .map(|c| ((c * 5 + r) % 7) as f32 * 0.4 - 1.0)
                    .collect()
            })
            .collect();
        let tensor = Tensor::new(logits.clone(), &Device::Cpu).unwrap();
        let all: Vec<u32> = (0..12).collect();
        let (every, columns) = full.over_sample(&all, 12, &mut Rng::new(3)).unwrap();
        assert_eq!(columns, all);
        let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap();
        let expected = scalar(full.loss(&tensor).unwrap());
        assert!((scalar(every.loss(&tensor).unwrap()) - expected).abs() < 1e-6);
    }

    #[test]
    fn a_sample_keeps_every_target_and_corrects_the_drawn_columns() {
        let example = window();
        let options = TargetOptions {
            future_items: 2,
            ..Default::default()
        };
        let full = goal(&[&example], &[6, 7, 8], 12, &options, None).unwrap();
        // Targets 6..=9; two of the eight other catalog items are drawn.
        let (sampled, columns) = full.over_sample(&CATALOG, 2, &mut Rng::new(7)).unwrap();
        assert_eq!(columns.len(), 6, "{columns:?}");
        assert!(
            [6, 7, 8, 9].iter().all(|t| columns.contains(t)),
            "{columns:?}"
        );
        let rows = rows_of(&sampled, columns.len());
        let as_classes: Vec<Vec<u32>> = rows
            .iter()
            .map(|row| row.iter().map(|&(c, _)| columns[c]).collect())
            .collect();
        assert_eq!(as_classes, [vec![6, 7], vec![7, 8], vec![8, 9]]);
        let bias: Vec<Vec<f32>> = sampled.mask().unwrap().unwrap().to_vec2().unwrap();
        // Six non-target catalog items (0, 3, 4, 5, 10, 11), two drawn: ln 3 for each.
        for (i, &class) in columns.iter().enumerate() {
            let want = if (6..=9).contains(&class) {
                0.0
            } else {
                3f32.ln()
            };
            assert!(
                bias.iter().all(|row| (row[i] - want).abs() < 1e-6),
                "{class}"
            );
        }
    }
}
