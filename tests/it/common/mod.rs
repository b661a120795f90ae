//! Black-box harness for writeguard's integration tests: the REAL binary on free loopback
//! ports with its own temp dir, an in-process recording upstream, and small HTTP clients.
//!
//! Every wait is bounded; every instance is stopped (SIGTERM, then SIGKILL) when dropped.

pub mod client;
pub mod faulty;
pub mod h2c;
pub mod ledger;
pub mod load;
pub mod server;
pub mod sse;
pub mod successor;
pub mod upstream;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;

pub use client::{Req, Resp};
pub use upstream::Upstream;

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
        let pid = child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(20));
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
        let out = child.wait_with_output().expect("wait for writeguard");
        drop(killer);
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

/// Whether process `pid` itself holds the listening socket on `addr` (Linux `/proc`).
/// A successful connect is not enough: another process may own the port.
fn owns_listener(pid: u32, addr: SocketAddr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true; // no procfs: trust the readiness probe
    };
    let SocketAddr::V4(v4) = addr else {
        return true;
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// One of the project's Upsun activity fixtures (`tests/fixtures/upsun/<name>.json`).
pub fn sample(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/upsun/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read sample {path}: {e}"))
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

/// How to configure a writeguard instance; `start` renders it to TOML in a fresh temp dir.
#[derive(Debug, Clone)]
pub struct Wg {
    pub upstream: String,
    pub token: String,
    pub methods: Option<Vec<String>>,
    pub allow_paths: Vec<String>,
    pub retry_after: String,
    pub max_engaged: String,
    pub shared_key: Option<String>,
    pub allow_unsigned: bool,
    pub project: Option<String>,
    pub environments: Vec<String>,
    pub guard_pending: bool,
    pub shutdown_grace: String,
    /// `guard.hold`: "0s" by default here, so tests of the immediate 503 need not wait.
    pub hold: String,
    /// Extra TOML lines for `[guard]` and `[proxy]`.
    pub guard_extra: String,
    pub proxy_extra: String,
    /// TOML lines for `[public]` (the section is left out when empty: the defaults).
    pub public_extra: String,
}

impl Wg {
    pub fn new(upstream: impl Into<String>) -> Self {
        Wg {
            upstream: upstream.into(),
            token: TOKEN.into(),
            methods: None,
            allow_paths: Vec::new(),
            retry_after: "30s".into(),
            max_engaged: "30m".into(),
            shared_key: Some(SHARED_KEY.into()),
            allow_unsigned: false,
            project: None,
            environments: Vec::new(),
            guard_pending: false,
            shutdown_grace: "5s".into(),
            hold: "0s".into(),
            guard_extra: String::new(),
            proxy_extra: String::new(),
            public_extra: String::new(),
        }
    }

    pub fn hold(mut self, d: &str) -> Self {
        self.hold = d.into();
        self
    }

    /// Adds `line` (TOML) to the `[guard]` section.
    pub fn guard_line(mut self, line: &str) -> Self {
        self.guard_extra += line;
        self.guard_extra += "\n";
        self
    }

    /// Adds `line` (TOML) to the `[proxy]` section.
    pub fn proxy_line(mut self, line: &str) -> Self {
        self.proxy_extra += line;
        self.proxy_extra += "\n";
        self
    }

    /// Adds `line` (TOML) to the `[public]` section.
    pub fn public_line(mut self, line: &str) -> Self {
        self.public_extra += line;
        self.public_extra += "\n";
        self
    }

    /// In front of a recording upstream.
    pub fn for_upstream(up: &Upstream) -> Self {
        Wg::new(up.url())
    }

    pub fn methods(mut self, methods: &[&str]) -> Self {
        self.methods = Some(methods.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn allow_paths(mut self, paths: &[&str]) -> Self {
        self.allow_paths = paths.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn retry_after(mut self, d: &str) -> Self {
        self.retry_after = d.into();
        self
    }

    pub fn shared_key(mut self, key: Option<&str>) -> Self {
        self.shared_key = key.map(str::to_string);
        self
    }

    pub fn allow_unsigned(mut self, yes: bool) -> Self {
        self.allow_unsigned = yes;
        self
    }

    pub fn project(mut self, project: &str) -> Self {
        self.project = Some(project.into());
        self
    }

    pub fn environments(mut self, envs: &[&str]) -> Self {
        self.environments = envs.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn guard_pending(mut self, yes: bool) -> Self {
        self.guard_pending = yes;
        self
    }

    pub fn shutdown_grace(mut self, d: &str) -> Self {
        self.shutdown_grace = d.into();
        self
    }

    /// The TOML for this instance, listening on `proxy`/`admin`, with everything it writes
    /// under `dir`.
    pub fn render(&self, proxy: SocketAddr, admin: SocketAddr, dir: &Path) -> String {
        let q = |s: &str| Value::from(s).to_string();
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let mut t = String::new();
        t += &format!(
            "[proxy]\nlisten = {}\nupstream = {}\nconnect_timeout = \"2s\"\n{}\n",
            q(&proxy.to_string()),
            q(&self.upstream),
            self.proxy_extra
        );
        t += &format!(
            "[admin]\nlisten = {}\ntoken = {}\n\n",
            q(&admin.to_string()),
            q(&self.token)
        );
        t += "[guard]\n";
        if let Some(m) = &self.methods {
            t += &format!("methods = {}\n", list(m));
        }
        t += &format!(
            "retry_after = {}\nmax_engaged = {}\nallow_paths = {}\nhold = {}\n{}\n",
            q(&self.retry_after),
            q(&self.max_engaged),
            list(&self.allow_paths),
            q(&self.hold),
            self.guard_extra
        );
        t += "[upsun]\n";
        if let Some(k) = &self.shared_key {
            t += &format!("shared_key = {}\n", q(k));
        }
        t += &format!("allow_unsigned = {}\n", self.allow_unsigned);
        if let Some(p) = &self.project {
            t += &format!("project = {}\n", q(p));
        }
        if !self.environments.is_empty() {
            t += &format!("environments = {}\n", list(&self.environments));
        }
        t += &format!("guard_pending = {}\n\n", self.guard_pending);
        if !self.public_extra.is_empty() {
            t += &format!("[public]\n{}\n", self.public_extra);
        }
        t += &format!(
            "[state]\npath = {}\n\n",
            q(&dir.join("state").join("writeguard.state").to_string_lossy())
        );
        t += &format!(
            "[server]\nthreads = 1\nshutdown_grace = {}\nupgrade_sock = {}\npid_file = {}\n",
            q(&self.shutdown_grace),
            q(&dir.join("upgrade.sock").to_string_lossy()),
            q(&dir.join("writeguard.pid").to_string_lossy())
        );
        t
    }

    /// Starts the real binary and waits (bounded) until `/readyz` answers 200.
    pub async fn start(self) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("wg-it-")
            .tempdir()
            .expect("create temp dir");
        let mut instance = Instance {
            cfg: self,
            dir,
            child: None,
            proxy: free_port(),
            admin: free_port(),
            starts: 0,
        };
        instance.launch().await;
        instance
    }
}

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
                    if owns_listener(pid, self.proxy) && owns_listener(pid, self.admin) {
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
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return Err(true);
                }
            }
            if let Ok(res) = Req::get("/readyz")
                .timeout(Duration::from_secs(1))
                .try_send(self.admin)
                .await
            {
                if res.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(false);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM (graceful stop) without waiting.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`HUP`, `QUIT`, `KILL`...) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid} failed");
    }

    /// Waits (bounded) for the process to exit; None on timeout.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop (SIGTERM), SIGKILL if it takes more than 5 s. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_now()
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

/// Releases every engagement through the admin API, checking that it took.
pub async fn released(wg: &Instance) {
    let res = wg.release(true).await;
    assert!(res.status.is_success(), "DELETE /guard: {}", res.text());
    assert!(!wg.guarded().await);
}

/// `method` as an http::Method (extension methods like `post` included).
pub fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).expect("valid method token")
}
