//! How long past deploys took, per kind of deploy: the durations the Retry-After estimate
//! is made from. Part of the stored state (so it survives restarts and is shared by the
//! replicas of one store), and bounded: [`KEPT_PER_KEY`] durations per key, [`KEPT_KEYS`] keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many durations are kept per key (the oldest is forgotten first).
pub const KEPT_PER_KEY: usize = 20;

/// How many keys are kept (the one recorded to least recently is forgotten first).
const KEPT_KEYS: usize = 32;

/// What makes deploys comparable: where they come from, what they deploy, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployKey {
    /// Who reported the deploy (`upsun`).
    pub source: String,
    pub project: String,
    /// The activity's environments, joined with `,`.
    pub environment: String,
    /// The activity type (`environment.push`...).
    #[serde(rename = "type")]
    pub kind: String,
}

/// The durations of the finished deploys of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub key: DeployKey,
    /// Milliseconds, oldest first; at most [`KEPT_PER_KEY`].
    pub durations_ms: Vec<u64>,
}

/// Adds a finished deploy's duration to its key's history; that key becomes the most
/// recently recorded one (last).
pub fn record(histories: &mut Vec<History>, key: &DeployKey, took: Duration) {
    let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let mut history = match histories.iter().position(|h| h.key == *key) {
        Some(i) => histories.remove(i),
        None => History {
            key: key.clone(),
            durations_ms: Vec::new(),
        },
    };
    if history.durations_ms.len() >= KEPT_PER_KEY {
        let excess = history.durations_ms.len() + 1 - KEPT_PER_KEY;
        history.durations_ms.drain(..excess);
    }
    history.durations_ms.push(millis);
    if histories.len() >= KEPT_KEYS {
        let excess = histories.len() + 1 - KEPT_KEYS;
        histories.drain(..excess);
    }
    histories.push(history);
}

/// The durations recorded for `key`, oldest first (none for a key never seen).
pub fn durations<'a>(
    histories: &'a [History],
    key: &DeployKey,
) -> impl Iterator<Item = Duration> + 'a {
    histories
        .iter()
        .find(|h| h.key == *key)
        .into_iter()
        .flat_map(|h| h.durations_ms.iter().copied().map(Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str) -> DeployKey {
        DeployKey {
            source: "upsun".into(),
            project: "p1".into(),
            environment: "main".into(),
            kind: kind.into(),
        }
    }

    fn secs(histories: &[History], key: &DeployKey) -> Vec<u64> {
        durations(histories, key).map(|d| d.as_secs()).collect()
    }

    #[test]
    fn keeps_the_last_durations_of_each_key_apart() {
        let mut h = Vec::new();
        for s in 1..=25 {
            record(&mut h, &key("environment.push"), Duration::from_secs(s));
        }
        record(
            &mut h,
            &key("environment.redeploy"),
            Duration::from_secs(90),
        );
        assert_eq!(
            secs(&h, &key("environment.push")),
            (6..=25).collect::<Vec<_>>()
        );
        assert_eq!(secs(&h, &key("environment.redeploy")), vec![90]);
        assert!(secs(&h, &key("environment.merge")).is_empty());
    }

    #[test]
    fn forgets_the_key_recorded_to_least_recently() {
        let mut h = Vec::new();
        for i in 0..KEPT_KEYS {
            record(&mut h, &key(&format!("t{i}")), Duration::from_secs(1));
        }
        // Recording to t0 again makes t1 the least recent.
        record(&mut h, &key("t0"), Duration::from_secs(2));
        record(&mut h, &key("new"), Duration::from_secs(3));
        assert_eq!(h.len(), KEPT_KEYS);
        assert_eq!(secs(&h, &key("t0")), vec![1, 2]);
        assert!(secs(&h, &key("t1")).is_empty());
        assert_eq!(secs(&h, &key("new")), vec![3]);
    }
}
