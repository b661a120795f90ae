//! The seam between the guard and where its state is kept. The guard computes every change
//! (a pure transition of [`GuardState`] plus its audit records) and hands it to a
//! [`Backend`], which makes it durable or refuses it whole. The protocol is the same for one
//! process, two processes on one machine (an upgrade hand-over) and many replicas: a version
//! in the state, compare-and-set on commit, and adopting any newer version seen. The
//! embedded file backend is `store::FileStore`; a replicated one implements the same trait.

use std::path::PathBuf;
use std::sync::Arc;

use super::audit::AuditRecord;
use super::replicas::Replica;
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
    #[error("cannot lock state file {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The shared store did not answer in time, or refused: nothing is known of the change.
    #[error("the shared state store ({store}) cannot be reached: {reason}")]
    Unreachable { store: String, reason: String },
    #[error("the shared state ({key}) is corrupt: {source}")]
    SharedCorrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// What a compare-and-set commit did.
#[derive(Debug)]
pub enum Commit {
    /// Stored, with its audit records: durable.
    Done,
    /// Nothing stored: another process committed a state whose version is not lower than
    /// the one offered. Here it is, to apply the change on top of.
    Stale(GuardState),
}

/// Where the guard's state and its audit trail are kept, shared by every process that
/// points at the same place: each change is a compare-and-set on the state's version.
pub trait Backend: Send + Sync {
    /// The stored state; `Ok(None)` when nothing was stored yet.
    fn load(&self) -> Result<Option<GuardState>, StoreError>;

    /// Stores `next` (whose version is one more than the state it was derived from) and
    /// appends `records` to the audit trail, unless the stored version is already
    /// `next.version` or higher. Both are durable when this returns `Done`; neither when it
    /// returns `Stale` or an error.
    fn commit(&self, next: &GuardState, records: &[AuditRecord]) -> Result<Commit, StoreError>;

    /// The stored state if its version is higher than `version`: how a process learns of
    /// another's changes. Cheap when nothing changed.
    fn newer_than(&self, version: u64) -> Result<Option<GuardState>, StoreError>;

    /// The last `limit` audit records, newest first.
    fn history(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Moves a stored state that cannot be read out of the way (kept for a human to look
    /// at); says where it went, if anywhere.
    fn set_aside(&self) -> Option<String>;

    /// `"file"` or `"redis"`, for `/status`.
    fn kind(&self) -> &'static str;

    /// The last state this process saw, kept locally: what it starts from when the store
    /// cannot be reached ([`StoreError::Unreachable`]).
    fn cached(&self) -> Option<GuardState> {
        None
    }

    /// Says this process is alive and what it applied; returns every live member (this one
    /// included). One member when the store is not shared between replicas.
    fn announce(&self, me: &Replica) -> Result<Vec<Replica>, StoreError> {
        Ok(vec![me.clone()])
    }

    /// Notified when another member may have committed a change (a hint: polling
    /// [`Backend::newer_than`] is what makes it certain).
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}
