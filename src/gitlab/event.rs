//! The body of a Deployment Hook: which deployment (`deployment_id`), its new `status`,
//! when it changed (`status_changed_at`, in GitLab's `2021-04-28 21:50:00 +0200` format,
//! not RFC 3339), the environment and the project. Other `object_kind`s read as `None`.
//! Unknown fields are ignored.

use serde::Deserialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::upsun::Phase;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `deployment_id`.
    pub id: u64,
    /// `running`, `success`, `failed`, `canceled` (and others GitLab may add).
    pub status: String,
    /// `status_changed_at` (absent before GitLab 14.0).
    pub changed_at: Option<OffsetDateTime>,
    pub environment: String,
    /// `project.path_with_namespace` (`group/name`).
    pub project: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not a GitLab webhook event: {0}")]
    Shape(String),
    #[error("status_changed_at {0:?} is not \"YYYY-MM-DD hh:mm:ss +hhmm\"")]
    ChangedAt(String),
}

#[derive(Deserialize)]
struct Kind {
    object_kind: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    deployment_id: u64,
    status: String,
    status_changed_at: Option<String>,
    environment: Option<String>,
    project: Option<RawProject>,
}

#[derive(Deserialize)]
struct RawProject {
    path_with_namespace: Option<String>,
}

/// `2021-04-28 21:50:00 +0200`, as documented.
const WITH_OFFSET: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
);
/// `2021-04-28 19:50:00 UTC`, as GitLab writes its other timestamps.
const UTC: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

fn changed_at(raw: &str) -> Result<OffsetDateTime, EventError> {
    OffsetDateTime::parse(raw, WITH_OFFSET)
        .or_else(|_| PrimitiveDateTime::parse(raw, UTC).map(PrimitiveDateTime::assume_utc))
        .map_err(|_| EventError::ChangedAt(raw.to_owned()))
}

impl Deployment {
    /// The deployment a Deployment Hook is about; `None` for another kind of event.
    pub fn parse(body: &[u8]) -> Result<Option<Deployment>, EventError> {
        let kind: Kind =
            serde_json::from_slice(body).map_err(|e| EventError::Shape(e.to_string()))?;
        if kind.object_kind.as_deref() != Some("deployment") {
            return Ok(None);
        }
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| EventError::Shape(e.to_string()))?;
        Ok(Some(Deployment {
            id: raw.deployment_id,
            status: raw.status,
            changed_at: raw
                .status_changed_at
                .as_deref()
                .map(changed_at)
                .transpose()?,
            environment: raw.environment.unwrap_or_default(),
            project: raw.project.and_then(|p| p.path_with_namespace),
        }))
    }

    /// `running` runs; `success`, `failed` and `canceled` end it; anything else never
    /// guards.
    pub fn phase(&self) -> Phase {
        match self.status.as_str() {
            "running" => Phase::InProgress,
            "success" | "failed" | "canceled" => Phase::Ended,
            _ => Phase::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const BODY: &str = r#"{"object_kind":"deployment","status":"running",
        "status_changed_at":"2021-04-28 21:50:00 +0200","deployment_id":15,
        "environment":"staging","project":{"id":30,"path_with_namespace":"root/shop"}}"#;

    #[test]
    fn reads_a_deployment() {
        let d = Deployment::parse(BODY.as_bytes()).unwrap().unwrap();
        assert_eq!(
            d,
            Deployment {
                id: 15,
                status: "running".into(),
                changed_at: Some(datetime!(2021-04-28 19:50:00 UTC)),
                environment: "staging".into(),
                project: Some("root/shop".into()),
            }
        );
        assert_eq!(d.phase(), Phase::InProgress);
    }

    #[test]
    fn status_changed_at_in_either_of_gitlabs_formats() {
        for (raw, at) in [
            (
                "2021-04-28 21:50:00 +0200",
                datetime!(2021-04-28 19:50:00 UTC),
            ),
            (
                "2021-04-28 21:50:00 -0130",
                datetime!(2021-04-28 23:20:00 UTC),
            ),
            (
                "2021-04-28 19:50:00 UTC",
                datetime!(2021-04-28 19:50:00 UTC),
            ),
        ] {
            assert_eq!(changed_at(raw), Ok(at), "{raw}");
        }
        for bad in [
            "2021-04-28T21:50:00+02:00",
            "2021-04-28 21:50:00",
            "yesterday",
            "",
        ] {
            assert!(changed_at(bad).is_err(), "{bad}");
        }
        let body = BODY.replace("2021-04-28 21:50:00 +0200", "2021-04-28T21:50:00Z");
        assert!(Deployment::parse(body.as_bytes()).is_err());
        let without = BODY.replace(r#""status_changed_at":"2021-04-28 21:50:00 +0200","#, "");
        let d = Deployment::parse(without.as_bytes()).unwrap().unwrap();
        assert_eq!(d.changed_at, None);
    }

    #[test]
    fn each_status_has_its_phase() {
        let with = |status: &str| {
            let body = BODY.replace("running", status);
            Deployment::parse(body.as_bytes()).unwrap().unwrap().phase()
        };
        for end in ["success", "failed", "canceled"] {
            assert_eq!(with(end), Phase::Ended, "{end}");
        }
        assert_eq!(with("created"), Phase::Other);
    }

    #[test]
    fn other_events_are_none_and_malformed_bodies_are_refused() {
        let push = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;
        assert_eq!(Deployment::parse(push), Ok(None));
        for body in [
            &b"not json"[..],
            br#"{"object_kind":"deployment","status":"running"}"#,
            br#"{"object_kind":"deployment","deployment_id":"15","status":"running"}"#,
        ] {
            assert!(
                Deployment::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
