//! Holes a review of the release binary found in the data path, closed: `wait: quiesced`
//! counts every watched write until its last byte both ways; writes sent right after a
//! release queue behind the held ones; held writes are answered at shutdown; HTTP/1.1 without
//! `Host` (or with two) and underscore spellings of framing headers are refused; held writes
//! cannot take every file descriptor.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::common;
use crate::common::client::RawConn;
use crate::common::faulty::Faulty;
use crate::common::process::{limit_nofile, Process};
use crate::common::{h2c, Instance, Req, Resp, Upstream, Wg};

async fn engage(wg: &Instance) {
    let res = wg.engage("deploy", None).await;
    assert_eq!(res.status, 201, "engage: {}", res.text());
}

/// `POST /guard {"wait": "quiesced", "timeout": timeout}`.
async fn quiesce(admin: SocketAddr, timeout: &str) -> Resp {
    Req::new("POST", "/guard")
        .bearer(common::TOKEN)
        .json(&json!({"reason": "migrations", "wait": "quiesced", "timeout": timeout}))
        .timeout(Duration::from_secs(15))
        .send(admin)
        .await
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    let res = Req::get("/status").send(admin).await;
    assert_eq!(res.status, 200, "GET /status: {}", res.text());
    res.json()
}

async fn held(admin: SocketAddr) -> u64 {
    status(admin).await["held"]
        .as_u64()
        .expect("/status has a numeric `held`")
}

/// Waits (bounded) until `/status` shows `n` held writes.
async fn wait_held(admin: SocketAddr, n: u64) {
    let ok = common::eventually(Duration::from_secs(10), || async { held(admin).await == n }).await;
    assert!(ok, "/status did not show {n} held writes within 10 s");
}

/// Quiesced answers 504 while the write streams, and 201 once it is done (`finish`).
async fn assert_quiesced_only_after<F: std::future::Future<Output = ()>>(
    wg: &Instance,
    what: &str,
    finish: F,
) {
    let res = quiesce(wg.admin, "1s").await;
    assert_eq!(
        res.status,
        504,
        "{what}: wait quiesced answered while the write was still in flight: {}",
        res.text()
    );
    assert!(
        status(wg.admin).await["in_flight_writes"].as_u64() >= Some(1),
        "{what}: /status shows no write in flight"
    );
    finish.await;
    let ok = common::eventually(Duration::from_secs(10), || async {
        status(wg.admin).await["in_flight_writes"] == 0
    })
    .await;
    assert!(ok, "{what}: the write still counts in flight once done");
    let res = quiesce(wg.admin, "5s").await;
    assert_eq!(res.status, 201, "{what}: once done: {}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesced_waits_for_a_request_body_still_streaming_after_its_answer() {
    // The app answers as soon as it has the head, then reads the body.
    let up = Faulty::start().await;
    let wg = Wg::new(up.url()).start().await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"POST /early HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "early");
    assert_quiesced_only_after(&wg, "a body still streaming up", async {
        conn.write(&[b'x'; 90]).await;
        let ok =
            common::eventually(Duration::from_secs(5), || async { up.seen().len() == 1 }).await;
        assert!(ok && up.seen()[0].complete, "the app got the whole body");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesced_waits_for_an_answer_still_streaming_to_its_client() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    // 64 MiB: more than every buffer between the app and a client that reads nothing.
    let len = 64 << 20;
    let mut client = TcpStream::connect(wg.proxy).await.expect("connect");
    client
        .write_all(
            format!("POST /__big/{len} HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nx=1")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut head))
        .await
        .expect("the answer starts within 10 s")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_quiesced_only_after(&wg, "an answer still streaming down", async {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = vec![0u8; 1 << 20];
            // The head's end, then exactly `len` bytes of body.
            loop {
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "the answer ended early");
                rest.extend_from_slice(&buf[..n]);
                if let Some(at) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
                    if rest.len() - at - 4 >= len {
                        return;
                    }
                }
            }
        })
        .await
        .expect("the whole answer within 30 s");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesced_counts_a_write_disguised_by_an_override_header() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let proxy = wg.proxy;
    let get: JoinHandle<Resp> = tokio::spawn(async move {
        Req::get("/__sleep/4000/disguised")
            .header("x-http-method-override", "POST")
            .timeout(Duration::from_secs(20))
            .send(proxy)
            .await
    });
    let ok = common::eventually(Duration::from_secs(5), || async { up.hits() == 1 }).await;
    assert!(ok, "the disguised write did not reach the app");
    assert_quiesced_only_after(&wg, "a GET overridden to POST", async {
        let res = get.await.expect("client task");
        assert_eq!(res.status, 200, "{}", res.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesced_counts_an_open_tunnel_until_it_closes() {
    let up = Faulty::start().await;
    let wg = Wg::new(up.url()).start().await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(
        b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let res = conn.read_response(true).await;
    assert_eq!(res.status, 101);
    assert_quiesced_only_after(&wg, "an open WebSocket tunnel", async {
        drop(conn);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_right_after_a_release_reach_the_app_after_the_held_ones() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .hold("30s")
        .guard_line("release_concurrency = 1")
        .start()
        .await;
    engage(&wg).await;
    let post = |id: &str, path: String| {
        let req = Req::new("POST", &path)
            .header("x-id", id)
            .body(format!("write {id}"))
            .timeout(Duration::from_secs(30));
        let proxy = wg.proxy;
        tokio::spawn(async move { req.send(proxy).await })
    };
    let mut posts = Vec::new();
    for (i, id) in ["held-1", "held-2", "held-3"].into_iter().enumerate() {
        // A slow app: each held write takes a second, one at a time.
        posts.push(post(id, format!("/__sleep/1000/{id}")));
        wait_held(wg.admin, i as u64 + 1).await;
    }
    let res = wg.release(false).await;
    assert_eq!(res.status, 200, "release: {}", res.text());
    posts.push(post("new-1", "/new-1".into()));
    posts.push(post("new-2", "/new-2".into()));
    for p in posts {
        let res = p.await.expect("client task");
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let order: Vec<String> = up
        .records()
        .iter()
        .map(|r| r.header("x-id").unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        order[..3],
        ["held-1", "held-2", "held-3"],
        "arrival order at the app: {order:?}"
    );
    let mut new = order[3..].to_vec();
    new.sort();
    assert_eq!(
        new,
        ["new-1", "new-2"],
        "arrival order at the app: {order:?}"
    );
    assert!(
        up.max_in_flight() <= 1,
        "release_concurrency = 1, yet the app had {} at once",
        up.max_in_flight()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_gets_a_503_with_close_as_soon_as_shutdown_starts() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up)
        .hold("60s")
        .shutdown_grace("30s")
        .start()
        .await;
    engage(&wg).await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"POST /orders HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nx=1")
        .await;
    wait_held(wg.admin, 1).await;
    wg.sigterm();
    // Within RawConn's 10 s, well before the 30 s grace or the 60 s hold.
    let res = conn.read_response(false).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("connection"), Some("close"));
    assert!(res.header("retry-after").is_some());
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    let exited = wg.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "no clean exit once the held write was answered: {exited:?}"
    );
    assert_eq!(up.hits(), 0, "the held write reached the app");
}

/// One request written byte for byte on a fresh connection: its answer, and whether the
/// connection closed after it.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String, bool) {
    let mut conn = RawConn::connect(addr).await;
    conn.write(bytes).await;
    let res = conn.read_response(false).await;
    let closed = conn.closed_within(Duration::from_secs(5)).await;
    (res.status, res.text(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_requests_without_host_or_with_two_are_refused() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    for (request, why) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "without Host"),
        (
            b"POST /orders HTTP/1.1\r\nContent-Length: 3\r\n\r\nx=1",
            "without Host",
        ),
        (b"GET http://app/ HTTP/1.1\r\n\r\n", "without Host"),
        (
            b"GET / HTTP/1.1\r\nHost: app\r\nHost: evil\r\n\r\n",
            "more than one Host",
        ),
        (
            b"GET / HTTP/1.0\r\nhost: app\r\nHOST: app\r\n\r\n",
            "more than one Host",
        ),
    ] {
        let (status, text, closed) = raw(wg.proxy, request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(status, 400, "{shown:?}: {text}");
        assert!(text.contains(why), "{shown:?}: {text}");
        assert!(closed, "{shown:?}: the connection stayed open");
    }
    assert_eq!(up.hits(), 0, "a refused request reached the app");
    // HTTP/1.0 had no Host.
    let (status, _, _) = raw(wg.proxy, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_framing_headers_are_refused() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    for request in [
        &b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nTransfer_Encoding: chunked\r\n\r\nx=1"[..],
        b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent_Length: 99\r\n\r\nx=1",
        b"POST /a HTTP/1.1\r\nHost: app\r\ncontent_length: 0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: app\r\nTRANSFER_encoding: chunked\r\n\r\n",
    ] {
        let (status, text, closed) = raw(wg.proxy, request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(status, 400, "{shown:?}: {text}");
        assert!(text.contains("'_'"), "{shown:?}: {text}");
        assert!(closed, "{shown:?}: the connection stayed open");
    }
    assert_eq!(up.hits(), 0, "a refused request reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_framing_headers_are_refused_over_http2_too() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).proxy_line("h2c = true").start().await;
    let mut sender = h2c::connect(wg.proxy).await;
    for (name, value) in [("content_length", "99"), ("transfer_encoding", "chunked")] {
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://{}/a", wg.proxy))
            .header(name, value)
            .body(Full::new(Bytes::from_static(b"x=1")))
            .expect("request");
        sender.ready().await.expect("h2 connection ready");
        let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("an answer within 10 s")
            .expect("an answer");
        assert_eq!(res.status(), 400, "{name}");
        res.into_body().collect().await.expect("body");
    }
    assert_eq!(up.hits(), 0, "a refused request reached the app");
}

/// `X_User` (an underscore header that is no framing header) with `underscore_headers`.
async fn underscored_header_reaches_the_app(mode: Option<&str>) -> (Option<String>, String) {
    let up = Upstream::start().await;
    let mut cfg = Wg::for_upstream(&up);
    if let Some(mode) = mode {
        cfg = cfg.proxy_line(&format!("underscore_headers = {mode:?}"));
    }
    let wg = cfg.start().await;
    let (status, text, _) = raw(
        wg.proxy,
        b"POST /a HTTP/1.1\r\nHost: app\r\nX_User: admin\r\nX-User: alice\r\nContent-Length: 3\r\n\r\nx=1",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = up.last();
    let user = seen.header("x-user").expect("X-User is kept").to_string();
    (seen.header("x_user").map(str::to_string), user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_underscore_headers_pass_by_default_and_go_with_drop() {
    assert_eq!(
        underscored_header_reaches_the_app(None).await,
        (Some("admin".into()), "alice".into())
    );
    assert_eq!(
        underscored_header_reaches_the_app(Some("pass")).await,
        (Some("admin".into()), "alice".into())
    );
    assert_eq!(
        underscored_header_reaches_the_app(Some("drop")).await,
        (None, "alice".into())
    );
}

/// A temp dir for [`limited`].
fn nofile_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wg-it-nofile-")
        .tempdir()
        .expect("temp dir")
}

/// The binary in `dir` on fresh ports with `RLIMIT_NOFILE` = `soft`/`hard` (set in the
/// child before exec); waits (bounded) until it is ready.
async fn limited(dir: &Path, cfg: &Wg, soft: u64, hard: u64) -> Process {
    let (proxy, admin) = (common::free_port(), common::free_port());
    let mut wg = Process::spawn_with(
        dir,
        "writeguard",
        &cfg.render(proxy, admin, dir),
        &[],
        &[],
        (proxy, admin),
        |cmd| limit_nofile(cmd, soft, hard),
    );
    wg.ready().await;
    wg
}

/// The soft open-file limit the process `pid` runs with (`/proc/<pid>/limits`).
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("limits"))
        .expect("read /proc/<pid>/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a numeric soft limit")
}

/// This process's hard `RLIMIT_NOFILE`.
#[allow(unsafe_code)]
fn hard_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    assert!(ok, "getrlimit");
    lim.rlim_max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let up = Upstream::start().await;
    let hard = hard_nofile().min(4096);
    let dir = nofile_dir();
    let wg = limited(dir.path(), &Wg::for_upstream(&up), 64, hard).await;
    assert_eq!(soft_nofile(wg.pid()), hard, "log:\n{}", wg.logs());
    // 10,000 held writes (the default) do not fit in 4096 descriptors: said at start.
    if hard < 10_000 {
        assert!(
            wg.logs()
                .contains("below what guard.hold_max_requests needs"),
            "log:\n{}",
            wg.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_leave_file_descriptors_for_reads() {
    let up = Upstream::start().await;
    let cfg = Wg::for_upstream(&up)
        .hold("60s")
        .guard_line("release_concurrency = 4");
    let dir = nofile_dir();
    let wg = limited(dir.path(), &cfg, 64, 64).await;
    let res = Req::new("POST", "/guard")
        .bearer(common::TOKEN)
        .json(&json!({"reason": "deploy"}))
        .send(wg.admin)
        .await;
    assert_eq!(res.status, 201, "engage: {}", res.text());

    // Hold writes until one gets the 503 at once; each is either held or answered.
    let mut holding: Vec<JoinHandle<Resp>> = Vec::new();
    let mut refused = None;
    for i in 0..64u64 {
        let proxy = wg.proxy;
        let post = tokio::spawn(async move {
            Req::new("POST", &format!("/orders/{i}"))
                .body("x=1")
                .timeout(Duration::from_secs(60))
                .send(proxy)
                .await
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if post.is_finished() {
                break;
            }
            // A short timeout of our own: an admin port that cannot accept says it all.
            let status = Req::get("/status")
                .timeout(Duration::from_secs(5))
                .try_send(wg.admin)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "after {i} held writes the admin port does not answer ({e}): descriptors exhausted? log:\n{}",
                        wg.logs()
                    )
                });
            if status.json()["held"] == i + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "POST {i} was neither held nor answered within 10 s (descriptors exhausted?); log:\n{}",
                wg.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if post.is_finished() {
            refused = Some(post.await.expect("client task"));
            break;
        }
        holding.push(post);
    }
    let refused = refused.expect("64 writes held under a limit of 64 descriptors");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(
        holding.len() >= 8,
        "only {} writes held before the headroom ran out",
        holding.len()
    );

    // Reads are still accepted and served; more writes still get the 503 at once.
    for i in 0..3 {
        let res = Req::get(&format!("/catalog/{i}"))
            .timeout(Duration::from_secs(5))
            .send(wg.proxy)
            .await;
        assert_eq!(
            res.status,
            200,
            "a read beside the held writes: {}",
            res.text()
        );
    }
    let res = Req::new("POST", "/orders/extra")
        .body("x=1")
        .timeout(Duration::from_secs(5))
        .send(wg.proxy)
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(up.count_method("POST"), 0);

    // The held ones are forwarded at the release.
    let res = Req::new("DELETE", "/guard")
        .bearer(common::TOKEN)
        .send(wg.admin)
        .await;
    assert_eq!(res.status, 200, "release: {}", res.text());
    let n = holding.len();
    for post in holding {
        let res = post.await.expect("client task");
        assert_eq!(
            res.status,
            200,
            "a held write after the release: {}",
            res.text()
        );
    }
    assert_eq!(up.count_method("POST"), n);
}
