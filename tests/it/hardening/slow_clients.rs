//! Slow and greedy clients: trickled heads and bodies, idle and silent connections (over
//! HTTP/1.1 and h2c) are cut at their deadlines, a live event stream is not, and normal
//! requests are served beside thousands of slow connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::client::RawConn;
use crate::common::faulty::Faulty;
use crate::common::{h2c, Instance, Req, Upstream, Wg};

use super::{faulty_wg, until_closed};

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
    // Back within the timeout, after idle gaps: served again on the same connection.
    for path in ["/b", "/c"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.write(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
            .await;
        assert_eq!(conn.read_response(false).await.status, 200, "{path}");
    }
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
    let mut sender = h2c::connect(wg.proxy).await;
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
    let mut conn = h2c::connect(wg.proxy).await;
    let long = format!("/{}", "u".repeat(200));
    let (status, _) = h2c::send(&mut conn, wg.proxy, "GET", &long, &[]).await;
    assert_eq!(status, 414, "h2 URI over max_uri_length");
    assert_eq!(up.hits(), 0);

    // A body that announces 100 bytes, sends 10 and stalls.
    let mut sender = h2c::connect(wg.proxy).await;
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
