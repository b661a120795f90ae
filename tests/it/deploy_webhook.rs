//! Standard Webhooks deploy events on `POST /webhooks/deploy`, seen from outside: the
//! answer, `/status`, whether a POST through the proxy reaches the app, and
//! `writeguard deploy start|finish` driving it.

use serde_json::{json, Value};

use crate::common::{run, writes_blocked, Instance, Req, Resp, Upstream, Wg};
use writeguard::stdwebhook::{sign, Key};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const OTHER: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(kind: &str, id: &str) -> String {
    json!({
        "type": kind,
        "timestamp": "2026-01-02T03:04:05Z",
        "data": { "id": id, "environment": "production", "reason": "release v2" },
    })
    .to_string()
}

/// `POST /webhooks/deploy` with `body` signed by `secret` as message `msg` at `ts`.
async fn deliver(wg: &Instance, secret: &str, msg: &str, ts: i64, body: &str) -> Resp {
    let sig = sign(&Key::parse(secret).unwrap(), msg, ts, body.as_bytes());
    wg.admin(
        Req::new("POST", "/webhooks/deploy")
            .header("content-type", "application/json")
            .header("webhook-id", msg)
            .header("webhook-timestamp", &ts.to_string())
            .header("webhook-signature", &sig)
            .body(body.to_owned()),
    )
    .await
}

async fn started() -> (Upstream, Instance) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .webhooks_line(&format!("secret = [\"{OTHER}\", \"{SECRET}\"]"))
        .start()
        .await;
    (up, wg)
}

#[track_caller]
fn assert_ok(res: &Resp, guarded: bool, ignored: bool) {
    assert_eq!(res.status, 200, "{}", res.text());
    let doc = res.json();
    assert_eq!(doc["accepted"], true, "{doc}");
    assert_eq!(doc["guarded"], guarded, "{doc}");
    assert_eq!(doc.get("ignored").is_some(), ignored, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_engages_and_finished_releases() {
    let (up, wg) = started().await;
    let res = deliver(
        &wg,
        SECRET,
        "msg_1",
        now(),
        &event("deploy.started", "run-7"),
    )
    .await;
    assert_ok(&res, true, false);
    assert!(writes_blocked(&wg, &up).await);
    let status = wg.status().await;
    let e = &status["engagements"][0];
    assert_eq!(
        (e["id"].as_str(), e["source"].as_str()),
        (Some("run-7"), Some("webhook")),
        "{status}"
    );
    assert_eq!(e["reason"], "release v2");

    // A duplicate start (another delivery) changes nothing.
    let res = deliver(
        &wg,
        SECRET,
        "msg_2",
        now(),
        &event("deploy.started", "run-7"),
    )
    .await;
    assert_ok(&res, true, false);
    assert_eq!(
        wg.status().await["engagements"].as_array().map(Vec::len),
        Some(1)
    );

    let res = deliver(
        &wg,
        OTHER,
        "msg_3",
        now(),
        &event("deploy.finished", "run-7"),
    )
    .await;
    assert_ok(&res, false, false);
    assert!(!writes_blocked(&wg, &up).await);
    // Out of order: a late start of an ended deploy never engages again.
    let res = deliver(
        &wg,
        SECRET,
        "msg_4",
        now(),
        &event("deploy.started", "run-7"),
    )
    .await;
    assert_ok(&res, false, true);
    let deploys = wg.admin(Req::get("/deploys")).await.json();
    assert!(deploys.to_string().contains("run-7"), "{deploys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_before_its_start_keeps_the_guard_off() {
    let (_up, wg) = started().await;
    let res = deliver(
        &wg,
        SECRET,
        "m1",
        now(),
        &event("deploy.cancelled", "run-8"),
    )
    .await;
    assert_ok(&res, false, false);
    let res = deliver(&wg, SECRET, "m2", now(), &event("deploy.started", "run-8")).await;
    assert_ok(&res, false, true);
    assert!(!wg.guarded().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_stale_timestamps_and_replays_change_nothing() {
    let (_up, wg) = started().await;
    let start = event("deploy.started", "run-9");
    let wrong = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==";
    let res = deliver(&wg, wrong, "m1", now(), &start).await;
    assert_eq!(res.status, 401, "{}", res.text());
    for skew in [-301, 301] {
        let res = deliver(&wg, SECRET, "m2", now() + skew, &start).await;
        assert_eq!(res.status, 401, "skew {skew}: {}", res.text());
    }
    let res = wg
        .admin(Req::new("POST", "/webhooks/deploy").body(start.clone()))
        .await;
    assert_eq!(res.status, 401, "unsigned: {}", res.text());
    let empty = wg
        .admin(
            Req::new("POST", "/webhooks/deploy")
                .header("webhook-id", "m3")
                .header("webhook-timestamp", &now().to_string())
                .header("webhook-signature", "v1,")
                .body(start.clone()),
        )
        .await;
    assert_eq!(empty.status, 401, "{}", empty.text());
    assert!(!wg.guarded().await);

    // Taken once; the same delivery again is acknowledged and ignored.
    let ts = now();
    assert_ok(&deliver(&wg, SECRET, "m4", ts, &start).await, true, false);
    let finish = event("deploy.finished", "run-9");
    assert_ok(&deliver(&wg, SECRET, "m5", ts, &finish).await, false, false);
    let replay = deliver(&wg, SECRET, "m4", ts, &start).await;
    assert_ok(&replay, false, true);
    assert!(replay.json()["ignored"]
        .as_str()
        .unwrap()
        .contains("already delivered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_are_refused() {
    let (_up, wg) = started().await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let res = deliver(&wg, SECRET, "m1", now(), &big).await;
    assert_eq!(res.status, 413, "{}", res.text());
    let res = deliver(&wg, SECRET, "m2", now(), "{\"type\":\"deploy.started\"}").await;
    assert_eq!(res.status, 400, "{}", res.text());
    let other =
        json!({"type": "invoice.paid", "timestamp": "2026-01-02T03:04:05Z", "data": {"id": "x"}});
    let res = deliver(&wg, SECRET, "m3", now(), &other.to_string()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!wg.guarded().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_route_is_refused() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let res = deliver(&wg, SECRET, "m1", now(), &event("deploy.started", "r")).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(!wg.guarded().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writeguard_deploy_start_engages_and_finish_releases() {
    let (up, wg) = started().await;
    let url = format!("{}/webhooks/deploy", wg.admin_url());
    let dir = wg.dir().to_owned();
    let out = run(
        &dir,
        &[
            "deploy", "start", "--id", "ci-42", "--url", &url, "--secret", SECRET,
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["guarded"], true, "{answer}");
    assert!(writes_blocked(&wg, &up).await);

    // The secret from the environment, the URL from the config.
    let config = wg.config_path();
    let out = run(
        &dir,
        &[
            "deploy",
            "finish",
            "--id",
            "ci-42",
            "-c",
            config.to_str().unwrap(),
        ],
        &[("WRITEGUARD_WEBHOOKS_SECRET", SECRET)],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!writes_blocked(&wg, &up).await);

    // The secret from the config; a wrong one is refused with exit 1.
    let out = run(
        &dir,
        &[
            "deploy",
            "start",
            "--id",
            "ci-43",
            "-c",
            config.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wg.guarded().await);
    let out = run(
        &dir,
        &[
            "deploy",
            "finish",
            "--id",
            "ci-43",
            "--url",
            &url,
            "--secret",
            "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains("dGhpcyBp"),
        "the secret is never shown: {stderr}"
    );
    assert!(wg.guarded().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_prefix_takes_them_only_with_a_secret() {
    let (up, wg) = started().await;
    let body = event("deploy.started", "pub-1");
    let ts = now();
    let sig = sign(&Key::parse(SECRET).unwrap(), "p1", ts, body.as_bytes());
    let req = |body: String| {
        Req::new("POST", "/.well-known/writeguard/deploy")
            .header("webhook-id", "p1")
            .header("webhook-timestamp", &ts.to_string())
            .header("webhook-signature", &sig)
            .body(body)
    };
    let res = wg.proxy(req(body.clone())).await;
    assert_ok(&res, true, false);
    assert!(writes_blocked(&wg, &up).await);

    let plain = Wg::for_upstream(&up).start().await;
    let res = plain.proxy(req(body)).await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert!(!plain.guarded().await);
}
