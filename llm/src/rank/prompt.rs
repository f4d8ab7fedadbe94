//! Prompts: rendering a request into tokens that fit the context, and decoding them.

use kvrec_core::options::Options;
use kvrec_core::template::TemplateSpec;
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
    let budget = (model.load.n_ctx as usize).saturating_sub(reserve);
    let shown = request.history.len().min(spec.max_history);
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
    let (prompt, _) = fit_prompt(model, request, &spec, 0)?;
    model.with_context_threads(model.threads_for(options), cancel, |ctx| {
        decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize, cancel).map(|_| prompt.len())
    })
}
