//! What the guard tells: the operator's `/status` (engagements, held and in-flight writes,
//! problems), the dashboard's deploys, and what pages may know. Reads of published state only:
//! never waits on a writer.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Deploy, Engagement, Guard, Replica};

/// What pages may know (the public `/status` and live events).
#[derive(Debug, Serialize)]
pub struct PublicStatus {
    pub guarded: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub retry_after: u64,
    /// When writes are expected back, from how long past deploys of the same kind took.
    #[serde(with = "time::serde::rfc3339::option")]
    pub eta: Option<OffsetDateTime>,
}

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct Status {
    pub guarded: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub retry_after: u64,
    /// When writes are expected back, if every running engagement is a deploy of a kind
    /// with enough history (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub eta: Option<OffsetDateTime>,
    pub engagements: Vec<Engagement>,
    /// Guarded writes waiting at the proxy for the release, or after it for their turn.
    pub held: usize,
    /// Guarded writes (engaged or not) on their way to the upstream or back: from their head
    /// until their request body is all sent and their answer all read (a tunnel until it
    /// closes).
    pub in_flight_writes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub store: StoreStatus,
    /// Every live process sharing this guard state (just this one with the file backend).
    pub replicas: Vec<Replica>,
}

/// Where the state is kept and whether it answers.
#[derive(Debug, Serialize)]
pub struct StoreStatus {
    /// `file` or `redis`.
    pub backend: &'static str,
    /// Confirmed within `stale_after`, and the last change was stored.
    pub ok: bool,
    /// The state version this process applied.
    pub version: u64,
    /// This process guards writes itself because it cannot read the shared state.
    pub failsafe: bool,
}

impl Guard {
    pub fn status(&self) -> Status {
        let now = self.clock.now();
        let state = self.state.load();
        let failsafe = self.failsafe_engagement();
        let since = match &failsafe {
            Some(f) => Some(state.span(now).map_or(f.since, |(s, _)| s.min(f.since))),
            None => state.span(now).map(|(since, _)| since),
        };
        let engagements: Vec<Engagement> = state
            .engagements
            .iter()
            .filter(|e| e.expires_at > now)
            .cloned()
            .chain(failsafe.clone())
            .collect();
        Status {
            guarded: !engagements.is_empty(),
            since,
            retry_after: self.retry_after_secs(),
            eta: self.eta(),
            engagements,
            held: self.traffic.held(),
            in_flight_writes: self.traffic.in_flight_writes(),
            problem: self.problem.load().as_deref().cloned(),
            store: StoreStatus {
                backend: self.backend.kind(),
                ok: self.store_confirmed(),
                version: state.version,
                failsafe: failsafe.is_some(),
            },
            replicas: self.replicas(),
        }
    }

    /// The deploys seen, newest first.
    pub fn deploys(&self) -> Vec<Deploy> {
        self.state.load().deploys.iter().rev().cloned().collect()
    }

    /// The public part of the status: no engagement details.
    pub fn public_status(&self) -> PublicStatus {
        let snapshot = self.snapshot();
        let guarded = snapshot.guarded();
        PublicStatus {
            guarded,
            since: if guarded { snapshot.since } else { None },
            retry_after: self.retry_after_secs(),
            eta: if guarded { self.eta() } else { None },
        }
    }
}
