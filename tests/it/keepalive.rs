//! Keep-alive connections between requests: requests that arrive together (pipelined) and
//! one by one after the connection went idle, forwarded or refused with the guard's 503, all
//! answered in order on the one connection. (On the native engine a connection waiting for
//! its next request holds no buffer and no request state: benches/README.md. Its idle
//! deadline, `proxy.header_timeout`, is tested in `hardening::slow_clients`.)

use std::time::Duration;

use crate::common::client::RawConn;
use crate::common::{engaged, Upstream, Wg};

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
