//! Stale reads (`[stale]`) over real sockets: pages the app served are served again, with
//! `Age` and `Cache-Status`, while the app is stopped, answering 5xx or not answering in
//! time; what may not be stored (private, Set-Cookie, credentials, no-store, too large,
//! must-revalidate) gets the usual 502; `Vary` picks the variant; `stale-if-error` and the
//! grace bound how long; `serve_when = "upstream-error-or-guarded"` serves stored pages
//! without asking the app while the guard is engaged; the store's numbers show in `/metrics`
//! and `/status`.

use std::time::Duration;

use crate::common::faulty::Faulty;
use crate::common::{engaged, Instance, Req, Upstream, Wg};

/// A `[stale]` instance in front of `up` with these more `[stale]` lines, the app's failures
/// answered without retrying.
fn stale(up: &Upstream, lines: &[&str]) -> Wg {
    Wg::for_upstream(up)
        .proxy_line("upstream_retry = \"0s\"")
        .section(&stale_section(lines))
}

fn stale_section(lines: &[&str]) -> String {
    format!("[stale]\nenabled = true\n{}", lines.join("\n"))
}

/// The value of the metric sample named exactly `name` (with its labels).
async fn metric(wg: &Instance, name: &str) -> f64 {
    let text = wg.admin(Req::get("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

const PAGE: &[u8] = b"<h1>the front page</h1>";

#[tokio::test]
async fn cacheable_pages_outlive_the_app_and_the_rest_gets_502() {
    let mut up = Upstream::start().await;
    up.canned("page", 200, &[("content-type", "text/html")], &[PAGE]);
    up.canned(
        "fresh",
        200,
        &[("cache-control", "max-age=600")],
        &[b"fresh"],
    );
    up.canned("chunked", 200, &[], &[b"in ", b"three ", b"pieces"]);
    up.canned(
        "private",
        200,
        &[("cache-control", "private, max-age=600")],
        &[b"p"],
    );
    up.canned("cookie", 200, &[("set-cookie", "sid=1")], &[b"c"]);
    up.canned("no-store", 200, &[("cache-control", "no-store")], &[b"n"]);
    up.canned("no-cache", 200, &[("cache-control", "no-cache")], &[b"n"]);
    up.canned(
        "must-revalidate",
        200,
        &[("cache-control", "max-age=0, must-revalidate")],
        &[b"m"],
    );
    up.canned("big", 200, &[], &[&[b'x'; 2048]]);
    up.canned("big-chunked", 200, &[], &[&[b'x'; 1000], &[b'y'; 1000]]);
    up.canned("authorized", 200, &[], &[b"for one user"]);
    up.canned(
        "public",
        200,
        &[("cache-control", "public, max-age=0")],
        &[b"for all"],
    );
    up.canned("created", 201, &[], &[b"c"]);
    let wg = stale(&up, &["max_object = \"1KiB\""]).start().await;
    let get = |path: &str| wg.proxy_req("GET", path);

    // While the app is up, every request reaches it and its answers pass untouched.
    for _ in 0..2 {
        let res = wg.proxy(get("/__canned/page")).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, PAGE);
        assert_eq!(res.header("cache-status"), None);
        assert_eq!(res.header("age"), None);
    }
    assert_eq!(up.hits(), 2);
    for name in [
        "fresh",
        "chunked",
        "private",
        "cookie",
        "no-store",
        "no-cache",
        "must-revalidate",
        "big",
        "big-chunked",
        "created",
    ] {
        let res = wg.proxy(get(&format!("/__canned/{name}"))).await;
        assert!(res.status.is_success(), "{name}: {}", res.status);
    }
    for name in ["authorized", "public"] {
        let res = wg
            .proxy(get(&format!("/__canned/{name}")).header("authorization", "Bearer t"))
            .await;
        assert_eq!(res.status, 200, "{name}");
    }
    let with_cookie = wg
        .proxy(get("/__canned/fresh?c=1").header("cookie", "sid=9"))
        .await;
    assert_eq!(with_cookie.status, 200);

    up.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let res = wg.proxy(get("/__canned/page")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body, PAGE);
    assert_eq!(res.header("content-type"), Some("text/html"));
    assert_eq!(
        res.header("cache-status"),
        Some("writeguard; hit; fwd=stale")
    );
    assert_eq!(res.header("warning"), None);
    let age: u64 = res.header("age").expect("an Age").parse().expect("seconds");
    assert!((1..60).contains(&age), "age {age}");
    let head = wg.proxy(wg.proxy_req("HEAD", "/__canned/page")).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(PAGE.len().to_string().as_str())
    );
    for (path, body) in [
        ("/__canned/fresh", &b"fresh"[..]),
        ("/__canned/chunked", b"in three pieces"),
    ] {
        let res = wg.proxy(get(path)).await;
        assert_eq!((res.status.as_u16(), &res.body[..]), (200, body), "{path}");
        assert_eq!(
            res.header("cache-status"),
            Some("writeguard; hit; fwd=stale")
        );
    }
    // Public answers were stored though asked for with credentials, and go to such requests.
    let res = wg
        .proxy(get("/__canned/public").header("authorization", "Bearer t"))
        .await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "for all"));
    // A stored page that is not public does not go to a request carrying credentials.
    for (name, value) in [("authorization", "Bearer t"), ("cookie", "sid=2")] {
        let res = wg.proxy(get("/__canned/page").header(name, value)).await;
        assert_eq!(res.status, 502, "page with {name}");
    }
    for path in [
        "/__canned/never-asked",
        "/__canned/page?other=query",
        "/__canned/private",
        "/__canned/cookie",
        "/__canned/no-store",
        "/__canned/no-cache",
        "/__canned/must-revalidate",
        "/__canned/big",
        "/__canned/big-chunked",
        "/__canned/created",
        "/__canned/authorized",
        "/__canned/fresh?c=1",
    ] {
        let res = wg.proxy(get(path)).await;
        assert_eq!(res.status, 502, "{path}: {}", res.text());
        assert_eq!(res.header("cache-status"), None, "{path}");
    }
    // Only reads: a write still gets the 502.
    let post = wg.proxy(wg.proxy_req("POST", "/__canned/page")).await;
    assert_eq!(post.status, 502);

    // /metrics and /status say what is held and what was served.
    assert_eq!(metric(&wg, "writeguard_stale_stored_total").await, 4.0);
    assert_eq!(metric(&wg, "writeguard_stale_answers").await, 4.0);
    assert!(metric(&wg, "writeguard_stale_served_total").await >= 5.0);
    let bytes = metric(&wg, "writeguard_stale_bytes").await;
    assert!(
        bytes > PAGE.len() as f64 && bytes < 64.0 * 1024.0,
        "{bytes}"
    );
    let status = wg.status().await;
    assert_eq!(status["stale"]["answers"], 4, "{status}");
    assert_eq!(status["stale"]["max_bytes"], 64 << 20);

    // The app back: its answers again.
    up.restart().await;
    up.canned("page", 200, &[], &[b"new front page"]);
    let res = wg.proxy(get("/__canned/page")).await;
    assert_eq!(
        (res.status.as_u16(), res.text().as_str()),
        (200, "new front page")
    );
    assert_eq!(res.header("cache-status"), None);
}

#[tokio::test]
async fn an_app_answering_5xx_gets_the_stored_page_and_vary_picks_the_variant() {
    let up = Upstream::start().await;
    up.canned("flip", 200, &[("vary", "Accept-Language")], &[b"bonjour"]);
    let wg = stale(&up, &[]).start().await;
    let get = |lang: Option<&str>| {
        let req = wg.proxy_req("GET", "/__canned/flip");
        match lang {
            Some(l) => req.header("accept-language", l),
            None => req,
        }
    };
    assert_eq!(wg.proxy(get(Some("fr"))).await.text(), "bonjour");

    for status in [500, 502, 503, 504] {
        up.canned("flip", status, &[], &[b"deploying"]);
        let fr = wg.proxy(get(Some("fr"))).await;
        assert_eq!(
            (fr.status.as_u16(), fr.text().as_str()),
            (200, "bonjour"),
            "{status}"
        );
        assert_eq!(
            fr.header("cache-status"),
            Some("writeguard; hit; fwd=stale")
        );
        assert_eq!(fr.header("vary"), Some("Accept-Language"));
        for other in [Some("de"), None] {
            let res = wg.proxy(get(other)).await;
            assert_eq!(
                (res.status.as_u16(), res.text().as_str()),
                (status, "deploying")
            );
        }
    }
    // Other errors are the app's answer, not a failure.
    up.canned("flip", 404, &[], &[b"gone"]);
    assert_eq!(wg.proxy(get(Some("fr"))).await.status, 404);
    assert_eq!(up.hits(), 1 + 4 * 3 + 1);
}

#[tokio::test]
async fn stale_if_error_bounds_the_time_and_grace_the_rest() {
    let mut up = Upstream::start().await;
    up.canned(
        "short",
        200,
        &[("cache-control", "max-age=0, stale-if-error=1")],
        &[b"s"],
    );
    up.canned("graced", 200, &[], &[b"g"]);
    let wg = stale(&up, &["grace = \"1h\""]).start().await;
    for name in ["short", "graced"] {
        assert_eq!(
            wg.proxy(wg.proxy_req("GET", &format!("/__canned/{name}")))
                .await
                .status,
            200
        );
    }
    up.stop().await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/short"))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/short"))
            .await
            .status,
        502
    );
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/graced"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn past_the_grace_the_502_comes_back() {
    let mut up = Upstream::start().await;
    up.canned("page", 200, &[], &[PAGE]);
    let wg = stale(&up, &["grace = \"1s\""]).start().await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/page")).await.status,
        200
    );
    up.stop().await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/page")).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/page")).await.status,
        502
    );
    assert_eq!(
        metric(&wg, "writeguard_stale_evicted_total{reason=\"expired\"}").await,
        1.0
    );
    assert_eq!(metric(&wg, "writeguard_stale_answers").await, 0.0);
}

#[tokio::test]
async fn off_by_default_pages_pass_and_nothing_is_kept() {
    let mut up = Upstream::start().await;
    up.canned(
        "page",
        200,
        &[("cache-control", "public, max-age=600")],
        &[PAGE],
    );
    let wg = Wg::for_upstream(&up)
        .proxy_line("upstream_retry = \"0s\"")
        .start()
        .await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/page")).await.status,
        200
    );
    up.stop().await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/page")).await.status,
        502
    );
    assert_eq!(metric(&wg, "writeguard_stale_stored_total").await, 0.0);
    assert!(wg.status().await.get("stale").is_none());
}

#[tokio::test]
async fn while_guarded_stored_pages_are_served_without_asking_the_app() {
    let up = Upstream::start().await;
    up.canned("page", 200, &[], &[PAGE]);
    up.canned("other", 200, &[], &[b"other"]);
    let wg = stale(&up, &["serve_when = \"upstream-error-or-guarded\""])
        .start()
        .await;
    assert_eq!(
        wg.proxy(wg.proxy_req("GET", "/__canned/page")).await.status,
        200
    );
    wg.engage("deploy", None).await;
    engaged(&wg).await;
    let hits = up.hits();
    let res = wg.proxy(wg.proxy_req("GET", "/__canned/page")).await;
    assert_eq!((res.status.as_u16(), &res.body[..]), (200, PAGE));
    assert_eq!(
        res.header("cache-status"),
        Some("writeguard; hit; detail=guarded")
    );
    assert_eq!(up.hits(), hits, "the app was asked");
    // Nothing stored: asked of the app as usual.
    let res = wg.proxy(wg.proxy_req("GET", "/__canned/other")).await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "other"));
    assert_eq!(up.hits(), hits + 1);
    wg.release(true).await;
    let res = wg.proxy(wg.proxy_req("GET", "/__canned/page")).await;
    assert_eq!(res.header("cache-status"), None);
    assert_eq!(up.hits(), hits + 2);
}

#[tokio::test]
async fn the_budget_evicts_and_holds() {
    let mut up = Upstream::start().await;
    let body = vec![b'z'; 400 * 1024];
    let wg = stale(&up, &["max_bytes = \"1MiB\"", "max_object = \"512KiB\""])
        .start()
        .await;
    for i in 0..6 {
        up.canned(&format!("p{i}"), 200, &[], &[&body]);
        let res = wg
            .proxy(wg.proxy_req("GET", &format!("/__canned/p{i}")))
            .await;
        assert_eq!(res.body.len(), body.len());
    }
    assert_eq!(metric(&wg, "writeguard_stale_stored_total").await, 6.0);
    let held = metric(&wg, "writeguard_stale_bytes").await;
    assert!(held <= (1 << 20) as f64, "{held} bytes held");
    let answers = metric(&wg, "writeguard_stale_answers").await;
    assert!((1.0..=2.0).contains(&answers), "{answers} answers");
    let evicted = metric(&wg, "writeguard_stale_evicted_total{reason=\"size\"}").await;
    assert_eq!(evicted + answers, 6.0);
    up.stop().await;
    let served = {
        let mut n = 0;
        for i in 0..6 {
            let res = wg
                .proxy(wg.proxy_req("GET", &format!("/__canned/p{i}")))
                .await;
            if res.status == 200 {
                assert_eq!(res.body.len(), body.len());
                n += 1;
            }
        }
        n
    };
    assert_eq!(served as f64, answers);
}

#[tokio::test]
async fn an_app_that_stops_answering_gets_the_stored_page_after_the_timeout() {
    let faulty = Faulty::start().await;
    let wg = Wg::new(faulty.url())
        .proxy_line("upstream_retry = \"0s\"")
        .proxy_line("upstream_timeout = \"300ms\"")
        .section(&stale_section(&[]))
        .start()
        .await;
    let ok = wg.proxy(wg.proxy_req("GET", "/ok")).await;
    assert_eq!((ok.status.as_u16(), ok.text().as_str()), (200, "ok"));
    // The pooled connection goes (the app answers garbage on it); new ones are never read.
    assert_eq!(wg.proxy(wg.proxy_req("GET", "/garbage")).await.status, 502);
    faulty.mute(true);
    let res = wg.proxy(wg.proxy_req("GET", "/ok")).await;
    assert_eq!((res.status.as_u16(), res.text().as_str()), (200, "ok"));
    assert_eq!(
        res.header("cache-status"),
        Some("writeguard; hit; fwd=stale")
    );
    let other = wg.proxy(wg.proxy_req("GET", "/ok?never=asked")).await;
    assert_eq!(other.status, 504);
}
