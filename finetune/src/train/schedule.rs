//! Which examples each step sees and at what learning rate: both a pure function of the step,
//! so a resumed run repeats an uninterrupted one.

use kvrec_core::rng::Rng;

use super::config::TrainConfig;

/// Which examples step `step` trains on: epochs are seeded permutations, so a resumed run
/// sees exactly the batches an uninterrupted one would.
pub fn batch_indices(n: usize, batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let per_epoch = n.div_ceil(batch).max(1);
    let epoch = step / per_epoch;
    let mut order: Vec<usize> = (0..n).collect();
    Rng::fork(seed, epoch as u64).shuffle(&mut order);
    let start = (step % per_epoch) * batch;
    order[start..(start + batch).min(n)].to_vec()
}

/// Batches per span that [`bucketed_batch_indices`] sorts by length.
const BUCKET_BATCHES: usize = 50;
/// Seeds the order of an epoch's length-sorted batches.
const BUCKETS_STREAM: u64 = 0x6275_636b_6574_7300;

/// [`batch_indices`] with each batch of examples of about one length (`train
/// --length-buckets`): the epoch's permutation is cut into spans of 50 batches, each span is
/// sorted by length and cut into batches, and the batches are shuffled. A batch is padded to
/// its longest example, so short sequences beside long ones no longer cost the long ones'
/// compute. Still a pure function of the step.
pub fn bucketed_batch_indices(
    lengths: &[usize],
    batch: usize,
    seed: u64,
    step: usize,
) -> Vec<usize> {
    let n = lengths.len();
    let per_epoch = n.div_ceil(batch).max(1);
    let epoch = step / per_epoch;
    let mut order: Vec<usize> = (0..n).collect();
    Rng::fork(seed, epoch as u64).shuffle(&mut order);
    for span in order.chunks_mut(batch * BUCKET_BATCHES) {
        span.sort_by_key(|&i| lengths[i]);
    }
    let mut batches: Vec<usize> = (0..per_epoch).collect();
    Rng::fork(seed ^ BUCKETS_STREAM, epoch as u64).shuffle(&mut batches);
    let start = batches[step % per_epoch] * batch;
    order[start..(start + batch).min(n)].to_vec()
}

/// Linear warm-up, then cosine decay to a tenth of the peak.
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    if step < config.warmup_steps {
        return config.lr * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let progress = (step - config.warmup_steps) as f64
        / (total.saturating_sub(config.warmup_steps)).max(1) as f64;
    config.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_buckets_cover_each_example_once_an_epoch_in_batches_of_like_length() {
        let lengths: Vec<usize> = (0..1000).map(|i| 2 + (i * 37) % 49).collect();
        let per_epoch = 1000usize.div_ceil(8);
        for epoch in 0..2 {
            let mut seen = vec![0; 1000];
            let mut spread = 0;
            for step in epoch * per_epoch..(epoch + 1) * per_epoch {
                let picked = bucketed_batch_indices(&lengths, 8, 5, step);
                picked.iter().for_each(|&i| seen[i] += 1);
                let (lo, hi) = picked.iter().fold((usize::MAX, 0), |(lo, hi), &i| {
                    (lo.min(lengths[i]), hi.max(lengths[i]))
                });
                spread += hi - lo;
                assert_eq!(picked, bucketed_batch_indices(&lengths, 8, 5, step));
            }
            assert!(seen.iter().all(|&c| c == 1), "each example once an epoch");
            // Random batches of 8 would spread over ~38 of the 49 lengths.
            assert!(
                spread / per_epoch <= 2,
                "mean spread {}",
                spread / per_epoch
            );
        }
    }
}
