//! The admin API: health, readiness, status, the operator's engage/release, the config
//! reload, the audit log (`/history`), the dashboard, the Prometheus metrics (`/metrics`: open,
//! or with its own bearer token `admin.metrics_token`) and their last 15 minutes for the
//! dashboard's chart (`/metrics/recent`), and the Upsun webhook. Operator routes need the
//! bearer token; the webhook needs its JWS signature ([`crate::webhook`]).

mod error;
mod wait;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Secret};
use crate::guard::{self, Guard};
use crate::http::read::read_body;
use crate::http::respond::{asset, json, text};
use crate::http::Body;
use crate::listener::{Connection, Handler, OpenConnections};
use crate::metrics::{self, DeployResult, Live, Metrics, Outcome};
use crate::reload::Reloader;
use crate::stale::{self, Stale};
use crate::webhook::Webhook;

pub use error::AdminError;
use wait::Wait;

pub struct Admin {
    guard: Arc<Guard>,
    token: Secret,
    ready: Arc<AtomicBool>,
    webhook: Arc<Webhook>,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    metrics_token: Option<Secret>,
    connections: Arc<OpenConnections>,
    stale: Option<Arc<Stale>>,
}

/// What `/metrics` and `/status` need besides the guard.
pub struct Monitoring {
    pub metrics: Arc<Metrics>,
    pub connections: Arc<OpenConnections>,
    /// `[stale]`, when on: what it holds goes in `/status`.
    pub stale: Option<Arc<Stale>>,
}

/// The `/status` document: the guard's, and with `[stale]` on, what the store holds.
#[derive(Serialize)]
struct StatusDocument {
    #[serde(flatten)]
    guard: guard::Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<stale::Held>,
}

/// The operator dashboard: one self-contained page that talks to this API.
fn dashboard() -> Response<Body> {
    let mut res = asset(
        include_str!("dashboard.html"),
        "text/html; charset=utf-8",
        "no-store",
    );
    res.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    res
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngageRequest {
    reason: Option<String>,
    ttl: Option<String>,
    /// `"quiesced"`: answer only once no guarded write is in flight to the upstream;
    /// `"all"`: once every replica sharing the state applied the engagement.
    wait: Option<String>,
    /// How long `wait` may take (default 30s), then 504.
    timeout: Option<String>,
}

fn duration_field(name: &str, raw: &str) -> Result<Duration, AdminError> {
    crate::duration::parse(raw).map_err(|e| AdminError::BadRequest(format!("{name} {e}")))
}

impl Admin {
    /// `webhook` is the process's one endpoint, shared with the public route.
    pub fn new(
        cfg: &Config,
        guard: Arc<Guard>,
        ready: Arc<AtomicBool>,
        webhook: Arc<Webhook>,
        monitoring: Monitoring,
        reloader: Arc<Reloader>,
    ) -> Self {
        Admin {
            guard,
            token: cfg.admin.token.clone(),
            ready,
            webhook,
            reloader,
            metrics: monitoring.metrics,
            metrics_token: cfg.admin.metrics_token.clone(),
            connections: monitoring.connections,
            stale: monitoring.stale,
        }
    }

    fn status(&self) -> StatusDocument {
        StatusDocument {
            guard: self.guard.status(),
            stale: self.stale.as_ref().map(|s| s.held()),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), AdminError> {
        bearer(req, &self.token)
    }

    /// `GET /metrics`: the exposition, the state gauges read now.
    fn metrics(&self, req: &Request<Incoming>) -> Result<Response<Body>, AdminError> {
        if let Some(token) = &self.metrics_token {
            bearer(req, token)?;
        }
        let status = self.guard.status();
        if let Some(stale) = &self.stale {
            // The store's evictions are counted as its pending work is done.
            stale.held();
        }
        let live = Live {
            guarded: status.guarded,
            engagements: status.engagements.len(),
            held: status.held,
            in_flight_writes: status.in_flight_writes,
            connections: self.connections.open(),
            store_ok: status.store.ok && !status.store.failsafe,
        };
        let mut res = text(StatusCode::OK, self.metrics.encode(&live), false);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        Ok(res)
    }

    /// `GET /metrics/recent`: the last 15 minutes of the request counters, a sample a
    /// second, for the dashboard's chart. The same numbers as `/metrics`, so the same rule:
    /// open unless `admin.metrics_token` is set; then that token, or the operator's (the
    /// dashboard has that one once it is entered).
    fn recent(&self, req: &Request<Incoming>) -> Result<Response<Body>, AdminError> {
        if let Some(token) = &self.metrics_token {
            bearer(req, token).or_else(|_| self.authorize(req))?;
        }
        Ok(json(StatusCode::OK, &self.metrics.recent()))
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, AdminError> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok\n", false)),
            (&Method::GET, "/readyz") => Ok(if !self.ready.load(Ordering::Acquire) {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", false)
            } else if !self.guard.store_serviceable() {
                // The guard could not engage now: take this instance out of rotation.
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "guard state cannot be saved (see /status and the log)\n",
                    false,
                )
            } else {
                text(StatusCode::OK, "ready\n", false)
            }),
            (&Method::GET, "/status") => Ok(json(StatusCode::OK, &self.status())),
            (&Method::GET, "/metrics") => self.metrics(&req),
            (&Method::GET, "/metrics/recent") => self.recent(&req),
            (&Method::GET, "/deploys") => Ok(json(StatusCode::OK, &self.deploys())),
            (&Method::GET, "/history") => self.history(&req).await,
            (&Method::GET, "/") => Ok(dashboard()),
            (&Method::POST, "/guard") => self.engage(req).await,
            (&Method::DELETE, "/guard") => self.release(req).await,
            (&Method::POST, "/reload") => self.reload(&req).await,
            (&Method::POST, "/webhooks/upsun") => {
                Ok(self.webhook.handle(&self.guard, req, "admin").await)
            }
            (&Method::POST, "/webhooks/deploy") => {
                Ok(self.webhook.handle_deploy(&self.guard, req, "admin").await)
            }
            (&Method::POST, "/webhooks/github") => {
                Ok(self.webhook.handle_github(&self.guard, req, "admin").await)
            }
            (&Method::POST, "/webhooks/gitlab") => {
                Ok(self.webhook.handle_gitlab(&self.guard, req, "admin").await)
            }
            (
                _,
                "/" | "/healthz" | "/readyz" | "/status" | "/metrics" | "/metrics/recent"
                | "/deploys" | "/history" | "/guard" | "/reload" | "/webhooks/upsun"
                | "/webhooks/deploy" | "/webhooks/github" | "/webhooks/gitlab",
            ) => Err(AdminError::MethodNotAllowed),
            _ => Err(AdminError::NotFound),
        }
    }

    async fn engage(&self, req: Request<Incoming>) -> Result<Response<Body>, AdminError> {
        self.authorize(&req)?;
        let body = read_body(req).await?;
        let request: EngageRequest = if body.iter().all(u8::is_ascii_whitespace) {
            EngageRequest::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                AdminError::BadRequest(format!(
                    "body must be {{\"reason\"?, \"ttl\"?, \"wait\"?, \"timeout\"?}}: {e}"
                ))
            })?
        };
        let ttl = match request.ttl.as_deref() {
            None => None,
            Some(raw) => {
                let ttl = duration_field("ttl", raw)?;
                if ttl.is_zero() || ttl > self.guard.max_engaged() {
                    return Err(AdminError::BadRequest(format!(
                        "ttl must be between 1s and guard.max_engaged ({})",
                        humantime::format_duration(self.guard.max_engaged())
                    )));
                }
                Some(ttl)
            }
        };
        let timeout = match request.timeout.as_deref() {
            Some(raw) => duration_field("timeout", raw)?,
            None => Duration::from_secs(30),
        };
        let wait = Wait::parse(request.wait.as_deref(), timeout)?;
        let reason = request.reason.unwrap_or_else(|| "manual engagement".into());
        // The members that must apply it: those alive now (one that vanishes meanwhile may
        // still be serving, cut off from the store).
        let members = match wait {
            Some(Wait::All(_)) => {
                let guard = self.guard.clone();
                guard::blocking(move || guard.announce()).await?
            }
            _ => Vec::new(),
        };
        let guard = self.guard.clone();
        let engagement = guard::blocking(move || guard.engage(reason, ttl)).await?;
        tracing::info!(id = %engagement.id, reason = %engagement.reason, "guard engaged by operator");
        match wait {
            None => {}
            Some(Wait::Quiesced(timeout)) => self.quiesced(timeout).await?,
            Some(Wait::All(timeout)) => {
                let replicas = self.all_applied(members, timeout).await?;
                let mut body = serde_json::to_value(&engagement).expect("engagements serialize");
                body["replicas"] = serde_json::to_value(replicas).expect("replicas serialize");
                return Ok(json(StatusCode::CREATED, &body));
            }
        }
        Ok(json(StatusCode::CREATED, &engagement))
    }

    /// `GET /history?limit=N`: the audit log, newest first (default 100, at most 1000).
    async fn history(&self, req: &Request<Incoming>) -> Result<Response<Body>, AdminError> {
        self.authorize(req)?;
        let mut limit = 100;
        for kv in req.uri().query().unwrap_or_default().split('&') {
            if let Some(raw) = kv.strip_prefix("limit=") {
                limit = raw
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_HISTORY).contains(n))
                    .ok_or_else(|| {
                        AdminError::BadRequest(format!(
                            "limit {raw:?} must be a number from 1 to {MAX_HISTORY}"
                        ))
                    })?;
            }
        }
        let guard = self.guard.clone();
        let records = guard::blocking(move || guard.history(limit)).await?;
        Ok(json(StatusCode::OK, &records))
    }

    /// The deploys seen, newest first, with their durations.
    fn deploys(&self) -> Vec<serde_json::Value> {
        self.guard
            .deploys()
            .into_iter()
            .map(|d| {
                let duration = d.ended_at.map(|end| (end - d.started_at).as_seconds_f64());
                let mut v = serde_json::to_value(&d).expect("deploys serialize");
                v["duration_seconds"] = serde_json::json!(duration);
                v
            })
            .collect()
    }

    /// `POST /reload`: what SIGHUP does, with its outcome: 200 when the file was applied,
    /// 422 when it was refused (the previous config stays in effect).
    async fn reload(&self, req: &Request<Incoming>) -> Result<Response<Body>, AdminError> {
        self.authorize(req)?;
        let reloader = self.reloader.clone();
        let outcome = tokio::task::spawn_blocking(move || reloader.reload("POST /reload"))
            .await
            .expect("a reload does not panic");
        let status = if outcome.reloaded {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Ok(json(status, &outcome))
    }

    async fn release(&self, req: Request<Incoming>) -> Result<Response<Body>, AdminError> {
        self.authorize(&req)?;
        let all = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "all=true" || kv == "all=1"));
        let guard = self.guard.clone();
        let gone = guard::blocking(move || guard.release(all)).await?;
        tracing::info!(released = gone.len(), all, "guard released by operator");
        for e in &gone {
            self.metrics.deploy(e.source.into(), DeployResult::Released);
        }
        Ok(json(StatusCode::OK, &self.guard.status()))
    }
}

/// Most audit records one `GET /history` returns.
const MAX_HISTORY: usize = 1000;

impl Handler for Admin {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        _conn: &Arc<Connection>,
    ) -> (Outcome, Response<Body>) {
        let res = self
            .route(req)
            .await
            .unwrap_or_else(AdminError::into_response);
        (Outcome::Admin, res)
    }
}

/// Whether `req` carries `Authorization: Bearer <token>` (compared in constant time).
fn bearer(req: &Request<Incoming>, token: &Secret) -> Result<(), AdminError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or(AdminError::Unauthorized)?;
    if token.matches(presented) {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
}
