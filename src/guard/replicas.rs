//! The processes sharing one guard state: each announces itself to the backend with the
//! version it applied, and `/status` lists them all. `wait: "all"` waits on this list.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Guard, StoreError};

/// One live member sharing the guard state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub id: String,
    /// Its proxy address, as configured.
    pub address: String,
    pub pid: u32,
    /// The state version it applied: what its proxy enforces.
    pub version: u64,
    /// Whether it guards writes itself because it cannot read the shared state.
    pub failsafe: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub seen: OffsetDateTime,
}

impl Replica {
    /// This process, known as `id`, its proxy at `address`.
    pub fn this_process(id: String, address: String) -> Self {
        Replica {
            id,
            address,
            pid: std::process::id(),
            version: 0,
            failsafe: false,
            seen: OffsetDateTime::now_utc(),
        }
    }

    /// Whether this replica's proxy refuses writes engaged at `version` (or guards them
    /// itself).
    pub fn applied(&self, version: u64) -> bool {
        self.version >= version || self.failsafe
    }
}

impl Guard {
    /// Tells the other members that this process is alive and which version it applied, and
    /// learns who they are. Waits for the store: run it off the async workers.
    pub fn announce(&self) -> Result<Vec<Replica>, StoreError> {
        let mut all = self.backend.announce(&self.me_now())?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        self.replicas.store(std::sync::Arc::new(all.clone()));
        Ok(all)
    }

    /// This process as it is now.
    fn me_now(&self) -> Replica {
        Replica {
            version: self.state.load().version,
            failsafe: self.health.failsafe(),
            seen: self.clock.now(),
            ..self.me.clone()
        }
    }

    /// The members as last announced; with a store that is not shared, this process.
    pub fn replicas(&self) -> Vec<Replica> {
        if self.health.shared() {
            self.replicas.load().to_vec()
        } else {
            vec![self.me_now()]
        }
    }

    /// Whether the state is shared with other replicas (then the upkeep announces this one
    /// and watches the store's answers for the fail-safe).
    pub fn shared(&self) -> bool {
        self.health.shared()
    }

    /// The version of the state this process applied.
    pub fn version(&self) -> u64 {
        self.state.load().version
    }

    /// Wakes when another member may have changed the state, if the store can tell.
    pub fn store_changes(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.backend.changes()
    }
}
