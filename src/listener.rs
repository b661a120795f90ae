//! The one listener type: a pingora [`ServerApp`] that serves each accepted stream with
//! hyper (HTTP/1.1 and h2c), for both the proxy and the admin API.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::body::Body;

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
    /// The client's IP, ready to go into `X-Forwarded-For`.
    pub ip_header: Option<HeaderValue>,
}

impl Peer {
    fn new(addr: Option<SocketAddr>) -> Self {
        let ip_header = addr.and_then(|a| HeaderValue::from_str(&a.ip().to_string()).ok());
        Peer { addr, ip_header }
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
    builder: auto::Builder<TokioExecutor>,
    connections: Arc<Connections>,
}

impl<H: Handler> HttpApp<H> {
    pub fn new(handler: Arc<H>, header_timeout: Duration, connections: Arc<Connections>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        HttpApp {
            handler,
            builder,
            connections,
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
        ));
        let handler = self.handler.clone();
        let conn_peer = peer.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let peer = conn_peer.clone();
            async move { Ok::<_, Infallible>(handler.handle(req, &peer).await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut shutdown = shutdown.clone();
        let result = tokio::select! {
            res = conn.as_mut() => res,
            _ = async { shutdown.wait_for(|&down| down).await.map(|_| ()) } => {
                // Finish the request in flight, then close; idle connections close now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = ?peer.addr, "connection ended with an error");
        }
        None
    }
}
