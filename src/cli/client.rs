//! One request to the admin API, bounded by the command's `--timeout` from the connection
//! to the last byte of the answer, and what went wrong when there is no answer.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::exit::Failure;
use super::target::Target;

/// The admin API's answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The error it states (`{"error": ...}`), or its text.
    pub fn message(&self) -> String {
        match self.json() {
            Some(Value::Object(o)) if o.get("error").is_some_and(Value::is_string) => {
                o["error"].as_str().unwrap_or_default().to_owned()
            }
            _ => String::from_utf8_lossy(&self.body).trim().to_owned(),
        }
    }
}

/// Sends `method path` with `body` (JSON, as `Value::to_string` writes it) and reads the whole answer within `deadline`.
pub async fn send(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
    deadline: Duration,
) -> Result<Answer, Failure> {
    send_with(target, method, path, body, &[], deadline).await
}

/// [`send`], with more headers (a webhook's signature).
pub async fn send_with(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&'static str, String)],
    deadline: Duration,
) -> Result<Answer, Failure> {
    let exchange = exchange(target, method, path, body, headers);
    match tokio::time::timeout(deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(Failure::TimedOut(format!(
            "no answer from the admin API at {} within {} (--timeout): is writeguard running there, and not something else?",
            target.base,
            humantime::format_duration(deadline)
        ))),
    }
}

async fn exchange(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&'static str, String)],
) -> Result<Answer, Failure> {
    let base = &target.base;
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => e.to_string(),
            };
            Failure::Unreachable(format!(
                "cannot connect to the admin API at {base} ({why}): is writeguard running at {base}?"
            ))
        })?;
    let lost = |e: hyper::Error| {
        Failure::Unreachable(format!(
            "the admin API at {base} closed the connection without a whole answer ({e})"
        ))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(lost)?;
    tokio::spawn(conn);

    // The base's path prefix, if any, then the route.
    let prefix = base
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{prefix}{path}"))
        .header(http::header::HOST, &target.authority);
    if let Some(token) = &target.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let body = match body {
        Some(json) => {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(body)).map_err(|_| {
        Failure::Usage(format!(
            "--admin {base:?} or the token cannot be sent in a request (expected http://HOST:PORT and a token of visible characters)"
        ))
    })?;
    let res = sender.send_request(req).await.map_err(lost)?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(lost)?.to_bytes();
    Ok(Answer { status, body })
}
