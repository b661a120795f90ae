//! The body of a `deployment_status` event: which deployment (`deployment.id`), its new
//! state (`deployment_status.state`), the status's own id (they only grow, so they order the
//! statuses of a deployment), the environment and the repository. Sent as JSON, or as
//! `payload=<JSON>` when the webhook's content type is `application/x-www-form-urlencoded`
//! (GitHub's default). Unknown fields are ignored.

use serde::Deserialize;

use crate::upsun::Phase;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    /// `deployment.id`.
    pub deployment: u64,
    /// `deployment_status.id`.
    pub status: u64,
    /// `deployment_status.state`: `queued`, `pending`, `in_progress`, `success`, `failure`,
    /// `error`, `inactive`.
    pub state: String,
    /// `deployment_status.environment`, else `deployment.environment`.
    pub environment: String,
    /// `repository.full_name` (`owner/name`).
    pub repository: Option<String>,
    /// `deployment.description`, for the engagement's reason.
    pub description: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not a deployment_status event: {0}")]
    Shape(String),
    #[error("form-encoded body has no payload field")]
    NoPayload,
}

#[derive(Deserialize)]
struct Raw {
    deployment_status: RawStatus,
    deployment: RawDeployment,
    repository: Option<RawRepository>,
}

#[derive(Deserialize)]
struct RawStatus {
    id: u64,
    state: String,
    environment: Option<String>,
}

#[derive(Deserialize)]
struct RawDeployment {
    id: u64,
    environment: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawRepository {
    full_name: String,
}

impl DeploymentStatus {
    /// A JSON body.
    pub fn parse(body: &[u8]) -> Result<DeploymentStatus, EventError> {
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| EventError::Shape(e.to_string()))?;
        let environment = raw
            .deployment_status
            .environment
            .filter(|e| !e.is_empty())
            .or(raw.deployment.environment)
            .unwrap_or_default();
        Ok(DeploymentStatus {
            deployment: raw.deployment.id,
            status: raw.deployment_status.id,
            state: raw.deployment_status.state,
            environment,
            repository: raw.repository.map(|r| r.full_name),
            description: raw.deployment.description.filter(|d| !d.is_empty()),
        })
    }

    /// A form-encoded body: its `payload` field holds the JSON.
    pub fn parse_form(body: &[u8]) -> Result<DeploymentStatus, EventError> {
        let payload = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v)
            .ok_or(EventError::NoPayload)?;
        Self::parse(payload.as_bytes())
    }

    /// Where the deployment stands: `in_progress` runs; `queued` and `pending` wait (they
    /// engage only with `github.guard_queued`); `success`, `failure`, `error` and
    /// `inactive` end it.
    pub fn phase(&self) -> Phase {
        match self.state.as_str() {
            "queued" | "pending" => Phase::Pending,
            "in_progress" => Phase::InProgress,
            "success" | "failure" | "error" | "inactive" => Phase::Ended,
            _ => Phase::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"action":"created",
        "deployment_status":{"id":7,"state":"in_progress","environment":"production"},
        "deployment":{"id":42,"environment":"production","description":"v1.2"},
        "repository":{"full_name":"acme/shop"},"sender":{"login":"x"}}"#;

    #[test]
    fn reads_a_status() {
        let s = DeploymentStatus::parse(BODY.as_bytes()).unwrap();
        assert_eq!(
            s,
            DeploymentStatus {
                deployment: 42,
                status: 7,
                state: "in_progress".into(),
                environment: "production".into(),
                repository: Some("acme/shop".into()),
                description: Some("v1.2".into()),
            }
        );
        assert_eq!(s.phase(), Phase::InProgress);
    }

    #[test]
    fn reads_the_form_encoded_payload() {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", BODY)
            .finish();
        let s = DeploymentStatus::parse_form(form.as_bytes()).unwrap();
        assert_eq!(s.deployment, 42);
        assert_eq!(
            DeploymentStatus::parse_form(b"other=1"),
            Err(EventError::NoPayload)
        );
    }

    #[test]
    fn each_state_has_its_phase() {
        let with = |state: &str| {
            let body = BODY.replace("in_progress", state);
            DeploymentStatus::parse(body.as_bytes()).unwrap().phase()
        };
        assert_eq!(with("queued"), Phase::Pending);
        assert_eq!(with("pending"), Phase::Pending);
        for end in ["success", "failure", "error", "inactive"] {
            assert_eq!(with(end), Phase::Ended, "{end}");
        }
        assert_eq!(with("waiting"), Phase::Other);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            "not json",
            r#"{"zen":"Design for failure.","hook_id":1}"#,
            r#"{"deployment_status":{"id":"7","state":"success"},"deployment":{"id":42}}"#,
            r#"{"deployment_status":{"id":7},"deployment":{"id":42}}"#,
        ] {
            assert!(DeploymentStatus::parse(body.as_bytes()).is_err(), "{body}");
        }
    }
}
