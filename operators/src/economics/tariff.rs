//! Grid tariffs (nettleie): the energy charge of each hour and the capacity charge of each
//! month, per grid company, customer group and validity period.
//!
//! The energy charge (energiledd) is a base price with exceptions. An exception applies to an
//! hour when its hours, its days and its months all match (a list matches when any item does;
//! a missing list matches everything); the first exception that applies gives the price, or
//! adds its surcharge. Hours are local hours of the day, 0-23, both ends included, and a range
//! may wrap past midnight (`22-5` is 22:00 to 05:59). On the autumn DST day both hours
//! numbered 2 are hour 2. Prices are øre/kWh, excluding VAT and fees.
//!
//! A tariff applies from `valid_from` (included) to `valid_to` (excluded), local dates.

use chrono::{Datelike, NaiveDate, Weekday};
use rust_decimal::Decimal;

use super::capacity::Steps;
use super::holidays::is_holiday;

/// Who a tariff is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomerGroup {
    /// `husholdning`.
    Household,
    /// `fritid`: cabins and holiday homes.
    Cabin,
    /// `liten_næring`: low-voltage businesses below 100 MWh a year.
    SmallBusiness,
}

impl CustomerGroup {
    pub const ALL: [Self; 3] = [Self::Household, Self::Cabin, Self::SmallBusiness];

    /// The name in `meter-profile/v1` and `grid_tariffs`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Household => "household",
            Self::Cabin => "cabin",
            Self::SmallBusiness => "small_business",
        }
    }

    /// Our name, or the Fri nettleie one.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "husholdning" => Some(Self::Household),
            "fritid" => Some(Self::Cabin),
            "liten_næring" => Some(Self::SmallBusiness),
            other => Self::ALL.into_iter().find(|g| g.name() == other),
        }
    }
}

/// Hours of the day, both ends included; `from > to` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRange {
    pub from: u32,
    pub to: u32,
}

impl HourRange {
    #[must_use]
    pub fn contains(self, hour: u32) -> bool {
        if self.from <= self.to {
            (self.from..=self.to).contains(&hour)
        } else {
            hour >= self.from || hour <= self.to
        }
    }
}

/// Which days an exception is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Days {
    One(Weekday),
    /// `ukedag`: Monday to Friday.
    Weekdays,
    /// `helg`: Saturday and Sunday.
    Weekend,
    /// `helligdager`: public holidays.
    Holidays,
    /// `fridag`: weekend or public holiday.
    DaysOff,
    /// `virkedag`: neither weekend nor public holiday.
    WorkingDays,
    /// `alle`.
    All,
}

impl Days {
    #[must_use]
    pub fn contains(self, date: NaiveDate) -> bool {
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        match self {
            Self::One(w) => date.weekday() == w,
            Self::Weekdays => !weekend,
            Self::Weekend => weekend,
            Self::Holidays => is_holiday(date),
            Self::DaysOff => weekend || is_holiday(date),
            Self::WorkingDays => !weekend && !is_holiday(date),
            Self::All => true,
        }
    }

    /// The Fri nettleie name (`mandag`..`søndag`, `ukedag`, `helg`, `helligdager`, `fridag`,
    /// `virkedag`, `alle`).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "mandag" => Self::One(Weekday::Mon),
            "tirsdag" => Self::One(Weekday::Tue),
            "onsdag" => Self::One(Weekday::Wed),
            "torsdag" => Self::One(Weekday::Thu),
            "fredag" => Self::One(Weekday::Fri),
            "lørdag" => Self::One(Weekday::Sat),
            "søndag" => Self::One(Weekday::Sun),
            "ukedag" => Self::Weekdays,
            "helg" => Self::Weekend,
            "helligdager" => Self::Holidays,
            "fridag" => Self::DaysOff,
            "virkedag" => Self::WorkingDays,
            "alle" => Self::All,
            _ => return None,
        })
    }
}

/// What an exception does to the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// `pris`: this price instead of the base.
    Price(Decimal),
    /// `tillegg` (older files): the base plus this.
    Surcharge(Decimal),
}

/// One exception to the base energy price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub name: String,
    pub hours: Option<HourRange>,
    /// Empty: every day.
    pub days: Vec<Days>,
    /// Months 1-12; empty: every month.
    pub months: Vec<u32>,
    pub adjustment: Adjustment,
}

impl Exception {
    fn applies(&self, date: NaiveDate, hour: u32) -> bool {
        self.hours.is_none_or(|h| h.contains(hour))
            && (self.days.is_empty() || self.days.iter().any(|d| d.contains(date)))
            && (self.months.is_empty() || self.months.contains(&date.month()))
    }
}

/// The energy charge: a base price and its exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnergyCharge {
    pub base_ore: Decimal,
    pub exceptions: Vec<Exception>,
}

impl EnergyCharge {
    /// The price of the local hour `hour` (0-23) of the local `date`, øre/kWh.
    #[must_use]
    pub fn price_ore(&self, date: NaiveDate, hour: u32) -> Decimal {
        match self.exceptions.iter().find(|e| e.applies(date, hour)) {
            Some(e) => match e.adjustment {
                Adjustment::Price(p) => p,
                Adjustment::Surcharge(s) => self.base_ore + s,
            },
            None => self.base_ore,
        }
    }
}

/// The capacity charge: how demand is found (a rule name, see `capacity.rs`) and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityCharge {
    pub method: String,
    pub steps: Steps,
}

/// One tariff of one grid company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridTariff {
    pub company: String,
    /// The company's GLNs (13 digits); a meter's profile names one.
    pub gln: Vec<String>,
    pub name: Option<String>,
    pub customer_groups: Vec<CustomerGroup>,
    pub valid_from: NaiveDate,
    pub valid_to: Option<NaiveDate>,
    pub energy: EnergyCharge,
    pub capacity: CapacityCharge,
    /// Metering grid areas (EIC) the tariff is limited to; empty: all of the company's.
    pub grid_areas: Vec<String>,
    /// Where the tariff was published.
    pub sources: Vec<String>,
}

impl GridTariff {
    /// Whether this tariff is the one of a `group` customer of the company `gln` on `date`.
    #[must_use]
    pub fn applies(&self, gln: &str, group: CustomerGroup, date: NaiveDate) -> bool {
        self.gln.iter().any(|g| g == gln)
            && self.customer_groups.contains(&group)
            && self.valid_from <= date
            && self.valid_to.is_none_or(|to| date < to)
    }
}

/// The tariff of a `group` customer of `gln` on `date`: of the tariffs that apply, the one
/// with the latest start (so a tariff published later for the same day wins).
#[must_use]
pub fn tariff_for<'a>(
    tariffs: &'a [GridTariff],
    gln: &str,
    group: CustomerGroup,
    date: NaiveDate,
) -> Option<&'a GridTariff> {
    tariffs
        .iter()
        .filter(|t| t.applies(gln, group, date))
        .max_by_key(|t| t.valid_from)
}
