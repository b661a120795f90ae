//! The parts of an Upsun Activity that decide the guard (the activity object:
//! <https://docs.upsun.com/integrations/activity/reference.html>; one is POSTed per state change, <https://docs.upsun.com/integrations/activity/webhooks.html>). Parsing is
//! tolerant: unknown fields are ignored, `[]` stands for an empty object, and only `id`,
//! `type` and `state` are required.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub result: Option<String>,
    pub project: Option<String>,
    pub environments: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivityError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("activity has no string field {0:?}")]
    Missing(&'static str),
}

/// Where an activity stands, ordered: an id never moves backwards.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `staged`, `scheduled` and any state we do not know: never guards.
    Other,
    Pending,
    InProgress,
    /// `complete` (whatever the result) or `cancelled`.
    Ended,
}

impl Activity {
    pub fn parse(body: &[u8]) -> Result<Activity, ActivityError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ActivityError::NotJson(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(ActivityError::NotObject);
        };
        let mut required = |name: &'static str| match obj.remove(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(ActivityError::Missing(name)),
        };
        let id = required("id")?;
        let kind = required("type")?;
        let state = required("state")?;
        let optional = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let environments = match obj.get("environments") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Activity {
            id,
            kind,
            result: optional(obj.get("result")),
            project: optional(obj.get("project")),
            environments,
            state,
        })
    }

    pub fn phase(&self) -> Phase {
        match self.state.as_str() {
            "pending" => Phase::Pending,
            "in_progress" => Phase::InProgress,
            "complete" | "cancelled" => Phase::Ended,
            _ => Phase::Other,
        }
    }

    /// Whether this activity type redeploys the environment (pushes, merges, variable,
    /// domain and route changes, ...; not crons, backups or project-level activities).
    pub fn redeploys(&self) -> bool {
        const TYPES: &[&str] = &[
            "environment.push",
            "environment.redeploy",
            "environment.merge",
            "environment.merge-pr",
            "environment.synchronize",
            "environment.restore",
            "environment.source-operation",
            "environment.variable.create",
            "environment.variable.update",
            "environment.variable.delete",
            "environment.resources.update",
            "environment.domain.create",
            "environment.domain.update",
            "environment.domain.delete",
            "environment.route.create",
            "environment.route.update",
            "environment.route.delete",
            "environment.update.http_access",
            "environment.update.smtp",
            "environment.update.restrict_robots",
            "environment.subscription.update",
            "environment.certificate.renewal",
        ];
        // The manual deploy of staged changes has an undocumented type.
        TYPES.contains(&self.kind.as_str()) || self.kind.starts_with("environment.deploy")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/upsun/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).expect("the fixtures are part of the repository")
    }

    #[test]
    fn parses_the_fixtures() {
        let a = Activity::parse(&sample("environment.push_in_progress")).unwrap();
        assert_eq!(a.id, "wgpush0000001");
        assert_eq!(a.kind, "environment.push");
        assert_eq!(a.phase(), Phase::InProgress);
        assert_eq!(a.project.as_deref(), Some("wgfixture0proj"));
        assert_eq!(a.environments, vec!["main"]);
        assert!(a.redeploys());

        // `timings: []` and friends must not trip the parser.
        let p = Activity::parse(&sample("environment.variable.create_pending")).unwrap();
        assert_eq!(p.phase(), Phase::Pending);
        let f = Activity::parse(&sample("environment.redeploy_complete_failure")).unwrap();
        assert_eq!(
            (f.phase(), f.result.as_deref()),
            (Phase::Ended, Some("failure"))
        );
    }

    #[test]
    fn rejects_what_is_not_an_activity() {
        assert!(matches!(
            Activity::parse(b"{"),
            Err(ActivityError::NotJson(_))
        ));
        assert_eq!(Activity::parse(b"[]"), Err(ActivityError::NotObject));
        assert_eq!(
            Activity::parse(br#"{"id":"x","state":"complete"}"#),
            Err(ActivityError::Missing("type"))
        );
        assert_eq!(
            Activity::parse(br#"{"id":7,"type":"t","state":"complete"}"#),
            Err(ActivityError::Missing("id"))
        );
    }

    #[test]
    fn phases_and_types() {
        let a = |kind: &str, state: &str| Activity {
            id: "i".into(),
            kind: kind.into(),
            state: state.into(),
            result: None,
            project: None,
            environments: vec![],
        };
        assert_eq!(a("environment.push", "staged").phase(), Phase::Other);
        assert_eq!(a("environment.push", "scheduled").phase(), Phase::Other);
        assert_eq!(a("environment.push", "cancelled").phase(), Phase::Ended);
        assert!(a("environment.deploy", "x").redeploys());
        assert!(!a("environment.cron", "x").redeploys());
        assert!(!a("project.update", "x").redeploys());
        assert!(Phase::Pending < Phase::InProgress && Phase::InProgress < Phase::Ended);
    }
}
