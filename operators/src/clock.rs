//! The clock: everything in meterline that asks "what time is it?" (open key
//! epochs, retention cut-offs, erasure deadlines, the future and too-old checks of
//! `validate`, audit timestamps) asks a [`Clock`] it was given, never the system
//! directly. Tests and rehearsals move "now" by giving a shifted clock; production
//! runs the system clock.
//!
//! A shifted clock keeps ticking: it is the system time plus a fixed offset, so
//! timers, sweeps and deadlines inside a process still advance while "now" sits on
//! another date. That is what lets a whole pipeline run "on 1 December at 00:30".
//!
//! Wall-clock timestamps that other systems compare with their own (Delta commit
//! times, object modification times, Prometheus gauges such as the last commit
//! time) are not "now" in this sense and stay on the system clock. Wall times that
//! arrive from elsewhere and are compared with "now" (a Kafka record's create time
//! as an erasure's request time) are moved onto this clock with [`Clock::from_wall`].

use chrono::{DateTime, Duration, Utc};

/// Reads "now": the system time, or the system time moved by a fixed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    shift: Duration,
}

impl Clock {
    /// The system clock.
    pub const fn system() -> Self {
        Self {
            shift: Duration::zero(),
        }
    }

    /// A clock that reads `at` now and then advances with the system clock.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self {
            shift: at - Utc::now(),
        }
    }

    /// A clock `by` ahead of the system clock (behind when negative).
    pub fn shifted(by: Duration) -> Self {
        Self { shift: by }
    }

    /// True when this clock is not the system clock.
    pub fn is_shifted(&self) -> bool {
        !self.shift.is_zero()
    }

    /// How far this clock is from the system clock.
    pub fn shift(&self) -> Duration {
        self.shift
    }

    /// Now, in UTC.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.shift
    }

    /// A system (wall-clock) time as this clock reads it.
    pub fn from_wall(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        wall + self.shift
    }

    /// Now, in microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        self.now().timestamp_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_started_at_an_instant_reads_that_instant_and_keeps_ticking() {
        let at = DateTime::parse_from_rfc3339("2028-02-29T23:30:00+01:00")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::starting_at(at);
        let first = clock.now();
        // The system clock may tick between the two reads, never backwards.
        assert!(first >= at && first - at < Duration::seconds(5), "{first}");
        assert!(clock.now() >= first);
        assert!(clock.is_shifted());
        assert!(!Clock::system().is_shifted());
    }
}
