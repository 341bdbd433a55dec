//! The monthly capacity charge (kapasitetsledd): a rule finds the month's demand, and the
//! tariff's steps price it.
//!
//! Grid companies differ in how they find the demand, so the rule is named and pluggable:
//! [`rule`] looks one up by the name a tariff gives, and a new method is one more
//! [`CapacityRule`]. Built in:
//!
//! | name | Fri nettleie `metode` | demand |
//! |---|---|---|
//! | `top3_days` | `TRE_DØGNMAX_MND` | the mean of the 3 highest hourly kWh on 3 different local days of the month (the common method) |
//! | `monthly_max` | `MND_MAX` | the month's highest hourly kWh |
//! | `fuse` | `OV_TREFASE` | the main fuse size, in amperes (the steps are in amperes too) |
//!
//! `FEM_VEKTET_ÅR` (the five highest weekly maxima of 12 months, weighted by season factors
//! that the dataset does not publish) and `UKJENT` have no rule: a month under them has no
//! capacity charge and is not complete, rather than a guessed one.
//!
//! A demand is kept as a sum and a count, so a mean of three (17.3 / 3 = 5.7666...) is compared
//! with a step's threshold exactly (`sum >= threshold × count`), never through a rounded
//! quotient. A month with fewer days than the rule asks for uses the days it has.
//!
//! The hourly kWh are the hour's consumption, whatever the meter's resolution (a 15-minute
//! meter's four quarters summed).

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// One hour's consumption of the period a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourKwh {
    /// The local (Europe/Oslo) date of the hour.
    pub local_date: NaiveDate,
    /// The hour's start in local time, 0-23 (the repeated autumn hour appears twice).
    pub local_hour: u32,
    pub kwh: Decimal,
}

/// What a rule finds the demand from.
#[derive(Debug, Clone, Copy)]
pub struct DemandInput<'a> {
    /// The hours of the month being billed.
    pub month: &'a [HourKwh],
    /// The hours of the 12 months up to and including it, for rules that look back
    /// ([`CapacityRule::months_of_history`] > 1); the month's own hours otherwise.
    pub history: &'a [HourKwh],
    /// The main fuse, amperes, if the profile says.
    pub fuse_amperes: Option<u32>,
}

/// A month's demand: `sum / count`, kept exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub sum: Decimal,
    pub count: u32,
    /// The hours that made it (empty for `fuse`), highest first.
    pub peaks: [Option<HourKwh>; 5],
}

impl Demand {
    /// The demand (kW, or A for `fuse`) rounded half to even to `dp` decimals, for display.
    #[must_use]
    pub fn rounded(&self, dp: u32) -> Decimal {
        (self.sum / Decimal::from(self.count.max(1)))
            .round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointNearestEven)
    }

    /// `demand >= threshold`, exactly.
    #[must_use]
    pub fn at_least(&self, threshold: Decimal) -> bool {
        self.sum >= threshold * Decimal::from(self.count.max(1))
    }

    /// `demand > threshold`, exactly.
    #[must_use]
    pub fn above(&self, threshold: Decimal) -> bool {
        self.sum > threshold * Decimal::from(self.count.max(1))
    }
}

/// A way to find a month's demand.
pub trait CapacityRule: Send + Sync {
    /// The name a tariff gives the rule.
    fn name(&self) -> &'static str;
    /// How many months of hours [`DemandInput::history`] must hold (1: the month itself).
    fn months_of_history(&self) -> u32 {
        1
    }
    /// The month's demand; `None` when the rule has nothing to go on (no hours; no fuse).
    fn demand(&self, input: &DemandInput<'_>) -> Option<Demand>;
}

/// The mean of the highest hour of each of the `days` days with the highest such hour.
#[derive(Debug, Clone, Copy)]
pub struct TopDays {
    pub name: &'static str,
    pub days: usize,
    pub months: u32,
}

impl CapacityRule for TopDays {
    fn name(&self) -> &'static str {
        self.name
    }

    fn months_of_history(&self) -> u32 {
        self.months
    }

    fn demand(&self, input: &DemandInput<'_>) -> Option<Demand> {
        let hours = if self.months > 1 {
            input.history
        } else {
            input.month
        };
        let peaks = daily_peaks(hours);
        if peaks.is_empty() {
            return None;
        }
        let top = &peaks[..self.days.min(peaks.len())];
        let mut kept = [None; 5];
        for (slot, h) in kept.iter_mut().zip(top) {
            *slot = Some(*h);
        }
        Some(Demand {
            sum: top.iter().map(|h| h.kwh).sum(),
            count: u32::try_from(top.len()).unwrap_or(u32::MAX),
            peaks: kept,
        })
    }
}

/// The month's highest hour.
#[derive(Debug, Clone, Copy)]
pub struct MonthlyMax;

impl CapacityRule for MonthlyMax {
    fn name(&self) -> &'static str {
        "monthly_max"
    }

    fn demand(&self, input: &DemandInput<'_>) -> Option<Demand> {
        TopDays {
            name: "monthly_max",
            days: 1,
            months: 1,
        }
        .demand(input)
    }
}

/// The fuse size.
#[derive(Debug, Clone, Copy)]
pub struct Fuse;

impl CapacityRule for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn demand(&self, input: &DemandInput<'_>) -> Option<Demand> {
        input.fuse_amperes.map(|a| Demand {
            sum: Decimal::from(a),
            count: 1,
            peaks: [None; 5],
        })
    }
}

static TOP3_DAYS: TopDays = TopDays {
    name: "top3_days",
    days: 3,
    months: 1,
};

/// The built-in rules.
pub static RULES: [&dyn CapacityRule; 3] = [&TOP3_DAYS, &MonthlyMax, &Fuse];

/// The rule a tariff names, by its own name or by the Fri nettleie `metode`.
#[must_use]
pub fn rule(name: &str) -> Option<&'static dyn CapacityRule> {
    let name = match name {
        "TRE_DØGNMAX_MND" => "top3_days",
        "MND_MAX" => "monthly_max",
        "OV_TREFASE" => "fuse",
        other => other,
    };
    RULES.iter().copied().find(|r| r.name() == name)
}

/// Each local day's highest hour, highest first; equal hours by earlier day, then earlier
/// hour (the first time the peak was reached).
#[must_use]
pub fn daily_peaks(hours: &[HourKwh]) -> Vec<HourKwh> {
    let mut best: std::collections::BTreeMap<NaiveDate, HourKwh> =
        std::collections::BTreeMap::new();
    for h in hours {
        best.entry(h.local_date)
            .and_modify(|b| {
                if h.kwh > b.kwh || (h.kwh == b.kwh && h.local_hour < b.local_hour) {
                    *b = *h;
                }
            })
            .or_insert(*h);
    }
    let mut peaks: Vec<HourKwh> = best.into_values().collect();
    peaks.sort_by(|a, b| {
        b.kwh
            .cmp(&a.kwh)
            .then(a.local_date.cmp(&b.local_date))
            .then(a.local_hour.cmp(&b.local_hour))
    });
    peaks
}

/// One step of a capacity charge: from `from` (kW, or A for `fuse`) up to the next step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: Decimal,
    /// NOK per year, excluding VAT (as tariffs publish it); a month pays a twelfth.
    pub nok_per_year: Decimal,
}

/// A tariff's capacity steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    pub steps: Vec<Step>,
    /// A demand exactly at a step's `from` is in that step (`true`, "2 to 5"), or still in the
    /// step below (`false`, "2.01 to 5").
    pub threshold_included: bool,
}

impl Steps {
    /// The step `demand` falls in: the one with the highest `from` the demand reaches (see
    /// [`Steps::threshold_included`]); the lowest step when it reaches none. `None` without
    /// steps.
    #[must_use]
    pub fn step_for(&self, demand: &Demand) -> Option<Step> {
        self.steps
            .iter()
            .filter(|s| {
                if self.threshold_included {
                    demand.at_least(s.from)
                } else {
                    demand.above(s.from)
                }
            })
            .max_by_key(|s| s.from)
            .or_else(|| self.steps.iter().min_by_key(|s| s.from))
            .copied()
    }
}

/// The next step above `demand` (a [`TopDays`] rule's, of up to `days` days) and the kWh one
/// hour on a new day must reach to move the month into it: an app's warning before a new
/// step. With fewer than `days` peaks the new day is added to the mean; otherwise it
/// replaces the lowest peak. Exact: `threshold × count - (the peaks that stay)`; when the
/// tariff's thresholds are not included, the hour must exceed it. `None` at the top step.
#[must_use]
pub fn next_step(steps: &Steps, demand: &Demand, days: usize) -> Option<(Step, Decimal)> {
    let current = steps.step_for(demand)?;
    let next = steps
        .steps
        .iter()
        .filter(|s| s.from > current.from)
        .min_by_key(|s| s.from)
        .copied()?;
    let days = days.max(1);
    let peaks: Vec<Decimal> = demand.peaks.iter().flatten().map(|h| h.kwh).collect();
    let (staying, count): (Decimal, usize) = if peaks.len() < days {
        (peaks.iter().sum(), peaks.len() + 1)
    } else {
        (peaks[..days - 1].iter().sum(), days)
    };
    let needed = next.from * Decimal::from(count) - staying;
    Some((next, needed.max(Decimal::ZERO)))
}

/// A month's share of a yearly price: a twelfth, rounded half to even to
/// [`super::NOK_SCALE`] decimals.
#[must_use]
pub fn monthly(nok_per_year: Decimal) -> Decimal {
    super::round_nok(nok_per_year / Decimal::from(12))
}
