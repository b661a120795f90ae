//! SIGHUP reloads the `[guard]` settings and the maintenance page in place: behaviour
//! changes on connections opened before the reload, the guard stays engaged, and a bad file
//! changes nothing (and says which key is wrong). Also: readiness means OUR listeners.

use std::net::TcpListener;
use std::time::Duration;

use crate::common;
use crate::common::client::RawConn;
use crate::common::process::Process;
use crate::common::{eventually, Instance, Upstream, Wg};

/// Rewrites the instance's config file from `cfg` (same ports and paths).
fn rewrite(wg: &Instance, cfg: &Wg) {
    std::fs::write(wg.config_path(), cfg.render(wg.proxy, wg.admin, wg.dir()))
        .expect("rewrite config");
}

/// Sends SIGHUP and waits until the log shows one more line containing `marker`.
async fn reload(wg: &Instance, marker: &str) {
    let before = wg.logs().matches(marker).count();
    wg.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            wg.logs().matches(marker).count() > before
        })
        .await,
        "no {marker:?} in the log after SIGHUP:\n{}",
        wg.logs()
    );
}

async fn request(conn: &mut RawConn, method: &str, path: &str) -> common::client::RawResp {
    conn.write(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: app\r\nAccept: text/html\r\nContent-Length: 3\r\n\r\nx=1"
        )
        .as_bytes(),
    )
    .await;
    conn.read_response(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_methods_allow_paths_and_page_on_open_connections_and_keeps_the_guard() {
    let up = Upstream::start().await;
    let pages = tempfile::tempdir().expect("temp dir");
    let page = pages.path().join("maintenance.html");
    std::fs::write(&page, "<h1>first page, back in {{retry_after}}s</h1>").expect("page");
    let cfg = Wg::for_upstream(&up)
        .methods(&["POST"])
        .guard_line(&format!("page = {:?}", page.to_string_lossy()));
    let wg = cfg.clone().start().await;
    assert_eq!(wg.engage("deploy", None).await.status, 201);

    let mut conn = RawConn::connect(wg.proxy).await;
    let res = request(&mut conn, "POST", "/api/open/1").await;
    assert_eq!(res.status, 503);
    assert!(res.text().contains("first page"), "{}", res.text());
    assert_eq!(request(&mut conn, "PUT", "/x").await.status, 200);
    let hits = up.hits();

    std::fs::write(&page, "<h1>second page</h1>").expect("page");
    rewrite(
        &wg,
        &cfg.clone()
            .methods(&["POST", "PUT"])
            .allow_paths(&["/api/open"]),
    );
    reload(&wg, "SIGHUP: config reloaded").await;
    let log = wg.logs();
    assert!(
        log.contains("guard.methods") && log.contains("guard.allow_paths"),
        "the reload line does not say what changed:\n{log}"
    );

    // The same connection, after the reload.
    let res = request(&mut conn, "PUT", "/x").await;
    assert_eq!(res.status, 503, "PUT is guarded now");
    assert!(res.text().contains("second page"), "{}", res.text());
    assert_eq!(up.hits(), hits, "the guarded PUT reached the upstream");
    let res = request(&mut conn, "POST", "/api/open/1").await;
    assert_eq!(res.status, 200, "an allowed path passes now");
    assert_eq!(up.last().method, "POST");
    assert_eq!(request(&mut conn, "POST", "/orders").await.status, 503);

    let status = wg.status().await;
    assert_eq!(status["guarded"], true, "{status}");
    assert_eq!(status["engagements"][0]["reason"], "deploy", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_bad_file_keeps_the_old_config_and_names_the_key() {
    let up = Upstream::start().await;
    let cfg = Wg::for_upstream(&up).methods(&["POST"]);
    let wg = cfg.clone().start().await;
    assert_eq!(wg.engage("deploy", None).await.status, 201);
    let mut conn = RawConn::connect(wg.proxy).await;

    // Invalid: a read as a guarded method, and an unknown key; a valid PUT alongside must
    // not be applied either.
    rewrite(
        &wg,
        &cfg.clone()
            .methods(&["POST", "PUT", "GET"])
            .guard_line("colour = \"blue\""),
    );
    reload(&wg, "the previous config stays in effect").await;
    let log = wg.logs();
    assert!(
        log.contains("guard.methods") && log.contains("guard.colour"),
        "the log does not name the wrong keys:\n{log}"
    );
    assert_eq!(request(&mut conn, "PUT", "/x").await.status, 200);
    assert_eq!(request(&mut conn, "POST", "/x").await.status, 503);

    // Valid, but a section a reload cannot apply changed: nothing is applied.
    rewrite(
        &wg,
        &cfg.clone()
            .methods(&["POST", "PUT"])
            .proxy_line("upstream_retry = \"1s\""),
    );
    reload(&wg, "the previous config stays in effect").await;
    assert!(wg.logs().contains("[proxy] changed"), "{}", wg.logs());
    assert_eq!(request(&mut conn, "PUT", "/x").await.status, 200);

    // Putting it right applies it.
    rewrite(&wg, &cfg.clone().methods(&["POST", "PUT"]));
    reload(&wg, "SIGHUP: config reloaded").await;
    assert_eq!(request(&mut conn, "PUT", "/x").await.status, 503);
    assert_eq!(wg.status().await["guarded"], true);
}

/// `run --upgrade` gets the old instance's sockets, but binds any address the old one did
/// not have itself. When someone else holds that address, readiness used to be a connect
/// that the other process answered: `/readyz` said 200 with no proxy listener of ours, and
/// pingora's bind task panicked 30 s later while the process stayed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_ends_the_process_and_is_never_ready() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).start().await;
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr");

    let config = wg.cfg.render(taken, wg.admin, wg.dir());
    let mut successor = Process::successor(&wg, &config).await;
    wg.signal("QUIT");
    assert!(wg.wait_exit(Duration::from_secs(10)).await.is_some());

    // Until it exits, the successor (which now holds the admin port) is never ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = successor.try_wait() {
            break status;
        }
        if let Ok(res) = common::Req::get("/readyz")
            .timeout(Duration::from_millis(500))
            .try_send(wg.admin)
            .await
        {
            if res.status == 200 {
                panic!(
                    "/readyz said 200 while {taken} belongs to another socket; log:\n{}",
                    successor.logs()
                );
            }
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "the successor kept running without its proxy listener; log:\n{}",
                successor.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "exit status {status}");
    let log = successor.logs();
    assert!(
        log.contains(&format!("cannot listen on {taken}")),
        "the error does not name {taken}:\n{log}"
    );
    drop(squatter);
}
