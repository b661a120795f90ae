//! A client's request body on its way upstream, cut off when the client stalls (no byte for
//! `idle`) or trickles (the whole body not in by `deadline`): a slow POST cannot hold a
//! connection, and the upstream's, forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::deadline;
use crate::traffic::InFlight;

/// Why a client's request body did not make it upstream: the client's doing, not the
/// upstream's, so it is answered and logged as such.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Stalled or trickled past the body timeouts: answered 408.
    #[error("the client did not send its request body in time")]
    Timeout,
    /// The client's connection broke mid-body (it went away, or sent bad framing).
    #[error("the client's request body broke off: {0}")]
    Broken(hyper::Error),
}

/// What the request body, the send and the answer's body share about one request on its way
/// upstream. Dropped with the last of them: a guarded write's [`InFlight`] inside is then
/// done both ways.
#[derive(Debug, Default)]
pub struct Progress {
    sent: OnceLock<Instant>,
    _write: Option<InFlight>,
}

impl Progress {
    /// When the request's last body byte went upstream (None: still sending).
    pub fn sent(&self) -> Option<&Instant> {
        self.sent.get()
    }
}

pub struct TimedBody {
    inner: Incoming,
    idle: Duration,
    deadline: Instant,
    /// Armed on the first wait, so bodies that arrive with their head cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the last byte went upstream: the upstream's time to answer starts there. Only
    /// for a body still to be sent, or a guarded write (whose count it carries).
    progress: Option<Arc<Progress>>,
}

impl TimedBody {
    pub fn new(inner: Incoming, idle: Duration, whole: Duration, write: Option<InFlight>) -> Self {
        let progress = match (inner.is_end_stream(), write) {
            (true, None) => None,
            (false, write) => Some(Arc::new(Progress {
                sent: OnceLock::new(),
                _write: write,
            })),
            (true, write) => Some(Arc::new(Progress {
                sent: OnceLock::from(Instant::now()),
                _write: write,
            })),
        };
        TimedBody {
            inner,
            idle,
            deadline: deadline::after_tokio(Instant::now(), whole),
            sleep: None,
            progress,
        }
    }

    /// See [`Progress`].
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }

    fn next_deadline(&self) -> Instant {
        deadline::after_tokio(Instant::now(), self.idle).min(self.deadline)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(sleep) = this.sleep.as_mut() {
                let next = deadline::after_tokio(Instant::now(), this.idle).min(this.deadline);
                sleep.as_mut().reset(next);
            }
            if matches!(frame, None | Some(Ok(_))) && this.inner.is_end_stream() {
                if let Some(progress) = &this.progress {
                    let _ = progress.sent.set(Instant::now());
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(|e| ClientBodyError::Broken(e).into())));
        }
        let next = this.next_deadline();
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(ClientBodyError::Timeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The [`ClientBodyError`] behind `err`, if the client's body is what failed.
pub fn client_body_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ClientBodyError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}
