//! The InstructMK prompt template: a versioned, serialisable spec and the pure function that
//! renders a [`Request`] through it.
//!
//! The spec travels with a model (GGUF metadata key [`TEMPLATE_METADATA_KEY`]) so that serving
//! renders exactly the prompts the model was trained on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{KvrecError, Result};
use crate::request::{history_keys, Request};

/// Identifies the template family; a spec with another format is refused.
pub const TEMPLATE_FORMAT: &str = "kvrec-instructmk";
/// The newest spec version this build renders (2 added `candidate_id`; 3 added
/// `history_id_label`, `history_keys` and `candidate_keys`; 4 added `layout`).
pub const TEMPLATE_VERSION: u32 = 4;
/// GGUF metadata key under which the finetune crate stores the spec as JSON.
pub const TEMPLATE_METADATA_KEY: &str = "kvrec.template";
/// GGUF metadata key of a model's item catalog: a JSON array of the item ids it was trained
/// on, the items `recommend_topk` ranks.
pub const ITEMS_METADATA_KEY: &str = "kvrec.items";
/// The paper's history length (|S_U| = 20).
pub const DEFAULT_MAX_HISTORY: usize = 20;

/// How a request becomes prompt text, and how the answer is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateSpec {
    pub format: String,
    pub version: u32,
    pub instruction_header: String,
    pub instruction: String,
    pub input_header: String,
    pub response_header: String,
    /// Display labels of user keys; other keys are shown humanised ("zip_code" → "Zip code").
    pub user_labels: BTreeMap<String, String>,
    /// Display labels of history keys, each rendered as one list over the history.
    pub history_labels: BTreeMap<String, String>,
    /// Label for history keys without their own, `{key}` replaced by the humanised key.
    pub history_other_label: String,
    pub candidates_label: String,
    pub list_separator: String,
    pub answer_separator: String,
    /// Only the most recent `max_history` history items are rendered.
    pub max_history: usize,
    /// Where a candidate's id goes: `first` (`48: Title (keys)`, the paper's layout) or
    /// `last` (`Title (keys) id: 48`). A causal model reads a candidate's keys before its id
    /// in the `last` layout, so the id's own tokens can carry what the keys say about it.
    pub candidate_id: CandidateIdPosition,
    /// When set, the history items' ids are rendered as one more list under this label,
    /// before the other history keys: a model whose vocabulary holds one token per id reads
    /// the history as a sequence of items, as sequential recommenders do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_id_label: Option<String>,
    /// The history keys rendered, in the request's order; `None` renders every key. A model
    /// trained on some keys then sees only those, whatever else a caller's JSON carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_keys: Option<Vec<String>>,
    /// The candidate keys rendered (the id always is); `None` renders every key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_keys: Option<Vec<String>>,
    /// `instruction` (the paper's prompt, the default) or `sequence`: the prompt is only the
    /// history ids, each after a space (` 531 3114`), as a sequential recommender reads a
    /// user's items, and the answer continues the list (` 2858, 1196`). A tokenizer with a
    /// token for each spaced id then reads one token per item.
    #[serde(skip_serializing_if = "Layout::is_instruction")]
    pub layout: Layout,
}

/// See [`TemplateSpec::layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Instruction,
    Sequence,
}

impl Layout {
    fn is_instruction(&self) -> bool {
        *self == Layout::Instruction
    }
}

/// See [`TemplateSpec::candidate_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateIdPosition {
    #[default]
    First,
    Last,
}

impl Default for TemplateSpec {
    fn default() -> Self {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        TemplateSpec {
            format: TEMPLATE_FORMAT.into(),
            version: TEMPLATE_VERSION,
            instruction_header: "### Instruction:".into(),
            instruction: "Given the user's profile and the movies the user watched (with ratings and \
                          categories), rank the candidate movies by how likely the user is to watch \
                          each one next. Answer with the IDs of all candidates, most likely first, \
                          separated by commas."
                .into(),
            input_header: "### Input:".into(),
            response_header: "### Response:".into(),
            user_labels: labels(&[
                ("gender", "Gender"),
                ("age", "Age"),
                ("occupation", "Occupation"),
            ]),
            history_labels: labels(&[
                ("title", "History watched movie titles"),
                ("rating", "Corresponding ratings of these movies"),
                ("genres", "Corresponding categories of these movies"),
            ]),
            history_other_label: "Corresponding {key} of these movies".into(),
            candidates_label: "Candidate set".into(),
            list_separator: "; ".into(),
            answer_separator: ", ".into(),
            max_history: DEFAULT_MAX_HISTORY,
            candidate_id: CandidateIdPosition::First,
            history_id_label: None,
            history_keys: None,
            candidate_keys: None,
            layout: Layout::Instruction,
        }
    }
}

impl TemplateSpec {
    /// Reads a spec from JSON; fields left out keep their default values.
    pub fn from_json(value: &Value) -> Result<TemplateSpec> {
        let spec: TemplateSpec =
            serde_json::from_value(value.clone()).map_err(|e| KvrecError::BadTemplate {
                detail: e.to_string(),
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The JSON form stored in model metadata and returned by `kvrec_template()`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(KvrecError::BadTemplate { detail });
        if self.format != TEMPLATE_FORMAT {
            return bad(format!(
                "format is '{}', expected '{TEMPLATE_FORMAT}'",
                self.format
            ));
        }
        if self.version == 0 || self.version > TEMPLATE_VERSION {
            return bad(format!(
                "version {} is not supported by this build (supports 1..={TEMPLATE_VERSION}); upgrade kvrec",
                self.version
            ));
        }
        for (name, header) in [
            ("instruction_header", &self.instruction_header),
            ("input_header", &self.input_header),
            ("response_header", &self.response_header),
        ] {
            if header.trim().is_empty() {
                return bad(format!("{name} is empty"));
            }
        }
        if self.answer_separator.is_empty()
            || self
                .answer_separator
                .chars()
                .any(|c| c.is_ascii_digit() || c == '-')
        {
            return bad("answer_separator must be non-empty and hold no digits or '-'".into());
        }
        let uses_v3 = self.history_id_label.is_some()
            || self.history_keys.is_some()
            || self.candidate_keys.is_some();
        if uses_v3 && self.version < 3 {
            return bad(format!(
                "history_id_label, history_keys and candidate_keys need version 3 (the spec says {})",
                self.version
            ));
        }
        if self.layout == Layout::Sequence && self.version < 4 {
            return bad(format!(
                "layout 'sequence' needs version 4 (the spec says {})",
                self.version
            ));
        }
        Ok(())
    }

    fn user_label(&self, key: &str) -> String {
        self.user_labels
            .get(key)
            .cloned()
            .unwrap_or_else(|| humanize(key, true))
    }

    fn history_label(&self, key: &str) -> String {
        self.history_labels.get(key).cloned().unwrap_or_else(|| {
            self.history_other_label
                .replace("{key}", &humanize(key, false))
        })
    }

    /// Renders the prompt; the model's answer follows the returned text directly.
    pub fn render_prompt(&self, request: &Request) -> String {
        if self.layout == Layout::Sequence {
            let start = request.history.len().saturating_sub(self.max_history);
            let ids: Vec<i64> = request.history[start..]
                .iter()
                .filter_map(|item| item.id)
                .collect();
            return self.render_sequence(&ids);
        }
        let mut out = String::with_capacity(1024);
        out.push_str(&self.instruction_header);
        out.push('\n');
        out.push_str(&self.instruction);
        out.push_str("\n\n");
        out.push_str(&self.input_header);
        out.push('\n');
        for kv in &request.user {
            out.push_str(&self.user_label(&kv.key));
            out.push_str(": ");
            out.push_str(&self.neutralize(&value_text(&kv.value)));
            out.push('\n');
        }
        self.render_history(request, &mut out);
        out.push_str(&self.candidates_label);
        out.push_str(": [");
        for (i, c) in request.candidates.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.list_separator);
            }
            let id_first = self.candidate_id == CandidateIdPosition::First;
            if id_first {
                out.push_str(&c.id.to_string());
            }
            let mut title = None;
            let mut extras = Vec::new();
            for kv in c
                .fields
                .iter()
                .filter(|kv| self.renders_candidate_key(&kv.key))
            {
                let text = self.neutralize(&value_text(&kv.value));
                if kv.key == "title" {
                    title = Some(text);
                } else {
                    extras.push(format!("{}: {text}", humanize(&kv.key, false)));
                }
            }
            let mut parts: Vec<String> = Vec::new();
            if let Some(title) = title {
                parts.push(title);
            }
            if !extras.is_empty() {
                parts.push(format!("({})", extras.join(", ")));
            }
            if id_first {
                // `48: Title (keys)`, or `48 (keys)` without a title.
                if !parts.is_empty() {
                    let rest = parts.join(" ");
                    out.push_str(if rest.starts_with('(') { " " } else { ": " });
                    out.push_str(&rest);
                }
            } else {
                parts.push(format!("id: {}", c.id));
                out.push_str(&parts.join(" "));
            }
        }
        out.push_str("]\n\n");
        out.push_str(&self.response_header);
        out.push('\n');
        out
    }

    fn render_history(&self, request: &Request, out: &mut String) {
        let start = request.history.len().saturating_sub(self.max_history);
        let recent = &request.history[start..];
        let mut keys = history_keys(recent);
        if let Some(allowed) = &self.history_keys {
            keys.retain(|k| allowed.contains(k));
        }
        if let Some(label) = &self.history_id_label {
            let ids = recent.iter().map(|item| item.id.map(|id| id.to_string()));
            self.render_list(label, ids, out);
        } else if keys.is_empty() {
            keys.push("title".into());
        }
        for key in keys {
            let values = recent
                .iter()
                .map(|item| item.get(&key).map(|v| self.neutralize(&value_text(v))));
            self.render_list(&self.history_label(&key), values, out);
        }
    }

    /// `Label: [a; b; -]` and a line break; `-` marks an item without a value.
    fn render_list(
        &self,
        label: &str,
        values: impl Iterator<Item = Option<String>>,
        out: &mut String,
    ) {
        out.push_str(label);
        out.push_str(": [");
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push_str(&self.list_separator);
            }
            out.push_str(value.as_deref().unwrap_or("-"));
        }
        out.push_str("]\n");
    }

    fn renders_candidate_key(&self, key: &str) -> bool {
        self.candidate_keys
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|k| k == key))
    }

    /// The sequence layout's prompt for item ids, oldest first: each id after a space.
    /// Training renders its windows of a user's sequence through this too.
    pub fn render_sequence(&self, ids: &[i64]) -> String {
        let mut out = String::with_capacity(ids.len() * 6);
        for id in ids {
            out.push(' ');
            out.push_str(&id.to_string());
        }
        out
    }

    /// What the answer starts with: nothing, or in the sequence layout the space that goes
    /// before every id, so the first id is the same token as in the history.
    fn answer_lead(&self) -> &'static str {
        match self.layout {
            Layout::Instruction => "",
            Layout::Sequence => " ",
        }
    }

    /// The answer text for a ranked list of ids: what the model is trained to produce.
    pub fn render_answer(&self, ids: &[i64]) -> String {
        let list = ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(&self.answer_separator);
        format!("{}{list}", self.answer_lead())
    }

    /// The text scoring asks the model for: a candidate as the answer's first item. The
    /// separator's trailing whitespace is left out because a BPE tokenizer glues it to the
    /// next id (" 661"), so a lone trailing space never occurs in training answers.
    pub fn answer_prefix(&self, id: i64) -> String {
        let separator = self.answer_separator.trim_end();
        let separator = if separator.is_empty() {
            self.answer_separator.as_str()
        } else {
            separator
        };
        format!("{}{id}{separator}", self.answer_lead())
    }

    /// Makes a value unable to forge template structure: no line breaks or control
    /// characters, and no run of `#` long enough to start a section header.
    fn neutralize(&self, text: &str) -> String {
        let mut out: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        while out.contains("###") {
            out = out.replace("###", "##");
        }
        out
    }
}

/// A value as text: arrays (e.g. genres) join with `|`, as MovieLens writes genres.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join("|"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn humanize(key: &str, capitalize: bool) -> String {
    let spaced = key.replace('_', " ");
    if !capitalize {
        return spaced;
    }
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}
