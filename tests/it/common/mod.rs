//! Black-box harness for writeguard's integration tests: the REAL binary on free loopback
//! ports with its own temp dir, an in-process recording upstream, and small HTTP clients.
//!
//! - the binary: [`Wg`] (its config, fluent) starts an [`Instance`]; `process` runs others
//!   (the new process of a `run --upgrade`, a second instance on the same state);
//! - upstreams: [`Upstream`] records and answers by path, `faulty` misbehaves on request,
//!   `ledger` counts arrivals per request id (`server` is their accept loop);
//! - clients: `client` (hyper and raw HTTP/1.1), `h2c`, `sse` (event streams), `load`
//!   (many clients at once, reconciled against a ledger);
//! - the shared store: [`Redis`], a real `redis-server` to kill, freeze and restart empty;
//! - here: the fixtures, free ports, and bounded waiting.
//!
//! Every wait is bounded; every instance is stopped (SIGTERM, then SIGKILL) when dropped.

pub mod client;
pub mod faulty;
pub mod h2c;
mod instance;
pub mod ledger;
pub mod load;
pub mod process;
mod redis;
pub mod server;
pub mod sse;
pub mod tls;
pub mod upstream;
mod wg;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

pub use client::{Req, Resp};
pub use instance::{engaged, released, writes_blocked, Instance};
pub use redis::Redis;
pub use upstream::Upstream;
pub use wg::Wg;

pub const TOKEN: &str = "test-admin-token-0123";
pub const SHARED_KEY: &str = "test-shared-key-4567";
/// The project and the push activity of the Upsun fixtures (tests/fixtures/upsun).
pub const SAMPLE_PROJECT: &str = "wgfixture0proj";
pub const SAMPLE_ID: &str = "wgpush0000001";
/// The fixtures of a push that starts, and of the same push done.
pub const IN_PROGRESS: &str = "environment.push_in_progress";
pub const COMPLETE: &str = "environment.push_complete_success";
/// What a browser sends as `Accept` for a page: it gets HTML answers, API clients JSON.
pub const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";

/// Every environment variable the binary reads: removed from children so the developer's
/// shell cannot change what a test sees.
const WRITEGUARD_ENV: &[&str] = &[
    "WRITEGUARD_CONFIG",
    "WRITEGUARD_LISTEN",
    "WRITEGUARD_UPSTREAM",
    "WRITEGUARD_ADMIN_LISTEN",
    "WRITEGUARD_ADMIN_TOKEN",
    "WRITEGUARD_UPSUN_SHARED_KEY",
    "WRITEGUARD_LOG",
    "WRITEGUARD_LOG_FORMAT",
    "WRITEGUARD_LOG_ACCESS",
    "WRITEGUARD_METRICS_TOKEN",
    "WRITEGUARD_REDIS_URL",
];

/// The binary under test, with a clean `WRITEGUARD_*` environment.
pub fn writeguard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_writeguard"));
    for var in WRITEGUARD_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs the binary with `args` in `cwd` and `env` to its end (killed after 20 s at most),
/// blocking work off the async workers.
pub async fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = writeguard();
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let what = format!("writeguard {}", args.join(" "));
    tokio::task::spawn_blocking(move || {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn writeguard");
        // Bounded: the operator client and `check` finish in well under a second.
        // Killed after 20 s, and only while it is still ours: once it has exited, its PID may
        // be another process's.
        let pid = child.id();
        let (done, exited) = std::sync::mpsc::channel::<()>();
        let killer = std::thread::spawn(move || {
            if exited
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_err()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let out = child.wait_with_output().expect("wait for writeguard");
        let _ = done.send(());
        let _ = killer.join();
        out
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A loopback port nobody listens on right now (bound, then released), and never handed
/// out before in this test process: parallel tests cannot pick the same one.
pub fn free_port() -> SocketAddr {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let addr = l.local_addr().expect("local addr");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// One of the project's Upsun activity fixtures (`tests/fixtures/upsun/<name>.json`).
pub fn sample(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/upsun/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read sample {path}: {e}"))
}

/// The `X-JWS-Signature` of `body` with the instances' shared key.
pub fn sign(body: &[u8]) -> String {
    writeguard::upsun::sign(SHARED_KEY.as_bytes(), body)
}

/// A sample as JSON, to derive variants (other state, id, project...).
pub fn sample_json(name: &str) -> Value {
    serde_json::from_slice(&sample(name)).expect("samples are JSON")
}

/// The `in_progress` push sample with some fields replaced.
pub fn activity(id: &str, kind: &str, state: &str) -> Vec<u8> {
    let mut v = sample_json("environment.push_in_progress");
    v["id"] = id.into();
    v["type"] = kind.into();
    v["state"] = state.into();
    serde_json::to_vec(&v).expect("serialize")
}

/// Deterministic, non-repeating-looking bytes for large bodies.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /readyz` on `admin` until it answers 200 (`Ok`), `exited()` says the process
/// is gone (`Err(true)`), or `limit` passes (`Err(false)`): the harness's one readiness wait.
pub async fn wait_ready(
    admin: SocketAddr,
    limit: Duration,
    mut exited: impl FnMut() -> bool,
) -> Result<(), bool> {
    let deadline = Instant::now() + limit;
    loop {
        if exited() {
            return Err(true);
        }
        let ready = Req::get("/readyz")
            .timeout(Duration::from_secs(1))
            .try_send(admin)
            .await
            .is_ok_and(|r| r.status == 200);
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `method` as an http::Method (extension methods like `post` included).
pub fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).expect("valid method token")
}
