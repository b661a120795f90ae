//! `POST /webhooks/gitlab` (and `{prefix}/gitlab` on the public port): GitLab's Deployment
//! Hook. Authenticated before the body is read by the secret token (`X-Gitlab-Token`,
//! compared in constant time) and, when `gitlab.signing_secret` is set, by the signing
//! token's Standard Webhooks headers (their shape and timestamp; the signature once the body
//! is read). Both must hold when both are set. Other events, and deployments outside
//! `[gitlab]`'s scope, are acknowledged and ignored. The deploy id is
//! `gitlab:<deployment_id>`; statuses apply in the order of `status_changed_at`, and a
//! delivery (`webhook-id`, else `Idempotency-Key`) is taken once.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::pipeline::{ignored, DELIVERY_KEPT};
use super::{Webhook, WebhookError};
use crate::config::GitlabConfig;
use crate::gitlab::Deployment;
use crate::guard::{DeployEvent, DeployKey, Guard, Source};
use crate::http::Body;
use crate::metrics::{WebhookResult, WebhookSource};
use crate::stdwebhook::{SignatureError, Signed};
use crate::upsun::Phase;

/// A refused delivery, logged (the reason only: never a header or a secret).
fn unauthorized(why: String) -> WebhookError {
    tracing::warn!(reason = %why, "gitlab webhook refused");
    WebhookError::Unauthorized(why)
}

fn bad_signature(e: SignatureError) -> WebhookError {
    unauthorized(format!("invalid GitLab signing token signature: {e}"))
}

/// Why a deployment is outside `[gitlab]`'s scope, if it is.
fn out_of_scope(deployment: &Deployment, cfg: &GitlabConfig) -> Option<String> {
    if let Some(want) = &cfg.project {
        let got = deployment.project.as_deref().unwrap_or("");
        if !got.eq_ignore_ascii_case(want) {
            return Some(format!("project {got:?} is not gitlab.project"));
        }
    }
    if !cfg.environments.is_empty() && !cfg.environments.contains(&deployment.environment) {
        return Some(format!(
            "environment {:?} is not in gitlab.environments",
            deployment.environment
        ));
    }
    None
}

/// The guard's deploy event for a deployment (`None`: a status that never guards).
fn event_of(deployment: &Deployment) -> Option<DeployEvent> {
    let phase = deployment.phase();
    if phase == Phase::Other {
        return None;
    }
    Some(DeployEvent {
        source: Source::Gitlab,
        id: format!("gitlab:{}", deployment.id),
        phase,
        guards: true,
        kind: "deployment".into(),
        state: deployment.status.clone(),
        result: (phase == Phase::Ended).then(|| match deployment.status.as_str() {
            "canceled" => "cancelled".to_owned(),
            other => other.to_owned(),
        }),
        reason: format!(
            "GitLab deployment to {} in progress",
            deployment.environment
        ),
        key: DeployKey {
            source: "gitlab".into(),
            project: deployment.project.clone().unwrap_or_default(),
            environment: deployment.environment.clone(),
            kind: "deployment".into(),
        },
        completed: deployment.status == "success",
        sequence: deployment
            .changed_at
            .and_then(|at| u64::try_from(at.unix_timestamp()).ok()),
    })
}

impl Webhook {
    /// One GitLab delivery, on `port` (`admin` or `public`).
    pub async fn handle_gitlab(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
        port: &'static str,
    ) -> Response<Body> {
        let span = tracing::info_span!(
            "gitlab_webhook",
            port,
            delivery = tracing::field::Empty,
            deploy = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        self.answer(WebhookSource::Gitlab, span, self.receive_gitlab(guard, req))
            .await
    }

    async fn receive_gitlab(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
    ) -> Result<(WebhookResult, Response<Body>), WebhookError> {
        if self.gitlab_keys.is_empty() && self.gitlab.token.is_none() {
            return Err(WebhookError::Unauthorized(
                "GitLab webhooks are refused: no gitlab.token or gitlab.signing_secret is \
                 configured"
                    .into(),
            ));
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(token) = &self.gitlab.token {
            match req.headers().get("x-gitlab-token") {
                Some(given) if token.matches(given.as_bytes()) => {}
                Some(_) => return Err(unauthorized("X-Gitlab-Token does not match".into())),
                None => {
                    return Err(unauthorized(
                        "no X-Gitlab-Token header (is the secret token set on the GitLab \
                         webhook?)"
                            .into(),
                    ))
                }
            }
        }
        let signed = if self.gitlab_keys.is_empty() {
            None
        } else {
            let signed = Signed::parse(
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                guard.now().unix_timestamp(),
                self.tolerance,
            )
            .map_err(bad_signature)?;
            Some(signed)
        };
        // A signed delivery's id is its webhook-id (GitLab sets it to the Idempotency-Key).
        let delivery = match &signed {
            Some(s) => Some((format!("gitlab:{}", s.id), self.tolerance * 2)),
            None => header("idempotency-key")
                .filter(|k| !k.is_empty())
                .map(|k| (format!("gitlab:{k}"), DELIVERY_KEPT)),
        };
        let span = tracing::Span::current();
        if let Some((id, _)) = &delivery {
            span.record("delivery", id.as_str());
        }
        let body = self.read(req).await?;
        if let Some(signed) = &signed {
            signed
                .verify(&self.gitlab_keys, &body)
                .map_err(bad_signature)?;
        }
        let parsed =
            Deployment::parse(&body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let Some(deployment) = parsed else {
            return Ok(ignored("object_kind is not deployment"));
        };
        span.record("deploy", deployment.id);
        span.record("status", deployment.status.as_str());
        if let Some(why) = out_of_scope(&deployment, &self.gitlab) {
            return Ok(ignored(why));
        }
        let Some(event) = event_of(&deployment) else {
            return Ok(ignored(format!(
                "status {:?} never guards",
                deployment.status
            )));
        };
        self.apply_event(guard, delivery, event).await
    }
}
