//! Key epochs and retention cut-offs on every day of three years (2026-2028: a leap
//! day, every month end, both DST days of each year), at 00:30 and 23:30 Oslo time.
//!
//! The oracle is written from the calendar rules, not from meterline's code nor
//! chrono's: days are counted by stepping from 1970-01-01 (a Thursday), leap years by
//! the Gregorian rule, and Oslo's offset by the EU rule (summer time from 01:00 UTC
//! on the last Sunday of March to 01:00 UTC on the last Sunday of October).

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

use chrono::{DateTime, NaiveDate, Utc};
use meterline_operators::epoch::{Epoch, Rotation};
use meterline_operators::retain::{local_today, oldest_kept_instant, oldest_kept_local_date};

const OSLO: chrono_tz::Tz = chrono_tz::Europe::Oslo;
const GRACES: [u32; 7] = [0, 1, 28, 30, 40, 60, 400];
const RETENTIONS: [u32; 5] = [1, 30, 90, 365, 1095];

fn leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_len(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if leap(y) => 29,
        _ => 28,
    }
}

/// A date of the oracle: (year, month, day) and its day number since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Day {
    y: i32,
    m: u32,
    d: u32,
    n: i64,
}

impl Day {
    fn next(self) -> Day {
        let (y, m, d) = if self.d < month_len(self.y, self.m) {
            (self.y, self.m, self.d + 1)
        } else if self.m < 12 {
            (self.y, self.m + 1, 1)
        } else {
            (self.y + 1, 1, 1)
        };
        Day {
            y,
            m,
            d,
            n: self.n + 1,
        }
    }
    /// 0 = Sunday; 1970-01-01 was a Thursday.
    fn weekday(self) -> i64 {
        (self.n + 4).rem_euclid(7)
    }
    fn naive(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.y, self.m, self.d).unwrap()
    }
}

/// Every day from 1970-01-01 up to the end of 2029.
fn all_days() -> Vec<Day> {
    let mut out = vec![Day {
        y: 1970,
        m: 1,
        d: 1,
        n: 0,
    }];
    while out.last().unwrap().y < 2030 {
        let next = out.last().unwrap().next();
        out.push(next);
    }
    out
}

fn find(days: &[Day], y: i32, m: u32, d: u32) -> Day {
    // Days are in order: a binary search by (year, month, day).
    let i = days
        .binary_search_by(|x| (x.y, x.m, x.d).cmp(&(y, m, d)))
        .unwrap();
    days[i]
}

fn last_sunday(days: &[Day], y: i32, m: u32) -> Day {
    (1..=month_len(y, m))
        .rev()
        .map(|d| find(days, y, m, d))
        .find(|x| x.weekday() == 0)
        .unwrap()
}

/// Oslo's UTC offset in hours at local `hour`:30 on `day` (hours 0 and 23 only:
/// never inside a change, which happens at 02:00/03:00 local).
fn oslo_offset(days: &[Day], day: Day, hour: u32) -> i64 {
    let start = last_sunday(days, day.y, 3);
    let end = last_sunday(days, day.y, 10);
    let summer = (day.n > start.n && day.n < end.n)
        || (day.n == start.n && hour >= 3)
        || (day.n == end.n && hour < 2);
    if summer {
        2
    } else {
        1
    }
}

/// Month index (months since year 0) of a date.
fn month_index(y: i32, m: u32) -> i64 {
    i64::from(y) * 12 + i64::from(m) - 1
}

fn first_of_month_index(days: &[Day], idx: i64) -> Day {
    let (y, m) = (idx.div_euclid(12) as i32, (idx.rem_euclid(12) + 1) as u32);
    find(days, y, m, 1)
}

#[test]
fn epochs_and_retention_cut_offs_agree_with_the_calendar_on_every_day_of_three_years() {
    let days = all_days();
    let first = days
        .iter()
        .position(|d| (d.y, d.m, d.d) == (2026, 1, 1))
        .unwrap();
    let last = days
        .iter()
        .position(|d| (d.y, d.m, d.d) == (2028, 12, 31))
        .unwrap();
    let mut checked = 0u64;
    let mut dst_days = 0;
    for today in &days[first..=last] {
        for hour in [0u32, 23] {
            let offset = oslo_offset(&days, *today, hour);
            let secs = today.n * 86_400 + i64::from(hour) * 3600 + 30 * 60 - offset * 3600;
            let now: DateTime<Utc> = DateTime::from_timestamp(secs, 0).unwrap();
            assert_eq!(local_today(now, OSLO), today.naive(), "{now}");

            // Monthly epochs: open are the months up to next month whose end plus the
            // grace lies after today.
            for grace in GRACES {
                let next = month_index(today.y, today.m) + 1;
                let mut expected = Vec::new();
                for idx in next - 40..=next {
                    let end = first_of_month_index(&days, idx + 1);
                    if end.n + i64::from(grace) > today.n {
                        let (y, m) = (idx.div_euclid(12) as i32, (idx.rem_euclid(12) + 1) as u32);
                        expected.push(Epoch::Month(y, m));
                    }
                }
                let open = Epoch::open(Rotation::Monthly, local_today(now, OSLO), grace);
                assert_eq!(open, expected, "{now} grace {grace}");
                for idx in next - 40..=next {
                    let end = first_of_month_index(&days, idx + 1);
                    let (y, m) = (idx.div_euclid(12) as i32, (idx.rem_euclid(12) + 1) as u32);
                    assert_eq!(
                        Epoch::Month(y, m).closed(today.naive(), grace),
                        end.n + i64::from(grace) <= today.n,
                        "{y}-{m} on {now} grace {grace}"
                    );
                }
                // Yearly: this year and the next, and earlier years within the grace.
                let mut years = Vec::new();
                for y in today.y - 3..=today.y + 1 {
                    if find(&days, y + 1, 1, 1).n + i64::from(grace) > today.n {
                        years.push(Epoch::Year(y));
                    }
                }
                let open = Epoch::open(Rotation::Yearly, today.naive(), grace);
                assert_eq!(open, years, "{now} grace {grace}");
                checked += 1;
            }

            for keep in RETENTIONS {
                let oldest = days[(today.n - i64::from(keep)) as usize];
                assert_eq!(
                    oldest_kept_local_date(now, OSLO, keep),
                    oldest.naive(),
                    "{now} keep {keep}"
                );
                assert_eq!(
                    oldest_kept_instant(now, keep).timestamp(),
                    secs - i64::from(keep) * 86_400,
                    "{now} keep {keep}"
                );
            }
        }
        if last_sunday(&days, today.y, 3) == *today || last_sunday(&days, today.y, 10) == *today {
            dst_days += 1;
        }
    }
    // Three years: 1096 days (2028 is a leap year) at two times of day, six DST days.
    assert_eq!(checked, 1096 * 2 * GRACES.len() as u64);
    assert_eq!(dst_days, 6);
}
