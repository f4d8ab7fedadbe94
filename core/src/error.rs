//! The one error type of kvrec. Every message says what was wrong and how to fix it;
//! the SQL layer prefixes the function name, so texts here never name a function.

use thiserror::Error;

/// Result alias used across the crate.
pub type Result<T, E = KvrecError> = std::result::Result<T, E>;

/// Everything that can go wrong in kvrec, worded for the person calling it from SQL.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KvrecError {
    #[error("takes {signature}, but was called with {got} argument(s)")]
    BadArity { signature: String, got: usize },

    #[error("argument '{arg}' {problem}")]
    OutOfRange { arg: &'static str, problem: String },

    #[error("argument '{arg}' is NULL or missing; pass {expected}")]
    NullArgument {
        arg: &'static str,
        expected: &'static str,
    },

    #[error("argument '{arg}' is not valid UTF-8 text; pass {expected} as TEXT, not a BLOB")]
    NotUtf8 {
        arg: &'static str,
        expected: &'static str,
    },

    #[error("argument '{arg}' is not valid JSON ({detail}); build it with json_object()/json_group_array()")]
    InvalidJson { arg: &'static str, detail: String },

    #[error("argument '{arg}' must be {expected}, got {got}")]
    WrongType {
        arg: &'static str,
        expected: &'static str,
        got: String,
    },

    #[error("{arg}[{index}] has no '{field}'; every item needs one, e.g. {example}")]
    MissingField {
        arg: &'static str,
        index: usize,
        field: &'static str,
        example: &'static str,
    },

    #[error("{arg}[{index}].id must be an integer (or a string of digits), got {got}")]
    BadId {
        arg: &'static str,
        index: usize,
        got: String,
    },

    #[error("{location} must be a string, number or boolean (or, for list keys, an array of them), got {got}")]
    NotScalar { location: String, got: String },

    #[error("the candidate list is empty; pass at least one candidate object like {{\"id\": 1, \"title\": \"Toy Story (1995)\"}}")]
    EmptyCandidates,

    #[error("candidate id {id} appears more than once; each candidate must have a distinct id")]
    DuplicateCandidate { id: i64 },

    #[error("positive id {id} is not among the candidates; add it to the candidate list or pass the id of one of them")]
    PositiveNotCandidate { id: i64 },

    #[error("strategy '{strategy}' reorders the answer, so it needs the positive: pass options '{{\"positive\": <id>}}'")]
    NeedsPositive { strategy: String },

    #[error("unknown strategy '{given}'; use one of: none, SC, SO, SK, M1, M2, M3, mask:<k>, or several joined with '+' (e.g. 'SC+SO')")]
    UnknownStrategy { given: String },

    #[error("unknown option '{key}'; allowed options are: {allowed}")]
    UnknownOption { key: String, allowed: String },

    #[error("option '{key}' {problem}")]
    BadOption { key: &'static str, problem: String },

    #[error("template spec is invalid: {detail}; start from kvrec_template() and change only what you need")]
    BadTemplate { detail: String },

    #[error("no model named '{name}' is loaded (loaded: {loaded}); load one with SELECT kvrec_load_model('{name}', '/path/to/model.gguf')")]
    UnknownModel { name: String, loaded: String },

    #[error("a model named '{name}' is already loaded; unload it first with SELECT kvrec_unload_model('{name}'), or choose another name")]
    ModelExists { name: String },

    #[error("model file '{path}' {problem}")]
    ModelFile { path: String, problem: String },

    #[error("llama.cpp could not load '{path}' ({detail}); check that the file is a complete GGUF of an architecture this llama.cpp supports")]
    ModelLoad { path: String, detail: String },

    #[error("llama.cpp could not apply '{path}' as a LoRA adapter of '{model}' ({detail}); pass an adapter GGUF trained on this base, e.g. from kvrec-finetune export --adapter")]
    AdapterLoad {
        path: String,
        model: String,
        detail: String,
    },

    #[error("llama.cpp failed: {detail}")]
    Backend { detail: String },

    #[error("the prompt needs {tokens} tokens even with no history, but n_ctx is {n_ctx}; load the model with a larger n_ctx, e.g. kvrec_load_model(name, path, '{{\"n_ctx\": 4096}}'), or pass fewer candidates")]
    PromptTooLong { tokens: usize, n_ctx: u32 },

    #[error("option '{key}' is fixed when a model is loaded; pass it to kvrec_load_model(name, path, options)")]
    LoadOption { key: String },

    #[error("the generated answer is not a valid ranking ({detail}): '{text}'; use mode 'score' (the default), which always ranks every candidate")]
    InvalidAnswer { detail: String, text: String },

    #[error("model '{model}' has no item catalog (no kvrec.items metadata), so it cannot recommend from the whole catalog; export it with kvrec-finetune export from a sequence-stage run, or rank your own candidates with recommend()")]
    NoCatalog { model: String },

    #[error("model '{model}' does not give each item its own token (items {first} and {second} both start with token {token}), so it cannot rank its whole catalog in one pass; train a sequence-layout model (kvrec-finetune train --sequence-window ... --number-tokens ...), or rank your own candidates with recommend()")]
    NoItemTokens {
        model: String,
        first: i64,
        second: i64,
        token: i32,
    },

    #[error("{arg}[{index}].id {id} is not an item model '{model}' knows (it was trained on {known} items); leave the item out, or retrain the model on data that includes it")]
    UnknownItem {
        model: String,
        arg: &'static str,
        index: usize,
        id: String,
        known: usize,
    },

    #[error("the model answers with text ids, which DuckDB's LIST(BIGINT) result cannot hold; use {function}_each(), whose id column is text for such models, e.g. SELECT list(id ORDER BY rank) FROM {function}_each(...)")]
    TextIds { function: &'static str },

    #[error("the model registry is locked (kvrec_lock_models() was called): models can no longer be loaded or unloaded in this process; the host loads its models before it locks")]
    RegistryLocked,

    #[error("the path is not a loadable model inside the model directory that KVREC_MODEL_DIR names; put a complete GGUF file there and pass its path")]
    NotInModelDir,

    #[error("{what} is {got}, above this host's cap {cap} = {limit}; {fix}")]
    OverCap {
        what: String,
        got: u64,
        cap: &'static str,
        limit: u64,
        fix: &'static str,
    },

    #[error("the call ran past its time limit of {ms} ms and was cancelled; pass fewer candidates or rows, or ask the host for a longer limit")]
    TimedOut { ms: u64 },

    #[error("interrupted by the host (its time limit, or a cancel)")]
    Interrupted,

    #[error("{running} model calls are running, this host's cap max_concurrent_calls, and none finished within the call's time limit; try again shortly")]
    Busy { running: usize },

    #[error("the host's settings were sealed by kvrec_configure(); {what} is the host's to do at start-up, not a query's")]
    Sealed { what: &'static str },

    #[error("internal error (this is a kvrec bug, please report it): {detail}")]
    Internal { detail: String },
}

impl KvrecError {
    /// Builds a [`KvrecError::WrongType`] naming the JSON type actually received.
    pub fn wrong_type(arg: &'static str, expected: &'static str, got: &serde_json::Value) -> Self {
        KvrecError::WrongType {
            arg,
            expected,
            got: json_type_name(got).to_string(),
        }
    }
}

/// The JSON type name a user would recognise, for error messages.
pub fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
