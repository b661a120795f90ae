//! The tee: an answer's body on its way to the client, copied as it passes and stored once
//! it has ended whole. The client never waits on it (a copy per frame, one store insert at
//! the end); an answer that grows past `stale.max_object`, carries trailers, breaks off or
//! is dropped (client gone) is not stored. [`Tee`] does it for hyper's bodies; a data path
//! that moves the bytes itself (the native engine) feeds a [`Keeping`] directly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::body::{Body as _, Frame, SizeHint};

use super::entry::{Slot, Stored};
use super::key::Key;
use super::rules::Verdict;
use super::store::Store;
use crate::http::{Body, BoxError};

pub(super) struct Tee {
    inner: Body,
    copy: Option<Keeping>,
}

/// An answer being kept, until its body ends (made by `Stale::keeping`).
pub struct Keeping {
    pub(super) store: Arc<Store>,
    /// The variant key it goes under, and its primary key's `Vary` names, if any.
    pub(super) key: Key,
    pub(super) vary: Option<(Key, Slot)>,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) received: SystemTime,
    pub(super) verdict: Verdict,
    pub(super) max: usize,
    pub(super) body: Vec<u8>,
}

impl Keeping {
    /// Copies the next piece of the body; `false`: the answer grew past `stale.max_object`
    /// and is not kept (drop the copy).
    pub fn push(&mut self, data: &[u8]) -> bool {
        if self.body.len() + data.len() > self.max {
            return false;
        }
        self.body.extend_from_slice(data);
        true
    }

    /// The body ended whole: the answer goes into the store.
    pub fn finish(self) {
        let stored = Stored::new(
            self.status,
            &self.headers,
            Bytes::from(self.body),
            self.received,
            &self.verdict,
        );
        if let Some((primary, names)) = self.vary {
            self.store.insert(primary, names);
        }
        self.store.insert(self.key, Slot::Answer(Arc::new(stored)));
    }
}

impl Tee {
    pub(super) fn new(inner: Body, copy: Keeping) -> Tee {
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
        if let Some(copy) = self.copy.take() {
            copy.finish();
        }
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
                        Some(data) if copy.push(data) => {}
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
