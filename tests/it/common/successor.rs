//! The new process of a zero-downtime upgrade: `writeguard run --upgrade` started beside a
//! running [`Instance`], on its directory, logging to its own file. It is stopped (SIGTERM,
//! then SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, writeguard, Instance};

pub struct Successor {
    child: Child,
    log: PathBuf,
}

impl Successor {
    /// Starts `run --upgrade -c <config>` in `wg`'s directory and waits (bounded) until it
    /// listens on the upgrade socket: from then on, SIGQUIT to `wg` hands the listeners over.
    pub async fn start(wg: &Instance, config: &Path) -> Successor {
        let sock = wg.dir().join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let log = wg.dir().join("successor.log");
        let file = std::fs::File::create(&log).expect("create the successor's log");
        let child = writeguard()
            .arg("run")
            .arg("--upgrade")
            .arg("-c")
            .arg(config)
            .env("WRITEGUARD_LOG", "info")
            .current_dir(wg.dir())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn the successor");
        let successor = Successor { child, log };
        assert!(
            eventually(Duration::from_secs(10), || async { sock.exists() }).await,
            "the successor never opened {}; log:\n{}",
            sock.display(),
            successor.logs()
        );
        successor
    }

    /// What the successor printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
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
