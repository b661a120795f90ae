//! Hardening over real sockets: no way around the guard (method spelling, extension methods,
//! override headers, path tricks, HTTP/2, WebSocket upgrades); slow and greedy clients are cut
//! off and cannot starve others; upstream faults end in one clean 502/504, logged once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use crate::common::client::RawConn;
use crate::common::faulty::Faulty;
use crate::common::{Instance, Req, Upstream, Wg};

/// Engages the guard through the admin API.
async fn engaged(wg: &Instance) {
    let res = wg.engage("hardening test", None).await;
    assert_eq!(res.status, 201, "POST /guard: {}", res.text());
    assert!(wg.guarded().await);
}

async fn released(wg: &Instance) {
    let res = wg.release(true).await;
    assert!(res.status.is_success(), "DELETE /guard: {}", res.text());
    assert!(!wg.guarded().await);
}

/// One request written byte for byte on a fresh connection; the status of the answer.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let mut conn = RawConn::connect(addr).await;
    conn.write(request.as_bytes()).await;
    conn.read_response(false).await.status
}

/// `POST <target>` with a small body, byte for byte (the target is sent exactly as given).
fn raw_post(target: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nx=1")
}

type Headers = &'static [(&'static str, &'static str)];

/// Requests (method, override headers) that are writes in disguise.
const DISGUISED: &[(&str, Headers)] = &[
    ("POST", &[]),
    ("post", &[]),
    ("Patch", &[]),
    ("PROPPATCH", &[]),
    ("LOCK", &[]),
    ("FOO", &[]),
    ("GET", &[("x-http-method-override", "POST")]),
    ("GET", &[("X-HTTP-Method", "patch")]),
    // CGI and PHP read underscores as dashes.
    ("GET", &[("X_HTTP_Method_Override", "POST")]),
    ("PUT", &[("x-method-override", " PATCH ")]),
    ("GET", &[("x-http-method-override", "MKCOL")]),
    (
        "GET",
        &[
            ("x-http-method-override", "GET"),
            ("x-http-method-override", "POST"),
        ],
    ),
];

fn disguised(method: &str, headers: &[(&str, &str)]) -> Req {
    let mut req = Req::new(method, "/orders").body("x=1");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req
}

// ---------------------------------------------------------------------------------------
// 1. No way around the guard
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_spelling_extension_methods_and_override_headers_are_guarded() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    engaged(&wg).await;
    for (method, headers) in DISGUISED {
        let res = wg.proxy(disguised(method, headers)).await;
        assert_eq!(res.status, 503, "{method} {headers:?} while guarded");
        assert!(res.header("retry-after").is_some(), "{method} {headers:?}");
    }
    assert_eq!(up.hits(), 0, "a guarded request reached the upstream");
    // Reads and other defined methods still flow, also with a harmless override header.
    for (method, headers) in [
        ("GET", &[][..]),
        ("PUT", &[][..]),
        ("GET", &[("x-http-method-override", "GET")][..]),
    ] {
        let res = wg.proxy(disguised(method, headers)).await;
        assert_eq!(res.status, 200, "{method} {headers:?} while guarded");
    }
    assert_eq!(up.hits(), 3);

    released(&wg).await;
    for (i, (method, headers)) in DISGUISED.iter().enumerate() {
        let res = wg.proxy(disguised(method, headers)).await;
        assert_eq!(res.status, 200, "{method} {headers:?} when not guarded");
        assert_eq!(up.records().len(), 4 + i, "{method} {headers:?}");
        assert_eq!(
            up.last().method,
            *method,
            "the method reaches the app as sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_unknown_methods_lets_only_extension_methods_through() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .guard_line("pass_unknown_methods = true")
        .start()
        .await;
    engaged(&wg).await;
    for (method, headers) in [
        ("LOCK", &[][..]),
        ("PROPPATCH", &[][..]),
        ("GET", &[("x-http-method-override", "MKCOL")][..]),
    ] {
        let before = up.records().len();
        let res = wg.proxy(disguised(method, headers)).await;
        assert_eq!(
            res.status, 200,
            "{method} {headers:?} with pass_unknown_methods"
        );
        assert_eq!(up.records().len(), before + 1);
    }
    let before = up.hits();
    for (method, headers) in [
        ("post", &[][..]),
        ("PATCH", &[][..]),
        ("GET", &[("x-method-override", "post")][..]),
    ] {
        let res = wg.proxy(disguised(method, headers)).await;
        assert_eq!(
            res.status, 503,
            "{method} {headers:?} with pass_unknown_methods"
        );
    }
    assert_eq!(up.hits(), before, "a guarded request reached the upstream");
}

/// Targets that could be read as being under `/login` by one party and not by another.
const PATH_TRICKS: &[&str] = &[
    "/login/../orders",
    "/login/./../orders",
    "/login/%2e%2e/orders",
    "/login/%2E%2E/orders",
    "/login/.%2e/orders",
    "/login/%252e%252e/orders",
    "//login",
    "//login/../orders",
    "/login%2forders",
    "/login%2F..%2Forders",
    "/login;x=1",
    "/login;/../orders",
    "/login/..;/orders",
    "/login\\..\\orders",
    "/login%5c..%5corders",
    "/login/.",
    "http://app.test/login/../orders",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_against_allow_paths_stay_guarded() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).allow_paths(&["/login"]).start().await;
    engaged(&wg).await;
    // The allowance itself works (else every trick below would pass the test vacuously).
    assert_eq!(raw_status(wg.proxy, &raw_post("/login")).await, 200);
    assert_eq!(raw_status(wg.proxy, &raw_post("/login/sso")).await, 200);
    assert_eq!(up.hits(), 2);
    for path in PATH_TRICKS {
        let status = raw_status(wg.proxy, &raw_post(path)).await;
        assert!(
            status == 503 || status == 400,
            "POST {path} while guarded: {status}, expected 503 (or 400)"
        );
        assert_eq!(
            up.hits(),
            2,
            "POST {path} reached the upstream while guarded"
        );
    }

    released(&wg).await;
    for path in PATH_TRICKS {
        let before = up.records().len();
        let status = raw_status(wg.proxy, &raw_post(path)).await;
        assert_eq!(status, 200, "POST {path} when not guarded");
        assert_eq!(up.records().len(), before + 1, "POST {path}");
    }
}

/// An HTTP/2 (h2c, prior knowledge) connection to `addr`.
async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    let mut b = Request::builder()
        .method(common::method(method))
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from_static(b"x=1")))
        .expect("request");
    sender.ready().await.expect("h2 connection ready");
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an h2 answer within 10 s")
        .unwrap_or_else(|e| panic!("{method} {path} over h2: {e}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    res.into_body().collect().await.expect("h2 body");
    (status, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_guarded_like_http1_ones() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .allow_paths(&["/login"])
        .proxy_line("h2c = true")
        .start()
        .await;
    let mut conn = h2(wg.proxy).await;
    engaged(&wg).await;
    let mut cases: Vec<(&str, &str, Headers)> =
        DISGUISED.iter().map(|(m, h)| (*m, "/orders", *h)).collect();
    cases.extend([
        ("POST", "/login/../orders", &[][..]),
        ("POST", "/login/%2e%2e/orders", &[][..]),
        ("POST", "//login", &[][..]),
        ("POST", "/login;x=1", &[][..]),
    ]);
    for (method, path, headers) in &cases {
        let (status, h) = h2_send(&mut conn, wg.proxy, method, path, headers).await;
        assert_eq!(status, 503, "h2 {method} {path} {headers:?} while guarded");
        assert!(h.contains_key("retry-after"), "h2 {method} {path}");
    }
    assert_eq!(up.hits(), 0, "a guarded h2 request reached the upstream");
    for (method, path) in [("GET", "/orders"), ("POST", "/login")] {
        let (status, _) = h2_send(&mut conn, wg.proxy, method, path, &[]).await;
        assert_eq!(status, 200, "h2 {method} {path} while guarded");
    }
    assert_eq!(up.hits(), 2);

    released(&wg).await;
    for (i, (method, path, headers)) in cases.iter().enumerate() {
        let (status, _) = h2_send(&mut conn, wg.proxy, method, path, headers).await;
        assert_eq!(
            status, 200,
            "h2 {method} {path} {headers:?} when not guarded"
        );
        assert_eq!(up.records().len(), 3 + i);
    }
}

const WS_UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends a WebSocket upgrade; returns the status and, on 101, the open connection.
async fn upgrade(addr: SocketAddr) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(WS_UPGRADE.as_bytes()).await.expect("write");
    // Byte by byte up to the blank line: nothing after the head may be consumed.
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.expect("read the head") == 0 {
                break;
            }
            head.push(b[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer to the upgrade within 10 s");
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad answer to the upgrade: {head:?}"));
    (status, s)
}

async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("tunnel bytes within 10 s")
        .expect("tunnel read");
    buf
}

/// Bytes go both ways through an upgraded connection.
async fn tunnel_works(s: &mut TcpStream, tag: &str) {
    let greeting = read_exactly(s, 19).await;
    assert_eq!(
        greeting, b"hello from upstream",
        "{tag}: upstream to client"
    );
    for msg in [&b"ping 1"[..], &[0u8, 255, 13, 10, 0x81][..]] {
        s.write_all(msg).await.expect("write into the tunnel");
        assert_eq!(read_exactly(s, msg.len()).await, msg, "{tag}: echo");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_tunnel_when_not_guarded_and_are_refused_while_guarded() {
    let f = Faulty::start().await;
    let wg = Wg::new(f.url()).start().await;
    let (status, mut open) = upgrade(wg.proxy).await;
    assert_eq!(status, 101, "upgrade when not guarded");
    tunnel_works(&mut open, "not guarded").await;
    assert_eq!(f.count("/ws"), 1);

    engaged(&wg).await;
    let (status, _) = upgrade(wg.proxy).await;
    assert_eq!(status, 503, "a new upgrade while guarded");
    assert_eq!(
        f.count("/ws"),
        1,
        "the refused upgrade reached the upstream"
    );
    // A tunnel opened before the engagement is left alone.
    open.write_all(b"still here").await.expect("write");
    assert_eq!(read_exactly(&mut open, 10).await, b"still here");

    released(&wg).await;
    let (status, mut s) = upgrade(wg.proxy).await;
    assert_eq!(status, 101, "upgrade after the release");
    tunnel_works(&mut s, "after the release").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_lets_websockets_through_while_guarded() {
    let f = Faulty::start().await;
    let wg = Wg::new(f.url())
        .guard_line("upgrades = \"pass\"")
        .start()
        .await;
    engaged(&wg).await;
    let (status, mut s) = upgrade(wg.proxy).await;
    assert_eq!(
        status, 101,
        "upgrade while guarded with upgrades = \"pass\""
    );
    tunnel_works(&mut s, "pass").await;
    // Writes stay guarded.
    assert_eq!(wg.post("/orders").await.status, 503);
    assert_eq!(f.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_answered_405_and_never_tunnels() {
    let f = Faulty::start().await;
    let wg = Wg::new(f.url()).start().await;
    let connect = "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n";
    assert_eq!(raw_status(wg.proxy, connect).await, 405);
    engaged(&wg).await;
    assert_eq!(raw_status(wg.proxy, connect).await, 405);
    assert!(f.seen().is_empty(), "CONNECT reached the upstream");
}

// ---------------------------------------------------------------------------------------
// 2. Slow and greedy clients
// ---------------------------------------------------------------------------------------

/// Reads until the peer closes; what it sent. None if it is still open after `limit`.
async fn until_closed(s: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(got)
}

/// Writes `bytes` one at a time, `every` apart, until done or the peer is gone.
fn trickle(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        for (i, b) in bytes.iter().enumerate() {
            if w.write_all(&[*b]).await.is_err() {
                return i;
            }
            tokio::time::sleep(every).await;
        }
        bytes.len()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_at_the_whole_header_deadline() {
    slowloris(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_with_h2c_on_too() {
    slowloris(true).await;
}

/// A head trickled byte by byte to a listener with `header_timeout = "1s"` (and h2c on or
/// off): the connection is closed within 5 s, nothing reaches the upstream, others are served.
async fn slowloris(h2c: bool) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("header_timeout = \"1s\"")
        .proxy_line(&format!("h2c = {h2c}"))
        .start()
        .await;
    // 100 bytes, one every 100 ms: each read is quick, the head would take 10 s.
    let mut head = b"GET /slow HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    head.resize(100, b'a');
    let (mut r, w) = TcpStream::connect(wg.proxy)
        .await
        .expect("connect")
        .into_split();
    let started = Instant::now();
    let writer = trickle(w, head, Duration::from_millis(100));
    let got = until_closed(&mut r, Duration::from_secs(6))
        .await
        .unwrap_or_else(|| {
            panic!("h2c = {h2c}: the slowloris connection was not closed within 6 s")
        });
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer to a slow head: {text:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "cut after {elapsed:?}");
    writer.abort();
    assert_eq!(up.hits(), 0);
    // Others are served normally.
    assert_eq!(wg.proxy(Req::get("/after")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_header_timeout() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("header_timeout = \"1s\"")
        .start()
        .await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(conn.read_response(false).await.status, 200);
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "an idle keep-alive connection outlived header_timeout (1s) by 4 s"
    );
    // A connection that never sends a byte is closed too.
    let mut silent = RawConn::connect(wg.proxy).await;
    assert!(silent.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_get_408_and_never_reach_the_upstream_complete() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("body_idle_timeout = \"1s\"")
        .proxy_line("body_timeout = \"2s\"")
        .start()
        .await;

    // Stalled: 10 of 100 bytes, then nothing.
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"POST /stall HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 408, "stalled body: {}", res.text());
    assert!(
        conn.closed_within(Duration::from_secs(2)).await,
        "not closed after 408"
    );

    // Trickled: a byte every 100 ms (never idle for 1 s), 100 bytes would take 10 s.
    let (mut r, mut w) = TcpStream::connect(wg.proxy)
        .await
        .expect("connect")
        .into_split();
    w.write_all(b"POST /trickle HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n")
        .await
        .expect("write head");
    let writer = trickle(w, vec![b'z'; 100], Duration::from_millis(100));
    let got = until_closed(&mut r, Duration::from_secs(6))
        .await
        .expect("a trickled body held its connection past 6 s");
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer to a trickled body: {text:?}"
    );
    let sent = writer.await.expect("writer");
    assert!(sent < 100, "the whole trickled body was accepted");

    let complete: Vec<String> = up.records().into_iter().map(|r| r.uri).collect();
    assert!(
        !complete.iter().any(|u| u == "/stall" || u == "/trickle"),
        "the upstream got a complete slow request: {complete:?}"
    );
    let res = wg.proxy(Req::new("POST", "/after").body("x=1")).await;
    assert_eq!(res.status, 200);
    assert_eq!(up.last().uri, "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_answered_early_does_not_hold_up_other_requests() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url())
        .proxy_line("body_idle_timeout = \"15s\"")
        .start()
        .await;
    // The upstream answers at once, then waits for the rest of the body (90 bytes that
    // never come within this test).
    let mut slow = RawConn::connect(wg.proxy).await;
    slow.write(b"POST /early HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let res = slow.read_response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "early");
    for i in 0..3 {
        let res = Req::get("/ok")
            .timeout(Duration::from_secs(3))
            .try_send(wg.proxy)
            .await
            .unwrap_or_else(|e| {
                panic!("GET /ok #{i} beside a slow upload the upstream already answered: {e}")
            });
        assert_eq!(
            res.status, 200,
            "GET /ok #{i} beside a slow upload the upstream already answered"
        );
    }
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_long_uris_414() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("max_header_size = 8192")
        .proxy_line("max_uri_length = 128")
        .start()
        .await;
    let big = "v".repeat(12_000);
    let res = wg.proxy(Req::get("/h").header("x-big", &big)).await;
    assert_eq!(res.status, 431);
    let fits = "v".repeat(4000);
    assert_eq!(
        wg.proxy(Req::get("/h").header("x-big", &fits)).await.status,
        200
    );
    let long = format!("/{}", "u".repeat(200));
    assert_eq!(wg.proxy(Req::get(&long)).await.status, 414);
    let query = format!("/q?{}", "u".repeat(200));
    assert_eq!(wg.proxy(Req::get(&query)).await.status, 414);
    let short = format!("/{}", "u".repeat(100));
    assert_eq!(wg.proxy(Req::get(&short)).await.status, 200);
    assert_eq!(
        up.hits(),
        2,
        "only the requests within the limits were forwarded"
    );
}

/// A head over `max_header_size` (`limit`), over HTTP/1.1 and HTTP/2, to an h2c listener.
async fn h2c_heads_over(limit: usize) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("h2c = true")
        .proxy_line(&format!("max_header_size = {limit}"))
        .start()
        .await;
    let big = "v".repeat(limit + limit / 2);
    let fits = "v".repeat(limit / 2);
    let res = wg.proxy(Req::get("/h").header("x-big", &fits)).await;
    assert_eq!(
        res.status, 200,
        "HTTP/1.1 head within max_header_size {limit}"
    );
    let res = wg.proxy(Req::get("/h").header("x-big", &big)).await;
    assert_eq!(
        res.status, 431,
        "HTTP/1.1 head over max_header_size {limit} with h2c on"
    );
    let mut conn = h2(wg.proxy).await;
    let req = Request::builder()
        .uri(format!("http://{}/h", wg.proxy))
        .header("x-big", big.as_str())
        .body(Full::new(Bytes::new()))
        .expect("request");
    conn.ready().await.expect("ready");
    let res = tokio::time::timeout(Duration::from_secs(10), conn.send_request(req))
        .await
        .expect("an h2 answer within 10 s");
    // Either a 431 or a refusal at the HTTP/2 layer; never forwarded.
    if let Ok(res) = res {
        assert_eq!(res.status(), 431, "h2 head over max_header_size {limit}");
    }
    assert_eq!(up.hits(), 1, "an oversized head was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_with_h2c_on_too() {
    h2c_heads_over(16 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_with_h2c_on_at_the_smallest_limit() {
    // 8 KiB, the smallest max_header_size (hyper's smallest read buffer with h2c on).
    h2c_heads_over(8192).await;
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Connects to `addr`, writes `first`, then nothing: is the connection closed within 5 s?
async fn closed_after_writing(addr: SocketAddr, first: &[u8]) -> bool {
    let (mut r, mut w) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    w.write_all(first).await.expect("write");
    let closed = until_closed(&mut r, Duration::from_secs(5)).await.is_some();
    drop(w);
    closed
}

async fn h2c_with_header_timeout() -> (Upstream, Instance) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("h2c = true")
        .proxy_line("header_timeout = \"1s\"")
        .start()
        .await;
    (up, wg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_listener_closes_silent_and_half_sent_connections_after_header_timeout() {
    let (up, wg) = h2c_with_header_timeout().await;
    assert!(
        closed_after_writing(wg.proxy, b"GET / HTTP/1.1\r\nHost: a\r\n").await,
        "h2c on: a half-sent HTTP/1.1 head outlived header_timeout (1s) by 4 s"
    );
    assert!(
        closed_after_writing(wg.proxy, b"").await,
        "h2c on: a connection that sends nothing outlived header_timeout (1s) by 4 s"
    );
    assert!(
        closed_after_writing(wg.proxy, b"PRI * HT").await,
        "h2c on: a half-sent HTTP/2 preface outlived header_timeout (1s) by 4 s"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connections_close_after_the_header_timeout() {
    let (_up, wg) = h2c_with_header_timeout().await;
    assert!(
        closed_after_writing(wg.proxy, H2_PREFACE).await,
        "an idle HTTP/2 connection outlived header_timeout (1s) by 4 s"
    );
}

/// The idle deadline counts a streamed answer as busy until its last byte: a live event
/// stream over HTTP/2 outlives header_timeout many times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_http2_event_stream_is_not_cut_by_the_idle_deadline() {
    let (_up, wg) = h2c_with_header_timeout().await;
    let mut sender = h2(wg.proxy).await;
    let req = Request::builder()
        .uri(format!("http://{}/.well-known/writeguard/events", wg.proxy))
        .body(Full::new(Bytes::new()))
        .expect("request");
    sender.ready().await.expect("h2 connection ready");
    let res = sender.send_request(req).await.expect("events over h2");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut seen = String::new();
    let mut next_event = async |seen: &mut String, want: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !seen.contains(want) {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} event within 5 s; got {seen:?}"))
                .unwrap_or_else(|| panic!("the event stream ended; got {seen:?}"))
                .expect("event stream frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    next_event(&mut seen, "\"guarded\":false").await;
    // Three header timeouts later, the stream still carries the next change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(wg.engage("deploy", None).await.status, 201);
    next_event(&mut seen, "\"guarded\":true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_long_uris_get_414_and_slow_bodies_408() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("h2c = true")
        .proxy_line("max_uri_length = 128")
        .proxy_line("body_idle_timeout = \"1s\"")
        .proxy_line("body_timeout = \"2s\"")
        .start()
        .await;
    let mut conn = h2(wg.proxy).await;
    let long = format!("/{}", "u".repeat(200));
    let (status, _) = h2_send(&mut conn, wg.proxy, "GET", &long, &[]).await;
    assert_eq!(status, 414, "h2 URI over max_uri_length");
    assert_eq!(up.hits(), 0);

    // A body that announces 100 bytes, sends 10 and stalls.
    let stream = TcpStream::connect(wg.proxy).await.expect("connect");
    let (mut sender, h2conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = h2conn.await;
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >(1);
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(
        b"0123456789",
    ))))
    .await
    .expect("queue a frame");
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{}/stall", wg.proxy))
        .header("content-length", "100")
        .body(body)
        .expect("request");
    sender.ready().await.expect("ready");
    let res = tokio::time::timeout(Duration::from_secs(8), sender.send_request(req))
        .await
        .expect("a stalled h2 body was not cut within 8 s");
    if let Ok(res) = res {
        assert_eq!(res.status(), 408, "stalled h2 body");
    }
    drop(tx);
    assert!(
        !up.records().iter().any(|r| r.uri == "/stall"),
        "the upstream got a complete stalled request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_requests_are_guarded_like_any_other() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    engaged(&wg).await;
    let smuggle = [
        // Both framings: the POST hides in the body by one reading, not by the other.
        "GET /a HTTP/1.1\r\nHost: app.test\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /orders HTTP/1.1\r\nHost: app.test\r\n\r\n",
        // Plain pipelining: a POST right behind a GET on the same connection.
        "GET /b HTTP/1.1\r\nHost: app.test\r\n\r\nPOST /orders HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nx=1",
        // An obsolete line fold that might hide an override header from one parser.
        "GET /c HTTP/1.1\r\nHost: app.test\r\nX-Other: 1\r\n X-HTTP-Method-Override: POST\r\n\r\n",
    ];
    for raw in smuggle {
        let (mut r, mut w) = TcpStream::connect(wg.proxy)
            .await
            .expect("connect")
            .into_split();
        w.write_all(raw.as_bytes()).await.expect("write");
        // Whatever comes, until the connection closes or 2 s pass.
        let _ = until_closed(&mut r, Duration::from_secs(2)).await;
    }
    let posts: Vec<_> = up
        .records()
        .into_iter()
        .filter(|r| !r.method.eq_ignore_ascii_case("GET") || r.uri.contains("orders"))
        .collect();
    assert!(posts.is_empty(), "smuggled past the guard: {posts:?}");
}

/// The process's soft limit on open files (Linux `/proc`), 1024 when unknown.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_requests_succeed_while_many_slow_clients_hang_on() {
    // 2,000 where the fd limit allows (both ends live in this process's limit), else 500.
    let slow = if open_files_limit() >= 8192 {
        2000
    } else {
        500
    };
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("header_timeout = \"20s\"")
        .proxy_line("body_idle_timeout = \"20s\"")
        .start()
        .await;
    let mut held = Vec::with_capacity(slow);
    for i in 0..slow {
        let mut s = TcpStream::connect(wg.proxy)
            .await
            .expect("connect a slow client");
        // Half of them stop mid-head, half mid-body.
        let part: &[u8] = if i % 2 == 0 {
            b"GET /slowloris HTTP/1.1\r\nHost: app.test\r\nX-A: b"
        } else {
            b"POST /slowbody HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\nab"
        };
        s.write_all(part).await.expect("write a partial request");
        held.push(s);
    }
    for i in 0..20 {
        let res = wg
            .proxy(
                Req::new("POST", &format!("/normal/{i}"))
                    .body("x=1")
                    .timeout(Duration::from_secs(5)),
            )
            .await;
        assert_eq!(res.status, 200);
        let res = wg
            .proxy(Req::get(&format!("/normal/{i}")).timeout(Duration::from_secs(5)))
            .await;
        assert_eq!(res.status, 200);
    }
    // The slow clients were really there all along: the proxy still holds them open.
    let mut open = 0;
    for s in held.iter_mut().step_by(50) {
        let mut b = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(20), s.read(&mut b))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    assert_eq!(open, slow / 50, "slow connections were closed early");
}

// ---------------------------------------------------------------------------------------
// 3. Upstream faults
// ---------------------------------------------------------------------------------------

fn warn_lines(wg: &Instance) -> Vec<String> {
    wg.logs()
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(str::to_string)
        .collect()
}

/// A request that must not hang: at most 8 s.
async fn quick(wg: &Instance, method: &str, path: &str) -> Result<common::Resp, String> {
    let mut req = Req::new(method, path).timeout(Duration::from_secs(8));
    if method == "POST" {
        req = req.body("x=1");
    }
    req.try_send(wg.proxy).await
}

fn faulty_wg(url: String) -> Wg {
    Wg::new(url)
        .proxy_line("upstream_timeout = \"1s\"")
        .proxy_line("upstream_retry = \"300ms\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_give_one_clean_502_or_504_each_logged_once() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url()).start().await;
    let mut failures = 0;
    for method in ["GET", "POST"] {
        for (path, status) in [
            ("/garbage", 502),
            ("/badstatus", 502),
            ("/dupcl", 502),
            ("/reset-head", 502),
            ("/hang", 504),
        ] {
            let res = quick(&wg, method, path)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(res.status, status, "{method} {path}: {}", res.text());
            failures += 1;
            let warns = warn_lines(&wg);
            assert_eq!(
                warns.len(),
                failures,
                "{method} {path}: expected exactly one WARN line per failed request:\n{}",
                warns.join("\n")
            );
            let ok = quick(&wg, method, "/ok").await.expect("the next request");
            assert_eq!(ok.status, 200, "{method} /ok after {path}");
            assert_eq!(ok.text(), "ok");
        }
    }
    // The request the upstream took but did not answer is never sent again.
    assert_eq!(f.count("/hang"), 2, "a timed-out request was replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_upload_is_not_logged_as_an_upstream_failure() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    assert!(
        common::eventually(Duration::from_secs(5), || async { up.hits() == 1 }).await,
        "the upload never started upstream"
    );
    drop(conn);
    // The proxy notices when it next reads the body; then it answers (nobody) and logs.
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            wg.logs().contains("decision=Forward method=POST")
        })
        .await,
        "no access line for the abandoned upload"
    );
    let warns = warn_lines(&wg);
    assert!(
        warns.is_empty(),
        "a client that went away was logged as an upstream failure:\n{}",
        warns.join("\n")
    );
    assert!(
        up.records().is_empty(),
        "the upstream got a complete request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_delays_only_its_own_client() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url()).start().await;
    let proxy = wg.proxy;
    let hung = tokio::spawn(async move {
        Req::get("/hang")
            .timeout(Duration::from_secs(8))
            .try_send(proxy)
            .await
    });
    assert!(
        common::eventually(Duration::from_secs(5), || async { f.count("/hang") == 1 }).await,
        "the hung request never reached the upstream"
    );
    for _ in 0..5 {
        let ok = quick(&wg, "GET", "/ok")
            .await
            .expect("a request beside a hung one");
        assert_eq!(ok.status, 200);
    }
    assert!(
        !hung.is_finished(),
        "the hung request ended before upstream_timeout"
    );
    let res = hung
        .await
        .expect("join")
        .expect("an answer to the hung request");
    assert_eq!(res.status, 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_gives_504() {
    let f = Faulty::start().await;
    f.mute(true);
    let wg = faulty_wg(f.url()).start().await;
    let res = quick(&wg, "POST", "/x").await.expect("an answer");
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(warn_lines(&wg).len(), 1, "{}", warn_lines(&wg).join("\n"));
    f.mute(false);
    let ok = quick(&wg, "POST", "/ok").await.expect("the next request");
    assert_eq!(ok.status, 200);
    assert_eq!(f.count("/x"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_gives_502_logged_once() {
    let nobody = common::free_port();
    let wg = faulty_wg(format!("http://{nobody}")).start().await;
    for (i, method) in ["GET", "POST"].into_iter().enumerate() {
        let res = quick(&wg, method, "/x").await.expect("an answer");
        assert_eq!(res.status, 502, "{method}: {}", res.text());
        let warns = warn_lines(&wg);
        assert_eq!(warns.len(), i + 1, "{method}:\n{}", warns.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_response_breaks_that_response_only() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url()).start().await;
    match quick(&wg, "GET", "/reset-body").await {
        // The head (200, 1000 bytes announced) was already sent: the client must see the
        // body cut short, never a complete-looking response.
        Ok(res) => assert!(
            res.status == 502 || (res.status == 200 && res.body.len() < 1000),
            "{} with {} bytes",
            res.status,
            res.body.len()
        ),
        Err(e) => assert!(!e.contains("no complete answer within"), "hung: {e}"),
    }
    let warns = warn_lines(&wg);
    assert!(
        warns.len() <= 1,
        "logged more than once:\n{}",
        warns.join("\n")
    );
    let ok = quick(&wg, "GET", "/ok").await.expect("the next request");
    assert_eq!(ok.status, 200);
}
