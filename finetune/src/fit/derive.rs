//! The training configuration `fit` derives from a data set's shape: the one place where a
//! default of the sequence recipe is chosen, and why. `train --config` and a recipe's
//! `[train]` table change any of it.

use kvrec_core::template::TemplateSpec;

use super::shape::DataShape;
use crate::train::TargetOptions;
use crate::train::TrainConfig;

/// The sequence template every fitted model serves with: the prompt is the last 20 item ids.
pub const TEMPLATE_JSON: &str = include_str!("../../../models/kvrec-default.template.json");

/// Items trained on fewer times than this each are "sparse" (the shopping sets: 11–16; ML-1M:
/// 135, ML-100K: 60): their embeddings learn from few examples, so the model is narrower, more
/// regularised, and its output head is its input embedding.
pub const SPARSE_EVENTS_PER_ITEM: f64 = 30.0;

/// Ties above this share, listed in an order that is not the order of events (see
/// [`DataShape::tie_order_agreement`]), mean the next item is one of the next few: each
/// position is trained toward its next few items instead of one of them. Where the source
/// lists tied events as they happened, the spread only blurs the next item: on the generated
/// `sparse` shape (64 % ties, listed in event order) training toward the next item alone took
/// test HR@1 from 0.797 to 0.807 (paired against co-occurrence from −0.021 to −0.011).
pub const TIED_SHARE: f64 = 0.1;

/// Catalogs above this many items train with a sampled output layer of
/// [`OUTPUT_SAMPLE`] drawn items per step: the full softmax over every item would dominate
/// the step (a 2-core machine does a few tens of GFLOP/s). The sample is also better, not
/// only cheaper. On Beauty (12k items), at epoch 11 of a 20-epoch schedule validation HR@1 was
/// 0.434 with the full softmax and 0.456 with 2,048 drawn items; with the derived schedule,
/// 512 drawn items reached 0.478 against 2,048's 0.466 (test 0.448 against 0.439). The full
/// softmax spends its gradient on the few items nearest the target; a request's candidates
/// are ordinary items.
pub const SAMPLED_OUTPUT_ABOVE: usize = 8192;
pub const OUTPUT_SAMPLE: usize = 512;

/// Users whose last training item is held out to choose the epoch: an even spread of at most
/// this many. Every other user's last item is trained on, and it is the latest, the nearest to
/// what a request asks next: on Beauty (22k users) validating on 2,000 instead of every user
/// took test HR@1 from 0.439 to 0.468 (paired against co-occurrence +0.028 [+0.008, +0.049]).
/// With 2,000, though, one lucky epoch (+0.010, about 1.4 standard errors of an epoch-to-epoch
/// difference) ended a run by patience while validation still rose: 4,000 halve that noise
/// and cost 2,000 more users' last items.
pub const VALIDATION_USERS: usize = 4000;

/// Epochs without a better validation HR@1 before training stops: with a constant learning
/// rate the model keeps improving slowly (Beauty: 0.466 at epoch 14, 0.478 at 28), so
/// patience is long and the budget is what usually ends a fit.
pub const PATIENCE: usize = 10;

/// Epochs at most; the budget and the patience end a fit long before on any real data.
pub const MAX_EPOCHS: f64 = 200.0;

/// The sequence template (`models/kvrec-default.template.json`).
pub fn template() -> TemplateSpec {
    let value: serde_json::Value =
        serde_json::from_str(TEMPLATE_JSON).expect("the shipped template is JSON");
    TemplateSpec::from_json(&value).expect("the shipped template is a template")
}

/// The configuration for data of `shape`; the data paths are left for the caller.
pub fn derive(shape: &DataShape) -> TrainConfig {
    let sparse = shape.events_per_item() < SPARSE_EVENTS_PER_ITEM;
    let d_model = if sparse { 64 } else { 128 };
    // A window holds the served history (20 items) as context plus its targets; a data set of
    // short sequences needs no long windows, and shorter ones pad less.
    let sequence_window: usize = if shape.p95_length <= 40 { 50 } else { 100 };
    TrainConfig {
        seed: 42,
        // Only the BPE merges of the (unused) non-id text: the items are number tokens.
        vocab_size: 300,
        number_tokens: shape.max_item_id.max(1) as usize,
        d_model,
        layers: 2,
        heads: 2,
        ff: 2 * d_model,
        context: (2 * sequence_window).next_power_of_two(),
        sequence_window,
        // Sparse items learn from both ends when the head is their input embedding: on Beauty
        // (16 events per item) a tied head reached validation HR@1 0.455 by epoch 10 where
        // an untied one stopped at 0.437. Dense catalogs keep their own head (the default
        // model's recipe).
        tied: sparse,
        dropout: if sparse { 0.5 } else { 0.2 },
        batch: 64,
        lr: 2e-3,
        warmup_steps: 100,
        epochs: MAX_EPOCHS,
        valid_users: VALIDATION_USERS,
        patience: PATIENCE,
        checkpoint_every: 100_000,
        length_buckets: true,
        template: template(),
        targets: TargetOptions {
            mask_seen: true,
            future_items: if shape.tie_share > TIED_SHARE && !shape.ties_keep_order() {
                3
            } else {
                0
            },
            output_sample: if shape.items > SAMPLED_OUTPUT_ABOVE {
                OUTPUT_SAMPLE
            } else {
                0
            },
            ..TargetOptions::default()
        },
        ..TrainConfig::default()
    }
}
