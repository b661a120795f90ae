//! `POST /webhooks/upsun`: size cap (413), signature (401), parse (400), then the guard.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use super::{blocking, json, read_body, AdminError};
use crate::body::Body;
use crate::config::{Secret, UpsunConfig};
use crate::guard::{Applied, Guard};
use crate::upsun::{self, Activity, SignedPayload};

pub struct Verifier {
    key: Option<Secret>,
    allow_unsigned: bool,
}

impl Verifier {
    pub fn new(cfg: &UpsunConfig) -> Self {
        Verifier {
            key: cfg.shared_key.clone(),
            allow_unsigned: cfg.allow_unsigned,
        }
    }

    pub async fn handle(
        &self,
        guard: &Arc<Guard>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, AdminError> {
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
                AdminError::BadSignature(format!("invalid X-JWS-Signature: {e}"))
            })?,
            None if self.allow_unsigned => {}
            None => return Err(AdminError::BadSignature(
                "webhooks are refused: no upsun.shared_key is configured (allow_unsigned = false)"
                    .into(),
            )),
        }
        let activity = Activity::parse(&body).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let span = tracing::info_span!("webhook", activity = %activity.id, kind = %activity.kind, state = %activity.state);
        async {
            let g = guard.clone();
            let act = activity.clone();
            let applied = blocking(move || g.apply_activity(&act)).await?;
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
