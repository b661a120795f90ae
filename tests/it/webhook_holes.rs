//! Holes in the Upsun webhook endpoint, closed, seen from outside over real sockets: what
//! is refused before its body is read, the bound on bodies read at once (both routes
//! together), replays of long-ended activities, end events without scope fields, and the
//! `Content-Type` of unsigned deliveries.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::common::client::{RawConn, RawResp};
use crate::common::{
    eventually, sample, sample_json, sign, writes_blocked, Req, Resp, Upstream, Wg, COMPLETE,
    IN_PROGRESS, SAMPLE_ID, SAMPLE_PROJECT,
};

const PUBLIC_API: &str = "/.well-known/writeguard/api/";
/// What "at once" means here: far below the 30 s a body may take to arrive.
const AT_ONCE: Duration = Duration::from_secs(2);
/// The documented bound on webhook bodies read at once (README "Upsun integration").
const MAX_READING: usize = 32;

/// A signature header with the right shape (protected header, empty middle, 32 bytes) that
/// signs nothing we send.
fn well_shaped_forgery() -> String {
    let real = sign(b"{}");
    let (header, _) = real.split_once("..").expect("detached JWS");
    format!("{header}..{}", "A".repeat(43))
}

/// Opens a connection and sends only the head of a `POST path` announcing `length` body
/// bytes, plus `start` of that body; the rest is never sent.
async fn head_only(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    length: usize,
    start: &[u8],
) -> RawConn {
    let mut conn = RawConn::connect(addr).await;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n");
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    conn.write(head.as_bytes()).await;
    if !start.is_empty() {
        conn.write(start).await;
    }
    conn
}

/// The answer on `conn`, which must come within [`AT_ONCE`].
async fn answered_at_once(conn: &mut RawConn, what: &str) -> RawResp {
    tokio::time::timeout(AT_ONCE, conn.read_response(false))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {AT_ONCE:?}: the body was waited for"))
}

#[track_caller]
fn assert_status(res: &Resp, status: u16) {
    assert_eq!(res.status.as_u16(), status, "{}", res.text());
}

/// `{"accepted": true, "guarded": guarded}`, `ignored` present iff `ignored`.
#[track_caller]
fn assert_accepted(res: &Resp, guarded: bool, ignored: bool) {
    assert_status(res, 200);
    let doc = res.json();
    assert_eq!(doc["accepted"], true, "{doc}");
    assert_eq!(doc["guarded"], guarded, "{doc}");
    assert_eq!(doc.get("ignored").is_some(), ignored, "{doc}");
}

/// The push sample with another id and state.
fn push(id: &str, state: &str) -> Vec<u8> {
    let mut v = sample_json(IN_PROGRESS);
    v["id"] = id.into();
    v["state"] = state.into();
    serde_json::to_vec(&v).expect("serialize")
}

// ---------------------------------------------------------------------------------------
// Item 7: nothing unauthenticated is buffered

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_signature_is_refused_before_the_body_arrives() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let real = sign(&sample(IN_PROGRESS));
    let (header, sig) = real.split_once("..").expect("detached JWS");
    let bad: Vec<Option<String>> = vec![
        None,
        Some("garbage".into()),
        Some(format!("{header}.e30.{sig}")), // attached payload
        Some(format!("eyJhbGciOiJub25lIn0..{sig}")), // {"alg":"none"}
        Some(format!("{header}..{}", &sig[..20])), // not 32 bytes
        Some(format!("{header}..")),
    ];
    for (addr, path) in [(wg.admin, "/webhooks/upsun"), (wg.proxy, PUBLIC_API)] {
        for signature in &bad {
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(s) = signature {
                headers.push(("X-JWS-Signature", s));
            }
            let mut conn = head_only(addr, path, &headers, 1_000_000, b"{").await;
            let res = answered_at_once(&mut conn, &format!("{path} with {signature:?}")).await;
            assert_eq!(res.status, 401, "{path} {signature:?}: {}", res.text());
        }
    }
    assert!(!writes_blocked(&wg, &up).await);
    // A well-formed signature is read and then checked, as before: a real delivery works.
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, true, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_refusals_come_before_the_body_too() {
    let up = Upstream::start().await;
    let closed = Wg::for_upstream(&up).shared_key(None).start().await;
    let mut conn = head_only(
        closed.admin,
        "/webhooks/upsun",
        &[("Content-Type", "application/json")],
        1_000_000,
        b"",
    )
    .await;
    assert_eq!(answered_at_once(&mut conn, "no key").await.status, 401);

    let open = Wg::for_upstream(&up)
        .shared_key(None)
        .allow_unsigned(true)
        .start()
        .await;
    let mut conn = head_only(
        open.admin,
        "/webhooks/upsun",
        &[("Content-Type", "text/plain")],
        1_000_000,
        b"",
    )
    .await;
    assert_eq!(
        answered_at_once(&mut conn, "unsigned text/plain")
            .await
            .status,
        415
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_webhook_bodies_get_503_with_retry_after_on_both_routes() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let forged = well_shaped_forgery();
    let headers = [
        ("Content-Type", "application/json"),
        ("X-JWS-Signature", forged.as_str()),
    ];
    // The bound is shared: half of the slow bodies on each route fill it.
    let mut slow = Vec::new();
    for i in 0..MAX_READING {
        let (addr, path) = if i % 2 == 0 {
            (wg.admin, "/webhooks/upsun")
        } else {
            (wg.proxy, PUBLIC_API)
        };
        slow.push(head_only(addr, path, &headers, 1000, b"{\"id\":").await);
    }
    // One more, on either route: 503 with Retry-After, at once. (The slow heads are parsed
    // asynchronously, so ask until they have all been taken in.)
    for (addr, path) in [(wg.admin, "/webhooks/upsun"), (wg.proxy, PUBLIC_API)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let res = loop {
            let body = Bytes::from(push("wgextra", "complete"));
            let res = Req::new("POST", path)
                .header("content-type", "application/json")
                .header("x-jws-signature", &sign(&body))
                .body(body)
                .timeout(AT_ONCE)
                .send(addr)
                .await;
            if res.status == 503 || tokio::time::Instant::now() >= deadline {
                break res;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            res.status,
            503,
            "{path}: never 503 beside {MAX_READING} slow bodies: {}",
            res.text()
        );
        let retry = res.header("retry-after").expect("a 503 says when to retry");
        assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "{retry}");
        assert!(res.json()["error"].is_string(), "{}", res.text());
    }
    assert!(!writes_blocked(&wg, &up).await);
    // Once the slow senders are gone, deliveries are taken again.
    drop(slow);
    let taken = eventually(Duration::from_secs(10), || async {
        wg.webhook_signed(sample(IN_PROGRESS)).await.status == 200
    })
    .await;
    assert!(
        taken,
        "the bound was not released when the slow senders left"
    );
    assert!(writes_blocked(&wg, &up).await);
}

// ---------------------------------------------------------------------------------------
// Item 8: an ended activity never engages again within a week

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_in_progress_of_a_long_ended_activity_does_not_engage_even_after_a_restart() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    let captured = sample(IN_PROGRESS);
    assert_accepted(&wg.webhook_signed(captured.clone()).await, true, false);
    assert_accepted(&wg.webhook_signed(sample(COMPLETE)).await, false, false);

    // More activities than were ever remembered, on two connections at a time.
    let ids: Vec<String> = (0..600).map(|i| format!("wgother{i:05}")).collect();
    for pair in ids.chunks(2) {
        let (a, b) = tokio::join!(
            wg.webhook_signed(push(&pair[0], "complete")),
            wg.webhook_signed(push(&pair[1], "complete")),
        );
        assert_accepted(&a, false, false);
        assert_accepted(&b, false, false);
    }

    let replay = wg.webhook_signed(captured.clone()).await;
    assert_accepted(&replay, false, true);
    assert!(
        !writes_blocked(&wg, &up).await,
        "the replay engaged the guard"
    );

    wg.restart().await;
    let replay = wg.webhook_signed(captured).await;
    assert_accepted(&replay, false, true);
    assert!(
        !writes_blocked(&wg, &up).await,
        "the replay engaged the guard after a restart"
    );
    // The others are remembered as ended too.
    let other = wg.webhook_signed(push(&ids[0], "in_progress")).await;
    assert_accepted(&other, false, true);
}

// ---------------------------------------------------------------------------------------
// Item 9: an end event ends what engaged, whatever its scope fields

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_without_project_ends_the_activity_that_engaged() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .project(SAMPLE_PROJECT)
        .environments(&["main"])
        .start()
        .await;
    assert_accepted(&wg.webhook_signed(sample(IN_PROGRESS)).await, true, false);
    assert!(writes_blocked(&wg, &up).await);

    let mut done = sample_json(COMPLETE);
    assert_eq!(done["id"], SAMPLE_ID);
    let fields = done.as_object_mut().expect("object");
    fields.remove("project");
    fields.remove("environments");
    let res = wg
        .webhook_signed(serde_json::to_vec(&done).expect("json"))
        .await;
    assert_accepted(&res, false, false);
    assert!(!writes_blocked(&wg, &up).await, "the complete was ignored");
    assert_eq!(wg.status().await["engagements"], Value::Array(vec![]));

    // An id that never engaged still needs its scope to engage.
    let mut stranger = sample_json(IN_PROGRESS);
    stranger["id"] = "wgstranger01".into();
    stranger.as_object_mut().expect("object").remove("project");
    let res = wg
        .webhook_signed(serde_json::to_vec(&stranger).expect("json"))
        .await;
    assert_accepted(&res, false, true);
    assert!(!writes_blocked(&wg, &up).await);
}

// ---------------------------------------------------------------------------------------
// Item 10: unsigned deliveries are JSON only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_webhooks_take_only_application_json_and_signed_ones_any_type() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .shared_key(None)
        .allow_unsigned(true)
        .start()
        .await;
    let body = Bytes::from(sample(IN_PROGRESS));
    let unsigned = |ct: Option<&str>| {
        let mut req = Req::new("POST", "/webhooks/upsun").body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req
    };
    for ct in [
        None,
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let res = wg.admin(unsigned(ct)).await;
        assert_status(&res, 415);
        assert!(res.json()["error"].is_string());
        assert!(!writes_blocked(&wg, &up).await, "{ct:?} engaged the guard");
    }
    let res = wg
        .admin(unsigned(Some("application/json; charset=utf-8")))
        .await;
    assert_accepted(&res, true, false);

    // With a key, the signature is what counts, whatever the type.
    let keyed = Wg::for_upstream(&up).start().await;
    let res = keyed
        .admin(
            Req::new("POST", "/webhooks/upsun")
                .header("content-type", "text/plain")
                .header("x-jws-signature", &sign(&body))
                .body(body.clone()),
        )
        .await;
    assert_accepted(&res, true, false);
}
