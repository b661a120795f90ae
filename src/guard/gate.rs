//! Where held writes wait: one FIFO queue per guarded episode. When the guard is released
//! the episode's queue is opened `release_concurrency` at a time, in arrival order, and a
//! fresh, closed queue takes its place for the next deploy. Until the released queue has
//! drained, new guarded writes join its tail rather than overtake the held ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The queue of one guarded episode.
pub struct Episode {
    /// No permit until the release, then `release_concurrency` (tokio's semaphore serves
    /// waiters in order).
    queue: Arc<Semaphore>,
    /// Writes queued here and not admitted yet.
    waiting: AtomicUsize,
}

impl Episode {
    fn closed() -> Arc<Episode> {
        Arc::new(Episode {
            queue: Arc::new(Semaphore::new(0)),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Takes a place at the tail of this queue.
    pub fn enter(self: &Arc<Self>) -> Place {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Place {
            episode: self.clone(),
            permit: None,
        }
    }
}

/// A place in an episode's queue, then, once admitted, a turn to go to the app: holds one of
/// the `release_concurrency` permits until dropped.
pub struct Place {
    episode: Arc<Episode>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Place {
    /// The queue to wait on; hand the permit to [`Place::admit`].
    pub fn queue(&self) -> Arc<Semaphore> {
        self.episode.queue.clone()
    }

    /// Our turn came: no longer waiting.
    pub fn admit(&mut self, permit: OwnedSemaphorePermit) {
        if self.permit.replace(permit).is_none() {
            self.episode.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.permit.take().is_none() {
            self.episode.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

pub struct Gate {
    episode: ArcSwap<Episode>,
    /// The episode released last: new writes join its tail while some are still waiting.
    released: ArcSwap<Episode>,
    /// `guard.release_concurrency`; a reload changes it for the next release.
    concurrency: AtomicUsize,
}

impl Gate {
    pub fn new(concurrency: usize) -> Self {
        Gate {
            episode: ArcSwap::new(Episode::closed()),
            released: ArcSwap::new(Episode::closed()),
            concurrency: AtomicUsize::new(concurrency),
        }
    }

    /// The queue of the current episode.
    pub fn current(&self) -> Arc<Episode> {
        self.episode.load_full()
    }

    /// Whether writes released last are still waiting for their turn (one atomic load: for
    /// every guarded write while the guard is not engaged).
    pub fn draining(&self) -> bool {
        self.released.load().waiting.load(Ordering::Acquire) > 0
    }

    /// A place at the tail of the released queue, if writes are still waiting in it: they
    /// were there first. Once nobody waits, nobody joins again (the queue has drained).
    pub fn join_released(&self) -> Option<Place> {
        let episode = self.released.load_full();
        episode
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then_some(n + 1)
            })
            .ok()?;
        Some(Place {
            episode,
            permit: None,
        })
    }

    /// Called before the release is published: from then on, new writes that see the guard
    /// released find the current episode's queue (still closed) and line up behind it.
    pub(super) fn releasing(&self) {
        self.released.store(self.episode.load_full());
    }

    /// Releases the current episode's waiters and starts a new, closed episode.
    pub(super) fn open(&self) {
        let released = self.episode.swap(Episode::closed());
        released
            .queue
            .add_permits(self.concurrency.load(Ordering::Acquire));
    }

    pub(super) fn set_concurrency(&self, concurrency: usize) {
        self.concurrency.store(concurrency, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_releases_waiters_in_order_and_starts_a_closed_episode() {
        let gate = Gate::new(1);
        let episode = gate.current();
        assert_eq!(episode.queue.available_permits(), 0);
        gate.releasing();
        gate.open();
        assert_eq!(episode.queue.available_permits(), 1);
        assert_eq!(gate.current().queue.available_permits(), 0);
    }

    #[tokio::test]
    async fn new_writes_join_the_released_queue_only_while_someone_waits_in_it() {
        let gate = Gate::new(1);
        let mut held = gate.current().enter();
        assert!(!gate.draining() && gate.join_released().is_none());
        gate.releasing();
        gate.open();
        assert!(gate.draining());
        let mut joined = gate.join_released().expect("a held write still waits");
        let permit = held.queue().acquire_owned().await.unwrap();
        held.admit(permit);
        // The joiner waits now, behind the held write's permit.
        assert!(gate.draining());
        assert!(joined.queue().try_acquire_owned().is_err());
        drop(held);
        let permit = joined.queue().try_acquire_owned().expect("our turn");
        joined.admit(permit);
        assert!(!gate.draining() && gate.join_released().is_none());
    }
}
