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

/// Linear warm-up, then cosine decay to a tenth of the peak.
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    if step < config.warmup_steps {
        return config.lr * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let progress = (step - config.warmup_steps) as f64
        / (total.saturating_sub(config.warmup_steps)).max(1) as f64;
    config.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()))
}
