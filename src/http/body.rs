//! The response body type of both listeners: streamed from the upstream, written by us, or
//! anything else boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, SizeHint};

use crate::upstream::PooledBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum Body {
    /// Streamed from the upstream, untouched (the hot path: no boxing).
    Upstream(PooledBody),
    /// Written by us.
    Full(Full<Bytes>),
    /// Anything else (event streams, rewritten HTML).
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Full::new(bytes.into()))
}

impl Body {
    pub fn boxed<B>(body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(b) => b.is_end_stream(),
            Body::Full(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream(b) => b.size_hint(),
            Body::Full(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}
