//! Per-connection state: who the client is, what the framing check found, whether the
//! server is closing, and (with h2c) whether anything is in flight; plus the count of open
//! connections that shutdown waits for.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::deadline;
use crate::framing::io::Verdict;

/// The client end of a connection, worked out once per connection rather than per request.
pub struct Connection {
    pub addr: Option<SocketAddr>,
    /// The connection's socket, to notice a client that leaves while its request is held.
    pub fd: Option<RawFd>,
    /// The client's IP, ready to go into `X-Forwarded-For`.
    pub ip_header: Option<HeaderValue>,
    /// Whether the client came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// What the framing check of this connection has found.
    pub framing: Arc<Verdict>,
    /// Set when the server stops: HTTP/1.1 answers say `Connection: close` from then on.
    pub(super) closing: AtomicBool,
    /// With h2c on, requests being handled and when the last one was answered (ms since
    /// `accepted`): hyper has no idle deadline for HTTP/2 nor for the protocol sniff.
    pub(super) busy: AtomicUsize,
    last_answer_ms: AtomicU64,
    accepted: tokio::time::Instant,
}

impl Connection {
    pub(super) fn new(addr: Option<SocketAddr>, fd: Option<RawFd>, tls: bool) -> Self {
        let ip_header = addr.and_then(|a| HeaderValue::from_str(&a.ip().to_string()).ok());
        Connection {
            addr,
            fd,
            ip_header,
            tls,
            framing: Arc::default(),
            closing: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            last_answer_ms: AtomicU64::new(0),
            accepted: tokio::time::Instant::now(),
        }
    }

    /// When the connection, if nothing is in flight, has been idle for `idle`.
    pub(super) fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_answer_ms.load(Ordering::Acquire));
        Some(deadline::after_tokio(
            self.accepted,
            last.saturating_add(idle),
        ))
    }
}

/// A request of an h2c-capable connection, from its head until its answer's body ends.
pub(super) struct Busy(Arc<Connection>);

impl Busy {
    pub(super) fn new(client: &Arc<Connection>) -> Self {
        client.busy.fetch_add(1, Ordering::AcqRel);
        Busy(client.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.accepted.elapsed().as_millis() as u64;
        self.0.last_answer_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Open connections across all listeners, so shutdown can wait for them to finish.
#[derive(Default)]
pub struct OpenConnections(AtomicUsize);

impl OpenConnections {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One open connection, counted until dropped.
pub struct Open<'a>(&'a OpenConnections);

impl<'a> Open<'a> {
    pub(super) fn new(connections: &'a OpenConnections) -> Self {
        connections.0.fetch_add(1, Ordering::AcqRel);
        Open(connections)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
