//! Oversized heads and URIs: 431 and 414 at `max_header_size` and `max_uri_length`, over
//! HTTP/1.1 and HTTP/2, and never forwarded.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::{h2c, Req, Upstream, Wg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_long_uris_414() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("max_header_size = 8192")
        .proxy_line("max_uri_length = 128")
        .start()
        .await;
    let big = "v".repeat(12_000);
    let res = wg.proxy(Req::get("/h").header("x-big", &big)).await;
    assert_eq!(res.status, 431);
    let fits = "v".repeat(4000);
    assert_eq!(
        wg.proxy(Req::get("/h").header("x-big", &fits)).await.status,
        200
    );
    let long = format!("/{}", "u".repeat(200));
    assert_eq!(wg.proxy(Req::get(&long)).await.status, 414);
    let query = format!("/q?{}", "u".repeat(200));
    assert_eq!(wg.proxy(Req::get(&query)).await.status, 414);
    let short = format!("/{}", "u".repeat(100));
    assert_eq!(wg.proxy(Req::get(&short)).await.status, 200);
    assert_eq!(
        up.hits(),
        2,
        "only the requests within the limits were forwarded"
    );
}

/// A head over `max_header_size` (`limit`), over HTTP/1.1 and HTTP/2, to an h2c listener.
async fn h2c_heads_over(limit: usize) {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("h2c = true")
        .proxy_line(&format!("max_header_size = {limit}"))
        .start()
        .await;
    let big = "v".repeat(limit + limit / 2);
    let fits = "v".repeat(limit / 2);
    let res = wg.proxy(Req::get("/h").header("x-big", &fits)).await;
    assert_eq!(
        res.status, 200,
        "HTTP/1.1 head within max_header_size {limit}"
    );
    let res = wg.proxy(Req::get("/h").header("x-big", &big)).await;
    assert_eq!(
        res.status, 431,
        "HTTP/1.1 head over max_header_size {limit} with h2c on"
    );
    let mut conn = h2c::connect(wg.proxy).await;
    let req = Request::builder()
        .uri(format!("http://{}/h", wg.proxy))
        .header("x-big", big.as_str())
        .body(Full::new(Bytes::new()))
        .expect("request");
    conn.ready().await.expect("ready");
    let res = tokio::time::timeout(Duration::from_secs(10), conn.send_request(req))
        .await
        .expect("an h2 answer within 10 s");
    // Either a 431 or a refusal at the HTTP/2 layer; never forwarded.
    if let Ok(res) = res {
        assert_eq!(res.status(), 431, "h2 head over max_header_size {limit}");
    }
    assert_eq!(up.hits(), 1, "an oversized head was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_with_h2c_on_too() {
    h2c_heads_over(16 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_with_h2c_on_at_the_smallest_limit() {
    // 8 KiB, the smallest max_header_size (hyper's smallest read buffer with h2c on).
    h2c_heads_over(8192).await;
}
