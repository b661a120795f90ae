//! The data path over real sockets: pass-through of every method with bodies streamed both
//! ways, the guarded 503 (negotiated, never reaching the upstream, keep-alive), 502, and the
//! request line the upstream gets.

use std::time::Duration;

use bytes::Bytes;

use crate::common;
use crate::common::client::RawConn;
use crate::common::faulty::Faulty;
use crate::common::upstream::sha256_hex;
use crate::common::{engaged, pattern, Req, Upstream, Wg, BROWSER_ACCEPT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_passes_through_with_path_query_and_headers_intact() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let host = wg.proxy.to_string();

    for (i, method) in ["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"]
        .into_iter()
        .enumerate()
    {
        let body = if matches!(method, "PUT" | "POST" | "PATCH") {
            Bytes::from(format!("payload of {method}"))
        } else {
            Bytes::new()
        };
        let path = format!("/items/{i}/a%20b?q=1&list=a,b&empty=&enc=%2F%3F");
        let res = wg
            .proxy(
                Req::new(method, &path)
                    .header("x-custom", "kept as is")
                    .header("accept", "application/json")
                    .header("cookie", "session=abc; other=1")
                    .header("authorization", "Bearer app-token")
                    .body(body.clone()),
            )
            .await;
        assert_eq!(res.status, 200, "{method}: {}", res.text());
        assert_eq!(res.header("x-upstream"), Some("recorder"), "{method}");
        if method == "HEAD" {
            assert!(res.body.is_empty(), "HEAD answered with a body");
        } else {
            assert_eq!(res.json()["uri"], path.as_str(), "{method}");
        }

        let seen = up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.uri, path, "{method}: path and query changed");
        assert_eq!(seen.body, body, "{method}: body changed");
        assert_eq!(seen.header("x-custom"), Some("kept as is"));
        assert_eq!(seen.header("cookie"), Some("session=abc; other=1"));
        assert_eq!(seen.header("authorization"), Some("Bearer app-token"));
        assert_eq!(seen.header("accept"), Some("application/json"));
        assert_eq!(seen.header("host"), Some(host.as_str()));
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("x-forwarded-host"), Some(host.as_str()));
    }
    assert_eq!(up.hits(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_append_to_what_the_client_sent() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let res = wg
        .proxy(
            Req::get("/fwd")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "shop.example"),
        )
        .await;
    assert_eq!(res.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_megabyte_request_bodies_arrive_byte_identical() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    // 8 MiB with a content-length.
    let big = pattern(8 * 1024 * 1024, 1);
    let res = wg
        .proxy(
            Req::new("POST", "/upload/fixed")
                .header("content-type", "application/octet-stream")
                .body(big.clone()),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["len"], big.len());
    assert_eq!(res.json()["sha256"], sha256_hex(&big));
    let seen = up.last();
    assert_eq!(seen.uri, "/upload/fixed");
    assert_eq!(seen.body.len(), big.len());
    assert!(seen.body == big, "8 MiB body was altered on the way");

    // 3 MiB chunked (no content-length), in uneven pieces.
    let chunked = pattern(3 * 1024 * 1024 + 17, 2);
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < chunked.len() {
        let end = (at + size).min(chunked.len());
        pieces.push(chunked.slice(at..end));
        at = end;
        size = (size * 7 + 13) % (200 * 1024) + 1;
    }
    let res = wg
        .proxy(Req::new("PUT", "/upload/chunked").chunked(pieces))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let seen = up.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body.len(), chunked.len());
    assert!(seen.body == chunked, "chunked body was altered on the way");
    assert!(
        seen.header("content-length").is_none()
            || seen.header("content-length") == Some(&chunked.len().to_string()),
        "wrong content-length forwarded for a chunked body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_megabyte_responses_come_back_byte_identical() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let n = 6 * 1024 * 1024 + 3;
    let expected = pattern(n, 7);

    let res = wg.proxy(Req::get(&format!("/__big/{n}"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some(n.to_string().as_str()));
    assert_eq!(res.body.len(), n);
    assert!(res.body == expected, "response body was altered");

    let res = wg.proxy(Req::get(&format!("/__bigchunked/{n}"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), n);
    assert!(res.body == expected, "chunked response body was altered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_headers_are_returned_unchanged() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    for code in [201u16, 404, 418, 500] {
        let res = wg
            .proxy(Req::new("POST", &format!("/__status/{code}")).body("{}"))
            .await;
        assert_eq!(res.status.as_u16(), code);
        assert_eq!(res.header("x-custom-header"), Some("custom-value"));
        assert_eq!(res.text(), format!("status {code}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_writes_get_503_problem_json_and_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).retry_after("45s").start().await;

    // Not guarded yet: a POST reaches the upstream.
    assert_eq!(wg.post("/orders").await.status, 200);
    assert_eq!(up.hits(), 1);

    engaged(&wg).await;
    for (method, accept) in [
        ("POST", Some("application/json")),
        ("PATCH", None),
        ("POST", Some("*/*")),
        ("PATCH", Some("application/problem+json")),
    ] {
        let mut req = Req::new(method, "/orders/42?x=1")
            .header("content-type", "application/json")
            .body(r#"{"qty":1}"#);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let res = wg.proxy(req).await;
        assert_eq!(res.status, 503, "{method} {accept:?}");
        let retry: u64 = res
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("Retry-After is a number of seconds");
        assert!((1..=45).contains(&retry), "Retry-After {retry}");
        assert_eq!(res.header("cache-control"), Some("no-store"));
        assert_eq!(
            res.header("content-type"),
            Some("application/problem+json"),
            "{method} {accept:?}"
        );
        let doc = res.json();
        assert!(doc["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(doc["status"], 503);
        assert!(doc["detail"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(doc["retry_after"], retry);
    }
    assert_eq!(up.hits(), 1, "a guarded write reached the upstream");

    // Reads and the other methods still flow.
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let res = wg.proxy(Req::new(method, "/orders/42")).await;
        assert_eq!(res.status, 200, "{method} while guarded");
        assert_eq!(up.last().method, method);
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(up.count_method("POST"), 1);
    assert_eq!(up.count_method("PATCH"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_browsers_get_an_html_page() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    engaged(&wg).await;
    for method in ["POST", "PATCH"] {
        let res = wg
            .proxy(
                Req::new(method, "/profile")
                    .header("accept", BROWSER_ACCEPT)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("name=x"),
            )
            .await;
        assert_eq!(res.status, 503);
        assert!(res.header("retry-after").is_some());
        assert_eq!(res.header("cache-control"), Some("no-store"));
        assert!(
            res.header("content-type")
                .is_some_and(|c| c.starts_with("text/html")),
            "{:?}",
            res.header("content-type")
        );
        let page = res.text().to_ascii_lowercase();
        assert!(page.contains("<html") && page.contains("</html>"), "{page}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_case_configured_methods_and_allow_paths() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .methods(&["POST", "PATCH", "delete"])
        .allow_paths(&["/login", "/hooks/stripe/"])
        .start()
        .await;
    engaged(&wg).await;

    // A lower-case method is a write too.
    let res = wg.proxy(Req::new("post", "/orders").body("a=1")).await;
    assert_eq!(res.status, 503, "lower-case `post` passed the guard");
    // A configured extra method is guarded; PUT is not in the list.
    assert_eq!(wg.proxy(Req::new("DELETE", "/orders/1")).await.status, 503);
    assert_eq!(up.hits(), 0);
    assert_eq!(wg.proxy(Req::new("PUT", "/orders/1")).await.status, 200);

    // allow_paths: whole-segment prefixes pass, look-alikes do not.
    for path in [
        "/login",
        "/login/sso?next=/",
        "/hooks/stripe",
        "/hooks/stripe/evt",
    ] {
        let res = wg.proxy(Req::new("POST", path).body("a=1")).await;
        assert_eq!(res.status, 200, "{path} is allowed");
        assert_eq!(up.last().uri, path);
    }
    for path in ["/loginx", "/hooks", "/login/../orders", "/api/login"] {
        let res = wg.proxy(Req::new("POST", path).body("a=1")).await;
        assert_eq!(res.status, 503, "{path} must stay guarded");
    }
    assert_eq!(up.count_method("POST"), 4);
    assert_eq!(up.count_method("post") + up.count_method("DELETE"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_stays_usable_after_a_503() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    engaged(&wg).await;

    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(
        b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
          Content-Length: 11\r\n\r\n{\"qty\": 1}\n",
    )
    .await;
    let first = conn.read_response(false).await;
    assert_eq!(first.status, 503);
    assert_ne!(
        first.header("connection").map(str::to_ascii_lowercase),
        Some("close".into()),
        "a small guarded body must not close the connection"
    );
    assert!(first.text().contains("503"));

    // Same TCP connection: a chunked guarded write, then a read that reaches the upstream.
    conn.write(
        b"PATCH /orders/1 HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(conn.read_response(false).await.status, 503);
    conn.write(b"GET /still-alive?n=2 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await;
    let second = conn.read_response(false).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last().uri, "/still-alive?n=2");
    assert_eq!(up.last().method, "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_a_502_with_a_short_body() {
    // Nobody listens on this port.
    let nowhere = common::free_port();
    let wg = Wg::new(format!("http://{nowhere}")).start().await;
    for method in ["GET", "POST"] {
        let res = wg
            .proxy(Req::new(method, "/x").timeout(Duration::from_secs(10)))
            .await;
        assert_eq!(res.status, 502, "{method}");
        assert!(
            !res.body.is_empty() && res.body.len() < 512,
            "{:?}",
            res.text()
        );
    }

    // An upstream that was there and goes away.
    let mut up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    assert_eq!(wg.proxy(Req::get("/before")).await.status, 200);
    up.stop().await;
    let res = wg
        .proxy(Req::get("/after").timeout(Duration::from_secs(10)))
        .await;
    assert_eq!(res.status, 502);
    assert!(!res.body.is_empty() && res.body.len() < 512);
    // ... and writeguard itself is still fine.
    assert_eq!(wg.admin(Req::get("/healthz")).await.status, 200);
}

/// The request line the upstream sees: origin-form (never the absolute form), with a Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_an_origin_form_request_line() {
    let f = Faulty::start().await;
    let wg = Wg::new(f.url()).start().await;

    let res = wg.proxy(Req::get("/path?q=1")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "ok");
    let res = wg
        .proxy(Req::new("POST", "/orders/7?x=a%20b").body("x=1"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    let heads: Vec<String> = f.seen().into_iter().map(|s| s.head).collect();
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
