//! kvrec's llama.cpp backend: a process-wide [`registry`] of GGUF models, ranking by
//! candidate scoring or generation ([`rank`]), and the GGUF writer the finetune crate and the
//! tests use ([`gguf`], [`tiny`]).

pub mod cancel;
pub mod embed;
pub mod gguf;
pub mod limits;
pub mod llama_file;
pub mod load_options;
pub mod logs;
pub mod model;
pub mod piece_tokens;
pub mod rank;
pub mod registry;
pub mod tiny;
pub mod topk;
pub mod trie;

use kvrec_core::{KvrecError, Result};
use llama_cpp_2::llama_backend::LlamaBackend;
use once_cell::sync::OnceCell;

pub use cancel::Cancel;
pub use limits::Limits;
pub use load_options::LoadOptions;
pub use model::{Model, ModelInfo};
pub use rank::{prompt_pass, rank, rank_batch, Ranking};
pub use topk::rank_catalog;

static BACKEND: OnceCell<std::result::Result<LlamaBackend, String>> = OnceCell::new();

/// The llama.cpp backend, initialised once per process (llama.cpp allows no second init).
pub fn backend() -> Result<&'static LlamaBackend> {
    BACKEND
        .get_or_init(|| {
            logs::install();
            load_backend_modules();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| KvrecError::Backend {
            detail: format!("initialising llama.cpp: {e}"),
        })
}

/// The directory a `dynamic-backends` build loads llama.cpp's backend modules from
/// (`libggml-cpu-*.so`, `libggml-cuda.so`, …); unset, the directory llama.cpp was built with.
pub const BACKENDS_DIR_ENV: &str = "KVREC_BACKENDS_DIR";

/// A `dynamic-backends` build has no compute backend until its modules are loaded.
#[cfg(feature = "dynamic-backends")]
fn load_backend_modules() {
    match std::env::var_os(BACKENDS_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => {
            llama_cpp_2::llama_backend::load_backends_from_path(std::path::Path::new(&dir))
        }
        None => llama_cpp_2::llama_backend::load_backends(),
    }
}

#[cfg(not(feature = "dynamic-backends"))]
fn load_backend_modules() {}

/// Backends and devices llama.cpp can use in this build, for `kvrec_debug()`.
pub fn devices() -> Vec<String> {
    if backend().is_err() {
        return Vec::new();
    }
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| format!("{} ({}, {})", d.name, d.backend, d.description))
        .collect()
}
