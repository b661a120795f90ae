//! A ledger upstream for reconciliation under load: an in-process hyper 1 server on a
//! loopback port that answers every request at once (200, tiny body) and writes down, per
//! `x-request-id`, each time a request with that id reached it (method and arrival
//! instant). Tests give every request a unique id and compare what clients were told with
//! what the app really received: a write answered by the app must be here exactly once, a
//! write answered 503 must not be here at all.
//!
//! The answer carries `x-ledger: <id>` so a client can tell the app's answer from the
//! proxy's own. Requests without an id are only counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use super::server::{loopback, serve_http1};

/// The header carrying each request's unique id.
pub const ID_HEADER: &str = "x-request-id";

/// One arrival of a request at the app.
#[derive(Debug, Clone)]
pub struct Entry {
    pub method: String,
    pub at: Instant,
}

#[derive(Default)]
struct Book {
    by_id: Mutex<HashMap<String, Vec<Entry>>>,
    anonymous: AtomicUsize,
}

pub struct Ledger {
    pub addr: SocketAddr,
    book: Arc<Book>,
    task: JoinHandle<()>,
}

impl Ledger {
    pub async fn start() -> Ledger {
        let (listener, addr) = loopback("ledger upstream").await;
        let book = Arc::new(Book::default());
        let task = serve_http1(listener, book.clone(), record);
        Ledger { addr, book, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every arrival of the request with this id (empty: it never reached the app).
    pub fn entries(&self, id: &str) -> Vec<Entry> {
        self.book
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many times the request with this id reached the app.
    pub fn count(&self, id: &str) -> usize {
        self.entries(id).len()
    }

    /// A copy of the whole ledger: id -> arrivals.
    pub fn snapshot(&self) -> HashMap<String, Vec<Entry>> {
        self.book
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Arrivals with this method, ids or not.
    pub fn count_method(&self, method: &str) -> usize {
        self.snapshot()
            .values()
            .flatten()
            .filter(|e| e.method == method)
            .count()
    }

    /// Requests that came without an id.
    pub fn anonymous(&self) -> usize {
        self.book.anonymous.load(Ordering::SeqCst)
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the request down once its whole body is in (a request cut short never counts as
/// received), then answers.
async fn record(book: Arc<Book>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if body.collect().await.is_err() {
        let mut res = Response::new(Full::new(Bytes::from_static(b"body cut")));
        *res.status_mut() = http::StatusCode::BAD_REQUEST;
        return res;
    }
    let id = parts
        .headers
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    match id {
        Some(id) => {
            book.by_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(id.clone())
                .or_default()
                .push(Entry {
                    method: parts.method.as_str().to_string(),
                    at: Instant::now(),
                });
            res.headers_mut().insert(
                "x-ledger",
                id.parse().expect("an id is a valid header value"),
            );
        }
        None => {
            book.anonymous.fetch_add(1, Ordering::SeqCst);
        }
    }
    res
}
