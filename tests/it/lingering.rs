//! Clients still sending when writeguard answers (a guarded upload, a body over the admin
//! API's cap) read the answer and then a clean close, never a reset: the close lingers,
//! reading and dropping the rest of the body. Before, a browser uploading a large file
//! during a deploy could show "connection reset" instead of the 503 page.

use std::time::{Duration, Instant};

use crate::common::client::{RawConn, RawResp};
use crate::common::{engaged, pattern, Upstream, Wg, TOKEN};

/// Sends `head` and the first 64 KiB of `body`, reads the answer, then sends the rest of
/// the body, as a client that writes its whole request before it looks at the answer: every
/// write must go through and the connection must end cleanly.
async fn answered_while_sending(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> RawResp {
    let mut conn = RawConn::connect(addr).await;
    conn.write(head.as_bytes()).await;
    conn.write(&body[..64 * 1024]).await;
    // The answer does not wait for the body.
    let res = conn.read_response(false).await;
    // Long enough for writeguard to be done with the connection on its side: the rest of
    // the body then reaches a closing connection, not one still reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for piece in body[64 * 1024..].chunks(64 * 1024) {
        if let Err(e) = conn.try_write(piece).await {
            panic!("the rest of the body after a {}: {e}", res.status);
        }
    }
    if let Err(e) = conn.finish().await {
        panic!("the end of the connection after a {}: {e}", res.status);
    }
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_guarded_upload_gets_the_503_and_never_a_reset() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    engaged(&wg).await;

    // Well over proxy.drain_limit (256 KiB), so the connection does not go on after it.
    let body = pattern(4 * 1024 * 1024, 3);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let res = answered_while_sending(wg.proxy, &head, &body).await;
    assert_eq!(res.status, 503);
    assert!(res.header("retry-after").is_some());
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(up.hits(), 0, "nothing reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_admin_cap_gets_the_413_and_never_a_reset() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;

    let body = pattern(2 * 1024 * 1024, 5);
    let head = format!(
        "POST /guard HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let res = answered_while_sending(wg.admin, &head, &body).await;
    assert_eq!(res.status, 413);
    assert!(!wg.guarded().await, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_is_not_waited_for_long() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    engaged(&wg).await;

    // Announces 4 MiB, sends 64 KiB, reads the 503, then goes quiet without closing: the
    // lingering close gives up after 5 s without a byte (nginx's lingering_timeout), and
    // what the client sends after that is refused by a reset.
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 4194304\r\n\r\n")
        .await;
    conn.write(&pattern(64 * 1024, 7)).await;
    assert_eq!(conn.read_response(false).await.status, 503);
    let piece = pattern(64 * 1024, 9);
    conn.try_write(&piece).await.expect("still lingering");
    let quiet = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if conn.try_write(&piece).await.is_err() || quiet.elapsed() > Duration::from_secs(20) {
            break quiet.elapsed();
        }
    };
    assert!(
        refused < Duration::from_secs(20),
        "still lingering after {refused:?}"
    );
}
