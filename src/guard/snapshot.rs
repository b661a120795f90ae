//! What the proxy reads on every request, in one atomic load: the guard's current span and
//! the `[guard]` settings a reload swaps in; and how the guard publishes it after every change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::outlook::Outlook;
use super::policy::Policy;
use super::state::GuardState;
use super::{for_visitors, lock, Guard};
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

impl Guard {
    /// Makes `state` the current one and publishes it to the proxy and the event streams.
    pub(super) fn install(&self, state: GuardState) {
        self.state.store(Arc::new(state));
        self.publish();
    }

    /// Publishes the current state, and the fail-safe, to the proxy and the event streams.
    pub(super) fn publish(&self) {
        let _publishing = lock(&self.publishing);
        let state = self.state.load();
        let now = self.clock.now();
        let failsafe = self.health.failsafe();
        let span = state.span(now);
        let until = if failsafe {
            Some(crate::deadline::after(Instant::now(), self.max_engaged()))
        } else {
            span.map(|(_, until)| self.clock.instant_of(until))
        };
        let since = if failsafe {
            self.health.lost_since()
        } else {
            span.map(|(since, _)| since)
        };
        let reason = if failsafe {
            // Shown to visitors whose write is refused.
            Some(Arc::from(
                "saving is paused for a moment while the site checks its deploy status",
            ))
        } else {
            state
                .engagements
                .iter()
                .filter(|e| e.expires_at > now)
                .min_by_key(|e| e.since)
                .and_then(|e| for_visitors(&e.reason))
                .map(Arc::from)
        };
        let (settings, releasing) = {
            let before = self.snapshot.load();
            (
                before.settings.clone(),
                before.until.is_some() && until.is_none(),
            )
        };
        // Before the release is visible: a write that sees it must find the queue of the
        // held writes to line up behind (see `Gate::releasing`).
        if releasing {
            self.gate.releasing();
        }
        let outlook = if failsafe {
            None
        } else {
            Outlook::of(&state, now, &self.clock)
        };
        self.snapshot.store(Arc::new(Snapshot {
            until,
            since,
            reason,
            settings,
            failsafe,
            outlook,
        }));
        self.changes.send_replace(());
        // An engagement that ran out by the clock still has its window in the previous
        // snapshot until the sweep removes it: that removal is the release too. (Publishers
        // hold the publishing lock, so the snapshot read above is the one replaced.)
        if releasing {
            self.gate.open();
        }
    }
}
