//! `GET /metrics/recent`, the dashboard chart's history: its samples move with the requests,
//! the held writes and the engagements, and it asks for a token only when `/metrics` does.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{engaged, released, Instance, Req, Upstream, Wg};

async fn recent(wg: &Instance) -> Value {
    let res = wg.admin(Req::get("/metrics/recent")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    res.json()
}

/// The requests of `outcome` in every sample kept.
fn total(v: &Value, outcome: &str) -> u64 {
    let i = v["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|o| o == outcome)
        .unwrap_or_else(|| panic!("{outcome} not in {v}"));
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"][i].as_u64().unwrap())
        .sum()
}

fn samples(v: &Value) -> &Vec<Value> {
    v["samples"].as_array().unwrap()
}

/// Polls the route until `check` holds (a sample is taken once a second); the last answer.
async fn recent_until(wg: &Instance, check: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let v = recent(wg).await;
        if check(&v) || Instant::now() > until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn recent_samples_move_with_requests_holds_and_engagements() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).hold("10s").start().await;
    let v = recent(&wg).await;
    assert_eq!(v["interval_seconds"], 1);
    assert_eq!(
        v["outcomes"],
        serde_json::json!([
            "forwarded",
            "refused",
            "held_forwarded",
            "held_refused",
            "public",
            "invalid",
            "upstream_error"
        ])
    );
    assert_eq!(total(&v, "forwarded"), 0);

    for _ in 0..3 {
        assert_eq!(wg.proxy(Req::get("/page")).await.status, 200);
    }
    assert_eq!(wg.post("/open-write").await.status, 200);
    let v = recent_until(&wg, |v| total(v, "forwarded") >= 4).await;
    assert_eq!(total(&v, "forwarded"), 4, "{v}");
    assert_eq!(total(&v, "refused"), 0);
    assert!(samples(&v).iter().all(|s| s["guarded"] == false), "{v}");

    // Engaged: a write is held, then forwarded on the release.
    engaged(&wg).await;
    let post = {
        let req = Req::new("POST", "/held").body("x=1");
        let addr = wg.proxy;
        tokio::spawn(async move { req.send(addr).await })
    };
    let v = recent_until(&wg, |v| {
        samples(v)
            .iter()
            .any(|s| s["held"] == 1 && s["guarded"] == true)
    })
    .await;
    assert!(
        samples(&v)
            .iter()
            .any(|s| s["held"] == 1 && s["guarded"] == true),
        "no sample saw the held write: {v}"
    );
    released(&wg).await;
    assert_eq!(post.await.unwrap().status, 200);
    let v = recent_until(&wg, |v| {
        total(v, "held_forwarded") == 1 && samples(v).last().unwrap()["guarded"] == false
    })
    .await;
    assert_eq!(total(&v, "held_forwarded"), 1, "{v}");
    assert_eq!(total(&v, "forwarded"), 4);
    let last = samples(&v).last().unwrap();
    assert_eq!(last["guarded"], false, "{v}");
    assert_eq!(last["held"], 0);
    // Oldest first, a second apart or more.
    let ts: Vec<i64> = samples(&v)
        .iter()
        .map(|s| s["t"].as_i64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
}

#[tokio::test]
async fn recent_asks_for_a_token_only_when_metrics_does() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .admin_line("metrics_token = \"scrape-token-1234\"")
        .start()
        .await;
    assert_eq!(wg.admin(Req::get("/metrics/recent")).await.status, 401);
    assert_eq!(
        wg.admin(Req::get("/metrics/recent").bearer("wrong-token-1234"))
            .await
            .status,
        401
    );
    for token in ["scrape-token-1234", wg.cfg.token.as_str()] {
        let res = wg.admin(Req::get("/metrics/recent").bearer(token)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(res.json()["samples"].is_array());
    }
    assert_eq!(
        wg.admin(Req::new("POST", "/metrics/recent")).await.status,
        405
    );
}
