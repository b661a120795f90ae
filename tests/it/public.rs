//! What people see, over real sockets: the public status surface on the proxy port (status,
//! live events, banner script, Upsun status-holder routes, CORS), the banner injected into
//! HTML pages, the custom maintenance page, and the admin port's deploys and dashboard.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common;
use crate::common::client::RawConn;
use crate::common::{
    sample, writeguard, Instance, Req, Resp, Upstream, Wg, SAMPLE_ID, SAMPLE_PROJECT,
};

const PREFIX: &str = "/.well-known/writeguard";
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
const SCRIPT_TAG: &str = r#"<script src="/.well-known/writeguard/banner.js" defer></script>"#;
const IN_PROGRESS: &str = "environment.push_in_progress";
const COMPLETE: &str = "environment.push_complete_success";
/// Every wait on a stream in this file.
const WAIT: Duration = Duration::from_secs(5);

fn public(path: &str) -> String {
    format!("{PREFIX}{path}")
}

#[track_caller]
fn assert_json_200(res: &Resp) -> Value {
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type {:?}",
        res.header("content-type")
    );
    res.json()
}

/// `GET {prefix}/status` through the proxy, checked for its shape: exactly `guarded`,
/// `since` and `retry_after`, uncached.
async fn public_status(wg: &Instance) -> Value {
    let res = wg.proxy(Req::get(&public("/status"))).await;
    let doc = assert_json_200(&res);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let mut keys: Vec<&str> = doc
        .as_object()
        .expect("status is a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["guarded", "retry_after", "since"], "{doc}");
    assert!(doc["guarded"].is_boolean(), "{doc}");
    assert!(doc["retry_after"].is_u64(), "{doc}");
    doc
}

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

/// A signed Upsun webhook posted to `{prefix}/api/` on the proxy port.
async fn public_webhook(wg: &Instance, body: &[u8], signature: Option<&str>) -> Resp {
    let mut req = Req::new("POST", &public("/api/"))
        .header("content-type", "application/json")
        .body(Bytes::copy_from_slice(body));
    if let Some(sig) = signature {
        req = req.header("x-jws-signature", sig);
    }
    wg.proxy(req).await
}

fn sign(body: &[u8]) -> String {
    writeguard::upsun::sign(common::SHARED_KEY.as_bytes(), body)
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events client

/// One open `GET {prefix}/events` stream, read event by event with deadlines.
struct Events {
    body: Incoming,
    /// Bytes received and not yet parsed into an event.
    pending: String,
    /// Everything received so far, as text.
    seen: String,
    conn: JoinHandle<()>,
    headers: http::HeaderMap,
}

impl Drop for Events {
    fn drop(&mut self) {
        // Closes the connection: the client is gone.
        self.conn.abort();
    }
}

impl Events {
    async fn open(addr: SocketAddr) -> Events {
        let opened = async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = Request::get(public("/events"))
                .header("host", addr.to_string())
                .header("accept", "text/event-stream")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let res = sender.send_request(req).await.expect("events response");
            (res, conn)
        };
        let (res, conn) = tokio::time::timeout(WAIT, opened)
            .await
            .expect("the events stream answers within 5 s");
        assert_eq!(res.status(), 200);
        let (parts, body) = res.into_parts();
        Events {
            body,
            pending: String::new(),
            seen: String::new(),
            conn,
            headers: parts.headers,
        }
    }

    /// The next complete event block (`retry:` hints and comments included).
    async fn next_block(&mut self) -> String {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block = self.pending[..end].to_string();
                self.pending.drain(..end + 2);
                return block;
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no event within {WAIT:?}; so far: {:?}", self.seen))
                .unwrap_or_else(|| panic!("the events stream ended; so far: {:?}", self.seen))
                .expect("events stream error");
            if let Ok(data) = frame.into_data() {
                let text = std::str::from_utf8(&data).expect("events are UTF-8");
                self.pending.push_str(text);
                self.seen.push_str(text);
            }
        }
    }

    /// The data of the next `state` event, skipping hints and heartbeats.
    async fn next_state(&mut self) -> Value {
        loop {
            let block = self.next_block().await;
            let mut lines = block.lines();
            if lines.next() != Some("event: state") {
                continue;
            }
            let data: String = lines
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            return serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("state data is JSON ({e}): {block:?}"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The status surface

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
async fn cors_origins_echo_only_a_listed_origin() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .public_line(r#"cors_origins = ["https://shop.example"]"#)
        .start()
        .await;

    for path in ["/status", "/api/p/main"] {
        let res = wg
            .proxy(Req::get(&public(path)).header("origin", "https://shop.example"))
            .await;
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some("https://shop.example"),
            "{path}"
        );
        let vary: Vec<&str> = res
            .headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().expect("ASCII"))
            .collect();
        assert!(
            vary.iter().any(|v| v
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("origin"))),
            "{path}: Vary must name Origin, got {vary:?}"
        );

        let res = wg
            .proxy(Req::get(&public(path)).header("origin", "https://evil.example"))
            .await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(
            res.header("access-control-allow-origin"),
            None,
            "{path}: an unlisted origin was allowed"
        );

        let res = wg.proxy(Req::get(&public(path))).await;
        assert_eq!(res.header("access-control-allow-origin"), None, "{path}");
    }

    // The preflight follows the same list.
    let preflight = |origin: &str| {
        Req::new("OPTIONS", &public("/api/p/main"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
    };
    let res = wg.proxy(preflight("https://shop.example")).await;
    assert_eq!(res.status, 204);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let res = wg.proxy(preflight("https://evil.example")).await;
    assert_eq!(res.header("access-control-allow-origin"), None);
    assert_eq!(up.hits(), 0);
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
        let mut events = Events::open(wg.proxy).await;
        events.next_state().await;
        drop(events);
        let res = wg
            .proxy(
                Req::new("OPTIONS", &public("/api/p/main"))
                    .header("origin", "https://shop.example")
                    .header("access-control-request-method", "GET"),
            )
            .await;
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
async fn preflight_answers_204_with_allowed_methods_and_headers() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let res = wg
        .proxy(
            Req::new("OPTIONS", &public("/api/p/main"))
                .header("origin", "https://shop.example")
                .header("access-control-request-method", "GET")
                .header(
                    "access-control-request-headers",
                    "content-type, x-requested-with",
                ),
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert!(res.body.is_empty());
    let methods = res
        .header("access-control-allow-methods")
        .expect("Access-Control-Allow-Methods");
    let methods: Vec<&str> = methods.split(',').map(str::trim).collect();
    for m in ["GET", "POST"] {
        assert!(methods.contains(&m), "{m} not allowed: {methods:?}");
    }
    let headers = res
        .header("access-control-allow-headers")
        .expect("Access-Control-Allow-Headers")
        .to_ascii_lowercase();
    for h in ["content-type", "x-requested-with"] {
        assert!(headers.contains(h), "{h} not allowed: {headers}");
    }
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));

    // Without requested headers: still a usable answer.
    let res = wg
        .proxy(
            Req::new("OPTIONS", &public("/api/p/main"))
                .header("origin", "https://shop.example")
                .header("access-control-request-method", "GET"),
        )
        .await;
    assert_eq!(res.status, 204);
    assert!(res.header("access-control-allow-methods").is_some());
    assert!(res.header("access-control-allow-headers").is_some());
    assert_eq!(up.hits(), 0);
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

// ---------------------------------------------------------------------------------------
// Live events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_send_the_state_at_connect_and_on_every_change_and_again_on_reconnect() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let mut events = Events::open(wg.proxy).await;
    assert!(
        events
            .headers
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream")),
        "{:?}",
        events.headers
    );
    assert_eq!(
        events.headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let first = events.next_state().await;
    assert!(
        events.seen.starts_with("retry:"),
        "the stream starts with a retry hint: {:?}",
        events.seen
    );
    assert_eq!(first["guarded"], false, "{first}");
    assert!(first["since"].is_null(), "{first}");
    assert_eq!(first["retry_after"], 30, "{first}");

    assert_eq!(wg.engage("deploy <1>", None).await.status, 201);
    let engaged = events.next_state().await;
    assert_eq!(engaged["guarded"], true, "{engaged}");
    assert!(engaged["since"].is_string(), "{engaged}");
    assert!(
        !events.seen.contains("deploy <1>"),
        "the reason leaked into the events: {:?}",
        events.seen
    );

    wg.release(true).await;
    let released = events.next_state().await;
    assert_eq!(released["guarded"], false, "{released}");

    // The client goes away; a deploy starts; the client reconnects and learns it at once.
    drop(events);
    assert_eq!(wg.engage("deploy 2", None).await.status, 201);
    let mut events = Events::open(wg.proxy).await;
    let now = events.next_state().await;
    assert_eq!(now["guarded"], true, "a reconnect got a stale state: {now}");
    assert!(events.seen.starts_with("retry:"), "{:?}", events.seen);

    // Two listeners at once both see the release.
    let mut other = Events::open(wg.proxy).await;
    assert_eq!(other.next_state().await["guarded"], true);
    wg.release(true).await;
    assert_eq!(events.next_state().await["guarded"], false);
    assert_eq!(other.next_state().await["guarded"], false);
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banner_script_is_served_as_javascript() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let res = wg.proxy(Req::get(&public("/banner.js"))).await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/javascript")),
        "{:?}",
        res.header("content-type")
    );
    assert!(!res.body.is_empty());
    let js = res.text();
    // It talks to its own routes, relative to where it was loaded from.
    assert!(js.contains("/events") && js.contains("/status"), "{js}");
    assert_eq!(up.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Webhooks on the public port

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_on_the_public_port_engage_and_release_like_the_admin_route() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    // Unsigned and badly signed: 401, nothing changes.
    let body = sample(IN_PROGRESS);
    let res = public_webhook(&wg, &body, None).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let wrong = writeguard::upsun::sign(b"not-the-shared-key", &body);
    let res = public_webhook(&wg, &body, Some(&wrong)).await;
    assert_eq!(res.status, 401, "{}", res.text());
    let mut tampered = body.clone();
    let at = tampered.len() - 2;
    tampered[at] ^= 0x01;
    let res = public_webhook(&wg, &tampered, Some(&sign(&body))).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert!(!wg.guarded().await, "a refused webhook engaged the guard");

    let res = public_webhook(&wg, &body, Some(&sign(&body))).await;
    let doc = assert_json_200(&res);
    assert_eq!(doc["accepted"], true, "{doc}");
    assert_eq!(doc["guarded"], true, "{doc}");
    let status = wg.status().await;
    assert_eq!(status["guarded"], true);
    assert_eq!(status["engagements"][0]["id"], SAMPLE_ID, "{status}");
    assert_eq!(wg.post("/orders").await.status, 503);
    assert_eq!(public_status(&wg).await["guarded"], true);

    // A badly signed "complete" does not release.
    let done = sample(COMPLETE);
    let res = public_webhook(&wg, &done, None).await;
    assert_eq!(res.status, 401);
    assert!(wg.guarded().await);

    let res = public_webhook(&wg, &done, Some(&sign(&done))).await;
    let doc = assert_json_200(&res);
    assert_eq!(doc["guarded"], false, "{doc}");
    assert!(!wg.guarded().await);
    assert_eq!(
        up.hits(),
        0,
        "a webhook or a guarded POST reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_key_the_public_port_takes_no_webhook_even_if_unsigned_is_allowed() {
    let up = Upstream::start().await;
    // `allow_unsigned` opens the admin route, never the public one.
    let wg = Wg::for_upstream(&up)
        .shared_key(None)
        .allow_unsigned(true)
        .start()
        .await;
    let body = sample(IN_PROGRESS);
    for signature in [None, Some(sign(&body))] {
        let res = public_webhook(&wg, &body, signature.as_deref()).await;
        assert_eq!(res.status, 404, "{}", res.text());
        assert!(!wg.guarded().await, "the public port took a webhook");
    }
    let res = wg
        .proxy(
            Req::new("POST", &public("/api"))
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert!(!wg.guarded().await);
    let deploys = wg.admin(Req::get("/deploys")).await;
    assert_eq!(
        deploys.json(),
        serde_json::json!([]),
        "a refused webhook was recorded"
    );
    assert_eq!(up.hits(), 0);

    // Control: the admin route does take it here (allow_unsigned).
    let res = wg.webhook(body, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(wg.guarded().await);
}

// ---------------------------------------------------------------------------------------
// Banner injection

const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Shop</title></head>\n<body><form method=\"post\"><button>Save</button></form></body></html>\n";
/// `<!doctype html><html><head><title>z</title></head><body>compressed</body></html>`,
/// gzip-compressed (`gzip.compress(page, mtime=0)`).
const GZ_PAGE: [u8; 80] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xb3, 0x51, 0x4c, 0xc9, 0x4f, 0x2e,
    0xa9, 0x2c, 0x48, 0x55, 0xc8, 0x28, 0xc9, 0xcd, 0xb1, 0xb3, 0x81, 0x92, 0xa9, 0x89, 0x29, 0x76,
    0x36, 0x25, 0x99, 0x25, 0x39, 0xa9, 0x76, 0x55, 0x36, 0xfa, 0x10, 0x86, 0x8d, 0x3e, 0x44, 0x38,
    0x29, 0x3f, 0xa5, 0xd2, 0x2e, 0x39, 0x3f, 0xb7, 0xa0, 0x28, 0xb5, 0xb8, 0x38, 0x35, 0xc5, 0x46,
    0x1f, 0x2c, 0x00, 0x94, 0x05, 0x69, 0x05, 0x00, 0x1c, 0x99, 0x8c, 0xba, 0x50, 0x00, 0x00, 0x00,
];

/// Registers the pages of the injection tests on `up`.
fn can_pages(up: &Upstream) {
    let html = &[("content-type", "text/html; charset=utf-8")][..];
    up.canned("page", 200, html, &[PAGE.as_bytes()]);
    // Split inside `</head>`: the rewriter must handle a tag across reads.
    let cut = PAGE.find("</head>").expect("the page has a head") + 4;
    up.canned(
        "page-chunked",
        200,
        html,
        &[&PAGE.as_bytes()[..cut], &PAGE.as_bytes()[cut..]],
    );
    up.canned(
        "gzip",
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("content-encoding", "gzip"),
            ("vary", "Accept-Encoding"),
        ],
        &[&GZ_PAGE],
    );
    up.canned(
        "json",
        200,
        &[("content-type", "application/json")],
        &[br#"{"html":"<html><head></head><body></body></html>"}"#],
    );
    up.canned(
        "plain",
        200,
        &[("content-type", "text/plain")],
        &[b"<html><head></head></html>"],
    );
    // A range of a bigger page: its bytes belong at an offset of the whole, so they must not
    // change.
    let range = format!("bytes 0-{}/{}", PAGE.len() - 1, PAGE.len() + 1000);
    up.canned(
        "partial",
        206,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("content-range", &range),
        ],
        &[PAGE.as_bytes()],
    );
    // The origin forbids transformations (RFC 9110 §7.7: a proxy MUST NOT change the
    // content then).
    up.canned(
        "no-transform",
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "public, max-age=60, no-transform"),
        ],
        &[PAGE.as_bytes()],
    );
    // Validators and ranges that describe the original bytes.
    up.canned(
        "validators",
        200,
        &[
            ("content-type", "text/html; charset=utf-8"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
        ],
        &[PAGE.as_bytes()],
    );
    up.canned("missing", 404, html, &[PAGE.as_bytes()]);
    up.canned("error", 500, html, &[PAGE.as_bytes()]);
}

/// GETs `path` on one keep-alive connection, then a second request on the same one (so a
/// wrong length would show up as a broken next response).
async fn get_twice(
    addr: SocketAddr,
    path: &str,
    accept_encoding: Option<&str>,
) -> common::client::RawResp {
    let mut conn = RawConn::connect(addr).await;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {BROWSER_ACCEPT}\r\n");
    if let Some(enc) = accept_encoding {
        head += &format!("Accept-Encoding: {enc}\r\n");
    }
    head += "\r\n";
    conn.write(head.as_bytes()).await;
    let res = conn.read_response(false).await;
    conn.write(format!("GET /after HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let next = conn.read_response(false).await;
    assert_eq!(next.status, 200, "the connection broke after {path}");
    assert_eq!(
        next.header("x-upstream"),
        Some("recorder"),
        "after {path}: {next:?}"
    );
    res
}

/// The answer is exactly what the upstream sent: same bytes, same length header.
#[track_caller]
fn assert_untouched(res: &common::client::RawResp, body: &[u8], what: &str) {
    assert!(
        res.body == body,
        "{what}: the body was changed:\n{:?}",
        res.text()
    );
    assert_eq!(
        res.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{what}: content-length changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_banner_adds_the_script_before_head_end_and_leaves_everything_else_alone() {
    let up = Upstream::start().await;
    can_pages(&up);
    let wg = Wg::for_upstream(&up)
        .public_line("inject_banner = true")
        .start()
        .await;
    let expected = PAGE.replace("</head>", &format!("{SCRIPT_TAG}</head>"));

    for name in ["page", "page-chunked"] {
        let res = get_twice(wg.proxy, &format!("/__canned/{name}"), None).await;
        assert_eq!(res.status, 200, "{name}");
        assert_eq!(
            res.text(),
            expected,
            "{name}: the page read completely is not the rewritten page"
        );
        if let Some(len) = res.header("content-length") {
            assert_eq!(
                len,
                expected.len().to_string(),
                "{name}: wrong content-length"
            );
        }
        assert_eq!(
            res.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{name}"
        );
    }
    // The hyper client agrees on the framing too.
    let res = wg.proxy(Req::get("/__canned/page")).await;
    assert_eq!(res.text(), expected);

    // Compressed pages pass untouched (not broken).
    let res = get_twice(wg.proxy, "/__canned/gzip", Some("gzip")).await;
    assert_eq!(res.status, 200);
    assert_untouched(&res, &GZ_PAGE, "gzip");
    assert_eq!(res.header("content-encoding"), Some("gzip"));

    // Not HTML, or not a success: untouched.
    let json = br#"{"html":"<html><head></head><body></body></html>"}"#;
    let res = get_twice(wg.proxy, "/__canned/json", None).await;
    assert_untouched(&res, json, "json");
    let res = get_twice(wg.proxy, "/__canned/plain", None).await;
    assert_untouched(&res, b"<html><head></head></html>", "text/plain");
    let res = get_twice(wg.proxy, "/__canned/no-transform", None).await;
    assert_untouched(&res, PAGE.as_bytes(), "cache-control: no-transform");
    // A rewritten page is not the representation the origin's strong ETag and byte ranges
    // describe: a later `If-Range` or range request must not mix the two.
    let res = get_twice(wg.proxy, "/__canned/validators", None).await;
    assert_eq!(res.text(), expected, "validators");
    assert!(
        res.header("etag").is_none_or(|e| e.starts_with("W/")),
        "a rewritten page kept the strong ETag {:?}",
        res.header("etag")
    );
    assert!(
        res.header("accept-ranges").is_none_or(|v| v == "none"),
        "a rewritten page still offers byte ranges: {:?}",
        res.header("accept-ranges")
    );
    for (name, status) in [("partial", 206), ("missing", 404), ("error", 500)] {
        let res = get_twice(wg.proxy, &format!("/__canned/{name}"), None).await;
        assert_eq!(res.status, status, "{name}");
        assert_untouched(&res, PAGE.as_bytes(), name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inject_banner_html_passes_byte_identical() {
    let up = Upstream::start().await;
    can_pages(&up);
    let wg = Wg::for_upstream(&up)
        .public_line("inject_banner = false")
        .start()
        .await;
    let res = get_twice(wg.proxy, "/__canned/page", None).await;
    assert_eq!(res.status, 200);
    assert_untouched(&res, PAGE.as_bytes(), "page");
    let res = get_twice(wg.proxy, "/__canned/page-chunked", None).await;
    assert!(res.body == PAGE.as_bytes(), "{:?}", res.text());

    // The default is off as well.
    let up2 = Upstream::start().await;
    can_pages(&up2);
    let wg2 = Wg::for_upstream(&up2).start().await;
    let res = get_twice(wg2.proxy, "/__canned/page", None).await;
    assert_untouched(&res, PAGE.as_bytes(), "page (default config)");
}

// ---------------------------------------------------------------------------------------
// The maintenance page

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_maintenance_page_gets_its_placeholders_filled_and_the_reason_escaped() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let page_path = dir.path().join("maintenance.html");
    let template = "<!doctype html><title>Busy</title>\n<p id=retry>{{retry_after}}</p>\n<p id=why>{{reason}}</p>\n<p id=since>{{since}}</p>\n<p>again: {{retry_after}}</p>\n";
    std::fs::write(&page_path, template).expect("write page");
    let wg = Wg::for_upstream(&up)
        .guard_line(&format!(
            "page = {}",
            Value::from(page_path.to_string_lossy().as_ref())
        ))
        .start()
        .await;

    let reason = r#"a <b> & "c""#;
    assert_eq!(wg.engage(reason, None).await.status, 201);
    let since = wg.status().await["since"]
        .as_str()
        .expect("since while engaged")
        .to_string();

    let res = wg
        .proxy(
            Req::new("POST", "/orders")
                .header("accept", BROWSER_ACCEPT)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("item=1"),
        )
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        res.header("content-type")
    );
    let retry_after = res.header("retry-after").expect("Retry-After").to_string();
    assert_eq!(retry_after, "30");
    let expected = template
        .replace("{{retry_after}}", &retry_after)
        .replace("{{reason}}", "a &lt;b&gt; &amp; &quot;c&quot;")
        .replace("{{since}}", &since);
    assert_eq!(res.text(), expected);
    assert!(!res.text().contains("<b>"), "the reason was not escaped");

    // API clients still get problem+json, not the page.
    let res = wg
        .proxy(Req::new("POST", "/orders").header("accept", "application/json"))
        .await;
    assert_eq!(res.status, 503);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(up.hits(), 0, "a guarded write reached the upstream");
}

/// Runs `writeguard <args>` in `cwd`, killed after 20 s at most.
async fn run(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = writeguard();
    cmd.args(args).current_dir(cwd);
    tokio::task::spawn_blocking(move || {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn writeguard");
        let pid = child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(20));
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
        let out = child.wait_with_output().expect("wait for writeguard");
        drop(killer);
        out
    })
    .await
    .expect("run writeguard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_missing_maintenance_page_naming_guard_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-page.html");
    let config = |page: &Path| {
        Wg::new("http://127.0.0.1:8000")
            .guard_line(&format!(
                "page = {}",
                Value::from(page.to_string_lossy().as_ref())
            ))
            .render(common::free_port(), common::free_port(), dir.path())
    };
    let path = dir.path().join("writeguard.toml");
    std::fs::write(&path, config(&missing)).expect("write config");
    let out = run(dir.path(), &["check", "-c", &path.to_string_lossy()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("guard.page"), "stderr:\n{stderr}");
    assert!(stderr.contains("no-such-page.html"), "stderr:\n{stderr}");

    // Control: the same config with the page present passes.
    std::fs::write(&missing, "<p>{{reason}}</p>").expect("write page");
    let out = run(dir.path(), &["check", "-c", &path.to_string_lossy()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// The admin port: deploys and dashboard

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

// ---------------------------------------------------------------------------------------
// The request line the upstream sees

/// A bare TCP upstream: records the head of every request, reads its body
/// (`content-length` only), answers `ok` and closes.
async fn raw_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let exchange = async {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    let end = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            return Ok(());
                        }
                        got.extend_from_slice(&buf[..n]);
                    };
                    let head = String::from_utf8_lossy(&got[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    // The whole body, so that closing does not reset the connection.
                    while got.len() < end + len {
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(head);
                    stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await?;
                    stream.shutdown().await?;
                    // Until the proxy closes its side too.
                    while stream.read(&mut buf).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::time::timeout(WAIT, exchange).await;
            });
        }
    });
    (addr, heads, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_an_origin_form_request_line() {
    let (addr, heads, task) = raw_upstream().await;
    let wg = Wg::new(format!("http://{addr}")).start().await;

    let res = wg.proxy(Req::get("/path?q=1")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "ok");
    let res = wg
        .proxy(Req::new("POST", "/orders/7?x=a%20b").body("x=1"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    let heads = heads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    task.abort();
    let lines: Vec<&str> = heads
        .iter()
        .map(|h| h.split("\r\n").next().unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        ["GET /path?q=1 HTTP/1.1", "POST /orders/7?x=a%20b HTTP/1.1"],
        "heads:\n{heads:#?}"
    );
    for head in &heads {
        assert!(
            head.to_ascii_lowercase().contains("\r\nhost: "),
            "no Host header:\n{head}"
        );
    }
}
