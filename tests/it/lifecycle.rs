//! Process lifecycle: graceful stop on SIGTERM with a request in flight.

use std::time::{Duration, Instant};

use crate::common::client::RawConn;
use crate::common::{eventually, pattern, Req, Upstream, Wg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_0() {
    let up = Upstream::start().await;
    // A long grace period: exiting "soon after" must come from the drain, not the deadline.
    let mut wg = Wg::for_upstream(&up).shutdown_grace("20s").start().await;
    let proxy = wg.proxy;

    let in_flight = tokio::spawn(
        Req::get("/__slow/1500")
            .timeout(Duration::from_secs(15))
            .try_send(proxy),
    );
    assert!(
        eventually(Duration::from_secs(5), || async { up.hits() == 1 }).await,
        "the slow request never reached the upstream"
    );
    let signalled = Instant::now();
    wg.sigterm();

    let res = in_flight
        .await
        .expect("client task")
        .expect("the in-flight request must get its full answer");
    assert_eq!(res.status, 200);
    assert!(
        res.body == pattern(256 * 1024, 9),
        "in-flight answer was cut: {} bytes",
        res.body.len()
    );

    let status = wg
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("writeguard did not exit within 5 s of its last request");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        signalled.elapsed()
    );
    // Nothing listens any more.
    assert!(Req::get("/")
        .timeout(Duration::from_secs(2))
        .try_send(proxy)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_stops_promptly_on_sigterm() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).shutdown_grace("20s").start().await;
    // An idle keep-alive connection must not hold the process for the whole grace period.
    let mut idle = RawConn::connect(wg.proxy).await;
    idle.write(b"GET /warm-up HTTP/1.1\r\nHost: app\r\n\r\n")
        .await;
    assert_eq!(idle.read_response(false).await.status, 200);
    let signalled = Instant::now();
    wg.sigterm();
    assert!(
        idle.closed_within(Duration::from_secs(5)).await,
        "the idle keep-alive connection was not closed"
    );
    let status = wg
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("writeguard did not exit within 8 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(8));
}
