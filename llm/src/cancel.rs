//! Cancelling a call that is under way: its time limit, and the host's interrupt.
//!
//! A model call checks [`Cancel::check`] before every llama.cpp decode, every generated token
//! and every wait for a context, so a call that runs past its limit, or whose host interrupts
//! the statement, stops within one decode and leaves the model as usable as before.

use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use kvrec_core::{KvrecError, Result};

/// How often the host is asked whether it interrupted the call, the first time after one
/// period: asking runs a small SQL statement (about 0.3 ms, a third of a whole call of the
/// default model), so short calls never ask (the host sees its own interrupt between
/// them) and long ones spend under 2 % on it.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// Whether the host interrupted the call. It is asked only on the thread that made the
/// [`Cancel`]: a host connection may be locked by that thread for the whole call.
pub type HostProbe<'a> = &'a (dyn Fn() -> bool + Sync);

/// One call's cancellation state.
pub struct Cancel<'a> {
    deadline: Option<(Instant, u64)>,
    host: Option<HostProbe<'a>>,
    owner: ThreadId,
    next_probe: Mutex<Instant>,
    /// Why the call was cancelled, once it was: every later check returns it at once, on
    /// every thread of the call.
    reason: OnceLock<KvrecError>,
}

impl<'a> Cancel<'a> {
    /// A call that runs until it is done.
    pub fn none() -> Cancel<'static> {
        Cancel::new(None, None)
    }

    /// A call cut after `limit_ms` (from now), or when `host` says it was interrupted.
    pub fn new(limit_ms: Option<u64>, host: Option<HostProbe<'a>>) -> Cancel<'a> {
        let now = Instant::now();
        Cancel {
            deadline: limit_ms.map(|ms| (now + Duration::from_millis(ms), ms)),
            host,
            owner: std::thread::current().id(),
            next_probe: Mutex::new(now + PROBE_EVERY),
            reason: OnceLock::new(),
        }
    }

    /// `Err` once the call is cancelled: [`KvrecError::TimedOut`] past its limit,
    /// [`KvrecError::Interrupted`] when the host interrupted it.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.reason.get() {
            return Err(reason.clone());
        }
        let now = Instant::now();
        if let Some((at, ms)) = self.deadline {
            if now >= at {
                return Err(self.cancel(KvrecError::TimedOut { ms }));
            }
        }
        if let Some(host) = self.host {
            if std::thread::current().id() == self.owner {
                let mut next = self
                    .next_probe
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if now >= *next {
                    *next = now + PROBE_EVERY;
                    drop(next);
                    if host() {
                        return Err(self.cancel(KvrecError::Interrupted));
                    }
                }
            }
        }
        Ok(())
    }

    /// Time left before the limit, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|(at, _)| at.saturating_duration_since(Instant::now()))
    }

    fn cancel(&self, reason: KvrecError) -> KvrecError {
        self.reason.get_or_init(|| reason).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_call_without_limits_is_never_cancelled() {
        let cancel = Cancel::none();
        assert!(cancel.check().is_ok());
        assert_eq!(cancel.remaining(), None);
    }

    #[test]
    fn the_time_limit_cancels_for_good() {
        let cancel = Cancel::new(Some(5), None);
        assert!(cancel.check().is_ok());
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(cancel.check(), Err(KvrecError::TimedOut { ms: 5 }));
        assert_eq!(cancel.remaining(), Some(Duration::ZERO));
    }

    #[test]
    fn the_host_is_asked_on_the_owner_thread_only_and_not_too_often() {
        let asked = AtomicUsize::new(0);
        let interrupted = std::sync::atomic::AtomicBool::new(false);
        let probe = || {
            asked.fetch_add(1, Ordering::SeqCst);
            interrupted.load(Ordering::SeqCst)
        };
        let cancel = Cancel::new(None, Some(&probe));
        for _ in 0..100 {
            cancel.check().unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 0, "a short call never asks");
        std::thread::sleep(PROBE_EVERY);
        for _ in 0..100 {
            cancel.check().unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "probes are rate-limited");
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(PROBE_EVERY);
                interrupted.store(true, Ordering::SeqCst);
                cancel.check().unwrap();
            });
        });
        assert_eq!(asked.load(Ordering::SeqCst), 1, "other threads never probe");
        assert_eq!(cancel.check(), Err(KvrecError::Interrupted));
        // Once cancelled, every thread sees it without asking the host.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(cancel.check(), Err(KvrecError::Interrupted)));
        });
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }
}
