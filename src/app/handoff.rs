//! The hand-over socket of `run --upgrade` (`server.upgrade_sock`). On SIGQUIT the running
//! instance connects to that path and sends its listening sockets to whoever listens there;
//! the new instance binds it, and pingora makes it mode 0666 (it expects to change user
//! later: `transfer_fd::get_fds_from`). So in a directory others may write, a local user who
//! creates the socket first receives the listening sockets; and anyone who can reach the
//! path while the new instance waits may hand it sockets of their own.
//!
//! Hence: the socket's directory is created owner-only when missing and refused (the process
//! does not start) when another user may write to it or owns it; and while a new instance
//! waits for the hand-over, its socket is turned owner-only the moment pingora creates it.
//!
//! Waiting is what a new instance is meant to do until the old one gets its SIGQUIT: it says
//! so at info level, once a second, and pingora's own error line for each second without a
//! hand-over is dropped ([`QuietHandoverWait`]). Giving up (after about [`WINDOW`]) stays an
//! error.

use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};

/// How often the socket's mode is looked at while a hand-over is awaited.
const MODE_CHECK: Duration = Duration::from_millis(1);

/// How long a new instance waits for the hand-over before it exits 1: pingora's
/// `accept_with_retry_timeout` tries 7 times, 1 s apart.
pub(super) const WINDOW: Duration = Duration::from_secs(6);

/// Makes sure only this user can create or reach anything at `sock`'s directory: created
/// with mode 0700 when missing; an existing one writable by group or others, or owned by
/// another user than this one or root, is refused.
pub(super) fn prepare_dir(sock: &Path) -> anyhow::Result<()> {
    let dir = match sock.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| {
                    format!("cannot create {} for server.upgrade_sock", dir.display())
                });
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read {} (server.upgrade_sock)", dir.display()))
        }
    };
    let hint = "whoever creates the upgrade socket there first receives the listening \
                sockets at the next SIGQUIT; point server.upgrade_sock (default: beside \
                state.path) at a private directory";
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() {
        bail!(
            "{} (server.upgrade_sock's directory) is not a directory",
            dir.display()
        );
    }
    if mode & 0o022 != 0 {
        bail!(
            "{} (server.upgrade_sock's directory) is writable by other users (mode {mode:o}): {hint}",
            dir.display()
        );
    }
    let me = effective_uid();
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{} (server.upgrade_sock's directory) belongs to uid {}, not to this user ({me}): {hint}",
            dir.display(),
            meta.uid()
        );
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions, touches no memory and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// While alive, turns the socket at `sock` owner-only (0600) whenever it is anything else,
/// and says once a second (info) that the hand-over is awaited. Held across pingora's
/// bootstrap of `run --upgrade`, which binds the socket, makes it 0666 and waits (up to
/// [`WINDOW`]) for the old instance to connect.
pub(super) struct OwnerOnly {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OwnerOnly {
    pub(super) fn watch(sock: PathBuf, pid_file: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut said = 0;
            while !flag.load(Ordering::Acquire) {
                tighten(&sock);
                let waited = start.elapsed().as_secs();
                if waited >= said {
                    said = waited + 1;
                    tracing::info!(
                        socket = %sock.display(),
                        waited_s = waited,
                        gives_up_after_s = WINDOW.as_secs(),
                        "waiting for the running instance's listening sockets: send it SIGQUIT \
                         (kill -QUIT \"$(cat {})\")",
                        pid_file.display()
                    );
                }
                std::thread::sleep(MODE_CHECK);
            }
        });
        OwnerOnly {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One look: a socket at `sock` that group or others may use becomes 0600.
fn tighten(sock: &Path) {
    // symlink_metadata: only a socket itself is changed, never what a link points to.
    let Ok(meta) = fs::symlink_metadata(sock) else {
        return;
    };
    if meta.file_type().is_socket() && meta.mode() & 0o077 != 0 {
        if let Err(e) = fs::set_permissions(sock, Permissions::from_mode(0o600)) {
            tracing::warn!(error = %e, path = %sock.display(), "cannot make the upgrade socket owner-only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_created_owner_only_and_a_shared_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("a/b/writeguard.upgrade.sock");
        prepare_dir(&sock).unwrap();
        for d in [tmp.path().join("a"), tmp.path().join("a/b")] {
            assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700, "{d:?}");
        }
        // Existing and private (0755 is fine: others cannot create anything there).
        fs::set_permissions(tmp.path().join("a/b"), Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&sock).unwrap();
        for mode in [0o775, 0o777, 0o1777] {
            fs::set_permissions(tmp.path().join("a/b"), Permissions::from_mode(mode)).unwrap();
            let err = prepare_dir(&sock).unwrap_err().to_string();
            assert!(err.contains("writable by other users"), "{mode:o}: {err}");
        }
    }

    #[test]
    fn a_socket_is_made_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        fs::set_permissions(&sock, Permissions::from_mode(0o666)).unwrap();
        tighten(&sock);
        assert_eq!(fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);
        // Not a socket: left alone.
        let file = tmp.path().join("f");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        tighten(&file);
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o644);
    }
}
