//! One stored answer: the app's head and whole body, when it was received, and how long it
//! may be served; and the answer made of it (with `Age` and `Cache-Status`, RFC 9211).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::rules::Verdict;
use crate::http::Body;

/// What a stored entry's weight adds for its bookkeeping (the entry, the `Arc`s, moka's
/// node): a round guess, so many tiny answers cannot overrun the budget unseen.
const OVERHEAD: usize = 256;

/// What the store holds under a key.
#[derive(Clone)]
pub(super) enum Slot {
    Answer(Arc<Stored>),
    /// Under a primary key: the headers its answers vary on.
    Vary(Arc<[HeaderName]>),
}

impl Slot {
    /// Bytes it weighs, with its key.
    pub(super) fn weight(&self, key: &[u8]) -> u64 {
        let own = match self {
            Slot::Answer(a) => a.weight(),
            Slot::Vary(names) => names.iter().map(|n| n.as_str().len() + 24).sum(),
        };
        (OVERHEAD + key.len() + own) as u64
    }

    /// How long it may stay, from when it is stored.
    pub(super) fn lifetime(&self) -> Option<Duration> {
        match self {
            Slot::Answer(a) => Some(a.fresh_for + a.stale_for),
            // Kept while its variants are used; the budget pushes it out otherwise.
            Slot::Vary(_) => None,
        }
    }
}

pub(super) struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    received: SystemTime,
    /// Its age when received.
    age: Duration,
    /// From when a new copy is worth taking: once it is no longer fresh, and never within
    /// `REFRESH` of this one (computed once, so the common read compares one time).
    recopy_at: SystemTime,
    pub(super) fresh_for: Duration,
    pub(super) stale_for: Duration,
    /// May be served to a request carrying credentials.
    pub(super) shared: bool,
}

/// Why a stored answer is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Because {
    /// The app failed: `Cache-Status: writeguard; hit; fwd=stale`.
    AppFailed,
    /// The guard is engaged (`serve_when = "upstream-error-or-guarded"`): the app was not
    /// asked.
    Guarded,
}

impl Stored {
    pub(super) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        received: SystemTime,
        verdict: &Verdict,
    ) -> Stored {
        Stored {
            status,
            headers: detached(headers),
            body,
            received,
            recopy_at: received + verdict.fresh_for.max(super::REFRESH),
            age: verdict.age,
            fresh_for: verdict.fresh_for,
            stale_for: verdict.stale_for,
            shared: verdict.shared,
        }
    }

    fn weight(&self) -> usize {
        let head: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        head + self.body.len()
    }

    /// Whether a new copy is worth taking at `now`: it is no longer fresh, and was not
    /// stored within `REFRESH` (a page asked for thousands of times a second is copied
    /// once a second, not on every request).
    pub(super) fn recopy_due(&self, now: SystemTime) -> bool {
        now >= self.recopy_at
    }

    /// Whether it may be served at `now`.
    pub(super) fn servable_at(&self, now: SystemTime) -> bool {
        now <= self.received + self.fresh_for + self.stale_for
    }

    /// The answer a client gets: the app's head with `Age` (RFC 9111 §5.1) and
    /// `Cache-Status` (RFC 9211), and the stored body (hyper leaves it out for a HEAD).
    pub(super) fn response(&self, now: SystemTime, because: Because) -> Response<Body> {
        let age = self.age + now.duration_since(self.received).unwrap_or_default();
        // Boxed, not `Body::Full`: that one marks an answer writeguard wrote in place of the
        // app's (a failure, in the proxy's outcome); this one is the app's, kept.
        let mut res = Response::new(Body::boxed(Full::new(self.body.clone())));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        let h = res.headers_mut();
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
        h.insert(
            HeaderName::from_static("cache-status"),
            HeaderValue::from_static(match because {
                Because::AppFailed => "writeguard; hit; fwd=stale",
                Because::Guarded => "writeguard; hit; detail=guarded",
            }),
        );
        res
    }
}

/// A copy of `headers` that owns its bytes, without `Age` (set again when served). hyper's
/// parsed values are slices of the connection's read buffer: a stored clone of them would keep
/// that whole buffer (and the body bytes read with the head) alive for as long as the answer
/// is stored, out of sight of the budget.
fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if name == header::AGE {
            continue;
        }
        let mut copy =
            HeaderValue::from_bytes(value.as_bytes()).expect("the bytes of a header value are one");
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out
}
