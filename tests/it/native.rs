//! `proxy.engine = "native"`: the httparse-based HTTP/1.1 path. What the app receives and
//! what the client sees are the same as with hyper (the same raw requests through an
//! instance of each engine, compared); one connection moves from the native path to hyper
//! when a request is not the native path's (a public route), answered in order; answers
//! of every framing (length, chunked, until close) reach the client whole; a HEAD answered
//! by writeguard itself gets no body from either; `[stale]` is served by the native path
//! itself (an answer only it refuses to frame is a failure that the store answers). The
//! rest of the suite runs against this engine (the default), and against hyper with
//! `WG_TEST_ENGINE=hyper`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::client::{comparable, RawConn, RawResp};
use crate::common::pattern;
use crate::common::server::unframable;
use crate::common::upstream::{sha256_hex, Recorded};
use crate::common::{Instance, Upstream, Wg};

async fn with_engine(up: &Upstream, engine: &str, extra: &[&str]) -> Instance {
    let mut wg = Wg::for_upstream(up)
        .methods(&["POST"])
        .proxy_line(&format!("engine = \"{engine}\""));
    for line in extra {
        wg = wg.proxy_line(line);
    }
    wg.start().await
}

/// A request as the app saw it, minus what differs between two instances (their ports).
fn seen(r: &Recorded) -> (String, String, BTreeMap<String, Vec<String>>, Vec<u8>) {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &r.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    (r.method.clone(), r.uri.clone(), headers, r.body.to_vec())
}

/// A response as the client saw it; of `date` (the app's, or added when it sent none),
/// only that there is one.
fn answer(r: &RawResp) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    (r.status, comparable(&r.headers).collect(), r.body.clone())
}

const REQUESTS: &[&str] = &[
    "GET /plain?q=1&r=%2F HTTP/1.1\r\nHost: app.test\r\nUser-Agent: t\r\n\r\n",
    "GET /hop HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: x\r\nTrailer: X-T\r\nX-Kept: k\r\n\r\n",
    "GET /fwd HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.7\r\nx-forwarded-for: 198.51.100.1\r\nX-Forwarded-Host: front.test\r\nX-Forwarded-Proto: https\r\n\r\n",
    "GET /named HTTP/1.1\r\nHost: app.test\r\nConnection: X-Forwarded-Host, x-forwarded-proto\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\n\r\n",
    "POST /cl HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    "PUT /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    "GET /__status/418 HTTP/1.1\r\nHost: app.test\r\nX_User: shadow\r\n\r\n",
    "HEAD /__big/1000 HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "GET /__bigchunked/70000 HTTP/1.1\r\nHost: app.test\r\n\r\n",
    "DELETE /__status/204 HTTP/1.1\r\nHost: app.test\r\n\r\n",
];

async fn run_all(wg: &Instance) -> Vec<RawResp> {
    let mut conn = RawConn::connect(wg.proxy).await;
    let mut answers = Vec::new();
    for raw in REQUESTS {
        conn.write(raw.as_bytes()).await;
        answers.push(conn.read_response(raw.starts_with("HEAD")).await);
    }
    assert!(!conn.closed_within(Duration::from_millis(50)).await);
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_forward_the_same_requests_and_answers_the_same_way() {
    for extra in [
        &[][..],
        &[
            "underscore_headers = \"drop\"",
            "upstream_host = \"internal.test:8080\"",
        ],
    ] {
        let up_hyper = Upstream::start().await;
        let up_native = Upstream::start().await;
        let hyper = with_engine(&up_hyper, "hyper", extra).await;
        let native = with_engine(&up_native, "native", extra).await;
        let (a, b) = (run_all(&hyper).await, run_all(&native).await);
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let (a, b) = (answer(a), answer(b));
            // hyper answers a HEAD with the length of the body it would have sent.
            assert_eq!(a, b, "answer to request {i} ({extra:?})");
        }
        let (a, b) = (up_hyper.records(), up_native.records());
        assert_eq!(a.len(), REQUESTS.len());
        assert_eq!(b.len(), REQUESTS.len());
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                seen(a),
                seen(b),
                "request {i} as the app saw it ({extra:?})"
            );
        }
        if extra.is_empty() {
            let fwd = &b[2];
            assert_eq!(
                fwd.header("x-forwarded-for"),
                Some("203.0.113.7, 127.0.0.1")
            );
            assert_eq!(b[1].header("x-secret"), None);
            assert_eq!(b[1].header("x-kept"), Some("k"));
            assert_eq!(b[3].header("x-forwarded-host"), Some("app.test"));
            assert_eq!(b[5].body.as_ref(), b"hello world");
        } else {
            assert_eq!(b[0].header("host"), Some("internal.test:8080"));
            assert_eq!(b[6].header("x_user"), None);
        }
    }
}

/// Guarded writes while engaged (holding off): the same 503s from both engines.
const REFUSED: &[&str] = &[
    "POST /w1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST /w2 HTTP/1.1\r\nHost: x\r\nAccept: text/html,*/*;q=0.8\r\nContent-Length: 0\r\n\r\n",
    "PATCH /w3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "GET /w4 HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override: DELETE\r\n\r\n",
    "GET /read HTTP/1.1\r\nHost: x\r\n\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_write_gets_the_same_503_from_both_engines_and_the_connection_goes_on() {
    let mut answers = Vec::new();
    for engine in ["hyper", "native"] {
        let up = Upstream::start().await;
        let wg = Wg::for_upstream(&up)
            .methods(&["POST", "PATCH", "DELETE"])
            .proxy_line(&format!("engine = \"{engine}\""))
            .proxy_line("drain_limit = 100")
            .start()
            .await;
        assert_eq!(wg.engage("deploy", None).await.status, 201);
        let mut conn = RawConn::connect(wg.proxy).await;
        let mut got = Vec::new();
        for raw in REFUSED {
            conn.write(raw.as_bytes()).await;
            got.push(answer(&conn.read_response(false).await));
        }
        assert!(
            !conn.closed_within(Duration::from_millis(50)).await,
            "{engine}"
        );
        // A body over drain_limit: the 503, and the connection closes.
        conn.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .await;
        let big = conn.read_response(false).await;
        assert_eq!(big.status, 503, "{engine}");
        assert_eq!(big.header("connection"), Some("close"), "{engine}");
        assert!(conn.closed_within(Duration::from_secs(5)).await, "{engine}");
        got.push(answer(&big));
        let uris: Vec<String> = up.records().iter().map(|r| r.uri.clone()).collect();
        assert_eq!(
            uris,
            ["/read"],
            "{engine}: no guarded write reached the app"
        );
        answers.push(got);
    }
    for (i, (a, b)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert_eq!(a, b, "answer {i}: hyper, then native");
    }
    assert_eq!(answers[1][0].0, 503);
    assert_eq!(
        answers[1][0].1.get("retry-after").map(String::as_str),
        Some("30")
    );
    assert!(answers[1][1].1["content-type"].starts_with("text/html"));
    assert_eq!(answers[1][4].0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_moves_to_hyper_where_the_native_path_stops_and_answers_in_order() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .methods(&["POST"])
        .hold("30s")
        .proxy_line("engine = \"native\"")
        .start()
        .await;
    let mut conn = RawConn::connect(wg.proxy).await;
    // Pipelined: a read (native), the public status route (the hyper path's), a read after
    // it (now on hyper too), and an HTTP/1.0 request.
    conn.write(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /.well-known/writeguard/status HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let a = conn.read_response(false).await;
    let status = conn.read_response(false).await;
    let b = conn.read_response(false).await;
    assert_eq!((a.status, status.status, b.status), (200, 200, 200));
    assert!(a.text().contains("/a") && b.text().contains("/b"));
    assert!(
        status.text().contains("\"guarded\":false"),
        "{}",
        status.text()
    );
    // Engaged with holding on: a guarded write is held (by the native path itself, see
    // `hold_forward`), then forwarded once released; the connection it came on goes on.
    assert_eq!(wg.engage("deploy", None).await.status, 201);
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\nPOST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        .await;
    assert_eq!(conn.read_response(false).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count_method("POST"), 0, "held, not forwarded");
    crate::common::released(&wg).await;
    let held = conn.read_response(false).await;
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(up.count_method("POST"), 1);
    let uris: Vec<String> = up.records().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(uris, ["/a", "/b", "/c", "/held"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_every_framing_reach_the_client_whole() {
    let up = Upstream::start().await;
    let wg = with_engine(&up, "native", &[]).await;
    let mut conn = RawConn::connect(wg.proxy).await;
    for path in ["/__big/100000", "/__bigchunked/100000"] {
        conn.write(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let res = conn.read_response(false).await;
        assert_eq!(res.status, 200);
        assert_eq!(
            sha256_hex(&res.body),
            sha256_hex(&pattern(100_000, 7)),
            "{path}"
        );
    }
    // An app that ends its answer by closing (no length, not chunked): chunked to the
    // client, whose connection stays open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            .await
            .unwrap();
    });
    let wg = Wg::new(format!("http://{addr}"))
        .proxy_line("engine = \"native\"")
        .start()
        .await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(res.text(), "until the end");
    assert!(!conn.closed_within(Duration::from_millis(50)).await);
    app.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_served_by_the_native_path_itself() {
    let mut seen = Vec::new();
    for engine in ["hyper", "native"] {
        let (url, app) = unframable(true).await;
        let wg = Wg::new(url)
            .proxy_line(&format!("engine = \"{engine}\""))
            .proxy_line("upstream_retry = \"0s\"")
            .section("[stale]\nenabled = true")
            .start()
            .await;
        let mut conn = RawConn::connect(wg.proxy).await;
        conn.write(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let first = conn.read_response(false).await;
        assert_eq!(
            (first.status, first.text().as_str()),
            (200, "page"),
            "{engine}"
        );
        // The stored copy is a second old: the next answer would be copied again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        conn.write(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let second = conn.read_response(false).await;
        assert!(
            !conn.closed_within(Duration::from_millis(50)).await,
            "{engine}"
        );
        seen.push((
            second.status,
            second.text(),
            second.header("cache-status").map(str::to_owned),
        ));
        app.abort();
    }
    // hyper passes the app's answer; the native engine cannot frame it, and a failure of
    // the app's is what the store answers, there and then, on the native path.
    assert_eq!(seen[0], (200, "new".to_owned(), None));
    assert_eq!(
        seen[1],
        (
            200,
            "page".to_owned(),
            Some("writeguard; hit; fwd=stale".to_owned())
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answered_by_writeguard_gets_no_body_from_either_engine() {
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    let mut answers = Vec::new();
    for engine in ["hyper", "native"] {
        let wg = Wg::new(format!("http://{addr}"))
            .proxy_line(&format!("engine = \"{engine}\""))
            .proxy_line("upstream_retry = \"0s\"")
            .start()
            .await;
        let mut conn = RawConn::connect(wg.proxy).await;
        conn.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let head = conn.read_response(true).await;
        // Read right after: a body sent with the HEAD's answer would be read as this one.
        conn.write(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let get = conn.read_response(false).await;
        assert_eq!((head.status, get.status), (502, 502), "{engine}");
        assert!(head.body.is_empty() && !get.body.is_empty(), "{engine}");
        answers.push((answer(&head), answer(&get)));
    }
    assert_eq!(answers[0], answers[1], "hyper, then native");
}

/// The public reads (`/status` GET and HEAD, `/banner.js`, the status holder's
/// `/api/{project}/{environment}`, with CORS) are answered by the native engine itself,
/// through the one function that answers them on the hyper path (`Public::read`): the same
/// answers from both engines, and the connection is not handed to hyper for them (the next
/// request on it gets the native engine's 502 for an app answer only that engine refuses to
/// frame, where hyper passes the answer on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_reads_are_the_native_engines_own_with_hypers_answers() {
    const READS: &[&str] = &[
        "GET /.well-known/writeguard/status HTTP/1.1\r\nHost: x\r\nOrigin: https://shop.test\r\n\r\n",
        "HEAD /.well-known/writeguard/status HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /.well-known/writeguard/banner.js HTTP/1.1\r\nHost: x\r\nOrigin: https://other.test\r\n\r\n",
        "GET /.well-known/writeguard/api/proj/main HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /.well-known/writeguard/api/proj HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    let mut answers = Vec::new();
    let mut next = Vec::new();
    for engine in ["hyper", "native"] {
        let (url, app) = unframable(false).await;
        let wg = Wg::new(url)
            .proxy_line(&format!("engine = \"{engine}\""))
            .proxy_line("upstream_retry = \"0s\"")
            .public_line("cors_origins = [\"https://shop.test\"]")
            .start()
            .await;
        let mut conn = RawConn::connect(wg.proxy).await;
        let mut got = Vec::new();
        for raw in READS {
            conn.write(raw.as_bytes()).await;
            got.push(answer(&conn.read_response(raw.starts_with("HEAD")).await));
        }
        conn.write(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n").await;
        next.push(conn.read_response(false).await.status);
        answers.push(got);
        app.abort();
    }
    let statuses: Vec<u16> = answers[1].iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 404]);
    let shop = &answers[1][0].1;
    assert_eq!(
        shop.get("access-control-allow-origin").map(String::as_str),
        Some("https://shop.test")
    );
    assert!(!answers[1][2].1.contains_key("access-control-allow-origin"));
    for (i, (a, b)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert_eq!(a, b, "read {i}: hyper, then native");
    }
    assert_eq!(
        next,
        [200, 502],
        "the connection stayed on the native engine"
    );
}
