//! Which answers may be stored, and for how long each may be served once the app fails.
//! Storability and freshness are RFC 9111's for a shared cache, decided by
//! `http-cache-semantics`; on top, what a proxy that is not meant to be a cache keeps out:
//! anything with `Set-Cookie`, answers to requests carrying credentials unless the answer
//! says `public` or `s-maxage`, statuses other than 200, 301 and 404, `Vary: *`, and
//! answers larger than `stale.max_object`. Pure: heads and times in, a verdict out.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike, ResponseLike};

use super::key;

/// What is asked of the app, as far as storing its answer goes.
pub(super) struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// The app's answer head.
pub(super) struct Response<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
}

/// A storable answer: how fresh it is and how long it may be served past that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Its age when received (the `Age` it came with, plus time since its `Date`).
    pub age: Duration,
    /// How long it stays fresh from now.
    pub fresh_for: Duration,
    /// How long past its freshness it may be served when the app fails.
    pub stale_for: Duration,
    /// `public` or `s-maxage`: may be served to a request carrying `Cookie` or
    /// `Authorization`.
    pub shared: bool,
    /// The headers its `Vary` names (sorted; empty without `Vary`).
    pub vary: Vec<HeaderName>,
}

/// The `Cache-Control` directives this module reads (of the answer).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Directives {
    public: bool,
    s_maxage: bool,
    /// `no-cache`, `must-revalidate` or `proxy-revalidate`: never served stale.
    revalidate: bool,
    stale_if_error: Option<u64>,
}

impl Directives {
    fn of(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable directives: assume the strictest.
                d.revalidate = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let is = |s: &str| name.eq_ignore_ascii_case(s);
                if is("public") {
                    d.public = true;
                } else if is("s-maxage") {
                    d.s_maxage = true;
                } else if is("no-cache") || is("must-revalidate") || is("proxy-revalidate") {
                    d.revalidate = true;
                } else if is("stale-if-error") {
                    // An unreadable value grants nothing.
                    d.stale_if_error = arg.and_then(|a| a.parse().ok()).or(Some(0));
                }
            }
        }
        d
    }
}

/// Whether a request carries credentials that make an answer personal unless it says
/// otherwise.
pub(super) fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

/// Whether a header line of this name is one [`has_credentials`] looks for.
pub(super) fn is_credential(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(header::AUTHORIZATION.as_str().as_bytes())
        || name.eq_ignore_ascii_case(header::COOKIE.as_str().as_bytes())
}

/// The verdict on storing `res` as the answer to `req`, received `now`; `grace` is
/// `stale.grace`. `None`: not stored.
pub(super) fn verdict(
    req: &Request<'_>,
    res: &Response<'_>,
    now: SystemTime,
    grace: Duration,
) -> Option<Verdict> {
    if req.method != Method::GET
        || !matches!(res.status.as_u16(), 200 | 301 | 404)
        || res.headers.contains_key(header::SET_COOKIE)
    {
        return None;
    }
    let vary = key::vary_names(res.headers)?;
    let d = Directives::of(res.headers);
    let shared = d.public || d.s_maxage;
    if has_credentials(req.headers) && !shared {
        return None;
    }
    let policy = CachePolicy::new_options(req, res, now, CacheOptions::default());
    if !policy.is_storable() {
        return None;
    }
    // RFC 9111 §4.2.4: never stale past no-cache, must-revalidate or proxy-revalidate, nor
    // past s-maxage (§5.2.2.10: it implies proxy-revalidate for a shared cache) unless the
    // app allows it for errors (RFC 5861 §4).
    let stale_for = match (d.revalidate, d.stale_if_error, d.s_maxage) {
        (true, _, _) => Duration::ZERO,
        (false, Some(secs), _) => Duration::from_secs(secs),
        (false, None, true) => Duration::ZERO,
        (false, None, false) => grace,
    };
    let fresh_for = policy.time_to_live(now);
    if fresh_for.is_zero() && stale_for.is_zero() {
        // It could never be served.
        return None;
    }
    Some(Verdict {
        age: policy.age(now),
        fresh_for,
        stale_for,
        shared,
        vary,
    })
}

impl RequestLike for Request<'_> {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &Uri) -> bool {
        self.uri == other
    }
    fn method(&self) -> &Method {
        self.method
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

impl ResponseLike for Response<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const HOUR: Duration = Duration::from_secs(3600);

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn judge(
        method: Method,
        req: &[(&'static str, &'static str)],
        status: u16,
        res: &[(&'static str, &'static str)],
    ) -> Option<Verdict> {
        let uri: Uri = "/page".parse().unwrap();
        let (req, res) = (map(req), map(res));
        verdict(
            &Request {
                method: &method,
                uri: &uri,
                headers: &req,
            },
            &Response {
                status: StatusCode::from_u16(status).unwrap(),
                headers: &res,
            },
            SystemTime::now(),
            HOUR,
        )
    }

    fn get(status: u16, res: &[(&'static str, &'static str)]) -> Option<Verdict> {
        judge(Method::GET, &[("host", "a")], status, res)
    }

    #[test]
    fn plain_pages_are_kept_for_the_grace_and_fresh_ones_for_longer() {
        let plain = get(200, &[]).expect("a 200 is heuristically cacheable");
        assert_eq!((plain.fresh_for, plain.stale_for), (Duration::ZERO, HOUR));
        let fresh = get(200, &[("cache-control", "max-age=60")]).unwrap();
        assert_eq!(fresh.fresh_for, Duration::from_secs(60));
        assert_eq!(fresh.stale_for, HOUR);
        assert!(get(404, &[]).is_some());
        assert!(get(301, &[]).is_some());
    }

    #[test]
    fn what_is_never_stored() {
        for (status, res) in [
            (200, vec![("cache-control", "private")]),
            (200, vec![("cache-control", "no-store")]),
            (200, vec![("cache-control", "no-cache")]),
            (200, vec![("cache-control", "max-age=0, must-revalidate")]),
            (
                200,
                vec![("set-cookie", "a=1"), ("cache-control", "public")],
            ),
            (200, vec![("vary", "*")]),
            (500, vec![]),
            (206, vec![]),
            (302, vec![("cache-control", "max-age=60")]),
        ] {
            assert_eq!(get(status, &res), None, "{status} {res:?}");
        }
        assert_eq!(judge(Method::HEAD, &[("host", "a")], 200, &[]), None);
        assert_eq!(judge(Method::POST, &[("host", "a")], 200, &[]), None);
    }

    #[test]
    fn credentials_need_public_or_s_maxage() {
        for creds in [("authorization", "Bearer x"), ("cookie", "sid=1")] {
            assert_eq!(judge(Method::GET, &[creds], 200, &[]), None);
            let public = judge(Method::GET, &[creds], 200, &[("cache-control", "public")]);
            assert!(public.unwrap().shared);
            assert!(judge(
                Method::GET,
                &[creds],
                200,
                &[("cache-control", "s-maxage=9")]
            )
            .is_some());
        }
    }

    #[test]
    fn stale_if_error_and_revalidation_set_how_long_past_freshness() {
        let sie = get(200, &[("cache-control", "max-age=5, stale-if-error=30")]).unwrap();
        assert_eq!(sie.stale_for, Duration::from_secs(30));
        let must = get(200, &[("cache-control", "max-age=60, must-revalidate")]).unwrap();
        assert_eq!(
            (must.fresh_for, must.stale_for),
            (Duration::from_secs(60), Duration::ZERO)
        );
        let s = get(200, &[("cache-control", "s-maxage=60")]).unwrap();
        assert_eq!(s.stale_for, Duration::ZERO);
        let s = get(200, &[("cache-control", "s-maxage=60, stale-if-error=600")]).unwrap();
        assert_eq!(s.stale_for, Duration::from_secs(600));
        // The crate treats proxy-revalidate as never fresh in a shared cache: never served.
        let proxy = get(
            200,
            &[(
                "cache-control",
                "max-age=60, proxy-revalidate, stale-if-error=9",
            )],
        );
        assert_eq!(proxy, None);
    }

    #[test]
    fn age_counts_what_the_answer_came_with() {
        let v = get(200, &[("cache-control", "max-age=60"), ("age", "20")]).unwrap();
        assert_eq!(v.age, Duration::from_secs(20));
        assert_eq!(v.fresh_for, Duration::from_secs(40));
    }
}
