//! Process lifecycle: graceful stop on SIGTERM with a request in flight; the pid file
//! through a start, an upgrade and a stop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::client::RawConn;
use crate::common::process::Process;
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

/// The pid in `server.pid_file`, if there is one.
fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `server.pid_file` names the process holding the listeners: written owner-only at start,
/// still the old instance's while a successor waits for the hand-over (so that
/// `kill -QUIT "$(cat PIDFILE)"` reaches the old one), the successor's once it took them,
/// left to the successor when the old one exits, and removed at the successor's clean exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_file_names_the_process_holding_the_listeners_and_goes_at_a_clean_exit() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    let path = wg.dir().join("writeguard.pid");
    assert_eq!(pid_in(&path), Some(wg.pid()), "log:\n{}", wg.logs());
    let mode = std::fs::metadata(&path)
        .expect("pid file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "pid file mode {mode:o}");

    let config = std::fs::read_to_string(wg.config_path()).expect("read config");
    let mut successor = Process::successor(&wg, &config).await;
    assert_eq!(
        pid_in(&path),
        Some(wg.pid()),
        "the pid file must name the old instance until the hand-over"
    );
    let old = pid_in(&path).expect("pid file");
    crate::common::process::signal(old, "QUIT");
    successor.ready().await;
    let new = successor.pid();
    assert!(
        eventually(Duration::from_secs(5), || async {
            pid_in(&path) == Some(new)
        })
        .await,
        "the successor did not write its pid; log:\n{}",
        successor.logs()
    );
    let exited = wg.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "old instance: {exited:?}"
    );
    assert_eq!(
        pid_in(&path),
        Some(new),
        "the old instance removed its successor's pid file"
    );
    let log = successor.logs();
    assert!(
        log.contains("INFO") && log.contains("waiting for the running instance"),
        "the successor does not say it waits:\n{log}"
    );
    assert!(
        !log.contains("ERROR"),
        "waiting for the hand-over is not an error:\n{log}"
    );

    successor.signal("TERM");
    let stopped = successor.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        stopped.and_then(|s| s.code()),
        Some(0),
        "successor: {stopped:?}"
    );
    assert!(!path.exists(), "the pid file outlived a clean exit");
}
