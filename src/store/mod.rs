//! The embedded state backend: one JSON file, replaced atomically (write a temp file, fsync
//! it, rename it over the old one, fsync the directory), and the audit log beside it
//! ([`audit`]). A change is acknowledged only after both are durable.

mod audit;

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use crate::config::StateConfig;
use crate::guard::{AuditRecord, Backend, GuardState, StoreError};

use audit::AuditLog;

#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    audit: AuditLog,
}

impl FileStore {
    pub fn new(cfg: &StateConfig) -> Self {
        FileStore {
            path: cfg.path.clone(),
            audit: AuditLog::new(&cfg.audit_log),
        }
    }

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
        fs::create_dir_all(&dir).map_err(err)?;
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

    /// The audit lines first, then the state file; audit lines whose state could not be
    /// written are taken back.
    fn commit(&self, next: &GuardState, records: &[AuditRecord]) -> Result<(), StoreError> {
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
        Ok(())
    }

    fn history(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit.tail(limit)
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
        });
        assert!(store.load().unwrap().is_none());
        let mut state = GuardState::default();
        state.engage_manual(
            "x".into(),
            std::time::Duration::from_secs(5),
            time::OffsetDateTime::now_utc(),
        );
        store.commit(&state, &[]).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        fs::write(&store.path, b"{not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
