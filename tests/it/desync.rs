//! Request smuggling: every ambiguous HTTP/1.1 framing is answered 400 with the connection
//! closed, and the recording upstream never parses the ambiguous request nor anything hidden
//! behind it. Unambiguous framings on one keep-alive connection still pass byte-exact.

use std::time::Duration;

use crate::common::client::RawConn;
use crate::common::upstream::sha256_hex;
use crate::common::{pattern, Instance, Upstream, Wg};

const SMUGGLED: &str = "/smuggled";

/// A request hidden behind the ambiguous one: if anything ever parses it, the upstream
/// records it.
fn smuggled(method: &str) -> String {
    format!("{method} {SMUGGLED} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
}

/// The ambiguous framings, each followed by a smuggled write.
fn ambiguous() -> Vec<(&'static str, String)> {
    let s = smuggled("POST");
    vec![
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}",
                5 + s.len()
            ),
        ),
        (
            "Transfer-Encoding before Content-Length",
            format!(
                "GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n",
                s.len()
            ),
        ),
        (
            "duplicate identical Content-Length",
            format!(
                "GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{s}",
                n = s.len()
            ),
        ),
        (
            "conflicting Content-Length",
            format!(
                "GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            ),
        ),
        (
            "Content-Length list",
            format!("GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 0\r\n\r\n{s}"),
        ),
        (
            "Transfer-Encoding gzip, chunked",
            format!(
                "GET /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n",
                s.len()
            ),
        ),
        (
            "two Transfer-Encoding lines",
            format!(
                "GET /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"
            ),
        ),
        (
            "Transfer-Encoding identity",
            format!("GET /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n{s}"),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!("GET /c HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"),
        ),
        (
            "bare LF line endings",
            format!("GET /d HTTP/1.1\nHost: x\nContent-Length: 0\n\n{s}"),
        ),
        (
            "one bare LF",
            format!("GET /d HTTP/1.1\r\nHost: x\nContent-Length: {}\r\n\r\n{s}", s.len()),
        ),
        (
            "obs-fold",
            format!("GET /e HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 0\r\n\r\n{s}"),
        ),
        (
            "space before the colon",
            format!(
                "GET /e HTTP/1.1\r\nHost: x\r\nContent-Length : {}\r\n\r\n{s}",
                s.len()
            ),
        ),
    ]
}

async fn plain() -> (Upstream, Instance) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    (up, wg)
}

/// Writes `raw`, expects one 400 that closes the connection, and returns its body.
async fn refused(wg: &Instance, raw: &str, case: &str) -> String {
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(raw.as_bytes()).await;
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 400, "{case}: {}", res.text());
    assert_eq!(res.header("connection"), Some("close"), "{case}");
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "{case}: the connection stayed open"
    );
    res.text()
}

fn assert_never_parsed(up: &Upstream, case: &str) {
    let seen: Vec<String> = up.records().iter().map(|r| r.uri.clone()).collect();
    assert!(
        !seen.iter().any(|u| u.contains(SMUGGLED)),
        "{case}: the upstream parsed the smuggled request: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_heads_get_400_and_close_and_never_reach_the_upstream() {
    let (up, wg) = plain().await;
    for (case, raw) in ambiguous() {
        let text = refused(&wg, &raw, case).await;
        // hyper refuses a space before the colon itself (an empty 400 that closes).
        if case != "space before the colon" {
            assert!(text.starts_with("400 Bad Request: "), "{case}: {text}");
        }
        assert_never_parsed(&up, case);
        assert_eq!(
            up.hits(),
            0,
            "{case}: the ambiguous request reached the upstream"
        );
    }
    // The listener still serves well-framed requests afterwards.
    let res = wg.proxy(wg.proxy_req("GET", "/fine")).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_comes_after_the_answers_to_earlier_pipelined_requests() {
    let (up, wg) = plain().await;
    for (case, raw) in ambiguous() {
        let before = up.records().len();
        let mut conn = RawConn::connect(wg.proxy).await;
        // The first request takes a while upstream: the refusal must wait for its answer.
        let first = "GET /__sleep/150/first HTTP/1.1\r\nHost: x\r\n\r\n";
        conn.write(format!("{first}GET /second HTTP/1.1\r\nHost: x\r\n\r\n{raw}").as_bytes())
            .await;
        let one = conn.read_response(false).await;
        assert_eq!(one.status, 200, "{case}");
        assert!(one.text().contains("/__sleep/150/first"), "{case}");
        let two = conn.read_response(false).await;
        assert_eq!(two.status, 200, "{case}");
        assert!(two.text().contains("/second"), "{case}");
        let three = conn.read_response(false).await;
        assert_eq!(three.status, 400, "{case}: {}", three.text());
        assert_eq!(three.header("connection"), Some("close"), "{case}");
        assert!(conn.closed_within(Duration::from_secs(5)).await, "{case}");
        let uris: Vec<String> = up.records()[before..]
            .iter()
            .map(|r| r.uri.clone())
            .collect();
        assert_eq!(uris, ["/__sleep/150/first", "/second"], "{case}");
    }
    assert_never_parsed(&up, "pipelined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_hidden_in_a_guarded_request_never_reaches_the_upstream() {
    let (up, wg) = plain().await;
    assert!(wg.engage("deploy", None).await.status.is_success());
    // Ambiguous framing around a guarded write: refused before the guard even sees it.
    for (case, raw) in ambiguous() {
        let raw = raw.replacen("GET ", "POST ", 1);
        refused(&wg, &raw, case).await;
    }
    // A well-framed guarded POST whose body is a request: 503, and its body is skipped or
    // the connection closed; never parsed as the next request.
    let hidden = smuggled("DELETE");
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(
        format!(
            "POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{hidden}GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
            hidden.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(conn.read_response(false).await.status, 503);
    if !conn.closed_within(Duration::from_millis(300)).await {
        let next = conn.read_response(false).await;
        assert_eq!(next.status, 200);
        assert!(next.text().contains("/after"), "{}", next.text());
    }
    // The same body chunked, with a smuggled request after a bad chunk.
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(
        format!(
            "POST /w HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{hidden}\r\nzz\r\n{hidden}",
            hidden.len()
        )
        .as_bytes(),
    )
    .await;
    // 503 if the guard answered before the bad chunk was read, else the 400 for it.
    let status = conn.read_response(false).await.status;
    assert!(status == 503 || status == 400, "{status}");
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    assert_never_parsed(&up, "guarded");
    assert_eq!(up.count_method("DELETE"), 0);
    assert_eq!(up.count_method("POST"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunked_bodies_get_400_and_no_complete_request_upstream() {
    let (up, wg) = plain().await;
    let s = smuggled("POST");
    let cases = [
        ("invalid chunk size", format!("zz\r\n{s}\r\n0\r\n\r\n")),
        ("negative chunk size", format!("-1\r\n{s}\r\n0\r\n\r\n")),
        (
            "overflowing chunk size",
            "1ffffffffffffffff\r\nx\r\n".to_string(),
        ),
        (
            "bare LF after the size",
            format!("{:x}\n{s}\r\n0\r\n\r\n", s.len()),
        ),
        (
            "data longer than its size",
            format!("3\r\n{s}\r\n0\r\n\r\n"),
        ),
        (
            "oversized chunk extension",
            format!("5;{}\r\nhello\r\n0\r\n\r\n{s}", "e".repeat(5000)),
        ),
        ("bare LF in trailers", format!("0\r\nX-T: 1\n\r\n{s}")),
    ];
    for (case, body) in cases {
        let raw = format!(
            "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let text = refused(&wg, &raw, case).await;
        assert!(text.starts_with("400 Bad Request: "), "{case}: {text}");
        // The head may have gone upstream with the first chunks, but never a whole request.
        let posts = up.records().iter().filter(|r| r.method == "POST").count();
        assert_eq!(posts, 0, "{case}: the upstream got a complete request");
        assert_never_parsed(&up, case);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_closes_the_connection_after_its_answer() {
    let (up, wg) = plain().await;
    let mut conn = RawConn::connect(wg.proxy).await;
    // The upstream answers 200 (no switch): what follows must not be parsed unchecked.
    conn.write(
        format!(
            "GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /d HTTP/1.1\nHost: x\n\n{}",
            smuggled("POST")
        )
        .as_bytes(),
    )
    .await;
    let res = conn.read_response(false).await;
    assert_ne!(res.status, 101);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    assert_never_parsed(&up, "upgrade");
    assert!(up.records().iter().all(|r| r.uri == "/up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_framed_keep_alive_traffic_passes_byte_exact() {
    let (up, wg) = plain().await;
    let mut conn = RawConn::connect(wg.proxy).await;
    let big = pattern(70_000, 3);
    let mut raw = Vec::new();
    // Content-Length body, with request-looking bytes in it.
    let cl_body = format!("{}{}", smuggled("POST"), "x".repeat(100));
    raw.extend_from_slice(
        format!(
            "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{cl_body}",
            cl_body.len()
        )
        .as_bytes(),
    );
    // Chunked body with extensions, uppercase hex and trailers.
    raw.extend_from_slice(
        b"\r\nPOST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    raw.extend_from_slice(format!("{:X};ext=\"v\"\r\n", big.len()).as_bytes());
    raw.extend_from_slice(&big);
    raw.extend_from_slice(b"\r\n3\r\nend\r\n0\r\nX-Trailer: t\r\n\r\n");
    // A chunked GET body (rare, legal): forwarded, not dropped.
    raw.extend_from_slice(
        b"GET /chunked-get HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    for i in 0..3 {
        raw.extend_from_slice(format!("GET /get/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    // Sent in odd pieces so heads and chunk lines straddle reads.
    for piece in raw.chunks(777) {
        conn.write(piece).await;
    }
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("x-body-sha256"),
        Some(sha256_hex(cl_body.as_bytes()).as_str())
    );
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let mut whole = big.to_vec();
    whole.extend_from_slice(b"end");
    assert_eq!(
        res.header("x-body-sha256"),
        Some(sha256_hex(&whole).as_str())
    );
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("x-body-sha256"),
        Some(sha256_hex(b"hello").as_str())
    );
    for i in 0..3 {
        let res = conn.read_response(false).await;
        assert_eq!(res.status, 200);
        assert!(res.text().contains(&format!("/get/{i}")));
    }
    assert!(!conn.closed_within(Duration::from_millis(100)).await);
    let uris: Vec<String> = up.records().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        uris,
        [
            "/cl",
            "/chunked",
            "/chunked-get",
            "/get/0",
            "/get/1",
            "/get/2"
        ]
    );
    assert_eq!(up.records()[1].body.as_ref(), &whole[..]);
    assert_eq!(up.records()[2].body.as_ref(), b"hello");
}
