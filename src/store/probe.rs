//! Proof, before anything listens, that the state can be kept where the config says: the
//! directories exist (created owner-only if needed) and files can be written in them, and the
//! existing state file and audit log can be read and appended to. A guard that cannot save an
//! engagement cannot engage: better to refuse to start than to find out during a deploy.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::config::{StateBackend, StateConfig};

/// One problem, with the config key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

/// Every problem found; empty when the state can be kept. Creates missing directories;
/// never changes an existing file. With Redis, only the boot cache is a file (the audit
/// trail is in Redis).
pub fn probe(cfg: &StateConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let files: &[_] = match cfg.backend {
        StateBackend::File => &[
            ("state.path", &cfg.path),
            ("state.audit_log", &cfg.audit_log),
        ],
        StateBackend::Redis(_) => &[("state.path", &cfg.path)],
    };
    for &(key, path) in files {
        if let Err(message) = writable(path) {
            problems.push(Problem { key, message });
        }
    }
    problems
}

fn writable(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Owner-only: the state is nobody else's business, and the upgrade socket lives beside it
    // by default (whoever can reach that socket can hand the next instance its listeners).
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    let mut scratch = path.as_os_str().to_owned();
    scratch.push(format!(".probe{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&scratch)?;
        f.write_all(b"writeguard write probe\n")?;
        f.sync_all()
    })();
    let _ = fs::remove_file(&scratch);
    written.map_err(|e| format!("cannot write files in {}: {e}", dir.display()))?;
    if path.exists() {
        OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_directories_and_names_what_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let ok = StateConfig {
            path: dir.path().join("new/dir/state"),
            audit_log: dir.path().join("other/audit.jsonl"),
            backend: crate::config::StateBackend::File,
        };
        assert_eq!(probe(&ok), []);
        assert!(dir.path().join("new/dir").is_dir() && !ok.path.exists());
        use std::os::unix::fs::MetadataExt;
        let mode = fs::metadata(dir.path().join("new/dir")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "created owner-only");
        let bad = StateConfig {
            path: "/proc/nope/x.state".into(),
            audit_log: dir.path().join("audit.jsonl"),
            backend: crate::config::StateBackend::File,
        };
        let problems = probe(&bad);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "state.path");
    }
}
