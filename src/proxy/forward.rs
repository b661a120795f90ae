//! Forwarding to the upstream: the request as sent, plus the `X-Forwarded-*` headers, minus
//! the hop-by-hop ones; the response likewise.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body as _, Incoming};

use hyper_util::rt::TokioIo;

use crate::config::{ProxyConfig, UnderscoreHeaders};
use crate::deadline;
use crate::http::{Body, Failure};
use crate::listener::Connection;
use crate::metrics::Metrics;
use crate::traffic::InFlight;
use crate::upstream::{Pool, PooledBody, SendError, TimedBody, UpBody, UpstreamError};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub struct Upstream {
    pool: Pool,
    metrics: Arc<Metrics>,
    body_idle_timeout: Duration,
    body_timeout: Duration,
    timeout: Duration,
    /// `proxy.underscore_headers = "drop"`.
    drop_underscored: bool,
    /// `proxy.upstream_host`: the `Host` sent instead of the client's.
    host: Option<HeaderValue>,
}

impl Upstream {
    pub fn new(cfg: &ProxyConfig, metrics: Arc<Metrics>) -> Self {
        Upstream {
            pool: Pool::new(
                &cfg.upstream,
                cfg.upstream_host.as_ref().map(|h| h.host()),
                cfg.connect_timeout,
            ),
            metrics,
            body_idle_timeout: cfg.body_idle_timeout,
            body_timeout: cfg.body_timeout,
            timeout: cfg.upstream_timeout,
            drop_underscored: cfg.underscore_headers == UnderscoreHeaders::Drop,
            host: cfg.upstream_host.as_ref().map(|h| {
                HeaderValue::from_str(h.as_str()).expect("an authority is a header value")
            }),
        }
    }

    /// One send, bounded by the upstream timeout: the upstream must start its answer within
    /// `timeout` of the request's last byte (a slow upload is the body timeouts' business).
    async fn send(&self, req: Request<UpBody>) -> Result<Response<PooledBody>, SendError> {
        let progress = match req.body() {
            Either::Left(body) => body.progress(),
            Either::Right(_) => None,
        };
        let timed_out = || SendError {
            error: UpstreamError::Timeout,
            unsent: None,
        };
        let Some(progress) = progress else {
            return tokio::time::timeout(self.timeout, self.pool.send(req))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
        };
        let send = self.pool.send(req);
        tokio::pin!(send);
        let mut deadline = deadline::after_tokio(tokio::time::Instant::now(), self.timeout);
        loop {
            tokio::select! {
                biased;
                res = &mut send => return res,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = tokio::time::Instant::now();
            deadline = match progress.sent() {
                Some(&at) => match deadline::after_tokio(at, self.timeout) {
                    due if due <= now => return Err(timed_out()),
                    due => due,
                },
                None => deadline::after_tokio(now, self.timeout),
            };
        }
    }

    /// A request that asks to switch protocols (WebSocket): forwarded with its `Upgrade`
    /// header; on `101 Switching Protocols` both connections become one byte tunnel. A
    /// guarded `write` counts until the tunnel closes.
    pub async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        client: &Connection,
        write: Option<InFlight>,
    ) -> Response<Body> {
        let client_side = hyper::upgrade::on(&mut req);
        let protocol = req.headers().get(header::UPGRADE).cloned();
        let mut req = self.prepare(req, client, write);
        let progress = match req.body() {
            Either::Left(body) => body.progress(),
            Either::Right(_) => None,
        };
        if let Some(protocol) = protocol {
            upgrade_headers(req.headers_mut(), protocol);
        }
        let mut res = match self.send(req).await {
            Ok(res) => res,
            Err(err) => {
                tracing::warn!(error = %err.error, "upstream upgrade request failed");
                return Failure::of_upstream(&err.error).response();
            }
        };
        let protocol = res.headers().get(header::UPGRADE).cloned();
        strip_hop_by_hop(res.headers_mut());
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(protocol) = protocol else {
                return Failure::of_upstream(&UpstreamError::Protocol("101 without Upgrade"))
                    .response();
            };
            upgrade_headers(res.headers_mut(), protocol);
            let upstream_side = hyper::upgrade::on(&mut res);
            tokio::spawn(async move {
                let _progress = progress;
                match tokio::try_join!(client_side, upstream_side) {
                    Ok((client, upstream)) => {
                        let (mut client, mut upstream) =
                            (TokioIo::new(client), TokioIo::new(upstream));
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(error = %e, "tunnel closed with an error");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                }
            });
        }
        res.map(Body::Upstream)
    }

    /// Sends the request upstream. Until `retry_until`, a request none of which reached the
    /// upstream (connection refused, pooled connection closed) is tried again with backoff;
    /// so is an idempotent request without a body whose connection was reset.
    /// A guarded `write` counts in flight until its body is all sent and its answer all read
    /// or dropped.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        client: &Connection,
        retry_until: Option<Instant>,
        write: Option<InFlight>,
    ) -> Response<Body> {
        let replay = match retry_until {
            Some(_) if is_idempotent(req.method()) && req.body().is_end_stream() => {
                Some(Replay::of(&req))
            }
            _ => None,
        };
        let mut req = self.prepare(req, client, write);
        // Only for a request that may be sent again without its body: the answer to the
        // replay keeps the write counted.
        let progress = match (&replay, req.body()) {
            (Some(_), Either::Left(body)) => body.progress(),
            _ => None,
        };
        let mut backoff = Duration::from_millis(25);
        let mut attempts = 1u32;
        loop {
            let sent = Instant::now();
            let err = match self.send(req).await {
                Ok(mut res) => {
                    self.metrics.upstream(sent.elapsed());
                    strip_hop_by_hop(res.headers_mut());
                    res.body_mut().keep(progress);
                    return res.map(Body::Upstream);
                }
                Err(err) => err,
            };
            // A request the upstream took but did not answer in time is not sent again.
            let replayable = !matches!(err.error, UpstreamError::Timeout);
            let again = err.unsent.map(|r| *r).or_else(|| {
                replay
                    .as_ref()
                    .filter(|_| replayable)
                    .map(|r| r.build(self, client))
            });
            match (again, retry_until) {
                (Some(next), Some(until)) if deadline::after(Instant::now(), backoff) < until => {
                    tracing::debug!(error = %err.error, attempts, "upstream failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    attempts += 1;
                    req = next;
                }
                _ => {
                    if let Some(e) = err.error.client_body() {
                        tracing::info!(error = %e, "client request body failed; not the upstream's fault");
                    } else {
                        tracing::warn!(error = %err.error, attempts, "upstream request failed");
                    }
                    return Failure::of_upstream(&err.error).response();
                }
            }
        }
    }

    /// Rewrites a client request into the request we send upstream.
    fn prepare(
        &self,
        req: Request<Incoming>,
        client: &Connection,
        write: Option<InFlight>,
    ) -> Request<UpBody> {
        // A body of unknown length (chunked from the client): hyper's client frames it
        // chunked for most methods, but sends GET and HEAD bodies only when told to.
        let chunked = !req.body().is_end_stream() && req.body().size_hint().exact().is_none();
        let mut req = req.map(|body| {
            Either::Left(TimedBody::new(
                body,
                self.body_idle_timeout,
                self.body_timeout,
                write,
            ))
        });
        self.rewrite(&mut req, client);
        if chunked {
            req.headers_mut().insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        req
    }

    fn rewrite(&self, req: &mut Request<UpBody>, client: &Connection) {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/2 clients send :authority instead of Host.
        let authority_host = match req.headers().contains_key(header::HOST) {
            true => None,
            false => req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        if self.drop_underscored {
            drop_underscored(headers);
        }
        let host = match authority_host {
            Some(host) => {
                headers.insert(header::HOST, host.clone());
                Some(host)
            }
            None => headers.get(header::HOST).cloned(),
        };
        // Entries: one lookup each for "set when absent".
        if let (Entry::Vacant(e), Some(host)) = (headers.entry(&X_FORWARDED_HOST), host) {
            e.insert(host);
        }
        if let Some(host) = &self.host {
            headers.insert(header::HOST, host.clone());
        }
        if let Some(ip) = &client.ip_header {
            append_forwarded_for(headers, ip);
        }
        headers
            .entry(&X_FORWARDED_PROTO)
            .or_insert(HeaderValue::from_static(match client.tls {
                true => "https",
                false => "http",
            }));
        // Origin-form request line (`GET /path?query HTTP/1.1`): the client connection sends
        // the URI as it is, and origin servers expect this form (RFC 9112 §3.2.1).
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
    }
}

/// HTTP's idempotent methods (RFC 9110 §9.2.2): safe to send again after a reset.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The head of a bodiless idempotent request, kept to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn of(req: &Request<Incoming>) -> Self {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    fn build(&self, upstream: &Upstream, client: &Connection) -> Request<UpBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        upstream.rewrite(&mut req, client);
        req
    }
}

fn upgrade_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            e.insert(ip.clone());
        }
        Entry::Occupied(mut e) => {
            let prior = e.get();
            let mut v = Vec::with_capacity(prior.len() + 2 + ip.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                e.insert(v);
            }
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes the headers that belong to one connection, not to the message (RFC 9110 §7.6.1),
/// including those the `Connection` header names. The common cases cost one pass over the
/// names (no hop-by-hop header) or one removal (`Connection: keep-alive` or `close`).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    headers.remove(header::CONNECTION);
    for name in named {
        headers.remove(name);
    }
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// Removes every header whose name has a `_` (`proxy.underscore_headers = "drop"`): apps
/// behind CGI-style gateways read `X_User` and `X-User` alike, so a client could shadow a
/// header set or checked in front. One pass over the names when there is none.
fn drop_underscored(headers: &mut HeaderMap) {
    let underscored = |name: &HeaderName| name.as_str().contains('_');
    if !headers.keys().any(underscored) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| underscored(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscored_headers_are_dropped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert("x_user", HeaderValue::from_static("admin"));
        h.append("x_user", HeaderValue::from_static("root"));
        h.insert("_", HeaderValue::from_static("1"));
        h.insert("x-user", HeaderValue::from_static("alice"));
        drop_underscored(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-user"], "alice");
    }

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &HeaderValue::from_static("10.0.0.1"));
        append_forwarded_for(&mut h, &HeaderValue::from_static("::1"));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, ::1");
    }
}
