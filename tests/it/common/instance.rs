//! A running writeguard process on free loopback ports with its own temp dir: started
//! from a [`Wg`], waited for until ready (and until it really owns its ports), signalled,
//! restarted on the same state, and stopped (SIGTERM, then SIGKILL) when dropped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use writeguard::listening::holds;

use super::{free_port, process, writeguard, Req, Resp, Upstream, Wg, SHARED_KEY};

/// A running writeguard process. Dropping it stops the process (SIGTERM, then SIGKILL).
pub struct Instance {
    pub cfg: Wg,
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    starts: usize,
}

const READY_WITHIN: Duration = Duration::from_secs(10);

impl Instance {
    /// The process for `cfg` in a fresh temp dir, on free ports, ready.
    pub(super) async fn start(cfg: Wg) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("wg-it-")
            .tempdir()
            .expect("create temp dir");
        let mut instance = Instance {
            cfg,
            dir,
            child: None,
            proxy: free_port(),
            admin: free_port(),
            starts: 0,
        };
        instance.launch().await;
        instance
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("writeguard.toml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state").join("writeguard.state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("writeguard.{}.log", self.starts))
    }

    /// What the process printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("instance is running").id()
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Writes the config and spawns the binary; retries on fresh ports if one was taken
    /// in the meantime by a parallel test.
    async fn launch(&mut self) {
        for attempt in 0..3 {
            if attempt > 0 {
                self.proxy = free_port();
                self.admin = free_port();
            }
            self.starts += 1;
            let text = self.cfg.render(self.proxy, self.admin, self.dir.path());
            std::fs::write(self.config_path(), text).expect("write config");
            let log = File::create(self.log_path()).expect("create log file");
            let child = writeguard()
                .arg("run")
                .arg("-c")
                .arg(self.config_path())
                .env("WRITEGUARD_LOG", "info")
                .current_dir(self.dir.path())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn writeguard");
            self.child = Some(child);
            match self.wait_ready().await {
                Ok(()) => {
                    let pid = self.pid();
                    // The binary's own probe (`/proc`); where it cannot tell, trust readiness.
                    let ours = |addr| holds(pid, &addr).unwrap_or(true);
                    if ours(self.proxy) && ours(self.admin) {
                        return;
                    }
                    // Another process took one of the ports between our pick and the bind;
                    // writeguard's own probe cannot tell (see the report). Try new ports.
                    self.kill_now();
                    continue;
                }
                Err(exited) if exited && self.logs().contains("cannot listen") => {
                    self.child = None;
                    continue;
                }
                Err(_) => {
                    self.kill_now();
                    panic!(
                        "writeguard did not become ready within {READY_WITHIN:?}; log:\n{}",
                        self.logs()
                    );
                }
            }
        }
        panic!(
            "writeguard could not bind free ports three times; log:\n{}",
            self.logs()
        );
    }

    /// Err(true) when the process exited, Err(false) on timeout.
    async fn wait_ready(&mut self) -> Result<(), bool> {
        let child = &mut self.child;
        super::wait_ready(self.admin, READY_WITHIN, || {
            child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        })
        .await
    }

    /// Sends SIGTERM (graceful stop) without waiting.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`HUP`, `QUIT`, `KILL`...) without waiting.
    pub fn signal(&self, name: &str) {
        process::signal(self.pid(), name);
    }

    /// Waits (bounded) for the process to exit; None on timeout.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = process::exit_within(self.child.as_mut()?, limit).await;
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Graceful stop (SIGTERM), SIGKILL if it takes more than 5 s. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let status = process::stop(self.child.as_mut()?);
        self.child = None;
        status
    }

    fn kill_now(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Stops the process gracefully and starts it again on the same state file (fresh
    /// ports: the old ones may linger in TIME_WAIT).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(
                status.is_some_and(|s| s.success()),
                "writeguard did not stop cleanly on SIGTERM ({status:?}); log:\n{}",
                self.logs()
            );
        }
        self.proxy = free_port();
        self.admin = free_port();
        self.launch().await;
    }

    /// A request to the proxy listener.
    pub fn proxy_req(&self, method: &str, path: &str) -> Req {
        Req::new(method, path)
    }

    pub async fn proxy(&self, req: Req) -> Resp {
        req.send(self.proxy).await
    }

    pub async fn admin(&self, req: Req) -> Resp {
        req.send(self.admin).await
    }

    /// `GET /status` as JSON (asserting 200).
    pub async fn status(&self) -> Value {
        let res = self.admin(Req::get("/status")).await;
        assert_eq!(res.status, 200, "GET /status: {}", res.text());
        res.json()
    }

    pub async fn guarded(&self) -> bool {
        self.status().await["guarded"]
            .as_bool()
            .expect("/status has a boolean `guarded`")
    }

    /// `POST /guard` with the right token.
    pub async fn engage(&self, reason: &str, ttl: Option<&str>) -> Resp {
        let mut body = serde_json::json!({ "reason": reason });
        if let Some(ttl) = ttl {
            body["ttl"] = ttl.into();
        }
        self.admin(
            Req::new("POST", "/guard")
                .bearer(&self.cfg.token)
                .json(&body),
        )
        .await
    }

    /// `DELETE /guard` (or `?all=true`) with the right token.
    pub async fn release(&self, all: bool) -> Resp {
        let path = if all { "/guard?all=true" } else { "/guard" };
        self.admin(Req::new("DELETE", path).bearer(&self.cfg.token))
            .await
    }

    /// `POST /webhooks/upsun` with `body`, and `signature` as the X-JWS-Signature header.
    pub async fn webhook(&self, body: impl Into<Bytes>, signature: Option<&str>) -> Resp {
        let mut req = Req::new("POST", "/webhooks/upsun")
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("x-jws-signature", sig);
        }
        self.admin(req).await
    }

    /// A webhook signed with this instance's shared key.
    pub async fn webhook_signed(&self, body: impl Into<Bytes>) -> Resp {
        let body = body.into();
        let key = self
            .cfg
            .shared_key
            .clone()
            .unwrap_or_else(|| SHARED_KEY.into());
        let sig = writeguard::upsun::sign(key.as_bytes(), &body);
        self.webhook(body, Some(&sig)).await
    }

    /// A POST through the proxy: 503 while guarded, the upstream's answer otherwise.
    pub async fn post(&self, path: &str) -> Resp {
        self.proxy(Req::new("POST", path).body("x=1")).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- writeguard log ({}) ----\n{}\n---- end of log ----",
                self.log_path().display(),
                self.logs()
            );
        }
        self.stop();
    }
}

/// Engages the guard through the admin API (the operator path), checking that it took.
pub async fn engaged(wg: &Instance) {
    let res = wg.engage("integration test", None).await;
    assert_eq!(res.status, 201, "POST /guard: {}", res.text());
    assert!(wg.guarded().await);
}

/// Whether writes are blocked right now, checked both in `/status` and through the proxy.
pub async fn writes_blocked(wg: &Instance, up: &Upstream) -> bool {
    let guarded = wg.guarded().await;
    let before = up.count_method("POST");
    let res = wg.post("/probe").await;
    let reached = up.count_method("POST") > before;
    match res.status.as_u16() {
        503 => assert!(!reached, "a 503'd POST reached the upstream"),
        200 => assert!(reached, "a 200 POST never reached the upstream"),
        other => panic!("unexpected status {other} for a POST"),
    }
    assert_eq!(
        guarded,
        res.status == 503,
        "/status says guarded={guarded} but the proxy answered {}",
        res.status
    );
    guarded
}

/// Releases every engagement through the admin API, checking that it took.
pub async fn released(wg: &Instance) {
    let res = wg.release(true).await;
    assert!(res.status.is_success(), "DELETE /guard: {}", res.text());
    assert!(!wg.guarded().await);
}
