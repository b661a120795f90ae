//! The proxy listener's handler: forward the request to the upstream untouched, or, when
//! the guard says so, answer it here and never let it reach the upstream.

mod forward;
mod hold;
mod refusal;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::{Request, Response};

use crate::config::Config;
use crate::deadline;
use crate::framing::{self, Violation};
use crate::guard::{Decision, Guard};
use crate::http::{Body, Failure};
use crate::listener::{Connection, Handler, Headroom};
use crate::metrics::{Metrics, Outcome};
use crate::public::{self, Public};
use crate::stale::{Asked, Because, Stale};
use crate::traffic::InFlight;
use crate::webhook::Webhook;

pub use forward::is_idempotent;
use forward::Upstream;
pub use hold::Hold;
pub use refusal::Refused;

pub struct Proxy {
    guard: Arc<Guard>,
    public: Public,
    upstream: Upstream,
    headroom: Arc<Headroom>,
    drain_limit: u64,
    upstream_retry: Duration,
    max_uri_length: usize,
    /// `[stale]`, when on.
    stale: Option<Arc<Stale>>,
}

impl Proxy {
    pub fn new(
        cfg: &Config,
        guard: Arc<Guard>,
        webhook: Arc<Webhook>,
        headroom: Arc<Headroom>,
        metrics: Arc<Metrics>,
        stale: Option<Arc<Stale>>,
    ) -> Self {
        Proxy {
            public: Public::new(cfg, guard.clone(), webhook),
            guard,
            upstream: Upstream::new(&cfg.proxy, metrics),
            headroom,
            drain_limit: cfg.proxy.drain_limit,
            upstream_retry: cfg.proxy.upstream_retry,
            max_uri_length: cfg.proxy.max_uri_length,
            stale,
        }
    }

    /// A request the guard watches (`kind`: what it gets while engaged). Engaged: held or
    /// refused. Released: forwarded, counted in flight until its last byte both ways, and
    /// a write lines up behind held writes still waiting for their turn.
    async fn watched(
        &self,
        kind: Decision,
        req: Request<Incoming>,
        client: &Connection,
    ) -> (Outcome, Response<Body>) {
        match self.released(kind) {
            Released::Go(write) => (
                Outcome::Forwarded,
                self.pass(req, client, Some(write)).await,
            ),
            Released::Queued => self.hold_or_refuse(req, client).await,
            Released::Guarded => match kind {
                Decision::Hold => self.hold_or_refuse(req, client).await,
                _ => (Outcome::Refused, self.refuse(req, false).await),
            },
        }
    }

    /// Whether a watched request (`kind`) may go to the upstream now: the guard released and
    /// no held write waiting for its turn ahead of it. Shared by both engines.
    fn released(&self, kind: Decision) -> Released {
        // Counted before the guard is read: `wait: quiesced` cannot miss a write that saw
        // the guard released.
        let write = self.guard.traffic().write_in_flight();
        let snapshot = self.guard.snapshot();
        if snapshot.guarded() {
            return Released::Guarded;
        }
        let queued = kind == Decision::Hold
            && !snapshot.settings.hold.is_zero()
            && self.guard.gate().draining();
        if queued {
            return Released::Queued;
        }
        Released::Go(write)
    }

    /// The native HTTP/1.1 engine's question for a plain request (origin-form target, no
    /// `Upgrade`, not `CONNECT`): forward it itself ([`Admit::Forward`], a watched request
    /// counted in flight), answer the guard's 503 at once ([`Admit::Refuse`]: guarded, holding
    /// off), hold it ([`Admit::Hold`]: then [`Proxy::hold`], as `hold_or_refuse` does),
    /// answer a public read ([`Admit::Public`], built by [`Public::read`] as on the hyper
    /// path), or hand it to the hyper path ([`Admit::Hand`]), which answers it exactly as it
    /// answers every request (the other public routes, 414, the banner). The same checks in the same order as
    /// [`Handler::handle`], `watched` and `hold_or_refuse`.
    pub fn admit<'h>(
        &self,
        method: &http::Method,
        path: &str,
        target_len: usize,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    ) -> Admit {
        // The banner rewrites answers on the hyper path: with it on, every request goes
        // there. (`[stale]` is asked by the engine itself, through `stale` and
        // `stored_while_guarded`.)
        if self.public.inject_banner {
            return Admit::Hand;
        }
        if self.public.owns(path) {
            let origin = headers
                .clone()
                .find(|(name, _)| name.eq_ignore_ascii_case(b"origin"))
                .and_then(|(_, value)| HeaderValue::from_bytes(value).ok());
            return match self.public.read(method, path, origin) {
                Some(res) => Admit::Public(Box::new(res)),
                None => Admit::Hand,
            };
        }
        if target_len > self.max_uri_length {
            return Admit::Hand;
        }
        match self.guard.classify_raw(method, path, headers.clone()) {
            Decision::Forward => Admit::Forward(None),
            kind => match self.released(kind) {
                Released::Go(write) => Admit::Forward(Some(write)),
                // `Proxy::hold`'s first branch, without a hold: holding off, the 503 at once.
                Released::Guarded
                    if kind == Decision::Hold && self.guard.snapshot().settings.hold.is_zero() =>
                {
                    Admit::Refuse {
                        html: prefers_html_raw(headers),
                    }
                }
                // `watched`: a write lining up, or guarded with holding on ([`Proxy::hold`]).
                Released::Queued => Admit::Hold {
                    html: prefers_html_raw(headers),
                },
                Released::Guarded if kind == Decision::Hold => Admit::Hold {
                    html: prefers_html_raw(headers),
                },
                Released::Guarded => Admit::Hand,
            },
        }
    }

    /// A guarded write: held until the release and its turn (then forwarded once), or
    /// answered 503 when holding is off, full, short of file descriptors, outlasted by the
    /// deploy, or the server stops: as [`Proxy::hold`] says.
    async fn hold_or_refuse(
        &self,
        req: Request<Incoming>,
        client: &Connection,
    ) -> (Outcome, Response<Body>) {
        match self.hold(client.fd).await {
            Hold::Go { turn, write, until } => {
                // Boxed only once released: a held request's future stays small.
                let res = Box::pin(self.upstream.forward(
                    req,
                    client,
                    Some(until.into_std()),
                    Some(write),
                ))
                .await;
                drop(turn);
                (Outcome::HeldForwarded, res)
            }
            Hold::Refuse { outcome, close } => (outcome, self.refuse(req, close).await),
        }
    }

    /// Forwards; a guarded `write` counts in flight until its last byte both ways.
    async fn pass(
        &self,
        req: Request<Incoming>,
        client: &Connection,
        write: Option<InFlight>,
    ) -> Response<Body> {
        if req.headers().contains_key(http::header::UPGRADE) {
            return Box::pin(self.upstream.tunnel(req, client, write)).await;
        }
        let asked = self.stale.as_ref().and_then(|stale| stale.ask(&req));
        let stored = asked
            .as_ref()
            .and_then(|asked| self.stored_while_guarded(asked));
        let res = match stored {
            Some(res) => res,
            None => {
                let retry_until = forward::is_idempotent(req.method())
                    .then(|| deadline::after(Instant::now(), self.upstream_retry));
                let res = self.upstream.forward(req, client, retry_until, write).await;
                match (&self.stale, asked) {
                    (Some(stale), Some(asked)) => stale.answer(asked, res),
                    _ => res,
                }
            }
        };
        if self.public.inject_banner && public::inject::wants(&res) {
            return public::inject::inject(res, self.public.banner_src());
        }
        res
    }

    /// `[stale]`, when on: the native engine asks it too.
    pub fn stale(&self) -> Option<&Stale> {
        self.stale.as_deref()
    }

    /// With `serve_when = "upstream-error-or-guarded"` and the guard engaged, the stored
    /// answer to `asked`, served without asking the app (both engines).
    pub fn stored_while_guarded(&self, asked: &Asked) -> Option<Response<Body>> {
        let stale = self.stale.as_ref()?;
        if !stale.serves_while_guarded() || !self.guard.snapshot().guarded() {
            return None;
        }
        stale.stored(asked, Because::Guarded)
    }

    /// The 503; `close`: with `Connection: close` whatever the body (shutdown, or short of
    /// file descriptors).
    async fn refuse(&self, req: Request<Incoming>, close: bool) -> Response<Body> {
        let html = refusal::prefers_html(req.headers());
        let keep_alive = drain(req.into_body(), self.drain_limit).await;
        self.refusal(html, close || !keep_alive)
    }

    /// The 503 itself, for a client that prefers `html` (both engines write this one).
    pub fn refusal(&self, html: bool, close: bool) -> Response<Body> {
        self.why(|why| refusal::refusal(html, why, close))
    }

    /// The same 503's parts, for the native engine to write itself.
    pub fn refused(&self, html: bool) -> Refused {
        self.why(|why| refusal::refused(html, why))
    }

    /// What the 503 says now (`Retry-After`, the reason, the page), given to `answer`.
    fn why<T>(&self, answer: impl FnOnce(&refusal::Why<'_>) -> T) -> T {
        let snapshot = self.guard.snapshot();
        let retry = Guard::refused_retry_of(&snapshot);
        answer(&refusal::Why {
            retry_after: retry.after,
            back_in: retry.back_in,
            reason: snapshot.reason.as_deref(),
            since: snapshot.since,
            page: snapshot.settings.page.as_deref(),
        })
    }

    /// `proxy.drain_limit`: how much of a refused request's body is read to keep its
    /// connection.
    pub fn drain_limit(&self) -> u64 {
        self.drain_limit
    }
}

impl Handler for Proxy {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client: &Arc<Connection>,
    ) -> (Outcome, Response<Body>) {
        if self.public.owns(req.uri().path()) {
            // Cold paths are boxed: hyper keeps room for this handler's future in every
            // connection, idle or not, so the inline future stays small.
            return (Outcome::Public, Box::pin(self.public.handle(req)).await);
        }
        let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > self.max_uri_length {
            return (Outcome::Invalid, Failure::UriTooLong.response());
        }
        if req.method() == http::Method::CONNECT {
            return (Outcome::Invalid, Failure::ConnectNotProxied.response());
        }
        // HTTP/1 heads were checked by the framing firewall; HTTP/2 ones are checked here,
        // since they go upstream as HTTP/1.1.
        if req.version() == Version::HTTP_2
            && req
                .headers()
                .keys()
                .any(|name| framing::is_framing_alias(name.as_str().as_bytes()))
        {
            let refused = Failure::Framing(Violation::FramingHeaderAlias);
            return (Outcome::Invalid, refused.response());
        }
        let kind = self
            .guard
            .classify(req.method(), req.uri().path(), req.headers());
        let (outcome, res) = match kind {
            Decision::Forward => (
                Outcome::Forwarded,
                Box::pin(self.pass(req, client, None)).await,
            ),
            _ => Box::pin(self.watched(kind, req, client)).await,
        };
        (answered_by(outcome, &res), res)
    }
}

/// What the native engine may do with a plain request ([`Proxy::admit`]).
pub enum Admit {
    /// Forward it; a watched write counts in flight until its last byte both ways.
    Forward(Option<InFlight>),
    /// The guard's 503 ([`Proxy::refusal`]), after the body is drained.
    Refuse { html: bool },
    /// A guarded write to hold: [`Proxy::hold`] says whether and until when; then forwarded
    /// once, or the 503 for a client that prefers `html`.
    Hold { html: bool },
    /// A public route that is a plain read ([`Public::read`]): this answer, after the body
    /// (if any) is drained. Boxed: the rare case does not make every answer of `admit`
    /// larger.
    Public(Box<Response<Body>>),
    /// The hyper path serves it.
    Hand,
}

/// [`refusal::prefers_html`] of a raw head's header lines.
fn prefers_html_raw<'h>(headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> bool {
    refusal::prefers_html_of(
        headers
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"accept"))
            .map(|(_, value)| value),
    )
}

/// What [`Proxy::released`] found.
enum Released {
    /// Forward, counted in flight.
    Go(InFlight),
    /// Released, but held writes are still lining up: this one lines up too.
    Queued,
    Guarded,
}

/// The outcome of an answer meant to come from the upstream: one writeguard wrote itself
/// instead (a [`Failure`]: its body is ours) is an upstream error or the client's fault.
fn answered_by(outcome: Outcome, res: &Response<Body>) -> Outcome {
    match (outcome, res.body()) {
        (Outcome::Forwarded | Outcome::HeldForwarded, Body::Full(_)) => {
            Outcome::of_failure(res.status())
        }
        _ => outcome,
    }
}

/// Reads and drops the body of a request we answer ourselves, so the connection can carry
/// the next request. Returns false when it could not (too large, too slow, broken): the
/// connection must then close, and the unread bytes are never parsed as a request.
async fn drain(mut body: Incoming, limit: u64) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if body.size_hint().lower() > limit {
        return false;
    }
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > limit {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .unwrap_or(false)
}
