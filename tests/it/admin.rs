//! The admin API and durable state: health, readiness, `/status`, operator engage/release
//! with bearer auth, manual ttl expiry, and restarts on the same state file.

use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common;
use crate::common::{eventually, sample, Req, Resp, Upstream, Wg, SAMPLE_ID};

fn rfc3339(v: &Value) -> OffsetDateTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

#[track_caller]
fn assert_unauthorized(res: &Resp) {
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        res.header("content-type")
    );
    assert!(
        res.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        res.text()
    );
}

/// Checks the documented shape of the `/status` document and returns it.
#[track_caller]
fn assert_status_shape(doc: &Value) {
    assert!(doc["guarded"].is_boolean(), "{doc}");
    assert!(doc["since"].is_null() || doc["since"].is_string(), "{doc}");
    assert!(doc["retry_after"].as_u64().is_some(), "{doc}");
    let engagements = doc["engagements"].as_array().expect("engagements array");
    for e in engagements {
        assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert!(
            matches!(e["source"].as_str(), Some("upsun" | "manual")),
            "{e}"
        );
        assert!(e["reason"].is_string(), "{e}");
        assert!(rfc3339(&e["since"]) < rfc3339(&e["expires_at"]), "{e}");
    }
    assert_eq!(doc["guarded"], !engagements.is_empty(), "{doc}");
    assert_eq!(doc["since"].is_string(), !engagements.is_empty(), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_status_shape() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).retry_after("42s").start().await;

    let res = wg.admin(Req::get("/healthz")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text().trim(), "ok");
    assert_eq!(wg.admin(Req::get("/readyz")).await.status, 200);
    assert_eq!(wg.admin(Req::get("/no/such/route")).await.status, 404);

    let res = wg.admin(Req::get("/status")).await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let doc = res.json();
    assert_status_shape(&doc);
    assert_eq!(doc["guarded"], false);
    assert_eq!(doc["since"], Value::Null);
    assert_eq!(doc["retry_after"], 42);
    assert_eq!(doc["engagements"], Value::Array(vec![]));

    let before = OffsetDateTime::now_utc() - Duration::from_secs(1);
    let res = wg.engage("schema migration", Some("10m")).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created = res.json();
    assert_eq!(created["source"], "manual");
    assert_eq!(created["reason"], "schema migration");
    let since = rfc3339(&created["since"]);
    let expires = rfc3339(&created["expires_at"]);
    assert!(since >= before && since <= OffsetDateTime::now_utc() + Duration::from_secs(1));
    let ttl = (expires - since).whole_seconds();
    assert!((599..=601).contains(&ttl), "ttl 10m gave {ttl} s");

    let doc = wg.status().await;
    assert_status_shape(&doc);
    assert_eq!(doc["guarded"], true);
    assert_eq!(rfc3339(&doc["since"]), since);
    assert_eq!(doc["retry_after"], 42);
    assert_eq!(doc["engagements"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["engagements"][0], created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_need_the_bearer_token_and_refusals_change_nothing() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let body = serde_json::json!({ "reason": "intruder", "ttl": "10m" });

    let attempts = [
        Req::new("POST", "/guard").json(&body),
        Req::new("POST", "/guard")
            .bearer("wrong-token-0000")
            .json(&body),
        Req::new("POST", "/guard")
            .bearer(&format!("{}x", common::TOKEN))
            .json(&body),
        Req::new("POST", "/guard")
            .header("authorization", common::TOKEN)
            .json(&body),
        Req::new("POST", "/guard")
            .header("authorization", &format!("Basic {}", common::TOKEN))
            .json(&body),
        Req::new("POST", "/guard").bearer("").json(&body),
    ];
    for req in attempts {
        assert_unauthorized(&wg.admin(req).await);
    }
    assert_eq!(wg.status().await["guarded"], false);
    assert_eq!(wg.post("/orders").await.status, 200);

    // Engaged for real, then unauthenticated releases do nothing.
    assert_eq!(wg.engage("real", None).await.status, 201);
    let status = wg.status().await;
    for req in [
        Req::new("DELETE", "/guard"),
        Req::new("DELETE", "/guard?all=true").bearer("wrong-token-0000"),
    ] {
        assert_unauthorized(&wg.admin(req).await);
    }
    assert_eq!(wg.status().await["engagements"], status["engagements"]);
    assert_eq!(wg.post("/orders").await.status, 503);

    // Bad bodies and ttls are 400 with a JSON error.
    for bad in [
        serde_json::json!({ "ttl": "soon" }),
        serde_json::json!({ "ttl": "0s" }),
        serde_json::json!({ "ttl": "2h" }), // over max_engaged (30m)
        serde_json::json!({ "unknown": 1 }),
    ] {
        let res = wg
            .admin(Req::new("POST", "/guard").bearer(common::TOKEN).json(&bad))
            .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert!(res.json()["error"].is_string());
    }
    assert_eq!(wg.status().await["engagements"], status["engagements"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_drops_manual_engagements_and_all_drops_every_one() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    assert_eq!(
        wg.webhook_signed(sample("environment.push_in_progress"))
            .await
            .status,
        200
    );
    assert_eq!(wg.engage("one", None).await.status, 201);
    assert_eq!(wg.engage("two", Some("5m")).await.status, 201);
    assert_eq!(
        wg.status().await["engagements"].as_array().map(Vec::len),
        Some(3)
    );

    let res = wg.release(false).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let doc = res.json();
    assert_status_shape(&doc);
    assert_eq!(
        doc["guarded"], true,
        "the Upsun engagement must survive: {doc}"
    );
    assert_eq!(doc["engagements"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["engagements"][0]["id"], SAMPLE_ID);
    assert_eq!(doc["engagements"][0]["source"], "upsun");
    assert_eq!(wg.post("/orders").await.status, 503);

    let res = wg.release(true).await;
    assert_eq!(res.status, 200);
    let doc = res.json();
    assert_status_shape(&doc);
    assert_eq!(doc["guarded"], false);
    assert_eq!(doc["engagements"], Value::Array(vec![]));
    assert_eq!(wg.post("/orders").await.status, 200);

    // A late duplicate of the released deploy does not re-engage.
    let res = wg
        .webhook_signed(sample("environment.push_in_progress"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["guarded"], false);
    assert_eq!(wg.post("/orders").await.status, 200);

    // Releasing with nothing engaged is fine.
    assert_eq!(wg.release(false).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_engagement_with_a_short_ttl_expires() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let res = wg.engage("quick fix", Some("2s")).await;
    assert_eq!(res.status, 201, "{}", res.text());

    let blocked = wg.post("/orders").await;
    assert_eq!(blocked.status, 503);
    let retry: u64 = blocked
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(
        (1..=2).contains(&retry),
        "Retry-After {retry} beyond the 2 s ttl"
    );
    assert_eq!(up.count_method("POST"), 0);

    let released = eventually(Duration::from_secs(6), || async {
        wg.post("/orders").await.status == 200
    })
    .await;
    assert!(released, "a 2 s engagement still blocks writes after 6 s");
    assert_eq!(up.count_method("POST"), 1);
    let doc = wg.status().await;
    assert_eq!(doc["guarded"], false);
    assert_eq!(doc["engagements"], Value::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_guarded_stays_guarded() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    let res = wg
        .webhook_signed(sample("environment.push_in_progress"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(wg.engage("ops freeze", Some("20m")).await.status, 201);
    let before = wg.status().await;
    assert_eq!(before["guarded"], true);

    wg.restart().await;

    let after = wg.status().await;
    assert_status_shape(&after);
    assert_eq!(after["guarded"], true, "restart lost the guard: {after}");
    assert_eq!(after["engagements"], before["engagements"]);
    assert_eq!(after["since"], before["since"]);
    let res = wg.post("/orders").await;
    assert_eq!(res.status, 503);
    assert_eq!(up.count_method("POST"), 0);

    // The restored deploy still ends with its `complete` (ids survive the restart), and
    // the manual one with a release.
    let res = wg
        .webhook_signed(sample("environment.push_complete_success"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["guarded"], true);
    assert_eq!(wg.release(false).await.json()["guarded"], false);
    assert_eq!(wg.post("/orders").await.status, 200);

    // And the released state is what the next start sees.
    wg.restart().await;
    assert_eq!(wg.status().await["guarded"], false);
    let res = wg
        .webhook_signed(sample("environment.push_in_progress"))
        .await;
    assert_eq!(
        res.json()["guarded"],
        false,
        "a completed id re-engaged after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engagements_that_expired_while_stopped_are_dropped_on_restore() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    let short = wg.engage("short", Some("3s")).await.json();
    let long = wg.engage("long", Some("10m")).await.json();
    let short_id = short["id"].as_str().expect("id").to_string();

    // Stop while the short one is still active.
    let status = wg.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let saved = std::fs::read_to_string(wg.state_path()).expect("state file written");
    assert!(
        saved.contains(&short_id),
        "the short engagement was gone before the stop (test too slow?)"
    );

    // Wait out its expiry while writeguard is down, then start on the same state file.
    let expires = rfc3339(&short["expires_at"]);
    let ttl = (expires - rfc3339(&short["since"])).whole_seconds();
    assert_eq!(ttl, 3, "ttl \"3s\" gave {short}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while OffsetDateTime::now_utc() <= expires + Duration::from_millis(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "clock went backwards?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wg.restart().await;
    let doc = wg.status().await;
    assert_status_shape(&doc);
    let engagements = doc["engagements"].as_array().expect("engagements");
    assert_eq!(engagements.len(), 1, "{doc}");
    assert_eq!(engagements[0], long);
    assert_eq!(wg.post("/orders").await.status, 503);

    // With only expired engagements, a restart comes up unguarded.
    assert_eq!(wg.release(false).await.json()["guarded"], false);
    assert_eq!(wg.engage("short only", Some("2s")).await.status, 201);
    assert!(wg.stop().is_some_and(|s| s.success()));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    wg.restart().await;
    assert_eq!(wg.status().await["guarded"], false);
    assert_eq!(wg.post("/orders").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_fails_closed() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    assert_eq!(wg.engage("x", None).await.status, 201);
    assert_eq!(wg.release(false).await.status, 200);
    assert!(wg.stop().is_some_and(|s| s.success()));
    std::fs::write(wg.state_path(), b"{ this is not json").expect("corrupt the state file");
    wg.restart().await;
    // Guarded until an operator releases it; the detail is the operator's.
    let doc = wg.status().await;
    assert_eq!(doc["guarded"], true, "{doc}");
    let problem = doc["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("writeguard.state") && problem.contains("corrupt"),
        "/status does not say why: {doc}"
    );
    assert!(wg.logs().contains(problem), "the log does not say why");
    // Visitors get the generic text: no file, no error, no word of our state.
    for accept in ["text/html", "application/json"] {
        let refused = wg
            .proxy(
                Req::new("POST", "/orders")
                    .header("accept", accept)
                    .body("x=1"),
            )
            .await;
        assert_eq!(refused.status, 503);
        let text = refused.text();
        assert!(
            text.contains("the site is being updated"),
            "{accept}: {text}"
        );
        for secret in [
            "writeguard.state",
            "corrupt",
            "unreadable",
            "column",
            problem,
        ] {
            assert!(!text.contains(secret), "{accept} shows {secret:?}: {text}");
        }
    }
    assert_eq!(wg.release(true).await.json()["guarded"], false);
    assert_eq!(wg.post("/orders").await.status, 200);
}

/// `proxy.h2c` is the proxy port's: the admin port keeps speaking HTTP/1.1 only, so an
/// HTTP/2 preface there is refused like any other bytes that are not an HTTP/1 request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_the_proxy_port_leaves_the_admin_port_http1_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).proxy_line("h2c = true").start().await;
    let mut h2 = common::h2c::connect(wg.proxy).await;
    let (status, _) = common::h2c::send(
        &mut h2,
        wg.proxy,
        "GET",
        "/.well-known/writeguard/status",
        &[],
    )
    .await;
    assert_eq!(status, 200, "the proxy port speaks h2c");

    let mut admin = tokio::net::TcpStream::connect(wg.admin)
        .await
        .expect("connect");
    admin
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("write the preface");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 400"),
        "the admin port answered an HTTP/2 preface with: {text:?}"
    );
}
