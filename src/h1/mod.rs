//! The native HTTP/1.1 engine (`proxy.engine = "native"`): the proxy port's hot path on
//! httparse and our own framing, without hyper's two state machines, two `HeaderMap`s and
//! two per-connection buffers per forwarded request.
//!
//! # The seam
//!
//! Policy lives in ONE place, the hyper path's (`proxy::Proxy`, `public`, `listener`): the
//! guard decision, the 503 (HTML or problem+json), the hold policy, the maintenance page,
//! public routes (`{prefix}/status`, events, banner), 414, the framing refusals and their
//! accounting. This engine forwards, holds, and answers the guard's 503 and the public reads
//! built by that same code, and only for requests that code says so of:
//!
//! 1. Every byte the client sends goes through the framing checker ([`inbound`]) as on the
//!    hyper path. Where the checker stops (upgrade, CONNECT, h2c preface, a refusal), this
//!    engine stops acting.
//! 2. A head is parsed once with httparse ([`request`]). A request that is not *plain*
//!    (HTTP/1.0, absolute-form or `*` target, `Upgrade`, `Expect`, a head larger than one
//!    buffer or than `max_header_size`, anything httparse or the checker rejects) is not
//!    this engine's.
//! 3. A plain request is put to `Proxy::admit`, which runs the hyper path's own checks in
//!    the same order (public prefix, URI length, `Guard::classify`, and for a watched
//!    request the released-and-not-queued test that counts it in flight, or, guarded with
//!    holding off, the 503 at once). It answers Forward, Refuse (the page or problem+json
//!    chosen by the same `Accept` rule; the answer itself from `Proxy::refusal`, its body
//!    drained as `proxy::drain` does), Hold (a guarded write with holding on), Public (a
//!    public read, `{prefix}/status`, `/banner.js` or `/api/...`, answered by
//!    `Public::read` as on the hyper path, the body drained first), or Hand.
//! 4. What is not ours is handed to hyper **on the same connection**, at that request's
//!    first byte: `listener::Rewind` replays the bytes already read, behind a fresh framing
//!    checker, and hyper serves the rest of the connection exactly as it serves any
//!    (`HttpApp::serve_handed`). So the other public routes (events, preflight, webhooks)
//!    or a framing error are answered by the code that answers them today, byte for byte.
//! 5. An admitted request is forwarded by [`exchange`]: the head rewritten in one pass by
//!    `proxy::forward`'s rules, the body streamed ([`upload`]: a length counted, chunked
//!    decoded and re-framed by [`chunked`], as strict as the checker; never buffered whole),
//!    the response head parsed with httparse and re-framed ([`response`], [`reply`]), on one upstream
//!    connection per request from a per-thread pool ([`origin`]). Buffers come from a
//!    per-thread pool ([`buffers`]) only while a request is in flight.
//! 6. With `[stale]` on, a forwarded GET or HEAD is asked of the store from its raw lines
//!    (`Stale::ask_raw`; nothing is built when `[stale]` is off): served from it while
//!    guarded when `serve_when` says so (`Proxy::stored_while_guarded`), in place of the
//!    app's failure (`Stale::instead_of`), and its answer teed into it as it streams by
//!    ([`stored`]), by the stale module's rules, as on the hyper path.
//! 7. A held write ([`held`]) waits as `Proxy::hold` says, the one hold policy of both
//!    engines (holding off or full, short of descriptors, stopping, the client gone, the
//!    budget spent, its turn after the release): its body unread, its head and the bytes
//!    read past it in exact-size copies (no pool buffer while it waits), the wait boxed
//!    (an idle connection's future does not carry it). Then it is forwarded once by [`exchange`]
//!    (retried within its hold budget, as on the hyper path), or answered the 503 as for
//!    Refuse, with the hold's outcome (`refused` or `held_refused`).
//!
//! 8. Each connection is a task of its own on a socket taken out of pingora's stream
//!    ([`socket`]). Between requests it holds its socket, its framing state, one timer and
//!    the shutdown watch, and no buffer ([`Native::idle`]); each busy spell is a future
//!    boxed only while it lasts ([`Native::serve`]).
//!
//! Everything else is the hyper path's. Any doubt about framing ends in the hyper path
//! (which refuses with 400 and closes) or, mid-body, in a 400 and a closed connection: never
//! a guess. With TLS on the proxy port or an https upstream, every connection is served by
//! hyper (not built here yet).

mod buffers;
mod chunked;
mod date;
pub mod differential;
mod exchange;
mod held;
mod inbound;
mod origin;
mod reply;
mod request;
mod response;
mod socket;
mod stored;
mod upload;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::config::{Config, UnderscoreHeaders};
use crate::deadline;
use crate::framing::linger::{self, Linger};
use crate::framing::Checker;
use crate::listener::{peer_addr, stopping, Connection, HttpApp, Observer, Rewind};
use crate::metrics::{Metrics, Outcome};
use crate::proxy::{is_idempotent, Admit, Proxy};
use crate::stale::Asked;
use crate::traffic::InFlight;

use exchange::{Ask, Ended};
use held::Held;
use inbound::Inbound;
use origin::Origin;
use request::{Parsed, Rewrite};

/// A native connection's own state, kept between requests.
struct Conn {
    stream: TcpStream,
    inb: Inbound,
    /// When the head being waited for must have come.
    by: tokio::time::Instant,
    /// Nothing was answered on the connection yet (an h2c preface may still come).
    first: bool,
    /// The server is stopping: the request that comes within `linger` is the last.
    lingering: bool,
}

/// What a busy spell of a connection ended in.
enum Next {
    /// Every byte read was used: wait for the next request, holding no buffer.
    Idle,
    Closed,
    /// A request that is not this engine's: hyper serves the rest of the connection, from
    /// its first byte on.
    Hand,
}

/// What this engine does with a request `Proxy::admit` did not hand to hyper.
enum Take {
    /// Forward it; a watched write counts in flight while this lives. A read asked of
    /// `[stale]` carries what the store holds for it.
    Forward(Option<InFlight>, Option<Asked>),
    /// The guard's 503, after draining the body.
    Refuse { html: bool },
    /// A guarded write to hold ([`held`]).
    Hold { html: bool },
    /// A public route's answer (`Public::read`), after draining the body.
    Public(Box<http::Response<crate::http::Body>>),
}

impl request::Decided for Take {
    fn forwarded(&self) -> bool {
        matches!(self, Take::Forward(..) | Take::Hold { .. })
    }
}

/// The proxy port's app with the native engine in front of the hyper one.
pub struct Native {
    hyper: Arc<HttpApp<Proxy>>,
    proxy: Arc<Proxy>,
    observer: Arc<Observer>,
    metrics: Arc<Metrics>,
    origin: Origin,
    /// Off (TLS port or https upstream): every connection goes to hyper.
    enabled: bool,
    max_head: usize,
    h2c: bool,
    header_timeout: Duration,
    linger: Duration,
    upstream_retry: Duration,
    upstream_timeout: Duration,
    body_idle_timeout: Duration,
    body_timeout: Duration,
    drop_underscored: bool,
    upstream_host: Option<Box<[u8]>>,
}

impl Native {
    pub fn new(
        cfg: &Config,
        proxy: Arc<Proxy>,
        hyper: Arc<HttpApp<Proxy>>,
        observer: Arc<Observer>,
        metrics: Arc<Metrics>,
        linger: Duration,
    ) -> Self {
        let p = &cfg.proxy;
        let enabled = !hyper.tls() && p.upstream.scheme_str() == Some("http");
        if !enabled {
            tracing::warn!("proxy.engine = \"native\" serves plain HTTP to an http:// upstream only; hyper serves this port");
        }
        Native {
            hyper,
            proxy,
            observer,
            metrics,
            origin: Origin::new(&p.upstream, p.connect_timeout),
            enabled,
            max_head: p.max_header_size,
            h2c: p.h2c,
            header_timeout: p.header_timeout,
            linger,
            upstream_retry: p.upstream_retry,
            upstream_timeout: p.upstream_timeout,
            body_idle_timeout: p.body_idle_timeout,
            body_timeout: p.body_timeout,
            drop_underscored: p.underscore_headers == UnderscoreHeaders::Drop,
            upstream_host: p
                .upstream_host
                .as_ref()
                .map(|h| h.as_str().as_bytes().into()),
        }
    }

    /// One connection, in its own task: waits between requests holding no buffer and no
    /// per-request state ([`Native::idle`]), and serves each busy spell in a future boxed
    /// only while it lasts ([`Native::serve`]).
    async fn connection(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let addr = peer_addr(&stream);
        let stream = match socket::take(stream) {
            Ok(tcp) => tcp,
            Err(stream) => {
                self.hyper.process_new(stream, &shutdown).await;
                return;
            }
        };
        let (_open, client) = self.hyper.open(addr, Some(stream.as_raw_fd()));
        let mut conn = Conn {
            stream,
            inb: Inbound::new(Checker::new(self.max_head, self.h2c)),
            by: tokio::time::Instant::now(),
            first: true,
            lingering: false,
        };
        // Made once per connection, not per request: a deadline pushed later is only noted
        // (tokio re-files the timer when it fires), and the shutdown watch stays registered.
        let sleep = tokio::time::sleep_until(conn.by);
        let stop = stopping(shutdown.clone());
        tokio::pin!(sleep, stop);
        loop {
            if !self.idle(&mut conn, sleep.as_mut(), stop.as_mut()).await {
                return;
            }
            match Box::pin(self.serve(&mut conn, &client, &shutdown)).await {
                Next::Idle => {}
                Next::Closed => return,
                Next::Hand => {
                    let io = Rewind::new(conn.inb.into_unused(), socket::into_stream(conn.stream));
                    let handed = self.hyper.serve_handed(io, client, &shutdown, conn.first);
                    return Box::pin(handed).await;
                }
            }
        }
    }

    /// Waits for the next request's first bytes (false: the client closed, or nothing came
    /// within `header_timeout`). A buffer is taken from the pool only for each try to read
    /// (`Inbound::poll_idle`), so an idle connection holds none. `stop` resolves when the
    /// server starts stopping (it is not polled again once it has: `conn.lingering`).
    async fn idle(
        &self,
        conn: &mut Conn,
        mut sleep: Pin<&mut Sleep>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        conn.by = deadline::after_tokio(tokio::time::Instant::now(), self.header_timeout);
        sleep.as_mut().reset(conn.by);
        std::future::poll_fn(|cx| {
            match conn.inb.poll_idle(cx, &mut conn.stream) {
                Poll::Ready(Ok(n)) => return Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            if !conn.lingering && stop.as_mut().poll(cx).is_ready() {
                // As the hyper path: a request that comes within `linger` is still
                // answered (with `Connection: close`); then the connection closes.
                conn.lingering = true;
                let linger = deadline::after_tokio(tokio::time::Instant::now(), self.linger);
                conn.by = conn.by.min(linger);
                sleep.as_mut().reset(conn.by);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Serves the requests whose bytes have come, until every byte read is used
    /// ([`Next::Idle`]), the connection ends, or a request is not this engine's.
    async fn serve(&self, conn: &mut Conn, client: &Connection, shutdown: &ShutdownWatch) -> Next {
        let rw = Rewrite {
            drop_underscored: self.drop_underscored,
            host: self.upstream_host.as_deref(),
            forwarded_for: client.ip_header.as_ref().map(|v| v.as_bytes()),
            proto: if client.tls { b"https" } else { b"http" },
        };
        let Conn {
            stream, inb, by, ..
        } = conn;
        loop {
            let mut path: Option<Box<str>> = None;
            let (plain, mut up_head) = loop {
                let mut out = buffers::take();
                let access = self.observer.access();
                let parsed = request::parse(inb.unused(), &rw, &mut out, |m, p, target, h| {
                    let lines = h.iter().map(|h| (h.name.as_bytes(), h.value));
                    let admitted = match self.proxy.admit(m, p, target.len(), lines.clone()) {
                        Admit::Hand => return None,
                        Admit::Forward(write) => {
                            let stale = self.proxy.stale();
                            Take::Forward(write, stale.and_then(|s| s.ask_raw(m, target, lines)))
                        }
                        Admit::Refuse { html } => Take::Refuse { html },
                        Admit::Hold { html } => Take::Hold { html },
                        Admit::Public(res) => Take::Public(res),
                    };
                    if access {
                        path = Some(p.into());
                    }
                    Some(admitted)
                });
                match parsed {
                    Parsed::Plain(p)
                        if p.head_len <= self.max_head && inb.settled(inb.start + p.head_len) =>
                    {
                        break (p, out)
                    }
                    Parsed::Partial if !inb.full() => buffers::give(out),
                    _ => {
                        buffers::give(out);
                        return Next::Hand;
                    }
                }
                match tokio::time::timeout_at(*by, inb.fill(stream)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    _ => return Next::Closed,
                }
            };
            let began = Instant::now();
            inb.start += plain.head_len;
            let lingering = conn.lingering;
            let stopping_now = || lingering || *shutdown.borrow();
            let head_request = plain.method == http::Method::HEAD;
            let close = plain.close || stopping_now();
            let ended = match plain.admitted {
                Take::Refuse { html } => {
                    self.refuse(stream, inb, plain.framing, html, close, head_request)
                        .await
                }
                Take::Public(res) => {
                    let answer =
                        self.answer_whole(stream, inb, plain.framing, *res, head_request, close);
                    Ended {
                        outcome: Outcome::Public,
                        ..answer.await
                    }
                }
                Take::Hold { html } => {
                    let held = Held {
                        framing: plain.framing,
                        html,
                        head_request,
                        idempotent: is_idempotent(&plain.method),
                        close,
                    };
                    self.hold(stream, inb, &mut up_head, client.fd, held, stopping_now)
                        .await
                }
                // A watched write counts in flight (`_write`) until its last byte both ways.
                Take::Forward(_write, asked) => {
                    let stored = asked
                        .as_ref()
                        .and_then(|asked| self.proxy.stored_while_guarded(asked));
                    match stored {
                        Some(res) => {
                            self.answer_whole(stream, inb, plain.framing, res, head_request, close)
                                .await
                        }
                        None => {
                            let ask = Ask {
                                head: &up_head,
                                framing: plain.framing,
                                head_request,
                                idempotent: is_idempotent(&plain.method),
                                close,
                                stale: asked,
                            };
                            self.exchange(stream, inb, ask, stopping_now).await
                        }
                    }
                }
            };
            buffers::give(up_head);
            self.observer.record(
                began,
                path.as_deref()
                    .map(|p| (plain.method.clone(), p, plain.bytes_in)),
                ended.outcome,
                ended.status,
                client.addr,
                ended.bytes_out,
            );
            if !ended.keep_alive {
                if inb.mid_request() && linger::may_follow(ended.status) {
                    Linger::close(stream).await;
                } else {
                    let _ = stream.shutdown().await;
                }
                return Next::Closed;
            }
            conn.first = false;
            inb.release_if_empty();
            if inb.unused().is_empty() {
                return Next::Idle;
            }
            *by = deadline::after_tokio(tokio::time::Instant::now(), self.header_timeout);
        }
    }
}

#[async_trait]
impl ServerApp for Native {
    /// Each connection gets a task of its own, sized for an idle connection, rather than
    /// living in pingora's (about 2 KB for its accept and handshake state, plus the boxed
    /// future of this method): pingora's task ends here.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !self.enabled {
            return self.hyper.process_new(stream, shutdown).await;
        }
        tokio::spawn(self.clone().connection(stream, shutdown.clone()));
        None
    }
}
