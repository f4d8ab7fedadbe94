//! The optional JSON `options` argument shared by the SQL functions.
//!
//! Each function names the keys it understands; any other key is an error rather than being
//! silently ignored, so a misspelt option never looks like it worked.

use serde_json::{Map, Value};

use crate::error::{json_type_name, KvrecError, Result};
use crate::template::TemplateSpec;

/// How a model ranks: by scoring every candidate (default) or by generating the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Score,
    Generate,
}

/// Parsed options; a key that was not given is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub max_history: Option<usize>,
    pub template: Option<TemplateSpec>,
    pub positive: Option<i64>,
    /// Return only the best `k` candidates.
    pub k: Option<usize>,
    pub mode: Option<Mode>,
    pub n_threads: Option<u32>,
    pub seed: Option<u64>,
    /// Load options: the context size, GPU layers and batch size of a model's contexts.
    pub n_ctx: Option<u32>,
    pub n_gpu_layers: Option<u32>,
    pub n_batch: Option<u32>,
    /// A llama.cpp LoRA adapter GGUF applied on top of the model (load option).
    pub lora: Option<String>,
    /// `recommend_topk`: whether items already in the history may be recommended again.
    pub keep_history: Option<bool>,
    /// Milliseconds the call may run before it is cancelled (within the host's cap).
    pub timeout_ms: Option<u64>,
}

/// Keys `recommend()` and friends accept per call.
pub const CALL_OPTIONS: &[&str] = &[
    "k",
    "mode",
    "max_history",
    "n_threads",
    "seed",
    "timeout_ms",
];
/// Keys `recommend_topk()` and `recommend_topk_each()` accept (`k` is an argument there).
pub const TOPK_OPTIONS: &[&str] = &["max_history", "n_threads", "keep_history", "timeout_ms"];
/// Keys `kvrec_load_model()` accepts.
pub const LOAD_OPTIONS: &[&str] = &["n_ctx", "n_gpu_layers", "n_batch", "n_threads", "lora"];

impl Options {
    /// Parses `text` (JSON object, or `None` for no options) accepting only `allowed` keys.
    pub fn parse(text: Option<&str>, allowed: &[&str]) -> Result<Options> {
        let Some(text) = text else {
            return Ok(Options::default());
        };
        let value: Value = serde_json::from_str(text).map_err(|e| KvrecError::InvalidJson {
            arg: "options",
            detail: e.to_string(),
        })?;
        let map = value.as_object().ok_or_else(|| {
            KvrecError::wrong_type(
                "options",
                "a JSON object, e.g. {\"max_history\": 20}",
                &value,
            )
        })?;
        Options::from_map(map, allowed)
    }

    fn from_map(map: &Map<String, Value>, allowed: &[&str]) -> Result<Options> {
        let mut options = Options::default();
        for (key, value) in map {
            if LOAD_OPTIONS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                return Err(KvrecError::LoadOption { key: key.clone() });
            }
            if !allowed.contains(&key.as_str()) {
                return Err(KvrecError::UnknownOption {
                    key: key.chars().take(64).collect(),
                    allowed: allowed.join(", "),
                });
            }
            match key.as_str() {
                "max_history" => {
                    options.max_history = Some(
                        value
                            .as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| {
                                bad("max_history", "a non-negative integer such as 20", value)
                            })?,
                    )
                }
                "positive" => {
                    options.positive =
                        Some(value.as_i64().ok_or_else(|| {
                            bad("positive", "the integer id of one candidate", value)
                        })?)
                }
                "template" => options.template = Some(TemplateSpec::from_json(value)?),
                "k" => options.k = Some(ranged(value, "k", 1, 1 << 20)? as usize),
                "mode" => {
                    options.mode = Some(match value.as_str() {
                        Some("score") => Mode::Score,
                        Some("generate") => Mode::Generate,
                        _ => return Err(bad("mode", "'score' or 'generate'", value)),
                    })
                }
                "n_threads" => options.n_threads = Some(ranged(value, "n_threads", 1, 512)? as u32),
                "seed" => {
                    options.seed = Some(
                        value
                            .as_u64()
                            .ok_or_else(|| bad("seed", "a non-negative integer", value))?,
                    )
                }
                "timeout_ms" => {
                    options.timeout_ms = Some(ranged(value, "timeout_ms", 1, 86_400_000)? as u64)
                }
                "n_ctx" => options.n_ctx = Some(ranged(value, "n_ctx", 64, 1 << 20)? as u32),
                "n_gpu_layers" => {
                    options.n_gpu_layers = Some(ranged(value, "n_gpu_layers", 0, 10_000)? as u32)
                }
                "n_batch" => options.n_batch = Some(ranged(value, "n_batch", 16, 1 << 16)? as u32),
                "keep_history" => {
                    options.keep_history = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| bad("keep_history", "true or false", value))?,
                    )
                }
                "lora" => {
                    options.lora = Some(
                        value
                            .as_str()
                            .filter(|path| !path.is_empty())
                            .ok_or_else(|| {
                                bad("lora", "the path of a LoRA adapter GGUF (text)", value)
                            })?
                            .to_string(),
                    )
                }
                _ => {
                    return Err(KvrecError::Internal {
                        detail: format!("option '{key}' is allowed but not handled"),
                    })
                }
            }
        }
        Ok(options)
    }

    /// The template to render with: the given spec or the default, with `max_history` applied.
    pub fn template_spec(&self) -> TemplateSpec {
        self.spec_over(self.template.as_ref().unwrap_or(&TemplateSpec::default()))
    }

    /// `base` (a model's template) with this call's `max_history` applied.
    pub fn spec_over(&self, base: &TemplateSpec) -> TemplateSpec {
        let mut spec = base.clone();
        if let Some(n) = self.max_history {
            spec.max_history = n;
        }
        spec
    }
}

/// An integer option within `min..=max`.
fn ranged(value: &Value, key: &'static str, min: u64, max: u64) -> Result<u64> {
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(key, &format!("an integer from {min} to {max}"), value)),
    }
}

fn bad(key: &'static str, expected: &str, got: &Value) -> KvrecError {
    KvrecError::BadOption {
        key,
        problem: format!("must be {expected}, got {}", describe(got)),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => json_type_name(other).to_string(),
    }
}
