//! Ranking candidates with a model.
//!
//! Scoring (the default) evaluates the prompt once, shared by up to [`crate::model::MAX_SEQUENCES`]
//! sequences, with every candidate's answer prefix (`<id>,`) as its own sequence in the
//! prompt's last batch (one decode call per request when they fit); a candidate's score is the log-probability that the answer starts
//! with it. The result is always a permutation of the candidates. Generation decodes greedily
//! and parses the text, as the paper does.
//!
//! Answers are tokenized apart from the prompt, in training and serving alike.

use kvrec_core::answer::{parse_answer, ParsedAnswer};
use kvrec_core::options::{Mode, Options};
use kvrec_core::template::TemplateSpec;
use kvrec_core::{KvrecError, Request, Result};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;

use crate::logs;
use crate::model::{detail, Model};

/// A ranking and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    /// Candidate ids, best first.
    pub ids: Vec<i64>,
    /// Log-probability of each ranked id being the answer's first item (scoring), or the
    /// negated rank (generation), aligned with `ids`.
    pub scores: Vec<f64>,
    /// History items left out, oldest first, so the prompt fits the context.
    pub dropped_history: usize,
    pub prompt_tokens: usize,
    /// Generation only: the raw text and what the parser made of it.
    pub generated: Option<String>,
    pub parsed: Option<ParsedAnswer>,
}

/// Ranks the request's candidates with `model`, in the mode the options ask for.
pub fn rank(model: &Model, request: &Request, options: &Options) -> Result<Ranking> {
    let mut spec = model.template.clone();
    if let Some(n) = options.max_history {
        spec.max_history = n;
    }
    let mut ranking = match options.mode.unwrap_or_default() {
        Mode::Score => score(model, request, &spec, options)?,
        Mode::Generate => generate(model, request, &spec, options)?,
    };
    if let Some(k) = options.k {
        ranking.ids.truncate(k);
        ranking.scores.truncate(k);
    }
    Ok(ranking)
}

/// The prompt's tokens with as much recent history as fits, leaving `reserve` tokens of the
/// context for the answer. Returns the tokens and how many history items were left out.
fn fit_prompt(
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

fn decode(ctx: &mut LlamaContext, batch: &mut LlamaBatch) -> Result<()> {
    let mark = logs::mark();
    ctx.decode(batch).map_err(|e| KvrecError::Backend {
        detail: detail(&format!("decode failed: {e}"), mark),
    })
}

fn batch_error(e: impl std::fmt::Display) -> KvrecError {
    KvrecError::Internal {
        detail: format!("batch overflow: {e}"),
    }
}

/// Decodes `tokens` from position 0 for sequences `seqs`, `n_batch` at a time; returns the
/// log-softmax normaliser and the logits row of the last token.
fn decode_prompt(
    ctx: &mut LlamaContext,
    tokens: &[LlamaToken],
    seqs: &[i32],
    n_batch: usize,
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
        decode(ctx, &mut batch)?;
    }
    Ok(ctx.get_logits_ith(batch.n_tokens() - 1).to_vec())
}

fn log_softmax_at(logits: &[f32], token: LlamaToken) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(logits[token.0 as usize] - max) - sum.ln()
}

/// The baseline for benchmarks: one plain pass of llama.cpp over the request's prompt (the
/// prompt `rank` would build), nothing else. Returns the number of prompt tokens.
pub fn prompt_pass(model: &Model, request: &Request, options: &Options) -> Result<usize> {
    let mut spec = model.template.clone();
    if let Some(n) = options.max_history {
        spec.max_history = n;
    }
    let (prompt, _) = fit_prompt(model, request, &spec, 0)?;
    model.with_context(|ctx| {
        decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize).map(|_| prompt.len())
    })
}

fn score(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    _options: &Options,
) -> Result<Ranking> {
    let n_ctx = model.load.n_ctx as usize;
    let n_batch = model.load.n_batch as usize;
    let continuations: Vec<Vec<LlamaToken>> = request
        .candidates
        .iter()
        .map(|c| model.tokenize(&spec.answer_prefix(c.id), false))
        .collect();
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
    if longest > n_batch {
        return Err(KvrecError::Internal {
            detail: format!("a candidate id takes {longest} tokens, more than n_batch {n_batch}"),
        });
    }
    let (prompt, dropped) = fit_prompt(model, request, spec, longest)?;
    let n_prompt = prompt.len();
    let group_size = request
        .candidates
        .len()
        .min(model.load.n_seq_max() as usize);
    let seqs: Vec<i32> = (0..group_size as i32).collect();
    let mut scores = vec![0f64; request.candidates.len()];

    let prefix_tokens: usize = continuations.iter().map(Vec::len).sum();
    // Every candidate's prefix takes cache cells of its own next to the shared prompt.
    if continuations.len() <= group_size
        && prefix_tokens < n_batch
        && n_prompt + prefix_tokens <= n_ctx
    {
        // One decode per request: a decode call costs about as much for ~50 candidate tokens
        // as for a 700-token prompt, so the prefixes ride in the prompt's last batch.
        model.with_context(|ctx| {
            let tail = (n_batch - prefix_tokens).min(n_prompt);
            let head = n_prompt - tail;
            if head > 0 {
                decode_prompt(ctx, &prompt[..head], &seqs, n_batch)?;
            }
            let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
            for (i, &token) in prompt[head..].iter().enumerate() {
                batch
                    .add(token, (head + i) as i32, &seqs, i + 1 == tail)
                    .map_err(batch_error)?;
            }
            let last_prompt_row = batch.n_tokens() - 1;
            let rows = add_prefixes(
                &mut batch,
                continuations.iter().map(Vec::as_slice).enumerate(),
                n_prompt,
            )?;
            decode(ctx, &mut batch)?;
            for (i, tokens) in continuations.iter().enumerate() {
                scores[i] = log_softmax_at(ctx.get_logits_ith(last_prompt_row), tokens[0]);
            }
            add_scores(ctx, &rows, &mut scores);
            Ok(())
        })?;
        return Ok(finish(request, scores, dropped, n_prompt));
    }

    model.with_context(|ctx| {
        let first_logits = decode_prompt(ctx, &prompt, &seqs, n_batch)?;
        for (i, tokens) in continuations.iter().enumerate() {
            scores[i] = log_softmax_at(&first_logits, tokens[0]);
        }
        // Candidates whose prefix is longer than one token need one more decode: pack them
        // into batches of at most `group_size` sequences, n_batch tokens and the free context.
        let pending: Vec<usize> = (0..continuations.len())
            .filter(|&i| continuations[i].len() > 1)
            .collect();
        let room = (n_ctx - n_prompt).min(n_batch);
        let mut start = 0;
        let mut batch = LlamaBatch::new(n_batch, 1);
        while start < pending.len() {
            let mut end = start;
            let mut used = 0;
            while end < pending.len()
                && end - start < group_size
                && used + continuations[pending[end]].len() <= room
            {
                used += continuations[pending[end]].len();
                end += 1;
            }
            batch.clear();
            let rows = add_prefixes(
                &mut batch,
                pending[start..end]
                    .iter()
                    .map(|&c| (c, continuations[c].as_slice())),
                n_prompt,
            )?;
            decode(ctx, &mut batch)?;
            add_scores(ctx, &rows, &mut scores);
            for seq in 0..(end - start) as i32 {
                ctx.kv_cache_seq_rm(seq, Some(n_prompt as u32), None)
                    .map_err(|e| KvrecError::Backend {
                        detail: format!("could not reset sequence {seq}: {e}"),
                    })?;
            }
            start = end;
        }
        Ok(())
    })?;

    Ok(finish(request, scores, dropped, n_prompt))
}

/// A logits row of a decoded batch and the token it must predict, for one candidate.
struct Prediction {
    candidate: usize,
    row: i32,
    next: LlamaToken,
}

/// Adds each candidate's prefix after the prompt's `n_prompt` positions as sequence 0, 1, …
/// (in iteration order); returns the rows whose logits score the prefix's later tokens.
fn add_prefixes<'a>(
    batch: &mut LlamaBatch,
    prefixes: impl Iterator<Item = (usize, &'a [LlamaToken])>,
    n_prompt: usize,
) -> Result<Vec<Prediction>> {
    let mut rows = Vec::new();
    for (seq, (candidate, tokens)) in prefixes.enumerate() {
        for (j, &token) in tokens.iter().enumerate() {
            let wants_logits = j + 1 < tokens.len();
            batch
                .add(token, (n_prompt + j) as i32, &[seq as i32], wants_logits)
                .map_err(batch_error)?;
            if wants_logits {
                rows.push(Prediction {
                    candidate,
                    row: batch.n_tokens() - 1,
                    next: tokens[j + 1],
                });
            }
        }
    }
    Ok(rows)
}

fn add_scores(ctx: &LlamaContext, rows: &[Prediction], scores: &mut [f64]) {
    for p in rows {
        scores[p.candidate] += log_softmax_at(ctx.get_logits_ith(p.row), p.next);
    }
}

/// Candidates sorted by score, best first.
fn finish(request: &Request, scores: Vec<f64>, dropped: usize, n_prompt: usize) -> Ranking {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable: equal scores keep the input order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Ranking {
        ids: order.iter().map(|&i| request.candidates[i].id).collect(),
        scores: order.iter().map(|&i| scores[i]).collect(),
        dropped_history: dropped,
        prompt_tokens: n_prompt,
        generated: None,
        parsed: None,
    }
}

fn generate(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    _options: &Options,
) -> Result<Ranking> {
    let answer = spec.render_answer(&request.candidate_ids());
    let max_new = model.tokenize(&answer, false).len() + 8;
    let (prompt, dropped) = fit_prompt(model, request, spec, max_new)?;
    let n_prompt = prompt.len();
    let vocab = model.llama().vocab();
    let generated = model.with_context(|ctx| {
        let mut logits = decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize)?;
        let mut tokens = Vec::new();
        let mut batch = LlamaBatch::new(1, 1);
        while tokens.len() < max_new {
            let next = LlamaToken(
                logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i as i32),
            );
            if vocab.is_eog(next) {
                break;
            }
            tokens.push(next);
            let text =
                String::from_utf8_lossy(&vocab.detokenize(&tokens, true, false)).into_owned();
            if text.contains('\n') {
                break;
            }
            batch.clear();
            batch
                .add(next, (n_prompt + tokens.len() - 1) as i32, &[0], true)
                .map_err(batch_error)?;
            decode(ctx, &mut batch)?;
            logits = ctx.get_logits_ith(0).to_vec();
        }
        Ok(String::from_utf8_lossy(&vocab.detokenize(&tokens, true, false)).into_owned())
    })?;
    let parsed = parse_answer(&generated, &request.candidate_ids());
    Ok(Ranking {
        ids: parsed.ids.clone(),
        scores: (0..parsed.ids.len()).map(|r| -(r as f64)).collect(),
        dropped_history: dropped,
        prompt_tokens: n_prompt,
        generated: Some(generated),
        parsed: Some(parsed),
    })
}
