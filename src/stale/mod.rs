//! Stale reads: while the app fails (a deploy took it down), a GET or HEAD whose answer was
//! stored gets that answer instead of a 502, the way a CDN's grace period or nginx's
//! `proxy_cache_use_stale` do it. Not a cache: every request still goes to the app, and a
//! stored answer is only served when the app fails (or, with `serve_when =
//! "upstream-error-or-guarded"`, while the guard is engaged).
//!
//! The seam, for any data path: [`Stale::ask`] before forwarding (a cheap look at the
//! request head: hyper's `http::Request`, or the native engine's raw lines through
//! [`Stale::ask_raw`]; both read by [`view`]), then [`Stale::answer`] with what came back: a
//! failure is answered from the store ([`Stale::instead_of`], [`Stale::stored`]), a storable
//! answer gets its body teed into it ([`Stale::keep`]; a data path that streams bytes itself
//! takes the copy from [`Stale::keeping`] and feeds it). What may be stored is [`rules`]'
//! call, what it is filed under [`key`]'s, the bounded store is [`store`], the copy on the way
//! [`tee`], an entry and the answer made of it [`entry`].
//!
//! Above `http`, `metrics` and `config`; below `proxy` and `admin`.

mod entry;
mod key;
mod rules;
mod store;
mod tee;
mod view;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode, Uri};
use serde::Serialize;

use crate::config::{ServeWhen, StaleConfig};
use crate::http::Body;
use crate::metrics::Metrics;

pub use entry::Because;
use entry::{Slot, Stored};
use key::Key;
use store::Store;
pub use tee::Keeping;
use tee::Tee;
use view::{Parts, Raw, View};

/// A stored answer younger than this is not replaced by a new copy: a page asked for
/// thousands of times a second is copied once a second, not on every request.
const REFRESH: Duration = Duration::from_secs(1);

thread_local! {
    /// The primary key of the request being asked about, written in place.
    static KEY: RefCell<Key> = const { RefCell::new(Vec::new()) };
}

pub struct Stale {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    grace: Duration,
    max_object: u64,
    max_bytes: u64,
    when_guarded: bool,
}

/// A GET or HEAD on its way to the app, as far as the store goes: what is held for it now,
/// and, when its answer is wanted in the store, the request head that decides it.
pub struct Asked {
    /// The answer held for this request (of its variant), looked up once before forwarding.
    held: Option<Arc<Stored>>,
    /// It carries `Cookie` or `Authorization`.
    credentials: bool,
    /// Its answer is wanted in the store (nothing fresh or recent is held): its key and the
    /// request head [`rules`] judge it by. Copied only then: the common read costs one
    /// lookup. Boxed: a data path keeps an `Asked` in every request's future.
    keep: Option<Box<Head>>,
}

impl Asked {
    /// Its answer is wanted in the store: worth [`Stale::keeping`]'s look.
    pub fn wanted(&self) -> bool {
        self.keep.is_some()
    }
}

/// The request head kept to judge its answer, and its primary key.
struct Head {
    primary: Key,
    uri: Uri,
    headers: HeaderMap,
}

/// What the store holds, for `/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Held {
    pub answers: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

impl Stale {
    /// `None` when `[stale]` is off.
    pub fn new(cfg: &StaleConfig, metrics: Arc<Metrics>) -> Option<Arc<Stale>> {
        cfg.enabled.then(|| {
            Arc::new(Stale {
                store: Arc::new(Store::new(cfg.max_bytes, metrics.clone())),
                metrics,
                grace: cfg.grace,
                max_object: cfg.max_object,
                max_bytes: cfg.max_bytes,
                when_guarded: cfg.serve_when == ServeWhen::UpstreamErrorOrGuarded,
            })
        })
    }

    /// Whether stored answers are served, without asking the app, while guarded.
    pub fn serves_while_guarded(&self) -> bool {
        self.when_guarded
    }

    /// Before forwarding: a GET or HEAD with a host gets an [`Asked`]; anything else passes
    /// untouched (`None`).
    pub fn ask<B>(&self, req: &Request<B>) -> Option<Asked> {
        self.asking(
            req.method(),
            &mut Parts {
                uri: req.uri(),
                headers: req.headers(),
            },
        )
    }

    /// [`Stale::ask`] for a request head read without `http` types (the native engine's):
    /// an origin-form `target` (path and query) and the header lines as sent. Nothing is
    /// built from the lines unless the answer's `Vary` or the rules need a `HeaderMap`.
    pub fn ask_raw<'h>(
        &self,
        method: &Method,
        target: &'h str,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    ) -> Option<Asked> {
        self.asking(method, &mut Raw::new(target, headers))
    }

    fn asking(&self, method: &Method, head: &mut impl View) -> Option<Asked> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        // The key is written into a buffer of the thread's, and copied only when the answer
        // is wanted: the common read allocates nothing.
        KEY.with_borrow_mut(|primary| {
            if !key::primary(primary, head.host()?, head.target()) {
                return None;
            }
            let held = self.find(primary, head);
            let wanted = *method == Method::GET
                && held
                    .as_ref()
                    .is_none_or(|stored| stored.recopy_due(SystemTime::now()));
            let keep = match wanted {
                true => head.owned().map(|(uri, headers)| {
                    Box::new(Head {
                        primary: primary.clone(),
                        uri,
                        headers,
                    })
                }),
                false => None,
            };
            Some(Asked {
                held,
                credentials: head.credentials(),
                keep,
            })
        })
    }

    /// What came back from forwarding `asked`: writeguard's own 502/504 (the app refused,
    /// reset or did not answer in time) or the app's 500/502/503/504 is replaced by the
    /// stored answer when there is one it may serve; any other answer goes to the client
    /// as it is, teed into the store when it may be kept.
    pub fn answer(&self, asked: Asked, res: Response<Body>) -> Response<Body> {
        let ours = match res.body() {
            Body::Full(_) => Some(true),
            Body::Upstream(_) => Some(false),
            Body::Boxed(_) => None,
        };
        if let Some(ours) = ours {
            if failed(res.status(), ours) {
                return self.stored(&asked, Because::AppFailed).unwrap_or(res);
            }
        }
        self.keep(asked, res)
    }

    /// In place of an answer of `status` to `asked` (`ours`: writeguard wrote it, the app
    /// gave none), the stored answer, when the answer is a failure and one may be served:
    /// [`Stale::answer`]'s rule for a data path that holds no `Response`.
    pub fn instead_of(
        &self,
        asked: &Asked,
        status: StatusCode,
        ours: bool,
    ) -> Option<Response<Body>> {
        if !failed(status, ours) {
            return None;
        }
        self.stored(asked, Because::AppFailed)
    }

    /// The stored answer to `asked` if there is one it may get now: within its time, of
    /// the same variant, and shared when the request carries credentials.
    pub fn stored(&self, asked: &Asked, because: Because) -> Option<Response<Body>> {
        let stored = asked.held.as_ref()?;
        let now = SystemTime::now();
        if !stored.servable_at(now) || (asked.credentials && !stored.shared) {
            return None;
        }
        self.metrics.stale.served();
        Some(stored.response(now, because))
    }

    /// The app's answer to `asked`, with its body teed into the store when it may be kept.
    pub fn keep(&self, asked: Asked, res: Response<Body>) -> Response<Body> {
        match self.keeping(asked, res.status(), res.headers()) {
            Some(copy) => res.map(|body| Body::boxed(Tee::new(body, copy))),
            None => res,
        }
    }

    /// The copy to make of the app's answer to `asked` (its `status` and `headers`) as its
    /// body passes, when the store wants it and the rules let it be kept: the caller feeds
    /// it every body byte ([`Keeping::push`]) and, once the answer ended whole and reached
    /// the client, stores it ([`Keeping::finish`]).
    pub fn keeping(
        &self,
        asked: Asked,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Keeping> {
        let head = asked.keep?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_object) {
            return None;
        }
        let now = SystemTime::now();
        let verdict = rules::verdict(
            &rules::Request {
                method: &Method::GET,
                uri: &head.uri,
                headers: &head.headers,
            },
            &rules::Response { status, headers },
            now,
            self.grace,
        )?;
        let Head {
            primary,
            headers: asked_headers,
            ..
        } = *head;
        let (key, vary) = if verdict.vary.is_empty() {
            (primary, None)
        } else {
            let names: Arc<[HeaderName]> = verdict.vary.clone().into();
            let key = key::variant(&primary, &names, &asked_headers);
            (key, Some((primary, Slot::Vary(names))))
        };
        Some(Keeping {
            store: self.store.clone(),
            key,
            vary,
            status,
            headers: headers.clone(),
            received: now,
            verdict,
            max: usize::try_from(self.max_object).unwrap_or(usize::MAX),
            body: Vec::with_capacity(declared.map_or(0, |n| n as usize)),
        })
    }

    /// What the store holds now.
    pub fn held(&self) -> Held {
        let (answers, bytes) = self.store.held();
        Held {
            answers,
            bytes,
            max_bytes: self.max_bytes,
        }
    }

    /// The stored answer for this primary key and this request head, of any age.
    fn find(&self, primary: &[u8], head: &mut impl View) -> Option<Arc<Stored>> {
        match self.store.get(primary)? {
            Slot::Answer(stored) => Some(stored),
            Slot::Vary(names) => {
                let variant = key::variant(primary, &names, head.headers()?);
                match self.store.get(&variant)? {
                    Slot::Answer(stored) => Some(stored),
                    Slot::Vary(_) => None,
                }
            }
        }
    }
}

/// Whether an answer of `status` is the app failing (`ours`: writeguard's own answer, the
/// app gave none: refused, reset, or too slow).
fn failed(status: StatusCode, ours: bool) -> bool {
    match ours {
        true => matches!(status.as_u16(), 502 | 504),
        false => matches!(status.as_u16(), 500 | 502 | 503 | 504),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    use crate::http::BoxError;

    fn stale() -> Arc<Stale> {
        let cfg = StaleConfig {
            enabled: true,
            ..StaleConfig::default()
        };
        Stale::new(&cfg, Metrics::new()).expect("enabled")
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path)
            .header(header::HOST, "site")
            .body(())
            .unwrap()
    }

    /// An app answer whose body is these frames (an `Err` breaks it off there).
    fn answer(frames: Vec<Result<&'static str, &'static str>>) -> Response<Body> {
        let frames = frames.into_iter().map(|f| {
            f.map(|d| Frame::data(Bytes::from_static(d.as_bytes())))
                .map_err(BoxError::from)
        });
        Response::new(Body::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
    }

    fn held(stale: &Stale, path: &str) -> bool {
        let asked = stale.ask(&get(path)).expect("a GET");
        stale.stored(&asked, Because::AppFailed).is_some()
    }

    #[tokio::test]
    async fn only_answers_that_end_whole_are_kept() {
        let stale = stale();
        let whole = stale.answer(
            stale.ask(&get("/whole")).unwrap(),
            answer(vec![Ok("a"), Ok("b")]),
        );
        let body = whole.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ab");
        assert!(held(&stale, "/whole"));

        let broken = stale.answer(
            stale.ask(&get("/broken")).unwrap(),
            answer(vec![Ok("a"), Err("reset")]),
        );
        assert!(broken.into_body().collect().await.is_err());
        assert!(!held(&stale, "/broken"));

        // The client went away after the first piece: the rest was never read.
        let mut gone = stale
            .answer(
                stale.ask(&get("/gone")).unwrap(),
                answer(vec![Ok("a"), Ok("b")]),
            )
            .into_body();
        let first = gone.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        drop(gone);
        assert!(!held(&stale, "/gone"));
    }

    #[tokio::test]
    async fn a_failure_is_answered_from_the_store_and_other_answers_pass() {
        let stale = stale();
        let page = stale.answer(stale.ask(&get("/p")).unwrap(), answer(vec![Ok("page")]));
        page.into_body().collect().await.unwrap();
        for failure in [
            crate::http::Failure::UpstreamUnreachable,
            crate::http::Failure::UpstreamTimeout,
        ] {
            let res = stale.answer(stale.ask(&get("/p")).unwrap(), failure.response());
            assert_eq!(res.status(), 200, "{failure:?}");
            assert_eq!(res.headers()["cache-status"], "writeguard; hit; fwd=stale");
        }
        // Not a failure: writeguard's own 400, and an answer for a path with nothing held.
        let refused = crate::http::Failure::ClientBodyBroken.response();
        assert_eq!(
            stale
                .answer(stale.ask(&get("/p")).unwrap(), refused)
                .status(),
            400
        );
        let missing = crate::http::Failure::UpstreamUnreachable.response();
        assert_eq!(
            stale
                .answer(stale.ask(&get("/q")).unwrap(), missing)
                .status(),
            502
        );
        // Writes are not asked about.
        assert!(stale.ask(&Request::post("/p").body(()).unwrap()).is_none());
    }
}
