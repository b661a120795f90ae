//! A recording upstream: an in-process hyper 1 server on a loopback port that remembers every
//! request it got (method, path and query, headers, whole body) and answers by path:
//!
//! - `/__canned/<name>`: the response registered with [`Upstream::canned`] under `name`
//!   (status, headers and body bytes exactly as given; 404 when none is);
//! - `/__big/<n>`: `n` bytes of [`pattern`](super::pattern)`(n, 7)` with a content-length;
//! - `/__bigchunked/<n>`: the same bytes, chunked (no length);
//! - `/__status/<code>`: that status, `x-custom-header: custom-value`, body `status <code>`;
//! - `/__slow/<ms>`: waits, then 200 with 256 KiB of `pattern(_, 9)`;
//! - `/__sleep/<ms>[/anything]`: waits, then the JSON echo below;
//! - anything else: 200 with a JSON echo `{method, uri, len, sha256}` and the same facts in
//!   `x-body-len` / `x-body-sha256` headers.
//!
//! It also tracks how many requests it is handling at once (and the most ever), and the
//! order in which it finished them; it can be stopped and restarted on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::{Chunks, TestBody};
use super::pattern;
use super::server::{loopback, serve_http1};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

#[derive(Default)]
struct Shared {
    /// Responses served at `/__canned/<name>`, by name.
    canned: Mutex<HashMap<String, Canned>>,
    /// Requests whose head arrived (counted before the body is read).
    hits: AtomicUsize,
    records: Mutex<Vec<Recorded>>,
    /// Requests being handled right now, and the most there ever were at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Path and query of each answered request, in the order the answers were made (pushed
    /// before the response leaves the handler).
    done: Mutex<Vec<String>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl Upstream {
    pub async fn start() -> Upstream {
        let (listener, addr) = loopback("upstream").await;
        let shared = Arc::new(Shared::default());
        let task = Some(serve_http1(listener, shared.clone(), handle));
        Upstream { addr, shared, task }
    }

    /// Listens again on the same address after [`stop`](Self::stop), keeping what was
    /// recorded so far.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "restart a stopped upstream only");
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("bind the upstream again on {}: {e}", self.addr));
        self.task = Some(serve_http1(listener, self.shared.clone(), handle));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Serves `status`, `headers` and the body `pieces` at `/__canned/<name>`: one piece is
    /// sent with a `content-length`, several are sent chunked, one frame each (so a test
    /// can split a body where it wants). The bytes are sent exactly as given.
    pub fn canned(&self, name: &str, status: u16, headers: &[(&str, &str)], pieces: &[&[u8]]) {
        let canned = Canned {
            status: StatusCode::from_u16(status).expect("a valid status code"),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pieces: pieces.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
        };
        self.shared
            .canned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), canned);
    }

    pub fn records(&self) -> Vec<Recorded> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The most recent complete request.
    pub fn last(&self) -> Recorded {
        self.records()
            .pop()
            .expect("the upstream has received a request")
    }

    /// Requests with this method (exactly as sent, case included).
    pub fn count_method(&self, method: &str) -> usize {
        self.records().iter().filter(|r| r.method == method).count()
    }

    /// The most requests this upstream was ever handling at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Path and query of every answered request, in the order the answers were made.
    pub fn done(&self) -> Vec<String> {
        self.shared
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes the listener and every open connection: the upstream becomes unreachable.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Counts the request in flight around [`respond`] and logs its completion.
async fn handle(state: Arc<Shared>, req: Request<Incoming>) -> Response<TestBody> {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let res = respond(&state, req).await;
    state
        .done
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(uri);
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    res
}

/// A response registered with [`Upstream::canned`].
#[derive(Clone)]
struct Canned {
    status: StatusCode,
    headers: Vec<(String, String)>,
    pieces: Vec<Bytes>,
}

fn canned(state: &Shared, name: &str) -> Response<TestBody> {
    let found = state
        .canned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned();
    let Some(c) = found else {
        return full(StatusCode::NOT_FOUND, format!("nothing canned as {name:?}"));
    };
    let mut res = match <[Bytes; 1]>::try_from(c.pieces) {
        Ok([one]) => full(c.status, one),
        Err(pieces) => {
            let mut res = Response::new(Chunks::new(pieces).boxed());
            *res.status_mut() = c.status;
            res
        }
    };
    for (k, v) in &c.headers {
        res.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("a valid header name"),
            v.parse().expect("a valid header value"),
        );
    }
    res
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut res = Response::new(Full::new(body.into()).boxed());
    *res.status_mut() = status;
    res
}

async fn respond(state: &Shared, req: Request<Incoming>) -> Response<TestBody> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return full(StatusCode::BAD_REQUEST, format!("body error: {e}")),
    };
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let path = parts.uri.path().to_string();
    let sha = sha256_hex(&body);
    let len = body.len();
    state
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Recorded {
            method: parts.method.as_str().to_string(),
            uri: uri.clone(),
            headers: parts.headers,
            body,
        });

    let arg = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if let Some(name) = path.strip_prefix("/__canned/") {
        return canned(state, name);
    }
    if let Some(n) = arg("/__big/") {
        return full(StatusCode::OK, pattern(n as usize, 7));
    }
    if let Some(n) = arg("/__bigchunked/") {
        let all = pattern(n as usize, 7);
        let pieces = (0..all.len())
            .step_by(64 * 1024)
            .map(|i| all.slice(i..(i + 64 * 1024).min(all.len())))
            .collect();
        return Response::new(Chunks::new(pieces).boxed());
    }
    if let Some(code) = arg("/__status/") {
        let status = StatusCode::from_u16(code as u16).expect("a valid status code");
        let mut res = full(status, format!("status {code}"));
        res.headers_mut()
            .insert("x-custom-header", "custom-value".parse().expect("value"));
        return res;
    }
    if let Some(ms) = arg("/__slow/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return full(StatusCode::OK, pattern(256 * 1024, 9));
    }
    let sleep = path
        .strip_prefix("/__sleep/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = sleep {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": uri,
        "len": len,
        "sha256": sha,
    });
    let mut res = full(StatusCode::OK, doc.to_string());
    let h = res.headers_mut();
    h.insert("content-type", "application/json".parse().expect("value"));
    h.insert("x-upstream", "recorder".parse().expect("value"));
    h.insert("x-body-len", len.into());
    h.insert("x-body-sha256", sha.parse().expect("value"));
    res
}
