//! Scoring one request: its candidates' answer prefixes as a token trie, decoded with the
//! prompt so that a request is one decode call whenever it fits.

use std::collections::HashMap;

use kvrec_core::options::Options;
use kvrec_core::template::TemplateSpec;
use kvrec_core::{KvrecError, Request, Result};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::prompt::{batch_error, decode, decode_prompt, fit_prompt};
use super::{finish, Ranking};
use crate::cancel::Cancel;
use crate::model::Model;
use crate::trie::{At, CandidateTrie};

/// A request made ready to decode: its prompt, and the trie of its candidates' prefixes.
pub(super) struct Prepared {
    prompt: Vec<LlamaToken>,
    dropped: usize,
    trie: CandidateTrie,
    plan: DecodePlan,
}

impl Prepared {
    pub(super) fn new(model: &Model, request: &Request, spec: &TemplateSpec) -> Result<Prepared> {
        let n_batch = model.load.n_batch as usize;
        let prefixes: Vec<String> = request
            .candidates
            .iter()
            .map(|c| spec.answer_prefix(c.id))
            .collect();
        let continuations: Vec<Vec<i32>> = model
            .tokenize_pieces(&prefixes)
            .into_iter()
            .map(|tokens| tokens.iter().map(|t| t.0).collect())
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
    pub(super) fn n_seqs(&self) -> usize {
        self.plan.ends.len().max(1)
    }

    /// Tokens the request takes when decoded in one round: prompt and branching paths.
    pub(super) fn n_tokens(&self) -> usize {
        self.prompt.len() + self.plan.n_decoded
    }

    /// Adds the prompt's `prompt[from..]` and all trie nodes as sequences `first_seq..`;
    /// returns the rows to read: the prompt's last token (`None`) and the branching nodes.
    pub(super) fn add_all(
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
    pub(super) fn keep(&self, logits: &mut HashMap<(At, i32), f64>, at: At, row: &[f32]) {
        let children = match at {
            None => &self.trie.root_children,
            Some(n) => &self.trie.nodes[n].children,
        };
        for &c in children {
            let token = self.trie.nodes[c].token;
            logits.insert((at, token), f64::from(row[token as usize]));
        }
    }

    /// The candidates ranked by their log-probabilities, with the model's co-watch prior added
    /// when it carries one.
    pub(super) fn finish(
        &self,
        model: &Model,
        request: &Request,
        logits: &HashMap<(At, i32), f64>,
    ) -> Ranking {
        let mut scores = self.trie.scores(|at, token| logits[&(at, token)]);
        if let Some(prior) = &model.prior {
            let history: Vec<i64> = request.history.iter().filter_map(|h| h.id).collect();
            let ids: Vec<i64> = request.candidates.iter().map(|c| c.id).collect();
            prior.apply(&history, &ids, &mut scores);
        }
        finish(request, scores, self.dropped, self.prompt.len())
    }
}

pub(super) fn score(
    model: &Model,
    request: &Request,
    spec: &TemplateSpec,
    options: &Options,
    cancel: &Cancel,
) -> Result<Ranking> {
    let n_ctx = model.load.n_ctx as usize;
    let n_batch = model.load.n_batch as usize;
    let prepared = Prepared::new(model, request, spec)?;
    let (prompt, plan, trie) = (&prepared.prompt, &prepared.plan, &prepared.trie);
    let n_prompt = prompt.len();
    let n_seq = model.load.n_seq_max() as usize;
    let mut logits: HashMap<(At, i32), f64> = HashMap::new();

    model.with_context_threads(model.threads_for(options), cancel, |ctx| {
        let n_tokens = prepared.n_tokens();
        if prepared.n_seqs() <= n_seq && n_tokens <= n_ctx && n_tokens - n_prompt < n_batch {
            // One decode per request: the branching nodes ride in the prompt's last batch.
            let tail = (n_batch - (n_tokens - n_prompt)).min(n_prompt);
            let head = n_prompt - tail;
            let seqs: Vec<i32> = (0..prepared.n_seqs() as i32).collect();
            if head > 0 {
                decode_prompt(ctx, &prompt[..head], &seqs, n_batch, cancel)?;
            }
            let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
            let rows = prepared.add_all(&mut batch, head, 0)?;
            decode(ctx, &mut batch, cancel)?;
            for (at, row) in rows {
                prepared.keep(&mut logits, at, ctx.get_logits_ith(row));
            }
            return Ok(());
        }
        let room = (n_ctx - n_prompt).min(n_batch);
        let rounds = plan.rounds(n_seq, room);
        let seqs: Vec<i32> =
            (0..rounds.iter().map(Vec::len).max().unwrap_or(1).max(1) as i32).collect();
        let root = decode_prompt(ctx, prompt, &seqs, n_batch, cancel)?;
        prepared.keep(&mut logits, None, &root);
        let mut batch = LlamaBatch::new(n_batch, seqs.len() as i32);
        for round in &rounds {
            batch.clear();
            let rows = add_round(&mut batch, trie, round, n_prompt, 0)?;
            decode(ctx, &mut batch, cancel)?;
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
    Ok(prepared.finish(model, request, &logits))
}

/// Which trie nodes to decode, as paths from the first answer token down to the deepest
/// branching nodes ("ends"): each end gets a sequence of its own in a decode round.
pub(super) struct DecodePlan {
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
pub(super) fn add_round(
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
