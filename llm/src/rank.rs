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
    let ranking = match options.mode.unwrap_or_default() {
        Mode::Score => score(model, request, &spec, options)?,
        Mode::Generate => generate(model, request, &spec, options)?,
    };
    Ok(keep_best(ranking, options))
}

/// The ranking cut to the `k` best when the options ask for it.
fn keep_best(mut ranking: Ranking, options: &Options) -> Ranking {
    if let Some(k) = options.k {
        ranking.ids.truncate(k);
        ranking.scores.truncate(k);
    }
    ranking
}

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
/// logits row of the last token.
pub(crate) fn decode_prompt(
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
    model.with_context_threads(model.threads_for(options), |ctx| {
        decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize).map(|_| prompt.len())
    })
}

/// A request made ready to decode: its prompt, and the trie of its candidates' prefixes.
struct Prepared {
    prompt: Vec<LlamaToken>,
    dropped: usize,
    trie: CandidateTrie,
    plan: DecodePlan,
}

impl Prepared {
    fn new(model: &Model, request: &Request, spec: &TemplateSpec) -> Result<Prepared> {
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
        Ok(Prepared {
            prompt,
            dropped,
            trie,
            plan,
        })
    }

    /// Sequences the request takes when decoded in one round.
    fn n_seqs(&self) -> usize {
        self.plan.ends.len().max(1)
    }

    /// Tokens the request takes when decoded in one round: prompt and branching paths.
    fn n_tokens(&self) -> usize {
        self.prompt.len() + self.plan.n_decoded
    }

    /// Adds the prompt's `prompt[from..]` and all trie nodes as sequences `first_seq..`;
    /// returns the rows to read: the prompt's last token (`None`) and the branching nodes.
    fn add_all(
        &self,
        batch: &mut LlamaBatch,
        from: usize,
        first_seq: i32,
    ) -> Result<Vec<(At, i32)>> {
        let seqs: Vec<i32> = (first_seq..first_seq + self.n_seqs() as i32).collect();
        let n_prompt = self.prompt.len();
        for (i, &token) in self.prompt.iter().enumerate().skip(from) {
            batch
                .add(token, i as i32, &seqs, i + 1 == n_prompt)
                .map_err(batch_error)?;
        }
        let mut rows = vec![(None, batch.n_tokens() - 1)];
        let nodes = add_round(batch, &self.trie, &self.plan.ends, n_prompt, first_seq)?;
        rows.extend(nodes.into_iter().map(|(n, row)| (Some(n), row)));
        Ok(rows)
    }

    /// The children's logits of each read row, keyed by where they were read and the token.
    fn keep(&self, logits: &mut HashMap<(At, i32), f64>, at: At, row: &[f32]) {
        let children = match at {
            None => &self.trie.root_children,
            Some(n) => &self.trie.nodes[n].children,
        };
        for &c in children {
            let token = self.trie.nodes[c].token;
            logits.insert((at, token), f64::from(row[token as usize]));
        }
    }

    fn finish(&self, request: &Request, logits: &HashMap<(At, i32), f64>) -> Ranking {
        let scores = self.trie.scores(|at, token| logits[&(at, token)]);
        finish(request, scores, self.dropped, self.prompt.len())
    }
}

fn score(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    options: &Options,
) -> Result<Ranking> {
    let n_ctx = model.load.n_ctx as usize;
    let n_batch = model.load.n_batch as usize;
    let prepared = Prepared::new(model, request, spec)?;
    let (prompt, plan, trie) = (&prepared.prompt, &prepared.plan, &prepared.trie);
    let n_prompt = prompt.len();
    let n_seq = model.load.n_seq_max() as usize;
    let mut logits: HashMap<(At, i32), f64> = HashMap::new();

    model.with_context_threads(model.threads_for(options), |ctx| {
        let n_tokens = prepared.n_tokens();
        if prepared.n_seqs() <= n_seq && n_tokens <= n_ctx && n_tokens - n_prompt < n_batch {
            // One decode per request: the branching nodes ride in the prompt's last batch.
            let tail = (n_batch - (n_tokens - n_prompt)).min(n_prompt);
            let head = n_prompt - tail;
            let seqs: Vec<i32> = (0..prepared.n_seqs() as i32).collect();
            if head > 0 {
                decode_prompt(ctx, &prompt[..head], &seqs, n_batch)?;
            }
            let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
            let rows = prepared.add_all(&mut batch, head, 0)?;
            decode(ctx, &mut batch)?;
            for (at, row) in rows {
                prepared.keep(&mut logits, at, ctx.get_logits_ith(row));
            }
            return Ok(());
        }
        let room = (n_ctx - n_prompt).min(n_batch);
        let rounds = plan.rounds(n_seq, room);
        let seqs: Vec<i32> =
            (0..rounds.iter().map(Vec::len).max().unwrap_or(1).max(1) as i32).collect();
        let root = decode_prompt(ctx, prompt, &seqs, n_batch)?;
        prepared.keep(&mut logits, None, &root);
        let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
        for round in &rounds {
            batch.clear();
            let rows = add_round(&mut batch, trie, round, n_prompt, 0)?;
            decode(ctx, &mut batch)?;
            for (node, row) in rows {
                prepared.keep(&mut logits, Some(node), ctx.get_logits_ith(row));
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
    Ok(prepared.finish(request, &logits))
}

/// Scores many requests, packing several into each llama.cpp decode: requests join a group
/// while their prompt and branching tokens fit `n_batch` (and the context) and their
/// sequences fit `n_seq_max`; a request too big to share a decode is ranked alone. Groups run
/// on one context per core at once, the model's `n_threads` shared among them: on a CPU two
/// one-thread decodes side by side outrun one two-thread decode of the same work. Each
/// request's result, or its own error, comes back in order; generation requests are ranked
/// one at a time.
pub fn rank_batch(model: &Model, requests: &[Request], options: &Options) -> Vec<Result<Ranking>> {
    let mut spec = model.template.clone();
    if let Some(n) = options.max_history {
        spec.max_history = n;
    }
    if options.mode.unwrap_or_default() == Mode::Generate {
        return requests.iter().map(|r| rank(model, r, options)).collect();
    }
    let mut results: Vec<Option<Result<Ranking>>> = requests.iter().map(|_| None).collect();
    let work = plan_work(model, requests, &spec, &mut results);
    let workers = (model.threads_for(options) as usize).min(work.len()).max(1);
    let threads = (model.threads_for(options) / workers as u32).max(1);
    let per_worker = Options {
        n_threads: Some(threads),
        ..options.clone()
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(&mut results);
    let worker = || loop {
        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(item) = work.get(at) else { break };
        let outcome: Vec<(usize, Result<Ranking>)> = match item {
            Work::Alone(i) => vec![(*i, rank(model, &requests[*i], &per_worker))],
            Work::Group(group) => match decode_group(model, requests, group, threads) {
                Ok(rankings) => group
                    .iter()
                    .zip(rankings)
                    .map(|((i, _), r)| (*i, Ok(keep_best(r, options))))
                    .collect(),
                Err(e) => group.iter().map(|(i, _)| (*i, Err(e.clone()))).collect(),
            },
        };
        let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
        for (i, result) in outcome {
            done[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(worker);
        }
        worker();
    });
    results
        .into_iter()
        .map(|r| r.expect("every request gets a result"))
        .collect()
}

/// A unit of batched work: requests sharing one decode, or one ranked on its own.
enum Work {
    Group(Vec<(usize, Prepared)>),
    Alone(usize),
}

/// Prepares every request and packs them into groups by the token and sequence budget;
/// requests that fail to prepare get their error in `results` right away.
fn plan_work(
    model: &Model,
    requests: &[Request],
    spec: &TemplateSpec,
    results: &mut [Option<Result<Ranking>>],
) -> Vec<Work> {
    let budget = (model.load.n_batch as usize).min(model.load.n_ctx as usize);
    let n_seq = model.load.n_seq_max() as usize;
    let mut work = Vec::new();
    let mut group: Vec<(usize, Prepared)> = Vec::new();
    let (mut tokens, mut seqs) = (0, 0);
    for (i, request) in requests.iter().enumerate() {
        let prepared = match Prepared::new(model, request, spec) {
            Ok(p) => p,
            Err(e) => {
                results[i] = Some(Err(e));
                continue;
            }
        };
        let (n_tokens, n_seqs) = (prepared.n_tokens(), prepared.n_seqs());
        if n_tokens > budget || n_seqs > n_seq {
            work.push(Work::Alone(i));
            continue;
        }
        if tokens + n_tokens > budget || seqs + n_seqs > n_seq {
            work.push(Work::Group(std::mem::take(&mut group)));
            tokens = 0;
            seqs = 0;
        }
        tokens += n_tokens;
        seqs += n_seqs;
        group.push((i, prepared));
    }
    if !group.is_empty() {
        work.push(Work::Group(group));
    }
    work
}

/// One decode for a group of prepared requests that fit a batch together.
fn decode_group(
    model: &Model,
    requests: &[Request],
    group: &[(usize, Prepared)],
    threads: u32,
) -> Result<Vec<Ranking>> {
    let n_batch = model.load.n_batch as usize;
    let n_seqs: usize = group.iter().map(|(_, p)| p.n_seqs()).sum();
    model.with_context_threads(threads, |ctx| {
        let mut batch = LlamaBatch::new(n_batch, n_seqs as i32);
        let mut rows = Vec::with_capacity(group.len());
        let mut first_seq = 0;
        for (_, prepared) in group {
            rows.push(prepared.add_all(&mut batch, 0, first_seq)?);
            first_seq += prepared.n_seqs() as i32;
        }
        decode(ctx, &mut batch)?;
        Ok(group
            .iter()
            .zip(rows)
            .map(|((i, prepared), rows)| {
                let mut logits = HashMap::new();
                for (at, row) in rows {
                    prepared.keep(&mut logits, at, ctx.get_logits_ith(row));
                }
                prepared.finish(&requests[*i], &logits)
            })
            .collect())
    })
}

/// Which trie nodes to decode, as paths from the first answer token down to the deepest
/// branching nodes ("ends"): each end gets a sequence of its own in a decode round.
struct DecodePlan {
    /// Decoded nodes with no decoded child: each path to one is a sequence.
    ends: Vec<usize>,
    /// Tokens on the longest such path.
    deepest: usize,
    /// Nodes decoded in all: the tokens the request adds when decoded in one round.
    n_decoded: usize,
}

impl DecodePlan {
    fn new(trie: &CandidateTrie) -> DecodePlan {
        let decoded = trie.to_decode();
        let n_decoded = decoded.len();
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
        DecodePlan {
            ends,
            deepest,
            n_decoded,
        }
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
/// sequence `first_seq + k`, a node tagged with the sequences of every end below it; returns the rows of the
/// branching nodes, whose logits score their children.
fn add_round(
    batch: &mut LlamaBatch,
    trie: &CandidateTrie,
    round: &[usize],
    n_prompt: usize,
    first_seq: i32,
) -> Result<Vec<(usize, i32)>> {
    let mut seqs_of: HashMap<usize, Vec<i32>> = HashMap::new();
    for (seq, &end) in round.iter().enumerate() {
        for node in trie.lineage(end) {
            seqs_of
                .entry(node)
                .or_default()
                .push(first_seq + seq as i32);
        }
    }
    // Node indices order parents before children.
    let mut nodes: Vec<usize> = seqs_of.keys().copied().collect();
    nodes.sort_unstable();
    let mut rows = Vec::new();
    for node in nodes {
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
    options: &Options,
) -> Result<Ranking> {
    let answer = spec.render_answer(&request.candidate_ids());
    let max_new = model.tokenize(&answer, false).len() + 8;
    let (prompt, dropped) = fit_prompt(model, request, spec, max_new)?;
    let n_prompt = prompt.len();
    let vocab = model.llama().vocab();
    let generated = model.with_context_threads(model.threads_for(options), |ctx| {
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
