//! The transitions, over time, duplicates, order and scope.

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

fn took(s: &GuardState, kind: &str) -> Vec<u64> {
    let key = key_of(&Activity {
        kind: kind.into(),
        ..act("any", "complete")
    });
    history::durations(&s.histories, &key)
        .map(|d| d.as_secs())
        .collect()
}

#[test]
fn completed_deploys_keep_their_durations_per_kind() {
    let mut s = GuardState::default();
    let scope = Scope::default();
    let redeploy = |id: &str, state: &str| Activity {
        kind: "environment.redeploy".into(),
        ..act(id, state)
    };
    s.apply_activity(&act("a", "in_progress"), &scope, t(0), MAX);
    s.apply_activity(&redeploy("b", "in_progress"), &scope, t(1), MAX);
    s.apply_activity(&act("a", "complete"), &scope, t(30), MAX);
    // A duplicate `complete` does not count it twice, nor later.
    s.apply_activity(&act("a", "complete"), &scope, t(45), MAX);
    s.apply_activity(&redeploy("b", "complete"), &scope, t(11), MAX);
    // A cancelled deploy tells nothing about how long one takes.
    s.apply_activity(&act("c", "in_progress"), &scope, t(50), MAX);
    s.apply_activity(&act("c", "cancelled"), &scope, t(51), MAX);
    // Nor does one that expired.
    s.apply_activity(&act("d", "in_progress"), &scope, t(60), MAX);
    s.expire(t(60 + 1800));
    assert_eq!(took(&s, "environment.push"), vec![30]);
    assert_eq!(took(&s, "environment.redeploy"), vec![10]);
    let other_env = DeployKey {
        environment: "staging".into(),
        ..key_of(&act("a", "complete"))
    };
    assert_eq!(history::durations(&s.histories, &other_env).count(), 0);
    // The histories are stored with the state.
    let back: GuardState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn state_files_without_histories_still_load() {
    let old = r#"{"engagements":[],"deploys":[{"id":"a","type":"environment.push",
        "state":"in_progress","result":null,"started_at":"2023-11-14T22:13:20Z","ended_at":null}]}"#;
    let mut s: GuardState = serde_json::from_str(old).unwrap();
    assert!(s.histories.is_empty() && s.deploys[0].key.is_none());
    // Its deploy has no key: it ends, but has no history to go to.
    s.apply_activity(&act("a", "complete"), &Scope::default(), t(10), MAX);
    assert!(s.histories.is_empty());
}

fn hook(id: &str, phase: Phase) -> DeployEvent {
    DeployEvent {
        source: Source::Webhook,
        id: id.into(),
        phase,
        guards: true,
        kind: "deploy".into(),
        state: if phase == Phase::Ended {
            "finished"
        } else {
            "started"
        }
        .into(),
        result: None,
        reason: "deploy in progress".into(),
        key: DeployKey {
            source: "webhook".into(),
            project: String::new(),
            environment: String::new(),
            kind: "deploy".into(),
        },
        completed: phase == Phase::Ended,
        sequence: None,
    }
}

const KEEP: Duration = Duration::from_secs(600);

#[test]
fn a_webhook_deploy_follows_the_same_rules_as_an_activity() {
    let mut s = GuardState::default();
    let start = hook("d1", Phase::InProgress);
    assert_eq!(
        s.apply_message(Some(("m1", KEEP)), &start, t(0), MAX),
        Applied::Accepted
    );
    assert_eq!(s.engagements.len(), 1);
    assert_eq!(s.engagements[0].source, Source::Webhook);
    // A duplicate start (another message) changes nothing.
    let before = s.clone();
    assert_eq!(
        s.apply_message(Some(("m2", KEEP)), &start, t(1), MAX),
        Applied::Accepted
    );
    assert_eq!(s.engagements, before.engagements);
    let end = hook("d1", Phase::Ended);
    assert_eq!(
        s.apply_message(Some(("m3", KEEP)), &end, t(60), MAX),
        Applied::Accepted
    );
    assert!(s.engagements.is_empty());
    assert_eq!(s.histories.len(), 1, "a finished deploy's duration counts");
    // An ended id never engages again (a late start, out of order).
    let late = s.apply_message(Some(("m4", KEEP)), &start, t(61), MAX);
    assert!(matches!(late, Applied::Ignored(_)), "{late:?}");
    assert!(s.engagements.is_empty());
}

#[test]
fn a_start_after_its_end_does_not_engage() {
    let mut s = GuardState::default();
    let end = hook("d2", Phase::Ended);
    assert_eq!(
        s.apply_message(Some(("m1", KEEP)), &end, t(0), MAX),
        Applied::Accepted
    );
    let start = s.apply_message(
        Some(("m2", KEEP)),
        &hook("d2", Phase::InProgress),
        t(1),
        MAX,
    );
    assert!(matches!(start, Applied::Ignored(_)), "{start:?}");
    assert!(s.engagements.is_empty());
}

#[test]
fn a_replayed_webhook_id_is_ignored_while_remembered() {
    let mut s = GuardState::default();
    let start = hook("d3", Phase::InProgress);
    s.apply_message(Some(("m1", KEEP)), &start, t(0), MAX);
    s.apply_message(Some(("m2", KEEP)), &hook("d3", Phase::Ended), t(1), MAX);
    // The same message again: ignored (even a start that would be stale anyway).
    let again = s.apply_message(
        Some(("m2", KEEP)),
        &hook("d4", Phase::InProgress),
        t(2),
        MAX,
    );
    assert!(matches!(again, Applied::Ignored(ref why) if why.contains("already delivered")));
    assert!(s.engagements.is_empty());
    // Forgotten past the window.
    s.apply_message(Some(("m9", KEEP)), &hook("d5", Phase::Ended), t(700), MAX);
    assert!(s.messages.iter().all(|m| m.id != "m1" && m.id != "m2"));
}

#[test]
fn ending_a_webhook_engagement_by_hand_keeps_its_id_ended() {
    let mut s = GuardState::default();
    s.apply_message(
        Some(("m1", KEEP)),
        &hook("d6", Phase::InProgress),
        t(0),
        MAX,
    );
    s.release(true, t(1));
    let again = s.apply_message(
        Some(("m2", KEEP)),
        &hook("d6", Phase::InProgress),
        t(2),
        MAX,
    );
    assert!(matches!(again, Applied::Ignored(_)), "{again:?}");
    assert!(s.engagements.is_empty());
}

#[test]
fn an_end_after_an_end_changes_nothing() {
    let mut s = GuardState::default();
    s.apply_message(None, &hook("d7", Phase::InProgress), t(0), MAX);
    assert_eq!(
        s.apply_message(None, &hook("d7", Phase::Ended), t(10), MAX),
        Applied::Accepted
    );
    let before = s.clone();
    let mut other = hook("d7", Phase::Ended);
    other.state = "cancelled".into();
    let again = s.apply_message(None, &other, t(20), MAX);
    assert!(matches!(again, Applied::Ignored(_)), "{again:?}");
    assert_eq!(s.deploys, before.deploys, "the first end stays the end");
    assert_eq!(s.histories, before.histories);
}

#[test]
fn statuses_apply_in_the_senders_order_not_the_delivery_order() {
    let mut s = GuardState::default();
    let with = |phase, state: &str, sequence| {
        let mut e = hook("gh", phase);
        e.state = state.into();
        e.sequence = Some(sequence);
        e
    };
    // A deployment re-run after a failure: failure (5) then in_progress (6), delivered the
    // other way round. The newest status says it runs: the late failure must not release.
    s.apply_message(None, &with(Phase::InProgress, "in_progress", 6), t(0), MAX);
    let late = s.apply_message(None, &with(Phase::Ended, "failure", 5), t(1), MAX);
    assert!(matches!(late, Applied::Ignored(_)), "{late:?}");
    assert_eq!(s.engagements.len(), 1);
    assert_eq!(s.activities[0].sequence, Some(6));
    // An equal sequence is not older (GitLab's status_changed_at has one-second steps).
    let same = s.apply_message(None, &with(Phase::Ended, "success", 6), t(3), MAX);
    assert_eq!(same, Applied::Accepted);
    assert!(s.engagements.is_empty());
}
