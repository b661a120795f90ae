//! The guard state as one truth for every process that shares it, and honest about the
//! store: an upgrade hand-over keeps engagements taken by the old instance; two instances on
//! one state file converge within a second and lose no change; reads of the state never wait
//! on a write; a state that cannot be saved is refused at start and shown by `/readyz`; a
//! step of the wall clock neither ends an engagement early nor extends it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::process::Process;
use crate::common::{eventually, free_port, writeguard, Instance, Req, Upstream, Wg, TOKEN};

/// A second instance with `wg`'s config (so its state file) on ports of its own.
async fn second_instance(wg: &Instance) -> Process {
    let text = std::fs::read_to_string(wg.config_path()).expect("read config");
    let (proxy, admin) = (free_port(), free_port());
    let text = text
        .replace(&wg.proxy.to_string(), &proxy.to_string())
        .replace(&wg.admin.to_string(), &admin.to_string())
        .replace("upgrade.sock", "second.upgrade.sock")
        .replace("writeguard.pid", "second.pid");
    let mut other = Process::spawn(wg.dir(), "second", &text, &[], &[], (proxy, admin));
    other.ready().await;
    other
}

/// The sequence: A runs; B starts with `--upgrade`; an operator engages on A; A
/// gets SIGQUIT. B must be guarded, and refuse writes without the app seeing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engagement_taken_by_the_old_instance_during_an_upgrade_holds_in_the_new_one() {
    let up = Upstream::start().await;
    let mut wg = Wg::for_upstream(&up).hold("0s").start().await;
    let config = std::fs::read_to_string(wg.config_path()).expect("read config");
    let successor = Process::successor(&wg, &config).await;
    // The successor has started (and, before the fix, read the state): now A takes a change.
    let engaged = wg.engage("migrations", Some("10m")).await;
    assert_eq!(engaged.status, 201, "{}", engaged.text());
    wg.signal("QUIT");
    assert!(
        wg.wait_exit(Duration::from_secs(15)).await.is_some(),
        "the old instance did not exit:\n{}",
        successor.logs()
    );
    // The admin and proxy ports are the successor's now.
    assert!(
        eventually(Duration::from_secs(1), || async {
            successor.guarded().await
        })
        .await,
        "the successor does not know of the engagement: {}\n{}",
        successor.status().await,
        successor.logs()
    );
    let before = up.count_method("POST");
    let res = Req::new("POST", "/orders")
        .body("x=1")
        .send(successor.proxy)
        .await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(up.count_method("POST"), before, "a write reached the app");
}

/// Two processes on one state file: a change made through either is applied by the other
/// within a second, both ways, and changes made at the same time through both are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_state_file_converge_and_lose_no_change() {
    let up = Upstream::start().await;
    let a = Wg::for_upstream(&up).hold("0s").start().await;
    let b = second_instance(&a).await;

    assert_eq!(a.engage("from A", Some("10m")).await.status, 201);
    assert!(
        eventually(Duration::from_secs(1), || async { b.guarded().await }).await,
        "B never saw A's engagement: {}",
        b.status().await
    );
    let res = Req::new("POST", "/x").body("x=1").send(b.proxy).await;
    assert_eq!(res.status, 503);

    let released = Req::new("DELETE", "/guard")
        .bearer(&a.cfg.token)
        .send(b.admin)
        .await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert!(
        eventually(Duration::from_secs(1), || async { !a.guarded().await }).await,
        "A never saw B's release: {}",
        a.status().await
    );

    // 20 engagements through each, at the same time: all 40 are kept, by both.
    let token = a.cfg.token.clone();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let admin = if i % 2 == 0 { a.admin } else { b.admin };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            Req::new("POST", "/guard")
                .bearer(&token)
                .json(&serde_json::json!({ "reason": format!("race {i}"), "ttl": "10m" }))
                .send(admin)
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 201);
    }
    let count = |doc: serde_json::Value| doc["engagements"].as_array().map_or(0, Vec::len);
    assert!(
        eventually(Duration::from_secs(1), || async {
            count(a.status().await) == 40 && count(b.status().await) == 40
        })
        .await,
        "A has {}, B has {} engagements",
        count(a.status().await),
        count(b.status().await)
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.state_path()).expect("state file"))
            .expect("state JSON");
    assert_eq!(stored["engagements"].as_array().map(Vec::len), Some(40));
    // 1 engage + 1 release + 40 engages, each one version.
    assert_eq!(stored["version"], 42, "{stored}");
}

/// While a change is stuck writing the state (a FIFO stands where the temp file goes, so
/// the write blocks until someone reads it), `/status` still answers at once; the change
/// then fails (503), `/readyz` says so until a change is saved again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_never_waits_for_a_state_write_and_readyz_follows_failed_writes() {
    let up = Upstream::start().await;
    let wg = Wg::for_upstream(&up).start().await;
    let mut tmp = wg.state_path().into_os_string();
    tmp.push(format!(".tmp{}", wg.pid()));
    let fifo = PathBuf::from(tmp);
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo {}", fifo.display());

    let admin = wg.admin;
    let token = wg.cfg.token.clone();
    let stuck = tokio::spawn(async move {
        Req::new("POST", "/guard")
            .bearer(&token)
            .json(&serde_json::json!({ "reason": "stuck", "ttl": "10m" }))
            .timeout(Duration::from_secs(30))
            .send(admin)
            .await
    });
    // The change is in flight once the audit line is written.
    let audit = wg.dir().join("state").join("writeguard.state.audit.jsonl");
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("stuck"))
        })
        .await,
        "the change never started"
    );
    let started = Instant::now();
    let res = Req::get("/status")
        .timeout(Duration::from_secs(3))
        .try_send(wg.admin)
        .await;
    assert!(
        res.as_ref().is_ok_and(|r| r.status == 200),
        "GET /status waited on the stuck write: {res:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        wg.admin(Req::get("/readyz")).await.status,
        200,
        "no write has failed yet"
    );

    // Let the write through: fsync on a FIFO fails, so the change fails whole.
    let reader = std::thread::spawn(move || std::fs::read(&fifo));
    let res = stuck.await.expect("task");
    assert_eq!(res.status, 503, "{}", res.text());
    let _ = reader.join();
    let ready = wg.admin(Req::get("/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    let status = wg.status().await;
    assert_eq!(status["guarded"], false, "{status}");
    assert!(
        status["problem"]
            .as_str()
            .is_some_and(|p| p.contains("could not be saved")),
        "{status}"
    );

    assert_eq!(wg.engage("again", Some("10m")).await.status, 201);
    assert_eq!(wg.admin(Req::get("/readyz")).await.status, 200);
    assert!(wg.status().await.get("problem").is_none());
}

/// `check` and `run` refuse a state path they cannot write, naming the key, and open
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_run_refuse_a_state_path_they_cannot_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (proxy, admin) = (free_port(), free_port());
    let text = Wg::new("http://127.0.0.1:8000").render(proxy, admin, dir.path());
    let state = dir.path().join("state").join("writeguard.state");
    let text = text.replace(
        &format!("{:?}", state.to_string_lossy()),
        "\"/proc/nope/x.state\"",
    );
    assert!(text.contains("/proc/nope/x.state"), "{text}");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, &text).expect("write config");
    for command in ["check", "run"] {
        let out = writeguard()
            .args([command, "-c"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .expect("run writeguard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("state.path"), "{command}: {stderr}");
    }
    assert!(
        std::net::TcpStream::connect(proxy).is_err(),
        "run opened a port"
    );
}

/// The wall clock jumps two hours ahead (libfaketime, monotonic clock untouched) while a
/// ten-minute engagement runs: it still holds. Before, the expiry sweep dropped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_does_not_end_an_engagement() {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !Path::new(LIB).exists() {
        eprintln!("skipped: {LIB} is missing (apt-get install faketime)");
        return;
    }
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("write offset");
    let (proxy, admin) = (free_port(), free_port());
    let text = Wg::for_upstream(&up)
        .hold("0s")
        .render(proxy, admin, dir.path());
    let offset_file = offset.to_str().expect("a UTF-8 temp path");
    let env = [
        ("LD_PRELOAD", LIB),
        ("FAKETIME_TIMESTAMP_FILE", offset_file),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut wg = Process::spawn(dir.path(), "wg", &text, &[], &env, (proxy, admin));
    wg.ready().await;
    let token = TOKEN;
    let engaged = Req::new("POST", "/guard")
        .bearer(token)
        .json(&serde_json::json!({ "reason": "migrations", "ttl": "10m" }))
        .send(admin)
        .await;
    assert_eq!(engaged.status, 201, "{}", engaged.text());
    std::fs::write(&offset, "+2h\n").expect("step the clock");
    // Several expiry sweeps (one a second) run on the stepped clock.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(wg.guarded().await, "{}\n{}", wg.status().await, wg.logs());
    let before = up.count_method("POST");
    let res = Req::new("POST", "/orders").body("x=1").send(proxy).await;
    assert_eq!(res.status, 503);
    assert_eq!(up.count_method("POST"), before);
}
