//! The Upsun webhook endpoint, on the admin port (`POST /webhooks/upsun`) and, with a shared
//! key, on the public prefix (`{prefix}/api/`): read the body (413 past the cap), verify its
//! signature (401), parse the activity (400), apply it to the guard (503 when the change
//! cannot be stored), and acknowledge (200) only once it is stored.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::config::{Secret, UpsunConfig};
use crate::guard::{self, Applied, Guard, StoreError};
use crate::http::read::{read_body, BodyError};
use crate::http::respond::{json, json_error};
use crate::http::Body;
use crate::upsun::{self, Activity, SignedPayload};

/// Why a delivery was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    Malformed(String),
    #[error("guard state could not be saved, nothing changed: {0}")]
    Store(#[from] StoreError),
}

impl WebhookError {
    /// The one map from a refused delivery to its status.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::Body(BodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Body(_) | WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
            WebhookError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        json_error(self.status(), &self.to_string())
    }
}

/// The endpoint: its key and whether unsigned deliveries are taken.
pub struct Webhook {
    key: Option<Secret>,
    allow_unsigned: bool,
}

impl Webhook {
    pub fn new(cfg: &UpsunConfig) -> Self {
        Webhook {
            key: cfg.shared_key.clone(),
            allow_unsigned: cfg.allow_unsigned,
        }
    }

    pub async fn handle(&self, guard: &Arc<Guard>, req: Request<Incoming>) -> Response<Body> {
        self.receive(guard, req)
            .await
            .unwrap_or_else(WebhookError::into_response)
    }

    async fn receive(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, WebhookError> {
        let signature = req.headers().get("x-jws-signature").cloned();
        let body = read_body(req).await?;
        match &self.key {
            Some(key) => upsun::verify(
                key.expose().as_bytes(),
                signature.as_ref().map(|v| v.as_bytes()),
                &body,
                SignedPayload::Raw,
            )
            .map_err(|e| {
                tracing::warn!(reason = %e, "webhook refused: bad signature");
                WebhookError::Unauthorized(format!("invalid X-JWS-Signature: {e}"))
            })?,
            None if self.allow_unsigned => {}
            None => return Err(WebhookError::Unauthorized(
                "webhooks are refused: no upsun.shared_key is configured (allow_unsigned = false)"
                    .into(),
            )),
        }
        let activity =
            Activity::parse(&body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let span = tracing::info_span!("webhook", activity = %activity.id, kind = %activity.kind, state = %activity.state);
        async {
            let g = guard.clone();
            let act = activity.clone();
            let applied = guard::blocking(move || g.apply_activity(&act)).await?;
            let guarded = guard.snapshot().guarded();
            let doc = match applied {
                Applied::Accepted => {
                    tracing::info!(guarded, "webhook applied");
                    serde_json::json!({ "accepted": true, "guarded": guarded })
                }
                Applied::Ignored(why) => {
                    tracing::info!(guarded, ignored = %why, "webhook acknowledged, ignored");
                    serde_json::json!({ "accepted": true, "guarded": guarded, "ignored": why })
                }
            };
            Ok(json(StatusCode::OK, &doc))
        }
        .instrument(span)
        .await
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
    }
}
