//! The one listener type: a pingora [`ServerApp`] that serves each accepted stream with
//! hyper (HTTP/1.1 and h2c), for both the proxy and the admin API. Every connection's reads
//! go through the request framing check ([`crate::framing`]) before hyper parses them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::body::Body;
use crate::framing::io::{is_connect, Framed, Verdict};
use crate::framing::Checker;

/// What a listener serves: one request in, one response out.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &Arc<Peer>,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// The client end of a connection, worked out once per connection rather than per request.
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The connection's socket, to notice a client that leaves while its request is held.
    pub fd: Option<RawFd>,
    /// The client's IP, ready to go into `X-Forwarded-For`.
    pub ip_header: Option<HeaderValue>,
    /// What the framing check of this connection has found.
    pub framing: Arc<Verdict>,
}

impl Peer {
    fn new(addr: Option<SocketAddr>, fd: Option<RawFd>) -> Self {
        let ip_header = addr.and_then(|a| HeaderValue::from_str(&a.ip().to_string()).ok());
        Peer {
            addr,
            fd,
            ip_header,
            framing: Arc::default(),
        }
    }
}

/// Open connections across all listeners, so shutdown can wait for them to finish.
#[derive(Default)]
pub struct Connections(AtomicUsize);

impl Connections {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

struct Open<'a>(&'a Connections);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct HttpApp<H> {
    handler: Arc<H>,
    protocol: Protocol,
    connections: Arc<Connections>,
    /// Largest request head, and whether h2c is on: for the framing check.
    max_head: usize,
    h2c: bool,
}

/// HTTP/1.1 only, or HTTP/1.1 and h2c (prior knowledge) told apart by the connection
/// preface, which costs a wrapper on every read.
enum Protocol {
    Http1(http1::Builder),
    Auto(auto::Builder<TokioExecutor>),
}

impl<H: Handler> HttpApp<H> {
    pub fn new(handler: Arc<H>, opts: &HttpOptions, connections: Arc<Connections>) -> Self {
        let protocol = if opts.h2c {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_timeout)
                // The auto builder has no max_header_size; a head must fit the buffer.
                .max_buf_size(opts.max_header_size.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(opts.max_header_size as u32);
            Protocol::Auto(builder)
        } else {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_timeout)
                .max_header_size(opts.max_header_size);
            Protocol::Http1(builder)
        };
        HttpApp {
            handler,
            protocol,
            connections,
            max_head: opts.max_header_size,
            h2c: opts.h2c,
        }
    }
}

/// How a listener speaks HTTP.
pub struct HttpOptions {
    /// Whole-header deadline, which also bounds an idle keep-alive connection's wait for
    /// its next request: hyper starts it as soon as it waits for a request head.
    pub header_timeout: Duration,
    /// Largest request head; larger ones get 431.
    pub max_header_size: usize,
    /// Also accept HTTP/2 over cleartext (prior knowledge).
    pub h2c: bool,
}

/// Serves one connection; when shutdown starts, finishes the request in flight and closes
/// (an idle keep-alive connection closes at once). A macro rather than a generic function:
/// the compiler cannot prove a generic version's future `Send` for pingora's boxed future.
macro_rules! serve {
    ($conn:expr, $shutdown:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => res,
            _ = stopping($shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
        .map_err(|e| e.to_string())
    }};
}

/// Resolves once the server starts shutting down.
async fn stopping(mut shutdown: ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[async_trait]
impl<H: Handler> ServerApp for HttpApp<H> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.connections.0.fetch_add(1, Ordering::AcqRel);
        let _open = Open(&self.connections);
        let peer = Arc::new(Peer::new(
            stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied())),
            // pingora's unique id of a TCP stream is its file descriptor.
            Some(stream.id()),
        ));
        let handler = self.handler.clone();
        let conn_peer = peer.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let peer = conn_peer.clone();
            async move {
                if let Some(refusal) = peer.framing.before(&req) {
                    return Ok::<_, Infallible>(refusal);
                }
                let connect = is_connect(req.method());
                let res = handler.handle(req, &peer).await;
                Ok(peer.framing.after(connect, res))
            }
        });
        let checker = Checker::new(self.max_head, self.h2c);
        let io = TokioIo::new(Framed::new(stream, checker, peer.framing.clone()));
        let result = match &self.protocol {
            Protocol::Http1(b) => serve!(
                b.serve_connection(io, service).with_upgrades(),
                shutdown.clone()
            ),
            Protocol::Auto(b) => serve!(
                b.serve_connection_with_upgrades(io, service),
                shutdown.clone()
            ),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = ?peer.addr, "connection ended with an error");
        }
        None
    }
}
