//! The embedded state backend: one JSON file, replaced atomically (write a temp file, fsync
//! it, rename it over the old one, fsync the directory), and the audit log beside it
//! ([`audit`]). A change is acknowledged only after both are durable.
//!
//! Several processes may share the file (a zero-downtime upgrade runs two): a commit holds an
//! exclusive lock on `<path>.lock` while it compares the stored version with its own and
//! writes, so two commits never interleave and an older state never replaces a newer one;
//! each process polls the file for versions it has not seen ([`Backend::newer_than`]).

mod audit;
mod probe;
mod redis;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::config::StateConfig;
use crate::guard::{AuditRecord, Backend, Commit, GuardState, StoreError};

use audit::AuditLog;
pub use probe::probe;
pub use redis::{ping, RedisStore};

#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    lock_path: PathBuf,
    audit: AuditLog,
    /// What the state file looked like when last read: unchanged, it is not read again.
    seen: Mutex<Option<Seen>>,
}

/// A state file's identity and size: every write renames a new file into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Seen {
    fn of(meta: &fs::Metadata) -> Self {
        Seen {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

impl FileStore {
    pub fn new(cfg: &StateConfig) -> Self {
        let mut lock_path = cfg.path.clone().into_os_string();
        lock_path.push(".lock");
        FileStore {
            path: cfg.path.clone(),
            lock_path: lock_path.into(),
            audit: AuditLog::new(&cfg.audit_log),
            seen: Mutex::new(None),
        }
    }

    /// Holds the exclusive lock shared by every process using this state file until the
    /// returned file is dropped.
    fn lock(&self) -> Result<File, StoreError> {
        let err = |source| StoreError::Lock {
            path: self.lock_path.clone(),
            source,
        };
        if let Some(dir) = self
            .lock_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(err)?;
        file.lock().map_err(err)?;
        Ok(file)
    }

    fn remember(&self, seen: Option<Seen>) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
    }

    /// Only under [`FileStore::lock`], which made sure the directory exists.
    fn save(&self, state: &GuardState) -> Result<(), StoreError> {
        let err = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(state).expect("guard state always serializes");
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(err)
    }
}

impl Backend for FileStore {
    /// `Ok(None)` when there is no state file yet.
    fn load(&self) -> Result<Option<GuardState>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Under the lock: the stored version first, then the audit lines, then the state
    /// file; audit lines whose state could not be written are taken back.
    fn commit(&self, next: &GuardState, records: &[AuditRecord]) -> Result<Commit, StoreError> {
        let _lock = self.lock()?;
        if let Some(stored) = self.load()? {
            if stored.version >= next.version {
                return Ok(Commit::Stale(stored));
            }
        }
        let appended = if records.is_empty() {
            None
        } else {
            Some(self.audit.append(records)?)
        };
        if let Err(e) = self.save(next) {
            if let Some(appended) = appended {
                appended.undo(self.audit.path());
            }
            return Err(e);
        }
        self.remember(fs::metadata(&self.path).ok().map(|m| Seen::of(&m)));
        Ok(Commit::Done)
    }

    fn newer_than(&self, version: u64) -> Result<Option<GuardState>, StoreError> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let seen = Seen::of(&meta);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == Some(seen) {
            return Ok(None);
        }
        let state = self.load()?;
        self.remember(Some(seen));
        Ok(state.filter(|s| s.version > version))
    }

    fn history(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit.tail(limit)
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    /// Renames the file to `<path>.corrupt`.
    fn set_aside(&self) -> Option<String> {
        let mut aside = self.path.as_os_str().to_owned();
        aside.push(".corrupt");
        fs::rename(&self.path, &aside)
            .is_ok()
            .then(|| aside.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&StateConfig {
            path: dir.path().join("sub/state.json"),
            audit_log: dir.path().join("sub/audit.jsonl"),
            backend: crate::config::StateBackend::File,
        });
        assert!(store.load().unwrap().is_none());
        let mut state = GuardState::default();
        state.engage_manual(
            "x".into(),
            std::time::Duration::from_secs(5),
            time::OffsetDateTime::now_utc(),
        );
        state.version = 1;
        assert!(matches!(store.commit(&state, &[]).unwrap(), Commit::Done));
        assert_eq!(store.load().unwrap(), Some(state.clone()));
        // Another process (another store on the same file) sees it, and cannot go back.
        let other = FileStore::new(&StateConfig {
            path: store.path.clone(),
            audit_log: dir.path().join("sub/audit.jsonl"),
            backend: crate::config::StateBackend::File,
        });
        assert_eq!(other.newer_than(0).unwrap(), Some(state.clone()));
        assert_eq!(other.newer_than(1).unwrap(), None);
        let older = GuardState {
            version: 1,
            ..GuardState::default()
        };
        assert!(matches!(other.commit(&older, &[]).unwrap(), Commit::Stale(s) if s == state));
        fs::write(&store.path, b"{not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
