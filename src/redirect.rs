//! The HTTPS redirect listener (`proxy.redirect_listen`): every request, whatever its method,
//! is answered `308 Permanent Redirect` to the same host and path over HTTPS. No guard, no
//! upstream: nothing is forwarded from a plain-HTTP port.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::respond::text;
use crate::http::Body;
use crate::listener::{Connection, Handler};
use crate::metrics::Outcome;

pub struct Redirect {
    /// `:port` after the host, or nothing for 443.
    port: String,
}

impl Redirect {
    /// Redirects to HTTPS on `port`.
    pub fn new(port: u16) -> Self {
        Redirect {
            port: match port {
                443 => String::new(),
                port => format!(":{port}"),
            },
        }
    }

    /// `https://host[:port]/path?query` for `req`; None without a usable `Host`.
    fn location<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let host = match req.headers().get(header::HOST) {
            Some(host) => host.to_str().ok()?.parse::<Authority>().ok()?,
            None => req.uri().authority()?.clone(),
        };
        if host.host().is_empty() || host.as_str().contains('@') {
            return None;
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let path = if path.starts_with('/') { path } else { "/" };
        HeaderValue::try_from(format!("https://{}{}{path}", host.host(), self.port)).ok()
    }
}

impl Handler for Redirect {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        _conn: &Arc<Connection>,
    ) -> (Outcome, Response<Body>) {
        let Some(location) = self.location(&req) else {
            let res = text(
                StatusCode::BAD_REQUEST,
                "this port redirects to HTTPS, and the request has no usable Host\n",
                true,
            );
            return (Outcome::Redirect, res);
        };
        let mut res = text(
            StatusCode::PERMANENT_REDIRECT,
            format!("moved to {}\n", location.to_str().unwrap_or_default()),
            false,
        );
        res.headers_mut().insert(header::LOCATION, location);
        (Outcome::Redirect, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(port: u16, host: Option<&str>, uri: &str) -> Option<String> {
        let mut req = Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        Redirect::new(port)
            .location(&req.body(()).expect("request"))
            .map(|v| v.to_str().expect("ASCII").to_owned())
    }

    #[test]
    fn same_host_and_path_over_https() {
        assert_eq!(
            location(443, Some("shop.example:80"), "/cart?id=1").as_deref(),
            Some("https://shop.example/cart?id=1")
        );
        assert_eq!(
            location(8443, Some("[::1]:8080"), "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(
            location(443, None, "http://shop.example/a").as_deref(),
            Some("https://shop.example/a")
        );
        assert_eq!(location(443, None, "/a"), None);
        assert_eq!(location(443, Some("evil@shop.example"), "/a"), None);
        assert_eq!(location(443, Some("a b"), "/a"), None);
    }
}
