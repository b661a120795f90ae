//! The Upsun webhook endpoint, on the admin port (`POST /webhooks/upsun`) and, with a shared
//! key, on the public prefix (`{prefix}/api/`): refuse what can be refused from the head
//! alone (a missing or malformed signature, 401; an unsigned body that is not JSON, 415),
//! read the body (413 past the cap; at most [`MAX_READING`] at once across both routes, 503
//! beyond), verify its signature (401), parse the activity (400), apply it to the guard (503
//! when the change cannot be stored), and acknowledge (200) only once it is stored. Each
//! delivery is one `webhook` span from its first byte (with the port it came in on), and one
//! count in `writeguard_webhooks_total{result}`. The same endpoint takes signed deploy
//! events from any pipeline: Standard Webhooks ([`deploy`]), GitHub ([`github`]) and GitLab
//! ([`gitlab`]), which share what follows verification ([`pipeline`]).

mod deploy;
mod github;
mod gitlab;
mod pipeline;

use std::future::Future;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::{Config, GithubConfig, GitlabConfig, Secret};
use crate::guard::{self, Applied, Guard, StoreError};
use crate::http::read::{read_body, BodyError};
use crate::http::respond::json_error;
use crate::http::Body;
use crate::metrics::{DeployResult, DeploySource, Metrics, WebhookResult, WebhookSource};
use crate::stdwebhook::Key;
use crate::upsun::{Activity, Detached, JwsError, Phase, SignedPayload};

/// Webhook bodies being read at once, both routes together. Upsun sends one delivery per
/// activity state change, a few at a time; each body may take up to 30 s and 1 MiB, so this
/// bounds what senders whose signature has the right shape can make us buffer (32 MiB).
pub const MAX_READING: usize = 32;

/// `Retry-After` (seconds) of the 503 past [`MAX_READING`] (reads end within 30 s), and
/// of the 503 when the change could not be stored (the store usually answers again soon).
const RETRY_AFTER: HeaderValue = HeaderValue::from_static("5");

/// Why a delivery was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("unsigned webhooks must be sent as Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("too many webhook bodies are being read at once ({MAX_READING}); retry later")]
    Busy,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    Malformed(String),
    #[error("guard state could not be saved, nothing changed: {0}")]
    Store(#[from] StoreError),
}

impl WebhookError {
    /// The one map from a refused delivery to its status.
    /// How the delivery ended, for the metric.
    pub fn result(&self) -> WebhookResult {
        match self {
            WebhookError::Unauthorized(_) => WebhookResult::BadSignature,
            WebhookError::Busy | WebhookError::Store(_) => WebhookResult::Unavailable,
            WebhookError::Body(BodyError::TooLarge) => WebhookResult::TooLarge,
            WebhookError::UnsupportedMediaType
            | WebhookError::Body(_)
            | WebhookError::Malformed(_) => WebhookResult::Malformed,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebhookError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Body(BodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Body(_) | WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `{"error": ...}` with the status; a 503 also says when to come back (the sender
    /// redelivers).
    pub fn into_response(self) -> Response<Body> {
        let mut res = json_error(self.status(), &self.to_string());
        if let WebhookError::Busy | WebhookError::Store(_) = self {
            res.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER);
        }
        res
    }
}

/// The endpoint: its key, whether unsigned deliveries are taken, and the bodies being read.
/// One per process, shared by the admin and the public route so the bound is global.
pub struct Webhook {
    key: Option<Secret>,
    allow_unsigned: bool,
    reading: Semaphore,
    metrics: Arc<Metrics>,
    /// `[webhooks]`: the Standard Webhooks keys (none: refused) and tolerance.
    deploy_keys: Vec<Key>,
    tolerance: std::time::Duration,
    /// `[github]` and `[gitlab]`, with GitLab's signing key decoded.
    github: GithubConfig,
    gitlab: GitlabConfig,
    gitlab_keys: Vec<Key>,
}

/// A refused signature, logged (the reason only: never the header or the key).
fn unauthorized(e: JwsError) -> WebhookError {
    tracing::warn!(reason = %e, "webhook refused: bad signature");
    WebhookError::Unauthorized(format!("invalid X-JWS-Signature: {e}"))
}

/// Whether the request says its body is JSON (`application/json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

impl Webhook {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Arc<Self> {
        // The config refused secrets that do not decode.
        let keys = |secrets: &[Secret]| -> Vec<Key> {
            secrets
                .iter()
                .filter_map(|s| Key::parse(s.expose()).ok())
                .collect()
        };
        Arc::new(Webhook {
            key: cfg.upsun.shared_key.clone(),
            allow_unsigned: cfg.upsun.allow_unsigned,
            reading: Semaphore::new(MAX_READING),
            metrics,
            deploy_keys: keys(&cfg.webhooks.secrets),
            tolerance: cfg.webhooks.tolerance,
            github: cfg.github.clone(),
            gitlab_keys: keys(cfg.gitlab.signing_secret.as_slice()),
            gitlab: cfg.gitlab.clone(),
        })
    }

    /// Whether Standard Webhooks deploy events are taken (a secret is set).
    pub fn takes_deploys(&self) -> bool {
        !self.deploy_keys.is_empty()
    }

    /// Whether GitHub deliveries are taken (`github.secret` is set).
    pub fn takes_github(&self) -> bool {
        self.github.secret.is_some()
    }

    /// Whether GitLab deliveries are taken (a token or a signing secret is set).
    pub fn takes_gitlab(&self) -> bool {
        self.gitlab.enabled()
    }

    /// Reads a body, at most [`MAX_READING`] at once across every webhook route.
    async fn read(&self, req: Request<Incoming>) -> Result<bytes::Bytes, WebhookError> {
        let Ok(_reading) = self.reading.try_acquire() else {
            tracing::warn!(
                limit = MAX_READING,
                "webhook refused: too many bodies being read at once"
            );
            return Err(WebhookError::Busy);
        };
        Ok(read_body(req).await?)
    }

    /// One delivery, on `port` (`admin` or `public`).
    pub async fn handle(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
        port: &'static str,
    ) -> Response<Body> {
        let span = tracing::info_span!(
            "webhook",
            port,
            activity = tracing::field::Empty,
            kind = tracing::field::Empty,
            state = tracing::field::Empty,
        );
        self.answer(WebhookSource::Upsun, span, self.receive(guard, req))
            .await
    }

    /// Answers one delivery of `source` inside `span` (which it logs in): what `receive`
    /// made of it, or its refusal; counted either way.
    async fn answer(
        &self,
        source: WebhookSource,
        span: tracing::Span,
        receive: impl Future<Output = Result<(WebhookResult, Response<Body>), WebhookError>>,
    ) -> Response<Body> {
        async {
            let (result, res) = match receive.await {
                Ok(done) => done,
                Err(e) => {
                    tracing::info!(status = e.status().as_u16(), error = %e, "webhook refused");
                    (e.result(), e.into_response())
                }
            };
            self.metrics.webhook(source, result);
            res
        }
        .instrument(span)
        .await
    }

    async fn receive(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
    ) -> Result<(WebhookResult, Response<Body>), WebhookError> {
        let signature = req.headers().get("x-jws-signature").cloned();
        // Everything the head can decide is decided before the body is read: a sender
        // without a well-formed signature must not make us buffer a mebibyte.
        let signed = match &self.key {
            Some(key) => {
                let detached = Detached::parse(signature.as_ref().map(HeaderValue::as_bytes))
                    .map_err(unauthorized)?;
                Some((key, detached))
            }
            // A page in an operator's browser can POST `text/plain` to a loopback port
            // without a CORS preflight; `application/json` needs one, which we never grant.
            None if self.allow_unsigned => {
                if !is_json(req.headers()) {
                    return Err(WebhookError::UnsupportedMediaType);
                }
                None
            }
            None => return Err(WebhookError::Unauthorized(
                "webhooks are refused: no upsun.shared_key is configured (allow_unsigned = false)"
                    .into(),
            )),
        };
        let body = self.read(req).await?;
        if let Some((key, detached)) = signed {
            // Signed deliveries keep any Content-Type: Upsun does not document the one it
            // sends.
            detached
                .verify(key.expose().as_bytes(), &body, SignedPayload::Raw)
                .map_err(unauthorized)?;
        }
        let activity =
            Activity::parse(&body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let span = tracing::Span::current();
        span.record("activity", activity.id.as_str());
        span.record("kind", activity.kind.as_str());
        span.record("state", activity.state.as_str());
        let g = guard.clone();
        let act = activity.clone();
        let applied = guard::blocking(move || g.apply_activity(&act)).await?;
        if applied == Applied::Accepted && activity.phase() == Phase::Ended {
            let result = DeployResult::of(activity.result.as_deref());
            self.metrics.deploy(DeploySource::Upsun, result);
        }
        Ok(pipeline::acknowledged(applied, guard.snapshot().guarded()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map, pinned.
    #[test]
    fn each_refusal_has_its_status() {
        let io = || std::io::Error::other("x");
        let cases = [
            (WebhookError::Unauthorized("x".into()), 401),
            (WebhookError::UnsupportedMediaType, 415),
            (WebhookError::Busy, 503),
            (WebhookError::Body(BodyError::TooLarge), 413),
            (WebhookError::Body(BodyError::TooSlow), 400),
            (WebhookError::Body(BodyError::Broken("x".into())), 400),
            (WebhookError::Malformed("x".into()), 400),
            (
                WebhookError::Store(StoreError::Write {
                    path: "s".into(),
                    source: io(),
                }),
                503,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
        let busy = WebhookError::Busy.into_response();
        assert_eq!(busy.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn only_application_json_is_json() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
        ] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
