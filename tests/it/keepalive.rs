//! Keep-alive connections between requests: served again while the client comes back within
//! `proxy.header_timeout`, closed once it stays away longer; requests that arrive together
//! (pipelined) and one by one, forwarded or refused with the guard's 503, all answered in
//! order on the one connection. (On the native engine a connection waiting for its next
//! request holds no buffer and no request state: benches/README.md.)

use std::time::Duration;

use crate::common::client::RawConn;
use crate::common::{engaged, Upstream, Wg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_served_until_header_timeout_then_closed() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .proxy_line("header_timeout = \"1s\"")
        .start()
        .await;
    let mut conn = RawConn::connect(wg.proxy).await;
    for i in 0..3 {
        conn.write(format!("GET /again/{i} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
            .await;
        assert_eq!(conn.read_response(false).await.status, 200, "request {i}");
        // Idle for a while, well within the timeout: the connection must still serve.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(up.hits(), 3);
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "a connection idle past header_timeout was not closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_together_or_apart_are_answered_in_order_on_one_connection() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).methods(&["POST"]).start().await;
    engaged(&wg).await;
    let mut conn = RawConn::connect(wg.proxy).await;
    // Three requests in one write: a read, a guarded write (refused, its body dropped), a read.
    conn.write(
        b"GET /one HTTP/1.1\r\nHost: app\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(conn.read_response(false).await.status);
    }
    assert_eq!(got, [200, 503, 200]);
    // Then one by one, after the connection went idle.
    for path in ["/four", "/five"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.write(format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
            .await;
        assert_eq!(conn.read_response(false).await.status, 200, "{path}");
    }
    let uris: Vec<String> = up.records().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(uris, ["/one", "/three", "/four", "/five"]);
}
