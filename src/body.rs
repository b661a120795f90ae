//! The response body type shared by the proxy and the admin API: either a body streamed
//! from the upstream, or one we wrote ourselves.

use bytes::Bytes;
use http_body_util::{Either, Full};

use crate::proxy::PooledBody;

pub type Body = Either<PooledBody, Full<Bytes>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    full(Bytes::new())
}
