//! The process-wide model registry: each model is loaded once and shared by every connection
//! and thread; a name maps to one model at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kvrec_core::options::Options;
use kvrec_core::{KvrecError, Result};

use crate::model::{Model, ModelInfo};

static MODELS: Mutex<BTreeMap<String, Arc<Model>>> = Mutex::new(BTreeMap::new());

fn models() -> MutexGuard<'static, BTreeMap<String, Arc<Model>>> {
    MODELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads `path` as `name`. The registry lock is not held while the file loads, so other
/// models keep serving meanwhile.
pub fn load(name: &str, path: &str, options: &Options) -> Result<ModelInfo> {
    if name.trim().is_empty() {
        return Err(KvrecError::BadOption {
            key: "name",
            problem: "must not be empty; 'default' is the model recommend(user, history, candidates) uses".into(),
        });
    }
    if models().contains_key(name) {
        return Err(KvrecError::ModelExists { name: name.into() });
    }
    let model = Arc::new(Model::load(name, path, options)?);
    let info = model.info.clone();
    let mut registry = models();
    if registry.contains_key(name) {
        return Err(KvrecError::ModelExists { name: name.into() });
    }
    registry.insert(name.to_string(), model);
    Ok(info)
}

/// Removes `name`; calls still running on it finish, and its memory is freed after them.
pub fn unload(name: &str) -> Result<()> {
    let removed = models().remove(name);
    removed.map(|_| ()).ok_or_else(|| unknown(name))
}

/// The model registered as `name`.
pub fn get(name: &str) -> Result<Arc<Model>> {
    // Bind first: the guard of `models()` must be gone before `unknown` locks again.
    let found = models().get(name).cloned();
    found.ok_or_else(|| unknown(name))
}

pub fn list() -> Vec<ModelInfo> {
    models().values().map(|m| m.info.clone()).collect()
}

fn unknown(name: &str) -> KvrecError {
    let loaded: Vec<String> = models().keys().cloned().collect();
    KvrecError::UnknownModel {
        name: name.chars().take(100).collect(),
        loaded: if loaded.is_empty() {
            "none".into()
        } else {
            loaded.join(", ")
        },
    }
}
