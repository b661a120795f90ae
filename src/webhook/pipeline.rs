//! What every pipeline's deploy webhook (Standard Webhooks, GitHub, GitLab) does once its
//! delivery is verified and read: apply the deploy event with its delivery id in one stored
//! change, count the deploy when it ended, and acknowledge: `{"accepted": true, "guarded"}`,
//! with `"ignored"` and the reason when it changed nothing (the answer Upsun's endpoint gives
//! too: [`acknowledged`]).

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};

use super::{Webhook, WebhookError};
use crate::guard::{self, Applied, DeployEvent, Guard};
use crate::http::respond::json;
use crate::http::Body;
use crate::metrics::{DeployResult, WebhookResult};
use crate::upsun::Phase;

/// How long a delivery id without a signed timestamp (`X-GitHub-Delivery`, GitLab's
/// `Idempotency-Key`) is remembered: GitHub redelivers from the last three days.
pub(super) const DELIVERY_KEPT: Duration = Duration::from_secs(3 * 24 * 3600);

/// The answer to a verified delivery that is acknowledged and ignored (nothing stored).
pub(super) fn ignored(why: impl Into<String>) -> (WebhookResult, Response<Body>) {
    let why = why.into();
    tracing::info!(ignored = %why, "deploy webhook acknowledged, ignored");
    let doc = serde_json::json!({ "accepted": true, "ignored": why });
    (WebhookResult::Ignored, json(StatusCode::OK, &doc))
}

impl Webhook {
    /// Applies `event`, taking `delivery` (its id and how long it is remembered) once.
    pub(super) async fn apply_event(
        &self,
        guard: &Arc<Guard>,
        delivery: Option<(String, Duration)>,
        event: DeployEvent,
    ) -> Result<(WebhookResult, Response<Body>), WebhookError> {
        let g = guard.clone();
        let ev = event.clone();
        let applied = guard::blocking(move || {
            let delivery = delivery.as_ref().map(|(id, keep)| (id.as_str(), *keep));
            g.apply_message(delivery, &ev)
        })
        .await?;
        if applied == Applied::Accepted && event.phase == Phase::Ended {
            let result = DeployResult::of(event.result.as_deref());
            self.metrics.deploy(event.source.into(), result);
        }
        Ok(acknowledged(applied, guard.snapshot().guarded()))
    }
}

/// The answer to a delivery that was applied, whoever sent it (Upsun's included):
/// `{"accepted": true, "guarded"}`, plus `"ignored"` and why when it changed nothing.
pub(super) fn acknowledged(applied: Applied, guarded: bool) -> (WebhookResult, Response<Body>) {
    match applied {
        Applied::Accepted => {
            tracing::info!(guarded, "webhook applied");
            let doc = serde_json::json!({ "accepted": true, "guarded": guarded });
            (WebhookResult::Accepted, json(StatusCode::OK, &doc))
        }
        Applied::Ignored(why) => {
            tracing::info!(guarded, ignored = %why, "webhook acknowledged, ignored");
            let doc = serde_json::json!({ "accepted": true, "guarded": guarded, "ignored": why });
            (WebhookResult::Ignored, json(StatusCode::OK, &doc))
        }
    }
}
