//! Model functions: load, unload, and `recommend()`.

use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::{Mode, Options, CALL_OPTIONS, LOAD_OPTIONS};
use kvrec_llm::{rank, registry, Ranking};
use serde_json::json;

use super::call::{Args, Output};
use super::prompt_fns::{request, OPTIONS};

pub const MODEL: &str = "the name of a model loaded with kvrec_load_model()";
/// The model `recommend(user, history, candidates)` uses.
pub const DEFAULT_MODEL: &str = "default";

/// `kvrec_load_model(name, path [, options])` → JSON description of the loaded model.
pub fn load(args: &Args) -> Result<Output> {
    let name = args.text(0, "a model name such as 'default'")?;
    let path = args.text(1, "the path of a .gguf file")?;
    let options = Options::parse(args.opt_text(2, OPTIONS)?, LOAD_OPTIONS)?;
    let info = registry::load(name, path, &options)?;
    Ok(Output::Text(
        serde_json::to_string(&info).map_err(internal)?,
    ))
}

/// `kvrec_unload_model(name)` → the name; memory is freed once running calls finish.
pub fn unload(args: &Args) -> Result<Output> {
    let name = args.text(0, MODEL)?;
    registry::unload(name)?;
    Ok(Output::Text(name.to_string()))
}

fn internal(e: impl std::fmt::Display) -> KvrecError {
    KvrecError::Internal {
        detail: e.to_string(),
    }
}

const CALL: &[&str] = &["user", "history", "candidates", "options?"];

/// Ranks with the model the call names: `(user, history, candidates)` uses `default`,
/// `(model, user, history, candidates [, options])` the named one.
pub fn ranking(args: &Args) -> Result<Ranking> {
    let (name, call) = if args.len() == 3 {
        (DEFAULT_MODEL, args.tail(0, CALL))
    } else {
        (args.text(0, MODEL)?, args.tail(1, CALL))
    };
    let model = registry::get(name)?;
    let request = request(&call)?;
    let options = Options::parse(call.opt_text(3, OPTIONS)?, CALL_OPTIONS)?;
    let ranking = rank(&model, &request, &options)?;
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

/// `recommend([model,] user, history, candidates [, options])` → JSON array of ids, best first.
pub fn recommend(args: &Args) -> Result<Output> {
    Ok(Output::Text(json!(ranking(args)?.ids).to_string()))
}
