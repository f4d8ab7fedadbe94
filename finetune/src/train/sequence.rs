//! The sequence stage: next-item prediction at every position of the users' training
//! sequences (SASRec's objective), with the softmax over every item token rather than one
//! target per prompt. Windows of a sequence are rendered through the template's `sequence`
//! layout and tokenized by the run's own tokenizer, so a window is exactly a prompt that
//! `recommend()` would send, and each item position of it is a training target.
//!
//! Validation follows SASRec: each user's last training item is held out, the model learns
//! from the rest, and the held-out item is ranked among the protocol's candidates after the
//! 20 items before it; the best epoch is kept.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use kvrec_core::rng::Rng;
use kvrec_core::template::{Layout, TemplateSpec};

use super::examples::Example;
use super::examples::SequenceSpan;
use super::model::Transformer;
use super::tokenizer::TextTokenizer;
use crate::metrics::Metrics;
use crate::protocol::{Instance, Sequence};

/// Windows of up to `window` items over each sequence, every item after the first a target
/// exactly once; a window's first `context` items (or all before its first target, at a
/// sequence's start) are context only, so a target sees at least as much history as a served
/// request, and no more context than that is recomputed (a sequence's last window is short).
pub fn windows(len: usize, window: usize, context: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    let stride = window.saturating_sub(context).max(1);
    let mut out = Vec::new();
    let mut next = 1;
    while next < len {
        let end = (next + stride).min(len);
        let start = next.saturating_sub(context).min(next - 1);
        out.push((start, next..end));
        next = end;
    }
    out
}

/// The tokenized windows of every sequence: `[BOS] ␣id ␣id …`, with the position of every
/// target id. Fails if the tokenizer does not cut each spaced id into one token, since then
/// the rendered prompt is not the sequence of items it trains.
pub fn examples(
    sequences: &[Sequence],
    tokenizer: &dyn TextTokenizer,
    spec: &TemplateSpec,
    window: usize,
) -> Result<Vec<Example>> {
    use rayon::prelude::*;
    if spec.layout != Layout::Sequence {
        bail!("the sequence stage needs a template with layout 'sequence'");
    }
    let bos = tokenizer.bos()?;
    let offset = usize::from(bos.is_some());
    let per_sequence = sequences
        .par_iter()
        .map(|sequence| {
            let all: Arc<[i64]> = Arc::from(sequence.items.as_slice());
            windows(sequence.items.len(), window, spec.max_history)
                .into_iter()
                .map(|(start, targets)| {
                    let items = &sequence.items[start..targets.end];
                    let tokens = tokenizer.encode(&spec.render_sequence(items))?;
                    if tokens.len() != items.len() {
                        bail!(
                            "user {}: {} items became {} tokens; the tokenizer must give each id \
                             one token (train with --number-tokens at least the largest item id)",
                            sequence.user_id,
                            items.len(),
                            tokens.len()
                        );
                    }
                    let mut ids = Vec::with_capacity(offset + tokens.len());
                    ids.extend(bos);
                    ids.extend(tokens);
                    let end = ids.len();
                    Ok(Example {
                        ids,
                        answer_start: end,
                        loss_end: end,
                        prompt_targets: targets.map(|j| offset + j - start).collect(),
                        span: Some(SequenceSpan {
                            items: all.clone(),
                            start,
                            offset,
                        }),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(per_sequence.into_iter().flatten().collect())
}

/// The item vocabulary: token ids of every number up to `max_id` as the sequence layout
/// renders it (each must be one token), the classes the softmax runs over.
pub struct ItemClasses {
    pub tokens: Vec<u32>,
    /// `tokens` as the index tensor the loss selects the head's rows with.
    pub tensor: Tensor,
    class_of: HashMap<u32, u32>,
}

impl ItemClasses {
    pub fn new(tokenizer: &dyn TextTokenizer, spec: &TemplateSpec, max_id: i64) -> Result<Self> {
        let mut tokens = Vec::with_capacity(max_id as usize + 1);
        for id in 0..=max_id {
            match tokenizer.encode(&spec.render_sequence(&[id]))?[..] {
                [token] => tokens.push(token),
                _ => bail!(
                    "item id {id} is more than one token; train with --number-tokens {max_id} or more"
                ),
            }
        }
        let class_of = tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i as u32))
            .collect();
        let tensor = Tensor::new(tokens.as_slice(), &Device::Cpu)?;
        Ok(ItemClasses {
            tokens,
            tensor,
            class_of,
        })
    }

    /// The token of item `id`.
    pub fn token(&self, id: i64) -> Result<u32> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.tokens.get(i).copied())
            .with_context(|| {
                format!(
                    "item {id} has no token; train with --number-tokens at least the largest id"
                )
            })
    }

    /// Token targets as class indices.
    pub fn classes(&self, targets: &Tensor) -> Result<Tensor> {
        let classes = targets
            .to_vec1::<u32>()?
            .iter()
            .map(|t| {
                self.class_of
                    .get(t)
                    .copied()
                    .with_context(|| format!("target token {t} is not an item"))
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Tensor::new(classes.as_slice(), &Device::Cpu)?)
    }
}

/// Drops the last item of each sequence whose user has a validation request: SASRec's
/// validation hold-out. The requests (`train.jsonl` of `data`, whose positive is that item)
/// are checked against it.
pub fn hold_out_last(sequences: &[Sequence], valid: &[Instance]) -> Result<Vec<Sequence>> {
    let last: HashMap<i64, i64> = sequences
        .iter()
        .filter_map(|s| Some((s.user_id, *s.items.last()?)))
        .collect();
    for instance in valid {
        if last.get(&instance.user_id) != Some(&instance.positive) {
            bail!(
                "validation request of user {} does not predict the last item of that user's \
                 training sequence; pass the train.jsonl written with these sequences",
                instance.user_id
            );
        }
    }
    let validated: HashSet<i64> = valid.iter().map(|v| v.user_id).collect();
    Ok(sequences
        .iter()
        .map(|s| {
            let keep = s.items.len() - usize::from(validated.contains(&s.user_id));
            Sequence {
                user_id: s.user_id,
                items: s.items[..keep].to_vec(),
                times: s.times[..keep.min(s.times.len())].to_vec(),
            }
        })
        .filter(|s| s.items.len() >= 2)
        .collect())
}

/// At most `users` of the validation requests, an even spread over them (all for 0).
pub fn validation_sample(valid: &[Instance], users: usize) -> Vec<Instance> {
    if users == 0 || users >= valid.len() {
        return valid.to_vec();
    }
    (0..users)
        .map(|i| valid[i * valid.len() / users].clone())
        .collect()
}

/// `sequences` with the items of each second in a new random order. A second's ratings came
/// in one submission (half of ML-1M's consecutive pairs share their second), and the order the
/// data lists them in was not the order they were watched; a fixed order would have the model
/// learn transitions inside a submission that no request can show again.
pub fn shuffle_ties(sequences: &[Sequence], seed: u64) -> Result<Vec<Sequence>> {
    sequences
        .iter()
        .map(|s| {
            if s.times.len() != s.items.len() {
                bail!(
                    "user {}: the sequence carries {} times for {} items; --shuffle-ties needs \
                     each item's time, which `data` writes into train_sequences.jsonl (write \
                     the data again with this version)",
                    s.user_id,
                    s.times.len(),
                    s.items.len()
                );
            }
            let mut rng = Rng::fork(seed, s.user_id as u64);
            let mut shuffled = s.clone();
            let mut start = 0;
            while start < s.times.len() {
                let end = start
                    + s.times[start..]
                        .iter()
                        .take_while(|&&t| t == s.times[start])
                        .count();
                rng.shuffle(&mut shuffled.items[start..end]);
                start = end;
            }
            Ok(shuffled)
        })
        .collect()
}

/// HR@1 and NDCG@3 of `model` on `instances`, scored as llama.cpp scores them (the
/// candidates' logits at the prompt's last position), a batch of prompts at a time.
pub fn validate(
    model: &Transformer,
    tokenizer: &dyn TextTokenizer,
    spec: &TemplateSpec,
    items: &ItemClasses,
    instances: &[Instance],
) -> Result<(f64, f64)> {
    use rayon::prelude::*;
    let bos = tokenizer.bos()?;
    let pad = tokenizer.eos()?;
    // Chunks side by side on the pool (candle's products run on one thread each: see
    // super::threads), their scores taken in order.
    let chunks: Vec<Vec<(Vec<f64>, usize)>> = instances
        .par_chunks(256)
        .map(|chunk| -> Result<Vec<(Vec<f64>, usize)>> {
            let mut prompts = Vec::with_capacity(chunk.len());
            let mut candidates = Vec::with_capacity(chunk.len());
            for instance in chunk {
                let request = instance.request()?;
                let mut ids: Vec<u32> = bos.into_iter().collect();
                ids.extend(tokenizer.encode(&spec.render_prompt(&request))?);
                let tokens = request
                    .candidate_ids()
                    .iter()
                    .map(|&id| items.token(id))
                    .collect::<Result<Vec<u32>>>()?;
                let positive = request
                    .candidate_ids()
                    .iter()
                    .position(|&id| id == instance.positive)
                    .context("the positive is not among the candidates")?;
                prompts.push(ids);
                candidates.push((tokens, positive));
            }
            let t = prompts.iter().map(Vec::len).max().unwrap_or(1);
            let mut flat = Vec::with_capacity(prompts.len() * t);
            let mut rows = Vec::with_capacity(prompts.len());
            for (i, p) in prompts.iter().enumerate() {
                flat.extend(p);
                flat.extend(std::iter::repeat_n(pad, t - p.len()));
                rows.push((i * t + p.len() - 1) as u32);
            }
            let device = Device::Cpu;
            let ids = Tensor::from_vec(flat, (prompts.len(), t), &device)?;
            let logits = model
                .logits_at(
                    &model.hidden(&ids)?,
                    &Tensor::new(rows.as_slice(), &device)?,
                )?
                .to_vec2::<f32>()?;
            Ok(logits
                .iter()
                .zip(candidates)
                .map(|(row, (tokens, positive))| {
                    let scores = tokens.iter().map(|&t| f64::from(row[t as usize])).collect();
                    (scores, positive)
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut metrics = Metrics::default();
    for (scores, positive) in chunks.iter().flatten() {
        metrics.add_scores(scores, *positive);
    }
    let summary = metrics.summary();
    Ok((summary.hr1, summary.ndcg3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_request(user_id: i64, positive: i64) -> Instance {
        Instance {
            user_id,
            split: crate::protocol::Split::Train,
            user: serde_json::json!({}),
            history: serde_json::json!([]),
            candidates: serde_json::json!([]),
            positive,
        }
    }

    #[test]
    fn only_the_validated_users_lose_their_last_item() {
        let sequences: Vec<Sequence> = (1..=4)
            .map(|user_id| Sequence {
                user_id,
                items: vec![10 * user_id, 10 * user_id + 1, 10 * user_id + 2],
                times: vec![0, 1, 2],
            })
            .collect();
        let valid: Vec<Instance> = (1..=4).map(|u| valid_request(u, 10 * u + 2)).collect();
        let sample = validation_sample(&valid, 2);
        let users: Vec<i64> = sample.iter().map(|v| v.user_id).collect();
        assert_eq!(users, vec![1, 3], "an even spread");
        assert_eq!(
            validation_sample(&valid, 0).len(),
            4,
            "0 keeps every request"
        );
        assert_eq!(validation_sample(&valid, 9).len(), 4);
        let trained = hold_out_last(&sequences, &sample).unwrap();
        let lengths: Vec<(i64, usize, usize)> = trained
            .iter()
            .map(|s| (s.user_id, s.items.len(), s.times.len()))
            .collect();
        assert_eq!(lengths, vec![(1, 2, 2), (2, 3, 3), (3, 2, 2), (4, 3, 3)]);
        let wrong = [valid_request(2, 20)];
        let error = hold_out_last(&sequences, &wrong).unwrap_err().to_string();
        assert!(error.contains("user 2"), "{error}");
    }

    #[test]
    fn ties_are_shuffled_within_their_second_only_and_by_the_seed() {
        let sequence = Sequence {
            user_id: 7,
            items: (1..=12).collect(),
            times: vec![5, 5, 5, 5, 5, 9, 10, 10, 10, 10, 10, 11],
        };
        let shuffled: Vec<Vec<i64>> = (0..20)
            .map(|seed| {
                shuffle_ties(std::slice::from_ref(&sequence), seed).unwrap()[0]
                    .items
                    .clone()
            })
            .collect();
        for items in &shuffled {
            let mut first: Vec<i64> = items[..5].to_vec();
            first.sort_unstable();
            assert_eq!(
                first,
                vec![1, 2, 3, 4, 5],
                "the first second's items stay in it"
            );
            assert_eq!(items[5], 6, "a second of one item keeps its place");
            let mut second: Vec<i64> = items[6..11].to_vec();
            second.sort_unstable();
            assert_eq!(second, vec![7, 8, 9, 10, 11]);
            assert_eq!(items[11], 12);
        }
        assert!(
            shuffled.iter().any(|items| items != &sequence.items),
            "some seed reorders a second"
        );
        assert!(shuffled.iter().skip(1).any(|items| items != &shuffled[0]));
        assert_eq!(
            shuffle_ties(std::slice::from_ref(&sequence), 3).unwrap(),
            shuffle_ties(std::slice::from_ref(&sequence), 3).unwrap(),
            "the same seed, the same order"
        );
        let untimed = Sequence {
            times: Vec::new(),
            ..sequence
        };
        let error = shuffle_ties(&[untimed], 1).unwrap_err().to_string();
        assert!(error.contains("write the data again"), "{error}");
    }

    #[test]
    fn every_item_after_the_first_is_a_target_once_with_enough_context() {
        for len in [0, 1, 2, 5, 20, 21, 59, 60, 61, 100, 333] {
            let windows = windows(len, 60, 20);
            let targets: Vec<usize> = windows.iter().flat_map(|(_, t)| t.clone()).collect();
            assert_eq!(targets, (1..len.max(1)).collect::<Vec<_>>(), "len {len}");
            let tokens: usize = windows.iter().map(|(s, t)| t.end - s).sum();
            assert!(
                tokens <= len.saturating_sub(1) * 60 / 40 + 20,
                "len {len}: {tokens} items"
            );
            for (start, t) in &windows {
                assert!(t.end - start <= 60, "window too long");
                assert!(*start < t.start, "a target needs an item before it");
                // Every target sees 20 items before it, or all there are.
                assert!(
                    t.start - start >= 20.min(t.start),
                    "len {len}: {start} {t:?}"
                );
            }
        }
    }
}
