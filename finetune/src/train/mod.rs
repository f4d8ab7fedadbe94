//! `train`: a llama-architecture model trained from scratch on InstructMK rows (prompt →
//! ranked ids), with the loss on the answer tokens only, checkpoints that resume to the same
//! loss curve, a loss CSV and a run manifest; `export` writes the GGUF `recommend()` serves.
//!
//! Prompts and answers are rendered by kvrec-core with the template stored in the model, and
//! tokenized apart (BOS + prompt, then answer + EOS), as kvrec-llm does when it serves.

pub mod base;
pub mod bpe;
pub mod checkpoint;
pub mod export;
pub mod lora;
pub mod model;
pub mod optimizer;
pub mod plot;
pub mod sequence;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use kvrec_core::rng::Rng;
use kvrec_core::template::TemplateSpec;
use kvrec_core::Request;
use kvrec_llm::llama_file::LlamaShape;
use serde::{Deserialize, Serialize};

use crate::protocol::{Instance, Sequence};
use crate::training_data::TrainingRow;
use base::Base;
use lora::{Lora, LoraSpec};
use model::Transformer;
use optimizer::AdamW;

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
    /// Sequence stage: stop after this many epochs without a better validation HR@1 (0: never).
    #[serde(default)]
    pub patience: usize,
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
            patience: 0,
        }
    }
}

impl TrainConfig {
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

/// Text → token ids, as the model that will serve the result tokenizes.
pub trait TextTokenizer: Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// The start token prepended to every prompt, if the model uses one.
    fn bos(&self) -> Result<Option<u32>>;
    fn eos(&self) -> Result<u32>;
}

impl TextTokenizer for tokenizers::Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        bpe::encode(self, text)
    }
    fn bos(&self) -> Result<Option<u32>> {
        bpe::token_id(self, bpe::BOS).map(Some)
    }
    fn eos(&self) -> Result<u32> {
        bpe::token_id(self, bpe::EOS)
    }
}

impl TextTokenizer for kvrec_llm::Model {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenize(text, false)
            .iter()
            .map(|t| t.0 as u32)
            .collect())
    }
    fn bos(&self) -> Result<Option<u32>> {
        Ok(self.tokenize("", true).first().map(|t| t.0 as u32))
    }
    fn eos(&self) -> Result<u32> {
        Ok(self.llama().vocab().eos().0 as u32)
    }
}

/// One tokenized training example: `[BOS] prompt answer [EOS]`.
#[derive(Debug, Clone)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Index of the first answer token: the loss covers `ids[answer_start..loss_end]`.
    pub answer_start: usize,
    pub loss_end: usize,
    /// Prompt tokens that are targets too (the history ids under `history_loss`).
    pub prompt_targets: Vec<usize>,
}

/// Renders and tokenizes rows (in parallel, with a progress bar when `progress`); prompts too
/// long for the context lose their oldest history.
pub fn examples(
    rows: &[TrainingRow],
    tokenizer: &dyn TextTokenizer,
    spec: &TemplateSpec,
    context: usize,
    loss_items: usize,
    history_loss: bool,
    progress: bool,
) -> Result<Vec<Example>> {
    if history_loss && spec.history_id_label.is_none() {
        bail!("history loss needs a template that renders history ids (history_id_label)");
    }
    use rayon::prelude::*;
    let bos = tokenizer.bos()?;
    let eos = tokenizer.eos()?;
    let bar = progress.then(|| crate::eval::progress(rows.len(), "tokenizing"));
    let examples = rows
        .par_iter()
        .map(|row| {
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            let request = Request::from_object(&row.request)
                .with_context(|| format!("training row of user {}", row.user_id))?;
            let answer = tokenizer.encode(&spec.render_answer(&row.target))?;
            // The loss prefix is tokenized as scoring tokenizes it: `<id>,` per item.
            let loss_tokens = if loss_items == 0 || loss_items >= row.target.len() {
                answer.len() + 1
            } else {
                let prefix: String = row.target[..loss_items]
                    .iter()
                    .map(|&id| spec.answer_prefix(id))
                    .collect::<Vec<_>>()
                    .join(" ");
                let tokens = tokenizer.encode(&prefix)?;
                if !answer.starts_with(&tokens) {
                    bail!("user {}: the answer does not start with the tokens of {prefix:?}", row.user_id);
                }
                tokens.len()
            };
            let mut spec = spec.clone();
            let offset = usize::from(bos.is_some());
            loop {
                let text = spec.render_prompt(&request);
                let prompt = tokenizer.encode(&text)?;
                let len = offset + prompt.len() + answer.len() + 1;
                if len <= context {
                    let prompt_targets = if history_loss {
                        history_id_positions(&text, &prompt, &request, &spec, tokenizer)?
                            .into_iter()
                            .map(|p| p + offset)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut ids = Vec::with_capacity(len);
                    ids.extend(bos);
                    ids.extend(prompt);
                    let answer_start = ids.len();
                    ids.extend(&answer);
                    ids.push(eos);
                    let loss_end = answer_start + loss_tokens;
                    return Ok(Example {
                        ids,
                        answer_start,
                        loss_end,
                        prompt_targets,
                    });
                }
                if spec.max_history == 0 {
                    bail!(
                        "user {}: the prompt without history takes {len} tokens, more than the context {context}",
                        row.user_id
                    );
                }
                spec.max_history = spec.max_history.min(request.history.len()).saturating_sub(1);
            }
        })
        .collect::<Result<Vec<_>>>();
    if let Some(bar) = bar {
        bar.finish();
    }
    examples
}

/// Where the rendered history ids sit among the prompt's tokens: the positions, inside the
/// id list, of tokens that are a whole history id (with `number_tokens` each id is one).
/// The list is found in the text and its bounds tokenized as prefixes, which cut the same
/// tokens as the whole prompt because `[` and the digits after it are separate pre-tokens.
fn history_id_positions(
    text: &str,
    prompt: &[u32],
    request: &Request,
    spec: &TemplateSpec,
    tokenizer: &dyn TextTokenizer,
) -> Result<Vec<usize>> {
    let Some(label) = &spec.history_id_label else {
        return Ok(Vec::new());
    };
    let opening = format!("{label}: [");
    let Some(start) = text.find(&opening).map(|i| i + opening.len()) else {
        return Ok(Vec::new());
    };
    let end = start
        + text[start..]
            .find(']')
            .context("the history id list is not closed")?;
    let (first, last) = (
        tokenizer.encode(&text[..start])?.len(),
        tokenizer.encode(&text[..end])?.len(),
    );
    let mut id_tokens = std::collections::HashSet::new();
    for id in request.history.iter().filter_map(|h| h.id) {
        if let [token] = tokenizer.encode(&id.to_string())?[..] {
            id_tokens.insert(token);
        }
    }
    Ok((first..last.min(prompt.len()))
        .filter(|&p| id_tokens.contains(&prompt[p]))
        .collect())
}

/// Token ids, loss rows and targets of one batch, padded to its longest example.
pub struct Batch {
    pub ids: Tensor,
    pub rows: Tensor,
    pub targets: Tensor,
    pub tokens: usize,
}

/// `answer_weight` repeats each answer row in the loss (a weighted mean without a weighted
/// loss op: the cross-entropy averages over rows); 0 counts as 1.
pub fn batch(examples: &[&Example], pad: u32, answer_weight: usize) -> Result<Batch> {
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(examples.len() * t);
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (i, e) in examples.iter().enumerate() {
        ids.extend(&e.ids);
        ids.extend(std::iter::repeat_n(pad, t - e.ids.len()));
        // The hidden state at p predicts token p + 1.
        let answer = (e.answer_start - 1..e.loss_end - 1)
            .flat_map(|p| std::iter::repeat_n(p, answer_weight.max(1)));
        for p in e.prompt_targets.iter().map(|p| p - 1).chain(answer) {
            rows.push((i * t + p) as u32);
            targets.push(e.ids[p + 1]);
        }
    }
    let device = Device::Cpu;
    Ok(Batch {
        ids: Tensor::from_vec(ids, (examples.len(), t), &device)?,
        rows: Tensor::new(rows.as_slice(), &device)?,
        targets: Tensor::new(targets.as_slice(), &device)?,
        tokens: examples.iter().map(|e| e.ids.len()).sum(),
    })
}

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

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub steps: usize,
    pub examples: usize,
    pub tokens_seen: usize,
    pub final_loss: f64,
    pub seconds: f64,
    pub parameters: usize,
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
                Some((path, _)) => Lora::from_tensors(spec, &model, &checkpoint::tensors(path)?)?,
                None => Lora::init(spec, &model, config.seed)?,
            });
            (model, tokenizer)
        }
        (None, None) => {
            let tokenizer = scratch_tokenizer(config, corpus, out, resumed.is_some())?;
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
    let (examples, items, valid) = match corpus {
        Corpus::Rows(rows) => (
            row_examples(config, rows, tokenizer.as_ref(), context, progress)?,
            None,
            &[][..],
        ),
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
            let held_out;
            let sequences = if valid.is_empty() {
                sequences
            } else {
                held_out = sequence::hold_out_last(sequences, valid)?;
                &held_out[..]
            };
            let examples = sequence::examples(
                sequences,
                tokenizer.as_ref(),
                &config.template,
                config.sequence_window.min(context.saturating_sub(1)),
            )?;
            model.attention_span = (config.attention_span > 0).then_some(config.attention_span);
            let items = sequence::ItemClasses::new(
                tokenizer.as_ref(),
                &config.template,
                config.number_tokens as i64,
            )?;
            (examples, Some(items), valid)
        }
    };
    if examples.is_empty() {
        bail!("no training rows");
    }
    let pad = tokenizer.eos()?;
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
        .filter_map(|row| {
            let mut fields = row.split(',').skip(1);
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .fold(None, |best: Option<(usize, f64)>, (e, h)| {
            if best.is_none_or(|(_, b)| h > b) {
                Some((e, h))
            } else {
                best
            }
        });
    let bar = progress.then(|| crate::eval::progress(total - start_step, "training"));
    let started = Instant::now();
    let (mut tokens_seen, mut last_loss) = (0usize, f64::NAN);
    let end = stop_after.map_or(total, |n| (start_step + n).min(total));
    let mut steps_done = start_step;
    for step in start_step..end {
        steps_done = step + 1;
        let indices = batch_indices(examples.len(), config.batch, config.seed, step);
        let picked: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
        let batch = batch(&picked, pad, config.answer_weight)?;
        let loss = match &items {
            Some(items) => {
                let mut masks = Rng::fork(config.seed ^ DROPOUT_STREAM, step as u64);
                let hidden =
                    model.hidden_with(&batch.ids, Some((config.dropout as f32, &mut masks)))?;
                model.loss_over(
                    &hidden,
                    &batch.rows,
                    &items.tensor,
                    &items.classes(&batch.targets)?,
                )?
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
        tokens_seen += batch.tokens;
        let rate = tokens_seen as f64 / started.elapsed().as_secs_f64();
        curve.push(format!(
            "{},{:.4},{last_loss:.5},{lr:.6},{rate:.0}",
            step + 1,
            (step + 1) as f64 / per_epoch as f64
        ));
        if let Some(bar) = &bar {
            bar.set_message(format!("training: loss {last_loss:.4}, {rate:.0} tok/s"));
            bar.inc(1);
        }
        let epoch_end = (step + 1) % per_epoch == 0 || step + 1 == total;
        let validating = !valid.is_empty() && epoch_end;
        if (step + 1) % config.checkpoint_every == 0 || step + 1 == end || validating {
            checkpoint::save(out, &names, &vars, &optimizer, config, step + 1)?;
            write_rows(&loss_csv, "step,epoch,loss,lr,tokens_per_s", &curve)?;
            let losses: Vec<f64> = curve
                .iter()
                .filter_map(|row| row.split(',').nth(2)?.parse().ok())
                .collect();
            plot::loss_png(&losses, &out.join("loss.png"))?;
        }
        // Validation requests come only with sequences, which always have item classes.
        if let Some(items) = items.as_ref().filter(|_| validating) {
            let (hr1, ndcg3) =
                sequence::validate(&model, tokenizer.as_ref(), &config.template, items, valid)?;
            let epoch = (step + 1).div_ceil(per_epoch);
            if hr1 > best.map_or(f64::NEG_INFINITY, |(_, h)| h) {
                best = Some((epoch, hr1));
                checkpoint::keep_as_best(out)?;
            }
            validation.push(format!("{},{epoch},{hr1:.4},{ndcg3:.4}", step + 1));
            write_rows(&out.join("valid.csv"), "step,epoch,hr1,ndcg3", &validation)?;
            if let Some(bar) = &bar {
                bar.println(format!(
                    "epoch {epoch}: validation HR@1 {hr1:.4}, NDCG@3 {ndcg3:.4}"
                ));
            }
            if config.patience > 0 && best.is_some_and(|(e, _)| epoch >= e + config.patience) {
                break;
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
    })
}

/// Seeds the dropout masks of each step (with the run's seed), so a resumed run repeats them.
const DROPOUT_STREAM: u64 = 0x6472_6f70_6f75_7400;

/// InstructMK rows as examples, their answers reordered first when the run asks for it.
fn row_examples(
    config: &TrainConfig,
    rows: &[TrainingRow],
    tokenizer: &dyn TextTokenizer,
    context: usize,
    progress: bool,
) -> Result<Vec<Example>> {
    let reordered;
    let rows = match &config.order_rest_by {
        Some(key) => {
            reordered = rows
                .iter()
                .map(|row| {
                    Ok(TrainingRow {
                        target: crate::training_data::order_rest_by(row, key)?,
                        ..row.clone()
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            &reordered[..]
        }
        None => rows,
    };
    examples(
        rows,
        tokenizer,
        &config.template,
        context,
        config.loss_items,
        config.history_loss,
        progress,
    )
}

/// The tensors a run trains, by checkpoint name: the adapters under LoRA, else every weight.
fn trainable(model: &Transformer) -> (Vec<String>, Vec<Var>) {
    match &model.lora {
        Some(lora) => lora.tensors().into_iter().unzip(),
        None => (model.names.clone(), model.vars.clone()),
    }
}

/// A from-scratch run's BPE: trained on the first rows' rendered text, or the run's own.
fn scratch_tokenizer(
    config: &TrainConfig,
    corpus: Corpus,
    out: &Path,
    resumed: bool,
) -> Result<tokenizers::Tokenizer> {
    let path = out.join("tokenizer.json");
    if resumed {
        return bpe::load(&path);
    }
    if let Some(run) = &config.init_from {
        std::fs::copy(run.join("tokenizer.json"), &path)
            .with_context(|| format!("copying the tokenizer of {}", run.display()))?;
        return bpe::load(&path);
    }
    let texts: Vec<String> = match corpus {
        Corpus::Rows(rows) => rows
            .iter()
            .take(4000)
            .map(|row| -> Result<String> {
                let request = Request::from_object(&row.request)?;
                Ok(format!(
                    "{}{}",
                    config.template.render_prompt(&request),
                    config.template.render_answer(&row.target)
                ))
            })
            .collect::<Result<_>>()?,
        Corpus::Sequences { sequences, .. } => sequences
            .iter()
            .take(4000)
            .map(|s| config.template.render_sequence(&s.items))
            .collect(),
    };
    // The sequence layout reads each id after a space: " 531" must be one token there.
    let spaced = config.template.layout == kvrec_core::template::Layout::Sequence;
    bpe::train(
        &texts,
        config.vocab_size,
        config.number_tokens,
        spaced,
        &path,
    )
}

fn write_rows(path: &Path, header: &str, rows: &[String]) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(file, "{header}")?;
    for row in rows {
        writeln!(file, "{row}")?;
    }
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_trains_prompt_targets_and_weights_answer_rows() {
        // [BOS] p p h p | a a | EOS: history id at 3, answer tokens at 5 and 6.
        let example = Example {
            ids: vec![0, 10, 11, 12, 13, 20, 21, 1],
            answer_start: 5,
            loss_end: 7,
            prompt_targets: vec![3],
        };
        let short = Example {
            ids: vec![0, 10, 20, 1],
            answer_start: 2,
            loss_end: 3,
            prompt_targets: vec![],
        };
        let batch = batch(&[&example, &short], 9, 2).unwrap();
        let rows: Vec<u32> = batch.rows.to_vec1().unwrap();
        let targets: Vec<u32> = batch.targets.to_vec1().unwrap();
        // Row p predicts token p + 1; the second example starts at row 8 (padded length).
        assert_eq!(rows, [2, 4, 4, 5, 5, 9, 9]);
        assert_eq!(targets, [12, 20, 20, 21, 21, 20, 20]);
        assert_eq!(batch.ids.dims(), [2, 8]);
    }
}
