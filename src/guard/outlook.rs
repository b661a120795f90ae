//! When writes are expected back: the estimate of every running engagement, prepared when a
//! state is published so that the proxy only has to read the clock against it.
//!
//! Writes are back when the last engagement ends, so there is an estimate only when every
//! running engagement has one: an Upsun deploy with enough history of its kind (a manual
//! engagement has none). Each is capped by the engagement's expiry.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::clock::Clock;
use super::estimate::Past;
use super::history;
use super::state::GuardState;

/// One running engagement with a history.
#[derive(Debug, Clone)]
struct Running {
    since: Instant,
    expires: Instant,
    past: Past,
}

/// The estimates of the engagements running when the state was published.
#[derive(Debug, Clone)]
pub struct Outlook(Box<[Running]>);

impl Outlook {
    /// `None` when nothing runs, or when any running engagement has no history to go by.
    pub fn of(state: &GuardState, now: OffsetDateTime, clock: &Clock) -> Option<Outlook> {
        let running = state
            .engagements
            .iter()
            .filter(|e| e.expires_at > now)
            .map(|e| {
                if !e.source.keyed() {
                    return None;
                }
                let deploy = state.deploys.iter().find(|d| d.id == e.id)?;
                let past = Past::new(history::durations(&state.histories, deploy.key.as_ref()?))?;
                Some(Running {
                    since: clock.instant_of(e.since),
                    expires: clock.instant_of(e.expires_at),
                    past,
                })
            })
            .collect::<Option<Box<[Running]>>>()?;
        (!running.is_empty()).then_some(Outlook(running))
    }

    /// When writes are expected back, seen at `now`: the latest of the engagements'
    /// estimated ends, each no later than its expiry. `None` when one of them has outrun
    /// its history (or every one has expired).
    pub fn eta(&self, now: Instant) -> Option<Instant> {
        let mut latest = None;
        for r in self.0.iter().filter(|r| r.expires > now) {
            let left = r.past.remaining(now.saturating_duration_since(r.since))?;
            let end = crate::deadline::after(now, left).min(r.expires);
            latest = latest.max(Some(end));
        }
        latest
    }

    /// How long until writes are expected back, and the longest a client may be told to
    /// wait (until the last expiry).
    pub fn left(&self, now: Instant) -> Option<(Duration, Duration)> {
        let eta = self.eta(now)?;
        let last_expiry = self.0.iter().map(|r| r.expires).max()?;
        Some((
            eta.saturating_duration_since(now),
            last_expiry.saturating_duration_since(now),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::state::Scope;
    use crate::upsun::Activity;

    const MAX: Duration = Duration::from_secs(1800);

    fn push(id: &str, state: &str) -> Activity {
        Activity {
            id: id.into(),
            kind: "environment.push".into(),
            state: state.into(),
            result: None,
            project: Some("p1".into()),
            environments: vec!["main".into()],
        }
    }

    /// A state that saw `deploys` pushes of `secs` each, then a new one start at `clock`'s
    /// now.
    fn after(deploys: usize, secs: i64, clock: &Clock) -> GuardState {
        let mut s = GuardState::default();
        let scope = Scope::default();
        let start = clock.now() - time::Duration::hours(1);
        for i in 0..deploys {
            let at = start + time::Duration::minutes(i as i64);
            let id = format!("past{i}");
            s.apply_activity(&push(&id, "in_progress"), &scope, at, MAX);
            let end = at + time::Duration::seconds(secs);
            s.apply_activity(&push(&id, "complete"), &scope, end, MAX);
        }
        s.apply_activity(&push("now", "in_progress"), &scope, clock.now(), MAX);
        s
    }

    #[test]
    fn a_deploy_with_history_has_an_eta_capped_by_its_expiry() {
        let clock = Clock::start();
        let s = after(3, 120, &clock);
        let outlook = Outlook::of(&s, clock.now(), &clock).expect("an outlook");
        let now = Instant::now();
        let (left, cap) = outlook.left(now).expect("an eta");
        assert!((119..=120).contains(&left.as_secs()), "{left:?}");
        assert!((1799..=1800).contains(&cap.as_secs()), "{cap:?}");
        // Capped by the expiry: with deploys longer than the engagement may last.
        let s = after(3, 7200, &clock);
        let outlook = Outlook::of(&s, clock.now(), &clock).expect("an outlook");
        let (left, cap) = outlook.left(Instant::now()).expect("an eta");
        assert_eq!(left, cap);
    }

    #[test]
    fn no_eta_without_enough_history_with_a_manual_engagement_or_once_outrun() {
        let clock = Clock::start();
        assert!(Outlook::of(&after(2, 120, &clock), clock.now(), &clock).is_none());
        assert!(Outlook::of(&GuardState::default(), clock.now(), &clock).is_none());
        let mut s = after(3, 120, &clock);
        s.engage_manual("by hand".into(), MAX, clock.now());
        assert!(Outlook::of(&s, clock.now(), &clock).is_none());
        let outlook = Outlook::of(&after(3, 120, &clock), clock.now(), &clock).unwrap();
        let later = crate::deadline::after(Instant::now(), Duration::from_secs(121));
        assert_eq!(outlook.eta(later), None);
    }
}
