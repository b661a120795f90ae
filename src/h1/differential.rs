//! For the differential fuzz targets. `h1_boundaries`: where the framing checker and the
//! native engine's parsers (httparse heads, [`super::request`]'s framing, the chunked
//! decoder: the checker's own, fed in other pieces) each say the requests of a byte stream
//! end; the engine is safe when, for every request it would act on, both agree, and it acts
//! on none past a point where the checker stopped. `h1_hyper`: the requests the engine would
//! forward ([`native_messages`]). `h1_response`: the answer the engine would make of an
//! upstream's bytes ([`native_answer`]), which hyper's client must read the same. Pure, no
//! I/O.

use crate::framing::chunked::Decoder;
use crate::framing::{Checker, Scan};

use super::request::{self, Framing, Parsed, Rewrite};
use super::response;

/// Where the checker says each request of `input` ends, fed one more byte at a time (as a
/// trickling client would), until it stops or the input ends.
pub fn checker_boundaries(input: &[u8], max_head: usize) -> Vec<usize> {
    let mut checker = Checker::new(max_head, false);
    let mut from = 0;
    let mut ends = Vec::new();
    for end in 1..=input.len() {
        match checker.scan(&input[from..end]) {
            Scan::Checking { settled } => {
                from += settled;
                if from == end && checker.between_requests() {
                    ends.push(end);
                }
            }
            Scan::Unchecked { .. } | Scan::Refused { .. } => break,
        }
    }
    ends
}

/// Where the native engine says each request of `input` ends, for the requests it would
/// forward itself (it stops at the first one it would hand to hyper). Each head is parsed
/// from all the bytes there are (httparse is not incremental); bodies are decoded across
/// `split` (the decoder must not care where reads end).
pub fn native_boundaries(input: &[u8], split: usize) -> Vec<usize> {
    let rw = Rewrite {
        drop_underscored: false,
        host: None,
        forwarded_for: Some(b"127.0.0.1"),
        proto: b"http",
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut ends = Vec::new();
    while at < input.len() {
        out.clear();
        let plain = match request::parse(&input[at..], &rw, &mut out, |_, _, _, _| Some(())) {
            Parsed::Plain(p) => p,
            Parsed::Partial | Parsed::Hand => break,
        };
        let body = at + plain.head_len;
        let end = match plain.framing {
            Framing::Length(n) => match body.checked_add(n as usize) {
                Some(end) if end <= input.len() && n <= input.len() as u64 => end,
                _ => break,
            },
            Framing::Chunked => {
                let mut decoder = Decoder::default();
                let cut = (body + split).min(input.len());
                let mut used = 0;
                let mut ok = true;
                for piece in [&input[body..cut], &input[cut..]] {
                    if decoder.done() {
                        break;
                    }
                    match decoder.decode(piece, |_| {}) {
                        Ok(d) => used += d.used,
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok || !decoder.done() {
                    break;
                }
                body + used
            }
        };
        ends.push(end);
        at = end;
    }
    ends
}

/// The requests the native engine would forward from `input`, as the upstream would get
/// them: method, target, and the body's bytes (chunked bodies decoded).
pub fn native_messages(input: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let rw = Rewrite {
        drop_underscored: false,
        host: None,
        forwarded_for: None,
        proto: b"http",
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut messages = Vec::new();
    while at < input.len() {
        out.clear();
        let mut target = String::new();
        let parsed = request::parse(&input[at..], &rw, &mut out, |_, _, _, _| Some(()));
        let Parsed::Plain(plain) = parsed else { break };
        // The target as rewritten: the request line of `out`.
        if let Some(line) = out.split(|&b| b == b'\r').next() {
            let mut parts = line.split(|&b| b == b' ');
            parts.next();
            target = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
        }
        let body_at = at + plain.head_len;
        let (body, end) = match plain.framing {
            Framing::Length(n) => {
                match usize::try_from(n).ok().and_then(|n| body_at.checked_add(n)) {
                    Some(end) if end <= input.len() => (input[body_at..end].to_vec(), end),
                    _ => break,
                }
            }
            Framing::Chunked => {
                let mut decoder = Decoder::default();
                let mut body = Vec::new();
                match decoder.decode(&input[body_at..], |d| body.extend_from_slice(d)) {
                    Ok(d) if d.done => (body, body_at + d.used),
                    _ => break,
                }
            }
        };
        messages.push((plain.method.as_str().to_owned(), target, body));
        if plain.close {
            // The engine closes the connection after its answer: nothing more is read.
            break;
        }
        at = end;
    }
    messages
}

/// The answer the native engine would give the client from the upstream's bytes `input`
/// (the answer to a `HEAD` when `head_request`), when it frames one completely: its status
/// and body (chunked bodies decoded, a body without framing read to the end of the input).
/// `None` where it answers 502 or waits for more.
pub fn native_answer(input: &[u8], head_request: bool) -> Option<(u16, Vec<u8>)> {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        out.clear();
        match response::parse(&input[at..], head_request, false, &mut out) {
            response::Parsed::Interim(n) => at += n,
            response::Parsed::Head(head) => {
                let body = &input[at + head.head_len..];
                let body = match head.body {
                    response::Body::None => Vec::new(),
                    response::Body::Length(n) => body.get(..usize::try_from(n).ok()?)?.to_vec(),
                    response::Body::Close => body.to_vec(),
                    response::Body::Chunked => {
                        let mut decoded = Vec::new();
                        let read = Decoder::default()
                            .decode(body, |d| decoded.extend_from_slice(d))
                            .ok()?;
                        read.done.then_some(decoded)?
                    }
                };
                return Some((head.status, body));
            }
            response::Parsed::Partial | response::Parsed::Bad(_) => return None,
        }
    }
}

/// The property: every request the native engine frames, the checker frames the same.
pub fn agree(input: &[u8], split: usize, max_head: usize) -> Result<(), String> {
    let native = native_boundaries(input, split);
    if native.is_empty() {
        return Ok(());
    }
    let checker = checker_boundaries(input, max_head);
    if checker.len() < native.len() || checker[..native.len()] != native[..] {
        return Err(format!("native {native:?} != checker {checker:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_requests_end_at_the_same_bytes() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /";
        let native = native_boundaries(input, 3);
        assert_eq!(native.len(), 3);
        assert_eq!(checker_boundaries(input, 8192), native);
        for split in 0..input.len() {
            agree(input, split, 8192).unwrap();
        }
    }

    #[test]
    fn what_the_checker_refuses_the_engine_does_not_frame() {
        for input in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 1\r\n\r\nx",
        ] {
            assert!(native_boundaries(input, 0).is_empty(), "{input:?}");
        }
    }
}
