//! A loaded GGUF model: the llama.cpp model, its template, and a pool of contexts.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvrec_core::cowatch::{CoWatchPrior, COWATCH_METADATA_KEY};
use kvrec_core::item_ids::ITEM_IDS_METADATA_KEY;
use kvrec_core::options::Options;
use kvrec_core::template::{Layout, TemplateSpec, ITEMS_METADATA_KEY, TEMPLATE_METADATA_KEY};
use kvrec_core::{ItemId, ItemIds, KvrecError, Request, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;
use serde_json::Value;

use crate::cancel::Cancel;
use crate::piece_tokens::{PieceTokens, MAX_TEXTS};
use crate::{backend, limits, logs, LoadOptions};

/// What `kvrec_models()` lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub architecture: String,
    pub size_bytes: u64,
    pub n_params: u64,
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    pub n_gpu_layers: u32,
    pub template_version: u32,
    /// `model` when the GGUF carries `kvrec.template`, else `default`.
    pub template_source: &'static str,
    /// Items in the model's catalog (`kvrec.items`), the ones `recommend_topk` ranks; 0
    /// when the model has none.
    pub n_items: u64,
}

/// A model and the contexts that run it. Field order matters: contexts borrow the model and
/// are dropped first.
pub struct Model {
    pool: Mutex<Pool>,
    /// Signalled when a context is returned to the pool.
    returned: Condvar,
    /// The `lora` load option's adapter, set on every context; it refers to the model, so it
    /// is declared (dropped) after the contexts and before the model.
    adapter: Option<Mutex<LlamaLoraAdapter>>,
    model: Box<LlamaModel>,
    pub info: ModelInfo,
    pub template: TemplateSpec,
    pub load: LoadOptions,
    /// The item ids the model was trained on (`kvrec.items`), when the GGUF lists them.
    pub items: Option<Vec<i64>>,
    /// The app's ids of the catalog (`kvrec.item_ids`), when they are not the dense ids the
    /// model reads: requests are mapped to dense ids and rankings back.
    pub ids: Option<ItemIds>,
    /// The co-watch prior a fit chose for this model (`kvrec.cowatch`), added to its scores.
    pub prior: Option<CoWatchPrior>,
    /// Each catalog item's deciding token, computed on first use by `recommend_topk`.
    pub(crate) item_tokens: once_cell::sync::OnceCell<Result<Vec<LlamaToken>>>,
    /// Tokens of answer prefixes and history ids, remembered across calls.
    pub(crate) pieces: PieceTokens,
    /// A sequence-layout prompt's start tokens, when the prompt may be put together from its
    /// ids' remembered tokens: checked at load on a sample of ids (see
    /// [`PieceTokens::start_if_split`]).
    pub(crate) sequence_start: Option<Vec<LlamaToken>>,
}

/// Idle contexts with the thread count each was made for, how many exist in all (idle or in
/// use), and the threads the contexts in use run.
struct Pool {
    idle: Vec<(u32, LlamaContext<'static>)>,
    created: usize,
    busy_threads: u32,
    /// Calls waiting for a context, and the one choosing.
    waiting: usize,
    /// When a call last found another one running or waiting.
    overlap_at: Option<Instant>,
}

/// How long calls keep to one thread each after two overlapped.
const OVERLAP_MEMORY: Duration = Duration::from_millis(200);

/// llama.cpp may mutate a model while creating a context, so creation is serialised.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Checks what llama.cpp would otherwise report as a bare "null result".
pub(crate) fn check_file(path: &Path) -> Result<()> {
    let bad = |problem: String| KvrecError::ModelFile {
        path: path.display().to_string(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("does not exist; pass the path of a .gguf file (relative paths are relative to the process's working directory)".into()),
        _ => bad(format!("cannot be read: {e}")),
    })?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    if read == 0 {
        return Err(bad("is empty".into()));
    }
    if read < 4 || &magic != b"GGUF" {
        return Err(bad("is not a GGUF file (it does not start with 'GGUF'); convert the model with llama.cpp's convert_hf_to_gguf.py".into()));
    }
    Ok(())
}

impl Model {
    /// A request in the app's ids (text, any integer) as the model's dense ids; models
    /// without an id map take the ids as they are.
    pub fn request(
        &self,
        user: Value,
        history: Value,
        candidates: Option<Value>,
    ) -> Result<Request> {
        let (history, candidates) = match &self.ids {
            Some(ids) => ids.to_dense_request(&self.info.name, &history, candidates.as_ref())?,
            None => (history, candidates),
        };
        match candidates {
            Some(c) => Request::from_owned(user, history, c),
            None => Request::without_candidates_owned(user, history),
        }
    }

    /// The app's id of dense id `id`.
    pub fn app_id(&self, id: i64) -> ItemId {
        self.ids.as_ref().map_or(ItemId::Int(id), |ids| ids.app(id))
    }

    /// Loads `path` under `name`.
    pub fn load(name: &str, path: &str, options: &Options) -> Result<Model> {
        check_file(Path::new(path))?;
        let backend = backend()?;
        let load = LoadOptions::from_options(options);
        let params = LlamaModelParams::default().with_n_gpu_layers(load.n_gpu_layers);
        let mark = logs::mark();
        let mut model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            KvrecError::ModelLoad {
                path: path.to_string(),
                detail: detail(&e.to_string(), mark),
            }
        })?;
        let (template, template_source) = match model.meta_val_str(TEMPLATE_METADATA_KEY) {
            Ok(json) => {
                let value = serde_json::from_str(&json).map_err(|e| KvrecError::ModelLoad {
                    path: path.to_string(),
                    detail: format!("its {TEMPLATE_METADATA_KEY} metadata is not JSON: {e}"),
                })?;
                (TemplateSpec::from_json(&value)?, "model")
            }
            Err(_) => (TemplateSpec::default(), "default"),
        };
        let items = match model.meta_val_str(ITEMS_METADATA_KEY) {
            Ok(json) => Some(serde_json::from_str::<Vec<i64>>(&json).map_err(|e| {
                KvrecError::ModelLoad {
                    path: path.to_string(),
                    detail: format!(
                        "its {ITEMS_METADATA_KEY} metadata is not a JSON array of integer ids: {e}"
                    ),
                }
            })?),
            Err(_) => None,
        };
        let ids = match (model.meta_val_str(ITEM_IDS_METADATA_KEY), &items) {
            (Ok(json), Some(items)) => {
                Some(
                    ItemIds::from_metadata(&json, items).map_err(|e| KvrecError::ModelLoad {
                        path: path.to_string(),
                        detail: format!("its {ITEM_IDS_METADATA_KEY} metadata is invalid: {e}"),
                    })?,
                )
            }
            (Ok(_), None) => {
                return Err(KvrecError::ModelLoad {
                    path: path.to_string(),
                    detail: format!(
                        "it has {ITEM_IDS_METADATA_KEY} but no {ITEMS_METADATA_KEY} catalog to map"
                    ),
                })
            }
            (Err(_), _) => None,
        };
        let prior = match model.meta_val_str(COWATCH_METADATA_KEY) {
            Ok(json) => {
                Some(
                    CoWatchPrior::from_json(&json).map_err(|e| KvrecError::ModelLoad {
                        path: path.to_string(),
                        detail: format!("its {COWATCH_METADATA_KEY} metadata is invalid: {e}"),
                    })?,
                )
            }
            Err(_) => None,
        };
        let info = ModelInfo {
            name: name.to_string(),
            path: path.to_string(),
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_default(),
            size_bytes: model.size(),
            n_params: model.n_params(),
            n_ctx: load.n_ctx,
            n_ctx_train: model.n_ctx_train(),
            n_gpu_layers: load.n_gpu_layers,
            template_version: template.version,
            template_source,
            n_items: items.as_ref().map_or(0, |items| items.len() as u64),
        };
        let adapter = match &options.lora {
            Some(lora) => {
                check_file(Path::new(lora))?;
                let mark = logs::mark();
                let adapter =
                    model
                        .lora_adapter_init(lora)
                        .map_err(|e| KvrecError::AdapterLoad {
                            path: lora.clone(),
                            model: path.to_string(),
                            detail: detail(&e.to_string(), mark),
                        })?;
                Some(Mutex::new(adapter))
            }
            None => None,
        };
        let mut model = Model {
            adapter,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                created: 0,
                busy_threads: 0,
                waiting: 0,
                overlap_at: None,
            }),
            returned: Condvar::new(),
            model: Box::new(model),
            info,
            template,
            load,
            items,
            ids,
            prior,
            item_tokens: once_cell::sync::OnceCell::new(),
            pieces: PieceTokens::default(),
            sequence_start: None,
        };
        model.sequence_start = model.start_if_split();
        model.remember_catalog_tokens();
        // Fail at load time, not at the first query, if no context fits in memory.
        model.with_context(|_| Ok(()))?;
        Ok(model)
    }

    pub fn llama(&self) -> &LlamaModel {
        &self.model
    }

    /// Tokenizes `text`; `bos` adds the model's start token when it wants one.
    pub fn tokenize(&self, text: &str, bos: bool) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), bos, false)
    }

    /// The tokens of each of `texts` (no start token), remembered across calls.
    pub(crate) fn tokenize_pieces(&self, texts: &[String]) -> Vec<Vec<LlamaToken>> {
        self.pieces
            .get_all(texts, |text| self.tokenize(text, false))
    }

    /// Tokenizes the catalog's ids and answer prefixes now, so that the first calls after a
    /// load do not pay for them: one pass over ML-1M's 1,000 test requests still found a
    /// sixth of its candidates new and spent a quarter of `recommend()`'s calling thread in
    /// the tokenizer. Catalogs too large for half the map are left to fill it as they go.
    fn remember_catalog_tokens(&self) {
        let Some(items) = self
            .items
            .as_ref()
            .filter(|_| self.sequence_start.is_some())
        else {
            return;
        };
        let template = &self.template;
        let mut texts: Vec<String> = items
            .iter()
            .flat_map(|&id| [template.render_sequence(&[id]), template.answer_prefix(id)])
            .collect();
        texts.sort_unstable();
        texts.dedup();
        if texts.len() <= MAX_TEXTS / 2 {
            self.tokenize_pieces(&texts);
        }
    }

    /// [`PieceTokens::start_if_split`] for a sequence-layout model, on some of the catalog's
    /// ids (spread over it) and ids of other lengths that requests may carry.
    fn start_if_split(&self) -> Option<Vec<LlamaToken>> {
        if self.template.layout != Layout::Sequence {
            return None;
        }
        let mut ids: Vec<i64> = match &self.items {
            Some(items) => items
                .iter()
                .step_by((items.len() / 64).max(1))
                .copied()
                .collect(),
            None => (1..=64).collect(),
        };
        ids.extend([0, 7, 42, 999, 123_456, 98_765_432_101]);
        let pieces: Vec<String> = ids
            .iter()
            .map(|&id| self.template.render_sequence(&[id]))
            .collect();
        PieceTokens::start_if_split(&pieces, |text, bos| self.tokenize(text, bos))
    }

    fn new_context(&self, threads: u32) -> Result<LlamaContext<'static>> {
        let _creating = lock(&CONTEXT_CREATION);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.load.n_ctx))
            .with_n_batch(self.load.n_batch)
            .with_n_ubatch(self.load.n_batch)
            .with_n_seq_max(self.load.n_seq_max())
            .with_kv_unified(true)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32);
        let mark = logs::mark();
        let context =
            self.model
                .new_context(backend()?, params)
                .map_err(|e| KvrecError::Backend {
                    detail: format!(
                        "could not create a context with n_ctx {} ({}); try a smaller n_ctx",
                        self.load.n_ctx,
                        detail(&e.to_string(), mark)
                    ),
                })?;
        let mut context = context;
        if let Some(adapter) = &self.adapter {
            let mark = logs::mark();
            context
                .lora_adapter_set(&mut lock(adapter), 1.0)
                .map_err(|e| KvrecError::Backend {
                    detail: format!(
                        "could not apply the LoRA adapter ({})",
                        detail(&e.to_string(), mark)
                    ),
                })?;
        }
        // SAFETY: the context borrows `self.model`, which is boxed (its address never moves)
        // and outlives every context: contexts live only in `self.pool` or inside
        // `with_context`, and `pool` is declared before `model`, so it is dropped first.
        Ok(unsafe { std::mem::transmute::<LlamaContext<'_>, LlamaContext<'static>>(context) })
    }

    /// Threads a call asked for (`n_threads`), within the host's cap; `None` lets the pool
    /// choose (see [`Model::with_context_threads`]).
    pub fn threads_for(&self, options: &Options) -> Option<u32> {
        options
            .n_threads
            .map(|n| n.clamp(1, limits::get().max_threads))
    }

    /// Threads a call runs when it did not ask: all the model's threads while calls come
    /// one at a time, one thread each for a while after two overlapped. Two one-thread
    /// decodes side by side outrun one two-thread decode on a CPU, and calls that take turns
    /// on all threads run several times slower than alone (measured with 2 callers on 2
    /// cores: 197 requests/s against 790 alone, and 1,550 at one thread each).
    fn chosen_threads(&self, pool: &Pool) -> u32 {
        let recent = pool
            .overlap_at
            .is_some_and(|at| at.elapsed() < OVERLAP_MEMORY);
        if recent {
            1
        } else {
            self.threads_allowed()
        }
    }

    /// The model's `n_threads` within the host's `max_threads`: what a call alone runs.
    pub fn threads_allowed(&self) -> u32 {
        self.load.n_threads.clamp(1, limits::get().max_threads)
    }

    /// Runs `f` with a context of this model to itself, running the model's `n_threads`.
    pub fn with_context<T>(
        &self,
        f: impl FnOnce(&mut LlamaContext<'static>) -> Result<T>,
    ) -> Result<T> {
        self.with_context_threads(Some(self.load.n_threads), &Cancel::none(), f)
    }

    /// Runs `f` with a context running `threads` threads (`None`: as many as are free, see
    /// [`Model::threads_for`]). Contexts are reused across calls; a caller waits, as long as
    /// `cancel` allows, while the contexts in use already run the threads the host allows
    /// (each call holds its context for one request or one batch only).
    pub fn with_context_threads<T>(
        &self,
        threads: Option<u32>,
        cancel: &Cancel,
        f: impl FnOnce(&mut LlamaContext<'static>) -> Result<T>,
    ) -> Result<T> {
        let budget = limits::get().max_threads.max(1);
        // One context per thread the host allows, and one more so that a context of all
        // of them can stay beside the one-thread ones.
        let most = budget as usize + 1;
        let mut pool = lock(&self.pool);
        pool.waiting += 1;
        if pool.busy_threads > 0 || pool.waiting > 1 {
            pool.overlap_at = Some(Instant::now());
        }
        let acquired = loop {
            let threads = threads
                .unwrap_or_else(|| self.chosen_threads(&pool))
                .clamp(1, budget);
            if pool.busy_threads + threads <= budget {
                if let Some(at) = pool.idle.iter().position(|(t, _)| *t == threads) {
                    let (_, context) = pool.idle.swap_remove(at);
                    pool.busy_threads += threads;
                    break Ok((threads, context));
                }
                // Contexts of another thread count make room for one of this count.
                if pool.created >= most && !pool.idle.is_empty() {
                    drop(pool.idle.remove(0));
                    pool.created -= 1;
                }
                if pool.created < most {
                    pool.created += 1;
                    pool.busy_threads += threads;
                    drop(pool);
                    let made = self.new_context(threads);
                    pool = lock(&self.pool);
                    match made {
                        Ok(context) => break Ok((threads, context)),
                        Err(e) => {
                            pool.created -= 1;
                            pool.busy_threads -= threads;
                            self.returned.notify_all();
                            break Err(e);
                        }
                    }
                }
            }
            if let Err(e) = cancel.check() {
                break Err(e);
            }
            pool = self
                .returned
                .wait_timeout(pool, Duration::from_millis(10))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        };
        pool.waiting -= 1;
        drop(pool);
        let (threads, mut context) = acquired?;
        // Forget every cell, leaving the data: llama.cpp's `clear_kv_cache` also zeroes the
        // whole cache, a memset of n_ctx cells that took a quarter of a default-model call
        // on its calling thread. Cells are only read where the mask lets them, and a cell
        // is written before the mask lets it.
        let _ = context.clear_kv_cache_seq(None, None, None);
        // A panic inside `f` drops the context; count it as gone so waiters can make another.
        struct Slot<'a>(&'a Model, u32, Option<LlamaContext<'static>>);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                let mut pool = lock(&self.0.pool);
                pool.busy_threads -= self.1;
                match self.2.take() {
                    Some(context) => pool.idle.push((self.1, context)),
                    None => pool.created -= 1,
                }
                self.0.returned.notify_all();
            }
        }
        let mut slot = Slot(self, threads, None);
        let result = f(&mut context);
        slot.2 = Some(context);
        result
    }
}

/// llama-cpp-2's error plus what llama.cpp logged meanwhile.
pub fn detail(error: &str, mark: u64) -> String {
    let logged = logs::since(mark);
    if logged.is_empty() {
        error.to_string()
    } else {
        format!("{error}; llama.cpp said: {logged}")
    }
}
