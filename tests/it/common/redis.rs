//! A real Redis for the shared guard state: Debian's `redis-server` on a free loopback port,
//! in a temp dir of its own, with no persistence (so a restart after a kill is EMPTY), waited
//! for until it answers PING. A test kills it (SIGKILL), freezes it (SIGSTOP) and thaws it
//! (SIGCONT), starts an empty one again on the same port, and inspects the keys with
//! `redis-cli`. Dropping it kills the server by its PID (thawed first if frozen).

use std::fs::File;
use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{free_port, process};

const SERVER: &str = "/usr/bin/redis-server";
const CLI: &str = "/usr/bin/redis-cli";
/// How long a start may take until the server answers PING.
const UP_WITHIN: Duration = Duration::from_secs(5);
/// How long a `redis-cli` call may take (it hangs on a frozen server).
const CLI_WITHIN: Duration = Duration::from_secs(5);

/// A running (or killed, or frozen) `redis-server`.
pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    frozen: bool,
    starts: usize,
}

impl Redis {
    /// A new, empty server on a free loopback port, answering PING. Retries on another
    /// port if the one picked was taken in the meantime.
    pub async fn start() -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("wg-it-redis-")
            .tempdir()
            .expect("create temp dir");
        let mut redis = Redis {
            dir,
            child: None,
            addr: free_port(),
            frozen: false,
            starts: 0,
        };
        for attempt in 0..3 {
            if attempt > 0 {
                redis.addr = free_port();
            }
            if redis.launch().await {
                return redis;
            }
        }
        panic!(
            "redis-server could not start on a free port three times; log:\n{}",
            redis.logs()
        );
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server's PID; panics when it is not running (killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis.{}.log", self.starts))
    }

    /// What the current (or last) server printed.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Spawns a server on `self.addr` in a fresh data dir and waits until it answers PING:
    /// false if it exited first (the port was taken), panics if it neither exits nor answers.
    async fn launch(&mut self) -> bool {
        self.starts += 1;
        // A data dir per start: nothing a previous server left can be loaded.
        let data = self.dir.path().join(format!("data.{}", self.starts));
        std::fs::create_dir_all(&data).expect("create redis data dir");
        let log = File::create(self.log_path()).expect("create redis log");
        let child = Command::new(SERVER)
            .args(["--port", &self.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&data)
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SERVER} (apt-get install redis-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + UP_WITHIN;
        loop {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            if self.ping().await {
                // Answered: ours only if it is still alive (not another server on the port).
                let alive = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                if alive {
                    return true;
                }
                self.child = None;
                return false;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "redis-server did not answer PING within {UP_WITHIN:?}; log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether a server answers PING on the port right now (within 500 ms).
    pub async fn ping(&self) -> bool {
        let exchange = async {
            let mut s = TcpStream::connect(self.addr).await.ok()?;
            s.write_all(b"*1\r\n$4\r\nPING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            Some(&buf == b"+PONG\r\n")
        };
        tokio::time::timeout(Duration::from_millis(500), exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// SIGKILL, and waits for the process to be gone. Everything it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process as well.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }

    /// SIGSTOP: the server keeps its port and connections but answers nothing.
    pub fn freeze(&mut self) {
        process::signal(self.pid(), "STOP");
        self.frozen = true;
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&mut self) {
        process::signal(self.pid(), "CONT");
        self.frozen = false;
    }

    /// After [`kill`](Self::kill): a new, EMPTY server on the same port, answering PING when
    /// this returns. Retries the bind for a few seconds (the old socket may linger).
    pub async fn restart_empty(&mut self) {
        assert!(self.child.is_none(), "restart_empty after kill only");
        let deadline = Instant::now() + UP_WITHIN;
        loop {
            if self.launch().await {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "redis-server could not listen on {} again within {UP_WITHIN:?}; log:\n{}",
                    self.addr,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis-cli -p <port> <args>`, its output trimmed (raw format: one reply element per
    /// line, an empty string for nil). Panics if it fails or takes more than 5 s.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = tempfile::tempfile().expect("temp file for redis-cli output");
        let mut child = Command::new(CLI)
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone output handle"))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CLI}: {e}"));
        let deadline = Instant::now() + CLI_WITHIN;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-cli {args:?} took more than {CLI_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "redis-cli {args:?}: {status}");
        let mut out = out;
        let mut text = String::new();
        out.rewind().expect("rewind redis-cli output");
        out.read_to_string(&mut text)
            .expect("redis-cli prints UTF-8");
        text.trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server log ({}) ----\n{}\n---- end of log ----",
                self.log_path().display(),
                self.logs()
            );
        }
        if self.frozen && self.child.is_some() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
        }
        self.kill();
    }
}
