//! Other writeguard processes than the [`Instance`] a test drives: the new process of a
//! `run --upgrade`, a second instance on the same state file, one under libfaketime, one
//! with a lowered open-file limit, one that must refuse its config. Each logs to its own
//! file and is stopped (SIGTERM, then SIGKILL) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{eventually, wait_ready, writeguard, Instance, Req};

/// Another writeguard process.
pub struct Process {
    child: Child,
    log: PathBuf,
    /// Where it listens (for a successor: the ports it takes over).
    pub admin: SocketAddr,
    pub proxy: SocketAddr,
}

impl Process {
    /// Writes `config` to `dir/<name>.toml` and starts `writeguard run <args> -c` on it in
    /// `dir`, with `env`, logging to `dir/<name>.log`; `proxy` and `admin` are the addresses
    /// the config names. Does not wait.
    pub fn spawn(
        dir: &Path,
        name: &str,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        addrs: (SocketAddr, SocketAddr),
    ) -> Process {
        Process::spawn_with(dir, name, config, args, env, addrs, |_| {})
    }

    /// [`Process::spawn`], with `hook` applied to the command last (see [`limit_nofile`]).
    pub fn spawn_with(
        dir: &Path,
        name: &str,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        (proxy, admin): (SocketAddr, SocketAddr),
        hook: impl FnOnce(&mut Command),
    ) -> Process {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log");
        let mut cmd = writeguard();
        cmd.arg("run")
            .args(args)
            .arg("-c")
            .arg(&path)
            .env("WRITEGUARD_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(dir)
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(Stdio::from(file));
        hook(&mut cmd);
        let child = cmd.spawn().expect("spawn writeguard");
        Process {
            child,
            log,
            admin,
            proxy,
        }
    }

    /// `run --upgrade` beside `wg` on `config` (TOML), in `wg`'s directory, waited for
    /// (bounded) until it listens on the upgrade socket: from then on, SIGQUIT to `wg` hands
    /// the listeners over.
    pub async fn successor(wg: &Instance, config: &str) -> Process {
        let sock = wg.dir().join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let successor = Process::spawn(
            wg.dir(),
            "successor",
            config,
            &["--upgrade"],
            &[],
            (wg.proxy, wg.admin),
        );
        assert!(
            eventually(Duration::from_secs(10), || async { sock.exists() }).await,
            "the successor never opened {}; log:\n{}",
            sock.display(),
            successor.logs()
        );
        successor
    }

    /// Waits (bounded) until `/readyz` answers 200; panics with the log if the process
    /// exits first or the time runs out.
    pub async fn ready(&mut self) {
        let child = &mut self.child;
        let ready = wait_ready(self.admin, Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .await;
        match ready {
            Ok(()) => {}
            Err(true) => panic!("exited before it was ready; log:\n{}", self.logs()),
            Err(false) => panic!("not ready within 10 s; log:\n{}", self.logs()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the signal `name` (`HUP`, `QUIT`, `KILL`...) without waiting.
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Waits (bounded) for the process to exit; None on timeout.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        exit_within(&mut self.child, limit).await
    }

    /// What it printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `GET /status` as JSON (asserting 200).
    pub async fn status(&self) -> Value {
        let res = Req::get("/status").send(self.admin).await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.json()
    }

    pub async fn guarded(&self) -> bool {
        self.status().await["guarded"] == true
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} ----\n{}\n---- end of log ----",
                self.log.display(),
                self.logs()
            );
        }
        stop(&mut self.child);
    }
}

/// Sends the signal `name` (`HUP`, `QUIT`, `KILL`...) to `pid` without waiting.
pub fn signal(pid: u32, name: &str) {
    let pid = pid.to_string();
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

/// Waits (bounded) for `child` to exit; None on timeout.
pub(super) async fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Graceful stop (SIGTERM), SIGKILL if it takes more than 5 s. Returns the exit status.
pub(super) fn stop(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A [`Process::spawn_with`] hook: the child runs with `RLIMIT_NOFILE` = `soft`/`hard`, set
/// between fork and exec (the test process keeps its own).
#[allow(unsafe_code)]
pub fn limit_nofile(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; setrlimit is
    // async-signal-safe and touches nothing but the child's own limits.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
