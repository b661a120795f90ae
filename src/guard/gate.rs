//! Where held writes wait: one FIFO queue per guarded episode. When the guard is released
//! the episode's queue is opened `release_concurrency` at a time, in arrival order, and a
//! fresh, closed queue takes its place for the next deploy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

pub struct Gate {
    episode: ArcSwap<Semaphore>,
    /// `guard.release_concurrency`; a reload changes it for the next release.
    concurrency: AtomicUsize,
}

impl Gate {
    pub fn new(concurrency: usize) -> Self {
        Gate {
            episode: ArcSwap::from_pointee(Semaphore::new(0)),
            concurrency: AtomicUsize::new(concurrency),
        }
    }

    /// The queue of the current episode (tokio's semaphore serves waiters in order).
    pub fn current(&self) -> Arc<Semaphore> {
        self.episode.load_full()
    }

    /// Releases the current episode's waiters and starts a new, closed episode.
    pub(super) fn open(&self) {
        let released = self.episode.swap(Arc::new(Semaphore::new(0)));
        released.add_permits(self.concurrency.load(Ordering::Acquire));
    }

    pub(super) fn set_concurrency(&self, concurrency: usize) {
        self.concurrency.store(concurrency, Ordering::Release);
    }
}

/// Live counts of the proxy's writes, for `/status` and `wait: quiesced`.
#[derive(Default)]
pub struct Traffic {
    held: AtomicUsize,
    in_flight_writes: AtomicUsize,
}

/// Decrements its counter when dropped.
pub struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Traffic {
    /// Counts one more held request, unless `max` are held already.
    pub fn count_held(&self, max: usize) -> Option<Counted<'_>> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted(&self.held))
    }

    pub fn write_in_flight(&self) -> Counted<'_> {
        self.in_flight_writes.fetch_add(1, Ordering::AcqRel);
        Counted(&self.in_flight_writes)
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub fn in_flight_writes(&self) -> usize {
        self.in_flight_writes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_count_is_bounded_and_released_on_drop() {
        let t = Traffic::default();
        let a = t.count_held(2).expect("room");
        let _b = t.count_held(2).expect("room");
        assert!(t.count_held(2).is_none());
        drop(a);
        assert_eq!(t.held(), 1);
        assert!(t.count_held(2).is_some());
    }

    #[tokio::test]
    async fn opening_releases_waiters_in_order_and_starts_a_closed_episode() {
        let gate = Gate::new(1);
        let episode = gate.current();
        assert_eq!(episode.available_permits(), 0);
        gate.open();
        assert_eq!(episode.available_permits(), 1);
        assert_eq!(gate.current().available_permits(), 0);
    }
}
