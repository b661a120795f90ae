//! The guard's durable state and its transitions. Pure: time comes in as an argument, no I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::deadline;
use crate::upsun::{Activity, Phase};

/// How long an ended activity id is remembered, however many activities come after it: a
/// replayed `in_progress` of it (Upsun signs no timestamp, UPSUN.md §4) is refused for this
/// long. Past it, `guard.max_engaged` still bounds what a replay can do.
pub const ENDED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many activity ids that have not ended we remember (the oldest is forgotten first).
/// Ended ids are not counted here: they are kept for [`ENDED_KEPT`].
const REMEMBERED_OPEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Upsun,
    Manual,
}

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
        if let Some(i) = seen {
            let known = &mut self.activities[i];
            if known.phase > phase {
                return Applied::Ignored(format!(
                    "stale delivery: activity {} is already {:?}",
                    activity.id, known.phase
                ));
            }
            known.phase = phase;
            if phase == Phase::Ended && known.ended_at.is_none() {
                known.ended_at = Some(now);
            }
        } else {
            self.remember(&activity.id, phase, now);
        }
        match phase {
            Phase::Pending if !scope.guard_pending => {
                return Applied::Ignored("state \"pending\" does not guard".into())
            }
            Phase::Pending | Phase::InProgress => {
                if !self.deploys.iter().any(|d| d.id == activity.id) {
                    if self.deploys.len() >= REMEMBERED_DEPLOYS {
                        self.deploys.remove(0);
                    }
                    self.deploys.push(Deploy {
                        id: activity.id.clone(),
                        kind: activity.kind.clone(),
                        state: activity.state.clone(),
                        result: None,
                        started_at: now,
                        ended_at: None,
                    });
                }
                if !self.engagements.iter().any(|e| e.id == activity.id) {
                    self.engagements.push(Engagement {
                        id: activity.id.clone(),
                        source: Source::Upsun,
                        reason: format!("Upsun {} in progress", activity.kind),
                        since: now,
                        expires_at: deadline::expiry(now, max_engaged),
                    });
                }
            }
            Phase::Ended => {
                self.engagements.retain(|e| e.id != activity.id);
                if let Some(d) = self.deploys.iter_mut().find(|d| d.id == activity.id) {
                    d.state = activity.state.clone();
                    d.result = activity.result.clone();
                    d.ended_at = Some(now);
                }
            }
            Phase::Other => unreachable!("returned above"),
        }
        Applied::Accepted
    }

    /// Remembers a new id; past [`REMEMBERED_OPEN`] ids that have not ended, the oldest of
    /// them is forgotten. Ended ids are never forgotten here, only by [`Self::forget_ended`].
    fn remember(&mut self, id: &str, phase: Phase, now: OffsetDateTime) {
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
        for e in gone.iter().filter(|e| e.source == Source::Upsun) {
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
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(1800);

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn act(id: &str, state: &str) -> Activity {
        Activity {
            id: id.into(),
            kind: "environment.push".into(),
            state: state.into(),
            result: None,
            project: Some("p1".into()),
            environments: vec!["main".into()],
        }
    }

    #[test]
    fn in_progress_engages_and_complete_releases() {
        let mut s = GuardState::default();
        let scope = Scope::default();
        assert_eq!(
            s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX),
            Applied::Accepted
        );
        assert_eq!(s.engagements.len(), 1);
        assert_eq!(s.engagements[0].expires_at, t(1800));
        // Duplicate: harmless.
        s.apply_activity(&act("a", "in_progress"), &scope, t(1), MAX);
        assert_eq!(s.engagements.len(), 1);
        assert_eq!(s.engagements[0].since, t(0));
        s.apply_activity(&act("a", "complete"), &scope, t(2), MAX);
        assert!(s.engagements.is_empty());
        assert_eq!(s.deploys.len(), 1);
        assert_eq!(
            (s.deploys[0].started_at, s.deploys[0].ended_at),
            (t(0), Some(t(2)))
        );
        // Out of order: in_progress after complete is ignored.
        let late = s.apply_activity(&act("a", "in_progress"), &scope, t(3), MAX);
        assert!(matches!(late, Applied::Ignored(_)));
        assert!(s.engagements.is_empty());
    }

    #[test]
    fn guard_holds_while_any_activity_runs() {
        let mut s = GuardState::default();
        let scope = Scope::default();
        s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX);
        s.apply_activity(&act("b", "in_progress"), &scope, t(5), MAX);
        s.apply_activity(&act("a", "cancelled"), &scope, t(6), MAX);
        assert_eq!(s.span(t(7)), Some((t(5), t(1805))));
    }

    #[test]
    fn scope_and_states_that_never_guard() {
        let mut s = GuardState::default();
        let scope = Scope {
            project: Some("p1".into()),
            environments: vec!["main".into()],
            guard_pending: false,
        };
        let mut other = act("x", "in_progress");
        other.project = Some("p2".into());
        assert!(matches!(
            s.apply_activity(&other, &scope, t(0), MAX),
            Applied::Ignored(_)
        ));
        let mut staging = act("y", "in_progress");
        staging.environments = vec!["staging".into()];
        assert!(matches!(
            s.apply_activity(&staging, &scope, t(0), MAX),
            Applied::Ignored(_)
        ));
        for state in ["staged", "scheduled", "pending"] {
            let r = s.apply_activity(&act("z", state), &scope, t(0), MAX);
            assert!(matches!(r, Applied::Ignored(_)), "{state}");
        }
        let mut cron = act("c", "in_progress");
        cron.kind = "environment.cron".into();
        assert!(matches!(
            s.apply_activity(&cron, &scope, t(0), MAX),
            Applied::Ignored(_)
        ));
        assert!(s.engagements.is_empty());
        let pending = Scope {
            guard_pending: true,
            ..scope
        };
        s.apply_activity(&act("q", "pending"), &pending, t(0), MAX);
        assert_eq!(s.engagements.len(), 1);
    }

    #[test]
    fn expiry_ends_the_activity_for_good() {
        let mut s = GuardState::default();
        let scope = Scope::default();
        s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX);
        s.engage_manual("ops".into(), Duration::from_secs(60), t(0));
        assert_eq!(s.expire(t(61)).len(), 1);
        assert_eq!(s.engagements.len(), 1);
        assert_eq!(s.expire(t(1800)).len(), 1);
        assert!(s.span(t(1800)).is_none());
        s.apply_activity(&act("a", "in_progress"), &scope, t(1801), MAX);
        assert!(
            s.engagements.is_empty(),
            "a replayed in_progress must not re-engage"
        );
    }

    #[test]
    fn release_keeps_upsun_unless_all() {
        let mut s = GuardState::default();
        s.apply_activity(&act("a", "in_progress"), &Scope::default(), t(0), MAX);
        s.engage_manual("ops".into(), MAX, t(0));
        assert_eq!(s.release(false, t(1)).len(), 1);
        assert_eq!(s.engagements[0].source, Source::Upsun);
        assert_eq!(s.release(true, t(2)).len(), 1);
        assert!(s.engagements.is_empty());
    }

    #[test]
    fn remembers_a_bounded_number_of_open_activities() {
        let mut s = GuardState::default();
        for i in 0..(REMEMBERED_OPEN + 10) {
            s.apply_activity(
                &act(&format!("p{i}"), "pending"),
                &Scope::default(),
                t(i as i64),
                MAX,
            );
        }
        assert_eq!(s.activities.len(), REMEMBERED_OPEN);
        assert!(!s.activities.iter().any(|a| a.id == "p0"));
    }

    #[test]
    fn an_ended_id_never_engages_again_within_a_week() {
        let mut s = GuardState::default();
        let scope = Scope::default();
        s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX);
        s.apply_activity(&act("a", "complete"), &scope, t(1), MAX);
        // Far more ids than were ever remembered, ended and not.
        for i in 0..(3 * REMEMBERED_OPEN) {
            let id = format!("x{i}");
            s.apply_activity(&act(&id, "in_progress"), &scope, t(2), MAX);
            s.apply_activity(&act(&id, "complete"), &scope, t(2), MAX);
            s.apply_activity(&act(&format!("p{i}"), "pending"), &scope, t(2), MAX);
        }
        let week = ENDED_KEPT.as_secs() as i64;
        let replay = s.apply_activity(&act("a", "in_progress"), &scope, t(week), MAX);
        assert!(matches!(replay, Applied::Ignored(_)), "{replay:?}");
        assert!(s.engagements.is_empty());
        // A week after its end, it is forgotten, and so are the others that ended then.
        s.apply_activity(&act("b", "complete"), &scope, t(week + 2), MAX);
        assert!(!s.activities.iter().any(|a| a.id == "a"));
        assert!(!s.activities.iter().any(|a| a.id.starts_with('x')));
        assert_eq!(s.activities.len(), REMEMBERED_OPEN + 1);
    }

    #[test]
    fn an_id_that_ended_by_expiry_or_release_is_kept_even_if_it_was_forgotten() {
        let mut s = GuardState::default();
        let scope = Scope::default();
        s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX);
        s.activities.clear(); // as if evicted, or from an older file
        s.release(true, t(1));
        for i in 0..(2 * REMEMBERED_OPEN) {
            s.apply_activity(&act(&format!("p{i}"), "pending"), &scope, t(2), MAX);
        }
        s.apply_activity(&act("a", "in_progress"), &scope, t(3), MAX);
        assert!(s.engagements.is_empty());
    }

    #[test]
    fn an_end_event_ends_a_tracked_id_whatever_its_scope_fields_say() {
        let mut s = GuardState::default();
        let scope = Scope {
            project: Some("p1".into()),
            environments: vec!["main".into()],
            guard_pending: false,
        };
        s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX);
        let mut done = act("a", "complete");
        done.project = None;
        done.environments = vec![];
        done.kind = "environment.something-new".into();
        assert_eq!(
            s.apply_activity(&done, &scope, t(1), MAX),
            Applied::Accepted
        );
        assert!(s.engagements.is_empty());
        // An id never tracked still needs its scope.
        let mut other = act("b", "in_progress");
        other.project = None;
        assert!(matches!(
            s.apply_activity(&other, &scope, t(2), MAX),
            Applied::Ignored(_)
        ));
        assert!(s.engagements.is_empty());
    }

    #[test]
    fn state_files_without_ended_at_still_load_and_keep_their_ended_ids() {
        let old = r#"{"engagements":[],"activities":[
            {"id":"a","phase":"ended","seen_at":"2023-11-14T22:13:20Z"},
            {"id":"b","phase":"in_progress","seen_at":"2023-11-14T22:13:20Z"}]}"#;
        let mut s: GuardState = serde_json::from_str(old).unwrap();
        assert_eq!(s.activities[0].ended_at, None);
        let later = t(30 * 24 * 3600);
        s.apply_activity(&act("a", "in_progress"), &Scope::default(), later, MAX);
        assert!(s.engagements.is_empty());
        assert_eq!(s.activities[0].ended_at, Some(later));
        assert_eq!(s.activities[1].ended_at, None);
        // And the new field round-trips.
        let back: GuardState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
