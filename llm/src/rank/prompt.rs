//! Prompts: rendering a request into tokens that fit the context, and decoding them.

use kvrec_core::options::Options;
use kvrec_core::template::{Layout, TemplateSpec};
use kvrec_core::{KvrecError, Request, Result};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use crate::cancel::Cancel;
use crate::logs;
use crate::model::{detail, Model};

/// The prompt's tokens with as much recent history as fits, leaving `reserve` tokens of the
/// context for the answer. Returns the tokens and how many history items were left out.
pub(crate) fn fit_prompt(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    reserve: usize,
) -> Result<(Vec<LlamaToken>, usize)> {
    match &model.sequence_start {
        Some(start) if spec.layout == Layout::Sequence => {
            fit_sequence(model, start, request, spec, reserve)
        }
        _ => fit_text(model, request, spec, reserve),
    }
}

/// The prompt's token budget (the context less `reserve`) and the history items it may show.
fn room(model: &Model, request: &Request, spec: &TemplateSpec, reserve: usize) -> (usize, usize) {
    let budget = (model.load.n_ctx as usize).saturating_sub(reserve);
    (budget, request.history.len().min(spec.max_history))
}

/// [`fit_prompt`] as plain llama.cpp does it: the prompt rendered as text and tokenized
/// whole, as many times as the search for the most history that fits takes.
fn fit_text(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    reserve: usize,
) -> Result<(Vec<LlamaToken>, usize)> {
    let (budget, shown) = room(model, request, spec, reserve);
    let tokens_with = |keep: usize| {
        let spec = TemplateSpec {
            max_history: keep,
            ..spec.clone()
        };
        model.tokenize(&spec.render_prompt(request), true)
    };
    let full = tokens_with(shown);
    if full.len() <= budget {
        return Ok((full, 0));
    }
    // Prompt length grows with kept history: binary-search the most that fits.
    let (mut lo, mut hi) = (0usize, shown);
    let mut best = None;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let tokens = tokens_with(mid);
        if tokens.len() <= budget {
            best = Some((tokens, shown - mid));
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    best.ok_or_else(|| KvrecError::PromptTooLong {
        tokens: tokens_with(0).len() + reserve,
        n_ctx: model.load.n_ctx,
    })
}

/// [`fit_prompt`] for a sequence-layout prompt, put together from each id's remembered
/// tokens: the `start` tokens, then as many of the most recent shown items as fit.
fn fit_sequence(
    model: &Model,
    start: &[LlamaToken],
    request: &Request,
    spec: &TemplateSpec,
    reserve: usize,
) -> Result<(Vec<LlamaToken>, usize)> {
    let (budget, shown) = room(model, request, spec, reserve);
    let items = &request.history[request.history.len() - shown..];
    let texts: Vec<String> = items
        .iter()
        .filter_map(|item| item.id)
        .map(|id| spec.render_sequence(&[id]))
        .collect();
    let mut pieces = model.tokenize_pieces(&texts).into_iter();
    // Items without an id render nothing, as in `render_sequence`.
    let per_item: Vec<Vec<LlamaToken>> = items
        .iter()
        .map(|item| match item.id {
            Some(_) => pieces.next().unwrap_or_default(),
            None => Vec::new(),
        })
        .collect();
    if start.len() > budget {
        return Err(KvrecError::PromptTooLong {
            tokens: start.len() + reserve,
            n_ctx: model.load.n_ctx,
        });
    }
    let (mut length, mut keep) = (start.len(), 0);
    for tokens in per_item.iter().rev() {
        if length + tokens.len() > budget {
            break;
        }
        length += tokens.len();
        keep += 1;
    }
    let mut prompt = Vec::with_capacity(length);
    prompt.extend_from_slice(start);
    for tokens in &per_item[shown - keep..] {
        prompt.extend_from_slice(tokens);
    }
    Ok((prompt, shown - keep))
}

/// One llama.cpp decode, unless the call was cancelled: every decode of a call goes
/// through here, so a cancelled call stops within one.
pub(super) fn decode(
    ctx: &mut LlamaContext,
    batch: &mut LlamaBatch,
    cancel: &Cancel,
) -> Result<()> {
    cancel.check()?;
    let mark = logs::mark();
    ctx.decode(batch).map_err(|e| KvrecError::Backend {
        detail: detail(&format!("decode failed: {e}"), mark),
    })
}

pub(super) fn batch_error(e: impl std::fmt::Display) -> KvrecError {
    KvrecError::Internal {
        detail: format!("batch overflow: {e}"),
    }
}

/// Decodes `tokens` from position 0 for sequences `seqs`, `n_batch` at a time; returns the
/// logits row of the last token.
pub(crate) fn decode_prompt(
    ctx: &mut LlamaContext,
    tokens: &[LlamaToken],
    seqs: &[i32],
    n_batch: usize,
    cancel: &Cancel,
) -> Result<Vec<f32>> {
    let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
    for (chunk_index, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        let base = chunk_index * n_batch;
        for (i, &token) in chunk.iter().enumerate() {
            let last = base + i == tokens.len() - 1;
            batch
                .add(token, (base + i) as i32, seqs, last)
                .map_err(batch_error)?;
        }
        decode(ctx, &mut batch, cancel)?;
    }
    Ok(ctx.get_logits_ith(batch.n_tokens() - 1).to_vec())
}

/// The baseline for benchmarks: one plain pass of llama.cpp over the request's prompt (the
/// prompt `rank` would build), nothing else. Returns the number of prompt tokens.
pub fn prompt_pass(
    model: &Model,
    request: &Request,
    options: &Options,
    cancel: &Cancel,
) -> Result<usize> {
    let spec = options.spec_over(&model.template);
    // Tokenized as a caller of llama.cpp would, whole: the baseline `bench` measures
    // kvrec against.
    let (prompt, _) = fit_text(model, request, &spec, 0)?;
    model.with_context_threads(model.threads_for(options), cancel, |ctx| {
        decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize, cancel).map(|_| prompt.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvrec_core::options::Options;
    use serde_json::json;

    fn catalog_model(name: &str, item_tokens: bool) -> Model {
        let dir = std::env::temp_dir().join(format!("kvrec-llm-pieces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.gguf"));
        let items: Vec<i64> = (1..=40).collect();
        crate::tiny::write_tiny_catalog_llama(&path, 3, &items, item_tokens, None).unwrap();
        Model::load(name, path.to_str().unwrap(), &Options::default()).unwrap()
    }

    /// Histories of every length the template shows and more, with items that carry no id
    /// and ids outside the catalog.
    fn requests() -> Vec<Request> {
        (0..45)
            .map(|n: i64| {
                let history: Vec<_> = (0..n)
                    .map(|i| match i % 7 {
                        3 => json!({"title": "no id"}),
                        5 => json!({"id": 1000 + i}),
                        _ => json!({"id": i % 40 + 1}),
                    })
                    .collect();
                Request::from_values(&json!({}), &json!(history), &json!([{"id": 1}])).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_loaded_catalog_model_already_knows_its_ids_tokens() {
        let model = catalog_model("pieces-loaded", true);
        let known = model.pieces.remembered();
        // Each of the 40 ids as history (` 7`) and as answer prefix; they may be one text.
        assert!(
            (40..=80).contains(&known),
            "{known} texts remembered at load"
        );
        let request = &requests()[30];
        let spec = model.template.clone();
        fit_prompt(&model, request, &spec, 0).unwrap();
        // Only the ids the prompt shows, outside the catalog, are new.
        let shown = &request.history[request.history.len() - spec.max_history..];
        let unknown_ids = shown.iter().filter(|h| h.id.is_some_and(|id| id > 40));
        assert_eq!(model.pieces.remembered(), known + unknown_ids.count());
    }

    #[test]
    fn a_prompt_of_remembered_id_tokens_is_the_prompt_tokenized_whole() {
        for (name, item_tokens) in [("pieces-items", true), ("pieces-digits", false)] {
            let model = catalog_model(name, item_tokens);
            assert!(
                model.sequence_start.is_some(),
                "{name}: the tiny BPE splits at ids"
            );
            let spec = model.template.clone();
            // Reserves that leave room for all of the history, for some of it, for none.
            let n_ctx = model.load.n_ctx as usize;
            for request in requests() {
                let whole = fit_text(&model, &request, &spec, 0).unwrap();
                let full = whole.0.len().min(n_ctx);
                for reserve in [0, n_ctx - full, n_ctx - 12, n_ctx - 1, n_ctx] {
                    let pieces = fit_prompt(&model, &request, &spec, reserve);
                    assert_eq!(
                        pieces,
                        fit_text(&model, &request, &spec, reserve),
                        "{name}, {} items, reserve {reserve}",
                        request.history.len()
                    );
                }
                assert_eq!(fit_prompt(&model, &request, &spec, 0).unwrap(), whole);
            }
        }
    }
}
