//! Every SQL function kvrec defines, once: its name, parameters, whether it reads models, and
//! its body; for table functions also the columns. The SQLite and DuckDB extensions expand
//! these same entries into their registrations, so both hosts take the same arguments, run
//! the same code and give the same results and errors.

use kvrec_core::error::{KvrecError, Result};

pub use super::values::{Column, IdRows, Kind, Value};
use super::{meta, model_fns, prompt_fns, table_fns, SqlArgs};

/// What a scalar function returns, and the body that computes it.
#[derive(Clone, Copy)]
pub enum Body {
    Text(fn(&dyn SqlArgs) -> Result<String>),
    /// Item ids, best first: a JSON array in SQLite, `LIST(BIGINT)` in DuckDB (which refuses
    /// a model's text ids with an error naming the table functions). The body takes
    /// every row of a DuckDB chunk at once, so it can rank them together; SQLite passes one.
    Ids(fn(&[&dyn SqlArgs]) -> IdRows),
}

pub struct Scalar {
    pub name: &'static str,
    /// What it returns, in a line: docs/sql.md is generated from it.
    pub doc: &'static str,
    /// Parameter names; a `?` marks an optional one, either trailing or leading (`model?`:
    /// the short form without it uses the default model, see [`Scalar::forms`]).
    pub params: &'static [&'static str],
    pub kinds: &'static [Kind],
    /// Reads files or the model registry: neither deterministic nor safe to cache.
    pub model: bool,
    pub body: Body,
}

pub struct Table {
    pub name: &'static str,
    /// What its rows are, in a line: docs/sql.md is generated from it.
    pub doc: &'static str,
    /// Parameters: required ones are positional everywhere; optional ones (trailing `?`) are
    /// hidden columns in SQLite and named parameters (`options := '…'`) in DuckDB.
    pub params: &'static [&'static str],
    pub kinds: &'static [Kind],
    pub columns: &'static [(&'static str, Column)],
    /// Reads the model registry.
    pub model: bool,
    pub rows: fn(&dyn SqlArgs) -> Result<Vec<Vec<Value>>>,
}

/// Whether parameter name `p` is optional.
pub fn optional(p: &str) -> bool {
    p.ends_with('?')
}

impl Scalar {
    /// The parameter counts it may be called with.
    pub fn arity(&self) -> std::ops::RangeInclusive<usize> {
        let required = self.params.iter().filter(|p| !optional(p)).count();
        required..=self.params.len()
    }

    /// The argument kinds of each overload: without the leading optional parameters (and then
    /// with no trailing ones either), or with them and any number of the trailing ones.
    pub fn forms(&self) -> Vec<Vec<Kind>> {
        let lead = self.params.iter().take_while(|p| optional(p)).count();
        let trail = self.params[lead..]
            .iter()
            .rev()
            .take_while(|p| optional(p))
            .count();
        let n = self.params.len();
        let mut forms = Vec::new();
        if lead > 0 {
            forms.push(self.kinds[lead..n - trail].to_vec());
        }
        forms.extend((0..=trail).map(|t| self.kinds[..n - trail + t].to_vec()));
        forms
    }

    /// Calls the body for one row, ids rendered as a JSON array (SQLite's result).
    pub fn call_text(&self, args: &dyn SqlArgs) -> Result<String> {
        match self.body {
            Body::Text(f) => f(args),
            Body::Ids(f) => match f(&[args]) {
                Ok(mut rows) => Ok(serde_json::to_string(&rows.pop().unwrap_or_default())
                    .map_err(|e| KvrecError::Internal {
                        detail: e.to_string(),
                    })?),
                Err((_, e)) => Err(e),
            },
        }
    }
}

impl Table {
    /// Parameters every call passes (positional in DuckDB).
    pub fn required(&self) -> usize {
        self.params.iter().filter(|p| !optional(p)).count()
    }
}

const MODEL: Kind = Kind::Text;

pub const SCALARS: &[Scalar] = &[
    Scalar {
        name: "kvrec_version",
        doc: "the version, e.g. `v0.1.0`",
        params: &[],
        kinds: &[],
        model: false,
        body: Body::Text(meta::version),
    },
    Scalar {
        name: "kvrec_debug",
        doc: "version, template version, build, devices and the host's caps, as text",
        params: &[],
        kinds: &[],
        model: false,
        body: Body::Text(meta::debug),
    },
    Scalar {
        name: "kvrec_template",
        doc: "the default template spec, as JSON",
        params: &[],
        kinds: &[],
        model: false,
        body: Body::Text(meta::template),
    },
    Scalar {
        name: "kvrec_prompt",
        doc: "the prompt text of a request",
        params: &["user", "history", "candidates", "options?"],
        kinds: &[Kind::Json, Kind::Json, Kind::Json, Kind::Json],
        model: false,
        body: Body::Text(prompt_fns::prompt),
    },
    Scalar {
        name: "kvrec_target",
        doc: "the answer a model is trained on: the positive first, then the others",
        params: &["candidates", "positive_id", "options?"],
        kinds: &[Kind::Json, Kind::Int, Kind::Json],
        model: false,
        body: Body::Text(prompt_fns::target),
    },
    Scalar {
        name: "kvrec_parse_answer",
        doc: "JSON: the ids in a generated answer and whether it is a valid ranking",
        params: &["text", "candidates"],
        kinds: &[Kind::Text, Kind::Json],
        model: false,
        body: Body::Text(prompt_fns::parse),
    },
    Scalar {
        name: "kvrec_augment",
        doc: "JSON: the request augmented by a strategy (`SC`, `SO`, `M3`, `SC+SO`, …)",
        params: &[
            "user",
            "history",
            "candidates",
            "strategy",
            "seed",
            "options?",
        ],
        kinds: &[
            Kind::Json,
            Kind::Json,
            Kind::Json,
            Kind::Text,
            Kind::Int,
            Kind::Json,
        ],
        model: false,
        body: Body::Text(prompt_fns::augment),
    },
    Scalar {
        name: "kvrec_load_model",
        doc: "JSON: the loaded model's description; loads a GGUF under a name",
        params: &["name", "path", "options?"],
        kinds: &[Kind::Text, Kind::Text, Kind::Json],
        model: true,
        body: Body::Text(model_fns::load),
    },
    Scalar {
        name: "kvrec_unload_model",
        doc: "the name; the model's memory is freed when its running calls finish",
        params: &["name"],
        kinds: &[MODEL],
        model: true,
        body: Body::Text(model_fns::unload),
    },
    Scalar {
        name: "kvrec_lock_models",
        doc: "a note; from then on models can neither be loaded nor unloaded in the process",
        params: &[],
        kinds: &[],
        model: true,
        body: Body::Text(model_fns::lock),
    },
    Scalar {
        name: "kvrec_configure",
        doc: "JSON: the caps in force; the host's one start-up call (models, `lock_models`, caps), sealed after it",
        params: &["settings"],
        kinds: &[Kind::Json],
        model: true,
        body: Body::Text(model_fns::configure),
    },
    Scalar {
        name: "recommend",
        doc: "the candidates' ids, best first (JSON array; `LIST` in DuckDB); without a model name, the model `default`",
        params: &["model?", "user", "history", "candidates", "options?"],
        kinds: &[MODEL, Kind::Json, Kind::Json, Kind::Json, Kind::Json],
        model: true,
        body: Body::Ids(model_fns::recommend_rows),
    },
    Scalar {
        name: "recommend_topk",
        doc: "the `k` best items of the model's whole catalog, best first",
        params: &["model?", "user", "history", "k", "options?"],
        kinds: &[MODEL, Kind::Json, Kind::Json, Kind::Int, Kind::Json],
        model: true,
        body: Body::Ids(model_fns::recommend_topk_rows),
    },
];

/// `recommend_each` and `recommend_topk_each`: one row per ranked item.
const RANKED: &[(&str, Column)] = &[
    ("rank", Column::Int),
    ("id", Column::Id),
    ("score", Column::Real),
    ("dropped_history", Column::Int),
    ("prompt_tokens", Column::Int),
];

pub const TABLES: &[Table] = &[
    Table {
        name: "kvrec_augmentations",
        doc: "one row per copy: the original and `copies` augmented ones (default 4)",
        params: &[
            "user",
            "history",
            "candidates",
            "strategy",
            "seed",
            "copies?",
            "options?",
        ],
        kinds: &[
            Kind::Json,
            Kind::Json,
            Kind::Json,
            Kind::Text,
            Kind::Int,
            Kind::Int,
            Kind::Json,
        ],
        columns: &[
            ("copy", Column::Int),
            ("augmentation", Column::Text),
            ("request", Column::Text),
            ("prompt", Column::Text),
            ("answer", Column::Text),
            ("masked", Column::Text),
        ],
        model: false,
        rows: table_fns::augmentations,
    },
    Table {
        name: "kvrec_functions",
        doc: "one row per SQL function: this table, as data",
        params: &[],
        kinds: &[],
        columns: &[
            ("name", Column::Text),
            ("type", Column::Text),
            ("params", Column::Text),
            ("kinds", Column::Text),
            ("returns", Column::Text),
            ("reads_models", Column::Int),
            ("doc", Column::Text),
        ],
        model: false,
        rows: functions,
    },
    Table {
        name: "kvrec_models",
        doc: "one row per loaded model",
        params: &[],
        kinds: &[],
        columns: &[
            ("name", Column::Text),
            ("path", Column::Text),
            ("architecture", Column::Text),
            ("size_bytes", Column::Int),
            ("n_params", Column::Int),
            ("n_ctx", Column::Int),
            ("n_ctx_train", Column::Int),
            ("n_gpu_layers", Column::Int),
            ("template_version", Column::Int),
            ("template_source", Column::Text),
            ("n_items", Column::Int),
        ],
        model: true,
        rows: table_fns::models,
    },
    Table {
        name: "recommend_each",
        doc: "one row per candidate, best first, with its score",
        params: &["model", "user", "history", "candidates", "options?"],
        kinds: &[MODEL, Kind::Json, Kind::Json, Kind::Json, Kind::Json],
        columns: RANKED,
        model: true,
        rows: table_fns::recommend_each,
    },
    Table {
        name: "recommend_topk_each",
        doc: "one row per item of the `k` best of the catalog, with its score",
        params: &["model", "user", "history", "k", "options?"],
        kinds: &[MODEL, Kind::Json, Kind::Json, Kind::Int, Kind::Json],
        columns: RANKED,
        model: true,
        rows: table_fns::recommend_topk_each,
    },
];

/// `kvrec_functions()`: the catalog itself, one row per SQL function: its parameters (`?`
/// marks optional ones) and their kinds, and what it returns (for table functions, the
/// columns as `name type`), so hosts, tools and tests can read what the extension offers.
pub fn functions(_: &dyn SqlArgs) -> Result<Vec<Vec<Value>>> {
    let text = |s: &str| Value::Text(s.to_string());
    let json = |items: Vec<String>| Value::Text(serde_json::Value::from(items).to_string());
    let names = |params: &[&str]| json(params.iter().map(|p| p.to_string()).collect());
    let kinds = |kinds: &[Kind]| json(kinds.iter().map(|k| k.name().into()).collect());
    let scalars = SCALARS.iter().map(|s| {
        vec![
            text(s.name),
            text("scalar"),
            names(s.params),
            kinds(s.kinds),
            text(match s.body {
                Body::Text(_) => "text",
                Body::Ids(_) => "ids",
            }),
            Value::Int(i64::from(s.model)),
            text(s.doc),
        ]
    });
    let tables = TABLES.iter().map(|t| {
        let columns = t
            .columns
            .iter()
            .map(|(name, column)| format!("{name} {}", column.name()))
            .collect();
        vec![
            text(t.name),
            text("table"),
            names(t.params),
            kinds(t.kinds),
            json(columns),
            Value::Int(i64::from(t.model)),
            text(t.doc),
        ]
    });
    Ok(scalars.chain(tables).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_has_a_kind_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for s in SCALARS {
            assert_eq!(s.params.len(), s.kinds.len(), "{}", s.name);
            assert!(names.insert(s.name), "{} twice", s.name);
        }
        for t in TABLES {
            assert_eq!(t.params.len(), t.kinds.len(), "{}", t.name);
            assert!(names.insert(t.name), "{} twice", t.name);
            // Optional table parameters come last: SQLite's hidden columns and DuckDB's
            // named parameters both rely on it.
            assert!(
                t.params[t.required()..].iter().all(|p| optional(p)),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn forms_cover_the_short_and_the_named_calls() {
        let recommend = SCALARS.iter().find(|s| s.name == "recommend").unwrap();
        let lens: Vec<usize> = recommend.forms().iter().map(Vec::len).collect();
        assert_eq!(lens, [3, 4, 5]);
        assert_eq!(recommend.forms()[0], [Kind::Json; 3]);
        assert_eq!(recommend.arity(), 3..=5);
        let prompt = SCALARS.iter().find(|s| s.name == "kvrec_prompt").unwrap();
        let lens: Vec<usize> = prompt.forms().iter().map(Vec::len).collect();
        assert_eq!(lens, [3, 4]);
        let version = SCALARS.iter().find(|s| s.name == "kvrec_version").unwrap();
        assert_eq!(version.forms(), [Vec::<Kind>::new()]);
    }
}
