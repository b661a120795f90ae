//! The one listener type: a pingora [`ServerApp`] that serves each accepted stream with
//! hyper (HTTP/1.1 and h2c), for both the proxy and the admin API. Every connection's reads
//! go through the request framing check ([`crate::framing`]) before hyper parses them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header::CONNECTION;
use http::{HeaderValue, Version};
use http_body_util::BodyExt;
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
    /// Set when the server stops: HTTP/1.1 answers say `Connection: close` from then on.
    closing: AtomicBool,
    /// With h2c on, requests being handled and when the last one was answered (ms since
    /// `accepted`): hyper has no idle deadline for HTTP/2 nor for the protocol sniff.
    busy: AtomicUsize,
    last_answer_ms: AtomicU64,
    accepted: tokio::time::Instant,
}

impl Peer {
    fn new(addr: Option<SocketAddr>, fd: Option<RawFd>) -> Self {
        let ip_header = addr.and_then(|a| HeaderValue::from_str(&a.ip().to_string()).ok());
        Peer {
            addr,
            fd,
            ip_header,
            framing: Arc::default(),
            closing: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            last_answer_ms: AtomicU64::new(0),
            accepted: tokio::time::Instant::now(),
        }
    }

    /// When the connection, if nothing is in flight, has been idle for `idle`.
    fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_answer_ms.load(Ordering::Acquire));
        Some(self.accepted + last + idle)
    }
}

/// A request of an h2c-capable connection, from its head until its answer's body ends.
struct Busy(Arc<Peer>);

impl Busy {
    fn new(peer: &Arc<Peer>) -> Self {
        peer.busy.fetch_add(1, Ordering::AcqRel);
        Busy(peer.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.accepted.elapsed().as_millis() as u64;
        self.0.last_answer_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
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
    header_timeout: Duration,
    linger: Duration,
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
            header_timeout: opts.header_timeout,
            linger: opts.linger,
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
    ($conn:expr, $shutdown:expr, $peer:expr, $linger:expr, $idle:expr) => {{
        let mut conn = $conn;
        let peer: &Peer = $peer;
        let idle: Option<Duration> = $idle;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86400);
        let next_idle = || {
            idle.map_or_else(far, |idle| {
                peer.idle_deadline(idle)
                    .unwrap_or_else(|| tokio::time::Instant::now() + idle)
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
                    peer.closing.store(true, Ordering::Release);
                    lingering = true;
                    linger_check.as_mut().reset(tokio::time::Instant::now() + $linger);
                }
                _ = linger_check.as_mut(), if lingering => {
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
                _ = idle_check.as_mut(), if idle.is_some() => {
                    let now = tokio::time::Instant::now();
                    match idle.and_then(|idle| peer.idle_deadline(idle)) {
                        Some(at) if at <= now => {
                            // HTTP/2 closes once the client acknowledges the GOAWAY; one
                            // that does not answer at all is dropped after another `idle`.
                            conn.as_mut().graceful_shutdown();
                            let idle = idle.unwrap_or_default();
                            match tokio::time::timeout(idle, conn.as_mut()).await {
                                Ok(res) => break res,
                                Err(_) if peer.busy.load(Ordering::Acquire) == 0 => break Ok(()),
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
        keep_timer_awake();
        let peer = Arc::new(Peer::new(
            stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied())),
            // pingora's unique id of a TCP stream is its file descriptor.
            Some(stream.id()),
        ));
        let handler = self.handler.clone();
        let conn_peer = peer.clone();
        let track = self.h2c;
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let peer = conn_peer.clone();
            async move {
                let busy = track.then(|| Busy::new(&peer));
                if let Some(refusal) = peer.framing.before(&req) {
                    return Ok::<_, Infallible>(refusal);
                }
                let connect = is_connect(req.method());
                let http1 = req.version() <= Version::HTTP_11;
                let mut res = peer
                    .framing
                    .after(connect, handler.handle(req, &peer).await);
                if http1
                    && peer.closing.load(Ordering::Acquire)
                    && res.status() != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(match busy {
                    // The body owns the guard: the request stays busy until hyper drops it.
                    Some(busy) => res.map(|body| {
                        Body::boxed(body.map_frame(move |frame| {
                            let _ = &busy;
                            frame
                        }))
                    }),
                    None => res,
                })
            }
        });
        let checker = Checker::new(self.max_head, self.h2c);
        let io = TokioIo::new(Framed::new(stream, checker, peer.framing.clone()));
        let result = match &self.protocol {
            Protocol::Http1(b) => serve!(
                std::pin::pin!(b.serve_connection(io, service).with_upgrades()),
                shutdown.clone(),
                &peer,
                self.linger,
                None
            ),
            // Boxed: the auto connection (HTTP/1.1 and HTTP/2 state) is several times the
            // size of the HTTP/1.1 one, and every connection's future would carry it.
            Protocol::Auto(b) => serve!(
                Box::pin(b.serve_connection_with_upgrades(io, service)),
                shutdown.clone(),
                &peer,
                self.linger,
                Some(self.header_timeout)
            ),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = ?peer.addr, "connection ended with an error");
        }
        None
    }
}
