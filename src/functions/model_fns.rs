//! Model functions: load, unload, and `recommend()`.

use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::{Mode, Options, CALL_OPTIONS, LOAD_OPTIONS};
use kvrec_core::Request;
use kvrec_llm::{rank, registry, Ranking};
use serde_json::json;

use super::prompt_fns::{request, OPTIONS};
use super::SqlArgs;

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

/// What a `recommend`-style call asks for: the model's name, the request and the options.
/// `(user, history, candidates)` uses `default`, `(model, user, history, candidates
/// [, options])` the named one.
pub fn parse_call(args: &dyn SqlArgs) -> Result<(String, Request, Options)> {
    let (name, call) = if args.len() == 3 {
        (DEFAULT_MODEL, args.tail(0, CALL))
    } else {
        (args.text(0, MODEL)?, args.tail(1, CALL))
    };
    let request = request(call.as_ref())?;
    let options = Options::parse(call.opt_text(3, OPTIONS)?, CALL_OPTIONS)?;
    Ok((name.to_string(), request, options))
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

/// Ranks with the model the call names.
pub fn ranking(args: &dyn SqlArgs) -> Result<Ranking> {
    let (name, request, options) = parse_call(args)?;
    let model = registry::get(&name)?;
    checked(rank(&model, &request, &options)?, &options)
}

/// `recommend([model,] user, history, candidates [, options])` → JSON array of ids, best first.
pub fn recommend(args: &dyn SqlArgs) -> Result<String> {
    Ok(json!(ranking(args)?.ids).to_string())
}
