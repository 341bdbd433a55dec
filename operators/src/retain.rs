//! Retention cut-offs as pure functions of "now" (from a [`crate::clock::Clock`]):
//! the retention sweep removes what lies before them. Kept here, apart from the
//! sweep's I/O, so that the calendar arithmetic is tested on every day of several
//! years (leap days, month ends, both DST days) without a lake.
//!
//! - Telemetry (`readings`) is kept per local calendar day of the tenant's time
//!   zone: on local date `D` with `days` of retention, partitions with
//!   `local_date < D - days` are removed; `D - days` itself is kept.
//! - Timestamped rows (access log, dead letters) and ended accounts are kept for
//!   `days` × 24 hours from their timestamp: rows at or after `now - days` stay.

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

/// The local calendar date of `now` in `tz`.
pub fn local_today(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// The oldest local date a telemetry retention of `days` keeps on `now`.
pub fn oldest_kept_local_date(now: DateTime<Utc>, tz: Tz, days: u32) -> NaiveDate {
    local_today(now, tz) - Days::new(u64::from(days))
}

/// The oldest instant a retention of `days` (24-hour days) keeps on `now`.
pub fn oldest_kept_instant(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(days))
}
