//! Model functions: load, unload, and `recommend()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::{Mode, Options, CALL_OPTIONS, LOAD_OPTIONS, TOPK_OPTIONS};
use kvrec_core::request::parse_json;
use kvrec_core::{ItemId, Request};
use kvrec_llm::{limits, rank, rank_batch, rank_catalog, registry, Cancel, Limits, Model, Ranking};

use super::prompt_fns::{CANDIDATES, HISTORY, OPTIONS, USER};
use super::values::IdRows;
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
/// Refused once the host sealed its settings: locking is then the host's, not a query's.
pub fn lock(_: &dyn SqlArgs) -> Result<String> {
    limits::check_unsealed("locking the models")?;
    registry::lock();
    Ok("locked: kvrec_load_model() and kvrec_unload_model() now refuse".into())
}

const SETTINGS: &str = "a JSON object of host settings, e.g. {\"models\": {\"default\": \"/srv/kvrec.gguf\"}, \"lock_models\": true, \"max_call_ms\": 1000}";

/// `kvrec_configure(settings)`: the host's one call at start-up. Loads the host's `models`
/// (`{name: path}`, from any path: the host is trusted), sets the caps of [`Limits`] (keys
/// not given keep their defaults), locks the registry when `lock_models` is true, and seals
/// all of it: this function and `kvrec_lock_models()` refuse from then on. It seals even
/// when it fails, so a host's mistake never leaves the settings open to a visitor. Returns
/// the caps in force as JSON.
pub fn configure(args: &dyn SqlArgs) -> Result<String> {
    // The argument is read first, so that a NULL is the same error in every host and state.
    let (caps, models, lock_models) = match parse_settings(args) {
        Ok(settings) => settings,
        Err(e) => {
            limits::seal();
            return Err(e);
        }
    };
    limits::check_unsealed("kvrec_configure()")?;
    // The first failure stops the loads; the lock and the seal below happen regardless.
    let outcome = limits::set(caps).and_then(|()| {
        for (name, path) in &models {
            if registry::get(name).is_err() {
                registry::load_as_host(name, path, &Options::default())?;
            }
        }
        Ok(())
    });
    if lock_models {
        registry::lock();
    }
    limits::seal();
    outcome?;
    serde_json::to_string(&limits::get()).map_err(internal)
}

/// The caps, models and lock flag of `kvrec_configure`'s settings argument.
fn parse_settings(args: &dyn SqlArgs) -> Result<(Limits, BTreeMap<String, String>, bool)> {
    let value = parse_json("settings", args.text(0, SETTINGS)?)?;
    let mut map = value
        .as_object()
        .cloned()
        .ok_or_else(|| KvrecError::wrong_type("settings", SETTINGS, &value))?;
    let models = match map.remove("models") {
        None => BTreeMap::new(),
        Some(m) => serde_json::from_value(m).map_err(|e| KvrecError::BadOption {
            key: "models",
            problem: format!("must map model names to GGUF paths ({e})"),
        })?,
    };
    let lock_models = match map.remove("lock_models") {
        None => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            return Err(KvrecError::wrong_type(
                "lock_models",
                "true or false",
                &other,
            ))
        }
    };
    let caps = serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        KvrecError::BadOption {
            key: "settings",
            problem: format!(
                "{e}; the settings are models, lock_models and the caps {}",
                cap_names().join(", ")
            ),
        }
    })?;
    Ok((caps, models, lock_models))
}

/// The names of the caps, for messages.
pub fn cap_names() -> Vec<String> {
    match serde_json::to_value(Limits::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
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

/// The model a call names and its arguments after the name. Three arguments use `default`;
/// four may be `(model, user, history, candidates)` or `(user, history, candidates, options)`:
/// a model name is never JSON (names starting with `{` or `[` are refused at load), so a
/// first argument that is a JSON object is the user.
fn split_model<'a>(
    args: &'a dyn SqlArgs,
    params: &'static [&'static str],
) -> Result<(&'a str, Box<dyn SqlArgs + 'a>)> {
    let user_first = args.len() == 3
        || (args.len() == 4
            && args
                .opt_text(0, MODEL)
                .ok()
                .flatten()
                .is_some_and(|first| first.trim_start().starts_with('{')));
    if user_first {
        Ok((DEFAULT_MODEL, args.tail(0, params)))
    } else {
        Ok((args.text(0, MODEL)?, args.tail(1, params)))
    }
}

/// What a `recommend`-style call asks for: the model, the request (in the model's ids) and
/// the options. `(user, history, candidates [, options])` uses `default`, `(model, user,
/// history, candidates [, options])` the named one.
pub fn parse_call(args: &dyn SqlArgs) -> Result<(Arc<Model>, Request, Options)> {
    let (model, user, history, candidates, options) =
        parse_request(args, CALL, CALL_OPTIONS, |call| {
            let candidates = parse_json("candidates", call.text(2, CANDIDATES)?)?;
            if let Some(list) = candidates.as_array() {
                limits::get().check_candidates(list.len())?;
            }
            Ok(candidates)
        })?;
    let request = model.request(user, history, Some(candidates))?;
    Ok((model, request, options))
}

/// What `recommend` and `recommend_topk` read alike: the host's caps are checked before any
/// JSON is read, then the model, the user, the history, the third argument (`third` reads
/// it: candidates or k) and the options, within the options `allowed`.
fn parse_request<T>(
    args: &dyn SqlArgs,
    params: &'static [&'static str],
    allowed: &[&str],
    third: impl FnOnce(&dyn SqlArgs) -> Result<T>,
) -> Result<(Arc<Model>, serde_json::Value, serde_json::Value, T, Options)> {
    let caps = limits::get();
    caps.check_request_bytes(args.text_bytes())?;
    let (name, call) = split_model(args, params)?;
    let user = parse_json("user", call.text(0, USER)?)?;
    let history = parse_json("history", call.text(1, HISTORY)?)?;
    let third = third(&*call)?;
    let options = Options::parse(call.opt_text(3, OPTIONS)?, allowed)?;
    caps.check_call(&options)?;
    Ok((registry::get(name)?, user, history, third, options))
}

/// Runs one model call under the host's caps: it takes a slot among the calls running at
/// once and is cancelled past its time limit or when the host interrupts it.
pub fn within_caps<T>(
    args: &dyn SqlArgs,
    options: &Options,
    body: impl FnOnce(&Cancel) -> Result<T>,
) -> Result<T> {
    let limit = limits::get().call_ms(options)?;
    let probe = args.host_probe();
    let cancel = Cancel::new(limit, probe.as_deref());
    let _slot = limits::enter(&cancel)?;
    body(&cancel)
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
    let ranking = within_caps(args, &options, |cancel| {
        checked(rank(&model, &request, &options, cancel)?, &options)
    })?;
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
    let rows_args = rows;
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
        let results = guarded(|| {
            within_caps(rows_args[first], options, |cancel| {
                Ok(rank_batch(model, &requests, options, cancel))
            })
        })
        .map_err(|e| (first, e))?;
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
    let (model, user, history, k, options) =
        parse_request(args, TOPK_CALL, TOPK_OPTIONS, |call| {
            let k = call.int(2, "an INTEGER number of items, e.g. 10")?;
            if !(1..=1 << 20).contains(&k) {
                return Err(KvrecError::OutOfRange {
                    arg: "k",
                    problem: format!("must be between 1 and {}, got {k}", 1 << 20),
                });
            }
            Ok(k as usize)
        })?;
    let request = model.request(user, history, None)?;
    Ok((model, request, k, options))
}

/// The `k` best items of the named model's whole catalog for the call's user and history.
pub fn topk_ranking(args: &dyn SqlArgs) -> Result<(Arc<Model>, Ranking)> {
    let (model, request, k, options) = parse_topk(args)?;
    let ranking = within_caps(args, &options, |cancel| {
        rank_catalog(&model, &request, k, &options, cancel)
    })?;
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
