//! A client's request head, parsed once with httparse and rewritten for the upstream in one
//! pass: the rules of `proxy::forward` (hop-by-hop headers and those `Connection` names
//! removed, `X-Forwarded-For/-Host/-Proto`, `proxy.upstream_host`, `underscore_headers`),
//! applied to the raw lines instead of a `HeaderMap`. Pure: bytes in, a verdict and the
//! upstream head out.
//!
//! Only a *plain* request is taken: HTTP/1.1, an origin-form target of the characters the
//! `http` crate accepts (so hyper would take it too), at most one `Content-Length` of digits
//! or `Transfer-Encoding: chunked` (not both), exactly one `Host`, no `Upgrade`, `Expect`
//! or framing alias, and no `Connection` token naming a framing header or `Host`.
//! Everything else is [`Parsed::Hand`]: the hyper path answers it as it does today.

use std::mem::MaybeUninit;

use http::Method;

/// Headers per request, as hyper's default.
pub const MAX_HEADERS: usize = 100;
/// `Connection` tokens a plain request may name.
const MAX_NAMED: usize = 8;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A plain request (its upstream head written when it is forwarded).
#[derive(Debug)]
pub struct Plain<T> {
    /// Bytes of the client's head.
    pub head_len: usize,
    pub framing: Framing,
    pub method: Method,
    /// The client asked to close after this exchange (`Connection: close`).
    pub close: bool,
    /// What the caller's `admit` said.
    pub admitted: T,
    /// `Content-Length` as sent (0 without), for the access line.
    pub bytes_in: u64,
}

#[derive(Debug)]
pub enum Parsed<T> {
    /// The head is not complete yet.
    Partial,
    Plain(Plain<T>),
    /// Not for this engine: the hyper path serves it (and every request after it).
    Hand,
}

/// What the rewrite adds or replaces, worked out once per connection.
pub struct Rewrite<'a> {
    pub drop_underscored: bool,
    /// `proxy.upstream_host`, sent as `Host`.
    pub host: Option<&'a [u8]>,
    /// The client's IP, appended to `X-Forwarded-For`.
    pub forwarded_for: Option<&'a [u8]>,
    /// `X-Forwarded-Proto` when the client sent none.
    pub proto: &'static [u8],
}

/// What was decided of a parsed request: whether its head goes upstream (and so is
/// rewritten) at all.
pub trait Decided {
    fn forwarded(&self) -> bool;
}

/// Every request forwarded (the differential fuzz targets, the tests).
impl Decided for () {
    fn forwarded(&self) -> bool {
        true
    }
}

/// Parses the head at the start of `buf`. When the request is plain, asks `admit` (method,
/// path, target, headers) what to do with it; when the answer is [`Decided::forwarded`], the
/// upstream head is appended to `out`.
pub fn parse<'b, T: Decided>(
    buf: &'b [u8],
    rw: &Rewrite<'_>,
    out: &mut Vec<u8>,
    admit: impl FnOnce(&Method, &str, &'b str, &[httparse::Header<'b>]) -> Option<T>,
) -> Parsed<T> {
    // Uninitialised: httparse writes the ones it fills (no 3.2 KiB cleared per request).
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hand,
    };
    // httparse takes a bare LF as a line end; the framing checker refuses it (and this
    // engine acts on nothing the checker refuses, but does not lean on that alone).
    if bare_lf(&buf[..head_len]) {
        return Parsed::Hand;
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hand;
    };
    let Some(path) = origin_form_path(target) else {
        return Parsed::Hand;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Hand;
    };
    if method == Method::CONNECT {
        return Parsed::Hand;
    }
    let headers: &[httparse::Header<'b>] = req.headers;
    let Some(facts) = Facts::of(headers) else {
        return Parsed::Hand;
    };
    let Some(admitted) = admit(&method, path, target, headers) else {
        return Parsed::Hand;
    };
    if admitted.forwarded() {
        write_head(out, method.as_str(), target, headers, &facts, rw);
    }
    Parsed::Plain(Plain {
        head_len,
        framing: match facts.length {
            _ if facts.chunked => Framing::Chunked,
            Some(n) => Framing::Length(n),
            None => Framing::Length(0),
        },
        method,
        close: facts.close,
        admitted,
        bytes_in: facts.length.unwrap_or(0),
    })
}

/// What one pass over the headers found.
struct Facts<'b> {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    host: Option<&'b [u8]>,
    forwarded_host: bool,
    forwarded_proto: bool,
    forwarded_for: bool,
    named: [&'b [u8]; MAX_NAMED],
    n_named: usize,
}

impl<'b> Facts<'b> {
    /// `None`: not a plain request.
    fn of(headers: &[httparse::Header<'b>]) -> Option<Facts<'b>> {
        let mut f = Facts {
            length: None,
            chunked: false,
            close: false,
            host: None,
            forwarded_host: false,
            forwarded_proto: false,
            forwarded_for: false,
            named: [b""; MAX_NAMED],
            n_named: 0,
        };
        for h in headers {
            let name = h.name.as_bytes();
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            if is(b"content-length") {
                if f.length.is_some() {
                    return None;
                }
                f.length = Some(digits(h.value)?);
            } else if is(b"transfer-encoding") {
                if f.chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return None;
                }
                f.chunked = true;
            } else if is(b"host") {
                if f.host.is_some() {
                    return None;
                }
                f.host = Some(h.value);
            } else if is(b"connection") {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
                    } else if [&b"content-length"[..], b"transfer-encoding", b"host"]
                        .iter()
                        .any(|n| token.eq_ignore_ascii_case(n))
                        || f.n_named == MAX_NAMED
                    {
                        return None;
                    } else {
                        f.named[f.n_named] = token;
                        f.n_named += 1;
                    }
                }
            } else if is(b"upgrade") || is(b"expect") || crate::framing::is_framing_alias(name) {
                return None;
            } else if is(b"x-forwarded-host") {
                f.forwarded_host = true;
            } else if is(b"x-forwarded-proto") {
                f.forwarded_proto = true;
            } else if is(b"x-forwarded-for") {
                f.forwarded_for = true;
            }
        }
        if (f.chunked && f.length.is_some()) || f.host.is_none() {
            return None;
        }
        Some(f)
    }

    fn named(&self, name: &[u8]) -> bool {
        self.named[..self.n_named]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), as `proxy::forward` lists them.
const HOP_BY_HOP: [&[u8]; 8] = [
    b"connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"keep-alive",
    b"proxy-connection",
];

pub(super) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

fn write_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[httparse::Header<'_>],
    f: &Facts<'_>,
    rw: &Rewrite<'_>,
) {
    let line = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for_done = false;
    for h in headers {
        let name = h.name.as_bytes();
        if is_hop_by_hop(name) || (f.n_named > 0 && f.named(name)) {
            continue;
        }
        if rw.drop_underscored && name.contains(&b'_') {
            continue;
        }
        if let (Some(host), true) = (rw.host, name.eq_ignore_ascii_case(b"host")) {
            line(out, b"host", host);
            continue;
        }
        if let (Some(ip), true) = (
            rw.forwarded_for,
            name.eq_ignore_ascii_case(b"x-forwarded-for"),
        ) {
            // As `HeaderMap`'s entry does: the first value, then the client's IP; any
            // later field of the same name is replaced by that one.
            if !forwarded_for_done {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
                out.extend_from_slice(ip);
                out.extend_from_slice(b"\r\n");
                forwarded_for_done = true;
            }
            continue;
        }
        line(out, name, h.value);
    }
    // A forwarding header the client named in `Connection` was removed: set like an absent one.
    if !f.forwarded_host || f.named(b"x-forwarded-host") {
        if let Some(host) = f.host {
            line(out, b"x-forwarded-host", host);
        }
    }
    if let (Some(ip), false) = (rw.forwarded_for, forwarded_for_done) {
        line(out, b"x-forwarded-for", ip);
    }
    if !f.forwarded_proto || f.named(b"x-forwarded-proto") {
        line(out, b"x-forwarded-proto", rw.proto);
    }
    if f.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The path of an origin-form target whose every byte `http::uri::PathAndQuery` accepts as
/// itself (no fragment, no byte above 0x7e: those go the hyper way).
fn origin_form_path(target: &str) -> Option<&str> {
    let b = target.as_bytes();
    if b.first() != Some(&b'/') || b.len() >= usize::from(u16::MAX) - 1 {
        return None;
    }
    let mut query = None;
    for (i, &c) in b.iter().enumerate() {
        let ok = match (query.is_some(), c) {
            (false, b'?') => {
                query = Some(i);
                true
            }
            (false, c) => {
                matches!(c, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E | b'"' | b'{' | b'}')
            }
            (true, c) => matches!(c, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E),
        };
        if !ok || c == b'#' {
            return None;
        }
    }
    Some(&target[..query.unwrap_or(b.len())])
}

/// Whether some LF in `head` does not follow a CR.
fn bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// A `Content-Length` value: 1 to 19 digits (the framing checker's rule).
fn digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Rewrite<'static> = Rewrite {
        drop_underscored: false,
        host: None,
        forwarded_for: Some(b"10.0.0.9"),
        proto: b"http",
    };

    fn run(head: &[u8], rw: &Rewrite<'_>) -> (Parsed<()>, String) {
        let mut out = Vec::new();
        let p = parse(head, rw, &mut out, |_, _, _, _| Some(()));
        (p, String::from_utf8(out).unwrap())
    }

    #[test]
    fn rewrites_like_the_hyper_path() {
        let head = b"POST /a?b=1 HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n";
        let (p, out) = run(head, &RW);
        let Parsed::Plain(p) = p else { panic!() };
        assert_eq!(p.head_len, head.len());
        assert_eq!(p.framing, Framing::Chunked);
        assert_eq!(
            out,
            "POST /a?b=1 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Kept: yes\r\nx-forwarded-host: app.test\r\nx-forwarded-proto: http\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn upstream_host_and_underscores() {
        let rw = Rewrite {
            drop_underscored: true,
            host: Some(b"internal:8080"),
            forwarded_for: None,
            proto: b"https",
        };
        let head =
            b"GET / HTTP/1.1\r\nhost: public.test\r\nx_user: admin\r\ncontent-length: 0\r\n\r\n";
        let (p, out) = run(head, &rw);
        assert!(matches!(
            p,
            Parsed::Plain(Plain {
                framing: Framing::Length(0),
                ..
            })
        ));
        assert_eq!(out, "GET / HTTP/1.1\r\nhost: internal:8080\r\ncontent-length: 0\r\nx-forwarded-host: public.test\r\nx-forwarded-proto: https\r\n\r\n");
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for head in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n\r\n",
            b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        ] {
            let (p, out) = run(head, &RW);
            assert!(matches!(p, Parsed::Hand), "{}", String::from_utf8_lossy(head));
            assert!(out.is_empty());
        }
        assert!(matches!(
            run(b"GET / HTTP/1.1\r\nHo", &RW).0,
            Parsed::Partial
        ));
    }
}
