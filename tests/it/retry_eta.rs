//! The Retry-After of a deploy estimated from how long the past ones of its kind took, seen
//! from outside: signed Upsun webhooks on the admin port, the 503 of a write through the
//! proxy (header, problem+json, HTML page), `/status` and the public status.

use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::{activity, Instance, Req, Resp, Upstream, Wg, BROWSER_ACCEPT};

const PUSH: &str = "environment.push";
const PUBLIC_STATUS: &str = "/.well-known/writeguard/status";

/// Sends a signed `state` for activity `id`, checking that it was taken.
async fn deliver(wg: &Instance, id: &str, state: &str) {
    let res = wg.webhook_signed(activity(id, PUSH, state)).await;
    assert_eq!(res.status, 200, "{state} of {id}: {}", res.text());
    assert_eq!(res.json()["accepted"], true, "{}", res.text());
}

/// Deploys that each take `took`: a signed `in_progress`, then `complete` after `took`.
async fn deploys(wg: &Instance, ids: &[&str], took: Duration) {
    for id in ids {
        deliver(wg, id, "in_progress").await;
        tokio::time::sleep(took).await;
        deliver(wg, id, "complete").await;
    }
}

/// A refused write: its status is 503 and the app never saw it.
async fn refused(wg: &Instance, up: &Upstream, accept: &str) -> Resp {
    let before = up.count_method("POST");
    let res = wg
        .proxy(
            Req::new("POST", "/orders")
                .header("accept", accept)
                .body("x=1"),
        )
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(
        up.count_method("POST"),
        before,
        "a refused write reached the app"
    );
    res
}

fn retry_after(res: &Resp) -> u64 {
    let header = res.header("retry-after").expect("a Retry-After header");
    header
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After: {header}"))
}

/// The seconds from now to the `eta` of a status document, which must be set.
fn eta_in(doc: &Value) -> f64 {
    let eta = doc["eta"]
        .as_str()
        .unwrap_or_else(|| panic!("an eta: {doc}"));
    let eta = OffsetDateTime::parse(eta, &Rfc3339).unwrap_or_else(|e| panic!("{eta}: {e}"));
    (eta - OffsetDateTime::now_utc()).as_seconds_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_deploys_of_two_seconds_the_fourth_gets_a_retry_after_of_a_few_seconds() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up)
        .hold("0s")
        .retry_after("60s")
        .start()
        .await;
    deploys(
        &wg,
        &["eta0000000001", "eta0000000002", "eta0000000003"],
        Duration::from_secs(2),
    )
    .await;
    let status = wg.status().await;
    assert!(status["eta"].is_null(), "nothing runs: {status}");
    // The durations are part of the stored state: a restart keeps them.
    wg.restart().await;

    deliver(&wg, "eta0000000004", "in_progress").await;
    let res = refused(&wg, &up, "application/json").await;
    let secs = retry_after(&res);
    assert!(
        (1..=5).contains(&secs),
        "Retry-After: {secs}, not the configured 60"
    );
    let problem = res.json();
    assert_eq!(problem["retry_after"], secs, "{problem}");
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(detail.contains("Back in about "), "{detail}");
    let page = refused(&wg, &up, BROWSER_ACCEPT).await;
    assert!(retry_after(&page) <= 5);
    assert!(
        page.text().contains("back in about <strong>"),
        "{}",
        page.text()
    );

    let status = wg.status().await;
    let left = eta_in(&status);
    assert!((0.0..=5.0).contains(&left), "eta in {left} s: {status}");
    assert!(
        status["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=5).contains(&s)),
        "{status}"
    );
    let public = wg.proxy(Req::get(PUBLIC_STATUS)).await.json();
    assert_eq!(public["guarded"], true, "{public}");
    assert!((0.0..=5.0).contains(&eta_in(&public)), "{public}");

    deliver(&wg, "eta0000000004", "complete").await;
    let status = wg.status().await;
    assert!(status["eta"].is_null(), "{status}");
    let public = wg.proxy(Req::get(PUBLIC_STATUS)).await.json();
    assert!(public["eta"].is_null(), "{public}");
    assert_eq!(wg.post("/orders").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fewer_than_three_past_deploys_the_retry_after_is_the_configured_one() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .hold("0s")
        .retry_after("60s")
        .start()
        .await;
    deploys(
        &wg,
        &["few0000000001", "few0000000002"],
        Duration::from_millis(300),
    )
    .await;

    deliver(&wg, "few0000000003", "in_progress").await;
    let res = refused(&wg, &up, "application/json").await;
    assert_eq!(retry_after(&res), 60);
    let detail = res.json()["detail"].as_str().expect("a detail").to_owned();
    assert!(detail.ends_with("Retry in 60 s."), "{detail}");
    let page = refused(&wg, &up, BROWSER_ACCEPT).await;
    assert!(
        page.text().contains("<strong>60 seconds</strong>"),
        "{}",
        page.text()
    );
    let status = wg.status().await;
    assert!(status["eta"].is_null(), "{status}");
    assert_eq!(status["retry_after"], 60, "{status}");
    let public = wg.proxy(Req::get(PUBLIC_STATUS)).await.json();
    assert!(
        public["eta"].is_null() && public["retry_after"] == 60,
        "{public}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_engagement_beside_a_deploy_with_history_keeps_the_configured_retry_after() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .hold("0s")
        .retry_after("60s")
        .start()
        .await;
    let ids = ["man0000000001", "man0000000002", "man0000000003"];
    deploys(&wg, &ids, Duration::from_secs(1)).await;
    deliver(&wg, "man0000000004", "in_progress").await;
    assert!(wg.status().await["eta"].is_string());

    assert_eq!(wg.engage("by hand", Some("10m")).await.status, 201);
    let res = refused(&wg, &up, "application/json").await;
    assert_eq!(retry_after(&res), 60, "a manual engagement has no history");
    assert!(wg.status().await["eta"].is_null());
}
