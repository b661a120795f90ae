//! The public status surface on the proxy port: `/.well-known/writeguard/status` (its shape,
//! what it never tells), the Upsun status-holder routes, and that none of the public routes
//! is ever forwarded or guarded.

use crate::common::sse::Events;
use crate::common::{Instance, Req, Upstream, Wg, BROWSER_ACCEPT, SAMPLE_PROJECT};

use super::{assert_json_200, preflight, public, public_status, PREFIX};

/// The status-holder answer for `project`/`environment`.
async fn available(wg: &Instance, project: &str, environment: &str) -> bool {
    let res = wg
        .proxy(Req::get(&public(&format!("/api/{project}/{environment}"))))
        .await;
    let doc = assert_json_200(&res);
    assert_eq!(doc["project"], project, "{doc}");
    assert_eq!(doc["environment"], environment, "{doc}");
    doc["available"]
        .as_bool()
        .unwrap_or_else(|| panic!("`available` is a boolean: {doc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_the_public_shape_no_secrets_no_store_and_any_origin_by_default() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let doc = public_status(&wg).await;
    assert_eq!(doc["guarded"], false, "{doc}");
    assert!(doc["since"].is_null(), "{doc}");
    assert_eq!(doc["retry_after"], 30, "{doc}");

    let secret = "migration 42 of the secret-billing-db";
    let engaged = wg.engage(secret, None).await;
    assert_eq!(engaged.status, 201, "{}", engaged.text());
    let engagement_id = engaged.json()["id"]
        .as_str()
        .expect("engagement id")
        .to_string();

    let res = wg
        .proxy(Req::get(&public("/status")).header("origin", "https://anyone.example"))
        .await;
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let text = res.text();
    assert!(!text.contains(secret), "the reason leaked: {text}");
    assert!(
        !text.contains(&engagement_id),
        "the engagement id leaked: {text}"
    );
    assert!(!text.contains("engagements"), "engagements leaked: {text}");

    let doc = public_status(&wg).await;
    assert_eq!(doc["guarded"], true, "{doc}");
    assert_eq!(doc["retry_after"], 30, "{doc}");
    let admin = wg.status().await;
    assert!(doc["since"].is_string(), "{doc}");
    assert_eq!(
        doc["since"], admin["since"],
        "public and admin `since` differ"
    );

    // No Origin at all: still `*` (the default `cors_origins`).
    let res = wg.proxy(Req::get(&public("/status"))).await;
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));

    wg.release(true).await;
    let doc = public_status(&wg).await;
    assert_eq!(doc["guarded"], false, "{doc}");
    assert!(doc["since"].is_null(), "{doc}");
    assert_eq!(up.hits(), 0, "a public route reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_never_reach_the_upstream_and_are_never_guarded() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    async fn every_route(wg: &Instance) {
        for path in ["/status", "/banner.js", "/api/p/main"] {
            let res = wg.proxy(Req::get(&public(path))).await;
            assert_eq!(res.status, 200, "GET {path}: {}", res.text());
            let res = wg.proxy(Req::new("HEAD", &public(path))).await;
            assert_eq!(res.status, 200, "HEAD {path}");
        }
        let mut events = Events::open(wg.proxy, &public("/events")).await;
        events.next_state().await;
        drop(events);
        let res = wg.proxy(preflight("https://shop.example")).await;
        assert_eq!(res.status, 204);
        // Unknown routes under the prefix are answered here too, never forwarded.
        for path in [PREFIX.to_string(), public("/"), public("/nope/deeper")] {
            let res = wg.proxy(Req::get(&path)).await;
            assert_eq!(res.status, 404, "GET {path}: {}", res.text());
        }
        // Writes to them are not guarded (404 from writeguard, not 503) and not forwarded.
        for path in ["/status", "/events", "/banner.js", "/api/p/main", "/nope"] {
            let res = wg
                .proxy(
                    Req::new("POST", &public(path))
                        .header("accept", BROWSER_ACCEPT)
                        .body("x=1"),
                )
                .await;
            assert_eq!(res.status, 404, "POST {path}: {}", res.text());
            let res = wg.proxy(Req::new("PATCH", &public(path)).body("x=1")).await;
            assert_eq!(res.status, 404, "PATCH {path}: {}", res.text());
        }
    }

    every_route(&wg).await;
    assert_eq!(wg.engage("deploy", None).await.status, 201);
    every_route(&wg).await;
    assert_eq!(up.hits(), 0, "a public route reached the upstream");

    // Control: the counter counts, and a path that only starts with the prefix's text is
    // not ours.
    let res = wg.proxy(Req::get("/.well-known/writeguardx/status")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-upstream"), Some("recorder"));
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last().uri, "/.well-known/writeguardx/status");
    // And the guard is really on for the rest of the site.
    assert_eq!(wg.post("/orders").await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_holder_follows_the_guard_and_fails_open_outside_its_scope() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .project(SAMPLE_PROJECT)
        .environments(&["main"])
        .start()
        .await;

    assert!(available(&wg, SAMPLE_PROJECT, "main").await);
    assert!(available(&wg, "otherproject123", "main").await);

    assert_eq!(wg.engage("deploy", None).await.status, 201);
    assert!(!available(&wg, SAMPLE_PROJECT, "main").await);
    // Fail open for what we do not guard: another project, another environment.
    assert!(available(&wg, "otherproject123", "main").await);
    assert!(available(&wg, SAMPLE_PROJECT, "staging").await);
    // CORS on the status-holder answer too.
    let res = wg
        .proxy(
            Req::get(&public(&format!("/api/{SAMPLE_PROJECT}/main")))
                .header("origin", "https://shop.example"),
        )
        .await;
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));

    wg.release(true).await;
    assert!(available(&wg, SAMPLE_PROJECT, "main").await);
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_holder_without_a_scope_answers_for_every_project() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    assert!(available(&wg, "anyproject", "anyenv").await);
    assert_eq!(wg.engage("deploy", None).await.status, 201);
    assert!(!available(&wg, "anyproject", "anyenv").await);
    assert!(!available(&wg, SAMPLE_PROJECT, "main").await);
    // Not the contract's shape: answered here (never forwarded), and never "unavailable":
    // either an error or a fail-open `true`.
    for path in ["/api/onlyproject", "/api/p/e/extra", "/api//e"] {
        let res = wg.proxy(Req::get(&public(path))).await;
        match res.status.as_u16() {
            404 => {}
            200 => assert_eq!(res.json()["available"], true, "{path}: {}", res.text()),
            other => panic!("{path}: unexpected {other}: {}", res.text()),
        }
        assert!(res.header("x-upstream").is_none(), "{path} was forwarded");
    }
    assert_eq!(up.hits(), 0);
}
