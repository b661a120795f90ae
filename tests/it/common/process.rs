//! Other writeguard processes than the [`Instance`] a test drives: the new process of a
//! `run --upgrade`, a second instance on the same state file, one under libfaketime. Each
//! logs to its own file and is stopped (SIGTERM, then SIGKILL) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{eventually, writeguard, Instance, Req};

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
        (proxy, admin): (SocketAddr, SocketAddr),
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
        let child = cmd
            .current_dir(dir)
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn writeguard");
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

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn ready(&self) {
        let admin = self.admin;
        let ready = eventually(Duration::from_secs(10), || async {
            Req::get("/readyz")
                .timeout(Duration::from_secs(1))
                .try_send(admin)
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
        assert!(ready, "never ready; log:\n{}", self.logs());
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
        if self.try_wait().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.try_wait().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
