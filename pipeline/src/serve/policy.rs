//! The role matrix: which tables a SQL session sees, and the predicate its
//! rows must satisfy. Pure: claims, the tenant's deployment and the subject's
//! meter periods in, a table list with predicates out. The session catalog
//! (`catalog.rs`) wraps each table in a view with its predicate; a table not
//! listed is absent from the session.
//!
//! | role | sees |
//! |---|---|
//! | operator of T | every table, rows of T (`*`: all rows) |
//! | analyst of a private T | readings, readings_current, consumption_*, meter_profiles, cost_*, capacity_peaks, duration_curve, temperature_*, area_consumption_* of T |
//! | analyst of a public T | area_consumption_* of T |
//! | subject S of T | per-meter tables: rows with `subject` = S, of a meter during a period it was S's (whole days and months for the daily and monthly tables, profiles taking effect on those days), or of a meter the token shares; their own `subjects` row |
//! | everyone | spot_prices, weather_observations, grid_tariffs, tax_rates, exchange_rates, weather_stations (reference data, all rows) |
//!
//! On a public tenant the per-meter rows of a meter are stored under raw ids
//! only while it is linked by an upgrade; pseudonymized rows never equal a raw
//! id, so the same predicate shows a public subject only their linked rows.

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;

use super::jwt::{Claims, Role, TenantScope};

/// How a table's rows are placed in time (for a subject's meter periods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    /// A UTC instant column (an interval's or hour's start).
    Instant(&'static str),
    /// A local date column: the row covers that whole local day.
    Day(&'static str),
    /// A first-of-month local date column: the row covers the whole month.
    Month(&'static str),
    /// A heating season column (the year it starts in): the row covers 1 October to 30
    /// April.
    Season(&'static str),
}

/// What kind of data a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One meter's values (personal data while linkable).
    PerMeter {
        subject: Option<&'static str>,
        time: Time,
    },
    /// k-anonymous area sums.
    Area,
    /// Subject profiles: a subject sees their own row.
    Profiles,
    /// Operators only (access log, ledger, dead letters, audit).
    Operations,
    /// Reference data about no one (spot prices, weather observations): every
    /// role sees every row.
    Reference,
}

/// One lake table as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub kind: Kind,
}

/// Every table the server can show (`readings_current` is a view over the
/// session's `readings`, so it needs no predicate of its own).
pub const TABLES: [Table; 27] = [
    Table {
        name: "readings",
        kind: Kind::PerMeter {
            subject: Some("subject"),
            time: Time::Instant("interval_start"),
        },
    },
    Table {
        name: "consumption_hourly",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Instant("hour_start"),
        },
    },
    Table {
        name: "consumption_daily",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Day("local_date"),
        },
    },
    Table {
        name: "consumption_monthly",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Month("month"),
        },
    },
    Table {
        name: "meter_profiles",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Day("valid_from"),
        },
    },
    Table {
        name: "cost_hourly",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Instant("hour_start"),
        },
    },
    Table {
        name: "cost_daily",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Day("local_date"),
        },
    },
    Table {
        name: "cost_monthly",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Month("month"),
        },
    },
    Table {
        name: "capacity_peaks",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Month("month"),
        },
    },
    Table {
        name: "duration_curve",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Month("month"),
        },
    },
    Table {
        name: "temperature_daily",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Day("local_date"),
        },
    },
    Table {
        name: "temperature_sensitivity",
        kind: Kind::PerMeter {
            subject: None,
            time: Time::Season("season"),
        },
    },
    Table {
        name: "area_consumption_hourly",
        kind: Kind::Area,
    },
    Table {
        name: "area_consumption_daily",
        kind: Kind::Area,
    },
    Table {
        name: "area_consumption_monthly",
        kind: Kind::Area,
    },
    Table {
        name: "subjects",
        kind: Kind::Profiles,
    },
    Table {
        name: "access_log",
        kind: Kind::Operations,
    },
    Table {
        name: "consent_ledger",
        kind: Kind::Operations,
    },
    Table {
        name: "dead_letters",
        kind: Kind::Operations,
    },
    Table {
        name: "erasure_audit",
        kind: Kind::Operations,
    },
    Table {
        name: "spot_prices",
        kind: Kind::Reference,
    },
    Table {
        name: "weather_observations",
        kind: Kind::Reference,
    },
    Table {
        name: "grid_tariffs",
        kind: Kind::Reference,
    },
    Table {
        name: "tax_rates",
        kind: Kind::Reference,
    },
    Table {
        name: "exchange_rates",
        kind: Kind::Reference,
    },
    Table {
        name: "weather_stations",
        kind: Kind::Reference,
    },
    Table {
        name: "elhub_messages",
        kind: Kind::Operations,
    },
];

/// A period a meter was the subject's: [from, to) in µs since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterPeriod {
    /// The meter's ledger hash (the ledger never holds raw ids).
    pub meter_hash: String,
    pub from: i64,
    pub to: Option<i64>,
}

/// What the policy needs beyond the claims.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The session tenant's deployment is public.
    pub public: bool,
    pub timezone: Tz,
    /// The subject's meter periods (empty for other roles).
    pub periods: &'a [MeterPeriod],
    /// `meter` -> its ledger hash, as an expression (a keyed-hash UDF call).
    pub meter_hash: &'a dyn Fn(Expr) -> Expr,
}

/// Whether `table` is in the session's catalog at all.
pub fn visible(claims: &Claims, table: &Table, public: bool) -> bool {
    match (claims.role, table.kind) {
        (Role::Operator, _) => true,
        (Role::Analyst, Kind::Area) | (_, Kind::Reference) => true,
        (Role::Analyst, Kind::PerMeter { .. }) => !public,
        (Role::Subject, Kind::PerMeter { .. } | Kind::Profiles) => claims.subject.is_some(),
        (Role::Analyst | Role::Subject, _) => false,
    }
}

/// The predicate of `table` for this session: `None` when the table is absent
/// from it, `Some(None)` when every row is visible (a `*` operator).
pub fn predicate(claims: &Claims, table: &Table, cx: &Context<'_>) -> Option<Option<Expr>> {
    if !visible(claims, table, cx.public) {
        return None;
    }
    if table.kind == Kind::Reference {
        return Some(None);
    }
    let tenant = match &claims.tenant {
        // Only operators hold `*` (the verifier refuses it for other roles).
        TenantScope::All if claims.role == Role::Operator => return Some(None),
        TenantScope::All => return None,
        TenantScope::One(t) => col("tenant").eq(lit(t.as_str())),
    };
    match (claims.role, table.kind) {
        (Role::Subject, Kind::PerMeter { subject, time }) => {
            let s = claims.subject.as_deref()?;
            let mut any: Vec<Expr> = Vec::new();
            if let Some(column) = subject {
                any.push(col(column).eq(lit(s)));
            }
            if !claims.shared_meters.is_empty() {
                let shared = claims
                    .shared_meters
                    .iter()
                    .map(|m| lit(m.as_str()))
                    .collect();
                any.push(col("meter").in_list(shared, false));
            }
            for p in cx.periods {
                if let Some(within) = within(time, p, cx.timezone) {
                    any.push(
                        (cx.meter_hash)(col("meter"))
                            .eq(lit(p.meter_hash.as_str()))
                            .and(within),
                    );
                }
            }
            let rows = any.into_iter().reduce(Expr::or).unwrap_or(lit(false));
            Some(Some(tenant.and(rows)))
        }
        (Role::Subject, Kind::Profiles) => {
            let s = claims.subject.as_deref()?;
            Some(Some(tenant.and(col("subject").eq(lit(s)))))
        }
        _ => Some(Some(tenant)),
    }
}

fn instant(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

fn date(d: NaiveDate) -> Expr {
    let days = d.signed_duration_since(NaiveDate::default()).num_days();
    lit(ScalarValue::Date32(i32::try_from(days).ok()))
}

/// The rows of `time` inside period `p`: instants in [from, to); days and
/// months only when wholly inside (a day shared with the next occupant is not
/// theirs). `None` when no whole day or month fits.
fn within(time: Time, p: &MeterPeriod, tz: Tz) -> Option<Expr> {
    match time {
        Time::Instant(c) => {
            let from = col(c).gt_eq(instant(p.from));
            Some(match p.to {
                Some(to) => from.and(col(c).lt(instant(to))),
                None => from,
            })
        }
        Time::Day(c) => {
            let (first, end) = whole_days(p, tz)?;
            let from = col(c).gt_eq(date(first));
            Some(match end {
                Some(end) => from.and(col(c).lt(date(end))),
                None => from,
            })
        }
        Time::Month(c) => {
            let (first, end) = whole_days(p, tz)?;
            let first = month_at_or_after(first);
            let from = col(c).gt_eq(date(first));
            Some(match end {
                Some(end) => {
                    // Months that end by `end`: starts before the month of `end`
                    // unless `end` is a first of month.
                    let last = month_start(end);
                    from.and(col(c).lt(date(last)))
                }
                None => from,
            })
        }
        Time::Season(c) => {
            use chrono::Datelike;
            let (first, end) = whole_days(p, tz)?;
            // Seasons starting on or after `first` ...
            let october = |y: i32| NaiveDate::from_ymd_opt(y, 10, 1);
            let from_season = if october(first.year())? >= first {
                first.year()
            } else {
                first.year() + 1
            };
            let from = col(c).gt_eq(lit(from_season));
            Some(match end {
                // ... that end (30 April, so 1 May is the day after) by `end`.
                Some(end) => {
                    let may = NaiveDate::from_ymd_opt(end.year(), 5, 1)?;
                    let last = if end >= may {
                        end.year() - 1
                    } else {
                        end.year() - 2
                    };
                    from.and(col(c).lt_eq(lit(last)))
                }
                None => from,
            })
        }
    }
}

/// The first local date wholly inside the period, and the first local date
/// after the last one wholly inside (`None`: open).
fn whole_days(p: &MeterPeriod, tz: Tz) -> Option<(NaiveDate, Option<NaiveDate>)> {
    let local = |micros: i64| -> Option<chrono::DateTime<Tz>> {
        Some(tz.from_utc_datetime(&chrono::DateTime::from_timestamp_micros(micros)?.naive_utc()))
    };
    let start_of = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
            .earliest()
            .map(|t| t.timestamp_micros())
    };
    let from: chrono::DateTime<Tz> = local(p.from)?;
    let mut first = from.date_naive();
    if start_of(first)? < p.from {
        first = first.succ_opt()?;
    }
    let end = match p.to {
        None => None,
        Some(to) => {
            let to: chrono::DateTime<Tz> = local(to)?;
            // Days before the local date of `to` end by it.
            let end = to.date_naive();
            if end <= first {
                return None;
            }
            Some(end)
        }
    };
    Some((first, end))
}

fn month_start(d: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    d.with_day(1).unwrap_or(d)
}

fn month_at_or_after(d: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    if d.day() == 1 {
        return d;
    }
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn micros(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .timestamp_micros()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn only_whole_local_days_are_a_subjects() {
        let oslo = chrono_tz::Europe::Oslo;
        // From 00:30 local on the 25-hour day 2026-10-25 (22:30Z the day before):
        // that day is shared with the previous occupant, the next one is whole.
        let p = MeterPeriod {
            meter_hash: "h".into(),
            from: micros(2026, 10, 24, 22, 30),
            to: Some(micros(2026, 10, 28, 12, 0)),
        };
        assert_eq!(
            whole_days(&p, oslo),
            Some((day(2026, 10, 26), Some(day(2026, 10, 28))))
        );
        // From local midnight exactly (23:00Z, CET): that day is whole.
        let p = MeterPeriod {
            meter_hash: "h".into(),
            from: micros(2026, 10, 25, 23, 0),
            to: None,
        };
        assert_eq!(whole_days(&p, oslo), Some((day(2026, 10, 26), None)));
        // Less than a whole day: nothing.
        let p = MeterPeriod {
            meter_hash: "h".into(),
            from: micros(2026, 10, 26, 6, 0),
            to: Some(micros(2026, 10, 27, 6, 0)),
        };
        assert_eq!(whole_days(&p, oslo), None);
        assert_eq!(month_at_or_after(day(2026, 10, 26)), day(2026, 11, 1));
        assert_eq!(month_at_or_after(day(2026, 12, 1)), day(2026, 12, 1));
        assert_eq!(month_at_or_after(day(2026, 12, 2)), day(2027, 1, 1));
    }

    #[test]
    fn tables_by_role() {
        let claims = |tenant: TenantScope, role: Role| Claims {
            tenant,
            role,
            subject: Some("s".into()),
            shared_meters: Vec::new(),
            expires_at: 0,
        };
        let names = |c: &Claims, public: bool| -> Vec<&str> {
            TABLES
                .iter()
                .filter(|t| visible(c, t, public))
                .map(|t| t.name)
                .collect()
        };
        let one = || TenantScope::One("t".into());
        assert_eq!(
            names(&claims(one(), Role::Operator), true).len(),
            TABLES.len()
        );
        assert_eq!(
            names(&claims(one(), Role::Analyst), true),
            [
                "area_consumption_hourly",
                "area_consumption_daily",
                "area_consumption_monthly",
                "spot_prices",
                "weather_observations",
                "grid_tariffs",
                "tax_rates",
                "exchange_rates",
                "weather_stations"
            ]
        );
        assert_eq!(
            names(&claims(one(), Role::Analyst), false),
            [
                "readings",
                "consumption_hourly",
                "consumption_daily",
                "consumption_monthly",
                "meter_profiles",
                "cost_hourly",
                "cost_daily",
                "cost_monthly",
                "capacity_peaks",
                "duration_curve",
                "temperature_daily",
                "temperature_sensitivity",
                "area_consumption_hourly",
                "area_consumption_daily",
                "area_consumption_monthly",
                "spot_prices",
                "weather_observations",
                "grid_tariffs",
                "tax_rates",
                "exchange_rates",
                "weather_stations"
            ]
        );
        assert_eq!(
            names(&claims(one(), Role::Subject), false),
            [
                "readings",
                "consumption_hourly",
                "consumption_daily",
                "consumption_monthly",
                "meter_profiles",
                "cost_hourly",
                "cost_daily",
                "cost_monthly",
                "capacity_peaks",
                "duration_curve",
                "temperature_daily",
                "temperature_sensitivity",
                "subjects",
                "spot_prices",
                "weather_observations",
                "grid_tariffs",
                "tax_rates",
                "exchange_rates",
                "weather_stations"
            ]
        );
        // A `*` token that is not an operator's sees nothing (the verifier refuses it too).
        let cx = Context {
            public: false,
            timezone: chrono_tz::Europe::Oslo,
            periods: &[],
            meter_hash: &|e| e,
        };
        assert_eq!(
            predicate(&claims(TenantScope::All, Role::Analyst), &TABLES[0], &cx),
            None
        );
        assert_eq!(
            predicate(&claims(TenantScope::All, Role::Operator), &TABLES[0], &cx),
            Some(None)
        );
        // Reference data has no tenant: every row, whoever asks.
        let prices = TABLES.iter().find(|t| t.name == "spot_prices").unwrap();
        for role in [Role::Operator, Role::Analyst, Role::Subject] {
            assert_eq!(predicate(&claims(one(), role), prices, &cx), Some(None));
        }
    }
}
