//! Pseudonym key epochs: public tenants' pseudonyms are computed under a key of
//! the epoch (local month or year) the reading's local date falls in. Each epoch
//! key is random and stored (wrapped under the master key) outside this crate;
//! destroying it after the epoch plus a grace period makes that epoch's
//! pseudonyms unlinkable for everyone, the operator included.
//!
//! Linkage that remains: within one epoch, all readings of a meter share one
//! pseudonym (its load curve for that month or year can be followed, and matched
//! by whoever knows the household's consumption); across epochs the pseudonyms
//! differ, and after destruction no key maps them back to a meter.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// How often a tenant's pseudonym key changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// One key derived from the master key, for all time (never destroyed).
    #[default]
    Never,
    /// A key per local calendar month (the default for public tenants).
    Monthly,
    /// A key per local calendar year.
    Yearly,
}

impl Rotation {
    pub fn as_str(self) -> &'static str {
        match self {
            Rotation::Never => "never",
            Rotation::Monthly => "monthly",
            Rotation::Yearly => "yearly",
        }
    }

    /// Parse a config value.
    pub fn parse(s: &str) -> Option<Self> {
        [Rotation::Never, Rotation::Monthly, Rotation::Yearly]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// The epoch of a local date (days since 1970-01-01).
    pub fn epoch_of(self, local_days: i32) -> Epoch {
        let d = NaiveDate::default() + chrono::Duration::days(i64::from(local_days));
        match self {
            Rotation::Never => Epoch::All,
            Rotation::Monthly => Epoch::Month(d.year(), d.month()),
            Rotation::Yearly => Epoch::Year(d.year()),
        }
    }
}

/// One key period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Epoch {
    All,
    Year(i32),
    Month(i32, u32),
}

impl Epoch {
    /// The first local date after the epoch (`None`: never ends).
    pub fn end(self) -> Option<NaiveDate> {
        match self {
            Epoch::All => None,
            Epoch::Year(y) => NaiveDate::from_ymd_opt(y + 1, 1, 1),
            Epoch::Month(y, 12) => NaiveDate::from_ymd_opt(y + 1, 1, 1),
            Epoch::Month(y, m) => NaiveDate::from_ymd_opt(y, m + 1, 1),
        }
    }

    /// The first local date of the epoch (`None` for `All`).
    pub fn start(self) -> Option<NaiveDate> {
        match self {
            Epoch::All => None,
            Epoch::Year(y) => NaiveDate::from_ymd_opt(y, 1, 1),
            Epoch::Month(y, m) => NaiveDate::from_ymd_opt(y, m, 1),
        }
    }

    /// The next epoch.
    pub fn next(self) -> Epoch {
        match self {
            Epoch::All => Epoch::All,
            Epoch::Year(y) => Epoch::Year(y + 1),
            Epoch::Month(y, 12) => Epoch::Month(y + 1, 1),
            Epoch::Month(y, m) => Epoch::Month(y, m + 1),
        }
    }

    /// Parse a label (`2026-11`, `2026`, `all`).
    pub fn parse(s: &str) -> Option<Epoch> {
        if s == "all" {
            return Some(Epoch::All);
        }
        match s.split_once('-') {
            Some((y, m)) => {
                let (y, m) = (y.parse().ok()?, m.parse().ok()?);
                (1..=12).contains(&m).then_some(Epoch::Month(y, m))
            }
            None => s.parse().ok().map(Epoch::Year),
        }
    }

    /// Open epochs on `today` (a local date) with `grace_days`: the current one,
    /// the next (keys exist before they are needed), and earlier ones whose end is
    /// less than `grace_days` ago. Readings of other epochs are not stored.
    pub fn open(rotation: Rotation, today: NaiveDate, grace_days: u32) -> Vec<Epoch> {
        if rotation == Rotation::Never {
            return vec![Epoch::All];
        }
        let oldest = today - chrono::Days::new(u64::from(grace_days));
        let day = |d: NaiveDate| {
            i32::try_from(d.signed_duration_since(NaiveDate::default()).num_days())
                .unwrap_or(i32::MAX)
        };
        let mut e = rotation.epoch_of(day(oldest));
        // The epoch holding `oldest` ended after it, so it is still open.
        let last = rotation.epoch_of(day(today)).next();
        let mut out = vec![e];
        while e < last {
            e = e.next();
            out.push(e);
        }
        out
    }

    /// True when the epoch ended `grace_days` or more before `today`.
    pub fn closed(self, today: NaiveDate, grace_days: u32) -> bool {
        self.end()
            .is_some_and(|end| end + chrono::Days::new(u64::from(grace_days)) <= today)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Epoch::All => f.write_str("all"),
            Epoch::Year(y) => write!(f, "{y}"),
            Epoch::Month(y, m) => write!(f, "{y}-{m:02}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn labels_round_trip_and_months_roll_over() {
        for e in [Epoch::All, Epoch::Year(2026), Epoch::Month(2026, 12)] {
            assert_eq!(Epoch::parse(&e.to_string()), Some(e));
        }
        assert_eq!(Epoch::Month(2026, 12).next(), Epoch::Month(2027, 1));
        assert_eq!(Epoch::Month(2026, 12).end(), Some(date(2027, 1, 1)));
        assert_eq!(Epoch::parse("2026-13"), None);
    }

    #[test]
    fn open_epochs_span_the_grace_period_and_the_next_epoch() {
        let open = Epoch::open(Rotation::Monthly, date(2026, 11, 26), 30);
        assert_eq!(
            open,
            vec![
                Epoch::Month(2026, 10),
                Epoch::Month(2026, 11),
                Epoch::Month(2026, 12)
            ]
        );
        assert!(!Epoch::Month(2026, 10).closed(date(2026, 11, 26), 30));
        assert!(Epoch::Month(2026, 10).closed(date(2026, 12, 1), 30));
        assert!(Epoch::Month(2026, 9).closed(date(2026, 11, 26), 30));
        assert_eq!(
            Epoch::open(Rotation::Yearly, date(2026, 11, 26), 30),
            vec![Epoch::Year(2026), Epoch::Year(2027)]
        );
        assert_eq!(
            Epoch::open(Rotation::Never, date(2026, 11, 26), 30),
            vec![Epoch::All]
        );
    }
}
