//! No way around the guard: method spellings, extension methods, override headers, path
//! tricks against `allow_paths`, the same over HTTP/2, WebSocket upgrades, `CONNECT`, and
//! requests smuggled behind harmless ones.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::client::RawConn;
use crate::common::faulty::Faulty;
use crate::common::{engaged, h2c, released, Req, Upstream, Wg};

use super::until_closed;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_guarded_like_http1_ones() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .allow_paths(&["/login"])
        .proxy_line("h2c = true")
        .start()
        .await;
    let mut conn = h2c::connect(wg.proxy).await;
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
        let (status, h) = h2c::send(&mut conn, wg.proxy, method, path, headers).await;
        assert_eq!(status, 503, "h2 {method} {path} {headers:?} while guarded");
        assert!(h.contains_key("retry-after"), "h2 {method} {path}");
    }
    assert_eq!(up.hits(), 0, "a guarded h2 request reached the upstream");
    for (method, path) in [("GET", "/orders"), ("POST", "/login")] {
        let (status, _) = h2c::send(&mut conn, wg.proxy, method, path, &[]).await;
        assert_eq!(status, 200, "h2 {method} {path} while guarded");
    }
    assert_eq!(up.hits(), 2);

    released(&wg).await;
    for (i, (method, path, headers)) in cases.iter().enumerate() {
        let (status, _) = h2c::send(&mut conn, wg.proxy, method, path, headers).await;
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
