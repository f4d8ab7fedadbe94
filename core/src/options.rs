//! The optional JSON `options` argument shared by the SQL functions.
//!
//! Each function names the keys it understands; any other key is an error rather than being
//! silently ignored, so a misspelt option never looks like it worked.

use serde_json::{Map, Value};

use crate::error::{json_type_name, KvrecError, Result};
use crate::template::TemplateSpec;

/// Parsed options; a key that was not given is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub max_history: Option<usize>,
    pub template: Option<TemplateSpec>,
    pub positive: Option<i64>,
}

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
        let mut spec = self.template.clone().unwrap_or_default();
        if let Some(n) = self.max_history {
            spec.max_history = n;
        }
        spec
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
