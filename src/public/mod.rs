//! The public status surface on the proxy port, under a reserved prefix: answered by
//! writeguard itself and never forwarded, whatever the guard state. Pages learn the state
//! here (status, live events, the banner script), and Upsun's `website-banner.js` works
//! unchanged against the status-holder routes. With their secrets set, signed Upsun
//! webhooks (`/api/`), Standard Webhooks deploy events (`/deploy`), GitHub (`/github`) and
//! GitLab (`/gitlab`) deploy webhooks come in here too.

mod events;
pub(crate) mod inject;

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Config;
use crate::guard::Guard;
use crate::http::respond::{asset, json, json_error};
use crate::http::{full, Body};
use crate::webhook::Webhook;

const BANNER_JS: &str = include_str!("banner.js");

pub struct Public {
    prefix: String,
    banner_src: String,
    cors_any: bool,
    cors_origins: Vec<HeaderValue>,
    guard: Arc<Guard>,
    webhook: Arc<Webhook>,
    /// Only with a shared key: the public port never takes unsigned Upsun webhooks.
    upsun_signed: bool,
    project: Option<String>,
    environments: Vec<String>,
    pub inject_banner: bool,
}

impl Public {
    /// `webhook` is the process's one endpoint, shared with the admin route.
    pub fn new(cfg: &Config, guard: Arc<Guard>, webhook: Arc<Webhook>) -> Self {
        let p = &cfg.public;
        Public {
            prefix: p.prefix.clone(),
            banner_src: format!("{}/banner.js", p.prefix),
            cors_any: p.cors_origins.iter().any(|o| o == "*"),
            cors_origins: p
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            guard,
            webhook,
            upsun_signed: cfg.upsun.shared_key.is_some(),
            project: cfg.upsun.project.clone(),
            environments: cfg.upsun.environments.clone(),
            inject_banner: p.inject_banner,
        }
    }

    /// Whether `path` is ours: the prefix itself or anything below it.
    #[inline]
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub fn banner_src(&self) -> &str {
        &self.banner_src
    }

    /// The public routes that are plain reads, answered whole at once: `GET`/`HEAD` of
    /// `/status`, `/banner.js` and the status holder's `/api/{project}/{environment}`, CORS
    /// headers included (`origin`: the request's `Origin`). `None` for every other request
    /// under the prefix (the preflight, the event stream, the webhooks, unknown routes):
    /// [`Public::handle`]'s. Both engines answer these through here.
    pub fn read(
        &self,
        method: &Method,
        path: &str,
        origin: Option<HeaderValue>,
    ) -> Option<Response<Body>> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let mut res = match path.strip_prefix(self.prefix.as_str())? {
            "/status" => json(StatusCode::OK, &self.guard.public_status()),
            "/banner.js" => asset(
                BANNER_JS,
                "application/javascript; charset=utf-8",
                "max-age=300",
            ),
            api if api.starts_with("/api/") => self.holder(&api["/api/".len()..]),
            _ => return None,
        };
        self.cors(origin, res.headers_mut());
        Some(res)
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let origin = req.headers().get(header::ORIGIN).cloned();
        if let Some(res) = self.read(req.method(), req.uri().path(), origin.clone()) {
            return res;
        }
        let rest = &req.uri().path()[self.prefix.len()..];
        let mut res = match (req.method(), rest) {
            (&Method::OPTIONS, _) => preflight(req.headers()),
            (&Method::GET, "/events") => {
                let mut res = Response::new(events::stream(self.guard.clone()));
                let h = res.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                // Tell buffering proxies in front of us (nginx) to pass events through.
                h.insert("x-accel-buffering", HeaderValue::from_static("no"));
                res
            }
            (&Method::POST, "/api" | "/api/") if self.upsun_signed => {
                self.webhook.handle(&self.guard, req, "public").await
            }
            (&Method::POST, "/api" | "/api/") => json_error(
                StatusCode::NOT_FOUND,
                "webhooks are taken on the public port only when upsun.shared_key is set",
            ),
            (&Method::POST, "/deploy") if self.webhook.takes_deploys() => {
                self.webhook.handle_deploy(&self.guard, req, "public").await
            }
            (&Method::POST, "/deploy") => json_error(
                StatusCode::NOT_FOUND,
                "deploy webhooks are taken on the public port only when webhooks.secret is set",
            ),
            (&Method::POST, "/github") if self.webhook.takes_github() => {
                self.webhook.handle_github(&self.guard, req, "public").await
            }
            (&Method::POST, "/github") => json_error(
                StatusCode::NOT_FOUND,
                "GitHub webhooks are taken on the public port only when github.secret is set",
            ),
            (&Method::POST, "/gitlab") if self.webhook.takes_gitlab() => {
                self.webhook.handle_gitlab(&self.guard, req, "public").await
            }
            (&Method::POST, "/gitlab") => json_error(
                StatusCode::NOT_FOUND,
                "GitLab webhooks are taken on the public port only when gitlab.token or \
                 gitlab.signing_secret is set",
            ),
            _ => json_error(StatusCode::NOT_FOUND, "no such route"),
        };
        self.cors(origin, res.headers_mut());
        res
    }

    /// Upsun's status-holder answer: `available` is false only while guarded, and only for
    /// the project and environment we guard; anything unknown fails open.
    fn holder(&self, rest: &str) -> Response<Body> {
        let mut parts = rest.split('/');
        let (project, environment) = match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(e), None) if !p.is_empty() && !e.is_empty() => (p, e),
            _ => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "expected /api/{project}/{environment}",
                )
            }
        };
        let ours = self.project.as_deref().is_none_or(|p| p == project)
            && (self.environments.is_empty() || self.environments.iter().any(|e| e == environment));
        let available = !(ours && self.guard.snapshot().guarded());
        json(
            StatusCode::OK,
            &serde_json::json!({
                "project": project,
                "environment": environment,
                "available": available,
            }),
        )
    }

    fn cors(&self, origin: Option<HeaderValue>, headers: &mut HeaderMap) {
        if self.cors_any {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else if let Some(origin) = origin.filter(|o| self.cors_origins.contains(o)) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

fn preflight(req: &HeaderMap) -> Response<Body> {
    let mut res = Response::new(full(""));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let allow_headers = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("Content-Type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    res
}
