//! One meter's month: the sums of its priced hours, the capacity charge, and the month's
//! total.
//!
//! - Each component is the sum of the month's stored hourly amounts (no further rounding);
//!   a component missing in any hour is missing for the month.
//! - The capacity charge (fastledd) is the tariff's step for the month's demand (its named
//!   rule, see `capacity.rs`): a twelfth of the step's yearly price, plus VAT at the month's
//!   rate in the meter's zone, each rounded to [`super::NOK_SCALE`] decimals. The tariff is
//!   the one in force on the month's first day.
//! - The total is the hours' totals plus the capacity charge and its VAT. The month is
//!   complete when every hour is, and the capacity charge is known.

use rust_decimal::Decimal;

use super::capacity::{self, DemandInput, HourKwh};
use super::day::CostHour;
use super::round_nok;
use super::tariff::CapacityCharge;

/// What a month is summed from.
#[derive(Debug, Clone, Copy)]
pub struct MonthInput<'a> {
    /// The month's priced hours of the meter's consumption.
    pub hours: &'a [CostHour],
    /// The month's hourly kWh, for the capacity rule.
    pub demand_hours: &'a [HourKwh],
    /// Up to 12 months of hourly kWh, for rules that look back.
    pub history: &'a [HourKwh],
    pub fuse_amperes: Option<u32>,
    /// The tariff's capacity charge; `None`: no tariff.
    pub capacity: Option<&'a CapacityCharge>,
    /// VAT on the month's first day in the meter's zone.
    pub vat_share: Option<Decimal>,
}

/// A month's cost in NOK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthCost {
    pub kwh: Decimal,
    pub spot_nok: Option<Decimal>,
    pub support_nok: Option<Decimal>,
    pub grid_energy_nok: Option<Decimal>,
    pub consumption_tax_nok: Option<Decimal>,
    pub enova_nok: Option<Decimal>,
    /// VAT of the hours.
    pub vat_nok: Option<Decimal>,
    /// The demand the capacity step was chosen by (kW, or A for `fuse`), to 4 decimals.
    pub capacity_demand: Option<Decimal>,
    /// The step's lower bound.
    pub capacity_step_from: Option<Decimal>,
    /// A twelfth of the step's yearly price.
    pub capacity_nok: Option<Decimal>,
    pub capacity_vat_nok: Option<Decimal>,
    pub total_nok: Option<Decimal>,
    pub complete: bool,
}

/// The month: see the module documentation.
#[must_use]
pub fn cost_of_month(m: &MonthInput<'_>) -> MonthCost {
    let sum = |f: fn(&CostHour) -> Option<Decimal>| -> Option<Decimal> {
        m.hours.iter().map(f).sum::<Option<Decimal>>()
    };
    let demand = m.capacity.and_then(|c| {
        capacity::rule(&c.method)?.demand(&DemandInput {
            month: m.demand_hours,
            history: m.history,
            fuse_amperes: m.fuse_amperes,
        })
    });
    let step = m
        .capacity
        .zip(demand.as_ref())
        .and_then(|(c, d)| c.steps.step_for(d));
    let capacity_nok = step.map(|s| capacity::monthly(s.nok_per_year));
    let capacity_vat_nok = capacity_nok
        .zip(m.vat_share)
        .map(|(c, share)| round_nok(c * share));
    let hours_total = sum(|h| h.cost.total_nok);
    let total_nok = hours_total
        .zip(capacity_nok)
        .zip(capacity_vat_nok)
        .map(|((h, c), v)| h + c + v);
    MonthCost {
        kwh: m.hours.iter().map(|h| h.cost.kwh).sum(),
        spot_nok: sum(|h| h.cost.spot_nok),
        support_nok: sum(|h| h.cost.support_nok),
        grid_energy_nok: sum(|h| h.cost.grid_energy_nok),
        consumption_tax_nok: sum(|h| h.cost.consumption_tax_nok),
        enova_nok: sum(|h| h.cost.enova_nok),
        vat_nok: sum(|h| h.cost.vat_nok),
        capacity_demand: demand.map(|d| d.rounded(4)),
        capacity_step_from: step.map(|s| s.from),
        capacity_nok,
        capacity_vat_nok,
        total_nok,
        complete: total_nok.is_some() && m.hours.iter().all(|h| h.complete),
    }
}
