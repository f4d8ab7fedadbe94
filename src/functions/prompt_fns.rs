//! The model-free scalar functions: render, answer, parse, augment.

use serde_json::{json, Value};

use super::SqlArgs;
use kvrec_core::answer::{parse_answer, target_ids};
use kvrec_core::augment::{augment as augment_request, Augmented, Strategy};
use kvrec_core::error::{KvrecError, Result};
use kvrec_core::options::Options;
use kvrec_core::request::Request;

pub const USER: &str = "a JSON object of user key-values, e.g. json_object('gender', 'F')";
pub const HISTORY: &str = "a JSON array of watched items, e.g. json_group_array(json_object('title', title, 'rating', rating))";
pub const CANDIDATES: &str = "a JSON array of candidates, e.g. json_group_array(json_object('id', movie_id, 'title', title))";
pub const OPTIONS: &str = "a JSON object of options, or NULL";
pub const STRATEGY: &str = "a strategy name such as 'SC', 'SO', 'M3' or 'SC+SO'";
pub const SEED: &str = "an INTEGER seed";

/// Parses the user/history/candidates arguments at positions 0, 1 and 2.
fn request(args: &dyn SqlArgs) -> Result<Request> {
    Request::from_json_texts(
        args.text(0, USER)?,
        args.text(1, HISTORY)?,
        args.text(2, CANDIDATES)?,
    )
}

/// `kvrec_prompt(user, history, candidates [, options])`
pub fn prompt(args: &dyn SqlArgs) -> Result<String> {
    let request = request(args)?;
    let options = Options::parse(args.opt_text(3, OPTIONS)?, &["max_history", "template"])?;
    Ok(options.template_spec().render_prompt(&request))
}

/// `kvrec_target(candidates, positive_id [, options])`: the answer a model is trained on.
pub fn target(args: &dyn SqlArgs) -> Result<String> {
    let candidates = Request::from_json_texts("{}", "[]", args.text(0, CANDIDATES)?)?;
    let positive = args.int(1, "the INTEGER id of the positive candidate")?;
    let options = Options::parse(args.opt_text(2, OPTIONS)?, &["template"])?;
    let ids = target_ids(&candidates, positive)?;
    Ok(options.template_spec().render_answer(&ids))
}

/// `kvrec_parse_answer(text, candidates)`: ids, validity and what was wrong, as JSON.
pub fn parse(args: &dyn SqlArgs) -> Result<String> {
    let text = args.text(0, "the generated answer text")?;
    let candidates = Request::from_json_texts("{}", "[]", args.text(1, CANDIDATES)?)?;
    let parsed = parse_answer(text, &candidates.candidate_ids());
    let json = serde_json::to_string(&parsed).map_err(|e| KvrecError::Internal {
        detail: e.to_string(),
    })?;
    Ok(json)
}

/// `kvrec_augment(user, history, candidates, strategy, seed [, options])`
pub fn augment(args: &dyn SqlArgs) -> Result<String> {
    let request = request(args)?;
    let strategy = Strategy::parse(args.text(3, STRATEGY)?)?;
    let seed = args.int(4, SEED)? as u64;
    let options = Options::parse(args.opt_text(5, OPTIONS)?, &["positive"])?;
    let augmented = augment_request(&request, options.positive, &strategy, seed, 0)?;
    Ok(augmented_json(&augmented).to_string())
}

/// `{"user":…, "history":…, "candidates":…, "target":[…]?, "masked":[…]}`
pub fn augmented_json(augmented: &Augmented) -> Value {
    let mut value = augmented.request.to_json();
    if let Some(object) = value.as_object_mut() {
        if let Some(target) = &augmented.target {
            object.insert("target".into(), json!(target));
        }
        object.insert("masked".into(), json!(augmented.masked));
    }
    value
}
