//! CORS on the public routes: `cors_origins` decides which origin is echoed (with
//! `Vary: Origin`), and the preflight answers 204 with what may be sent.

use crate::common::{Req, Upstream, Wg};

use super::{preflight, public};

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
async fn preflight_answers_204_with_allowed_methods_and_headers() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let res = wg
        .proxy(preflight("https://shop.example").header(
            "access-control-request-headers",
            "content-type, x-requested-with",
        ))
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
    let res = wg.proxy(preflight("https://shop.example")).await;
    assert_eq!(res.status, 204);
    assert!(res.header("access-control-allow-methods").is_some());
    assert!(res.header("access-control-allow-headers").is_some());
    assert_eq!(up.hits(), 0);
}
