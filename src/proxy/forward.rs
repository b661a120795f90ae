//! Forwarding to the upstream: the request as sent, plus the `X-Forwarded-*` headers, minus
//! the hop-by-hop ones; the response likewise.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::pool::{Pool, UpstreamError};
use crate::body::{full, Body};
use crate::config::ProxyConfig;
use crate::listener::Peer;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub struct Upstream {
    pool: Pool,
    scheme: Scheme,
    authority: Authority,
}

impl Upstream {
    pub fn new(cfg: &ProxyConfig) -> Self {
        let parts = cfg.upstream.clone().into_parts();
        Upstream {
            pool: Pool::new(&cfg.upstream, cfg.connect_timeout),
            scheme: parts.scheme.expect("config validated the scheme"),
            authority: parts.authority.expect("config validated the host"),
        }
    }

    pub async fn forward(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        match self.pool.send(self.prepare(req, peer)).await {
            Ok(mut res) => {
                strip_hop_by_hop(res.headers_mut());
                res.map(Either::Left)
            }
            Err(e) => {
                tracing::warn!(error = %e, "upstream request failed");
                error_response(&e)
            }
        }
    }

    /// Rewrites a client request into the request we send upstream.
    fn prepare(&self, mut req: Request<Incoming>, peer: &Peer) -> Request<Incoming> {
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
        if let Some(host) = authority_host {
            headers.insert(header::HOST, host);
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(host) = headers.get(header::HOST).cloned() {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
        }
        if let Some(ip) = &peer.ip_header {
            append_forwarded_for(headers, ip);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        *req.uri_mut() =
            Uri::from_parts(parts).expect("scheme, authority and path are valid parts");
        *req.version_mut() = Version::HTTP_11;
        req
    }
}

/// The one mapping from an upstream failure to what the client sees.
fn error_response(e: &UpstreamError) -> Response<Body> {
    let (status, text) = match e {
        UpstreamError::ConnectTimeout => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the application did not accept the connection in time\n",
        ),
        UpstreamError::Connect(_) => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the application is not reachable\n",
        ),
        UpstreamError::Http(_) => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the application did not answer\n",
        ),
    };
    let mut res = Response::new(full(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let value = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => {
            let mut v = Vec::with_capacity(prior.len() + 2 + ip.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            match HeaderValue::from_bytes(&v) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), value);
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
/// including those the `Connection` header names. One pass over the names when there are
/// none, which is the common case.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
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

#[cfg(test)]
mod tests {
    use super::*;

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
