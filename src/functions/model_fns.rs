//! Model functions: load, unload, and `recommend()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::{Mode, Options, CALL_OPTIONS, LOAD_OPTIONS, TOPK_OPTIONS};
use kvrec_core::request::parse_json;
use kvrec_core::{ItemId, Request};
use kvrec_llm::{rank, rank_batch, rank_catalog, registry, Model, Ranking};

use super::catalog::IdRows;
use super::prompt_fns::{CANDIDATES, HISTORY, OPTIONS, USER};
use super::{guarded, SqlArgs};

pub const MODEL: &str = "the name of a model loaded with kvrec_load_model()";
/// The model `recommend(user, history, candidates)` uses.
pub const DEFAULT_MODEL: &str = "default";

/// `kvrec_load_model(name, path [, options])` → JSON description of the loaded model.
pub fn load(args: &dyn SqlArgs) -> Result<String> {
    let name = args.text(0, "a model name such as 'default'")?;
    let path = args.text(1, "the path of a .gguf file")?;
    let options = Options::parse(args.opt_text(2, OPTIONS)?, LOAD_OPTIONS)?;
    let info = registry::load(name, path, &options)?;
    serde_json::to_string(&info).map_err(internal)
}

/// `kvrec_lock_models()` → a note: no model can be loaded or unloaded in this process any more.
pub fn lock(_: &dyn SqlArgs) -> Result<String> {
    registry::lock();
    Ok("locked: kvrec_load_model() and kvrec_unload_model() now refuse".into())
}

/// `kvrec_unload_model(name)` → the name; memory is freed once running calls finish.
pub fn unload(args: &dyn SqlArgs) -> Result<String> {
    let name = args.text(0, MODEL)?;
    registry::unload(name)?;
    Ok(name.to_string())
}

fn internal(e: impl std::fmt::Display) -> KvrecError {
    KvrecError::Internal {
        detail: e.to_string(),
    }
}

const CALL: &[&str] = &["user", "history", "candidates", "options?"];

/// What a `recommend`-style call asks for: the model, the request (in the model's ids) and
/// the options. `(user, history, candidates)` uses `default`, `(model, user, history,
/// candidates [, options])` the named one.
pub fn parse_call(args: &dyn SqlArgs) -> Result<(Arc<Model>, Request, Options)> {
    let (name, call) = if args.len() == 3 {
        (DEFAULT_MODEL, args.tail(0, CALL))
    } else {
        (args.text(0, MODEL)?, args.tail(1, CALL))
    };
    let user = parse_json("user", call.text(0, USER)?)?;
    let history = parse_json("history", call.text(1, HISTORY)?)?;
    let candidates = parse_json("candidates", call.text(2, CANDIDATES)?)?;
    let options = Options::parse(call.opt_text(3, OPTIONS)?, CALL_OPTIONS)?;
    let model = registry::get(name)?;
    let request = model.request(&user, &history, Some(&candidates))?;
    Ok((model, request, options))
}

/// A generated answer that is not a valid ranking is an error that quotes it.
pub fn checked(ranking: Ranking, options: &Options) -> Result<Ranking> {
    if options.mode == Some(Mode::Generate) {
        if let Some(parsed) = ranking.parsed.as_ref().filter(|p| !p.valid) {
            return Err(KvrecError::InvalidAnswer {
                detail: format!(
                    "invalid tokens {:?}, repeated ids {:?}",
                    parsed.invalid, parsed.duplicates
                ),
                text: ranking
                    .generated
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
    }
    Ok(ranking)
}

/// Ranks with the model the call names; the model comes along to map ids back.
pub fn ranking(args: &dyn SqlArgs) -> Result<(Arc<Model>, Ranking)> {
    let (model, request, options) = parse_call(args)?;
    let ranking = checked(rank(&model, &request, &options)?, &options)?;
    Ok((model, ranking))
}

/// A ranking's ids as the app's ids.
pub fn app_ids(model: &Model, ranking: &Ranking) -> Vec<ItemId> {
    ranking.ids.iter().map(|&id| model.app_id(id)).collect()
}

/// `recommend([model,] user, history, candidates [, options])` → ids, best first, of each row.
/// Every row is parsed first (a bad row fails before any model time is spent); rows that
/// share a model and options are then ranked together by `rank_batch`, which packs them into
/// llama.cpp decodes and runs the model's contexts side by side.
pub fn recommend_rows(rows: &[&dyn SqlArgs]) -> IdRows {
    let mut calls = Vec::with_capacity(rows.len());
    for (row, args) in rows.iter().enumerate() {
        calls.push(guarded(|| parse_call(*args)).map_err(|e| (row, e))?);
    }
    let mut groups: BTreeMap<(&str, String), Vec<usize>> = BTreeMap::new();
    for (row, (model, _, options)) in calls.iter().enumerate() {
        groups
            .entry((model.info.name.as_str(), format!("{options:?}")))
            .or_default()
            .push(row);
    }
    let mut ids = vec![Vec::new(); calls.len()];
    for (_, rows) in groups {
        let first = rows[0];
        let (model, _, options) = &calls[first];
        let requests: Vec<Request> = rows.iter().map(|&r| calls[r].1.clone()).collect();
        let results =
            guarded(|| Ok(rank_batch(model, &requests, options))).map_err(|e| (first, e))?;
        for (&row, result) in rows.iter().zip(results) {
            let ranking = result
                .and_then(|r| checked(r, options))
                .map_err(|e| (row, e))?;
            ids[row] = app_ids(model, &ranking);
        }
    }
    Ok(ids)
}

const TOPK_CALL: &[&str] = &["user", "history", "k", "options?"];

/// `recommend_topk([model,] user, history, k [, options])`: the model, the request (no
/// candidates, in the model's ids), `k` and the options.
fn parse_topk(args: &dyn SqlArgs) -> Result<(Arc<Model>, Request, usize, Options)> {
    let (name, call) = if args.len() == 3 {
        (DEFAULT_MODEL, args.tail(0, TOPK_CALL))
    } else {
        (args.text(0, MODEL)?, args.tail(1, TOPK_CALL))
    };
    let user = parse_json("user", call.text(0, USER)?)?;
    let history = parse_json("history", call.text(1, HISTORY)?)?;
    let k = call.int(2, "an INTEGER number of items, e.g. 10")?;
    if !(1..=1 << 20).contains(&k) {
        return Err(KvrecError::OutOfRange {
            arg: "k",
            problem: format!("must be between 1 and {}, got {k}", 1 << 20),
        });
    }
    let options = Options::parse(call.opt_text(3, OPTIONS)?, TOPK_OPTIONS)?;
    let model = registry::get(name)?;
    let request = model.request(&user, &history, None)?;
    Ok((model, request, k as usize, options))
}

/// The `k` best items of the named model's whole catalog for the call's user and history.
pub fn topk_ranking(args: &dyn SqlArgs) -> Result<(Arc<Model>, Ranking)> {
    let (model, request, k, options) = parse_topk(args)?;
    let ranking = rank_catalog(&model, &request, k, &options)?;
    Ok((model, ranking))
}

/// `recommend_topk([model,] user, history, k [, options])` → ids, best first, of each row.
pub fn recommend_topk_rows(rows: &[&dyn SqlArgs]) -> IdRows {
    rows.iter()
        .enumerate()
        .map(|(row, args)| {
            guarded(|| topk_ranking(*args))
                .map(|(model, r)| app_ids(&model, &r))
                .map_err(|e| (row, e))
        })
        .collect()
}
