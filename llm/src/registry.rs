//! The process-wide model registry: each model is loaded once and shared by every connection
//! and thread; a name maps to one model at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kvrec_core::options::Options;
use kvrec_core::{KvrecError, Result};

use crate::limits;
use crate::model::{Model, ModelInfo};

static MODELS: Mutex<BTreeMap<String, Arc<Model>>> = Mutex::new(BTreeMap::new());
/// Set once by [`lock`]; never cleared.
static LOCKED: AtomicBool = AtomicBool::new(false);
/// The environment variable naming the directory model and adapter paths must stay inside.
pub const MODEL_DIR_ENV: &str = "KVREC_MODEL_DIR";

fn models() -> MutexGuard<'static, BTreeMap<String, Arc<Model>>> {
    MODELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Closes the registry for good: from now on [`load`] and [`unload`] refuse. A host that
/// exposes SQL to people it does not trust (Datasette, say) loads its models, then locks.
pub fn lock() {
    LOCKED.store(true, Ordering::SeqCst);
}

pub fn is_locked() -> bool {
    LOCKED.load(Ordering::SeqCst)
}

fn check_unlocked() -> Result<()> {
    if is_locked() {
        Err(KvrecError::RegistryLocked)
    } else {
        Ok(())
    }
}

/// The model directory, when `KVREC_MODEL_DIR` names one.
fn model_dir() -> Option<std::ffi::OsString> {
    std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty())
}

/// With `KVREC_MODEL_DIR` set, `path` must resolve (symbolic links and `..` followed) to a
/// file inside that directory. The error is the same whether or not the file exists, and it
/// does not show the directory, so a caller cannot probe the file system through it.
pub fn check_inside_model_dir(path: &str) -> Result<()> {
    let Some(dir) = model_dir() else {
        return Ok(());
    };
    let outside = || KvrecError::NotInModelDir;
    let dir: PathBuf = std::fs::canonicalize(&dir).map_err(|_| outside())?;
    let resolved = std::fs::canonicalize(path).map_err(|_| outside())?;
    if resolved.starts_with(&dir) {
        Ok(())
    } else {
        Err(outside())
    }
}

/// Loads `path` as `name`, for a caller in SQL: refused once the registry is locked, and
/// with `KVREC_MODEL_DIR` set only from inside that directory, every failure there giving one
/// and the same error (a caller learns nothing about the files it names).
pub fn load(name: &str, path: &str, options: &Options) -> Result<ModelInfo> {
    check_unlocked()?;
    check_inside_model_dir(path)?;
    if let Some(adapter) = &options.lora {
        check_inside_model_dir(adapter)?;
    }
    let loaded = load_as_host(name, path, options);
    match loaded {
        Err(
            KvrecError::ModelFile { .. }
            | KvrecError::ModelLoad { .. }
            | KvrecError::AdapterLoad { .. },
        ) if model_dir().is_some() => Err(KvrecError::NotInModelDir),
        other => other,
    }
}

/// Loads `path` as `name` for the host itself (its configured models): any path, within the
/// caps. The registry lock is not held while the file loads, so other models keep serving
/// meanwhile.
pub fn load_as_host(name: &str, path: &str, options: &Options) -> Result<ModelInfo> {
    check_unlocked()?;
    if name.trim().is_empty() || name.trim_start().starts_with(['{', '[']) {
        return Err(KvrecError::BadOption {
            key: "name",
            problem: "must be a plain name, not empty and not JSON; 'default' is the model recommend(user, history, candidates) uses".into(),
        });
    }
    // Checked before the file loads, so a full registry costs no load, and again under the
    // lock below, where a load that finished meanwhile counts.
    limits::get().check_load(options, models().len())?;
    if models().contains_key(name) {
        return Err(KvrecError::ModelExists { name: name.into() });
    }
    let model = Arc::new(Model::load(name, path, options)?);
    let info = model.info.clone();
    let mut registry = models();
    if registry.contains_key(name) {
        return Err(KvrecError::ModelExists { name: name.into() });
    }
    limits::get().check_load(options, registry.len())?;
    // A lock taken while the file loaded wins: the model is dropped, not registered.
    check_unlocked()?;
    registry.insert(name.to_string(), model);
    Ok(info)
}

/// Removes `name`; calls still running on it finish, and its memory is freed after them.
pub fn unload(name: &str) -> Result<()> {
    check_unlocked()?;
    let removed = models().remove(name);
    removed.map(|_| ()).ok_or_else(|| unknown(name))
}

/// The model registered as `name`.
pub fn get(name: &str) -> Result<Arc<Model>> {
    // Bind first: the guard of `models()` must be gone before `unknown` locks again.
    let found = models().get(name).cloned();
    found.ok_or_else(|| unknown(name))
}

/// The loaded models. Once the registry is locked or the host's settings sealed, callers
/// may be strangers: each path is shown as its file name only.
pub fn list() -> Vec<ModelInfo> {
    let private = is_locked() || limits::is_sealed();
    models()
        .values()
        .map(|m| {
            let mut info = m.info.clone();
            if private {
                info.path = file_name(&info.path);
            }
            info
        })
        .collect()
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
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
