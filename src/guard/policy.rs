//! Which requests the guard stops: a pure, synchronous decision, cheap enough for every
//! request (no allocation).

use http::{header, HeaderMap, HeaderName, Method};

use crate::config::{GuardConfig, Upgrades};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// A guarded write: held until the release (then forwarded), or answered 503 when
    /// holding is off, full, or outlasted.
    Hold,
    /// A new tunnel (WebSocket, h2c upgrade) while guarded: answered 503 at once, since the
    /// writes it would carry are out of the guard's sight.
    Refuse,
}

/// Headers with which frameworks let a POST stand for another method.
const METHOD_OVERRIDES: [&[u8]; 3] = [
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
];

/// An override header, also spelt with underscores: CGI and PHP turn `X_HTTP_Method` and
/// `X-HTTP-Method` into the same variable, so the app sees both alike.
fn is_method_override(name: &HeaderName) -> bool {
    is_method_override_raw(name.as_str().as_bytes())
}

/// [`is_method_override`] for a name as the client spelt it (any case).
fn is_method_override_raw(name: &[u8]) -> bool {
    METHOD_OVERRIDES.iter().any(|o| {
        o.len() == name.len()
            && o.iter()
                .zip(name)
                .all(|(&a, &b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
    })
}

#[derive(Debug, Clone)]
pub struct Policy {
    methods: Vec<Method>,
    allow_paths: Vec<String>,
    pass_unknown_methods: bool,
    upgrades: Upgrades,
}

impl Policy {
    pub fn new(cfg: &GuardConfig) -> Self {
        Policy {
            methods: cfg.methods.clone(),
            allow_paths: cfg.allow_paths.clone(),
            pass_unknown_methods: cfg.pass_unknown_methods,
            upgrades: cfg.upgrades,
        }
    }

    /// The decision as if the guard were engaged. Anything but `Forward` is a request the
    /// guard watches, engaged or not: `wait: quiesced` counts those in flight.
    pub fn classify(&self, method: &Method, path: &str, headers: &HeaderMap) -> Decision {
        if self.upgrades == Upgrades::Refuse && is_upgrade(method, headers) {
            return Decision::Refuse;
        }
        let write = self.is_guarded_method(method)
            || headers
                .iter()
                .any(|(name, v)| is_method_override(name) && self.is_guarded_name(v.as_bytes()));
        self.of_write(write, path)
    }

    /// [`Policy::classify`] of a request head as raw `(name, value)` pairs (the native
    /// HTTP/1.1 engine's), for a request without `Upgrade` that is not `CONNECT`: the same
    /// rules, one decision for both engines.
    pub fn classify_raw<'h>(
        &self,
        method: &Method,
        path: &str,
        mut headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Decision {
        let write = self.is_guarded_method(method)
            || headers.any(|(name, v)| is_method_override_raw(name) && self.is_guarded_name(v));
        self.of_write(write, path)
    }

    fn of_write(&self, write: bool, path: &str) -> Decision {
        if write && !self.is_allowed_path(path) {
            Decision::Hold
        } else {
            Decision::Forward
        }
    }

    /// Method names are case-sensitive in HTTP, but applications and frameworks often are
    /// not: `post` is guarded like `POST`. Methods RFC 9110 does not define (`PROPPATCH`,
    /// `LOCK`, ...) are guarded too unless `pass_unknown_methods`.
    fn is_guarded_method(&self, method: &Method) -> bool {
        self.is_guarded_name(method.as_str().as_bytes())
    }

    fn is_guarded_name(&self, name: &[u8]) -> bool {
        let name = name.trim_ascii();
        if self
            .methods
            .iter()
            .any(|m| m.as_str().as_bytes().eq_ignore_ascii_case(name))
        {
            return true;
        }
        const DEFINED: [&[u8]; 8] = [
            b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
        ];
        !self.pass_unknown_methods && !DEFINED.iter().any(|d| d.eq_ignore_ascii_case(name))
    }

    /// Segment-wise prefix match against `allow_paths`. A path that could be read two ways
    /// (dot segments, encoded dots or slashes, empty segments, `;` parameters, backslashes)
    /// never matches: the request stays guarded.
    fn is_allowed_path(&self, path: &str) -> bool {
        if self.allow_paths.is_empty() || is_ambiguous(path) {
            return false;
        }
        self.allow_paths.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// A request that asks for a tunnel: HTTP/1.1 `Upgrade`, `CONNECT` (HTTP/2's extended
/// CONNECT carries WebSockets).
pub fn is_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::CONNECT || headers.contains_key(header::UPGRADE)
}

fn is_ambiguous(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || path.contains("//") || path.contains(['\\', ';']) {
        return true;
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return true;
    }
    b.windows(3).any(|w| {
        w[0] == b'%' && {
            let code = [w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()];
            matches!(&code, b"2E" | b"2F" | b"5C" | b"3B" | b"25")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(allow: &[&str]) -> Policy {
        Policy::new(&GuardConfig {
            methods: vec![Method::POST, Method::PATCH],
            retry_after: Duration::from_secs(30),
            max_engaged: Duration::from_secs(60),
            allow_paths: allow.iter().map(|s| s.to_string()).collect(),
            hold: Duration::ZERO,
            hold_max_requests: 0,
            release_concurrency: 1,
            page: None,
            pass_unknown_methods: false,
            upgrades: Upgrades::Refuse,
        })
    }

    fn m(s: &str) -> Method {
        Method::from_bytes(s.as_bytes()).unwrap()
    }

    fn classify(p: &Policy, method: &Method, path: &str) -> Decision {
        p.classify(method, path, &HeaderMap::new())
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, http::HeaderValue::from_static(value));
        h
    }

    #[test]
    fn extension_methods_are_guarded_unless_passed() {
        let p = policy(&[]);
        for name in ["PROPPATCH", "LOCK", "FOO", "patch"] {
            assert_eq!(classify(&p, &m(name), "/x"), Decision::Hold, "{name}");
        }
        for name in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert_eq!(classify(&p, &m(name), "/x"), Decision::Forward, "{name}");
        }
        let mut lax = p.clone();
        lax.pass_unknown_methods = true;
        assert_eq!(classify(&lax, &m("LOCK"), "/x"), Decision::Forward);
        assert_eq!(classify(&lax, &m("PATCH"), "/x"), Decision::Hold);
    }

    #[test]
    fn method_override_headers_count() {
        let p = policy(&[]);
        for name in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x_http_method_override",
            "x_http-method",
            "x-method_override",
        ] {
            let h = with(name, "patch");
            assert_eq!(p.classify(&Method::GET, "/x", &h), Decision::Hold, "{name}");
            let h = with(name, "GET");
            assert_eq!(
                p.classify(&Method::GET, "/x", &h),
                Decision::Forward,
                "{name}"
            );
        }
        let h = with("x-http-method-override", "POST");
        // Engaged or not, it is a write the guard watches.
        assert_eq!(p.classify(&Method::GET, "/x", &h), Decision::Hold);
        let h = with("upgrade", "websocket");
        assert_eq!(p.classify(&Method::GET, "/ws", &h), Decision::Refuse);
        assert_eq!(
            p.classify(&Method::GET, "/x", &HeaderMap::new()),
            Decision::Forward
        );
    }

    #[test]
    fn upgrades_are_refused_while_guarded_unless_passed() {
        let p = policy(&[]);
        let h = with("upgrade", "websocket");
        assert_eq!(p.classify(&Method::GET, "/ws", &h), Decision::Refuse);
        assert_eq!(classify(&p, &Method::CONNECT, "/"), Decision::Refuse);
        let mut pass = p.clone();
        pass.upgrades = Upgrades::Pass;
        assert_eq!(pass.classify(&Method::GET, "/ws", &h), Decision::Forward);
    }

    #[test]
    fn only_guarded_methods_while_guarded() {
        let p = policy(&[]);
        assert_eq!(classify(&p, &Method::POST, "/x"), Decision::Hold);
        assert_eq!(classify(&p, &m("post"), "/x"), Decision::Hold);
        assert_eq!(classify(&p, &Method::PATCH, "/x"), Decision::Hold);
        assert_eq!(classify(&p, &Method::GET, "/x"), Decision::Forward);
        assert_eq!(classify(&p, &Method::PUT, "/x"), Decision::Forward);
    }

    #[test]
    fn allow_paths_match_whole_segments() {
        let p = policy(&["/login", "/hooks/stripe"]);
        assert_eq!(classify(&p, &Method::POST, "/login"), Decision::Forward);
        assert_eq!(classify(&p, &Method::POST, "/login/sso"), Decision::Forward);
        assert_eq!(
            classify(&p, &Method::POST, "/hooks/stripe"),
            Decision::Forward
        );
        assert_eq!(classify(&p, &Method::POST, "/loginx"), Decision::Hold);
        assert_eq!(classify(&p, &Method::POST, "/hooks"), Decision::Hold);
    }

    #[test]
    fn path_tricks_stay_guarded() {
        let p = policy(&["/login"]);
        for path in [
            "/login/../orders",
            "/login/%2e%2e/orders",
            "/login/%2E%2E/orders",
            "//login",
            "/login%2forders",
            "/login;x=1",
            "/login/.",
            "/login\\..\\orders",
            "/login/%252e%252e/orders",
        ] {
            assert_eq!(classify(&p, &Method::POST, path), Decision::Hold, "{path}");
        }
    }
}
