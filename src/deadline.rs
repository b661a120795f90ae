//! Deadlines: a moment plus a configured duration. `Instant + Duration` panics on overflow,
//! and a panic in a request handler fails open (the guard never engages, the write is never
//! refused), so every deadline the running code computes goes through here and saturates
//! instead. `check` bounds every configured duration far below overflow too; this is the
//! second line. Pure: no clock is read here.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// A deadline that never comes (tokio's own "far future" is about as far).
const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `now + d`, or, when that does not fit in an `Instant`, a deadline that never comes.
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        // Unreachable on a real clock (an Instant is ~292 years of nanoseconds); "now" keeps
        // it a deadline rather than a panic.
        .unwrap_or(now)
}

/// [`after`] for tokio's clock.
pub fn after_tokio(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(after(now.into_std(), d))
}

/// When an engagement made at `now` for `d` ends: the last representable moment (year 9999)
/// when the sum would not fit, so it stays engaged rather than ending at once.
pub fn expiry(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    now.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) >= now + FAR);
        let tnow = tokio::time::Instant::now();
        assert!(after_tokio(tnow, Duration::MAX) > tnow);

        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            expiry(t, Duration::from_secs(60)),
            t + time::Duration::seconds(60)
        );
        let far = expiry(t, Duration::MAX);
        assert!(far > t && far.year() == 9999, "{far}");
        let near_2_63 = Duration::from_secs(i64::MAX as u64);
        assert_eq!(expiry(t, near_2_63), far);
    }
}
