//! The training loop: a run from its corpus to checkpoints, the loss curve, validation and
//! the best epoch, resumable to the same curve.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use kvrec_core::rng::Rng;
use kvrec_llm::llama_file::LlamaShape;
use serde::Serialize;

use super::average::WeightAverage;
use super::base::Base;
use super::examples::row_examples;
use super::lora::Lora;
use super::model::Transformer;
use super::optimizer::AdamW;
use super::schedule::{batch_indices, bucketed_batch_indices, learning_rate};
use super::{
    batch, checkpoint, item_keys, plot, sequence, targets, Example, TextTokenizer, TrainConfig,
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

/// [`run_corpus`] within [`Limits`].
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
    let resumed = if resume {
        checkpoint::latest(out)?
    } else {
        None
    };
    if resume && resumed.is_none() {
        eprintln!("no checkpoint in {}: starting from scratch", out.display());
    }
    if let Some((_, saved)) = &resumed {
        if &saved.config != config {
            bail!(
                "{} was trained with another configuration; resume with the same options or use a new --out",
                out.display()
            );
        }
    }
    let (mut model, tokenizer) = match (&config.base, &config.lora) {
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
            model.lora = Some(match &resumed {
                Some((path, _)) => {
                    Lora::from_tensors(spec, &model.lora_sites(spec)?, &checkpoint::tensors(path)?)?
                }
                None => Lora::init(spec, &model.lora_sites(spec)?, config.seed)?,
            });
            (model, tokenizer)
        }
        (None, None) => {
            let tokenizer =
                super::tokenizer::scratch_tokenizer(config, corpus, out, resumed.is_some())?;
            let shape = LlamaShape {
                n_vocab: tokenizer.get_vocab_size(true),
                ..config.shape()
            };
            let init = match (&resumed, &config.init_from) {
                (None, Some(run)) => Some(
                    checkpoint::latest(run)?
                        .with_context(|| format!("{} holds no checkpoint", run.display()))?
                        .0,
                ),
                _ => None,
            };
            let model = match resumed.as_ref().map(|(path, _)| path).or(init.as_ref()) {
                Some(path) => checkpoint::load_model(path, shape, config.tied)?.0,
                None => Transformer::init(shape, config.seed, config.tied)?,
            };
            (model, Box::new(tokenizer) as Box<dyn TextTokenizer>)
        }
        _ => bail!("LoRA needs both a base GGUF and adapter settings"),
    };
    let context = config.context.min(model.shape.context);
    let window = config.sequence_window.min(context.saturating_sub(1));
    let mut catalog_classes: Vec<u32> = Vec::new();
    let (sequences, valid) = match corpus {
        Corpus::Rows(_) if config.targets.any() => {
            bail!("--mask-seen, --mask-later, --future-items and --sampled-negatives shape the sequence stage's targets; pass train_sequences.jsonl with --sequence-window")
        }
        Corpus::Rows(_) if config.shuffle_ties => {
            bail!("--shuffle-ties orders training sequences; pass train_sequences.jsonl with --sequence-window")
        }
        Corpus::Rows(_) => (None, &[][..]),
        Corpus::Sequences { sequences, valid } => {
            if config.sequence_window < 2 {
                bail!("the sequence stage needs windows of at least 2 items (--sequence-window)");
            }
            // The catalog the exported model ranks in `recommend_topk`: every item trained on.
            let catalog: std::collections::BTreeSet<i64> = sequences
                .iter()
                .flat_map(|s| s.items.iter().copied())
                .collect();
            crate::io::write_atomically(
                &out.join(CATALOG_FILE),
                serde_json::to_string(&catalog)?.as_bytes(),
            )?;
            catalog_classes = catalog
                .iter()
                .filter_map(|&id| u32::try_from(id).ok())
                .collect();
            let sequences = if valid.is_empty() {
                sequences.to_vec()
            } else {
                sequence::hold_out_last(sequences, valid)?
            };
            model.attention_span = (config.attention_span > 0).then_some(config.attention_span);
            (Some(sequences), valid)
        }
    };
    // An epoch's windows: with --shuffle-ties each epoch orders every second's items anew
    // (seeded by the epoch, so a resumed run sees the same orders); the windows, and so the
    // steps of an epoch, stay the same.
    let sequence_examples = |sequences: &[Sequence], epoch: usize| -> Result<Vec<Example>> {
        let shuffled;
        let sequences = if config.shuffle_ties {
            let seed = Rng::fork(config.seed ^ TIES_STREAM, epoch as u64).next_u64();
            shuffled = sequence::shuffle_ties(sequences, seed)?;
            &shuffled[..]
        } else {
            sequences
        };
        sequence::examples(sequences, tokenizer.as_ref(), &config.template, window)
    };
    let mut examples_epoch = 0;
    let mut examples = match (&corpus, &sequences) {
        (Corpus::Rows(rows), _) => {
            row_examples(config, rows, tokenizer.as_ref(), context, progress)?
        }
        (_, Some(sequences)) => sequence_examples(sequences, examples_epoch)?,
        (_, None) => unreachable!("a sequence corpus keeps its sequences"),
    };
    // After the examples, whose error names a template without the sequence layout.
    let items = match &sequences {
        Some(_) => Some(sequence::ItemClasses::new(
            tokenizer.as_ref(),
            &config.template,
            config.number_tokens as i64,
        )?),
        None => None,
    };
    if examples.is_empty() {
        bail!("no training rows");
    }
    let item_inputs = [
        ("--item-keys", config.item_keys.as_deref()),
        ("--item-vectors", config.item_vectors.as_deref()),
    ];
    if let Some((option, _)) = item_inputs.iter().find(|(_, path)| path.is_some()) {
        match &items {
            _ if config.lora.is_some() => bail!(
                "{option} trains new embeddings, which a frozen LoRA base cannot; train from scratch"
            ),
            None => bail!(
                "{option} gives item embeddings to the sequence stage; pass train_sequences.jsonl with --sequence-window"
            ),
            // A resumed run's keys and vectors came with its checkpoint.
            Some(items) if !model.has_item_keys() => item_keys::attach(
                &mut model,
                config.item_keys.as_deref(),
                config.item_vectors.as_deref(),
                items,
            )?,
            Some(_) => {}
        }
    }
    let pad = tokenizer.eos()?;
    // Every epoch's windows have the same lengths (--shuffle-ties reorders within them).
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let per_epoch = examples.len().div_ceil(config.batch);
    let total = ((per_epoch as f64) * config.epochs).ceil().max(1.0) as usize;
    let (names, vars) = trainable(&model);
    let (mut optimizer, start_step) = match &resumed {
        Some((path, saved)) => (
            checkpoint::optimizer(path, &names, saved.step, config.weight_decay)?,
            saved.step,
        ),
        None => (AdamW::new(&vars, config.weight_decay)?, 0),
    };
    let mut average = match (&resumed, config.ema > 0.0) {
        (_, false) => None,
        (Some((path, _)), true) => Some(WeightAverage::from_checkpoint(
            config.ema,
            start_step,
            &names,
            &checkpoint::tensors(path)?,
        )?),
        (None, true) => Some(WeightAverage::new(config.ema, &vars)?),
    };
    let parameters = match &model.lora {
        Some(lora) => lora.parameter_count(),
        None => model.parameter_count(),
    };
    std::fs::write(
        out.join("run.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "config": config,
            "shape": model.shape,
            "parameters": parameters,
            "examples": examples.len(),
            "steps": total,
        }))?,
    )?;
    let loss_csv = out.join("loss.csv");
    let mut curve = checkpoint::loss_rows_before(&loss_csv, start_step)?;
    let mut validation = checkpoint::loss_rows_before(&out.join("valid.csv"), start_step)?;
    let mut best = validation
        .iter()
        .filter_map(|row| checkpoint::epoch_hr1(row))
        .fold(None, |best: Option<(usize, f64)>, (e, h)| {
            if best.is_none_or(|(_, b)| h > b) {
                Some((e, h))
            } else {
                best
            }
        });
    // With a deadline the bar is the budget's time, which ends training before the steps do.
    let budget = limits
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()).as_secs().max(1));
    let bar = progress.then(|| match budget {
        Some(seconds) => budget_bar(seconds),
        None => crate::eval::progress(total - start_step, "training"),
    });
    let started = Instant::now();
    let (mut tokens_seen, mut last_loss) = (0usize, f64::NAN);
    let end = limits.steps.map_or(total, |n| (start_step + n).min(total));
    let mut stopped_by = if end < total { "steps" } else { "epochs" };
    let mut steps_done = start_step;
    for step in start_step..end {
        steps_done = step + 1;
        if let Some(sequences) = sequences.as_ref().filter(|_| config.shuffle_ties) {
            if step / per_epoch != examples_epoch {
                examples_epoch = step / per_epoch;
                examples = sequence_examples(sequences, examples_epoch)?;
            }
        }
        let indices = if config.length_buckets {
            bucketed_batch_indices(&lengths, config.batch, config.seed, step)
        } else {
            batch_indices(examples.len(), config.batch, config.seed, step)
        };
        let picked: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
        let batch = batch(&picked, pad, config.answer_weight)?;
        let loss = match &items {
            Some(items) => {
                let mut masks = Rng::fork(config.seed ^ DROPOUT_STREAM, step as u64);
                let hidden =
                    model.hidden_with(&batch.ids, Some((config.dropout as f32, &mut masks)))?;
                let draw = targets::NegativeDraw {
                    catalog: &catalog_classes,
                    rng: Rng::fork(config.seed ^ NEGATIVES_STREAM, step as u64),
                };
                let goal = targets::goal(
                    &picked,
                    &items.classes(&batch.targets)?.to_vec1::<u32>()?,
                    items.tokens.len(),
                    &config.targets,
                    Some(draw),
                )?;
                match config.targets.output_sample {
                    0 => model.loss_over(&hidden, &batch.rows, &items.tensor, &goal)?,
                    k => {
                        let mut rng = Rng::fork(config.seed ^ OUTPUT_SAMPLE_STREAM, step as u64);
                        let (goal, columns) = goal.over_sample(&catalog_classes, k, &mut rng)?;
                        let index = Tensor::new(columns.as_slice(), &Device::Cpu)?;
                        let tokens = items.tensor.index_select(&index, 0)?;
                        model.loss_over(&hidden, &batch.rows, &tokens, &goal)?
                    }
                }
            }
            None => model.loss(&batch.ids, &batch.rows, &batch.targets)?,
        };
        last_loss = f64::from(loss.to_scalar::<f32>()?);
        if !last_loss.is_finite() {
            bail!("the loss diverged at step {step} ({last_loss}); lower --lr");
        }
        let grads = loss.backward()?;
        let lr = learning_rate(config, step, total);
        optimizer.step(&vars, &grads, lr)?;
        if let Some(average) = average.as_mut() {
            average.update(&vars)?;
        }
        tokens_seen += batch.tokens;
        let rate = tokens_seen as f64 / started.elapsed().as_secs_f64();
        curve.push(format!(
            "{},{:.4},{last_loss:.5},{lr:.6},{rate:.0}",
            step + 1,
            (step + 1) as f64 / per_epoch as f64
        ));
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "training: epoch {:.2}, loss {last_loss:.4}, {rate:.0} tok/s",
                (step + 1) as f64 / per_epoch as f64
            ));
            match budget {
                Some(_) => bar.set_position(started.elapsed().as_secs()),
                None => bar.inc(1),
            }
        }
        let epoch_end = (step + 1) % per_epoch == 0 || step + 1 == total;
        let validating = !valid.is_empty() && epoch_end;
        // Past the deadline mid-epoch (a first epoch longer than the budget): what was learnt
        // is kept as a checkpoint that --resume continues.
        let out_of_time = limits.deadline.is_some_and(|d| Instant::now() >= d);
        let saving = (step + 1) % config.checkpoint_every == 0 || step + 1 == end;
        if saving || validating || out_of_time {
            checkpoint::save(
                out,
                &names,
                &vars,
                &optimizer,
                average.as_ref(),
                config,
                step + 1,
            )?;
            if average.is_some() && valid.is_empty() {
                // Nothing ranks the epochs: export takes the latest average.
                checkpoint::keep_as_best(out, &names, average.as_ref())?;
            }
            checkpoint::write_rows(&loss_csv, "step,epoch,loss,lr,tokens_per_s", &curve)?;
            let losses: Vec<f64> = curve
                .iter()
                .filter_map(|row| row.split(',').nth(2)?.parse().ok())
                .collect();
            plot::loss_png(&losses, &out.join("loss.png"))?;
        }
        // Validation requests come only with sequences, which always have item classes.
        if let Some(items) = items.as_ref().filter(|_| validating) {
            let validate = |model: &Transformer| {
                sequence::validate(model, tokenizer.as_ref(), &config.template, items, valid)
            };
            // With an average, the raw weights are ranked too: the two columns show what
            // averaging adds at every epoch.
            let ((hr1, ndcg3), raw) = match average.as_mut() {
                Some(average) => {
                    let raw = validate(&model)?;
                    average.swap(&vars)?;
                    let averaged = validate(&model);
                    // Back to the raw weights before anything can fail: training goes on.
                    average.swap(&vars)?;
                    (averaged?, Some(raw))
                }
                None => (validate(&model)?, None),
            };
            let epoch = (step + 1).div_ceil(per_epoch);
            if hr1 > best.map_or(f64::NEG_INFINITY, |(_, h)| h) {
                best = Some((epoch, hr1));
                checkpoint::keep_as_best(out, &names, average.as_ref())?;
            }
            let mut row = format!("{},{epoch},{hr1:.4},{ndcg3:.4}", step + 1);
            let mut header = "step,epoch,hr1,ndcg3".to_string();
            if let Some((raw_hr1, raw_ndcg3)) = raw {
                row.push_str(&format!(",{raw_hr1:.4},{raw_ndcg3:.4}"));
                header.push_str(",raw_hr1,raw_ndcg3");
            }
            validation.push(row);
            checkpoint::write_rows(&out.join("valid.csv"), &header, &validation)?;
            if let Some(bar) = &bar {
                let raw = raw.map_or(String::new(), |(h, n)| {
                    format!(" (raw weights {h:.4}, {n:.4})")
                });
                bar.println(format!(
                    "epoch {epoch}: validation HR@1 {hr1:.4}, NDCG@3 {ndcg3:.4}{raw}"
                ));
            }
            if config.patience > 0 && best.is_some_and(|(e, _)| epoch >= e + config.patience) {
                stopped_by = "patience";
                break;
            }
        }
        if out_of_time && step + 1 < end {
            stopped_by = "deadline";
            break;
        }
        if epoch_end && step + 1 < end {
            if let Some(deadline) = limits.deadline {
                // The epochs of this call so far, on average, predict the next one.
                let epochs_here = (step + 1 - start_step) as f64 / per_epoch as f64;
                let next = started.elapsed().as_secs_f64() / epochs_here;
                if Instant::now() + std::time::Duration::from_secs_f64(next) > deadline {
                    stopped_by = "deadline";
                    break;
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(RunSummary {
        steps: steps_done,
        examples: examples.len(),
        tokens_seen,
        final_loss: last_loss,
        seconds: started.elapsed().as_secs_f64(),
        parameters,
        steps_per_epoch: per_epoch,
        best,
        stopped_by,
    })
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
