//! The stale-read store's families: answers stored, served stale and evicted, and what the
//! store holds now. Handles made once; the store adds to them as it goes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a stored answer left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Pushed out by newer answers: the budget (`stale.max_bytes`) was full.
    Size,
    /// Past the time it may be served.
    Expired,
}

pub struct StaleMetrics {
    stored: Counter,
    served: Counter,
    evicted: [Counter; 2],
    bytes: Gauge,
    answers: Gauge,
}

impl StaleMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let stored = Counter::default();
        registry.register(
            "stale_stored",
            "Answers stored for serving while the app fails",
            stored.clone(),
        );
        let served = Counter::default();
        registry.register(
            "stale_served",
            "Stored answers served instead of the app's",
            served.clone(),
        );
        let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let evicted = ["size", "expired"].map(|r| family.get_or_create_owned(&[("reason", r)]));
        registry.register(
            "stale_evicted",
            "Stored answers dropped, by why: the budget was full, or past their grace",
            family,
        );
        let bytes = Gauge::default();
        registry.register(
            "stale_bytes",
            "Bytes the stored answers weigh (bodies, heads and keys)",
            bytes.clone(),
        );
        let answers = Gauge::default();
        registry.register("stale_answers", "Answers stored", answers.clone());
        StaleMetrics {
            stored,
            served,
            evicted,
            bytes,
            answers,
        }
    }

    /// An answer of `weight` bytes stored (`answer`: a page, not a `Vary` index entry).
    pub fn stored(&self, weight: u64, answer: bool) {
        self.bytes.inc_by(i64::try_from(weight).unwrap_or(i64::MAX));
        if answer {
            self.stored.inc();
            self.answers.inc();
        }
    }

    /// An entry of `weight` bytes left the store; `why` when it was evicted, not replaced.
    pub fn removed(&self, weight: u64, answer: bool, why: Option<Eviction>) {
        self.bytes.dec_by(i64::try_from(weight).unwrap_or(i64::MAX));
        if answer {
            self.answers.dec();
            if let Some(why) = why {
                self.evicted[why as usize].inc();
            }
        }
    }

    pub fn served(&self) {
        self.served.inc();
    }
}
