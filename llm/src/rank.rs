//! Ranking candidates with a model.
//!
//! Scoring (the default) evaluates the prompt once and reads how likely the answer is to start
//! with each candidate's `<id>,`, with the model's choice restricted to the candidates (see
//! [`crate::trie`]): only the tokens where candidate ids part ways are decoded, as extra
//! sequences in the prompt's last batch, so a request is one decode call when they fit. The
//! result is always a permutation of the candidates. Generation decodes greedily and parses the
//! text, as the paper does.
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

use std::collections::HashMap;

use crate::logs;
use crate::model::{detail, Model};
use crate::trie::{At, CandidateTrie};

/// A ranking and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    /// Candidate ids, best first.
    pub ids: Vec<i64>,
    /// Log-probability of each ranked id being the answer's first item when the model may
    /// only answer with a candidate (scoring; their exponentials sum to 1), or the negated
    /// rank (generation), aligned with `ids`.
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
    let continuations: Vec<Vec<i32>> = request
        .candidates
        .iter()
        .map(|c| {
            let tokens = model.tokenize(&spec.answer_prefix(c.id), false);
            tokens.iter().map(|t| t.0).collect()
        })
        .collect();
    let trie = CandidateTrie::new(&continuations);
    let plan = DecodePlan::new(&trie);
    if plan.deepest > n_batch {
        return Err(KvrecError::Internal {
            detail: format!(
                "candidate ids share {} leading tokens, more than n_batch {n_batch}",
                plan.deepest
            ),
        });
    }
    let (prompt, dropped) = fit_prompt(model, request, spec, plan.deepest)?;
    let n_prompt = prompt.len();
    let n_seq = model.load.n_seq_max() as usize;
    let room = (n_ctx - n_prompt).min(n_batch);
    let rounds = plan.rounds(n_seq, room);
    let seqs: Vec<i32> =
        (0..rounds.iter().map(Vec::len).max().unwrap_or(1).max(1) as i32).collect();
    let mut logits: HashMap<(At, i32), f64> = HashMap::new();
    let mut keep = |at: At, row: &[f32]| {
        let children = match at {
            None => &trie.root_children,
            Some(n) => &trie.nodes[n].children,
        };
        for &c in children {
            let token = trie.nodes[c].token;
            logits.insert((at, token), f64::from(row[token as usize]));
        }
    };

    model.with_context(|ctx| {
        let round_tokens = rounds.first().map_or(0, |r| plan.union(&trie, r).len());
        if rounds.len() <= 1 && round_tokens < n_batch {
            // One decode per request: the branching nodes ride in the prompt's last batch.
            let tail = (n_batch - round_tokens).min(n_prompt);
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
            let root_row = batch.n_tokens() - 1;
            let rows = match rounds.first() {
                Some(round) => add_round(&mut batch, &trie, &plan, round, n_prompt)?,
                None => Vec::new(),
            };
            decode(ctx, &mut batch)?;
            keep(None, ctx.get_logits_ith(root_row));
            for (node, row) in rows {
                keep(Some(node), ctx.get_logits_ith(row));
            }
            return Ok(());
        }
        let root = decode_prompt(ctx, &prompt, &seqs, n_batch)?;
        keep(None, &root);
        let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
        for round in &rounds {
            batch.clear();
            let rows = add_round(&mut batch, &trie, &plan, round, n_prompt)?;
            decode(ctx, &mut batch)?;
            for (node, row) in rows {
                keep(Some(node), ctx.get_logits_ith(row));
            }
            for seq in 0..round.len() as i32 {
                ctx.kv_cache_seq_rm(seq, Some(n_prompt as u32), None)
                    .map_err(|e| KvrecError::Backend {
                        detail: format!("could not reset sequence {seq}: {e}"),
                    })?;
            }
        }
        Ok(())
    })?;
    let scores = trie.scores(|at, token| logits[&(at, token)]);
    Ok(finish(request, scores, dropped, n_prompt))
}

/// Which trie nodes to decode, as paths from the first answer token down to the deepest
/// branching nodes ("ends"): each end gets a sequence of its own in a decode round.
struct DecodePlan {
    /// Decoded nodes with no decoded child: each path to one is a sequence.
    ends: Vec<usize>,
    /// Tokens on the longest such path.
    deepest: usize,
}

impl DecodePlan {
    fn new(trie: &CandidateTrie) -> DecodePlan {
        let decoded = trie.to_decode();
        let mut has_decoded_child = vec![false; trie.nodes.len()];
        for &n in &decoded {
            if let Some(p) = trie.nodes[n].parent {
                has_decoded_child[p] = true;
            }
        }
        let ends: Vec<usize> = decoded
            .into_iter()
            .filter(|&n| !has_decoded_child[n])
            .collect();
        let deepest = ends
            .iter()
            .map(|&n| trie.nodes[n].depth + 1)
            .max()
            .unwrap_or(0);
        DecodePlan { ends, deepest }
    }

    /// The nodes a round of ends decodes, parents first.
    fn union(&self, trie: &CandidateTrie, round: &[usize]) -> Vec<usize> {
        let mut nodes: Vec<usize> = round.iter().flat_map(|&e| trie.lineage(e)).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Ends grouped into decode rounds of at most `n_seq` sequences and `room` tokens.
    fn rounds(&self, n_seq: usize, room: usize) -> Vec<Vec<usize>> {
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut used = 0;
        for &end in &self.ends {
            // Upper bound: the longest path, as if it shared nothing.
            let cost = self.deepest;
            match rounds.last_mut() {
                Some(round) if round.len() < n_seq && used + cost <= room => {
                    round.push(end);
                    used += cost;
                }
                _ => {
                    rounds.push(vec![end]);
                    used = cost;
                }
            }
        }
        rounds
    }
}

/// Adds a round's nodes after the prompt's `n_prompt` positions, end k of the round as
/// sequence k, a node tagged with the sequences of every end below it; returns the rows of the
/// branching nodes, whose logits score their children.
fn add_round(
    batch: &mut LlamaBatch,
    trie: &CandidateTrie,
    plan: &DecodePlan,
    round: &[usize],
    n_prompt: usize,
) -> Result<Vec<(usize, i32)>> {
    let mut seqs_of: HashMap<usize, Vec<i32>> = HashMap::new();
    for (seq, &end) in round.iter().enumerate() {
        for node in trie.lineage(end) {
            seqs_of.entry(node).or_default().push(seq as i32);
        }
    }
    let mut rows = Vec::new();
    for node in plan.union(trie, round) {
        let wanted = trie.branches(Some(node));
        batch
            .add(
                LlamaToken(trie.nodes[node].token),
                (n_prompt + trie.nodes[node].depth) as i32,
                &seqs_of[&node],
                wanted,
            )
            .map_err(batch_error)?;
        if wanted {
            rows.push((node, batch.n_tokens() - 1));
        }
    }
    Ok(rows)
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
