//! What the proxy reads on every request, in one atomic load: the guard's current span and
//! the `[guard]` settings a reload swaps in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::outlook::Outlook;
use super::policy::Policy;
use crate::config::GuardConfig;

/// The `[guard]` settings, swapped whole by a reload.
#[derive(Debug)]
pub struct Settings {
    pub policy: Policy,
    pub retry_after: Duration,
    pub max_engaged: Duration,
    pub hold: Duration,
    pub hold_max_requests: usize,
    pub page: Option<Arc<str>>,
}

impl Settings {
    pub fn new(cfg: &GuardConfig) -> Self {
        Settings {
            policy: Policy::new(cfg),
            retry_after: cfg.retry_after,
            max_engaged: cfg.max_engaged,
            hold: cfg.hold,
            hold_max_requests: cfg.hold_max_requests,
            page: cfg.page.clone(),
        }
    }
}

/// What the proxy needs on every request, published after every change and every reload:
/// one load per request gives both the state and the settings.
#[derive(Debug)]
pub struct Snapshot {
    /// Guarded until this instant (the latest expiry of the active engagements, on the
    /// monotonic clock).
    pub(super) until: Option<Instant>,
    /// The earliest start of the active engagements.
    pub since: Option<OffsetDateTime>,
    /// Why, as visitors are told (the oldest active engagement's reason; `None`: the
    /// generic text).
    pub reason: Option<Arc<str>>,
    pub settings: Arc<Settings>,
    /// Guarded because the shared state cannot be read (`until` is then far away).
    pub failsafe: bool,
    /// When the running engagements are expected to end, if every one has a history.
    pub(super) outlook: Option<Outlook>,
}

/// When to retry, as told to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// `Retry-After`, in seconds.
    pub after: u64,
    /// Seconds until writes are expected back, when there is an estimate.
    pub back_in: Option<u64>,
}

impl Snapshot {
    /// Reads the clock only while something is engaged.
    #[inline]
    pub fn guarded(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }
}
