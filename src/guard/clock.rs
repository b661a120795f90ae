//! The guard's clock: wall-clock time as it was when the process started, carried forward by
//! the monotonic clock. Engagements are stored with wall-clock times (they must mean
//! something to another process and across restarts), but every decision in this process
//! is taken on this clock, so a step of the system clock (NTP, an operator's `date -s`)
//! neither ends an engagement early nor makes one last longer.

use std::time::Instant;

use time::OffsetDateTime;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: OffsetDateTime,
    mono: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            wall: OffsetDateTime::now_utc(),
            mono: Instant::now(),
        }
    }

    /// Now, as a wall-clock time that only moves forward with the monotonic clock.
    pub fn now(&self) -> OffsetDateTime {
        self.at(Instant::now())
    }

    /// The wall-clock time this clock reads at `instant`.
    pub fn at(&self, instant: Instant) -> OffsetDateTime {
        let elapsed = instant.saturating_duration_since(self.mono);
        self.wall
            .checked_add(time::Duration::try_from(elapsed).unwrap_or(time::Duration::MAX))
            .unwrap_or(self.wall)
    }

    /// The monotonic instant at which this clock reads `t` (saturating at the ends of
    /// `Instant`'s range).
    pub fn instant_of(&self, t: OffsetDateTime) -> Instant {
        let offset = t - self.wall;
        let magnitude = offset.unsigned_abs();
        if offset.is_negative() {
            self.mono.checked_sub(magnitude).unwrap_or(self.mono)
        } else {
            crate::deadline::after(self.mono, magnitude)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_times_agree_and_never_panic() {
        let clock = Clock::start();
        let t = clock.now() + time::Duration::seconds(90);
        let i = clock.instant_of(t);
        let left = i.saturating_duration_since(Instant::now()).as_secs();
        assert!((88..=90).contains(&left), "{left}");
        assert!(clock.instant_of(clock.now() - time::Duration::hours(1)) <= Instant::now());
        let _ = clock.instant_of(OffsetDateTime::new_utc(
            time::Date::MAX,
            time::Time::MIDNIGHT,
        ));
        let _ = clock.instant_of(OffsetDateTime::UNIX_EPOCH);
    }
}
