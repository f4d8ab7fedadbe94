//! Training rows and sequence windows as tokenized examples, and examples as padded batches
//! with the rows and targets the loss reads.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use kvrec_core::template::TemplateSpec;
use kvrec_core::Request;

use std::sync::Arc;

use super::config::TrainConfig;
use super::tokenizer::TextTokenizer;
use crate::training_data::TrainingRow;

/// A window's place in its user's whole sequence: `ids[offset + k]` of the example is item
/// `items[start + k]`.
#[derive(Debug, Clone)]
pub struct SequenceSpan {
    pub items: Arc<[i64]>,
    pub start: usize,
    pub offset: usize,
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
    /// A sequence window's place in its user's sequence (the sequence stage's targets).
    pub span: Option<SequenceSpan>,
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
                        span: None,
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

/// InstructMK rows as examples, their answers reordered first when the run asks for it.
pub(super) fn row_examples(
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
            span: None,
        };
        let short = Example {
            ids: vec![0, 10, 20, 1],
            answer_start: 2,
            loss_end: 3,
            prompt_targets: vec![],
            span: None,
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
