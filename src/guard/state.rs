//! The guard's durable state and its transitions. Pure: time comes in as an argument, no I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::history::{self, DeployKey, History};
use crate::deadline;
use crate::upsun::{Activity, Phase};

/// How long an ended activity id is remembered, however many activities come after it: a
/// replayed `in_progress` of it (Upsun signs no timestamp nor nonce) is refused for this
/// long. Past it, `guard.max_engaged` still bounds what a replay can do.
pub const ENDED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many activity ids that have not ended we remember (the oldest is forgotten first).
/// Ended ids are not counted here: they are kept for [`ENDED_KEPT`].
const REMEMBERED_OPEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Upsun,
    /// A signed deploy webhook (Standard Webhooks, `POST /webhooks/deploy`).
    Webhook,
    /// A GitHub `deployment_status` webhook (`POST /webhooks/github`).
    Github,
    /// A GitLab Deployment Hook (`POST /webhooks/gitlab`).
    Gitlab,
    Manual,
    /// A replica's own fail-safe while it cannot read the shared state (never stored).
    Store,
}

impl Source {
    /// Whether its engagements are keyed by a sender's deploy id (tracked in `activities`).
    pub fn keyed(self) -> bool {
        matches!(
            self,
            Source::Upsun | Source::Webhook | Source::Github | Source::Gitlab
        )
    }
}

/// A deploy event from any sender, ready for [`GuardState::apply_deploy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployEvent {
    pub source: Source,
    /// The sender's deploy id.
    pub id: String,
    pub phase: Phase,
    /// Whether this phase engages (Upsun's `pending` only with `guard_pending`).
    pub guards: bool,
    /// For the dashboard: the kind of deploy, its state and result.
    pub kind: String,
    pub state: String,
    pub result: Option<String>,
    /// The engagement's reason.
    pub reason: String,
    /// Which history its duration goes to.
    pub key: DeployKey,
    /// Whether an end is a completion (its duration counts for the estimate).
    pub completed: bool,
    /// The sender's order of this event among those of the same deploy, when it gives one
    /// (GitHub's `deployment_status.id`, GitLab's `status_changed_at`): an event older than
    /// one already applied is ignored, whatever the order of delivery.
    pub sequence: Option<u64>,
}

/// A delivery id taken (`webhook-id`, `X-GitHub-Delivery`, GitLab's `Idempotency-Key`),
/// kept until `until`: a redelivery meanwhile is acknowledged and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenMessage {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Absent in state written before per-sender retention: kept [`MESSAGE_KEPT`] from `at`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub until: Option<OffsetDateTime>,
}

/// How long a delivery id without its own `until` is kept (twice the default tolerance).
const MESSAGE_KEPT: Duration = Duration::from_secs(600);

/// How many `webhook-id`s are remembered at most (the oldest is forgotten first).
const REMEMBERED_MESSAGES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    pub id: String,
    pub source: Source,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenActivity {
    pub id: String,
    pub phase: Phase,
    #[serde(with = "time::serde::rfc3339")]
    pub seen_at: OffsetDateTime,
    /// When it ended; `None` while it runs, and in state files written before this field
    /// (those ended ids are kept [`ENDED_KEPT`] from the first change after the upgrade).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub ended_at: Option<OffsetDateTime>,
    /// The [`DeployEvent::sequence`] of the latest event applied, for senders that give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// A deploy the guard saw, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub result: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Which history its duration goes to (absent in state files written before histories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<DeployKey>,
}

/// How many deploys the dashboard remembers.
const REMEMBERED_DEPLOYS: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardState {
    /// Bumped by every committed change: a process never replaces a stored state with one
    /// whose version is not higher (compare-and-set), and adopts any higher one it sees.
    /// Files written before versions existed read as 0.
    #[serde(default)]
    pub version: u64,
    pub engagements: Vec<Engagement>,
    /// Every activity id tracked: at most [`REMEMBERED_OPEN`] that have not ended, and the
    /// ended ones of the last [`ENDED_KEPT`].
    #[serde(default)]
    pub activities: Vec<SeenActivity>,
    /// Newest last.
    #[serde(default)]
    pub deploys: Vec<Deploy>,
    /// How long the deploys that completed took, per kind of deploy (for the Retry-After
    /// estimate). Left out while empty, so that a version without it still reads the state
    /// until a deploy completes (replicas of two versions share it during a rolling upgrade).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub histories: Vec<History>,
    /// The Standard Webhooks `webhook-id`s taken recently (replays are ignored). Left out
    /// while empty, like `histories`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<SeenMessage>,
}

/// Which activities concern us (from `[upsun]`).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub project: Option<String>,
    pub environments: Vec<String>,
    pub guard_pending: bool,
}

/// What a webhook delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded (it may have changed nothing, for a duplicate).
    Accepted,
    /// Acknowledged and ignored, with the reason.
    Ignored(String),
}

impl GuardState {
    pub fn apply_activity(
        &mut self,
        activity: &Activity,
        scope: &Scope,
        now: OffsetDateTime,
        max_engaged: Duration,
    ) -> Applied {
        self.forget_ended(now);
        let seen = self.activities.iter().position(|a| a.id == activity.id);
        // Scope and type decide whether an activity is tracked; once tracked (or engaged), its
        // id alone decides: an end event whose payload lacks `project` still ends it.
        let tracked = seen.is_some()
            || self
                .engagements
                .iter()
                .any(|e| e.source == Source::Upsun && e.id == activity.id);
        if !tracked {
            if let Some(why) = out_of_scope(activity, scope) {
                return Applied::Ignored(why);
            }
        }
        let phase = activity.phase();
        if phase == Phase::Other {
            return Applied::Ignored(format!("state {:?} never guards", activity.state));
        }
        let event = DeployEvent {
            source: Source::Upsun,
            id: activity.id.clone(),
            phase,
            guards: phase != Phase::Pending || scope.guard_pending,
            kind: activity.kind.clone(),
            state: activity.state.clone(),
            result: activity.result.clone(),
            reason: format!("Upsun {} in progress", activity.kind),
            key: key_of(activity),
            completed: activity.state == "complete",
            sequence: None,
        };
        self.apply_deploy(&event, now, max_engaged)
    }

    /// A deploy event from a sender other than Upsun. Its delivery id, when it has one, is
    /// taken once and kept `keep` (a redelivery meanwhile is acknowledged and ignored); then
    /// the event applies.
    pub fn apply_message(
        &mut self,
        delivery: Option<(&str, Duration)>,
        event: &DeployEvent,
        now: OffsetDateTime,
        max_engaged: Duration,
    ) -> Applied {
        self.messages
            .retain(|m| now < m.until.unwrap_or(m.at + MESSAGE_KEPT));
        if let Some((id, keep)) = delivery {
            if self.messages.iter().any(|m| m.id == id) {
                return Applied::Ignored(format!("delivery {id:?} was already delivered"));
            }
            if self.messages.len() >= REMEMBERED_MESSAGES {
                self.messages.remove(0);
            }
            self.messages.push(SeenMessage {
                id: id.to_owned(),
                at: now,
                until: Some(now + keep),
            });
        }
        self.forget_ended(now);
        self.apply_deploy(event, now, max_engaged)
    }

    /// The one transition of a deploy event, whoever sent it: keyed by its id, a duplicate
    /// changes nothing, an id never moves backwards (a start after its end is ignored), and
    /// an ended id never engages again while remembered.
    fn apply_deploy(
        &mut self,
        event: &DeployEvent,
        now: OffsetDateTime,
        max_engaged: Duration,
    ) -> Applied {
        let phase = event.phase;
        let seen = self.activities.iter().position(|a| a.id == event.id);
        if let Some(i) = seen {
            let known = &mut self.activities[i];
            if known.phase > phase {
                return Applied::Ignored(format!(
                    "stale delivery: deploy {} is already {:?}",
                    event.id, known.phase
                ));
            }
            if let (Some(applied), Some(this)) = (known.sequence, event.sequence) {
                if this < applied {
                    return Applied::Ignored(format!(
                        "stale delivery: deploy {} has a newer status than {:?}",
                        event.id, event.state
                    ));
                }
            }
            if phase == Phase::Ended && known.phase == Phase::Ended {
                return Applied::Ignored(format!("deploy {} has already ended", event.id));
            }
            known.phase = phase;
            known.sequence = event.sequence.max(known.sequence);
            if phase == Phase::Ended && known.ended_at.is_none() {
                known.ended_at = Some(now);
            }
        } else {
            self.remember(&event.id, phase, event.sequence, now);
        }
        match phase {
            Phase::Pending | Phase::InProgress if !event.guards => {
                return Applied::Ignored(format!("state {:?} does not guard", event.state))
            }
            Phase::Pending | Phase::InProgress => {
                if !self.deploys.iter().any(|d| d.id == event.id) {
                    if self.deploys.len() >= REMEMBERED_DEPLOYS {
                        self.deploys.remove(0);
                    }
                    self.deploys.push(Deploy {
                        id: event.id.clone(),
                        kind: event.kind.clone(),
                        state: event.state.clone(),
                        result: None,
                        started_at: now,
                        ended_at: None,
                        key: Some(event.key.clone()),
                    });
                }
                if !self.engagements.iter().any(|e| e.id == event.id) {
                    self.engagements.push(Engagement {
                        id: event.id.clone(),
                        source: event.source,
                        reason: event.reason.clone(),
                        since: now,
                        expires_at: deadline::expiry(now, max_engaged),
                    });
                }
            }
            Phase::Ended => {
                self.engagements.retain(|e| e.id != event.id);
                if let Some(d) = self.deploys.iter_mut().find(|d| d.id == event.id) {
                    let first_end = d.ended_at.is_none();
                    d.state = event.state.clone();
                    d.result = event.result.clone();
                    d.ended_at = Some(now);
                    if first_end && event.completed {
                        Self::record_duration(&mut self.histories, d);
                    }
                }
            }
            Phase::Other => {
                return Applied::Ignored(format!("state {:?} never guards", event.state))
            }
        }
        Applied::Accepted
    }

    /// Adds how long `deploy` took, from its start to its end as seen here, to its history.
    /// A cancelled deploy says nothing about how long one takes, and one from a state file
    /// without keys has no history to go to.
    fn record_duration(histories: &mut Vec<History>, deploy: &Deploy) {
        let (Some(key), Some(ended_at)) = (&deploy.key, deploy.ended_at) else {
            return;
        };
        if let Ok(took) = Duration::try_from(ended_at - deploy.started_at) {
            history::record(histories, key, took);
        }
    }

    /// Remembers a new id; past [`REMEMBERED_OPEN`] ids that have not ended, the oldest of
    /// them is forgotten. Ended ids are never forgotten here, only by [`Self::forget_ended`].
    fn remember(&mut self, id: &str, phase: Phase, sequence: Option<u64>, now: OffsetDateTime) {
        let open = |a: &SeenActivity| a.phase != Phase::Ended;
        if phase != Phase::Ended
            && self.activities.iter().filter(|a| open(a)).count() >= REMEMBERED_OPEN
        {
            if let Some(oldest) = (0..self.activities.len())
                .filter(|&i| open(&self.activities[i]))
                .min_by_key(|&i| self.activities[i].seen_at)
            {
                self.activities.swap_remove(oldest);
            }
        }
        self.activities.push(SeenActivity {
            id: id.to_owned(),
            phase,
            seen_at: now,
            ended_at: (phase == Phase::Ended).then_some(now),
            sequence,
        });
    }

    /// Forgets ids that ended more than [`ENDED_KEPT`] ago. An ended id from a state file
    /// older than `ended_at` gets its end time now: it is kept the full week from here.
    fn forget_ended(&mut self, now: OffsetDateTime) {
        for a in &mut self.activities {
            if a.phase == Phase::Ended && a.ended_at.is_none() {
                a.ended_at = Some(now);
            }
        }
        self.activities
            .retain(|a| a.ended_at.is_none_or(|at| now - at < ENDED_KEPT));
    }

    pub fn engage_manual(
        &mut self,
        reason: String,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Engagement {
        let engagement = Engagement {
            id: format!("manual-{:08x}", rand::random::<u32>()),
            source: Source::Manual,
            reason,
            since: now,
            expires_at: deadline::expiry(now, ttl),
        };
        self.engagements.push(engagement.clone());
        engagement
    }

    /// Drops manual engagements, or every engagement with `all`. Returns how many went.
    pub fn release(&mut self, all: bool, now: OffsetDateTime) -> Vec<Engagement> {
        let (gone, kept) = std::mem::take(&mut self.engagements)
            .into_iter()
            .partition(|e| all || e.source == Source::Manual);
        self.engagements = kept;
        self.end_activities(&gone, now);
        gone
    }

    /// Drops engagements whose time is up. Their activities count as ended, so a late
    /// duplicate `in_progress` cannot re-engage.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<Engagement> {
        let (gone, kept) = std::mem::take(&mut self.engagements)
            .into_iter()
            .partition(|e| e.expires_at <= now);
        self.engagements = kept;
        self.end_activities(&gone, now);
        gone
    }

    /// The activities of `gone` count as ended from `now`, remembered or not (an id evicted
    /// from the open ones is remembered again, as ended).
    fn end_activities(&mut self, gone: &[Engagement], now: OffsetDateTime) {
        for e in gone.iter().filter(|e| e.source.keyed()) {
            match self.activities.iter_mut().find(|a| a.id == e.id) {
                Some(a) => {
                    a.phase = Phase::Ended;
                    a.ended_at.get_or_insert(now);
                }
                None => self.activities.push(SeenActivity {
                    id: e.id.clone(),
                    phase: Phase::Ended,
                    seen_at: e.since,
                    ended_at: Some(now),
                    sequence: None,
                }),
            }
        }
    }

    /// The earliest `since` and latest `expires_at` of the active engagements.
    pub fn span(&self, now: OffsetDateTime) -> Option<(OffsetDateTime, OffsetDateTime)> {
        let active = self.engagements.iter().filter(|e| e.expires_at > now);
        active.fold(None, |acc, e| match acc {
            None => Some((e.since, e.expires_at)),
            Some((s, u)) => Some((s.min(e.since), u.max(e.expires_at))),
        })
    }
}

/// The history an activity's duration goes to.
fn key_of(activity: &Activity) -> DeployKey {
    DeployKey {
        source: "upsun".into(),
        project: activity.project.clone().unwrap_or_default(),
        environment: activity.environments.join(","),
        kind: activity.kind.clone(),
    }
}

/// Why an activity that is not tracked yet does not concern us, if it does not.
fn out_of_scope(activity: &Activity, scope: &Scope) -> Option<String> {
    if let Some(project) = &scope.project {
        if activity.project.as_deref() != Some(project) {
            return Some(format!(
                "activity is for project {:?}, not {project:?}",
                activity.project.as_deref().unwrap_or("")
            ));
        }
    }
    if !scope.environments.is_empty()
        && !activity
            .environments
            .iter()
            .any(|e| scope.environments.contains(e))
    {
        return Some(format!(
            "activity is for environment(s) {:?}, not {:?}",
            activity.environments, scope.environments
        ));
    }
    if !activity.redeploys() {
        return Some(format!("type {:?} does not redeploy", activity.kind));
    }
    None
}

#[cfg(test)]
mod tests;
