//! Hold and forward over real sockets: a guarded write that arrives while guarded is held
//! at the proxy and forwarded exactly once at the release, or answered 503 once its hold
//! budget is spent; a client that leaves is never forwarded; the release is ordered and
//! bounded; idempotent requests ride through an app restart; `wait: quiesced`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::common;
use crate::common::upstream::sha256_hex;
use crate::common::{pattern, Instance, Req, Resp, Upstream, Wg};

/// `held` in `/status`.
async fn held(wg: &Instance) -> u64 {
    wg.status().await["held"]
        .as_u64()
        .expect("/status has a numeric `held`")
}

/// Waits (bounded) until `/status` shows exactly `n` held requests.
async fn wait_held(wg: &Instance, n: u64) {
    wait_held_within(wg, n, Duration::from_secs(10)).await
}

async fn wait_held_within(wg: &Instance, n: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = held(wg).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/status shows {now} held requests, expected {n} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn engage(wg: &Instance, ttl: Option<&str>) {
    let res = wg.engage("deploy", ttl).await;
    assert_eq!(res.status, 201, "engage: {}", res.text());
}

async fn release(wg: &Instance) {
    let res = wg.release(false).await;
    assert_eq!(res.status, 200, "release: {}", res.text());
}

/// A POST through the proxy in the background, tagged with `x-id: id`.
fn post_in_background(wg: &Instance, path: &str, id: &str, limit: Duration) -> JoinHandle<Resp> {
    let req = Req::new("POST", path)
        .header("x-id", id)
        .body(format!("write {id}"))
        .timeout(limit);
    let proxy = wg.proxy;
    tokio::spawn(async move { req.send(proxy).await })
}

/// The `x-id` of every POST the upstream received completely, in arrival order.
fn posted_ids(up: &Upstream) -> Vec<String> {
    up.records()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.header("x-id").unwrap_or("<no x-id>").to_string())
        .collect()
}

fn assert_503_with_retry_after(res: &Resp, what: &str) {
    assert_eq!(res.status, 503, "{what}: {}", res.text());
    let retry_after = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: the 503 has no Retry-After"));
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "{what}: Retry-After {retry_after:?} is not a number of seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_through_a_short_deploy_is_forwarded_once_with_the_apps_answer() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("10s").start().await;
    engage(&wg, None).await;
    let engaged = Instant::now();

    // A body larger than the socket buffers: it stays in the client while held.
    let body = pattern(256 * 1024, 3);
    let req = Req::new("POST", "/orders?n=1")
        .header("x-id", "held-1")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .timeout(Duration::from_secs(15));
    let proxy = wg.proxy;
    let post = tokio::spawn(async move { req.send(proxy).await });
    wait_held(&wg, 1).await;

    // Reads are never held by the guard.
    let read = wg
        .proxy(Req::get("/catalog").timeout(Duration::from_secs(2)))
        .await;
    assert_eq!(read.status, 200, "a read while guarded: {}", read.text());

    // A ~2 s deploy.
    tokio::time::sleep_until((engaged + Duration::from_secs(2)).into()).await;
    assert!(
        !post.is_finished(),
        "the held write was answered before the release"
    );
    assert_eq!(
        up.count_method("POST"),
        0,
        "the held write reached the app while guarded"
    );
    assert_eq!(held(&wg).await, 1);
    release(&wg).await;

    let res = post.await.expect("client task");
    assert_eq!(res.status, 200, "the released write: {}", res.text());
    assert_eq!(res.header("x-upstream"), Some("recorder"));
    assert_eq!(
        res.header("x-body-sha256"),
        Some(sha256_hex(&body).as_str()),
        "the app saw another body than the client sent"
    );
    let echo = res.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/orders?n=1");
    assert_eq!(echo["len"], body.len());

    // Exactly once, also a while later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posted_ids(&up), ["held-1"]);
    assert_eq!(up.last().body, body);
    assert_eq!(held(&wg).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_past_its_budget_gets_503_and_never_reaches_the_app() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("1s").start().await;
    engage(&wg, Some("30s")).await;

    let started = Instant::now();
    let res = wg
        .proxy(
            Req::new("POST", "/late")
                .header("x-id", "late")
                .body("x=1")
                .timeout(Duration::from_secs(10)),
        )
        .await;
    let waited = started.elapsed();
    assert_503_with_retry_after(&res, "a write held past `hold`");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}: it was not held for its budget (1s)"
    );
    assert_eq!(held(&wg).await, 0);

    release(&wg).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        up.hits(),
        0,
        "the timed-out write reached the app after the release"
    );

    // The app is reachable: a write after the release passes, and it is all the app saw.
    let after = wg
        .proxy(
            Req::new("POST", "/after")
                .header("x-id", "after")
                .body("x=2"),
        )
        .await;
    assert_eq!(after.status, 200, "{}", after.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posted_ids(&up), ["after"]);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_while_held_is_never_forwarded() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("10s").start().await;
    engage(&wg, None).await;

    // A: whole request sent, then the client goes away; the proxy notices while holding.
    // D: the same with most of its body still unsent, so nothing reads the socket while
    // it is held.
    for request in [
        &b"POST /gone/a HTTP/1.1\r\nhost: app\r\nx-id: gone-a\r\ncontent-length: 5\r\n\r\nhello"[..],
        b"POST /gone/d HTTP/1.1\r\nhost: app\r\nx-id: gone-d\r\ncontent-length: 100000\r\n\r\n0123",
    ] {
        let mut client = TcpStream::connect(wg.proxy).await.expect("connect");
        client.write_all(request).await.expect("write");
        wait_held(&wg, 1).await;
        drop(client);
        // Well before the 10 s hold runs out.
        wait_held_within(&wg, 0, Duration::from_secs(3)).await;
    }

    // C: stays, to show the release does forward held writes.
    let c = post_in_background(&wg, "/kept/c", "kept-c", Duration::from_secs(15));
    wait_held(&wg, 1).await;

    // B: part of the body sent, then gone just before the release (no time to notice
    // while holding).
    let mut b = TcpStream::connect(wg.proxy).await.expect("connect");
    b.write_all(
        b"POST /gone/b HTTP/1.1\r\nhost: app\r\nx-id: gone-b\r\ncontent-length: 1000\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    wait_held(&wg, 2).await;
    drop(b);
    release(&wg).await;

    let res = c.await.expect("client task");
    assert_eq!(res.status, 200, "the client that stayed: {}", res.text());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(posted_ids(&up), ["kept-c"]);
    assert_eq!(
        up.hits(),
        1,
        "a write whose client had gone reached the app: {:?}",
        up.done()
    );
    assert_eq!(held(&wg).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_held_writes_are_released_once_each_in_order_and_bounded() {
    const N: usize = 200;
    const CONCURRENCY: usize = 8;
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .hold("20s")
        .guard_line(&format!("release_concurrency = {CONCURRENCY}"))
        .start()
        .await;
    engage(&wg, None).await;

    // One at a time, each counted as held before the next is sent: the arrival order is
    // known. The app takes 50 ms per request, so without the gate they would pile up.
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let path = format!("/__sleep/50/w{i}");
        clients.push(post_in_background(
            &wg,
            &path,
            &format!("w{i}"),
            Duration::from_secs(30),
        ));
        wait_held(&wg, i as u64 + 1).await;
    }
    assert_eq!(held(&wg).await, N as u64);
    assert_eq!(up.hits(), 0, "a held write reached the app while guarded");

    release(&wg).await;
    for (i, client) in clients.into_iter().enumerate() {
        let res = client.await.expect("client task");
        assert_eq!(res.status, 200, "held write w{i}: {}", res.text());
        assert_eq!(res.json()["uri"], format!("/__sleep/50/w{i}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ids = posted_ids(&up);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "forwarded more than once: {twice:?}");
    assert_eq!(ids.len(), N, "every held write is forwarded");
    assert_eq!(up.hits(), N);

    let max = up.max_in_flight();
    assert!(
        max <= CONCURRENCY,
        "{max} released writes were at the app at once; release_concurrency is {CONCURRENCY}"
    );

    // Arrival order, as far as the app can see it: the gate lets them go in order, but up
    // to CONCURRENCY run at once, so neighbours may swap places within a window.
    for (pos, id) in ids.iter().enumerate() {
        let i: usize = id[1..].parse().expect("ids are w<n>");
        assert!(
            pos.abs_diff(i) < 2 * CONCURRENCY,
            "w{i} reached the app in position {pos}: not released in arrival order \
             (order seen: {ids:?})"
        );
    }
    assert_eq!(held(&wg).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_hold_max_requests_new_writes_get_503_at_once() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .hold("20s")
        .guard_line("hold_max_requests = 5")
        .start()
        .await;
    engage(&wg, None).await;

    let mut first = Vec::new();
    for i in 0..5 {
        first.push(post_in_background(
            &wg,
            &format!("/h{i}"),
            &format!("h{i}"),
            Duration::from_secs(30),
        ));
        wait_held(&wg, i + 1).await;
    }
    for i in 5..8 {
        // Far sooner than the 20 s hold: the client gives up after 3 s.
        let res = wg
            .proxy(
                Req::new("POST", &format!("/h{i}"))
                    .header("x-id", &format!("h{i}"))
                    .body("x=1")
                    .timeout(Duration::from_secs(3)),
            )
            .await;
        assert_503_with_retry_after(&res, &format!("write #{} past hold_max_requests", i + 1));
    }
    assert_eq!(held(&wg).await, 5, "the first five are still held");
    assert_eq!(up.hits(), 0);

    release(&wg).await;
    for (i, client) in first.into_iter().enumerate() {
        let res = client.await.expect("client task");
        assert_eq!(res.status, 200, "held write h{i}: {}", res.text());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids = posted_ids(&up);
    ids.sort();
    assert_eq!(ids, ["h0", "h1", "h2", "h3", "h4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_zero_answers_503_at_once() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("0s").start().await;
    engage(&wg, None).await;

    let started = Instant::now();
    let res = wg
        .proxy(
            Req::new("POST", "/now")
                .body("x=1")
                .timeout(Duration::from_secs(3)),
        )
        .await;
    assert_503_with_retry_after(&res, "hold = \"0s\"");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "hold = \"0s\" answered after {:?}",
        started.elapsed()
    );
    assert_eq!(held(&wg).await, 0);
    release(&wg).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_rides_through_an_app_restart() {
    let mut up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("upstream_retry = \"3s\"")
        .start()
        .await;
    // A pooled connection to the app exists, and goes stale when the app stops.
    let warm = wg.proxy(Req::get("/warm")).await;
    assert_eq!(warm.status, 200);

    up.stop().await;
    let proxy = wg.proxy;
    let get = tokio::spawn(async move {
        Req::get("/ride?x=1")
            .timeout(Duration::from_secs(10))
            .send(proxy)
            .await
    });

    // A write is not retried: it gets its 502 while the app is down.
    let write = wg
        .proxy(
            Req::new("POST", "/write-while-down")
                .body("x=1")
                .timeout(Duration::from_secs(2)),
        )
        .await;
    assert_eq!(write.status, 502, "{}", write.text());

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !get.is_finished(),
        "the read was answered while the app was down: {:?}",
        get.await
    );
    up.restart().await;

    let res = get.await.expect("client task");
    assert_eq!(
        res.status,
        200,
        "the read through the restart: {}",
        res.text()
    );
    assert_eq!(res.json()["uri"], "/ride?x=1");
    assert_eq!(up.last().uri, "/ride?x=1");
    assert_eq!(up.count_method("POST"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_write_rides_through_an_app_that_is_not_up_yet() {
    let mut up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("10s").start().await;
    engage(&wg, None).await;
    up.stop().await;

    let post = post_in_background(&wg, "/early", "early", Duration::from_secs(15));
    wait_held(&wg, 1).await;
    release(&wg).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !post.is_finished(),
        "the released write was answered while the app was down: {:?}",
        post.await
    );
    up.restart().await;

    let res = post.await.expect("client task");
    assert_eq!(res.status, 200, "{}", res.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posted_ids(&up), ["early"]);
}

/// `POST /guard {"wait":"quiesced"}` while a slow write (`ms`) is in flight to the app.
async fn engage_while_a_slow_write_is_in_flight(
    ms: u64,
    timeout: &str,
) -> (Upstream, Instance, JoinHandle<Resp>, Resp, Vec<String>) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("10s").start().await;
    let slow_path = format!("/__sleep/{ms}/slow");
    let post = post_in_background(&wg, &slow_path, "slow", Duration::from_secs(15));
    let in_flight = common::eventually(Duration::from_secs(5), || async { up.hits() == 1 }).await;
    assert!(in_flight, "the slow write did not reach the app");
    assert_eq!(wg.status().await["in_flight_writes"], 1);

    let res = wg
        .admin(
            Req::new("POST", "/guard")
                .bearer(common::TOKEN)
                .json(&json!({"reason": "migrations", "wait": "quiesced", "timeout": timeout}))
                .timeout(Duration::from_secs(15)),
        )
        .await;
    // What the app had answered by the time the admin call returned.
    let done = up.done();
    (up, wg, post, res, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_quiesced_answers_only_after_the_slow_write_in_flight_completes() {
    let (up, wg, post, res, done) = engage_while_a_slow_write_is_in_flight(2000, "10s").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(
        done,
        ["/__sleep/2000/slow"],
        "wait: quiesced answered before the app answered the write in flight"
    );
    assert!(wg.guarded().await);
    let status = wg.status().await;
    assert_eq!(status["in_flight_writes"], 0);

    let res = post.await.expect("client task");
    assert_eq!(res.status, 200, "the write in flight: {}", res.text());
    assert_eq!(posted_ids(&up), ["slow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_quiesced_answers_504_at_its_timeout() {
    let (up, wg, post, res, done) = engage_while_a_slow_write_is_in_flight(3000, "300ms").await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert!(
        done.is_empty(),
        "the app answered the write before the 504: {done:?}"
    );
    // Engaged all the same; the write in flight is not cut.
    assert!(wg.guarded().await);
    let res = post.await.expect("client task");
    assert_eq!(res.status, 200, "the write in flight: {}", res.text());
    assert_eq!(posted_ids(&up), ["slow"]);
}
