//! The upstream's response head, parsed with httparse and rewritten for the client: the
//! hop-by-hop headers (and those its `Connection` names) removed, the body re-framed (a
//! length stays a length; chunked and read-until-close become chunked for the client), as
//! hyper's client and server do between them. Pure: bytes in, the client's head out.

use std::mem::MaybeUninit;

use super::request::MAX_HEADERS;

/// How the upstream frames the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes (no length, not chunked).
    Close,
}

#[derive(Debug)]
pub struct Head {
    pub head_len: usize,
    pub status: u16,
    pub body: Body,
    /// The upstream keeps the connection open after this response.
    pub reusable: bool,
}

#[derive(Debug)]
pub enum Parsed {
    Partial,
    /// A 1xx (not 101) of this many bytes, to skip.
    Interim(usize),
    Head(Head),
    /// Not a response we can frame: 502.
    Bad(&'static str),
}

/// Parses the head at the start of `buf`, the answer to a request that was `HEAD` if
/// `head_request`; appends the client's head to `out` (`close`: with `Connection: close`).
pub fn parse(buf: &[u8], head_request: bool, close: bool, out: &mut Vec<u8>) -> Parsed {
    // Uninitialised: httparse writes the ones it fills (no 3.2 KiB cleared per answer).
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let head_len = match config.parse_response_with_uninit_headers(&mut res, buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad("malformed response head"),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Parsed::Bad("malformed response head");
    };
    match status {
        // Three digits, but not a status (hyper refuses them too): "020" would go out as "20".
        0..=99 => return Parsed::Bad("invalid status code"),
        101 => return Parsed::Bad("101 without an upgrade asked"),
        100..=199 => return Parsed::Interim(head_len),
        _ => {}
    }
    let headers: &[httparse::Header<'_>] = res.headers;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut upstream_close = version == 0;
    let mut dated = false;
    let mut named: [&[u8]; 8] = [b""; 8];
    let mut n_named = 0;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = digits(h.value) else {
                return Parsed::Bad("invalid Content-Length");
            };
            if length.is_some_and(|l| l != n) {
                return Parsed::Bad("conflicting Content-Length");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Parsed::Bad("Transfer-Encoding other than chunked");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            dated = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    upstream_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    upstream_close &= version != 0;
                } else if !token.is_empty() {
                    if n_named == named.len() {
                        return Parsed::Bad("too many Connection tokens");
                    }
                    named[n_named] = token;
                    n_named += 1;
                }
            }
        }
    }
    if chunked && version == 0 {
        // HTTP/1.0 has no chunked coding; hyper refuses it as the checker does on requests.
        return Parsed::Bad("Transfer-Encoding in an HTTP/1.0 answer");
    }
    let no_body = head_request || status == 204 || status == 304;
    let body = match () {
        _ if no_body => Body::None,
        _ if chunked => Body::Chunked,
        _ => match length {
            Some(0) => Body::None,
            Some(n) => Body::Length(n),
            None => Body::Close,
        },
    };
    // HTTP/1.0 keeps a connection only when it says keep-alive; a 1.0 upstream is rare.
    let reusable = !upstream_close && version == 1 && body != Body::Close;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa(u64::from(status), &mut [0u8; 20]));
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        let name = h.name.as_bytes();
        if super::request::is_hop_by_hop(name)
            || named[..n_named]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        // Re-framed below, except where no body follows (HEAD, 304: the length is news).
        if name.eq_ignore_ascii_case(b"content-length") && !no_body {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Body::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Body::Chunked | Body::Close => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Body::None if !no_body && status != 204 => out.extend_from_slice(b"content-length: 0\r\n"),
        Body::None => {}
    }
    if !dated {
        super::date::append(out);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Head(Head {
        head_len,
        status,
        body,
        reusable,
    })
}

fn digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// `n` in decimal, written at the end of `buf`.
pub(super) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(head: &[u8], head_request: bool) -> (Parsed, String) {
        let mut out = Vec::new();
        let p = parse(head, head_request, false, &mut out);
        (p, String::from_utf8(out).unwrap())
    }

    #[test]
    fn frames_and_strips() {
        let (p, out) = run(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\nhello", false);
        let Parsed::Head(h) = p else { panic!() };
        assert_eq!((h.status, h.body, h.reusable), (200, Body::Length(5), true));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nX-App: 1\r\ncontent-length: 5\r\ndate: "));
        let (p, out) = run(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert!(matches!(
            p,
            Parsed::Head(Head {
                body: Body::Chunked,
                reusable: true,
                ..
            })
        ));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: "));
        let (p, _) = run(b"HTTP/1.0 200 OK\r\n\r\n", false);
        assert!(matches!(
            p,
            Parsed::Head(Head {
                body: Body::Close,
                reusable: false,
                ..
            })
        ));
        let (p, out) = run(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert!(matches!(
            p,
            Parsed::Head(Head {
                body: Body::None,
                ..
            })
        ));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ndate: "));
        assert!(matches!(
            run(b"HTTP/1.1 100 Continue\r\n\r\n", false).0,
            Parsed::Interim(25)
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 020 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
        ] {
            assert!(matches!(run(bad, false).0, Parsed::Bad(_)), "{bad:?}");
        }
    }
}
