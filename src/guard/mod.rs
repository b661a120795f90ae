//! The guard: who engaged it and until when, and whether a request may pass.
//!
//! Writers (webhooks, the operator API, the expiry sweep) take a mutex, persist the new state
//! and its audit line, and only then publish it; the proxy reads an `ArcSwap` snapshot (the
//! state's span and the `[guard]` settings, which a reload swaps) and never locks.

mod audit;
mod backend;
mod gate;
mod policy;
mod snapshot;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{Config, GuardConfig};
use crate::upsun::Activity;

pub use audit::AuditRecord;
use audit::{audit_records, Origin};
pub use backend::{Backend, StoreError};
pub use gate::{Counted, Gate, Traffic};
pub use policy::Decision;
pub use snapshot::{Settings, Snapshot};
pub use state::{Applied, Deploy, Engagement, GuardState, Scope, Source};

/// What pages may know (the public `/status` and live events).
#[derive(Debug, Serialize)]
pub struct PublicStatus {
    pub guarded: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub retry_after: u64,
}

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct Status {
    pub guarded: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub retry_after: u64,
    pub engagements: Vec<Engagement>,
    /// Guarded writes waiting at the proxy for the release.
    pub held: usize,
    /// Guarded-method requests on their way to the upstream.
    pub in_flight_writes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

pub struct Guard {
    state: Mutex<GuardState>,
    snapshot: ArcSwap<Snapshot>,
    backend: Box<dyn Backend>,
    scope: Scope,
    gate: Gate,
    traffic: Traffic,
    /// Ticks on every published change (for live event streams).
    changes: tokio::sync::watch::Sender<()>,
    /// Set when the server shuts down: long-lived streams end.
    stopping: tokio::sync::watch::Sender<bool>,
    /// A problem with the state file found at start, shown in `/status` until the next
    /// successful write.
    problem: Mutex<Option<String>>,
}

impl Guard {
    /// Restores state from `backend`. An unreadable state fails closed: it is set aside
    /// and the guard starts ENGAGED (until released or `max_engaged`), and that engagement
    /// is saved, so the next start is engaged too.
    pub fn open(cfg: &Config, backend: Box<dyn Backend>) -> Guard {
        let now = OffsetDateTime::now_utc();
        let (loaded, mut state, problem) = match backend.load() {
            Ok(state) => {
                let state = state.unwrap_or_default();
                (state.clone(), state, None)
            }
            Err(e) => {
                let moved_to = backend.set_aside();
                tracing::error!(
                    error = %e,
                    moved_to,
                    "state file unreadable: failing closed, writes are GUARDED until released"
                );
                let mut state = GuardState::default();
                state.engage_manual(
                    format!("state file unreadable at start: {e}"),
                    cfg.guard.max_engaged,
                    now,
                );
                (GuardState::default(), state, Some(e.to_string()))
            }
        };
        let expired = state.expire(now);
        for e in &expired {
            tracing::warn!(id = %e.id, reason = %e.reason, "engagement expired while stopped; dropped");
        }
        let guard = Guard {
            snapshot: ArcSwap::from_pointee(Snapshot {
                until: None,
                since: None,
                reason: None,
                settings: Arc::new(Settings::new(&cfg.guard)),
            }),
            state: Mutex::new(GuardState::default()),
            backend,
            scope: Scope {
                project: cfg.upsun.project.clone(),
                environments: cfg.upsun.environments.clone(),
                guard_pending: cfg.upsun.guard_pending,
            },
            gate: Gate::new(cfg.guard.release_concurrency),
            changes: tokio::sync::watch::Sender::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
            traffic: Traffic::default(),
            problem: Mutex::new(problem),
        };
        if state != loaded {
            guard.record_at_start(&loaded, &state, !expired.is_empty(), now);
        }
        guard.publish(&state, now);
        *guard.lock() = state;
        guard
    }

    /// Saves what changed while opening (a fail-closed engagement, engagements that expired
    /// while stopped) and audits it. Failing here is logged, not fatal: the state in memory
    /// is the safe one either way.
    fn record_at_start(
        &self,
        loaded: &GuardState,
        state: &GuardState,
        expired: bool,
        now: OffsetDateTime,
    ) {
        let origin = if expired && loaded.engagements.len() > state.engagements.len() {
            Origin::writeguard("expiry", "expired while writeguard was stopped")
        } else {
            Origin::writeguard("startup", "state file unreadable at start")
        };
        let records = audit_records(&origin, loaded, state, now);
        if let Err(e) = self.backend.commit(state, &records) {
            tracing::error!(error = %e, "cannot record the start-up change; saving the state without its audit lines");
            // The state matters more than its audit trail here: a fail-closed engagement
            // that is not saved would be gone at the next start.
            if let Err(e) = self.backend.commit(state, &[]) {
                tracing::error!(error = %e, "cannot save the guard state at start");
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, GuardState> {
        // A panic while holding the lock cannot leave a half-applied change: changes are
        // made on a copy and swapped in whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    #[inline]
    pub fn decide(&self, method: &http::Method, path: &str, headers: &http::HeaderMap) -> Decision {
        let snapshot = self.snapshot();
        snapshot
            .settings
            .policy
            .decide(snapshot.guarded(), method, path, headers)
    }

    /// Whether `method` is one the guard stops (writes), engaged or not.
    #[inline]
    pub fn is_guarded_method(&self, method: &http::Method) -> bool {
        self.snapshot().settings.policy.is_guarded_method(method)
    }

    /// Swaps in new `[guard]` settings (a reload); the state and held requests stay.
    pub fn reload(&self, cfg: &GuardConfig) {
        let state = self.lock();
        let current = self.snapshot.load_full();
        self.gate.set_concurrency(cfg.release_concurrency);
        self.snapshot.store(Arc::new(Snapshot {
            until: current.until,
            since: current.since,
            reason: current.reason.clone(),
            settings: Arc::new(Settings::new(cfg)),
        }));
        drop(state);
        self.changes.send_replace(());
    }

    /// Seconds a client should wait: the configured value, or less when every engagement
    /// ends sooner.
    pub fn retry_after_secs(&self) -> u64 {
        Self::retry_after_of(&self.snapshot())
    }

    /// [`Guard::retry_after_secs`] for a snapshot already loaded.
    pub fn retry_after_of(snapshot: &Snapshot) -> u64 {
        let cfg = snapshot.settings.retry_after.as_secs().max(1);
        match snapshot.until {
            Some(u) => u
                .duration_since(SystemTime::now())
                .map(|left| left.as_secs().clamp(1, cfg))
                .unwrap_or(cfg),
            None => cfg,
        }
    }

    pub fn status(&self) -> Status {
        let now = OffsetDateTime::now_utc();
        let state = self.lock();
        let engagements: Vec<Engagement> = state
            .engagements
            .iter()
            .filter(|e| e.expires_at > now)
            .cloned()
            .collect();
        Status {
            guarded: !engagements.is_empty(),
            since: state.span(now).map(|(since, _)| since),
            retry_after: self.retry_after_secs(),
            engagements,
            held: self.traffic.held(),
            in_flight_writes: self.traffic.in_flight_writes(),
            problem: self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Applies `change` to a copy of the state, commits it with its audit lines, then
    /// publishes it. On a store error nothing changes.
    fn mutate<T>(
        &self,
        origin: &Origin,
        change: impl FnOnce(&mut GuardState, OffsetDateTime) -> T,
    ) -> Result<T, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.lock();
        let mut next = state.clone();
        let out = change(&mut next, now);
        if next != *state {
            let records = audit_records(origin, &state, &next, now);
            self.backend.commit(&next, &records)?;
            *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.publish(&next, now);
            *state = next;
        }
        Ok(out)
    }

    fn publish(&self, state: &GuardState, now: OffsetDateTime) {
        let span = state.span(now);
        let until = span.map(|(_, until)| SystemTime::from(until));
        let reason = state
            .engagements
            .iter()
            .filter(|e| e.expires_at > now)
            .min_by_key(|e| e.since)
            .map(|e| Arc::from(e.reason.as_str()));
        let settings = self.snapshot.load().settings.clone();
        let previous = self.snapshot.swap(Arc::new(Snapshot {
            until,
            since: span.map(|(since, _)| since),
            reason,
            settings,
        }));
        self.changes.send_replace(());
        // An engagement that ran out by the clock still has its window in the previous
        // snapshot until the sweep removes it: that removal is the release too.
        if previous.until.is_some() && until.is_none() {
            self.gate.open();
        }
    }

    /// Ends the live event streams (shutdown).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Guard::stop`] was called.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|&stop| stop).await;
        }
    }

    /// Notified after every published change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// The deploys seen, newest first.
    pub fn deploys(&self) -> Vec<Deploy> {
        self.lock().deploys.iter().rev().cloned().collect()
    }

    /// The public part of the status: no engagement details.
    pub fn public_status(&self) -> PublicStatus {
        let snapshot = self.snapshot();
        let guarded = snapshot.guarded();
        PublicStatus {
            guarded,
            since: if guarded { snapshot.since } else { None },
            retry_after: self.retry_after_secs(),
        }
    }

    /// Where held writes queue for the release.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    pub fn apply_activity(&self, activity: &Activity) -> Result<Applied, StoreError> {
        let max_engaged = self.max_engaged();
        self.mutate(&Origin::webhook(activity), |s, now| {
            s.apply_activity(activity, &self.scope, now, max_engaged)
        })
    }

    pub fn engage(&self, reason: String, ttl: Option<Duration>) -> Result<Engagement, StoreError> {
        let ttl = ttl.unwrap_or_else(|| self.max_engaged());
        self.mutate(&Origin::operator(""), |s, now| {
            s.engage_manual(reason, ttl, now)
        })
    }

    pub fn release(&self, all: bool) -> Result<Vec<Engagement>, StoreError> {
        let why = if all {
            "released by operator (all)"
        } else {
            "released by operator"
        };
        self.mutate(&Origin::operator(why), |s, now| s.release(all, now))
    }

    /// The audit log, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.backend.history(limit)
    }

    /// Drops engagements whose time is up, loudly.
    pub fn expire(&self) -> Result<Vec<Engagement>, StoreError> {
        let origin = Origin::writeguard("expiry", "expired (ttl or guard.max_engaged)");
        let gone = self.mutate(&origin, |s, now| s.expire(now))?;
        for e in &gone {
            tracing::warn!(
                id = %e.id,
                source = ?e.source,
                reason = %e.reason,
                since = %e.since,
                "engagement expired (ttl or guard.max_engaged): dropped; was a 'complete' webhook lost?"
            );
        }
        Ok(gone)
    }

    pub fn max_engaged(&self) -> Duration {
        self.snapshot().settings.max_engaged
    }
}

/// Runs a state change (which waits for the backend to make it durable) off the async
/// workers.
pub async fn blocking<T: Send + 'static>(
    change: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(change)
        .await
        .expect("state changes do not panic")
}
