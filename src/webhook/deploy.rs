//! `POST /webhooks/deploy` (and `{prefix}/deploy` on the public port): a Standard Webhooks
//! deploy event from any pipeline. The signature headers are checked for shape and the
//! timestamp for the tolerance before the body is read (401); then the body is read (the
//! same bound as Upsun's), its signature verified (401), parsed (400), and applied with its
//! `webhook-id` in one stored change: a replayed id is acknowledged and ignored, and the
//! deploy id follows the same rules as an Upsun activity's. Acknowledged (200) only once
//! stored (503 otherwise).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::pipeline::ignored;
use super::{Webhook, WebhookError};
use crate::guard::{DeployEvent, DeployKey, Guard, Source};
use crate::http::Body;
use crate::metrics::{WebhookResult, WebhookSource};
use crate::stdwebhook::{DeployMessage, SignatureError, Signed};
use crate::upsun::Phase;

/// A refused signature, logged (the reason only: never a header or a key).
fn unauthorized(e: SignatureError) -> WebhookError {
    tracing::warn!(reason = %e, "deploy webhook refused: bad signature");
    WebhookError::Unauthorized(format!("invalid Standard Webhooks signature: {e}"))
}

/// The guard's deploy event for a message (`None`: not a deploy event type).
fn event_of(message: &DeployMessage) -> Option<DeployEvent> {
    let phase = message.phase()?;
    let state = message.kind.trim_start_matches("deploy.").to_owned();
    let environment = message.environment.clone().unwrap_or_default();
    Some(DeployEvent {
        source: Source::Webhook,
        id: message.id.clone(),
        phase,
        guards: true,
        kind: "deploy".into(),
        result: (phase == Phase::Ended).then(|| match message.kind.as_str() {
            "deploy.finished" => "success".to_owned(),
            _ => "cancelled".to_owned(),
        }),
        reason: message
            .reason
            .clone()
            .unwrap_or_else(|| match &message.environment {
                Some(env) => format!("deploy to {env} in progress"),
                None => "deploy in progress".into(),
            }),
        key: DeployKey {
            source: "webhook".into(),
            project: String::new(),
            environment,
            kind: "deploy".into(),
        },
        completed: message.kind == "deploy.finished",
        sequence: None,
        state,
    })
}

impl Webhook {
    /// One Standard Webhooks delivery, on `port` (`admin` or `public`).
    pub async fn handle_deploy(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
        port: &'static str,
    ) -> Response<Body> {
        let span = tracing::info_span!(
            "deploy_webhook",
            port,
            message = tracing::field::Empty,
            deploy = tracing::field::Empty,
            kind = tracing::field::Empty,
        );
        self.answer(
            WebhookSource::Webhook,
            span,
            self.receive_deploy(guard, req),
        )
        .await
    }

    async fn receive_deploy(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
    ) -> Result<(WebhookResult, Response<Body>), WebhookError> {
        if self.deploy_keys.is_empty() {
            return Err(WebhookError::Unauthorized(
                "deploy webhooks are refused: no webhooks.secret is configured".into(),
            ));
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let signed = Signed::parse(
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            guard.now().unix_timestamp(),
            self.tolerance,
        )
        .map_err(unauthorized)?;
        let body = self.read(req).await?;
        signed
            .verify(&self.deploy_keys, &body)
            .map_err(unauthorized)?;
        let message =
            DeployMessage::parse(&body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let span = tracing::Span::current();
        span.record("message", signed.id.as_str());
        span.record("deploy", message.id.as_str());
        span.record("kind", message.kind.as_str());
        let Some(event) = event_of(&message) else {
            return Ok(ignored(format!(
                "type {:?} is not a deploy event",
                message.kind
            )));
        };
        // Ids are remembered past the tolerance: a replay is refused by its timestamp after.
        let keep_ids = self.tolerance * 2;
        self.apply_event(guard, Some((signed.id.clone(), keep_ids)), event)
            .await
    }
}
