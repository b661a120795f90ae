//! Upstream faults: garbage, bad status lines, resets, hangs, refused connections and an
//! upstream that never reads each end in one clean 502/504 for that client only, logged once,
//! and the next request works.

use std::time::Duration;

use crate::common::client::RawConn;
use crate::common::faulty::Faulty;
use crate::common::{eventually, free_port, Instance, Req, Resp, Upstream, Wg};

use super::faulty_wg;

fn warn_lines(wg: &Instance) -> Vec<String> {
    wg.logs()
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(str::to_string)
        .collect()
}

/// A request that must not hang: at most 8 s.
async fn quick(wg: &Instance, method: &str, path: &str) -> Result<Resp, String> {
    let mut req = Req::new(method, path).timeout(Duration::from_secs(8));
    if method == "POST" {
        req = req.body("x=1");
    }
    req.try_send(wg.proxy).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_give_one_clean_502_or_504_each_logged_once() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url()).start().await;
    let mut failures = 0;
    for method in ["GET", "POST"] {
        for (path, status) in [
            ("/garbage", 502),
            ("/badstatus", 502),
            ("/dupcl", 502),
            ("/reset-head", 502),
            ("/hang", 504),
        ] {
            let res = quick(&wg, method, path)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(res.status, status, "{method} {path}: {}", res.text());
            failures += 1;
            let warns = warn_lines(&wg);
            assert_eq!(
                warns.len(),
                failures,
                "{method} {path}: expected exactly one WARN line per failed request:\n{}",
                warns.join("\n")
            );
            let ok = quick(&wg, method, "/ok").await.expect("the next request");
            assert_eq!(ok.status, 200, "{method} /ok after {path}");
            assert_eq!(ok.text(), "ok");
        }
    }
    // The request the upstream took but did not answer is never sent again.
    assert_eq!(f.count("/hang"), 2, "a timed-out request was replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_upload_is_not_logged_as_an_upstream_failure() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up)
        .log_line("access = true")
        .start()
        .await;
    let mut conn = RawConn::connect(wg.proxy).await;
    conn.write(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    assert!(
        eventually(Duration::from_secs(5), || async { up.hits() == 1 }).await,
        "the upload never started upstream"
    );
    drop(conn);
    // The proxy notices when it next reads the body; then it answers (nobody) and logs.
    assert!(
        eventually(Duration::from_secs(5), || async {
            wg.logs().contains("method=POST path=\"/upload\"")
        })
        .await,
        "no access line for the abandoned upload"
    );
    let warns = warn_lines(&wg);
    assert!(
        warns.is_empty(),
        "a client that went away was logged as an upstream failure:\n{}",
        warns.join("\n")
    );
    assert!(
        up.records().is_empty(),
        "the upstream got a complete request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_delays_only_its_own_client() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url()).start().await;
    let proxy = wg.proxy;
    let hung = tokio::spawn(async move {
        Req::get("/hang")
            .timeout(Duration::from_secs(8))
            .try_send(proxy)
            .await
    });
    assert!(
        eventually(Duration::from_secs(5), || async { f.count("/hang") == 1 }).await,
        "the hung request never reached the upstream"
    );
    for _ in 0..5 {
        let ok = quick(&wg, "GET", "/ok")
            .await
            .expect("a request beside a hung one");
        assert_eq!(ok.status, 200);
    }
    assert!(
        !hung.is_finished(),
        "the hung request ended before upstream_timeout"
    );
    let res = hung
        .await
        .expect("join")
        .expect("an answer to the hung request");
    assert_eq!(res.status, 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_gives_504() {
    let f = Faulty::start().await;
    f.mute(true);
    let wg = faulty_wg(f.url()).start().await;
    let res = quick(&wg, "POST", "/x").await.expect("an answer");
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(warn_lines(&wg).len(), 1, "{}", warn_lines(&wg).join("\n"));
    f.mute(false);
    let ok = quick(&wg, "POST", "/ok").await.expect("the next request");
    assert_eq!(ok.status, 200);
    assert_eq!(f.count("/x"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_gives_502_logged_once() {
    let nobody = free_port();
    let wg = faulty_wg(format!("http://{nobody}")).start().await;
    for (i, method) in ["GET", "POST"].into_iter().enumerate() {
        let res = quick(&wg, method, "/x").await.expect("an answer");
        assert_eq!(res.status, 502, "{method}: {}", res.text());
        let warns = warn_lines(&wg);
        assert_eq!(warns.len(), i + 1, "{method}:\n{}", warns.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_response_breaks_that_response_only() {
    let f = Faulty::start().await;
    let wg = faulty_wg(f.url()).start().await;
    match quick(&wg, "GET", "/reset-body").await {
        // The head (200, 1000 bytes announced) was already sent: the client must see the
        // body cut short, never a complete-looking response.
        Ok(res) => assert!(
            res.status == 502 || (res.status == 200 && res.body.len() < 1000),
            "{} with {} bytes",
            res.status,
            res.body.len()
        ),
        Err(e) => assert!(!e.contains("no complete answer within"), "hung: {e}"),
    }
    let warns = warn_lines(&wg);
    assert!(
        warns.len() <= 1,
        "logged more than once:\n{}",
        warns.join("\n")
    );
    let ok = quick(&wg, "GET", "/ok").await.expect("the next request");
    assert_eq!(ok.status, 200);
}
