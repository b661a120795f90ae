//! File-descriptor headroom: every held write keeps its connection's descriptor, so without
//! a bound enough held writes take them all and the listeners can accept nothing, reads
//! included (`accept: Too many open files`). New held writes get the 503 at once while the
//! descriptors in use come within a reserve of the limit, and until half a reserve more is
//! free again: a connection opening or closing at the margin does not flip it back and forth.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::OpenConnections;
use crate::upstream;

pub struct Headroom {
    connections: Arc<OpenConnections>,
    /// The soft `RLIMIT_NOFILE` in effect (`usize::MAX`: unknown or unlimited).
    limit: usize,
    /// Kept free for reads: a tenth of the limit, at least 16 and at most 64.
    reserve: usize,
    /// Descriptors that are not connections (listeners, runtimes, the log): measured at
    /// start and every second after ([`Headroom::calibrate`]).
    base: AtomicUsize,
    /// Within the reserve (and not yet half a reserve below it again).
    tight: AtomicBool,
}

impl Headroom {
    pub fn new(connections: Arc<OpenConnections>, limit: usize) -> Self {
        Headroom {
            connections,
            limit,
            reserve: reserve_for(limit),
            base: AtomicUsize::new(0),
            tight: AtomicBool::new(false),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Descriptors to keep free for reads.
    pub fn reserve(&self) -> usize {
        self.reserve
    }

    /// Whether the descriptors in use are within the reserve of the limit (or were, and
    /// half a reserve has not come free since): a few relaxed loads, for each write about
    /// to be held. Says so in the log when it changes.
    pub fn tight(&self) -> bool {
        let used = self.base.load(Ordering::Relaxed)
            + self.connections.open()
            + upstream::open_connections();
        let was = self.tight.load(Ordering::Relaxed);
        let margin = if was {
            self.reserve + self.reserve / 2
        } else {
            self.reserve
        };
        let tight = used.saturating_add(margin) >= self.limit;
        if tight != was && self.tight.swap(tight, Ordering::Relaxed) == was {
            if tight {
                tracing::warn!(
                    used,
                    limit = self.limit,
                    "file descriptors near the limit: new guarded writes get the 503 at once instead of being held"
                );
            } else {
                tracing::info!(
                    used,
                    limit = self.limit,
                    "file descriptors available again: guarded writes are held again"
                );
            }
        }
        tight
    }

    /// Measures the descriptors that are not connections: all open ones (`/proc/self/fd`)
    /// less the connections counted. Without procfs the base stays as it was.
    pub fn calibrate(&self) {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        // Less one: the directory being read.
        let open = dir.count().saturating_sub(1);
        let connections = self.connections.open() + upstream::open_connections();
        self.base
            .store(open.saturating_sub(connections), Ordering::Relaxed);
    }
}

fn reserve_for(limit: usize) -> usize {
    (limit / 10).clamp(16, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_tenth_within_bounds() {
        assert_eq!(reserve_for(64), 16);
        assert_eq!(reserve_for(400), 40);
        assert_eq!(reserve_for(1_048_576), 64);
        assert_eq!(reserve_for(usize::MAX), 64);
    }

    #[test]
    fn tight_near_the_limit_and_until_half_a_reserve_is_free_again() {
        let roomy = Headroom::new(Arc::default(), usize::MAX);
        roomy.calibrate();
        assert!(!roomy.tight());
        let small = Headroom::new(Arc::default(), 16);
        assert!(small.tight());
        // 100 descriptors, a reserve of 16: tight from 84 in use, loose again below 76.
        let h = Headroom::new(Arc::default(), 100);
        let upstream = upstream::open_connections();
        let at = |used: usize| h.base.store(used - upstream, Ordering::Relaxed);
        at(83);
        assert!(!h.tight());
        at(84);
        assert!(h.tight());
        at(76);
        assert!(h.tight());
        at(75);
        assert!(!h.tight());
        at(83);
        assert!(!h.tight());
    }
}
