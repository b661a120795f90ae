//! The shared state backend: one versioned state document per site in Redis, which every
//! replica of the site reads and changes. A change is one Lua script (`commit.lua`): compare
//! the version, write the document, append the audit records to a bounded stream, publish
//! the version. Replicas learn of changes by polling the version (`read.lua`) and, sooner,
//! by a subscription ([`subscriber`]).
//!
//! Redis may come back empty (no persistence, failover to a lagging replica): a stored
//! version lower than the one a replica holds, or none, is never read as "released"; the
//! replica writes back what it holds (a re-seed, itself a compare-and-set). What a replica
//! last saw is also kept in the state file (the boot cache), to start from while Redis is
//! down.
//!
//! Redis is talked to from a runtime of its own (one thread): callers are the guard's
//! writers and the upkeep, which wait for the answer off the async workers, with a deadline.

mod keys;
mod subscriber;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamRangeReply;
use redis::{RedisResult, Script};
use tokio::sync::Notify;

use crate::config::{RedisConfig, StateConfig};
use crate::guard::{AuditRecord, Backend, Commit, GuardState, Replica, StoreError};

use super::FileStore;
use keys::Keys;

/// About how many audit records the stream keeps (trimmed with `MAXLEN ~`).
const AUDIT_KEPT: usize = 10_000;
/// How long a replica counts as alive after it last announced itself (it does so four times
/// a second).
const ALIVE_FOR: Duration = Duration::from_secs(3);
/// How long a change may wait for Redis before the caller is told it was not stored (then
/// 503 + Retry-After: the sender tries again).
const COMMIT_WITHIN: Duration = Duration::from_secs(3);
/// A change reaching Redis later than this after it was sent is refused by the script
/// itself: a Redis that was frozen runs what was queued when it thaws, and by then the
/// caller was told, at [`COMMIT_WITHIN`], that nothing changed. The margin covers the error
/// of the measured clock offset.
const STORE_WITHIN: Duration = Duration::from_millis(2_500);
/// Reads slower than this tell too little about the server's clock.
const CLOCK_READ_WITHIN: Duration = Duration::from_millis(100);
/// [`RedisStore::clock_offset`] before any read.
const UNKNOWN_OFFSET: i64 = i64::MIN;

pub struct RedisStore {
    runtime: Option<tokio::runtime::Runtime>,
    conn: ConnectionManager,
    keys: Keys,
    /// `redis at host:port (site S)`: never the URL, which may hold a password.
    name: String,
    /// How long a poll may take: half of `stale_after`, so a late answer still counts.
    poll_within: Duration,
    /// The boot cache: the last state this replica saw, on disk.
    cache: FileStore,
    /// The last state this replica saw, in memory: what it re-seeds an emptied Redis with.
    last: Mutex<Option<GuardState>>,
    replica: String,
    changes: Arc<Notify>,
    /// The server's clock minus ours, in milliseconds, as last measured by a quick read.
    clock_offset: AtomicI64,
    commit_script: Script,
    read_script: Script,
    announce_script: Script,
}

impl RedisStore {
    /// Connects lazily: a Redis that is down now is not an error here (the guard starts in
    /// fail-safe from the boot cache).
    pub fn new(state: &StateConfig, redis: &RedisConfig, replica: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis.url.expose())
            .map_err(|_| anyhow::anyhow!("state.redis_url is not a Redis URL"))?;
        let name = format!(
            "redis at {} (site {})",
            client.get_connection_info().addr(),
            redis.site
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("writeguard-redis")
            .enable_all()
            .build()?;
        let poll_within = (redis.stale_after / 2).clamp(Duration::from_millis(50), COMMIT_WITHIN);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(poll_within.max(Duration::from_millis(500))))
            .set_response_timeout(Some(COMMIT_WITHIN))
            // Fail fast and let the next call reconnect: the poll calls four times a second,
            // so a Redis that is back is used within a second.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250));
        let conn = {
            let _runtime = runtime.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), config)?
        };
        let keys = Keys::new(&redis.site);
        let changes = Arc::new(Notify::new());
        runtime.spawn(subscriber::run(
            client,
            keys.changes.clone(),
            COMMIT_WITHIN,
            changes.clone(),
        ));
        Ok(RedisStore {
            runtime: Some(runtime),
            conn,
            keys,
            name,
            poll_within,
            cache: FileStore::new(state),
            last: Mutex::new(None),
            replica: replica.to_owned(),
            changes,
            clock_offset: AtomicI64::new(UNKNOWN_OFFSET),
            commit_script: Script::new(include_str!("commit.lua")),
            read_script: Script::new(include_str!("read.lua")),
            announce_script: Script::new(include_str!("announce.lua")),
        })
    }

    /// Runs `call` on the Redis runtime and waits for it, at most `within`. Never panics,
    /// whatever thread it is called on (a blocking wait on an async worker would only be
    /// slow).
    fn run<T: Send + 'static>(
        &self,
        within: Duration,
        what: &str,
        call: impl Future<Output = RedisResult<T>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store");
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(within, call).await);
        });
        let reason = match rx.recv() {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(e))) => format!("{what}: {e}"),
            Ok(Err(_)) => format!(
                "{what}: no answer within {}",
                humantime::format_duration(within)
            ),
            Err(_) => format!("{what}: the Redis runtime stopped"),
        };
        Err(StoreError::Unreachable {
            store: self.name.clone(),
            reason,
        })
    }

    /// The stored version, and the document if newer than `version`.
    fn read(
        &self,
        version: u64,
        within: Duration,
    ) -> Result<(Option<u64>, Option<String>), StoreError> {
        let (script, mut conn, key) = (
            self.read_script.clone(),
            self.conn.clone(),
            self.keys.state.clone(),
        );
        let (sent, sent_ms) = (Instant::now(), unix_ms());
        let (stored, doc, server_ms): (Option<u64>, Option<String>, i64) =
            self.run(within, "reading the guard state", async move {
                script.key(key).arg(version).invoke_async(&mut conn).await
            })?;
        let took = sent.elapsed();
        if took < CLOCK_READ_WITHIN {
            let ours = sent_ms + (took.as_millis() / 2) as i64;
            self.clock_offset.store(server_ms - ours, Ordering::Relaxed);
        }
        Ok((stored, doc))
    }

    /// The latest moment, on the server's clock, a change sent now may still be stored.
    fn store_deadline(&self) -> Result<i64, StoreError> {
        if self.clock_offset.load(Ordering::Relaxed) == UNKNOWN_OFFSET {
            self.read(u64::MAX, self.poll_within)?;
        }
        let offset = match self.clock_offset.load(Ordering::Relaxed) {
            UNKNOWN_OFFSET => 0,
            offset => offset,
        };
        Ok(unix_ms() + offset + STORE_WITHIN.as_millis() as i64)
    }

    fn parse(&self, doc: &str) -> Result<GuardState, StoreError> {
        serde_json::from_str(doc).map_err(|source| StoreError::SharedCorrupt {
            key: self.keys.state.clone(),
            source,
        })
    }

    /// Keeps `state` as the last seen: in memory, and in the boot cache (best effort: a
    /// cache that cannot be written only matters at a start while Redis is down).
    fn remember(&self, state: &GuardState) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(state.clone());
        match self.cache.commit(state, &[]) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the boot cache (the state a replica starts from while Redis is down)")
            }
        }
    }

    fn last(&self) -> Option<GuardState> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `held` back into a Redis that lost it (`stored` is what Redis has, if
    /// anything): a compare-and-set like any commit, so of several replicas re-seeding at
    /// once the one holding the highest version wins.
    fn reseed(&self, held: &GuardState, stored: Option<u64>) -> Result<(), StoreError> {
        let had = stored.map_or("nothing".into(), |v| format!("version {v}"));
        tracing::warn!(
            held = held.version,
            store = %had,
            "the shared guard state is behind what this replica holds (Redis restarted empty or failed over?): writing it back"
        );
        let record = AuditRecord {
            when: time::OffsetDateTime::now_utc(),
            source: "store".into(),
            actor: format!("writeguard replica {}", self.replica),
            action: "reseed".into(),
            reason: format!(
                "Redis held {had}; written back with version {}",
                held.version
            ),
            engagement: String::new(),
            activity: None,
            engaged: !held.engagements.is_empty(),
        };
        self.cas(held, &[record], COMMIT_WITHIN).map(|_| ())
    }

    /// `commit.lua`.
    fn cas(
        &self,
        next: &GuardState,
        records: &[AuditRecord],
        within: Duration,
    ) -> Result<Commit, StoreError> {
        let doc = serde_json::to_string(next).expect("guard state always serializes");
        let records: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).expect("audit records always serialize"))
            .collect();
        let (script, mut conn, keys, version) = (
            self.commit_script.clone(),
            self.conn.clone(),
            self.keys.clone(),
            next.version,
        );
        let not_after = self.store_deadline()?;
        let (stored, _, current): (i64, String, String) =
            self.run(within, "storing a guard state change", async move {
                script
                    .key(keys.state)
                    .key(keys.audit)
                    .arg(version)
                    .arg(doc)
                    .arg(keys.changes)
                    .arg(AUDIT_KEPT)
                    .arg(not_after)
                    .arg(records)
                    .invoke_async(&mut conn)
                    .await
            })?;
        match stored {
            1 => {
                self.remember(next);
                return Ok(Commit::Done);
            }
            2 => {
                return Err(StoreError::Unreachable {
                    store: self.name.clone(),
                    reason:
                        "storing a guard state change: it reached Redis too late and was refused"
                            .into(),
                })
            }
            _ => {}
        }
        let current = self.parse(&current)?;
        self.remember(&current);
        Ok(Commit::Stale(current))
    }
}

impl Backend for RedisStore {
    /// What Redis holds, unless it is behind the boot cache (then Redis is re-seeded from
    /// it). Redis down: [`StoreError::Unreachable`], and the guard starts from
    /// [`Backend::cached`].
    fn load(&self) -> Result<Option<GuardState>, StoreError> {
        let (stored, doc) = self.read(0, COMMIT_WITHIN)?;
        let cached = self.cached().filter(|c| c.version > 0);
        if let Some(cached) = cached.filter(|c| stored.is_none_or(|v| v < c.version)) {
            self.reseed(&cached, stored)?;
            self.remember(&cached);
            return Ok(Some(cached));
        }
        let Some(doc) = doc else {
            return Ok(None);
        };
        let state = self.parse(&doc)?;
        self.remember(&state);
        Ok(Some(state))
    }

    fn commit(&self, next: &GuardState, records: &[AuditRecord]) -> Result<Commit, StoreError> {
        self.cas(next, records, COMMIT_WITHIN)
    }

    /// A newer stored state, if any; a stored state behind `version` (or none) is re-seeded
    /// with what this replica holds.
    fn newer_than(&self, version: u64) -> Result<Option<GuardState>, StoreError> {
        let (stored, doc) = self.read(version, self.poll_within)?;
        match (stored, doc) {
            (Some(v), Some(doc)) if v > version => {
                let state = self.parse(&doc)?;
                self.remember(&state);
                Ok(Some(state))
            }
            (Some(v), _) if v >= version => Ok(None),
            _ => {
                if let Some(held) = self.last().filter(|s| s.version == version && version > 0) {
                    self.reseed(&held, stored)?;
                }
                Ok(None)
            }
        }
    }

    fn history(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let (mut conn, key) = (self.conn.clone(), self.keys.audit.clone());
        let reply: StreamRangeReply =
            self.run(COMMIT_WITHIN, "reading the audit stream", async move {
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await
            })?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| {
                let raw: String = entry.get("record")?;
                serde_json::from_str(&raw)
                    .inspect_err(|e| tracing::warn!(id = %entry.id, error = %e, "skipping an audit record that cannot be read"))
                    .ok()
            })
            .collect())
    }

    /// Renames the state key to `<key>:corrupt:<unix seconds>`.
    fn set_aside(&self) -> Option<String> {
        let aside = format!(
            "{}:corrupt:{}",
            self.keys.state,
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        let (mut conn, key, to) = (self.conn.clone(), self.keys.state.clone(), aside.clone());
        self.run(
            COMMIT_WITHIN,
            "setting the corrupt state aside",
            async move {
                redis::cmd("RENAME")
                    .arg(key)
                    .arg(to)
                    .query_async::<()>(&mut conn)
                    .await
            },
        )
        .ok()
        .map(|()| aside)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn cached(&self) -> Option<GuardState> {
        self.cache.load().ok().flatten()
    }

    fn announce(&self, me: &Replica) -> Result<Vec<Replica>, StoreError> {
        let (script, mut conn, key) = (
            self.announce_script.clone(),
            self.conn.clone(),
            self.keys.replicas.clone(),
        );
        let (id, doc) = (
            me.id.clone(),
            serde_json::to_string(me).expect("replicas serialize"),
        );
        let live: Vec<String> =
            self.run(self.poll_within, "announcing this replica", async move {
                script
                    .key(key)
                    .arg(id)
                    .arg(doc)
                    .arg(ALIVE_FOR.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await
            })?;
        Ok(live
            .iter()
            .filter_map(|doc| serde_json::from_str(doc).ok())
            .collect())
    }

    fn changes(&self) -> Option<Arc<Notify>> {
        Some(self.changes.clone())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether Redis answers a PING within a few seconds (for `writeguard check`).
pub fn ping(cfg: &RedisConfig) -> Result<(), String> {
    let client = redis::Client::open(cfg.url.expose())
        .map_err(|_| "state.redis_url is not a Redis URL".to_owned())?;
    let name = client.get_connection_info().addr().to_string();
    let mut conn = client
        .get_connection_with_timeout(COMMIT_WITHIN)
        .map_err(|e| format!("cannot reach Redis at {name}: {e}"))?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map(drop)
        .map_err(|e| format!("Redis at {name} does not answer PING: {e}"))
}

/// Our wall clock, in milliseconds since the Unix epoch.
fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
