//! The audit trail's records: who or what changed the guard ([`Origin`]) and one
//! [`AuditRecord`] per engagement that started or ended with a change. Pure; the backend
//! keeps them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::state::{DeployEvent, Engagement, GuardState, Source};
use crate::upsun::Activity;

/// One engagement change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub when: OffsetDateTime,
    /// What made the change: `api`, `webhook`, `expiry`, `startup`.
    pub source: String,
    /// Who: `operator`, the webhook's activity type and project, `writeguard`. Never a secret.
    pub actor: String,
    /// `engage`, `release` or `expire`.
    pub action: String,
    pub reason: String,
    /// The engagement's id.
    pub engagement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// Whether the guard was engaged after the change.
    pub engaged: bool,
}

/// Who or what changes the guard, for the audit log.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `api`, `webhook`, `expiry`, `startup`.
    pub source: &'static str,
    /// Never a secret.
    pub actor: String,
    /// Why engagements that end with this change ended.
    pub why: String,
    pub activity: Option<String>,
}

impl Origin {
    pub fn operator(why: &str) -> Self {
        Origin {
            source: "api",
            actor: "operator".into(),
            why: why.into(),
            activity: None,
        }
    }

    pub fn webhook(activity: &Activity) -> Self {
        Origin {
            source: "webhook",
            actor: format!(
                "upsun {} (project {})",
                activity.kind,
                activity.project.as_deref().unwrap_or("unknown")
            ),
            why: format!("Upsun {} {}", activity.kind, activity.state),
            activity: Some(activity.id.clone()),
        }
    }

    /// A signed deploy webhook from a pipeline (Standard Webhooks, GitHub, GitLab): the
    /// audit's `source` names the sender.
    pub fn sender(event: &DeployEvent) -> Self {
        let (source, actor) = match event.source {
            Source::Github => ("github", "github deployment_status"),
            Source::Gitlab => ("gitlab", "gitlab deployment hook"),
            _ => ("webhook", "deploy webhook"),
        };
        let actor = match event.key.project.as_str() {
            "" => actor.to_owned(),
            project => format!("{actor} ({project})"),
        };
        Origin {
            source,
            actor,
            why: format!("{source}: deploy {}", event.state),
            activity: Some(event.id.clone()),
        }
    }

    pub(super) fn writeguard(source: &'static str, why: &str) -> Self {
        Origin {
            source,
            actor: "writeguard".into(),
            why: why.into(),
            activity: None,
        }
    }
}

/// The audit lines for the change from `old` to `new`: one per engagement that started or
/// ended.
pub(super) fn audit_records(
    origin: &Origin,
    old: &GuardState,
    new: &GuardState,
    now: OffsetDateTime,
) -> Vec<AuditRecord> {
    let engaged = new.span(now).is_some();
    let activity = |e: &Engagement| match e.source {
        source if source.keyed() => Some(e.id.clone()),
        _ => origin.activity.clone(),
    };
    let record = |e: &Engagement, action: &str, reason: &str| AuditRecord {
        when: now,
        source: origin.source.into(),
        actor: origin.actor.clone(),
        action: action.into(),
        reason: reason.into(),
        engagement: e.id.clone(),
        activity: activity(e),
        engaged,
    };
    let has = |s: &GuardState, e: &Engagement| s.engagements.iter().any(|x| x.id == e.id);
    let ended = if origin.source == "expiry" {
        "expire"
    } else {
        "release"
    };
    let mut out: Vec<AuditRecord> = old
        .engagements
        .iter()
        .filter(|e| !has(new, e))
        .map(|e| record(e, ended, &origin.why))
        .collect();
    out.extend(
        new.engagements
            .iter()
            .filter(|e| !has(old, e))
            .map(|e| record(e, "engage", &e.reason)),
    );
    out
}
