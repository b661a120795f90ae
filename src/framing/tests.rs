//! The checker driven through [`Framed`] over a scripted reader: every stream is also cut at
//! every byte boundary (and into single bytes), and what hyper would get must not change.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::io::{Framed, Verdict, SENTINEL_METHOD};
use super::{Checker, Scan, Violation};

/// Hands out the given pieces, one per read (less when the caller's buffer is smaller).
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// What hyper reads from `pieces`: the bytes, and the error that ended them if any.
fn through(pieces: Vec<Vec<u8>>, h2c: bool) -> (Vec<u8>, Option<Violation>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a test runtime");
    rt.block_on(async {
        let pieces: VecDeque<Vec<u8>> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        let mut framed = Framed::new(
            Pieces(pieces),
            Checker::new(4096, h2c),
            Arc::new(Verdict::default()),
        );
        let mut out = Vec::new();
        let mut buf = [0u8; 700];
        loop {
            // Pending here means nothing will ever come (after the sentinel): the scripted
            // reader itself never waits.
            let Some(read) = framed.read(&mut buf).now_or_never() else {
                assert!(out.ends_with(&sentinel()), "waits only after the sentinel");
                return (out, None);
            };
            match read {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    let refused = e
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<super::io::Refused>())
                        .expect("the error is a framing refusal");
                    return (out, Some(refused.0));
                }
            }
        }
    })
}

/// Runs `stream` whole, cut in two at every boundary, and byte by byte: all must agree.
fn every_split(stream: &[u8], h2c: bool) -> (Vec<u8>, Option<Violation>) {
    let whole = through(vec![stream.to_vec()], h2c);
    for i in 1..stream.len() {
        let cut = through(vec![stream[..i].to_vec(), stream[i..].to_vec()], h2c);
        assert_eq!(
            cut,
            whole,
            "cut at {i} of {:?}",
            String::from_utf8_lossy(stream)
        );
    }
    let bytes = through(stream.iter().map(|b| vec![*b]).collect(), h2c);
    assert_eq!(
        bytes,
        whole,
        "byte by byte: {:?}",
        String::from_utf8_lossy(stream)
    );
    whole
}

fn sentinel() -> Vec<u8> {
    format!("{SENTINEL_METHOD} / HTTP/1.1\r\nhost: writeguard\r\nconnection: close\r\n\r\n")
        .into_bytes()
}

const GOOD: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nGET / HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\ncontent-length:0\r\nhost:a\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\nHOST: a\r\n\r\n5;a=b;c=\"d\"\r\nhe\nlo\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n",
    b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\n\r\n00000\r\n\r\n",
    // Body bytes that look like requests are body bytes.
    b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 28\r\n\r\nGET /x HTTP/1.1\nHost: a\n\n\r\n",
];

#[test]
fn valid_framings_pass_unchanged_however_they_are_cut() {
    for stream in GOOD {
        assert_eq!(every_split(stream, false), (stream.to_vec(), None));
    }
    let pipelined: Vec<u8> = GOOD.concat();
    assert_eq!(every_split(&pipelined, false), (pipelined.clone(), None));
}

#[test]
fn refused_heads_become_the_sentinel_after_the_requests_before_them() {
    let cases: &[(&[u8], Violation)] = &[
        (
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Violation::ContentLengthAndTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            Violation::ContentLengthAndTransferEncoding,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            Violation::ContentLengthRepeated,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            Violation::ContentLengthInvalid,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            Violation::ContentLengthInvalid,
        ),
        (
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            Violation::ContentLengthInvalid,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Violation::TransferEncodingNotChunked,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            Violation::TransferEncodingNotChunked,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n",
            Violation::TransferEncodingNotChunked,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            Violation::TransferEncodingRepeated,
        ),
        (
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Violation::TransferEncodingHttp10,
        ),
        (b"GET / HTTP/1.1\nHost: a\n\n", Violation::BareLf),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Violation::BareLf),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", Violation::BareLf),
        (b"\nGET / HTTP/1.1\r\n\r\n", Violation::BareLf),
        (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", Violation::BareCr),
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Violation::ObsFold),
        (b"GET / HTTP/1.1\r\n\tX: a\r\n\r\n", Violation::ObsFold),
        (b"GET /\r\n\r\n", Violation::RequestLine),
        (b"GET / HTTP/1.2\r\n\r\n", Violation::Version),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Violation::Version),
        (b"GET / HTTP/1.1\r\n\r\n", Violation::HostMissing),
        (b"GET / HTTP/1.1\r\nX-Host: a\r\nHost : a\r\n\r\n", Violation::HostMissing),
        (b"GET http://a/ HTTP/1.1\r\n\r\n", Violation::HostMissing),
        (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", Violation::HostRepeated),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHOST: a\r\n\r\n", Violation::HostRepeated),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
            Violation::FramingHeaderAlias,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 99\r\n\r\n",
            Violation::FramingHeaderAlias,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 0\r\nCONTENT_length:5\r\n\r\n",
            Violation::FramingHeaderAlias,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding_: x\r\nTransfer_encoding: chunked\r\n\r\n",
            Violation::FramingHeaderAlias,
        ),
    ];
    let before = GOOD[2];
    for (bad, violation) in cases {
        let expect = (sentinel(), None);
        assert_eq!(every_split(bad, false), expect, "{violation:?}");
        let mut stream = before.to_vec();
        stream.extend_from_slice(bad);
        // What follows a refused head is never read.
        stream.extend_from_slice(b"GET /smuggled HTTP/1.1\r\n\r\n");
        let mut expect = before.to_vec();
        expect.extend_from_slice(&sentinel());
        assert_eq!(every_split(&stream, false), (expect, None), "{violation:?}");
    }
}

#[test]
fn refused_chunked_bodies_end_in_an_error_after_their_good_bytes() {
    let head: &[u8] = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: &[(&[u8], usize, Violation)] = &[
        (b"zz\r\nhello\r\n0\r\n\r\n", 0, Violation::ChunkSize),
        (b"5\nhello\r\n0\r\n\r\n", 1, Violation::BareLf),
        (b"5\r\nhello\n0\r\n\r\n", 8, Violation::ChunkData),
        (b"5\r\nhelloXX\r\n0\r\n\r\n", 8, Violation::ChunkData),
        (b"3\r\nhello\r\n0\r\n\r\n", 6, Violation::ChunkData),
        (b"-5\r\nhello\r\n", 0, Violation::ChunkSize),
        (b"0x5\r\nhello\r\n", 1, Violation::ChunkSize),
        (b"5 5\r\nhello\r\n", 2, Violation::ChunkSize),
        (b"11111111111111111\r\n", 16, Violation::ChunkSize),
        (b"5;a\x00\r\nhello\r\n", 3, Violation::ChunkSize),
        (b"5\rx\r\nhello\r\n", 2, Violation::BareCr),
        (b"0\r\nX: 1\n\r\n", 7, Violation::BareLf),
        (b"0\r\n\n", 3, Violation::BareLf),
        (b"0\r\nX: 1\r\n folded\r\n\r\n", 9, Violation::ObsFold),
        (b"0\r\n\rX", 4, Violation::BareCr),
    ];
    for (body, good, violation) in cases {
        let mut stream = head.to_vec();
        stream.extend_from_slice(body);
        let expect = (stream[..head.len() + good].to_vec(), Some(*violation));
        assert_eq!(every_split(&stream, false), expect, "{violation:?}");
    }
}

#[test]
fn host_is_required_once_on_http11_only_and_other_underscores_pass() {
    for stream in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhOsT:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Host: b\r\nHostname: c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\nContent_Type: x\r\nTransfer_Encodings: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length_: 1\r\nTe_: 1\r\n\r\n",
    ] {
        assert_eq!(every_split(stream, false), (stream.to_vec(), None));
    }
    // Each request of a connection needs its own Host.
    let first: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let stream = [first, b"GET /b HTTP/1.1\r\n\r\n"].concat();
    let expect = [first, &sentinel()[..]].concat();
    assert_eq!(every_split(&stream, false), (expect, None));
    assert!(super::is_framing_alias(b"Transfer_Encoding"));
    assert!(super::is_framing_alias(b"content_length"));
    assert!(!super::is_framing_alias(b"content-length"));
    assert!(!super::is_framing_alias(b"x_content_length"));
}

#[test]
fn lines_hyper_refuses_itself_are_left_to_it() {
    // httparse rejects whitespace before a colon and lines without one (400, close): no
    // parser reads a field there, so the checker need not look for them.
    for stream in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
        b"GET HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(every_split(stream, false), (stream.to_vec(), None));
    }
}

#[test]
fn chunk_extensions_and_trailers_are_bounded() {
    let head: &[u8] = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let fits = format!(
        "1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(super::MAX_CHUNK_EXTENSIONS - 1)
    );
    let stream = [head, fits.as_bytes()].concat();
    assert_eq!(through(vec![stream.clone()], false), (stream, None));
    // The same budget, spread over many chunks.
    let many = format!("1;{}\r\nx\r\n", "e".repeat(99)).repeat(41);
    let stream = [head, many.as_bytes()].concat();
    let (_, err) = through(vec![stream], false);
    assert_eq!(err, Some(Violation::ChunkExtensionsTooLong));
    let trailers = format!("0\r\nX: {}\r\n\r\n", "t".repeat(super::MAX_TRAILERS));
    let stream = [head, trailers.as_bytes()].concat();
    let (_, err) = through(vec![stream], false);
    assert_eq!(err, Some(Violation::TrailersTooLarge));
}

#[test]
fn trailers_hyper_would_refuse_are_refused_first() {
    let head: &[u8] = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let fine = [head, b"1\r\nx\r\n0\r\nX-T: 1\r\n\r\n"].concat();
    assert_eq!(every_split(&fine, false), (fine.clone(), None));
    let hundred = [head, b"0\r\n", &b"X-T: 1\r\n".repeat(100), b"\r\n"].concat();
    assert_eq!(every_split(&hundred, false), (hundred.clone(), None));
    for bad in [
        &b"0\r\nx : 1\r\n\r\n"[..],
        b"0\r\n\x14: 1\r\n\r\n",
        b"0\r\nx: \x01\r\n\r\n",
        b"0\r\nno-colon\r\n\r\n",
        &[&b"0\r\n"[..], &b"X-T: 1\r\n".repeat(101), b"\r\n"].concat(),
    ] {
        let stream = [head, bad].concat();
        let (_, err) = through(vec![stream], false);
        assert_eq!(
            err,
            Some(Violation::TrailerInvalid),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn heads_over_the_limit_are_refused_as_too_large() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(4100));
    assert_eq!(through(vec![big.into_bytes()], false), (sentinel(), None));
    // A head that never ends is not held without bound either.
    let endless = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(5000));
    let pieces = endless.as_bytes().chunks(100).map(<[u8]>::to_vec).collect();
    assert_eq!(through(pieces, false), (sentinel(), None));
    let mut c = Checker::new(4096, false);
    let scan = c.scan(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(4100)).as_bytes());
    assert!(matches!(
        scan,
        Scan::Refused {
            violation: Violation::HeadTooLarge,
            at: 0,
            in_head: true
        }
    ));
}

#[test]
fn upgrades_and_connect_end_the_checking() {
    for head in [
        &b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ] {
        let stream = [head, b"\x81\x05hello\nnot http\r\n\r\n"].concat();
        assert_eq!(every_split(&stream, false), (stream.clone(), None));
    }
    // Upgrade means nothing to HTTP/1.0 (as to hyper): still checked.
    let stream = b"GET / HTTP/1.0\r\nUpgrade: x\r\n\r\nGET / HTTP/1.1\nX: y\n\n";
    let expect = [&stream[..30], &sentinel()[..]].concat();
    assert_eq!(every_split(stream, false), (expect, None));
}

#[test]
fn an_h2c_preface_passes_only_first_and_only_when_allowed() {
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    assert_eq!(every_split(h2, true), (h2.to_vec(), None));
    assert_eq!(every_split(h2, false), (sentinel(), None));
    let late = [GOOD[0], &h2[..]].concat();
    let expect = [GOOD[0], &sentinel()[..]].concat();
    assert_eq!(every_split(&late, true), (expect, None));
}

#[test]
fn violation_codes_round_trip() {
    for v in Violation::ALL {
        assert_eq!(Violation::from_u8(v as u8), Some(v));
        assert!(!v.detail().is_empty());
    }
    assert_eq!(Violation::from_u8(0), None);
    assert_eq!(Violation::from_u8(Violation::ALL.len() as u8 + 1), None);
}
