//! The bounded store: a moka cache weighed in bytes. When `stale.max_bytes` is full, the
//! least used answers go first, and a new one asked for less often than those it would push
//! out is turned away (TinyLFU). Each answer expires once past the time it may be served.
//! What goes in and out is counted in the metrics as it happens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use super::entry::Slot;
use super::key::Key;
use crate::metrics::{Eviction, Metrics};

/// Keys are hashed on every read that passes: foldhash rather than the standard SipHash, for
/// a fraction of the cost. Seeded per process, so colliding URLs cannot be worked out from
/// outside.
type Hasher = foldhash::quality::RandomState;

pub(super) struct Store {
    cache: Cache<Key, Slot, Hasher>,
    metrics: Arc<Metrics>,
}

/// Each slot lives as long as it may be served, from when it is (re)stored.
struct Lifetime;

impl Expiry<Key, Slot> for Lifetime {
    fn expire_after_create(&self, _: &Key, slot: &Slot, _: Instant) -> Option<Duration> {
        slot.lifetime()
    }

    fn expire_after_update(
        &self,
        _: &Key,
        slot: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        slot.lifetime()
    }
}

impl Store {
    pub(super) fn new(max_bytes: u64, metrics: Arc<Metrics>) -> Store {
        let counted = metrics.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Key, slot: &Slot| u32::try_from(slot.weight(key)).unwrap_or(u32::MAX))
            .expire_after(Lifetime)
            .eviction_listener(move |key: Arc<Key>, slot: Slot, cause| {
                let why = match cause {
                    RemovalCause::Size => Some(Eviction::Size),
                    RemovalCause::Expired => Some(Eviction::Expired),
                    RemovalCause::Replaced | RemovalCause::Explicit => None,
                };
                let answer = matches!(slot, Slot::Answer(_));
                counted.stale.removed(slot.weight(&key), answer, why);
            })
            .build_with_hasher(Hasher::default());
        Store { cache, metrics }
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<Slot> {
        self.cache.get(key)
    }

    pub(super) fn insert(&self, key: Key, slot: Slot) {
        let weight = slot.weight(&key);
        let answer = matches!(slot, Slot::Answer(_));
        self.metrics.stale.stored(weight, answer);
        self.cache.insert(key, slot);
    }

    /// Answers and bytes held, after the pending evictions are done.
    pub(super) fn held(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        let answers = self
            .cache
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Answer(_)))
            .count() as u64;
        (answers, self.cache.weighted_size())
    }
}
