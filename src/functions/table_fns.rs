//! The table functions' rows, shared by both hosts: augmented copies, the loaded models, and
//! rankings one row per item.

use kvrec_core::augment::{augment_dataset, Strategy, DEFAULT_COPIES};
use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::Options;
use kvrec_core::request::Request;
use kvrec_core::ItemId;
use kvrec_llm::{registry, Model, Ranking};
use std::sync::Arc;

use super::model_fns::{ranking, topk_ranking};
use super::prompt_fns::{augmented_json, CANDIDATES, HISTORY, OPTIONS, SEED, STRATEGY, USER};
use super::values::Value;
use super::SqlArgs;

/// Copies above this are refused: each copy is a full prompt held in memory.
const MAX_COPIES: i64 = 10_000;

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// `kvrec_augmentations(user, history, candidates, strategy, seed [, copies [, options]])`: the
/// original request (copy 0) and `copies` augmented copies (default 4, the paper's 1:4), each
/// with its rendered prompt and answer.
pub fn augmentations(args: &dyn SqlArgs) -> Result<Vec<Vec<Value>>> {
    let request = Request::from_json_texts(
        args.text(0, USER)?,
        args.text(1, HISTORY)?,
        args.text(2, CANDIDATES)?,
    )?;
    let strategy = Strategy::parse(args.text(3, STRATEGY)?)?;
    let seed = args.int(4, SEED)?;
    let copies = if args.is_null(5) {
        DEFAULT_COPIES as i64
    } else {
        args.int(5, "an INTEGER number of copies")?
    };
    if !(0..=MAX_COPIES).contains(&copies) {
        return Err(KvrecError::OutOfRange {
            arg: "copies",
            problem: format!("must be between 0 and {MAX_COPIES}, got {copies}"),
        });
    }
    let options = Options::parse(
        args.opt_text(6, OPTIONS)?,
        &["positive", "max_history", "template"],
    )?;
    let spec = options.template_spec();
    let copies = augment_dataset(
        &request,
        options.positive,
        &strategy,
        seed as u64,
        copies as usize,
    )?;
    Ok(copies
        .iter()
        .enumerate()
        .map(|(i, copy)| {
            vec![
                Value::Int(i as i64),
                text(if i == 0 { "none" } else { strategy.name() }),
                text(augmented_json(copy).to_string()),
                text(spec.render_prompt(&copy.request)),
                copy.target
                    .as_ref()
                    .map_or(Value::Null, |ids| text(spec.render_answer(ids))),
                text(serde_json::Value::from(copy.masked.clone()).to_string()),
            ]
        })
        .collect())
}

/// Whether the model a `recommend_each`-style call names answers with text ids (its `id`
/// column is then TEXT in DuckDB); false when it names no loaded model.
pub fn text_ids(model_arg: &dyn SqlArgs) -> bool {
    model_arg
        .text(0, super::model_fns::MODEL)
        .ok()
        .and_then(|name| registry::get(name).ok())
        .is_some_and(|m| m.ids.as_ref().is_some_and(|ids| ids.has_text()))
}

/// `kvrec_models()`: one row per loaded model.
pub fn models(_: &dyn SqlArgs) -> Result<Vec<Vec<Value>>> {
    Ok(registry::list()
        .into_iter()
        .map(|m| {
            vec![
                text(m.name),
                text(m.path),
                text(m.architecture),
                Value::Int(m.size_bytes as i64),
                Value::Int(m.n_params as i64),
                Value::Int(i64::from(m.n_ctx)),
                Value::Int(i64::from(m.n_ctx_train)),
                Value::Int(i64::from(m.n_gpu_layers)),
                Value::Int(i64::from(m.template_version)),
                text(m.template_source),
                Value::Int(m.n_items as i64),
            ]
        })
        .collect())
}

/// Rows `(rank, id, score, dropped_history, prompt_tokens)`, best first, ids the app's.
fn ranked_rows((model, r): (Arc<Model>, Ranking)) -> Vec<Vec<Value>> {
    r.ids
        .iter()
        .zip(&r.scores)
        .enumerate()
        .map(|(i, (&id, &score))| {
            vec![
                Value::Int(i as i64 + 1),
                match model.app_id(id) {
                    ItemId::Int(v) => Value::Int(v),
                    ItemId::Text(s) => Value::Text(s),
                },
                Value::Real(score),
                Value::Int(r.dropped_history as i64),
                Value::Int(r.prompt_tokens as i64),
            ]
        })
        .collect()
}

/// `recommend_each(model, user, history, candidates [, options])`: `recommend()` as rows.
pub fn recommend_each(args: &dyn SqlArgs) -> Result<Vec<Vec<Value>>> {
    Ok(ranked_rows(ranking(args)?))
}

/// `recommend_topk_each(model, user, history, k [, options])`: `recommend_topk()` as rows.
pub fn recommend_topk_each(args: &dyn SqlArgs) -> Result<Vec<Vec<Value>>> {
    Ok(ranked_rows(topk_ranking(args)?))
}
