//! Ranking many requests at once: packed into shared decodes, on the model's contexts side by
//! side.

use std::collections::HashMap;

use kvrec_core::options::{Mode, Options};
use kvrec_core::{Request, Result};
use llama_cpp_2::llama_batch::LlamaBatch;

use super::prompt::decode;
use super::score::Prepared;
use super::{keep_best, rank, Ranking};
use crate::cancel::Cancel;
use crate::model::Model;
use kvrec_core::template::TemplateSpec;

/// Scores many requests, packing several into each llama.cpp decode: requests join a group
/// while their prompt and branching tokens fit `n_batch` (and the context) and their
/// sequences fit `n_seq_max`; a request too big to share a decode is ranked alone. Groups run
/// on one context per core at once, the model's `n_threads` shared among them: on a CPU two
/// one-thread decodes side by side outrun one two-thread decode of the same work. Each
/// request's result, or its own error, comes back in order; generation requests are ranked
/// one at a time.
pub fn rank_batch(
    model: &Model,
    requests: &[Request],
    options: &Options,
    cancel: &Cancel,
) -> Vec<Result<Ranking>> {
    let spec = options.spec_over(&model.template);
    if options.mode.unwrap_or_default() == Mode::Generate {
        return requests
            .iter()
            .map(|r| rank(model, r, options, cancel))
            .collect();
    }
    let mut results: Vec<Option<Result<Ranking>>> = requests.iter().map(|_| None).collect();
    let work = plan_work(model, requests, &spec, &mut results);
    let all = model
        .threads_for(options)
        .unwrap_or_else(|| model.threads_allowed());
    let workers = (all as usize).min(work.len()).max(1);
    // One unit of work (a single SQL call) leaves the choice to the pool, as `rank` does.
    let threads =
        (workers > 1 || options.n_threads.is_some()).then(|| (all / workers as u32).max(1));
    let per_worker = Options {
        n_threads: threads,
        ..options.clone()
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(&mut results);
    let worker = || loop {
        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(item) = work.get(at) else { break };
        let outcome: Vec<(usize, Result<Ranking>)> = match item {
            Work::Alone(i) => vec![(*i, rank(model, &requests[*i], &per_worker, cancel))],
            Work::Group(group) => match decode_group(model, requests, group, threads, cancel) {
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
    threads: Option<u32>,
    cancel: &Cancel,
) -> Result<Vec<Ranking>> {
    let n_batch = model.load.n_batch as usize;
    let n_seqs: usize = group.iter().map(|(_, p)| p.n_seqs()).sum();
    model.with_context_threads(threads, cancel, |ctx| {
        let mut batch = LlamaBatch::new(n_batch, n_seqs as i32);
        let mut rows = Vec::with_capacity(group.len());
        let mut first_seq = 0;
        for (_, prepared) in group {
            rows.push(prepared.add_all(&mut batch, 0, first_seq)?);
            first_seq += prepared.n_seqs() as i32;
        }
        decode(ctx, &mut batch, cancel)?;
        Ok(group
            .iter()
            .zip(rows)
            .map(|((i, prepared), rows)| {
                let mut logits = HashMap::new();
                for (at, row) in rows {
                    prepared.keep(&mut logits, at, ctx.get_logits_ith(row));
                }
                prepared.finish(model, &requests[*i], &logits)
            })
            .collect())
    })
}
