//! What determines a training run: everything `run.json` records and a resumed run checks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kvrec_core::template::TemplateSpec;
use kvrec_llm::llama_file::LlamaShape;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lora::LoraSpec;

/// Everything that determines a run; written to `<out>/run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training rows (`train-<variant>.jsonl` from `data`).
    pub data: Vec<PathBuf>,
    pub seed: u64,
    pub vocab_size: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub ff: usize,
    /// Context the model is trained for and llama.cpp serves with.
    pub context: usize,
    pub batch: usize,
    pub epochs: f64,
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Answer items that carry the loss: 0 = the whole ranked list (generation learns the
    /// format), 1 = the first id and its separator only — exactly what scoring reads, so the
    /// whole gradient goes to picking the right candidate.
    #[serde(default)]
    pub loss_items: usize,
    /// Output head tied to the token embedding (see `model::Transformer::tied`).
    #[serde(default)]
    pub tied: bool,
    pub checkpoint_every: usize,
    /// The template the model learns; stored in the GGUF.
    pub template: TemplateSpec,
    /// A pre-trained llama GGUF to adapt with LoRA (its shape replaces the fields above).
    #[serde(default)]
    pub base: Option<PathBuf>,
    #[serde(default)]
    pub lora: Option<LoraSpec>,
    /// Order the answer's items after the positive by this candidate key (see
    /// [`crate::training_data::order_rest_by`]); `None` keeps the rows' order.
    #[serde(default)]
    pub order_rest_by: Option<String>,
    /// From scratch: every number up to this one is a single token (0: digit by digit).
    #[serde(default)]
    pub number_tokens: usize,
    /// Also train on each history id of the template's id list (next-item prediction).
    #[serde(default)]
    pub history_loss: bool,
    /// How many times each answer token counts in the loss: with `history_loss` an example
    /// has ~20 history targets and one answer choice, and the choice is what scoring reads.
    #[serde(default = "one")]
    pub answer_weight: usize,
    /// From scratch: start from this run's latest weights and tokenizer instead of a random
    /// initialisation (continued training with new rows or a new schedule; same shape).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Sequence stage (see [`sequence`]): `data` holds training sequences, trained in
    /// windows of this many items with the softmax over every item; 0 = training rows.
    #[serde(default)]
    pub sequence_window: usize,
    /// Sequence stage: each target attends to its last this many items and the BOS, as a
    /// served prompt of that many items does (0: the whole window).
    #[serde(default)]
    pub attention_span: usize,
    /// Dropout rate on embeddings and sublayer outputs (sequence stage).
    #[serde(default)]
    pub dropout: f64,
    /// Sequence stage: validation requests (`train.jsonl`) whose positive is each user's last
    /// training item, held out of training and ranked every epoch; the best epoch is kept.
    #[serde(default)]
    pub valid: Option<PathBuf>,
    /// Sequence stage: validate on at most this many of those requests, an even spread; the
    /// other users' last items are trained on (0: validate on every request). The last items
    /// are each user's latest and so the nearest to what is asked next.
    #[serde(default)]
    pub valid_users: usize,
    /// Sequence stage: stop after this many epochs without a better validation HR@1 (0: never).
    #[serde(default)]
    pub patience: usize,
    /// Decay of an exponential moving average of the weights, which validation ranks and
    /// export writes (0: the raw weights).
    #[serde(default)]
    pub ema: f64,
    /// Sequence stage: each epoch puts the items of every second in a new random order (the
    /// sequences' `times`); the data does not record the order within a submission.
    #[serde(default)]
    pub shuffle_ties: bool,
    /// Sequence stage: item keys (`item_keys.jsonl` from `data`) whose embeddings every item
    /// with that key shares (see [`super::item_features`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_keys: Option<PathBuf>,
    /// Sequence stage: item text vectors (`item_vectors.jsonl` from `data
    /// --item-text-model`), projected into every item's embedding (see
    /// [`super::item_features`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_vectors: Option<PathBuf>,
    /// Batches of examples of about one length (see [`super::bucketed_batch_indices`]).
    #[serde(default)]
    pub length_buckets: bool,
    /// Each step's batch is split into this many shards whose forward and backward passes run
    /// on the thread pool side by side; their gradients add up to the whole batch's (each
    /// shard's loss weighted by its rows). Dropout and sampled items are drawn per shard, so a
    /// run depends on this number, not on the threads. 0: one per thread of the pool, at most
    /// one per 8 examples (see [`super::threads`]); a run.json written before shards reads
    /// as 1, as it trained.
    #[serde(default = "one")]
    pub shards: usize,
    /// Sequence stage: what each position is trained toward beyond its next item (see
    /// [`super::targets`]); flattened, so a run.json without these reads as the next item.
    #[serde(default, flatten)]
    pub targets: TargetOptions,
}

fn one() -> usize {
    1
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: Vec::new(),
            seed: 42,
            vocab_size: 8192,
            d_model: 256,
            layers: 4,
            heads: 4,
            ff: 704,
            context: 1024,
            batch: 8,
            epochs: 1.0,
            lr: 1e-3,
            warmup_steps: 50,
            weight_decay: 0.01,
            loss_items: 0,
            tied: true,
            checkpoint_every: 200,
            template: TemplateSpec::default(),
            base: None,
            lora: None,
            order_rest_by: None,
            number_tokens: 0,
            history_loss: false,
            answer_weight: 1,
            init_from: None,
            sequence_window: 0,
            attention_span: 0,
            dropout: 0.0,
            valid: None,
            valid_users: 0,
            patience: 0,
            ema: 0.0,
            shuffle_ties: false,
            item_keys: None,
            item_vectors: None,
            length_buckets: false,
            shards: 0,
            targets: TargetOptions::default(),
        }
    }
}

impl TrainConfig {
    /// Refuses option values no run can use, naming the option and a valid value.
    pub fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.ema) {
            bail!(
                "--ema {} is not a decay: give one in [0, 1), e.g. 0.998, or 0 for the raw weights",
                self.ema
            );
        }
        if self.shards > self.batch {
            bail!(
                "--shards {} does not split a batch of {}: give 1 to {} (0: one per thread)",
                self.shards,
                self.batch,
                self.batch
            );
        }
        self.targets.check()
    }

    pub fn shape(&self) -> LlamaShape {
        LlamaShape {
            n_vocab: self.vocab_size,
            n_embd: self.d_model,
            n_layer: self.layers,
            n_head: self.heads,
            n_head_kv: self.heads,
            n_ff: self.ff,
            context: self.context,
        }
    }
}

/// Options that a configuration file may set although a default configuration does not
/// write them (they are skipped when unset).
const UNWRITTEN_OPTIONS: [&str; 2] = ["item_keys", "item_vectors"];

impl TrainConfig {
    /// `self` with the options of `table` set (a `train --config` file, a recipe's `[train]`
    /// table), as JSON pointers' values; an option a run does not have is an error that says
    /// which it has.
    pub fn overlay(&self, table: &Map<String, Value>, what: &str) -> Result<TrainConfig> {
        let mut merged = serde_json::to_value(self)?;
        let object = merged
            .as_object_mut()
            .context("a training configuration is a JSON object")?;
        for (key, value) in table {
            if !object.contains_key(key) && !UNWRITTEN_OPTIONS.contains(&key.as_str()) {
                let mut known: Vec<&str> = object.keys().map(String::as_str).collect();
                known.extend(UNWRITTEN_OPTIONS);
                known.sort_unstable();
                bail!(
                    "{what}: '{key}' is not a training option; the options are {}",
                    known.join(", ")
                );
            }
            object.insert(key.clone(), value.clone());
        }
        serde_json::from_value(merged).map_err(|e| anyhow::anyhow!("{what}: {e}"))
    }

    /// `self` with a TOML configuration file's options set. Paths in it (data, validation,
    /// item features, a template given as a file) are relative to the file's folder.
    pub fn overlay_file(&self, path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the training configuration {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid TOML: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.overlay_toml(&table, dir, &path.display().to_string())
    }

    /// [`Self::overlay`] of a TOML table whose paths are relative to `dir`.
    pub fn overlay_toml(&self, table: &toml::Table, dir: &Path, what: &str) -> Result<TrainConfig> {
        let mut options: Map<String, Value> = serde_json::from_value(serde_json::to_value(table)?)?;
        let at = |value: &Value| -> Value {
            match value.as_str() {
                Some(path) => Value::String(dir.join(path).to_string_lossy().into_owned()),
                None => value.clone(),
            }
        };
        for key in ["valid", "item_keys", "item_vectors", "base", "init_from"] {
            if let Some(value) = options.get_mut(key) {
                *value = at(value);
            }
        }
        if let Some(Value::Array(paths)) = options.get_mut("data") {
            for path in paths.iter_mut() {
                *path = at(path);
            }
        }
        if let Some(Value::String(file)) = options.get("template").cloned() {
            let file = dir.join(file);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{what}: reading the template {}", file.display()))?;
            let spec = TemplateSpec::from_json(&serde_json::from_str(&text)?)
                .with_context(|| format!("{what}: the template in {}", file.display()))?;
            options.insert("template".into(), serde_json::to_value(spec)?);
        }
        self.overlay(&options, what)
    }

    /// The configuration as TOML, as `fit` writes it for `train --config`.
    pub fn to_toml(&self) -> Result<String> {
        // JSON first: TOML has no null, and an unset option is simply left out.
        let mut value = serde_json::to_value(self)?;
        strip_nulls(&mut value);
        Ok(toml::to_string(&value)?)
    }
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The run's choice of targets (part of its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetOptions {
    /// Leave each target's earlier items out of its softmax.
    #[serde(default)]
    pub mask_seen: bool,
    /// Leave the items rated after each target (but its spread targets) out of its softmax.
    #[serde(default)]
    pub mask_later: bool,
    /// Spread the target over this many items from the next on (0 and 1: the next only).
    #[serde(default)]
    pub future_items: usize,
    /// Weight of the j-th item after the next, relative to the next: `decay^j`.
    #[serde(default = "half")]
    pub future_decay: f64,
    /// Also rank each next item among this many uniform unrated catalog items (0: off).
    #[serde(default)]
    pub sampled_negatives: usize,
    /// The weight of that term beside the full softmax's.
    #[serde(default = "one_f64")]
    pub sampled_weight: f64,
    /// Run each step's softmax over the classes its rows are pulled toward and this many
    /// drawn uniformly from the catalog (0: over every item); see [`Goal::over_sample`].
    #[serde(default)]
    pub output_sample: usize,
}

fn one_f64() -> f64 {
    1.0
}

fn half() -> f64 {
    0.5
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            mask_seen: false,
            mask_later: false,
            future_items: 0,
            future_decay: half(),
            sampled_negatives: 0,
            sampled_weight: one_f64(),
            output_sample: 0,
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
        if self.sampled_negatives > 0
            && (self.sampled_weight.is_nan() || self.sampled_weight <= 0.0)
        {
            bail!(
                "--sampled-weight {} is not a weight: give a positive one, e.g. 1",
                self.sampled_weight
            );
        }
        if self.output_sample > 0 && self.sampled_negatives > 0 {
            bail!("--output-sample and --sampled-negatives do not go together; pick one");
        }
        Ok(())
    }

    /// Whether a run trains toward anything but its next item over every item.
    pub fn any(&self) -> bool {
        self.mask_seen
            || self.mask_later
            || self.future_items > 1
            || self.sampled_negatives > 0
            || self.output_sample > 0
    }
}
