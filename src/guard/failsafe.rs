//! The guard's own view of its store: when it last had a confirmed read, and whether it
//! guards writes itself because it has not had one for `stale_after` (the fail-safe of a
//! replica that can no longer learn of a deploy another replica was told about).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::{Config, OnStoreLoss, StateBackend};

use super::state::{Engagement, Source};
use super::{lock, Guard};

/// How long a client is told to wait while a replica guards writes for want of its store:
/// short, since the store usually comes back within seconds.
pub const FAILSAFE_RETRY_AFTER: u64 = 5;

/// Tracks the store's confirmations. Without `stale_after` (the file backend: a state this
/// process cannot read is handled where it fails), there is no fail-safe.
#[derive(Debug)]
pub(super) struct Health {
    stale_after: Option<Duration>,
    on_loss: OnStoreLoss,
    confirmed: Mutex<Option<Instant>>,
    /// Since when the store has been lost (no confirmed read for `stale_after`).
    lost_since: Mutex<Option<OffsetDateTime>>,
}

impl Health {
    pub(super) fn new(cfg: &Config) -> Self {
        let (stale_after, on_loss) = match &cfg.state.backend {
            StateBackend::File => (None, OnStoreLoss::LastKnown),
            StateBackend::Redis(r) => (Some(r.stale_after), r.on_store_loss),
        };
        Health {
            stale_after,
            on_loss,
            confirmed: Mutex::new(None),
            lost_since: Mutex::new(None),
        }
    }

    pub(super) fn confirm(&self) {
        *lock(&self.confirmed) = Some(Instant::now());
    }

    /// Whether the state is shared with other replicas (which may change it at any time).
    pub(super) fn shared(&self) -> bool {
        self.stale_after.is_some()
    }

    /// Whether the store was confirmed within `stale_after` (always, without one).
    pub(super) fn fresh(&self) -> bool {
        match self.stale_after {
            None => true,
            Some(limit) => lock(&self.confirmed).is_some_and(|at| at.elapsed() <= limit),
        }
    }

    pub(super) fn lost_since(&self) -> Option<OffsetDateTime> {
        *lock(&self.lost_since)
    }

    /// Whether the proxy guards writes because the store is lost.
    pub(super) fn failsafe(&self) -> bool {
        self.on_loss == OnStoreLoss::GuardWrites && self.lost_since().is_some()
    }
}

impl Guard {
    /// Compares the last confirmed read of the store with `stale_after`, and enters or
    /// leaves the fail-safe. Never waits on the store: the upkeep calls it often, while a
    /// read of a frozen store may be hanging elsewhere.
    pub fn check_store(&self) {
        let fresh = self.health.fresh();
        let was_lost = self.health.lost_since().is_some();
        if was_lost != fresh {
            return; // lost and still stale, or fine and still fresh
        }
        *lock(&self.health.lost_since) = (!fresh).then(|| self.clock.now());
        if fresh {
            tracing::warn!("the shared guard state can be read again: the fail-safe ends");
            // A change refused while the store was away no longer keeps this one unready.
            self.store_ok_again();
        } else if self.health.on_loss == OnStoreLoss::GuardWrites {
            tracing::error!(
                stale_after = ?self.health.stale_after,
                "no confirmed read of the shared guard state: fail-safe, this replica guards writes itself until it can read it again (state.on_store_loss = \"guard-writes\")"
            );
        } else {
            tracing::error!(
                stale_after = ?self.health.stale_after,
                "no confirmed read of the shared guard state: writes keep the last known treatment (state.on_store_loss = \"last-known\"); a deploy starting now is not seen"
            );
        }
        self.publish();
    }

    /// The fail-safe as an engagement, for `/status`.
    pub(super) fn failsafe_engagement(&self) -> Option<Engagement> {
        let since = self
            .health
            .lost_since()
            .filter(|_| self.health.failsafe())?;
        Some(Engagement {
            id: "store".into(),
            source: Source::Store,
            reason: "the shared guard state cannot be read: guarding writes until it can".into(),
            since,
            expires_at: crate::deadline::expiry(self.clock.now(), self.max_engaged()),
        })
    }

    /// Whether this process should get traffic as far as its store is concerned. A process
    /// whose own state file cannot be written should not (another can take its place); with
    /// a shared store, every replica has the same store, and a replica that cannot read it
    /// guards writes itself (or, with `last-known`, was told to carry on).
    pub fn store_serviceable(&self) -> bool {
        self.health.shared() || self.store_ok()
    }

    /// Whether the store answered within `stale_after` and the last change was stored.
    pub fn store_confirmed(&self) -> bool {
        self.health.fresh() && self.store_ok()
    }
}
