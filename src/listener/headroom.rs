//! File-descriptor headroom: every held write keeps its connection's descriptor, so without
//! a bound enough held writes take them all and the listeners can accept nothing, reads
//! included (`accept: Too many open files`). New held writes get the 503 at once while the
//! descriptors in use come within a reserve of the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
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
}

impl Headroom {
    pub fn new(connections: Arc<OpenConnections>, limit: usize) -> Self {
        Headroom {
            connections,
            limit,
            reserve: reserve_for(limit),
            base: AtomicUsize::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Descriptors to keep free for reads.
    pub fn reserve(&self) -> usize {
        self.reserve
    }

    /// Whether the descriptors in use are within the reserve of the limit: three relaxed
    /// loads, for each write about to be held.
    pub fn tight(&self) -> bool {
        let used = self.base.load(Ordering::Relaxed)
            + self.connections.open()
            + upstream::open_connections();
        used.saturating_add(self.reserve) >= self.limit
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
    fn tight_near_the_limit_only() {
        let roomy = Headroom::new(Arc::default(), usize::MAX);
        roomy.calibrate();
        assert!(!roomy.tight());
        let small = Headroom::new(Arc::default(), 16);
        assert!(small.tight());
    }
}
