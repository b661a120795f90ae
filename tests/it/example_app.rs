//! The README's quick start, with its example app (`examples/app.py`, run by python3)
//! behind writeguard: the app takes every method, and a write sent while the guard is
//! engaged waits, then reaches the app once the guard is released.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, free_port, Req, Wg};

/// `python3 examples/app.py PORT`, killed (by its PID) when dropped.
struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_takes_every_method_and_a_held_post_reaches_it_on_release() {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/app.py");
    let child = match Command::new("python3")
        .arg(script)
        .arg(port.port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: cannot start python3 ({e})");
            return;
        }
    };
    let _app = App(child);
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(port).await.is_ok()
        })
        .await,
        "examples/app.py never listened on {port}"
    );
    let wg = Wg::new(format!("http://{port}")).hold("10s").start().await;

    for method in ["GET", "POST", "PATCH", "PUT", "DELETE"] {
        let res = wg
            .proxy(Req::new(method, "/orders?x=1").body("item=1"))
            .await;
        assert_eq!(res.status, 200, "{method}: {}", res.text());
        let echo = res.json();
        assert_eq!(echo["method"], method, "{echo}");
        assert_eq!(echo["path"], "/orders?x=1", "{echo}");
        if method != "GET" {
            assert_eq!(echo["body"], "item=1", "{echo}");
        }
    }

    // Engage, a POST waits, release, the POST completes.
    assert_eq!(wg.engage("migrations", Some("5m")).await.status, 201);
    let proxy = wg.proxy;
    let held = tokio::spawn(
        Req::new("POST", "/orders")
            .body("x=1")
            .timeout(Duration::from_secs(15))
            .try_send(proxy),
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            wg.status().await["held"] == 1
        })
        .await,
        "the POST was not held: {}",
        wg.status().await
    );
    assert_eq!(wg.release(false).await.status, 200);
    let res = held.await.expect("client task").expect("the held POST");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["body"], "x=1");
}
