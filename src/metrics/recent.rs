//! The last 15 minutes of traffic, kept in memory for the dashboard's chart
//! (`GET /metrics/recent`): a ring of one sample a second, each the requests answered since
//! the previous one by outcome (the growth of `writeguard_requests_total`), the writes held
//! and whether writes were guarded when it was taken. The upkeep's once-a-second loop takes
//! the samples from the counters [`super::Metrics`] keeps anyway: the request path does no
//! more work for it.

use std::collections::VecDeque;

use serde::Serialize;

use super::Outcome;

/// 15 minutes, one sample a second.
pub const CAPACITY: usize = 900;

/// One reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When it was taken, in Unix seconds.
    pub t: i64,
    /// Requests answered since the previous sample, by outcome, in [`Outcome::PROXY`] order.
    pub requests: [u64; Outcome::PROXY.len()],
    /// Writes held when it was taken.
    pub held: usize,
    /// Whether writes were guarded when it was taken.
    pub guarded: bool,
}

/// The ring: the newest [`CAPACITY`] samples, oldest first.
#[derive(Debug)]
pub struct Recent {
    samples: VecDeque<Sample>,
    capacity: usize,
    /// The counters' totals at the previous sample.
    totals: [u64; Outcome::PROXY.len()],
}

/// What `GET /metrics/recent` answers.
#[derive(Debug, Serialize)]
pub struct Recently {
    pub interval_seconds: u64,
    /// The order of each sample's `requests`.
    pub outcomes: [&'static str; Outcome::PROXY.len()],
    pub samples: Vec<Sample>,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Recent {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            totals: [0; Outcome::PROXY.len()],
        }
    }

    /// Takes a sample from the counters' `totals` now; the oldest sample goes when full.
    pub fn record(
        &mut self,
        t: i64,
        totals: [u64; Outcome::PROXY.len()],
        held: usize,
        guarded: bool,
    ) {
        let requests = std::array::from_fn(|i| totals[i].saturating_sub(self.totals[i]));
        self.totals = totals;
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            t,
            requests,
            held,
            guarded,
        });
    }

    /// The samples, oldest first.
    pub fn view(&self) -> Recently {
        Recently {
            interval_seconds: 1,
            outcomes: Outcome::PROXY.map(Outcome::as_str),
            samples: self.samples.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(forwarded: u64, refused: u64) -> [u64; 7] {
        [forwarded, refused, 0, 0, 0, 0, 0]
    }

    #[test]
    fn samples_are_the_growth_of_the_counters() {
        let mut r = Recent::new(CAPACITY);
        r.record(100, totals(3, 0), 0, false);
        r.record(101, totals(3, 0), 0, false);
        r.record(102, totals(10, 2), 1, true);
        let v = r.view();
        assert_eq!(v.outcomes[0], "forwarded");
        assert_eq!(v.outcomes[6], "upstream_error");
        let got: Vec<_> = v
            .samples
            .iter()
            .map(|s| (s.t, s.requests[0], s.requests[1], s.held, s.guarded))
            .collect();
        assert_eq!(
            got,
            [
                (100, 3, 0, 0, false),
                (101, 0, 0, 0, false),
                (102, 7, 2, 1, true)
            ]
        );
    }

    #[test]
    fn the_oldest_sample_goes_once_full() {
        let mut r = Recent::new(3);
        for t in 0..5 {
            r.record(t, totals(t as u64, 0), 0, false);
        }
        let ts: Vec<_> = r.view().samples.iter().map(|s| s.t).collect();
        assert_eq!(ts, [2, 3, 4]);
        let full = {
            let mut r = Recent::new(CAPACITY);
            for t in 0..2000 {
                r.record(t, totals(0, 0), 0, false);
            }
            r.view().samples
        };
        assert_eq!(full.len(), CAPACITY);
        assert_eq!(full[0].t, 2000 - CAPACITY as i64);
    }

    #[test]
    fn a_counter_that_went_back_counts_zero() {
        let mut r = Recent::new(2);
        r.record(0, totals(5, 0), 0, false);
        r.record(1, totals(2, 0), 0, false);
        r.record(2, totals(4, 0), 0, false);
        let got: Vec<_> = r.view().samples.iter().map(|s| s.requests[0]).collect();
        assert_eq!(got, [0, 2]);
    }

    #[test]
    fn it_serializes_as_the_route_documents() {
        let mut r = Recent::new(2);
        r.record(7, totals(1, 2), 3, true);
        let json = serde_json::to_value(r.view()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "interval_seconds": 1,
                "outcomes": ["forwarded", "refused", "held_forwarded", "held_refused",
                             "public", "invalid", "upstream_error"],
                "samples": [{"t": 7, "requests": [1, 2, 0, 0, 0, 0, 0], "held": 3, "guarded": true}],
            })
        );
    }
}
