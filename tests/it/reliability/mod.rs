//! Reliability under load, crashes and upgrades, reconciled against what the app received:
//!
//! - exactly-once writes while the guard flaps (admin API and signed webhooks alternating),
//!   with `hold = "0s"` and with a hold, including clients that leave while held;
//! - reads never fail because of the guard (same runs);
//! - `kill -9` while the state file is being written never corrupts it, and the last
//!   acknowledged change survives; a corrupt state file fails closed, loudly, without a
//!   crash loop;
//! - `run --upgrade` takes the listeners over from a running instance without failing a
//!   request, and the guard state carries over.
//!
//! Every request carries a unique id ([`ID_HEADER`](crate::common::ledger::ID_HEADER)); the
//! [`Ledger`](crate::common::ledger::Ledger) upstream writes down each arrival, so a test
//! compares what each client was told with what the app saw (`common::load`).

mod durability;
mod flapping;
mod upgrade;

use std::time::Duration;

use rand::Rng;

/// A random duration in `[lo, hi)` milliseconds.
fn random_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(lo..hi))
}
