//! The guard: who engaged it and until when, and whether a request may pass.
//!
//! Writers (webhooks, the operator API, the expiry sweep) compute a change as a pure
//! transition of the current [`GuardState`], commit it to the [`Backend`] with a
//! compare-and-set on the state's version, and only then publish it; when another process
//! committed first, they adopt its state and apply the transition again. Changes committed
//! by another process sharing the backend are adopted by [`Guard::refresh`]. Readers
//! (`/status`, the proxy) load published `ArcSwap`s and never wait on a writer.

mod audit;
mod backend;
mod clock;
mod estimate;
mod failsafe;
mod gate;
mod history;
mod outlook;
mod policy;
mod replicas;
mod snapshot;
mod state;
mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use time::OffsetDateTime;

use crate::config::{Config, GuardConfig};
use crate::traffic::Traffic;
use crate::upsun::Activity;

pub use audit::AuditRecord;
use audit::{audit_records, Origin};
pub use backend::{Backend, Commit, StoreError};
use clock::Clock;
use failsafe::{Health, FAILSAFE_RETRY_AFTER};
pub use gate::{Gate, Place};
pub use history::DeployKey;
pub use policy::Decision;
pub use replicas::Replica;
pub use snapshot::{Retry, Settings, Snapshot};
pub use state::{Applied, Deploy, DeployEvent, Engagement, GuardState, Scope, Source};
pub use status::{PublicStatus, Status};

pub struct Guard {
    /// Serialises this process's writers (the backend serialises processes).
    writer: Mutex<()>,
    /// Serialises publishing snapshots; held briefly, never across a store operation, so the
    /// fail-safe can be published while a writer waits on a frozen store.
    publishing: Mutex<()>,
    /// The state as last committed or adopted.
    state: ArcSwap<GuardState>,
    snapshot: ArcSwap<Snapshot>,
    backend: Box<dyn Backend>,
    clock: Clock,
    scope: Scope,
    gate: Gate,
    traffic: Arc<Traffic>,
    /// Ticks on every published change (for live event streams).
    changes: tokio::sync::watch::Sender<()>,
    /// Set when the server shuts down: long-lived streams end.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Wakes held writes at shutdown: a `Notified` is 64 bytes, [`Guard::stopped`]'s future
    /// 168, and each held write waits on one.
    stop: tokio::sync::Notify,
    /// A problem with the stored state (unreadable at start, or the last change could not
    /// be saved), shown in `/status` until the next successful write.
    problem: ArcSwapOption<String>,
    /// The last attempt to store a change failed: not ready until one succeeds.
    store_failing: AtomicBool,
    /// When the store last answered, and the fail-safe.
    health: Health,
    /// This process as a member sharing the state (its version and fail-safe filled in
    /// when announced).
    me: Replica,
    /// Every live member, as last announced.
    replicas: ArcSwap<Vec<Replica>>,
}

/// The reason of the engagement a start on an unreadable state file takes (older versions
/// appended the file and the error to it).
const FAIL_CLOSED: &str = "state file unreadable at start";

/// What visitors whose write is refused are told of an engagement's reason: the operator's
/// or Upsun's words, except the fail-closed engagement's, which is about our own files
/// (they get the generic maintenance text).
fn for_visitors(reason: &str) -> Option<&str> {
    (!reason.starts_with(FAIL_CLOSED)).then_some(reason)
}

impl Guard {
    /// Restores state from `backend`. An unreadable state fails closed: it is set aside
    /// and the guard starts ENGAGED (until released or `max_engaged`), and that engagement
    /// is saved, so the next start is engaged too.
    ///
    /// A shared store that cannot be reached is not unreadable: the guard starts from the
    /// state last seen here ([`Backend::cached`]) in fail-safe, until the store answers.
    pub fn open(cfg: &Config, backend: Box<dyn Backend>, me: Replica) -> Guard {
        let health = Health::new(cfg);
        let mut unreachable = false;
        let (loaded, unreadable) = match backend.load() {
            Ok(state) => {
                health.confirm();
                (state.unwrap_or_default(), None)
            }
            Err(e @ StoreError::Unreachable { .. }) => {
                let cached = backend.cached();
                tracing::error!(
                    error = %e,
                    cached_version = cached.as_ref().map(|s| s.version),
                    "starting from the last state seen here, in fail-safe until the store answers"
                );
                unreachable = true;
                (cached.unwrap_or_default(), None)
            }
            Err(e) => {
                let moved_to = backend.set_aside();
                tracing::error!(
                    error = %e,
                    moved_to,
                    "state file unreadable: failing closed, writes are GUARDED until released"
                );
                (GuardState::default(), Some(e.to_string()))
            }
        };
        let guard = Guard {
            writer: Mutex::new(()),
            publishing: Mutex::new(()),
            state: ArcSwap::from_pointee(GuardState::default()),
            snapshot: ArcSwap::from_pointee(Snapshot {
                until: None,
                since: None,
                reason: None,
                settings: Arc::new(Settings::new(&cfg.guard)),
                failsafe: false,
                outlook: None,
            }),
            backend,
            clock: Clock::start(),
            scope: Scope {
                project: cfg.upsun.project.clone(),
                environments: cfg.upsun.environments.clone(),
                guard_pending: cfg.upsun.guard_pending,
            },
            gate: Gate::new(cfg.guard.release_concurrency),
            changes: tokio::sync::watch::Sender::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
            stop: tokio::sync::Notify::new(),
            traffic: Arc::default(),
            problem: ArcSwapOption::empty(),
            store_failing: AtomicBool::new(false),
            health,
            replicas: ArcSwap::from_pointee(vec![me.clone()]),
            me,
        };
        guard.install(loaded);
        guard.check_store();
        if unreachable {
            // Expiry waits for the store: every change does.
            return guard;
        }
        if let Some(problem) = unreadable {
            guard.fail_closed(cfg.guard.max_engaged);
            guard.problem.store(Some(Arc::new(problem)));
        }
        let origin = Origin::writeguard("expiry", "expired while writeguard was stopped");
        match guard.mutate(&origin, |s, now| s.expire(now)) {
            Ok(gone) => {
                for e in &gone {
                    tracing::warn!(id = %e.id, reason = %e.reason, "engagement expired while stopped; dropped");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot save engagements that expired while stopped; will retry")
            }
        }
        guard
    }

    /// Engages the guard because the stored state could not be read. Kept in memory even
    /// when it cannot be saved: the state in memory is the safe one either way.
    /// Its reason names no file and no error: those are in `/status` (`problem`) and the log.
    fn fail_closed(&self, max_engaged: Duration) {
        let reason = FAIL_CLOSED.to_owned();
        let origin = Origin::writeguard("startup", FAIL_CLOSED);
        let engage = |s: &mut GuardState, now| {
            s.engage_manual(reason.clone(), max_engaged, now);
        };
        if let Err(e) = self.mutate(&origin, engage) {
            tracing::error!(error = %e, "cannot save the fail-closed engagement; it holds in memory");
            let mut state = (*self.state.load_full()).clone();
            engage(&mut state, self.clock.now());
            self.install(state);
        }
    }

    #[inline]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// What the guard does with such a request while engaged (every request is classified,
    /// engaged or not: the ones it watches count as in-flight writes).
    #[inline]
    pub fn classify(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Decision {
        self.snapshot()
            .settings
            .policy
            .classify(method, path, headers)
    }

    /// [`Guard::classify`] of a raw HTTP/1.1 head (see [`policy::Policy::classify_raw`]).
    pub fn classify_raw<'h>(
        &self,
        method: &http::Method,
        path: &str,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Decision {
        self.snapshot()
            .settings
            .policy
            .classify_raw(method, path, headers)
    }

    /// Swaps in new `[guard]` settings (a reload); the state and held requests stay.
    pub fn reload(&self, cfg: &GuardConfig) {
        let _publishing = lock(&self.publishing);
        let current = self.snapshot.load_full();
        self.gate.set_concurrency(cfg.release_concurrency);
        self.snapshot.store(Arc::new(Snapshot {
            until: current.until,
            since: current.since,
            reason: current.reason.clone(),
            settings: Arc::new(Settings::new(cfg)),
            failsafe: current.failsafe,
            outlook: current.outlook.clone(),
        }));
        self.changes.send_replace(());
    }

    /// Seconds a client should wait: until writes are expected back when every running
    /// engagement has a history to go by; otherwise the configured value, or less when every
    /// engagement ends sooner.
    pub fn retry_after_secs(&self) -> u64 {
        Self::retry_after_of(&self.snapshot())
    }

    /// [`Guard::retry_after_secs`] for a snapshot already loaded.
    pub fn retry_after_of(snapshot: &Snapshot) -> u64 {
        Self::retry_of(snapshot, Instant::now(), || 0.0).after
    }

    /// What a refused request is told: as [`Guard::retry_after_of`], but a Retry-After
    /// estimated from history is moved by up to ±15 % at random, so that the clients refused
    /// together do not all retry at once.
    pub fn refused_retry_of(snapshot: &Snapshot) -> Retry {
        Self::retry_of(snapshot, Instant::now(), || {
            rand::random::<f64>() * 2.0 - 1.0
        })
    }

    fn retry_of(snapshot: &Snapshot, now: Instant, jitter: impl FnOnce() -> f64) -> Retry {
        let cfg = snapshot.settings.retry_after.as_secs().max(1);
        if snapshot.failsafe {
            return Retry {
                after: cfg.min(FAILSAFE_RETRY_AFTER),
                back_in: None,
            };
        }
        if let Some((left, cap)) = snapshot.outlook.as_ref().and_then(|o| o.left(now)) {
            return Retry {
                after: estimate::retry_after(left, cap, jitter()),
                back_in: Some(estimate::retry_after(left, cap, 0.0)),
            };
        }
        let after = match snapshot.until {
            Some(u) => u
                .checked_duration_since(now)
                .map(|left| left.as_secs().clamp(1, cfg))
                .unwrap_or(cfg),
            None => cfg,
        };
        Retry {
            after,
            back_in: None,
        }
    }

    /// When writes are expected back, if every running engagement has a history to go by.
    pub fn eta(&self) -> Option<OffsetDateTime> {
        let snapshot = self.snapshot();
        let eta = snapshot.outlook.as_ref()?.eta(Instant::now())?;
        Some(self.clock.at(eta))
    }

    /// Whether the last attempt to store a change succeeded (or none failed yet).
    pub fn store_ok(&self) -> bool {
        !self.store_failing.load(Ordering::Acquire)
    }

    /// Ready again: the store took a change, or came back after an outage.
    fn store_ok_again(&self) {
        self.store_failing.store(false, Ordering::Release);
        self.problem.store(None);
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.writer)
    }

    /// Applies `change` to a copy of the current state and commits it with its audit lines
    /// (compare-and-set on the version); when another process committed first, adopts its
    /// state and applies `change` again. Publishes only what was committed. On a store error
    /// nothing changes.
    fn mutate<T>(
        &self,
        origin: &Origin,
        change: impl Fn(&mut GuardState, OffsetDateTime) -> T,
    ) -> Result<T, StoreError> {
        let _writer = self.write_lock();
        if self.health.shared() {
            // Decided on what the store holds now, not on what this replica saw last: even a
            // change that turns out to change nothing is acknowledged only on a confirmed
            // state.
            let newer = self.backend.newer_than(self.state.load().version)?;
            self.health.confirm();
            if let Some(newer) = newer {
                self.adopt(newer);
            }
        }
        loop {
            let now = self.clock.now();
            let current = self.state.load_full();
            let mut next = (*current).clone();
            let out = change(&mut next, now);
            if next == *current {
                return Ok(out);
            }
            next.version = current.version + 1;
            let records = audit_records(origin, &current, &next, now);
            let committed = self.backend.commit(&next, &records);
            if let Err(e) = &committed {
                self.store_failing.store(true, Ordering::Release);
                self.problem.store(Some(Arc::new(format!(
                    "the last change could not be saved: {e}"
                ))));
            } else {
                self.health.confirm();
            }
            match committed? {
                Commit::Done => {
                    self.store_ok_again();
                    self.install(next);
                    return Ok(out);
                }
                Commit::Stale(newer) => {
                    tracing::info!(
                        ours = next.version,
                        stored = newer.version,
                        "another process changed the guard first; applying this change on top"
                    );
                    self.install(newer);
                }
            }
        }
    }

    /// Adopts a state committed by another process sharing the backend, if there is a newer
    /// one. Called periodically; cheap when nothing changed.
    pub fn refresh(&self) -> Result<(), StoreError> {
        let newer = self.backend.newer_than(self.state.load().version)?;
        self.health.confirm();
        if let Some(newer) = newer {
            let _writer = self.write_lock();
            self.adopt(newer);
        }
        Ok(())
    }

    /// Installs a state another process committed, if still newer. Under the write lock.
    fn adopt(&self, newer: GuardState) {
        if newer.version > self.state.load().version {
            tracing::info!(
                version = newer.version,
                "adopted a guard state changed by another process"
            );
            self.install(newer);
        }
    }

    /// Shutdown: ends the live event streams, and held writes get their 503.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        self.stop.notify_waiters();
    }

    /// Resolves at the first [`Guard::stop`] after it was made: make it, then read
    /// [`Guard::stopping`], then wait on it, and no stop is missed.
    pub fn stop_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.stop.notified()
    }

    /// Whether [`Guard::stop`] was called.
    pub fn stopping(&self) -> bool {
        *self.stopping.borrow()
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

    /// Where held writes queue for the release.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn traffic(&self) -> &Arc<Traffic> {
        &self.traffic
    }

    pub fn apply_activity(&self, activity: &Activity) -> Result<Applied, StoreError> {
        let max_engaged = self.max_engaged();
        self.mutate(&Origin::webhook(activity), |s, now| {
            s.apply_activity(activity, &self.scope, now, max_engaged)
        })
    }

    /// A deploy event from a sender other than Upsun, with its delivery id and how long
    /// that id is remembered (see [`GuardState::apply_message`]).
    pub fn apply_message(
        &self,
        delivery: Option<(&str, Duration)>,
        event: &DeployEvent,
    ) -> Result<Applied, StoreError> {
        let max_engaged = self.max_engaged();
        self.mutate(&Origin::sender(event), |s, now| {
            s.apply_message(delivery, event, now, max_engaged)
        })
    }

    pub fn engage(&self, reason: String, ttl: Option<Duration>) -> Result<Engagement, StoreError> {
        let ttl = ttl.unwrap_or_else(|| self.max_engaged());
        self.mutate(&Origin::operator(""), |s, now| {
            s.engage_manual(reason.clone(), ttl, now)
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
        if !self.health.fresh() {
            // It could not be stored; the proxy already lets expired windows lapse by the
            // clock, and the sweep resumes with the store.
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        if !self
            .state
            .load()
            .engagements
            .iter()
            .any(|e| e.expires_at <= now)
        {
            // Nothing to sweep: no write, and with a shared store no round trip every second
            // (changes from other replicas come in through the refresh).
            return Ok(Vec::new());
        }
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

    /// Now, by the guard's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn max_engaged(&self) -> Duration {
        self.snapshot().settings.max_engaged
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Guards no data, or data a panic cannot leave half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
