//! The one place a request is accounted for once its answer is done: the
//! `writeguard_requests_total` counter and the duration histogram, and (with `[log] access`)
//! the access line. The answer's body is wrapped in [`Metered`], which counts the bytes
//! out and records when the body ends or is dropped (client gone), whichever comes first.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::{Frame, SizeHint};

use super::connection::Busy;
use crate::http::{Body, BoxError};
use crate::metrics::{Metrics, Outcome};

/// Framing refusals logged per second at most (a client can send them as fast as it likes).
const FRAMING_LINES_PER_SECOND: u64 = 10;

/// Longest path written in an access line (a URI may be 8 KiB or more).
const MAX_PATH: usize = 1024;

/// What a listener records about its requests.
pub struct Observer {
    metrics: Arc<Metrics>,
    /// Write the access line (`[log] access`).
    access: bool,
    /// `proxy` or `admin`, in the access line.
    port: &'static str,
    framing_lines: RateLimit,
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, access: bool, port: &'static str) -> Arc<Self> {
        Arc::new(Observer {
            metrics,
            access,
            port,
            framing_lines: RateLimit::default(),
        })
    }

    /// Whether the access line is on: the native engine then keeps the request's method,
    /// path and `Content-Length` for it (and nothing otherwise).
    pub fn access(&self) -> bool {
        self.access
    }

    /// Accounts for a request the native HTTP/1.1 engine answered, as [`Metered`] does for
    /// hyper's: `line` is `Some((method, path, bytes_in))` when [`Observer::access`] is on.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        self: &Arc<Self>,
        start: Instant,
        line: Option<(Method, &str, u64)>,
        outcome: Outcome,
        status: StatusCode,
        peer: Option<SocketAddr>,
        bytes_out: u64,
    ) {
        let seen = Seen {
            start,
            line: line.map(|(method, path, bytes_in)| Head {
                method,
                path: path.get(..MAX_PATH).unwrap_or(path).into(),
                bytes_in,
            }),
        };
        Done {
            observer: self.clone(),
            seen,
            outcome,
            status,
            peer,
            bytes_out,
            framing: false,
            _busy: None,
        }
        .record();
    }

    /// Whether a framing refusal may be logged now.
    pub(super) fn log_framing(&self) -> bool {
        self.framing_lines.allow(FRAMING_LINES_PER_SECOND)
    }
}

/// What the access line needs of the request, taken from its head: only the start when the
/// line is off (the hot path copies and parses nothing for it).
pub(super) struct Seen {
    start: Instant,
    line: Option<Head>,
}

/// The request's part of an access line.
struct Head {
    method: Method,
    path: Box<str>,
    bytes_in: u64,
}

impl Seen {
    pub(super) fn of<B>(req: &Request<B>, observer: &Observer) -> Seen {
        Seen {
            start: Instant::now(),
            line: observer.access.then(|| {
                let path = req.uri().path();
                Head {
                    method: req.method().clone(),
                    path: path.get(..MAX_PATH).unwrap_or(path).into(),
                    bytes_in: req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                }
            }),
        }
    }
}

/// An answer's body, accounted for when it ends.
pub struct Metered {
    inner: Body,
    done: Option<Done>,
}

struct Done {
    observer: Arc<Observer>,
    seen: Seen,
    outcome: Outcome,
    status: StatusCode,
    peer: Option<SocketAddr>,
    bytes_out: u64,
    /// A framing refusal: its access line is rate-limited.
    framing: bool,
    /// With h2c, the request counts as busy until its body is done.
    _busy: Option<Busy>,
}

impl Metered {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        inner: Body,
        observer: &Arc<Observer>,
        seen: Seen,
        outcome: Outcome,
        status: StatusCode,
        peer: Option<SocketAddr>,
        framing: bool,
        busy: Option<Busy>,
    ) -> Self {
        Metered {
            inner,
            done: Some(Done {
                observer: observer.clone(),
                seen,
                outcome,
                status,
                peer,
                bytes_out: 0,
                framing,
                _busy: busy,
            }),
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done.record();
        }
    }
}

impl Done {
    fn record(self) {
        let elapsed = self.seen.start.elapsed();
        let observer = &self.observer;
        observer.metrics.request(self.outcome, elapsed);
        let Some(head) = &self.seen.line else {
            return;
        };
        if self.framing && !observer.log_framing() {
            return;
        }
        tracing::info!(
            target: "writeguard::access",
            port = observer.port,
            method = %head.method,
            path = &*head.path,
            status = self.status.as_u16(),
            outcome = self.outcome.as_str(),
            elapsed_us = elapsed.as_micros() as u64,
            peer = %self.peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
            bytes_in = head.bytes_in,
            bytes_out = self.bytes_out,
            "request",
        );
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(done)) = (frame.data_ref(), this.done.as_mut()) {
                    done.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(_) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// At most `n` events per wall-clock second: the second and the count in one atomic.
#[derive(Default)]
struct RateLimit(AtomicU64);

impl RateLimit {
    fn allow(&self, n: u64) -> bool {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            & 0xffff_ffff;
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (at, count) = (current >> 32, current & 0xffff_ffff);
            let next = if at == second {
                if count >= n {
                    return false;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_n_per_second_through() {
        let limit = RateLimit::default();
        let allowed = (0..50).filter(|_| limit.allow(10)).count();
        // The loop may straddle a second: at most two seconds' worth.
        assert!((10..=20).contains(&allowed), "{allowed}");
    }
}
