use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use kvrec_core::template::{CandidateIdPosition, TemplateSpec};
use kvrec_finetune::io;
use kvrec_finetune::protocol::{Instance, Sequence};
use kvrec_finetune::train::{self, lora::LoraSpec, TargetOptions, TrainConfig};
use kvrec_finetune::training_data::TrainingRow;
use serde_json::Value;

/// Where candidate ids go in the prompt.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CandidateId {
    /// Before the title (the paper's layout).
    First,
    /// After the candidate's keys.
    Last,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Training rows: one or more train-<variant>.jsonl from `data` (the sequence stage:
    /// train_sequences.jsonl).
    #[arg(long, value_delimiter = ',')]
    data: Vec<PathBuf>,
    /// A training configuration (TOML, as `fit` writes it to train.toml); the flags given
    /// beside it override its options.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder: tokenizer.json, checkpoint, loss.csv, run.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the checkpoint in --out (same options required).
    #[arg(long)]
    resume: bool,
    /// Also write the GGUF here when training ends.
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Stop after this many steps of this call (checkpointed; continue with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = TrainConfig::default().vocab_size)]
    vocab: usize,
    #[arg(long, default_value_t = TrainConfig::default().d_model)]
    d_model: usize,
    #[arg(long, default_value_t = TrainConfig::default().layers)]
    layers: usize,
    #[arg(long, default_value_t = TrainConfig::default().heads)]
    heads: usize,
    #[arg(long, default_value_t = TrainConfig::default().ff)]
    ff: usize,
    #[arg(long, default_value_t = TrainConfig::default().context)]
    context: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: f64,
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = TrainConfig::default().warmup_steps)]
    warmup: usize,
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Answer items that carry the loss (0 = all; 1 = the first id, what scoring reads).
    #[arg(long, default_value_t = TrainConfig::default().loss_items)]
    loss_items: usize,
    /// Separate output head instead of the one tied to the token embedding.
    #[arg(long)]
    untied: bool,
    /// The template spec (JSON, as `kvrec_template()` prints it) the model learns and
    /// carries; default: the InstructMK template. The two options below override it.
    #[arg(long)]
    template: Option<PathBuf>,
    /// History items in the prompt (default: the template's).
    #[arg(long)]
    max_history: Option<usize>,
    /// Where candidate ids go in the prompt (default: the template's).
    #[arg(long, value_enum)]
    candidate_id: Option<CandidateId>,
    /// Make every number up to N one token (from scratch only), e.g. the largest item id:
    /// an item is then one token wherever it appears, as in a sequential recommender.
    #[arg(long, default_value_t = TrainConfig::default().number_tokens)]
    number_tokens: usize,
    /// Also train on predicting each history id from the ones before it (needs a
    /// template with `history_id_label`): next-item prediction over the whole history.
    #[arg(long)]
    history_loss: bool,
    /// Count each answer token this many times in the loss (see --history-loss).
    #[arg(long, default_value_t = TrainConfig::default().answer_weight)]
    answer_weight: usize,
    /// Start from this run's latest weights and tokenizer (same shape options).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Fine-tune this pre-trained llama-architecture GGUF with LoRA instead of training
    /// from scratch (the shape options are then read from the file).
    #[arg(long)]
    base: Option<PathBuf>,
    #[arg(long, default_value_t = LoraSpec::default().rank)]
    lora_rank: usize,
    #[arg(long, default_value_t = LoraSpec::default().alpha)]
    lora_alpha: f64,
    /// Projections that get adapters: q, k, v, o, gate, up, down (default q,v).
    #[arg(long, value_delimiter = ',')]
    lora_targets: Vec<String>,
    /// Layers that get adapters (default: all); the top layers alone train fastest.
    #[arg(long, value_delimiter = ',')]
    lora_layers: Vec<usize>,
    /// Order the answer's items after the positive by this candidate key (ascending;
    /// -KEY for descending), e.g. co_watch_rank.
    #[arg(long)]
    order_rest_by: Option<String>,
    /// Sequence stage: --data is train_sequences.jsonl, trained as next-item prediction at
    /// every position in windows of this many items, softmax over every item (needs a
    /// template with layout "sequence" and --number-tokens ≥ the largest item id).
    #[arg(long, default_value_t = TrainConfig::default().sequence_window)]
    sequence_window: usize,
    /// Sequence stage: each target attends to only its last N items (and the BOS), what a
    /// served prompt of N history items shows the model; 0 = the whole window.
    #[arg(long, default_value_t = TrainConfig::default().attention_span)]
    attention_span: usize,
    /// Dropout on embeddings and sublayer outputs (sequence stage).
    #[arg(long, default_value_t = TrainConfig::default().dropout)]
    dropout: f64,
    /// Sequence stage: train.jsonl of the same `data` run; each user's last training item
    /// is held out and ranked every epoch, and export takes the best epoch.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Sequence stage: validate on at most this many users' last items (an even spread);
    /// the other users' last items are trained on (0: validate on every user).
    #[arg(long, default_value_t = TrainConfig::default().valid_users)]
    valid_users: usize,
    /// Sequence stage: stop after this many epochs without a better validation HR@1.
    #[arg(long, default_value_t = TrainConfig::default().patience)]
    patience: usize,
    /// Validate and export an exponential moving average of the weights with this decay per
    /// step (e.g. 0.998: about the last 500 steps); 0 keeps the raw weights.
    #[arg(long, default_value_t = TrainConfig::default().ema)]
    ema: f64,
    /// Sequence stage: each epoch, put the items rated in the same second in a new random
    /// order (needs the times `data` writes into train_sequences.jsonl).
    #[arg(long)]
    shuffle_ties: bool,
    /// Sequence stage: the item_keys.jsonl `data` writes; each genre and decade gets an
    /// embedding shared by its items, added to theirs (folded into the GGUF on export).
    #[arg(long)]
    item_keys: Option<PathBuf>,
    /// Sequence stage: the item_vectors.jsonl `data --item-text-model` writes; the model
    /// learns a projection of each item's text vector into its embedding (folded on export).
    #[arg(long)]
    item_vectors: Option<PathBuf>,
    /// Sequence stage: leave the items a user rated before each target out of that target's
    /// softmax (a request's candidates are never items the user rated).
    #[arg(long)]
    mask_seen: bool,
    /// Sequence stage: also leave out of each target's softmax the items its user rates after
    /// it, but the --future-items targets (a request's negatives are items never rated).
    #[arg(long)]
    mask_later: bool,
    /// Sequence stage: train each position toward its next N items, the j-th after the next
    /// weighted --future-decay^j (0 or 1: the next item only).
    #[arg(long, default_value_t = TargetOptions::default().future_items)]
    future_items: usize,
    /// Sequence stage: the weight of each further item of --future-items.
    #[arg(long, default_value_t = TargetOptions::default().future_decay)]
    future_decay: f64,
    /// Sequence stage: also rank each next item among N items drawn uniformly from the
    /// catalog items its user never rated, as a request's candidates are (0: off; the
    /// protocol has 9).
    #[arg(long, default_value_t = TargetOptions::default().sampled_negatives)]
    sampled_negatives: usize,
    /// Batch examples of about one length together: less padding, the same examples an
    /// epoch (most useful where sequence lengths vary a lot).
    #[arg(long)]
    length_buckets: bool,
    /// Split each batch into N shards trained side by side on the thread pool, their
    /// gradients summed: the batch's update on N cores (0: one per thread, at most one per 8
    /// examples; 1: one pass over the batch).
    #[arg(long, default_value_t = TrainConfig::default().shards)]
    shards: usize,
    /// Sequence stage: the weight of the --sampled-negatives term beside the full softmax.
    #[arg(long, default_value_t = TargetOptions::default().sampled_weight)]
    sampled_weight: f64,
    /// Sequence stage: each step's softmax over its targets and N items drawn uniformly from
    /// the catalog, corrected for the draw, instead of over every item (0: every item).
    #[arg(long, default_value_t = TargetOptions::default().output_sample)]
    output_sample: usize,
}

impl TrainArgs {
    fn template(&self) -> Result<TemplateSpec> {
        let mut template = match &self.template {
            Some(path) => TemplateSpec::from_json(&serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )?)
            .with_context(|| format!("the template in {}", path.display()))?,
            None => TemplateSpec::default(),
        };
        if let Some(max_history) = self.max_history {
            template.max_history = max_history;
        }
        if let Some(position) = self.candidate_id {
            template.candidate_id = match position {
                CandidateId::First => CandidateIdPosition::First,
                CandidateId::Last => CandidateIdPosition::Last,
            };
        }
        Ok(template)
    }

    /// The run's configuration: `--config`'s file with the flags given on the command line
    /// set over it, or the flags alone.
    fn config(&self, given: &ArgMatches) -> Result<TrainConfig> {
        let flags = self.flag_config()?;
        let config = match &self.config {
            None => flags,
            Some(file) => {
                let mut merged = serde_json::to_value(TrainConfig::default().overlay_file(file)?)?;
                let flags = serde_json::to_value(&flags)?;
                // The struct's own argument group is among the ids; only arguments set options.
                let group = <TrainArgs as Args>::group_id();
                let mut options: Vec<String> = given
                    .ids()
                    .filter(|&id| Some(id) != group.as_ref())
                    .filter(|id| given.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                    .filter_map(|id| option_of(id.as_str()))
                    .collect();
                // A whole option (--template) before its parts (--max-history).
                options.sort_by_key(String::len);
                for pointer in options {
                    set_pointer(&mut merged, &flags, &pointer)?;
                }
                serde_json::from_value(merged)?
            }
        };
        if config.data.is_empty() {
            bail!("no training data: pass --data <train_sequences.jsonl> or set data in --config");
        }
        config.check()?;
        Ok(config)
    }

    /// The configuration the flags alone give (their defaults where not given).
    fn flag_config(&self) -> Result<TrainConfig> {
        let lora = self.base.as_ref().map(|_| LoraSpec {
            rank: self.lora_rank,
            alpha: self.lora_alpha,
            targets: if self.lora_targets.is_empty() {
                LoraSpec::default().targets
            } else {
                self.lora_targets.clone()
            },
            layers: self.lora_layers.clone(),
        });
        let targets = TargetOptions {
            mask_seen: self.mask_seen,
            mask_later: self.mask_later,
            future_items: self.future_items,
            future_decay: self.future_decay,
            sampled_negatives: self.sampled_negatives,
            sampled_weight: self.sampled_weight,
            output_sample: self.output_sample,
        };
        Ok(TrainConfig {
            data: self.data.clone(),
            seed: self.seed,
            vocab_size: self.vocab,
            d_model: self.d_model,
            layers: self.layers,
            heads: self.heads,
            ff: self.ff,
            context: self.context,
            batch: self.batch,
            epochs: self.epochs,
            lr: self.lr,
            warmup_steps: self.warmup,
            loss_items: self.loss_items,
            tied: !self.untied,
            checkpoint_every: self.checkpoint_every,
            template: self.template()?,
            number_tokens: self.number_tokens,
            history_loss: self.history_loss,
            answer_weight: self.answer_weight,
            init_from: self.init_from.clone(),
            lora,
            base: self.base.clone(),
            order_rest_by: self.order_rest_by.clone(),
            sequence_window: self.sequence_window,
            attention_span: self.attention_span,
            dropout: self.dropout,
            valid: self.valid.clone(),
            valid_users: self.valid_users,
            patience: self.patience,
            ema: self.ema,
            shuffle_ties: self.shuffle_ties,
            item_keys: self.item_keys.clone(),
            item_vectors: self.item_vectors.clone(),
            length_buckets: self.length_buckets,
            shards: self.shards,
            targets,
            ..TrainConfig::default()
        })
    }

    pub fn run(self, given: &ArgMatches) -> Result<()> {
        let config = self.config(given)?;
        let summary = if config.sequence_window > 0 {
            let mut sequences: Vec<Sequence> = Vec::new();
            for path in &config.data {
                sequences.extend(io::read_jsonl::<Sequence>(path)?);
            }
            let valid: Vec<Instance> = match &config.valid {
                Some(path) => io::read_jsonl(path)?,
                None => Vec::new(),
            };
            train::carry_item_ids(&config.data, &self.out)?;
            let corpus = train::Corpus::Sequences {
                sequences: &sequences,
                valid: &valid,
            };
            train::run_corpus(
                &config,
                corpus,
                &self.out,
                self.resume,
                self.stop_after,
                true,
            )?
        } else {
            let mut rows: Vec<TrainingRow> = Vec::new();
            for path in &config.data {
                rows.extend(io::read_jsonl::<TrainingRow>(path)?);
            }
            train::run(
                &config,
                &rows,
                &self.out,
                self.resume,
                self.stop_after,
                true,
            )?
        };
        eprintln!("{}", serde_json::to_string_pretty(&summary)?);
        if let Some(path) = &self.gguf {
            train::export::export(&self.out, path, GgmlDType::F16, "kvrec")?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}

/// The option of [`TrainConfig`] a flag sets, as a JSON pointer into its serialized form;
/// `None` for the flags that steer the call rather than the run.
fn option_of(flag: &str) -> Option<String> {
    Some(match flag {
        "out" | "resume" | "gguf" | "stop_after" | "config" => return None,
        "vocab" => "/vocab_size".into(),
        "warmup" => "/warmup_steps".into(),
        "untied" => "/tied".into(),
        "max_history" => "/template/max_history".into(),
        "candidate_id" => "/template/candidate_id".into(),
        lora if lora.starts_with("lora_") => format!("/lora/{}", &lora["lora_".len()..]),
        other => format!("/{other}"),
    })
}

/// Copies the option at `pointer` from `flags` into `config` (both serialized configs).
fn set_pointer(config: &mut Value, flags: &Value, pointer: &str) -> Result<()> {
    let value = flags
        .pointer(pointer)
        .with_context(|| format!("the flag for {pointer} needs --base (LoRA options)"))?
        .clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if parent.starts_with("/lora") && config.pointer(parent).is_none_or(Value::is_null) {
        // A LoRA option over a file without LoRA: the flags' whole adapter settings.
        config["lora"] = flags["lora"].clone();
    }
    match config.pointer_mut(parent).and_then(Value::as_object_mut) {
        Some(object) => {
            object.insert(key.to_string(), value);
            Ok(())
        }
        None => bail!("the configuration has no {parent} for the flag of {pointer}"),
    }
}

/// The GGUF types an export writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dtype {
    /// Half the size of f32.
    F16,
    F32,
    /// 8-bit blocks (LoRA merges: the merged matrices).
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    run: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Dtype::F16)]
    dtype: Dtype,
    #[arg(long, default_value = "kvrec")]
    name: String,
    /// LoRA runs: also write the adapters alone as a llama.cpp LoRA GGUF here.
    #[arg(long)]
    adapter: Option<PathBuf>,
}

impl ExportArgs {
    pub fn run(self) -> Result<()> {
        let dtype = match self.dtype {
            Dtype::F16 => GgmlDType::F16,
            Dtype::F32 => GgmlDType::F32,
            Dtype::Q8_0 => GgmlDType::Q8_0,
        };
        let shape = train::export::export(&self.run, &self.out, dtype, &self.name)?;
        eprintln!("wrote {} ({shape:?})", self.out.display());
        if let Some(path) = &self.adapter {
            train::export::export_adapter(&self.run, path)?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}
