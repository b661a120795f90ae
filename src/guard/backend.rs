//! The seam between the guard and where its state is kept. The guard computes every change
//! (a pure transition of [`GuardState`] plus its audit records) and hands it to a
//! [`Backend`], which makes it durable or refuses it whole. The embedded file backend is
//! `store::FileStore`; a replicated one implements the same trait.

use std::path::PathBuf;

use super::audit::AuditRecord;
use super::state::GuardState;

/// Why the guard state could not be read or kept; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot append to audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read audit log {path}: {source}")]
    AuditRead {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the guard's state and its audit trail are kept.
pub trait Backend: Send + Sync {
    /// The stored state; `Ok(None)` when nothing was stored yet.
    fn load(&self) -> Result<Option<GuardState>, StoreError>;

    /// Makes `next` the stored state and appends `records` to the audit trail: both are
    /// durable when this returns `Ok`, and neither when it returns an error.
    fn commit(&self, next: &GuardState, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// The last `limit` audit records, newest first.
    fn history(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Moves a stored state that cannot be read out of the way (kept for a human to look
    /// at); says where it went, if anywhere.
    fn set_aside(&self) -> Option<String>;
}
