//! How long a running deploy still needs, from how long the past ones of its kind took, and
//! the Retry-After told for it. Pure: durations in, durations out.
//!
//! A deploy that has run for `elapsed` is expected to take as long as the median of the past
//! deploys that took longer than `elapsed` (the ones it may still be like), so what is left is
//! that median minus `elapsed`. With fewer than [`MIN_SAMPLES`] past deploys, or once it has
//! outrun every one of them, there is no estimate.

use std::time::Duration;

/// Fewer past deploys than this: no estimate.
pub const MIN_SAMPLES: usize = 3;

/// How far the Retry-After told to each client strays from the estimate, either way: the
/// clients refused together do not all come back at the same second.
pub const JITTER: f64 = 0.15;

/// The durations of past deploys of one kind, sorted, at least [`MIN_SAMPLES`] of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past(Box<[Duration]>);

impl Past {
    /// `None` with fewer than [`MIN_SAMPLES`] durations.
    pub fn new(durations: impl IntoIterator<Item = Duration>) -> Option<Past> {
        let mut sorted: Vec<Duration> = durations.into_iter().collect();
        if sorted.len() < MIN_SAMPLES {
            return None;
        }
        sorted.sort_unstable();
        Some(Past(sorted.into_boxed_slice()))
    }

    /// How long a deploy that has run for `elapsed` still needs: the median of what is left
    /// of the past durations longer than `elapsed`; `None` once it has outrun them all.
    /// Allocation-free, logarithmic in the number of durations.
    pub fn remaining(&self, elapsed: Duration) -> Option<Duration> {
        let longer = &self.0[self.0.partition_point(|d| *d <= elapsed)..];
        median(longer).map(|m| m.saturating_sub(elapsed))
    }
}

/// The median of sorted durations (the mean of the middle two for an even count).
fn median(sorted: &[Duration]) -> Option<Duration> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(sorted[n / 2 - 1] / 2 + sorted[n / 2] / 2),
    }
}

/// The Retry-After, in seconds, for an estimated `left`: moved by `jitter` (from -1 to 1)
/// times [`JITTER`], then kept within 1 s and `cap` (what is left of the engagement before it
/// expires; 1 s when that is less).
pub fn retry_after(left: Duration, cap: Duration, jitter: f64) -> u64 {
    let jitter = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let secs = (left.as_secs_f64() * (1.0 + JITTER * jitter)).round();
    // `as` saturates (and a NaN, impossible here, would be 0): no panic on any input.
    (secs as u64).clamp(1, cap.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn past(secs: &[u64]) -> Past {
        Past::new(secs.iter().copied().map(s)).expect("enough samples")
    }

    #[test]
    fn the_time_already_elapsed_is_subtracted() {
        let p = past(&[100, 60, 80]);
        assert_eq!(p.remaining(s(0)), Some(s(80)));
        assert_eq!(p.remaining(s(30)), Some(s(50)));
        // Past 60 s, only the 80 and 100 s deploys are still alike: their median is 90 s.
        assert_eq!(p.remaining(s(70)), Some(s(20)));
        assert_eq!(p.remaining(s(85)), Some(s(15)));
        assert_eq!(
            p.remaining(Duration::from_millis(99_500)),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn a_deploy_that_outran_every_past_one_has_no_estimate() {
        let p = past(&[10, 20, 30]);
        assert_eq!(p.remaining(s(30)), None);
        assert_eq!(p.remaining(s(3600)), None);
    }

    #[test]
    fn fewer_than_three_samples_give_no_estimate() {
        assert_eq!(Past::new([]), None);
        assert_eq!(Past::new([s(1), s(2)]), None);
        assert!(Past::new([s(1), s(2), s(3)]).is_some());
    }

    #[test]
    fn the_median_of_an_even_count_is_between_the_middle_two() {
        let p = past(&[10, 20, 30, 40]);
        assert_eq!(p.remaining(s(0)), Some(s(25)));
        assert_eq!(p.remaining(s(15)), Some(s(15)));
    }

    #[test]
    fn a_deploy_that_outran_the_short_ones_is_one_of_the_long_ones() {
        let p = past(&[2, 2, 2, 10, 10]);
        assert_eq!(p.remaining(s(1)), Some(s(1)));
        assert_eq!(p.remaining(s(3)), Some(s(7)));
    }

    #[test]
    fn retry_after_is_clamped_to_one_second_and_the_expiry() {
        assert_eq!(retry_after(Duration::ZERO, s(60), 0.0), 1);
        assert_eq!(retry_after(Duration::from_millis(200), s(60), -1.0), 1);
        assert_eq!(retry_after(s(300), s(60), 0.0), 60);
        assert_eq!(retry_after(s(300), s(60), 1.0), 60);
        assert_eq!(retry_after(s(30), Duration::from_millis(300), 0.0), 1);
        assert_eq!(retry_after(s(30), s(60), 0.0), 30);
        assert_eq!(retry_after(Duration::MAX, Duration::MAX, 1.0), u64::MAX);
    }

    #[test]
    fn jitter_stays_within_fifteen_percent() {
        let left = s(100);
        assert_eq!(retry_after(left, s(1000), -1.0), 85);
        assert_eq!(retry_after(left, s(1000), 1.0), 115);
        // Out-of-range or broken jitter values are bounded too.
        assert_eq!(retry_after(left, s(1000), 7.0), 115);
        assert_eq!(retry_after(left, s(1000), -7.0), 85);
        assert_eq!(retry_after(left, s(1000), f64::NAN), 100);
        for i in 0..=200 {
            let jitter = f64::from(i) / 100.0 - 1.0;
            let secs = retry_after(left, s(1000), jitter);
            assert!((85..=115).contains(&secs), "{jitter}: {secs}");
        }
    }
}
