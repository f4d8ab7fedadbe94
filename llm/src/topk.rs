//! Ranking a model's whole catalog: one pass over the prompt, and every catalog item scored by
//! the logit of the token its answer starts with. That needs a model whose items each have a
//! token of their own (a sequence-layout model with one token per id); its softmax over those
//! tokens is then the model's distribution over the catalog, exactly what training optimised.

use std::collections::{HashMap, HashSet};

use kvrec_core::options::Options;
use kvrec_core::{KvrecError, Request, Result};
use llama_cpp_2::token::LlamaToken;

use crate::cancel::Cancel;
use crate::model::Model;
use crate::rank::{decode_prompt, fit_prompt, Ranking};

/// Each catalog item's deciding token, in catalog order; an error when the model has no
/// catalog or two items start with the same token.
fn item_tokens(model: &Model) -> Result<&[LlamaToken]> {
    let items = model.items.as_ref().ok_or_else(|| KvrecError::NoCatalog {
        model: model.info.name.clone(),
    })?;
    model
        .item_tokens
        .get_or_init(|| {
            let mut first_of: HashMap<LlamaToken, i64> = HashMap::with_capacity(items.len());
            let mut tokens = Vec::with_capacity(items.len());
            for &id in items {
                let prefix = model.template.answer_prefix(id);
                let token = *model.tokenize(&prefix, false).first().ok_or_else(|| {
                    KvrecError::Internal {
                        detail: format!("the answer prefix of item {id} has no tokens"),
                    }
                })?;
                if let Some(&first) = first_of.get(&token) {
                    return Err(KvrecError::NoItemTokens {
                        model: model.info.name.clone(),
                        first,
                        second: id,
                        token: token.0,
                    });
                }
                first_of.insert(token, id);
                tokens.push(token);
            }
            Ok(tokens)
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// The `k` catalog items the model ranks highest after `request`'s history (items already in
/// the history are left out unless `keep_history`), best first, with their log-probabilities
/// under the model's distribution over the eligible items (its co-watch prior added, when it
/// carries one).
pub fn rank_catalog(
    model: &Model,
    request: &Request,
    k: usize,
    options: &Options,
    cancel: &Cancel,
) -> Result<Ranking> {
    let tokens = item_tokens(model)?;
    let items = model.items.as_deref().unwrap_or_default();
    let spec = options.spec_over(&model.template);
    let (prompt, dropped) = fit_prompt(model, request, &spec, 0)?;
    let logits = model.with_context_threads(model.threads_for(options), cancel, |ctx| {
        decode_prompt(ctx, &prompt, &[0], model.load.n_batch as usize, cancel)
    })?;
    let seen: HashSet<i64> = if options.keep_history.unwrap_or(false) {
        HashSet::new()
    } else {
        request.history.iter().filter_map(|h| h.id).collect()
    };
    let prior = match &model.prior {
        Some(prior) => {
            let history: Vec<i64> = request.history.iter().filter_map(|h| h.id).collect();
            prior.terms(&history)
        }
        None => HashMap::new(),
    };
    let eligible: Vec<(i64, f64)> = items
        .iter()
        .zip(tokens)
        .filter(|(id, _)| !seen.contains(id))
        .map(|(&id, token)| {
            let term = prior.get(&id).copied().unwrap_or(0.0);
            (id, f64::from(logits[token.0 as usize]) + term)
        })
        .collect();
    // Log-softmax over the eligible items only.
    let max = eligible
        .iter()
        .map(|&(_, l)| l)
        .fold(f64::NEG_INFINITY, f64::max);
    let log_sum = max
        + eligible
            .iter()
            .map(|&(_, l)| (l - max).exp())
            .sum::<f64>()
            .ln();
    let mut ranked = eligible;
    let k = k.min(ranked.len());
    // Only the k best need ordering: select, then sort those (ties: the smaller id first).
    let best_first = |a: &(i64, f64), b: &(i64, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < ranked.len() {
        ranked.select_nth_unstable_by(k, best_first);
        ranked.truncate(k);
    }
    ranked.sort_by(best_first);
    Ok(Ranking {
        ids: ranked.iter().map(|&(id, _)| id).collect(),
        scores: ranked.iter().map(|&(_, l)| l - log_sum).collect(),
        dropped_history: dropped,
        prompt_tokens: prompt.len(),
        generated: None,
        parsed: None,
    })
}
