//! `server.pid_file`: the id of the process that holds the listening sockets, so that
//! `kill -QUIT "$(cat PIDFILE)"` reaches the right one during an upgrade. pingora writes a
//! pid file only when it daemonizes, which writeguard never does: it is written here.
//!
//! Written once this process holds the listeners (under `run --upgrade`, after the
//! hand-over: until then the file still names the old instance), owner-only, through a
//! temporary file renamed into place (a reader never sees half of it). Removed at a clean
//! exit, unless it names another process by then (the successor that took the listeners).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub(super) struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Makes sure the pid file's directory exists (created owner-only when missing), before
    /// any port is opened: a path that cannot work stops the start.
    pub(super) fn prepare(path: &Path) -> anyhow::Result<()> {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {} for server.pid_file", dir.display())),
            _ => Ok(()),
        }
    }

    /// Writes this process's id to `path`. A failure is logged, not fatal: by now this
    /// process may hold listeners handed over by an instance that is already draining.
    pub(super) fn write(path: &Path) -> PidFile {
        let file = PidFile {
            path: path.to_owned(),
            pid: std::process::id(),
        };
        match file.replace() {
            Ok(()) => tracing::info!(path = %path.display(), pid = file.pid, "pid file written"),
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot write server.pid_file")
            }
        }
        file
    }

    fn replace(&self) -> std::io::Result<()> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{}.tmp", self.pid));
        let tmp = PathBuf::from(tmp);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(format!("{}\n", self.pid).as_bytes()))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// At a clean exit: removes the file if it still names this process.
    pub(super) fn remove(&self) {
        let ours = fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim().parse::<u32>() == Ok(self.pid));
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(error = %e, path = %self.path.display(), "cannot remove server.pid_file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_owner_only_and_removed_only_while_it_names_this_process() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/writeguard.pid");
        PidFile::prepare(&path).unwrap();
        let file = PidFile::write(&path);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A successor's pid file is left alone.
        fs::write(&path, "4242\n").unwrap();
        file.remove();
        assert!(path.exists());
        fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        file.remove();
        assert!(!path.exists());
        assert_eq!(fs::read_dir(tmp.path().join("run")).unwrap().count(), 0);
    }
}
