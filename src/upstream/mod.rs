//! The upstream side of the proxy: hyper's HTTP/1.1 client connections kept in a per-thread
//! pool ([`pool`]), the client's request body on its way there under its timeouts
//! ([`timed`]), and why an upstream did not answer ([`UpstreamError`]). No response of ours
//! is built here: what a client sees for each failure is decided in `http::failure`.

mod pool;
mod timed;

pub use pool::{open_connections, Open, Pool, PooledBody, SendError, UpBody};
pub use timed::{ClientBodyError, TimedBody};

/// Why the upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing was sent: the request can safely be tried again.
    #[error("cannot connect to the upstream: {0}")]
    Connect(std::io::Error),
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// The upstream took the request but did not start its answer in time.
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream broke the protocol: {0}")]
    Protocol(&'static str),
    /// The request may have reached the upstream (wholly or partly).
    #[error("upstream failed: {0}")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The client's request body failing, seen through the upstream request it fed.
    pub fn client_body(&self) -> Option<&ClientBodyError> {
        match self {
            UpstreamError::Http(e) => timed::client_body_error(e),
            _ => None,
        }
    }
}
