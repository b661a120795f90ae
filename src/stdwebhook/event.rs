//! The body of a deploy event: `{"type": "deploy.started" | "deploy.finished" |
//! "deploy.cancelled", "timestamp": RFC 3339, "data": {"id", "environment"?, "reason"?}}`.
//! Unknown fields are ignored; another `type` reads as `None` (acknowledged, ignored).

use serde::Deserialize;
use time::OffsetDateTime;

use crate::upsun::Phase;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployMessage {
    /// `deploy.started`, ...
    pub kind: String,
    pub id: String,
    pub environment: Option<String>,
    pub reason: Option<String>,
    pub timestamp: OffsetDateTime,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("body is not a deploy event: {0}")]
    Shape(String),
    #[error("data.id must not be empty")]
    EmptyId,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    id: String,
    environment: Option<String>,
    reason: Option<String>,
}

impl DeployMessage {
    pub fn parse(body: &[u8]) -> Result<DeployMessage, EventError> {
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| EventError::Shape(e.to_string()))?;
        if raw.data.id.is_empty() {
            return Err(EventError::EmptyId);
        }
        Ok(DeployMessage {
            kind: raw.kind,
            id: raw.data.id,
            environment: raw.data.environment.filter(|e| !e.is_empty()),
            reason: raw.data.reason.filter(|r| !r.is_empty()),
            timestamp: raw.timestamp,
        })
    }

    /// Where the deploy stands; `None` for a type that is not a deploy event.
    pub fn phase(&self) -> Option<Phase> {
        match self.kind.as_str() {
            "deploy.started" => Some(Phase::InProgress),
            "deploy.finished" | "deploy.cancelled" => Some(Phase::Ended),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_type() {
        let body = br#"{"type":"deploy.started","timestamp":"2026-01-02T03:04:05Z",
            "data":{"id":"d1","environment":"prod","reason":"v1.2","extra":1}}"#;
        let m = DeployMessage::parse(body).unwrap();
        assert_eq!(m.id, "d1");
        assert_eq!(m.environment.as_deref(), Some("prod"));
        assert_eq!(m.reason.as_deref(), Some("v1.2"));
        assert_eq!(m.phase(), Some(Phase::InProgress));
        let with = |kind: &str| {
            let body = format!(
                r#"{{"type":"{kind}","timestamp":"2026-01-02T03:04:05Z","data":{{"id":"d"}}}}"#
            );
            DeployMessage::parse(body.as_bytes()).unwrap().phase()
        };
        assert_eq!(with("deploy.finished"), Some(Phase::Ended));
        assert_eq!(with("deploy.cancelled"), Some(Phase::Ended));
        assert_eq!(with("invoice.paid"), None);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"not json"[..],
            br#"{"type":"deploy.started","data":{"id":"d"}}"#,
            br#"{"type":"deploy.started","timestamp":"yesterday","data":{"id":"d"}}"#,
            br#"{"type":"deploy.started","timestamp":"2026-01-02T03:04:05Z","data":{}}"#,
            br#"{"type":"deploy.started","timestamp":"2026-01-02T03:04:05Z","data":{"id":""}}"#,
        ] {
            assert!(
                DeployMessage::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
