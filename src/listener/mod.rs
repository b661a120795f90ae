//! The one listener type: a pingora [`ServerApp`] that serves each accepted stream with
//! hyper (HTTP/1.1 and h2c), for the proxy, the admin API and the HTTPS redirect; on the
//! proxy's, TLS first when configured ([`Tls`]). Every connection's (decrypted) reads go
//! through the request framing check ([`crate::framing`]) before hyper parses them. Every
//! request, the ones refused for their framing too, is accounted for here once its answer is
//! done ([`access`]: the metrics and the access line).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header::CONNECTION;
use http::{HeaderValue, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::deadline;
use crate::framing::io::{is_connect, After, Framed};
use crate::framing::{Checker, Violation};
use crate::http::{Body, Failure};
use crate::metrics::Outcome;

mod access;
mod connection;
mod headroom;
mod rewind;
mod tls;

pub use access::Observer;
use access::{Metered, Seen};
use connection::Busy;
pub use connection::Open;
pub use connection::{Connection, OpenConnections};
pub use headroom::Headroom;
pub use rewind::Rewind;
pub use tls::Tls;

/// What a listener serves: one request in, one response out, with what was done with it
/// (the handler that decides says so; the listener records it).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &Arc<Connection>,
    ) -> impl Future<Output = (Outcome, Response<Body>)> + Send;
}

pub struct HttpApp<H> {
    handler: Arc<H>,
    protocol: Protocol,
    connections: Arc<OpenConnections>,
    observer: Arc<Observer>,
    /// Largest request head, and whether h2c is on: for the framing check.
    max_head: usize,
    h2c: bool,
    header_timeout: Duration,
    linger: Duration,
    /// Terminate TLS before HTTP (the proxy listener with `tls_cert`).
    tls: Option<Arc<Tls>>,
}

/// HTTP/1.1 only, or HTTP/1.1 and h2c (prior knowledge) told apart by the connection
/// preface, which costs a wrapper on every read.
enum Protocol {
    Http1(http1::Builder),
    Auto(auto::Builder<TokioExecutor>),
}

impl<H: Handler> HttpApp<H> {
    pub fn new(
        handler: Arc<H>,
        opts: &HttpOptions,
        connections: Arc<OpenConnections>,
        observer: Arc<Observer>,
    ) -> Self {
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
            observer,
            max_head: opts.max_header_size,
            h2c: opts.h2c,
            header_timeout: opts.header_timeout,
            linger: opts.linger,
            tls: None,
        }
    }

    /// Every connection starts with a TLS handshake.
    pub fn with_tls(mut self, tls: Arc<Tls>) -> Self {
        self.tls = Some(tls);
        self
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
    /// At shutdown, how long connections keep serving (answers say `Connection: close`)
    /// before idle ones are closed: a request a client sent on an idle connection just as
    /// the server stopped is answered rather than lost.
    pub linger: Duration,
}

/// Serves one connection. When shutdown starts, answers go on for `linger` with
/// `Connection: close` (clients move to the new listener as their answers come back), then
/// the request in flight finishes and the connection closes. With `idle` (h2c on), a
/// connection with nothing in flight for that long is closed: hyper's own deadline does not
/// cover the protocol sniff nor HTTP/2. A macro rather than a generic function: the compiler
/// cannot prove a generic version's future `Send` for pingora's boxed future.
macro_rules! serve {
    ($conn:expr, $shutdown:expr, $client:expr, $linger:expr, $idle:expr) => {{
        let mut conn = $conn;
        let client: &Connection = $client;
        let idle: Option<Duration> = $idle;
        let far = || deadline::after_tokio(tokio::time::Instant::now(), Duration::from_secs(86400));
        let next_idle = || {
            idle.map_or_else(far, |idle| {
                client
                    .idle_deadline(idle)
                    .unwrap_or_else(|| deadline::after_tokio(tokio::time::Instant::now(), idle))
            })
        };
        let idle_check = tokio::time::sleep_until(next_idle());
        tokio::pin!(idle_check);
        let stopping = stopping($shutdown);
        tokio::pin!(stopping);
        let mut lingering = false;
        let linger_check = tokio::time::sleep_until(far());
        tokio::pin!(linger_check);
        loop {
            tokio::select! {
                res = conn.as_mut() => break res,
                _ = stopping.as_mut(), if !lingering => {
                    client.closing.store(true, Ordering::Release);
                    lingering = true;
                    linger_check
                        .as_mut()
                        .reset(deadline::after_tokio(tokio::time::Instant::now(), $linger));
                }
                _ = linger_check.as_mut(), if lingering => {
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
                _ = idle_check.as_mut(), if idle.is_some() => {
                    let now = tokio::time::Instant::now();
                    match idle.and_then(|idle| client.idle_deadline(idle)) {
                        Some(at) if at <= now => {
                            // HTTP/2 closes once the client acknowledges the GOAWAY; one
                            // that does not answer at all is dropped after another `idle`.
                            conn.as_mut().graceful_shutdown();
                            let idle = idle.unwrap_or_default();
                            match tokio::time::timeout(idle, conn.as_mut()).await {
                                Ok(res) => break res,
                                Err(_) if client.busy.load(Ordering::Acquire) == 0 => break Ok(()),
                                Err(_) => break conn.await,
                            }
                        }
                        _ => idle_check.as_mut().reset(next_idle()),
                    }
                }
            }
        }
        .map_err(|e| e.to_string())
    }};
}

/// Serves `io` (a framed stream, plain or TLS) with the listener's HTTP protocol.
macro_rules! serve_protocol {
    ($app:expr, $io:expr, $service:expr, $client:expr, $shutdown:expr) => {{
        let app = $app;
        match &app.protocol {
            Protocol::Http1(b) => serve!(
                std::pin::pin!(b.serve_connection($io, $service).with_upgrades()),
                $shutdown.clone(),
                $client,
                app.linger,
                None
            ),
            // Boxed: the auto connection (HTTP/1.1 and HTTP/2 state) is several times the
            // size of the HTTP/1.1 one, and every connection's future would carry it.
            Protocol::Auto(b) => serve!(
                Box::pin(b.serve_connection_with_upgrades($io, $service)),
                $shutdown.clone(),
                $client,
                app.linger,
                Some(app.header_timeout)
            ),
        }
    }};
}

/// The hyper service of one connection: the framing verdict, the handler, the accounting.
/// A macro for the same reason as [`serve!`].
macro_rules! service {
    ($app:expr, $client:expr) => {{
        let app = $app;
        let client: &Arc<Connection> = $client;
        let handler = app.handler.clone();
        let observer = app.observer.clone();
        let conn_client = client.clone();
        let track = app.h2c;
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let observer = observer.clone();
            let client = conn_client.clone();
            async move {
                let busy = track.then(|| Busy::new(&client));
                let seen = Seen::of(&req, &observer);
                if let Some(violation) = client.framing.before(&req) {
                    let res = refuse(violation, &observer);
                    let status = res.status();
                    return Ok::<_, Infallible>(res.map(|body| {
                        let (outcome, peer) = (Outcome::Invalid, client.addr);
                        Metered::new(body, &observer, seen, outcome, status, peer, true, busy)
                    }));
                }
                let connect = is_connect(req.method());
                let http1 = req.version() <= Version::HTTP_11;
                let (mut outcome, mut res) = handler.handle(req, &client).await;
                let mut framing = false;
                match client.framing.after(connect, res.status()) {
                    After::Send => {}
                    After::SendAndClose => {
                        res.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    After::Refuse(violation) => {
                        res = refuse(violation, &observer);
                        outcome = Outcome::Invalid;
                        framing = true;
                    }
                }
                if http1
                    && client.closing.load(Ordering::Acquire)
                    && res.status() != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                let status = res.status();
                // The body owns the accounting (and the busy guard): both last until hyper
                // is done with the answer.
                Ok(res.map(|body| {
                    Metered::new(
                        body,
                        &observer,
                        seen,
                        outcome,
                        status,
                        client.addr,
                        framing,
                        busy,
                    )
                }))
            }
        });
        service
    }};
}

/// Starts, once per worker thread, a task that keeps a timer due within half a second.
///
/// Every proxied request arms a deadline (the upstream timeout, hyper's header timer). When
/// tokio registers a timer that is due before anything its driver last went to sleep for (or
/// when nothing was due), it wakes its own driver through an eventfd: a `write` syscall and an
/// extra turn of the event loop, measured at 0.5 per request under load (`strace -f -e
/// trace=write`), about 5 % of a small GET's CPU. With this timer always pending, the
/// per-request deadlines (a second or more away) never come first. Costs two wake-ups a second
/// per worker thread.
fn keep_timer_awake() {
    thread_local! {
        static STARTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if STARTED.replace(true) {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });
}

/// The client's address, as pingora noted it when it accepted the connection.
pub fn peer_addr(stream: &Stream) -> Option<SocketAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()))
}

/// Resolves once the server starts shutting down.
pub async fn stopping(mut shutdown: ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

impl<H: Handler> HttpApp<H> {
    /// A new connection: counted open until the returned guard drops, and who its client is.
    pub fn accept(&self, stream: &Stream) -> (Open<'_>, Arc<Connection>) {
        // pingora's unique id of a TCP stream is its file descriptor.
        self.open(peer_addr(stream), Some(stream.id()))
    }

    /// [`HttpApp::accept`] for a connection whose client address and socket are known.
    pub fn open(&self, addr: Option<SocketAddr>, fd: Option<RawFd>) -> (Open<'_>, Arc<Connection>) {
        let open = Open::new(&self.connections);
        keep_timer_awake();
        let client = Arc::new(Connection::new(addr, fd, self.tls.is_some()));
        (open, client)
    }

    /// Whether this listener terminates TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves the rest of a plaintext connection that the native HTTP/1.1 engine hands over
    /// at a request boundary (`io` replays what it had read). `first`: nothing was answered
    /// on it yet, so an h2c preface may still come.
    pub async fn serve_handed(
        self: &Arc<Self>,
        io: Rewind<Stream>,
        client: Arc<Connection>,
        shutdown: &ShutdownWatch,
        first: bool,
    ) {
        let service = service!(self, &client);
        let checker = Checker::new(self.max_head, self.h2c && first);
        let io = TokioIo::new(Framed::new(io, checker, client.framing.clone()));
        let result = serve_protocol!(self, io, service, &client, shutdown);
        if let Err(e) = result {
            tracing::debug!(error = %e, client = ?client.addr, "connection ended with an error");
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
        let (_open, client) = self.accept(&stream);
        let service = service!(self, &client);
        let checker = Checker::new(self.max_head, self.h2c);
        let result = match &self.tls {
            None => {
                let io = TokioIo::new(Framed::new(stream, checker, client.framing.clone()));
                serve_protocol!(self, io, service, &client, shutdown)
            }
            // Boxed: a TLS connection's state (rustls' session and buffers) would otherwise
            // make every plaintext connection's future that much larger too.
            Some(tls) => {
                Box::pin(async {
                    let handshake = tokio::select! {
                        done = tls.accept(stream, self.header_timeout) => done.map_err(|e| e.to_string()),
                        _ = stopping(shutdown.clone()) => Err("the server is stopping".to_owned()),
                    };
                    match handshake {
                        Ok(stream) => {
                            let io =
                                TokioIo::new(Framed::new(stream, checker, client.framing.clone()));
                            serve_protocol!(self, io, service, &client, shutdown)
                        }
                        Err(e) => Err(format!("TLS handshake failed: {e}")),
                    }
                })
                .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, client = ?client.addr, "connection ended with an error");
        }
        None
    }
}

/// The answer to a request whose framing was refused (logged at a bounded rate).
fn refuse(violation: Violation, observer: &Observer) -> Response<Body> {
    if observer.log_framing() {
        tracing::info!(reason = violation.detail(), "request framing refused");
    }
    Failure::Framing(violation).response()
}
