//! The tee: an answer's body on its way to the client, copied as it passes and stored once
//! it has ended whole. The client never waits on it (a copy per frame, one store insert at
//! the end); an answer that grows past `stale.max_object`, carries trailers, breaks off or
//! is dropped (client gone) is not stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::body::{Body as _, Frame, SizeHint};

use super::entry::{Slot, Stored};
use super::rules::Verdict;
use super::store::Store;
use crate::http::{Body, BoxError};

pub(super) struct Tee {
    inner: Body,
    copy: Option<Copy>,
}

/// What is being kept, until the body ends.
pub(super) struct Copy {
    pub store: Arc<Store>,
    /// The variant key it goes under, and its primary key's `Vary` names, if any.
    pub key: String,
    pub vary: Option<(String, Slot)>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub received: SystemTime,
    pub verdict: Verdict,
    pub max: usize,
    pub body: Vec<u8>,
}

impl Tee {
    pub(super) fn new(inner: Body, copy: Copy) -> Tee {
        let mut tee = Tee {
            inner,
            copy: Some(copy),
        };
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        tee
    }

    fn finish(&mut self) {
        let Some(copy) = self.copy.take() else { return };
        let stored = Stored::new(
            copy.status,
            &copy.headers,
            Bytes::from(copy.body),
            copy.received,
            &copy.verdict,
        );
        if let Some((primary, names)) = copy.vary {
            copy.store.insert(primary, names);
        }
        copy.store.insert(copy.key, Slot::Answer(Arc::new(stored)));
    }
}

impl hyper::body::Body for Tee {
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
                if let Some(copy) = this.copy.as_mut() {
                    match frame.data_ref() {
                        Some(data) if copy.body.len() + data.len() <= copy.max => {
                            copy.body.extend_from_slice(data);
                        }
                        // Too large, or trailers: not kept.
                        _ => this.copy = None,
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.copy = None,
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
