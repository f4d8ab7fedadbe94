//! What one SQL call may use, as the host allows it: threads, candidates, request bytes,
//! generated tokens, time, calls at once and loaded models.
//!
//! This is the one place the caps and their defaults are declared. A host sets them once at
//! start-up (`kvrec_configure`, which then seals them); a caller's options never exceed them
//! (asking for more is an error that names the cap), and `kvrec_debug()` reports them.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use kvrec_core::options::Options;
use kvrec_core::{KvrecError, Result};
use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;

/// The caps. Every field has a default that suits an embedded database on any machine; a
/// server facing strangers also sets `max_call_ms` (Datasette's plugin sets its time limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Threads one call runs, and all calls of the process together; never above the cores.
    pub max_threads: u32,
    /// Candidates in one request.
    pub max_candidates: usize,
    /// Bytes of one call's text arguments together (user, history, candidates, options).
    pub max_request_bytes: usize,
    /// Tokens one generation-mode answer may take.
    pub max_generated_tokens: usize,
    /// Model calls running at once; more wait for a free slot within their time limit.
    pub max_concurrent_calls: usize,
    /// Wall-clock milliseconds one call may run; 0 for no limit. A call's `timeout_ms`
    /// option may shorten it, never lengthen it.
    pub max_call_ms: u64,
    /// Models loaded at once.
    pub max_models: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_threads: cores(),
            max_candidates: 1000,
            max_request_bytes: 1 << 20,
            max_generated_tokens: 512,
            max_concurrent_calls: cores() as usize,
            max_call_ms: 0,
            max_models: 16,
        }
    }
}

/// The cores this process may use; a context's default thread count. Read once: on Linux
/// `available_parallelism` reads the cgroup's files each time (~0.1 ms), and every call
/// consults the caps, which are made of it.
pub fn cores() -> u32 {
    static CORES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

static LIMITS: RwLock<Option<Limits>> = RwLock::new(None);
static SEALED: Mutex<bool> = Mutex::new(false);

/// The caps in force.
pub fn get() -> Limits {
    LIMITS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .unwrap_or_default()
}

impl Limits {
    /// Checks that the caps make sense on this machine.
    fn check(&self) -> Result<()> {
        let bad = |key: &'static str, problem: String| Err(KvrecError::BadOption { key, problem });
        if self.max_threads == 0 || self.max_threads > cores() {
            return bad(
                "max_threads",
                format!(
                    "must be between 1 and this machine's {} cores, got {}",
                    cores(),
                    self.max_threads
                ),
            );
        }
        for (key, value) in [
            ("max_candidates", self.max_candidates),
            ("max_request_bytes", self.max_request_bytes),
            ("max_generated_tokens", self.max_generated_tokens),
            ("max_concurrent_calls", self.max_concurrent_calls),
            ("max_models", self.max_models),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The value of cap `cap`.
    fn limit(&self, cap: &str) -> u64 {
        match cap {
            "max_threads" => u64::from(self.max_threads),
            "max_candidates" => self.max_candidates as u64,
            "max_request_bytes" => self.max_request_bytes as u64,
            "max_generated_tokens" => self.max_generated_tokens as u64,
            "max_call_ms" => self.max_call_ms,
            "max_models" => self.max_models as u64,
            _ => 0,
        }
    }

    /// The error for `what` = `got` above cap `cap`.
    fn over(&self, what: &str, got: u64, cap: &'static str, fix: &'static str) -> KvrecError {
        KvrecError::OverCap {
            what: what.to_string(),
            got,
            cap,
            limit: self.limit(cap),
            fix,
        }
    }

    /// `what` = `got` within cap `cap`, else the error that names the cap and `fix`.
    fn at_most(&self, what: &str, got: u64, cap: &'static str, fix: &'static str) -> Result<()> {
        if got > self.limit(cap) {
            return Err(self.over(what, got, cap, fix));
        }
        Ok(())
    }

    /// A requested `n_threads` within `max_threads`.
    fn check_threads(&self, options: &Options) -> Result<()> {
        match options.n_threads {
            Some(n) => self.at_most(
                "n_threads",
                n.into(),
                "max_threads",
                "leave n_threads out to use what the host allows",
            ),
            None => Ok(()),
        }
    }

    /// A call's options within the caps: its threads and its time limit.
    pub fn check_call(&self, options: &Options) -> Result<()> {
        self.check_threads(options)?;
        self.call_ms(options).map(|_| ())
    }

    /// The call's time limit: its `timeout_ms`, else the host's `max_call_ms`; `None` for none.
    pub fn call_ms(&self, options: &Options) -> Result<Option<u64>> {
        match (options.timeout_ms, self.max_call_ms) {
            (Some(t), cap) if cap > 0 && t > cap => Err(self.over(
                "timeout_ms",
                t,
                "max_call_ms",
                "pass a shorter timeout_ms, or leave it out",
            )),
            (Some(t), _) => Ok(Some(t)),
            (None, 0) => Ok(None),
            (None, cap) => Ok(Some(cap)),
        }
    }

    /// The size of one call's text arguments.
    pub fn check_request_bytes(&self, bytes: usize) -> Result<()> {
        self.at_most(
            "the call's text arguments' size in bytes",
            bytes as u64,
            "max_request_bytes",
            "send fewer candidates or a shorter history",
        )
    }

    pub fn check_candidates(&self, n: usize) -> Result<()> {
        self.at_most(
            "the number of candidates",
            n as u64,
            "max_candidates",
            "rank fewer candidates per call, or the whole catalog with recommend_topk()",
        )
    }

    pub fn check_generated_tokens(&self, n: usize) -> Result<()> {
        self.at_most(
            "the answer this generation needs, in tokens,",
            n as u64,
            "max_generated_tokens",
            "use mode 'score' (the default), which ranks any number of candidates in one pass",
        )
    }

    /// Load options within the caps, with `loaded` models loaded already.
    pub fn check_load(&self, options: &Options, loaded: usize) -> Result<()> {
        self.check_threads(options)?;
        self.at_most(
            "the number of loaded models",
            loaded as u64 + 1,
            "max_models",
            "unload a model first with kvrec_unload_model(name)",
        )
    }
}

/// Sets the caps; refused once the host sealed them.
pub fn set(limits: Limits) -> Result<()> {
    limits.check()?;
    let sealed = lock(&SEALED);
    if *sealed {
        return Err(KvrecError::Sealed {
            what: "changing the caps",
        });
    }
    *LIMITS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(limits);
    Ok(())
}

/// Seals the host's settings for the life of the process: caps stay as they are, and the
/// host-only SQL functions refuse from now on.
pub fn seal() {
    *lock(&SEALED) = true;
}

pub fn is_sealed() -> bool {
    *lock(&SEALED)
}

/// Refuses `what` once the host's settings are sealed.
pub fn check_unsealed(what: &'static str) -> Result<()> {
    if is_sealed() {
        Err(KvrecError::Sealed { what })
    } else {
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// A model call's place among the `max_concurrent_calls`; freed when dropped.
pub struct CallSlot(());

impl Drop for CallSlot {
    fn drop(&mut self) {
        *lock(&RUNNING) -= 1;
        FREED.notify_one();
    }
}

/// Takes a slot for a model call, waiting while `max_concurrent_calls` run, for as long as
/// the call's limit allows.
pub fn enter(cancel: &Cancel) -> Result<CallSlot> {
    let cap = get().max_concurrent_calls.max(1);
    let mut running = lock(&RUNNING);
    while *running >= cap {
        if let Err(e) = cancel.check() {
            return Err(match e {
                KvrecError::TimedOut { .. } => KvrecError::Busy { running: *running },
                other => other,
            });
        }
        running = FREED
            .wait_timeout(running, Duration::from_millis(10))
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
    *running += 1;
    Ok(CallSlot(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_machine_and_options_cannot_exceed_them() {
        let limits = Limits::default();
        limits.check().unwrap();
        assert_eq!(limits.max_threads, cores());
        let many = Options {
            n_threads: Some(cores() + 1),
            ..Options::default()
        };
        let err = limits.check_call(&many).unwrap_err();
        assert!(err.to_string().contains("max_threads"), "{err}");
        assert!(limits.check_candidates(1000).is_ok());
        assert!(limits.check_candidates(1001).is_err());
        assert!(limits.check_request_bytes(2 << 20).is_err());
    }

    #[test]
    fn a_timeout_may_shorten_the_hosts_limit_but_never_lengthen_it() {
        let limits = Limits {
            max_call_ms: 1000,
            ..Limits::default()
        };
        let with = |t| Options {
            timeout_ms: t,
            ..Options::default()
        };
        assert_eq!(limits.call_ms(&with(None)).unwrap(), Some(1000));
        assert_eq!(limits.call_ms(&with(Some(200))).unwrap(), Some(200));
        assert!(limits.call_ms(&with(Some(5000))).is_err());
        assert_eq!(Limits::default().call_ms(&with(None)).unwrap(), None);
        assert_eq!(
            Limits::default().call_ms(&with(Some(5000))).unwrap(),
            Some(5000)
        );
    }

    #[test]
    fn calls_beyond_the_concurrent_cap_wait_then_say_busy() {
        let cap = get().max_concurrent_calls;
        let held: Vec<CallSlot> = (0..cap).map(|_| enter(&Cancel::none()).unwrap()).collect();
        let start = std::time::Instant::now();
        let err = enter(&Cancel::new(Some(30), None)).err().unwrap();
        assert_eq!(err, KvrecError::Busy { running: cap });
        assert!(start.elapsed() >= Duration::from_millis(30));
        // A slot freed while a call waits is taken.
        let waiter = std::thread::spawn(|| enter(&Cancel::new(Some(5000), None)).is_ok());
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn caps_above_the_cores_or_at_zero_are_refused() {
        for bad in [
            Limits {
                max_threads: cores() + 1,
                ..Limits::default()
            },
            Limits {
                max_candidates: 0,
                ..Limits::default()
            },
        ] {
            assert!(bad.check().is_err());
        }
    }
}
