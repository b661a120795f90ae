//! Live counts of the proxy's guarded writes, for `/status` and `wait: quiesced`: how many are
//! held, and how many are on their way to the app or back. At the bottom of the floors so
//! that the upstream side can carry a write's [`InFlight`] until its last byte, both ways.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;

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

/// One guarded write in flight: counted from its head until every holder of this token (the
/// request body on its way up, the answer on its way down, a tunnel) is gone.
pub struct InFlight(Arc<Traffic>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight_writes.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
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

    /// Counts a write in flight. Call it BEFORE reading whether the guard is engaged: with
    /// [`Traffic::quiet`] after the engagement is published, the two sequentially consistent
    /// fences make sure that either this write sees the engagement, or `quiet` sees it.
    pub fn write_in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight_writes.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        InFlight(self.clone())
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub fn in_flight_writes(&self) -> usize {
        self.in_flight_writes.load(Ordering::Acquire)
    }

    /// No write in flight. Call it AFTER publishing an engagement (see
    /// [`Traffic::write_in_flight`]).
    pub fn quiet(&self) -> bool {
        fence(Ordering::SeqCst);
        self.in_flight_writes.load(Ordering::SeqCst) == 0
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

    #[test]
    fn a_write_counts_until_its_token_is_dropped() {
        let t = Arc::new(Traffic::default());
        let w = t.write_in_flight();
        assert!(!t.quiet());
        assert_eq!(t.in_flight_writes(), 1);
        drop(w);
        assert!(t.quiet());
    }
}
