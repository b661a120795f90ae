//! `POST /webhooks/github` (and `{prefix}/github` on the public port): GitHub's
//! `deployment_status` events. The signature header is checked for shape before the body
//! is read (401); then the body is read (the same bound as every webhook), its signature
//! verified (401), and the event taken: `ping` and other events are acknowledged and
//! ignored, a `deployment_status` outside `[github]`'s scope too. The deploy id is
//! `github:<deployment.id>`; the statuses of a deployment apply in the order of their ids,
//! and an `X-GitHub-Delivery` is taken once.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::{Request, Response};
use hyper::body::Incoming;

use super::pipeline::{ignored, DELIVERY_KEPT};
use super::{Webhook, WebhookError};
use crate::config::GithubConfig;
use crate::github::{DeploymentStatus, Signature, SignatureError};
use crate::guard::{DeployEvent, DeployKey, Guard, Source};
use crate::http::Body;
use crate::metrics::{WebhookResult, WebhookSource};
use crate::upsun::Phase;

/// A refused signature, logged (the reason only: never a header or the secret).
fn unauthorized(e: SignatureError) -> WebhookError {
    tracing::warn!(reason = %e, "github webhook refused: bad signature");
    WebhookError::Unauthorized(e.to_string())
}

/// Whether GitHub sent the payload form-encoded (the webhook's default content type).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Why a status is outside `[github]`'s scope, if it is.
fn out_of_scope(status: &DeploymentStatus, cfg: &GithubConfig) -> Option<String> {
    if let Some(want) = &cfg.repository {
        let got = status.repository.as_deref().unwrap_or("");
        if !got.eq_ignore_ascii_case(want) {
            return Some(format!("repository {got:?} is not github.repository"));
        }
    }
    if !cfg.environments.is_empty() && !cfg.environments.contains(&status.environment) {
        return Some(format!(
            "environment {:?} is not in github.environments",
            status.environment
        ));
    }
    None
}

/// The guard's deploy event for a status (`None`: a state that never guards).
fn event_of(status: &DeploymentStatus, cfg: &GithubConfig) -> Option<DeployEvent> {
    let phase = status.phase();
    if phase == Phase::Other {
        return None;
    }
    let repository = status.repository.clone().unwrap_or_default();
    Some(DeployEvent {
        source: Source::Github,
        id: format!("github:{}", status.deployment),
        phase,
        guards: phase != Phase::Pending || cfg.guard_queued,
        kind: "deployment".into(),
        state: status.state.clone(),
        result: (phase == Phase::Ended).then(|| status.state.clone()),
        reason: status
            .description
            .clone()
            .unwrap_or_else(|| format!("GitHub deployment to {} in progress", status.environment)),
        key: DeployKey {
            source: "github".into(),
            project: repository,
            environment: status.environment.clone(),
            kind: "deployment".into(),
        },
        completed: status.state == "success",
        sequence: Some(status.status),
    })
}

impl Webhook {
    /// One GitHub delivery, on `port` (`admin` or `public`).
    pub async fn handle_github(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
        port: &'static str,
    ) -> Response<Body> {
        let span = tracing::info_span!(
            "github_webhook",
            port,
            delivery = tracing::field::Empty,
            event = tracing::field::Empty,
            deploy = tracing::field::Empty,
            state = tracing::field::Empty,
        );
        self.answer(WebhookSource::Github, span, self.receive_github(guard, req))
            .await
    }

    async fn receive_github(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
    ) -> Result<(WebhookResult, Response<Body>), WebhookError> {
        let Some(secret) = &self.github.secret else {
            return Err(WebhookError::Unauthorized(
                "GitHub webhooks are refused: no github.secret is configured".into(),
            ));
        };
        let headers = req.headers();
        let signature = Signature::parse(headers.get("x-hub-signature-256").map(|v| v.as_bytes()))
            .map_err(unauthorized)?;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let event = text("x-github-event").unwrap_or_default();
        let delivery = text("x-github-delivery").filter(|d| !d.is_empty());
        let form = is_form(headers);
        let span = tracing::Span::current();
        span.record("event", event.as_str());
        if let Some(d) = &delivery {
            span.record("delivery", d.as_str());
        }
        let body = self.read(req).await?;
        signature
            .verify(secret.expose().as_bytes(), &body)
            .map_err(unauthorized)?;
        match event.as_str() {
            "deployment_status" => {}
            "ping" => return Ok(ignored("ping")),
            other => return Ok(ignored(format!("event {other:?} is not deployment_status"))),
        }
        let parsed = if form {
            DeploymentStatus::parse_form(&body)
        } else {
            DeploymentStatus::parse(&body)
        };
        let status = parsed.map_err(|e| WebhookError::Malformed(e.to_string()))?;
        span.record("deploy", status.deployment);
        span.record("state", status.state.as_str());
        if let Some(why) = out_of_scope(&status, &self.github) {
            return Ok(ignored(why));
        }
        let Some(event) = event_of(&status, &self.github) else {
            return Ok(ignored(format!("state {:?} never guards", status.state)));
        };
        let delivery = delivery.map(|d| (format!("github:{d}"), DELIVERY_KEPT));
        self.apply_event(guard, delivery, event).await
    }
}
