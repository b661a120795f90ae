//! The guard: who engaged it and until when, and whether a request may pass.
//!
//! Writers (webhooks, the operator API, the expiry sweep) take a mutex, persist the new state
//! and only then publish it; the proxy reads an `ArcSwap` snapshot and never locks.

mod gate;
mod policy;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Config;
use crate::store::{FileStore, StoreError};
use crate::upsun::Activity;

pub use gate::{Counted, Gate, Traffic};
pub use policy::{Decision, Policy};
pub use state::{Applied, Deploy, Engagement, GuardState, Scope, Source};

/// What the proxy needs on every request, published after every change.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Guarded until this instant (the latest expiry of the active engagements).
    until: Option<SystemTime>,
    /// The earliest start of the active engagements.
    pub since: Option<OffsetDateTime>,
    /// Why (the oldest active engagement's reason).
    pub reason: Option<Arc<str>>,
}

impl Snapshot {
    /// Reads the clock only while something is engaged.
    #[inline]
    pub fn guarded(&self) -> bool {
        self.until.is_some_and(|u| SystemTime::now() < u)
    }
}

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
    store: FileStore,
    scope: Scope,
    max_engaged: Duration,
    retry_after: Duration,
    policy: Policy,
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
    /// Restores state from the store. An unreadable state file fails closed: it is moved
    /// aside and the guard starts ENGAGED (until released or `max_engaged`).
    pub fn open(cfg: &Config) -> Guard {
        let store = FileStore::new(&cfg.state.path);
        let now = OffsetDateTime::now_utc();
        let (mut state, problem) = match store.load() {
            Ok(state) => (state.unwrap_or_default(), None),
            Err(e) => {
                let mut aside = store.path().as_os_str().to_owned();
                aside.push(".corrupt");
                let moved = std::fs::rename(store.path(), &aside).is_ok();
                tracing::error!(
                    error = %e,
                    moved_to = moved.then(|| aside.to_string_lossy().into_owned()),
                    "state file unreadable: failing closed, writes are GUARDED until released"
                );
                let mut state = GuardState::default();
                state.engage_manual(
                    format!("state file unreadable at start: {e}"),
                    cfg.guard.max_engaged,
                    now,
                );
                (state, Some(e.to_string()))
            }
        };
        for e in state.expire(now) {
            tracing::warn!(id = %e.id, reason = %e.reason, "engagement expired while stopped; dropped");
        }
        let guard = Guard {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            state: Mutex::new(GuardState::default()),
            store,
            scope: Scope {
                project: cfg.upsun.project.clone(),
                environments: cfg.upsun.environments.clone(),
                guard_pending: cfg.upsun.guard_pending,
            },
            max_engaged: cfg.guard.max_engaged,
            retry_after: cfg.guard.retry_after,
            policy: Policy::new(&cfg.guard),
            gate: Gate::new(cfg.guard.release_concurrency),
            changes: tokio::sync::watch::Sender::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
            traffic: Traffic::default(),
            problem: Mutex::new(problem),
        };
        guard.publish(&state, now);
        *guard.lock() = state;
        guard
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
        self.policy
            .decide(self.snapshot().guarded(), method, path, headers)
    }

    /// Seconds a client should wait: the configured value, or less when every engagement
    /// ends sooner.
    pub fn retry_after_secs(&self) -> u64 {
        let cfg = self.retry_after.as_secs().max(1);
        match self.snapshot().until {
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

    /// Applies `change` to a copy of the state, persists it, then publishes it. On a store
    /// error nothing changes.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut GuardState, OffsetDateTime) -> T,
    ) -> Result<T, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.lock();
        let mut next = state.clone();
        let out = change(&mut next, now);
        if next != *state {
            self.store.save(&next)?;
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
        let previous = self.snapshot.swap(Arc::new(Snapshot {
            until,
            since: span.map(|(since, _)| since),
            reason,
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

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn apply_activity(&self, activity: &Activity) -> Result<Applied, StoreError> {
        self.mutate(|s, now| s.apply_activity(activity, &self.scope, now, self.max_engaged))
    }

    pub fn engage(&self, reason: String, ttl: Option<Duration>) -> Result<Engagement, StoreError> {
        let ttl = ttl.unwrap_or(self.max_engaged);
        self.mutate(|s, now| s.engage_manual(reason, ttl, now))
    }

    pub fn release(&self, all: bool) -> Result<Vec<Engagement>, StoreError> {
        self.mutate(|s, _| s.release(all))
    }

    /// Drops engagements whose time is up, loudly.
    pub fn expire(&self) -> Result<Vec<Engagement>, StoreError> {
        let gone = self.mutate(|s, now| s.expire(now))?;
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
        self.max_engaged
    }
}
