//! The training loop: a run from its corpus to checkpoints, the loss curve, validation and
//! the best epoch, resumable to the same curve.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use kvrec_core::rng::Rng;
use kvrec_llm::llama_file::LlamaShape;
use rayon::prelude::*;
use serde::Serialize;

use super::average::WeightAverage;
use super::base::Base;
use super::examples::{row_examples, Batch};
use super::lora::Lora;
use super::model::Transformer;
use super::optimizer::AdamW;
use super::schedule::{batch_indices, bucketed_batch_indices, learning_rate};
use super::{
    batch, checkpoint, item_features, plot, sequence, targets, threads, Example, TextTokenizer,
    TrainConfig,
};
use crate::protocol::{Instance, Sequence};
use crate::training_data::TrainingRow;

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub steps: usize,
    pub examples: usize,
    pub tokens_seen: usize,
    pub final_loss: f64,
    pub seconds: f64,
    pub parameters: usize,
    /// Steps of one epoch.
    pub steps_per_epoch: usize,
    /// The best validated epoch and its HR@1, over the whole run (resumed calls included).
    pub best: Option<(usize, f64)>,
    /// Why the loop ended: `epochs`, `patience`, `steps` (a step limit) or `deadline`.
    pub stopped_by: &'static str,
}

/// Where a call of [`run_within`] stops besides its configured epochs and patience: after
/// `steps` steps of this call (tests interrupt runs so), or before an epoch that would end
/// after `deadline` (`fit --budget`), checkpointed so that `--resume` continues.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub steps: Option<usize>,
    pub deadline: Option<Instant>,
}

/// Every step allocates and frees tensors of tens of MB; by default glibc returns each to the
/// kernel and the next step page-faults it back in, which cost about a third of the step time
/// here (measured with the equivalent MALLOC_* environment variables: 710 → 980 tokens/s).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before training starts.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 1 << 30);
    }
}

/// What a run learns from: InstructMK rows, or users' sequences (the sequence stage) with the
/// validation requests of their held-out last items.
#[derive(Clone, Copy)]
pub enum Corpus<'a> {
    Rows(&'a [TrainingRow]),
    Sequences {
        sequences: &'a [Sequence],
        valid: &'a [Instance],
    },
}

/// Runs (or resumes) training into `out`; stops after `stop_after` steps of this call when
/// given (tests use it to interrupt a run). With `config.base` set, the base is frozen and
/// only LoRA adapters train; otherwise the whole model trains from scratch.
pub fn run(
    config: &TrainConfig,
    rows: &[TrainingRow],
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    progress: bool,
) -> Result<RunSummary> {
    run_corpus(
        config,
        Corpus::Rows(rows),
        out,
        resume,
        stop_after,
        progress,
    )
}

/// The item ids a sequence run trained on (a JSON array), which export writes as the model's
/// catalog.
pub const CATALOG_FILE: &str = "items.json";

/// Copies the item id map that `data --recipe` wrote beside the sequences into the run
/// folder `out`, where export finds it; sequence files from different data folders must
/// share one map.
pub fn carry_item_ids(data: &[std::path::PathBuf], out: &Path) -> Result<()> {
    let mut found: Option<(std::path::PathBuf, String)> = None;
    for path in data {
        let ids = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(crate::recipe::ITEM_IDS_FILE);
        if !ids.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&ids)?;
        match &found {
            Some((first, seen)) if seen != &text => bail!(
                "{} and {} map item ids differently; train on sequences of one data folder",
                first.display(),
                ids.display()
            ),
            _ => found = Some((ids, text)),
        }
    }
    if let Some((_, text)) = found {
        std::fs::create_dir_all(out)?;
        crate::io::write_atomically(&out.join(crate::recipe::ITEM_IDS_FILE), text.as_bytes())?;
    }
    Ok(())
}

/// [`run`] on any [`Corpus`].
pub fn run_corpus(
    config: &TrainConfig,
    corpus: Corpus,
    out: &Path,
    resume: bool,
    stop_after: Option<usize>,
    progress: bool,
) -> Result<RunSummary> {
    let limits = Limits {
        steps: stop_after,
        deadline: None,
    };
    run_within(config, corpus, out, resume, limits, progress)
}

/// [`run_corpus`] within [`Limits`]: set up the model, the data and the optimizer, then step
/// until the epochs, the patience, the step limit or the deadline end the run.
pub fn run_within(
    config: &TrainConfig,
    corpus: Corpus,
    out: &Path,
    resume: bool,
    limits: Limits,
    progress: bool,
) -> Result<RunSummary> {
    config.check()?;
    keep_freed_memory();
    std::fs::create_dir_all(out)?;
    let mut run = Run::set_up(config, corpus, out, resume, limits, progress)?;
    let mut stopped_by = if run.end < run.total {
        "steps"
    } else {
        "epochs"
    };
    let mut steps_done = run.weights.start_step;
    for step in run.weights.start_step..run.end {
        steps_done = step + 1;
        run.step(step)?;
        if let Some(reason) = run.after_step(step)? {
            stopped_by = reason;
            break;
        }
    }
    Ok(run.finish(steps_done, stopped_by))
}

/// A run under way: what it trains, on what, and its record so far.
struct Run<'a> {
    config: &'a TrainConfig,
    out: &'a Path,
    limits: Limits,
    model: Transformer,
    tokenizer: Box<dyn TextTokenizer>,
    pad: u32,
    data: Data,
    weights: Weights,
    records: Records,
    meter: Meter,
    parameters: usize,
    per_epoch: usize,
    total: usize,
    /// The step this call stops at (a step limit may end it before `total`).
    end: usize,
}

impl<'a> Run<'a> {
    fn set_up(
        config: &'a TrainConfig,
        corpus: Corpus<'a>,
        out: &'a Path,
        resume: bool,
        limits: Limits,
        progress: bool,
    ) -> Result<Run<'a>> {
        let resumed = resumed_checkpoint(config, out, resume)?;
        let (mut model, tokenizer) = model_and_tokenizer(config, corpus, out, resumed.as_ref())?;
        let data = Data::prepare(
            config,
            corpus,
            out,
            &mut model,
            tokenizer.as_ref(),
            progress,
        )?;
        let pad = tokenizer.eos()?;
        let weights = Weights::new(config, &model, resumed.as_ref())?;
        let per_epoch = data.examples.len().div_ceil(config.batch);
        let total = ((per_epoch as f64) * config.epochs).ceil().max(1.0) as usize;
        let parameters = write_run_json(out, config, &model, data.examples.len(), total)?;
        let start = weights.start_step;
        Ok(Run {
            records: Records::read(out, start)?,
            meter: Meter::new(progress, limits, total - start),
            end: limits.steps.map_or(total, |n| (start + n).min(total)),
            config,
            out,
            limits,
            model,
            tokenizer,
            pad,
            data,
            weights,
            parameters,
            per_epoch,
            total,
        })
    }

    /// Step `step`: a batch, its loss, the optimizer's update and the loss curve's row.
    fn step(&mut self, step: usize) -> Result<()> {
        let config = self.config;
        let data = &mut self.data;
        data.ready_for(config, self.tokenizer.as_ref(), step / self.per_epoch)?;
        let indices = if config.length_buckets {
            bucketed_batch_indices(&data.lengths, config.batch, config.seed, step)
        } else {
            batch_indices(data.examples.len(), config.batch, config.seed, step)
        };
        let picked: Vec<&Example> = indices.iter().map(|&i| &data.examples[i]).collect();
        let (grads, loss, tokens) =
            sharded_gradients(config, &self.model, data, &picked, self.pad, step)?;
        let lr = learning_rate(config, step, self.total);
        self.weights.step(&grads, lr)?;
        self.meter.stepped(tokens, loss);
        let epoch = (step + 1) as f64 / self.per_epoch as f64;
        self.records
            .curve
            .push(self.meter.curve_row(step + 1, epoch, lr));
        self.meter.show_step(epoch);
        Ok(())
    }

    /// After step `step`: the checkpoint, the epoch's validation and the best epoch, and
    /// whether the run stops here (`patience` or `deadline`).
    fn after_step(&mut self, step: usize) -> Result<Option<&'static str>> {
        let (config, done) = (self.config, step + 1);
        let epoch_end = done % self.per_epoch == 0 || done == self.total;
        let validating = !self.data.valid.is_empty() && epoch_end;
        // Past the deadline mid-epoch (a first epoch longer than the budget): what was learnt
        // is kept as a checkpoint that --resume continues.
        let out_of_time = self.limits.deadline.is_some_and(|d| Instant::now() >= d);
        if done % config.checkpoint_every == 0 || done == self.end || validating || out_of_time {
            let unvalidated = self.data.valid.is_empty();
            save(
                self.out,
                config,
                &self.weights,
                &self.records,
                done,
                unvalidated,
            )?;
        }
        // Validation requests come only with sequences, which always have item classes.
        if let Some(items) = self.data.items.as_ref().filter(|_| validating) {
            let tokenizer = self.tokenizer.as_ref();
            let scores = validate_epoch(
                config,
                &self.model,
                tokenizer,
                items,
                &self.data.valid,
                &mut self.weights,
            )?;
            let epoch = done.div_ceil(self.per_epoch);
            let bar = self.meter.bar.as_ref();
            self.records
                .validated(self.out, done, epoch, scores, &self.weights, bar)?;
            let patience = config.patience;
            if patience > 0
                && self
                    .records
                    .best
                    .is_some_and(|(e, _)| epoch >= e + patience)
            {
                return Ok(Some("patience"));
            }
        }
        let steps_here = done - self.weights.start_step;
        let next_misses = || {
            self.meter
                .next_epoch_misses(self.limits, steps_here, self.per_epoch)
        };
        if done < self.end && (out_of_time || (epoch_end && next_misses())) {
            return Ok(Some("deadline"));
        }
        Ok(None)
    }

    fn finish(mut self, steps: usize, stopped_by: &'static str) -> RunSummary {
        if let Some(bar) = self.meter.bar.take() {
            bar.finish();
        }
        RunSummary {
            steps,
            examples: self.data.examples.len(),
            tokens_seen: self.meter.tokens_seen,
            final_loss: self.meter.last_loss,
            seconds: self.meter.started.elapsed().as_secs_f64(),
            parameters: self.parameters,
            steps_per_epoch: self.per_epoch,
            best: self.records.best,
            stopped_by,
        }
    }
}

/// Writes `run.json`: the configuration, the model's shape and size, the examples and the
/// steps of the run; returns the count of trained parameters.
fn write_run_json(
    out: &Path,
    config: &TrainConfig,
    model: &Transformer,
    examples: usize,
    steps: usize,
) -> Result<usize> {
    let parameters = match &model.lora {
        Some(lora) => lora.parameter_count(),
        None => model.parameter_count(),
    };
    let run = serde_json::json!({
        "config": config,
        "shape": model.shape,
        "parameters": parameters,
        "examples": examples,
        "steps": steps,
    });
    std::fs::write(out.join("run.json"), serde_json::to_string_pretty(&run)?)?;
    Ok(parameters)
}

/// The checkpoint a resumed run continues from, when there is one and it was trained with
/// this configuration.
fn resumed_checkpoint(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
) -> Result<Option<(PathBuf, checkpoint::Saved)>> {
    if !resume {
        return Ok(None);
    }
    let resumed = checkpoint::latest(out)?;
    match &resumed {
        None => eprintln!("no checkpoint in {}: starting from scratch", out.display()),
        Some((_, saved)) if &saved.config != config => bail!(
            "{} was trained with another configuration; resume with the same options or use a new --out",
            out.display()
        ),
        Some(_) => {}
    }
    Ok(resumed)
}

/// The model a run trains and the tokenizer of its text: a frozen base with LoRA adapters, or
/// a model from scratch (fresh, resumed, or begun from another run's weights).
fn model_and_tokenizer(
    config: &TrainConfig,
    corpus: Corpus,
    out: &Path,
    resumed: Option<&(PathBuf, checkpoint::Saved)>,
) -> Result<(Transformer, Box<dyn TextTokenizer>)> {
    match (&config.base, &config.lora) {
        (Some(base), Some(spec)) => {
            let base = Base::read(base)?;
            let mut model = base.model()?;
            // Training text is tokenized by llama.cpp itself: exactly what serving will see.
            let tokenizer: Box<dyn TextTokenizer> = Box::new(
                kvrec_llm::Model::load(
                    "lora-base",
                    &base.path.to_string_lossy(),
                    &Default::default(),
                )
                .with_context(|| {
                    format!("llama.cpp could not load the base {}", base.path.display())
                })?,
            );
            let sites = model.lora_sites(spec)?;
            model.lora = Some(match resumed {
                Some((path, _)) => Lora::from_tensors(spec, &sites, &checkpoint::tensors(path)?)?,
                None => Lora::init(spec, &sites, config.seed)?,
            });
            Ok((model, tokenizer))
        }
        (None, None) => {
            let tokenizer =
                super::tokenizer::scratch_tokenizer(config, corpus, out, resumed.is_some())?;
            let shape = LlamaShape {
                n_vocab: tokenizer.get_vocab_size(true),
                ..config.shape()
            };
            let init = match (resumed, &config.init_from) {
                (None, Some(run)) => Some(
                    checkpoint::latest(run)?
                        .with_context(|| format!("{} holds no checkpoint", run.display()))?
                        .0,
                ),
                _ => None,
            };
            let model = match resumed.map(|(path, _)| path).or(init.as_ref()) {
                Some(path) => checkpoint::load_model(path, shape, config.tied)?.0,
                None => Transformer::init(shape, config.seed, config.tied)?,
            };
            Ok((model, Box::new(tokenizer)))
        }
        _ => bail!("LoRA needs both a base GGUF and adapter settings"),
    }
}

/// What the steps read: the examples (an epoch's windows, which --shuffle-ties reorders each
/// epoch), their lengths, and for the sequence stage the sequences, the item classes, the
/// catalog and the validation requests.
struct Data {
    sequences: Option<Vec<Sequence>>,
    valid: Vec<Instance>,
    catalog: Vec<u32>,
    items: Option<sequence::ItemClasses>,
    examples: Vec<Example>,
    /// Every epoch's windows have the same lengths (--shuffle-ties reorders within them).
    lengths: Vec<usize>,
    epoch: usize,
    window: usize,
}

impl Data {
    fn prepare(
        config: &TrainConfig,
        corpus: Corpus<'_>,
        out: &Path,
        model: &mut Transformer,
        tokenizer: &dyn TextTokenizer,
        progress: bool,
    ) -> Result<Data> {
        let context = config.context.min(model.shape.context);
        let window = config.sequence_window.min(context.saturating_sub(1));
        let (sequences, valid, catalog) = sequences_of(config, corpus, out)?;
        if sequences.is_some() {
            model.attention_span = (config.attention_span > 0).then_some(config.attention_span);
        }
        let examples = match (corpus, &sequences) {
            (Corpus::Rows(rows), _) => row_examples(config, rows, tokenizer, context, progress)?,
            (_, Some(sequences)) => sequence_examples(config, tokenizer, window, sequences, 0)?,
            (_, None) => unreachable!("a sequence corpus keeps its sequences"),
        };
        // After the examples, whose error names a template without the sequence layout.
        let items = match &sequences {
            Some(_) => Some(sequence::ItemClasses::new(
                tokenizer,
                &config.template,
                config.number_tokens as i64,
            )?),
            None => None,
        };
        if examples.is_empty() {
            bail!("no training rows");
        }
        attach_item_features(config, model, items.as_ref())?;
        Ok(Data {
            sequences,
            valid,
            catalog,
            items,
            lengths: examples.iter().map(|e| e.ids.len()).collect(),
            examples,
            epoch: 0,
            window,
        })
    }

    /// The examples of `epoch`: with --shuffle-ties each epoch orders every second's items
    /// anew; other runs keep the first epoch's.
    fn ready_for(
        &mut self,
        config: &TrainConfig,
        tokenizer: &dyn TextTokenizer,
        epoch: usize,
    ) -> Result<()> {
        if let Some(sequences) = self.sequences.as_ref().filter(|_| config.shuffle_ties) {
            if epoch != self.epoch {
                self.epoch = epoch;
                self.examples =
                    sequence_examples(config, tokenizer, self.window, sequences, epoch)?;
            }
        }
        Ok(())
    }
}

/// A sequence corpus's training sequences (the last item held out of each user validated on:
/// an even spread of at most `valid_users`), those validation requests, and its catalog as
/// item classes, written to [`CATALOG_FILE`]: what the exported model ranks in
/// `recommend_topk`. Rows have none.
fn sequences_of(config: &TrainConfig, corpus: Corpus<'_>, out: &Path) -> Result<SequenceParts> {
    match corpus {
        Corpus::Rows(_) if config.targets.any() => {
            bail!("--mask-seen, --mask-later, --future-items and --sampled-negatives shape the sequence stage's targets; pass train_sequences.jsonl with --sequence-window")
        }
        Corpus::Rows(_) if config.shuffle_ties => {
            bail!("--shuffle-ties orders training sequences; pass train_sequences.jsonl with --sequence-window")
        }
        Corpus::Rows(_) => Ok((None, Vec::new(), Vec::new())),
        Corpus::Sequences { sequences, valid } => {
            if config.sequence_window < 2 {
                bail!("the sequence stage needs windows of at least 2 items (--sequence-window)");
            }
            let catalog: std::collections::BTreeSet<i64> = sequences
                .iter()
                .flat_map(|s| s.items.iter().copied())
                .collect();
            crate::io::write_atomically(
                &out.join(CATALOG_FILE),
                serde_json::to_string(&catalog)?.as_bytes(),
            )?;
            let classes = catalog
                .iter()
                .filter_map(|&id| u32::try_from(id).ok())
                .collect();
            let valid = sequence::validation_sample(valid, config.valid_users);
            let sequences = if valid.is_empty() {
                sequences.to_vec()
            } else {
                sequence::hold_out_last(sequences, &valid)?
            };
            Ok((Some(sequences), valid, classes))
        }
    }
}

/// The training sequences, the validation requests and the catalog's item classes.
type SequenceParts = (Option<Vec<Sequence>>, Vec<Instance>, Vec<u32>);

/// An epoch's windows of `sequences`; with --shuffle-ties the items of each second in an
/// order seeded by the epoch, so a resumed run sees the same orders.
fn sequence_examples(
    config: &TrainConfig,
    tokenizer: &dyn TextTokenizer,
    window: usize,
    sequences: &[Sequence],
    epoch: usize,
) -> Result<Vec<Example>> {
    let shuffled;
    let sequences = if config.shuffle_ties {
        let seed = Rng::fork(config.seed ^ TIES_STREAM, epoch as u64).next_u64();
        shuffled = sequence::shuffle_ties(sequences, seed)?;
        &shuffled[..]
    } else {
        sequences
    };
    sequence::examples(sequences, tokenizer, &config.template, window)
}

/// Gives the model the item keys and text vectors the configuration names, where it can
/// take them (the sequence stage, from scratch) and has none yet (a resumed run's came with
/// its checkpoint).
fn attach_item_features(
    config: &TrainConfig,
    model: &mut Transformer,
    items: Option<&sequence::ItemClasses>,
) -> Result<()> {
    let inputs = [
        ("--item-keys", config.item_keys.as_deref()),
        ("--item-vectors", config.item_vectors.as_deref()),
    ];
    let Some((option, _)) = inputs.iter().find(|(_, path)| path.is_some()) else {
        return Ok(());
    };
    match items {
        _ if config.lora.is_some() => bail!(
            "{option} trains new embeddings, which a frozen LoRA base cannot; train from scratch"
        ),
        None => bail!(
            "{option} gives item embeddings to the sequence stage; pass train_sequences.jsonl with --sequence-window"
        ),
        Some(items) if !model.has_item_features() => item_features::attach(
            model,
            config.item_keys.as_deref(),
            config.item_vectors.as_deref(),
            items,
        ),
        Some(_) => Ok(()),
    }
}

/// What the optimizer updates and keeps: the trainable tensors, AdamW's moments and the
/// weight average (--ema), as the checkpoint left them when resumed.
struct Weights {
    names: Vec<String>,
    vars: Vec<Var>,
    optimizer: AdamW,
    average: Option<WeightAverage>,
    start_step: usize,
}

impl Weights {
    fn new(
        config: &TrainConfig,
        model: &Transformer,
        resumed: Option<&(PathBuf, checkpoint::Saved)>,
    ) -> Result<Weights> {
        let (names, vars) = trainable(model);
        let (optimizer, start_step) = match resumed {
            Some((path, saved)) => (
                checkpoint::optimizer(path, &names, saved.step, config.weight_decay)?,
                saved.step,
            ),
            None => (AdamW::new(&vars, config.weight_decay)?, 0),
        };
        let average = match (resumed, config.ema > 0.0) {
            (_, false) => None,
            (Some((path, _)), true) => Some(WeightAverage::from_checkpoint(
                config.ema,
                start_step,
                &names,
                &checkpoint::tensors(path)?,
            )?),
            (None, true) => Some(WeightAverage::new(config.ema, &vars)?),
        };
        Ok(Weights {
            names,
            vars,
            optimizer,
            average,
            start_step,
        })
    }

    /// One optimizer step along `grads` at rate `lr`.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.optimizer.step(&self.vars, grads, lr)?;
        if let Some(average) = self.average.as_mut() {
            average.update(&self.vars)?;
        }
        Ok(())
    }
}

/// The gradients of step `step`'s loss on the batch `picked`, its loss and its tokens. The
/// batch is cut into `config.shards` shards (0: [`threads::shards`]) whose passes run side by
/// side on the thread pool (see [`threads`]); each shard's loss is scaled by its share of the
/// batch's loss rows before its backward pass, so the summed gradients are the batch's mean.
fn sharded_gradients(
    config: &TrainConfig,
    model: &Transformer,
    data: &Data,
    picked: &[&Example],
    pad: u32,
    step: usize,
) -> Result<(GradStore, f64, usize)> {
    let shards: Vec<(&[&Example], Batch)> = shard_bounds(picked.len(), threads::shards(config))
        .into_iter()
        .map(|range| {
            let picked = &picked[range];
            Ok((picked, batch(picked, pad, config.answer_weight)?))
        })
        .collect::<Result<_>>()?;
    let rows: usize = shards.iter().map(|(_, b)| b.rows.elem_count()).sum();
    let tokens = shards.iter().map(|(_, b)| b.tokens).sum();
    let pass = |shard: usize, (picked, batch): &(&[&Example], Batch)| -> Result<(GradStore, f64)> {
        let loss = step_loss(config, model, data, picked, batch, step, shard)?;
        let share = batch.rows.elem_count() as f64 / rows.max(1) as f64;
        let loss = (loss * share)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        Ok((loss.backward()?, value))
    };
    let passes: Vec<Result<(GradStore, f64)>> = shards
        .par_iter()
        .enumerate()
        .map(|(i, s)| pass(i, s))
        .collect();
    let mut total = (GradStore::default(), 0.0);
    for pass in passes {
        let (grads, value) = pass?;
        total.0.extend(grads)?;
        total.1 += value;
    }
    let (grads, loss) = total;
    if !loss.is_finite() {
        bail!("the loss diverged at step {step} ({loss}); lower --lr");
    }
    Ok((grads, loss, tokens))
}

/// `n` examples cut into `shards` contiguous ranges of sizes differing by at most one.
fn shard_bounds(n: usize, shards: usize) -> Vec<std::ops::Range<usize>> {
    let shards = shards.clamp(1, n.max(1));
    (0..shards)
        .map(|s| s * n / shards..(s + 1) * n / shards)
        .collect()
}

/// One step's loss on the batch of examples `picked`: the sequence stage's over the item
/// classes (with its target options, and over a sample of them with --output-sample), or the
/// rows' over every token.
fn step_loss(
    config: &TrainConfig,
    model: &Transformer,
    data: &Data,
    picked: &[&Example],
    batch: &Batch,
    step: usize,
    shard: usize,
) -> Result<Tensor> {
    let Some(items) = &data.items else {
        return Ok(model.loss(&batch.ids, &batch.rows, &batch.targets)?);
    };
    // Shard 0 draws what an unsharded step draws.
    let stream = |base: u64| Rng::fork(config.seed ^ base ^ shard_stream(shard), step as u64);
    let mut masks = stream(DROPOUT_STREAM);
    let hidden = model.hidden_with(&batch.ids, Some((config.dropout as f32, &mut masks)))?;
    let draw = targets::NegativeDraw {
        catalog: &data.catalog,
        rng: stream(NEGATIVES_STREAM),
    };
    let goal = targets::goal(
        picked,
        &items.classes(&batch.targets)?.to_vec1::<u32>()?,
        items.tokens.len(),
        &config.targets,
        Some(draw),
    )?;
    Ok(match config.targets.output_sample {
        0 => model.loss_over(&hidden, &batch.rows, &items.tensor, &goal)?,
        k => {
            let mut rng = stream(OUTPUT_SAMPLE_STREAM);
            let (goal, columns) = goal.over_sample(&data.catalog, k, &mut rng)?;
            let index = Tensor::new(columns.as_slice(), &Device::Cpu)?;
            let tokens = items.tensor.index_select(&index, 0)?;
            model.loss_over(&hidden, &batch.rows, &tokens, &goal)?
        }
    })
}

/// Writes the checkpoint after `step`, and the loss curve and its picture.
fn save(
    out: &Path,
    config: &TrainConfig,
    weights: &Weights,
    records: &Records,
    step: usize,
    unvalidated: bool,
) -> Result<()> {
    let average = weights.average.as_ref();
    checkpoint::save(
        out,
        &weights.names,
        &weights.vars,
        &weights.optimizer,
        average,
        config,
        step,
    )?;
    if average.is_some() && unvalidated {
        // Nothing ranks the epochs: export takes the latest average.
        checkpoint::keep_as_best(out, &weights.names, average)?;
    }
    checkpoint::write_rows(
        &out.join(LOSS_FILE),
        "step,epoch,loss,lr,tokens_per_s",
        &records.curve,
    )?;
    let losses: Vec<f64> = records
        .curve
        .iter()
        .filter_map(|row| row.split(',').nth(2)?.parse().ok())
        .collect();
    plot::loss_png(&losses, &out.join("loss.png"))
}

/// HR@1 and NDCG@3 of the model on the validation requests, and with --ema those of the
/// averaged weights, the raw ones' beside them: the two show what averaging adds.
fn validate_epoch(
    config: &TrainConfig,
    model: &Transformer,
    tokenizer: &dyn TextTokenizer,
    items: &sequence::ItemClasses,
    valid: &[Instance],
    weights: &mut Weights,
) -> Result<Validated> {
    let validate =
        |model: &Transformer| sequence::validate(model, tokenizer, &config.template, items, valid);
    match weights.average.as_mut() {
        Some(average) => {
            let raw = validate(model)?;
            average.swap(&weights.vars)?;
            let averaged = validate(model);
            // Back to the raw weights before anything can fail: training goes on.
            average.swap(&weights.vars)?;
            Ok((averaged?, Some(raw)))
        }
        None => Ok((validate(model)?, None)),
    }
}

/// An epoch's validation: HR@1 and NDCG@3 of the weights kept, and of the raw weights when
/// an average is kept.
type Validated = ((f64, f64), Option<(f64, f64)>);

/// The loss curve of the run.
const LOSS_FILE: &str = "loss.csv";
/// The validation rows of the run.
const VALID_FILE: &str = "valid.csv";

/// The run's record: the loss curve, the validation rows and the best epoch, read back up to
/// the step a resumed run continues from.
struct Records {
    curve: Vec<String>,
    validation: Vec<String>,
    best: Option<(usize, f64)>,
}

impl Records {
    fn read(out: &Path, start_step: usize) -> Result<Records> {
        let validation = checkpoint::loss_rows_before(&out.join(VALID_FILE), start_step)?;
        let best = validation
            .iter()
            .filter_map(|row| checkpoint::epoch_hr1(row))
            .fold(None, |best: Option<(usize, f64)>, (e, h)| {
                if best.is_none_or(|(_, b)| h > b) {
                    Some((e, h))
                } else {
                    best
                }
            });
        Ok(Records {
            curve: checkpoint::loss_rows_before(&out.join(LOSS_FILE), start_step)?,
            validation,
            best,
        })
    }

    /// Records epoch `epoch`'s validation, keeps its weights when they are the best so far,
    /// and says so on the progress bar.
    fn validated(
        &mut self,
        out: &Path,
        step: usize,
        epoch: usize,
        ((hr1, ndcg3), raw): Validated,
        weights: &Weights,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<()> {
        if hr1 > self.best.map_or(f64::NEG_INFINITY, |(_, h)| h) {
            self.best = Some((epoch, hr1));
            checkpoint::keep_as_best(out, &weights.names, weights.average.as_ref())?;
        }
        let mut row = format!("{step},{epoch},{hr1:.4},{ndcg3:.4}");
        let mut header = "step,epoch,hr1,ndcg3".to_string();
        if let Some((raw_hr1, raw_ndcg3)) = raw {
            row.push_str(&format!(",{raw_hr1:.4},{raw_ndcg3:.4}"));
            header.push_str(",raw_hr1,raw_ndcg3");
        }
        self.validation.push(row);
        checkpoint::write_rows(&out.join(VALID_FILE), &header, &self.validation)?;
        if let Some(bar) = bar {
            let raw = raw.map_or(String::new(), |(h, n)| {
                format!(" (raw weights {h:.4}, {n:.4})")
            });
            bar.println(format!(
                "epoch {epoch}: validation HR@1 {hr1:.4}, NDCG@3 {ndcg3:.4}{raw}"
            ));
        }
        Ok(())
    }
}

/// The run's pace: tokens, the last loss, the clock, and the progress bar (over the steps,
/// or with a deadline over the budget's time, which ends training before the steps do).
struct Meter {
    bar: Option<indicatif::ProgressBar>,
    budget: Option<u64>,
    started: Instant,
    tokens_seen: usize,
    last_loss: f64,
}

impl Meter {
    fn new(progress: bool, limits: Limits, steps: usize) -> Meter {
        let budget = limits
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()).as_secs().max(1));
        let bar = progress.then(|| match budget {
            Some(seconds) => budget_bar(seconds),
            None => crate::eval::progress(steps, "training"),
        });
        Meter {
            bar,
            budget,
            started: Instant::now(),
            tokens_seen: 0,
            last_loss: f64::NAN,
        }
    }

    fn stepped(&mut self, tokens: usize, loss: f64) {
        self.tokens_seen += tokens;
        self.last_loss = loss;
    }

    fn rate(&self) -> f64 {
        self.tokens_seen as f64 / self.started.elapsed().as_secs_f64()
    }

    /// The loss curve's row of `step`.
    fn curve_row(&self, step: usize, epoch: f64, lr: f64) -> String {
        let (loss, rate) = (self.last_loss, self.rate());
        format!("{step},{epoch:.4},{loss:.5},{lr:.6},{rate:.0}")
    }

    fn show_step(&self, epoch: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "training: epoch {epoch:.2}, loss {:.4}, {:.0} tok/s",
                self.last_loss,
                self.rate()
            ));
            match self.budget {
                Some(_) => bar.set_position(self.started.elapsed().as_secs()),
                None => bar.inc(1),
            }
        }
    }

    /// Whether the next epoch would end past the deadline: the epochs of this call so far,
    /// `steps` steps of `per_epoch`, on average predict it.
    fn next_epoch_misses(&self, limits: Limits, steps: usize, per_epoch: usize) -> bool {
        let Some(deadline) = limits.deadline else {
            return false;
        };
        let epochs_here = steps as f64 / per_epoch as f64;
        let next = self.started.elapsed().as_secs_f64() / epochs_here;
        Instant::now() + std::time::Duration::from_secs_f64(next) > deadline
    }
}

/// A progress bar over `seconds` of budget.
fn budget_bar(seconds: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(seconds);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:30} {elapsed_precise} of a {len} s budget",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Seeds each epoch's order of the items within a second (`--shuffle-ties`).
const TIES_STREAM: u64 = 0x7469_6573_0000_0000;

/// What a shard mixes into its random streams; shard 0 none, so that a run of one shard draws
/// as runs did before batches were sharded.
fn shard_stream(shard: usize) -> u64 {
    (shard as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Seeds the dropout masks of each step (with the run's seed), so a resumed run repeats them.
const DROPOUT_STREAM: u64 = 0x6472_6f70_6f75_7400;
/// `--sampled-negatives`' draws, one stream per step (a resumed run draws the same).
const NEGATIVES_STREAM: u64 = 0x6e65_6761_7469_7600;
/// `--output-sample`'s draws, one stream per step.
const OUTPUT_SAMPLE_STREAM: u64 = 0x6f75_7470_7574_0000;

/// The tensors a run trains, by checkpoint name: the adapters under LoRA, else every weight.
fn trainable(model: &Transformer) -> (Vec<String>, Vec<Var>) {
    match &model.lora {
        Some(lora) => lora.tensors().into_iter().unzip(),
        None => (model.names.clone(), model.vars.clone()),
    }
}
