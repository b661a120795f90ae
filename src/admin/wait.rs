//! What `POST /guard` may wait for before it answers: no guarded write in flight here
//! (`"quiesced"`), or every replica sharing the state guarding (`"all"`). Either gives up
//! with 504 after its timeout; the engagement stays.

use std::time::Duration;

use crate::guard::{self, Replica};

use super::{Admin, AdminError};

/// How often the members are asked again while waiting for them.
const ASK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub(super) enum Wait {
    Quiesced(Duration),
    All(Duration),
}

impl Wait {
    pub(super) fn parse(raw: Option<&str>, timeout: Duration) -> Result<Option<Wait>, AdminError> {
        match raw {
            None => Ok(None),
            Some("quiesced") => Ok(Some(Wait::Quiesced(timeout))),
            Some("all") => Ok(Some(Wait::All(timeout))),
            Some(other) => Err(AdminError::BadRequest(format!(
                "wait {other:?} is not known: \"quiesced\" or \"all\""
            ))),
        }
    }
}

impl Admin {
    /// Waits until no guarded write is on its way to the upstream: from then on, nothing
    /// writes to the app until the release (deploy scripts run migrations after this).
    pub(super) async fn quiesced(&self, timeout: Duration) -> Result<(), AdminError> {
        let traffic = self.guard.traffic();
        let wait = async {
            while !traffic.quiet() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            AdminError::WaitTimedOut(format!(
                "engaged, but {} write(s) still in flight after {}",
                traffic.in_flight_writes(),
                humantime::format_duration(timeout)
            ))
        })
    }

    /// Waits until each of `members` (and any replica that joined since) announced a version
    /// with the current engagement, or guards writes itself; returns them all.
    pub(super) async fn all_applied(
        &self,
        members: Vec<Replica>,
        timeout: Duration,
    ) -> Result<Vec<Replica>, AdminError> {
        let version = self.guard.version();
        let deadline = crate::deadline::after_tokio(tokio::time::Instant::now(), timeout);
        loop {
            let guard = self.guard.clone();
            let live = guard::blocking(move || guard.announce()).await;
            let behind: Vec<String> = match &live {
                Ok(live) => members
                    .iter()
                    .filter(|m| !live.iter().any(|r| r.id == m.id && r.applied(version)))
                    .chain(live.iter().filter(|r| !r.applied(version)))
                    .map(|r| r.id.clone())
                    .collect(),
                Err(e) => vec![format!("(the store: {e})")],
            };
            if behind.is_empty() {
                return Ok(live.unwrap_or_default());
            }
            if tokio::time::Instant::now() + ASK_EVERY > deadline {
                let mut behind = behind;
                behind.dedup();
                return Err(AdminError::WaitTimedOut(format!(
                    "engaged, but not applied by {} after {}: {}",
                    if behind.len() == 1 {
                        "1 replica".to_owned()
                    } else {
                        format!("{} replicas", behind.len())
                    },
                    humantime::format_duration(timeout),
                    behind.join(", ")
                )));
            }
            tokio::time::sleep(ASK_EVERY).await;
        }
    }
}
