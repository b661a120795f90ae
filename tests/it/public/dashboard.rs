//! The admin port's views for people: `/deploys` (type, result, duration of each deploy) and
//! the dashboard at `/`.

use std::time::Duration;

use serde_json::Value;

use crate::common::{sample, Req, Resp, Upstream, Wg, COMPLETE, IN_PROGRESS, SAMPLE_ID};

use super::assert_json_200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_lists_a_finished_deploy_with_its_type_result_and_duration() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let deploys = |res: Resp| -> Vec<Value> {
        let doc = assert_json_200(&res);
        doc.as_array()
            .unwrap_or_else(|| panic!("/deploys is an array: {doc}"))
            .clone()
    };
    assert!(deploys(wg.admin(Req::get("/deploys")).await).is_empty());

    let res = wg.webhook_signed(sample(IN_PROGRESS)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let running = deploys(wg.admin(Req::get("/deploys")).await);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0]["type"], "environment.push", "{:?}", running[0]);
    assert!(running[0]["ended_at"].is_null(), "{:?}", running[0]);
    assert!(running[0]["duration_seconds"].is_null(), "{:?}", running[0]);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = wg.webhook_signed(sample(COMPLETE)).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let list = deploys(wg.admin(Req::get("/deploys")).await);
    assert_eq!(list.len(), 1, "one deploy, seen twice: {list:?}");
    let d = &list[0];
    assert_eq!(d["id"], SAMPLE_ID, "{d}");
    assert_eq!(d["type"], "environment.push", "{d}");
    assert_eq!(d["result"], "success", "{d}");
    assert_eq!(d["state"], "complete", "{d}");
    let at = |key: &str| {
        let raw = d[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is a string: {d}"));
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{key} {raw:?} is not RFC 3339: {e}"))
    };
    let took = (at("ended_at") - at("started_at")).as_seconds_f64();
    let duration = d["duration_seconds"].as_f64().expect("duration_seconds");
    assert!(
        (0.25..30.0).contains(&duration),
        "duration {duration} s for a deploy that took about 0.3 s: {d}"
    );
    assert!(
        (duration - took).abs() < 0.01,
        "duration_seconds {duration} is not ended_at - started_at ({took}): {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_root_is_the_dashboard() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let res = wg.admin(Req::get("/")).await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        res.header("content-type")
    );
    let html = res.text();
    assert!(
        html.to_ascii_lowercase().starts_with("<!doctype html>"),
        "{html}"
    );
    // It talks to this API (relative paths: it works behind a path prefix too).
    for route in ["'status'", "'deploys'", "'guard'"] {
        assert!(html.contains(route), "the dashboard does not use {route}");
    }
    // Not on the proxy port: there, `/` is the app's.
    let res = wg.proxy(Req::get("/")).await;
    assert_eq!(res.header("x-upstream"), Some("recorder"));
}
