//! One meter's local day priced hour by hour: readings, the area's prices, the profile's
//! scheme and zone, the tariff and the rates of that day into [`CostHour`]s.
//!
//! An hour is a UTC hour of the local day (23 or 25 of them on DST days). Its consumption is
//! the hourly reading at its start, or the 15-minute readings inside it; a 15-minute meter
//! with a quarter missing is priced on the quarters it has and marked incomplete. Its spot
//! prices are the hourly price at its start, or the four quarter prices inside it; an hour
//! with a quarter price missing has no spot price (incomplete, never a partial mean). The
//! tariff's energy charge is the one of the hour's local clock hour.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::hour::{cost_of_hour, HourCost, HourError, HourInput, Scheme};
use super::rates::{RateTable, TaxZone};
use super::tariff::GridTariff;

/// One reading of the meter: interval start, length in minutes (15 or 60), kWh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub start: DateTime<Utc>,
    pub minutes: u32,
    pub kwh: Decimal,
}

/// Spot prices of an area by interval start: (length in minutes, øre/kWh excl. VAT).
pub type Prices = BTreeMap<DateTime<Utc>, (u32, Decimal)>;

/// Everything one meter's local day is priced from.
#[derive(Debug, Clone, Copy)]
pub struct MeterDay<'a> {
    pub local_date: NaiveDate,
    pub tz: Tz,
    /// This meter's readings of this local day, one direction.
    pub readings: &'a [Reading],
    pub export: bool,
    pub prices: &'a Prices,
    pub scheme: Scheme,
    pub zone: TaxZone,
    pub tariff: Option<&'a GridTariff>,
    pub rates: &'a RateTable,
}

/// One priced hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostHour {
    pub hour_start: DateTime<Utc>,
    /// The local clock hour, 0-23 (the repeated autumn hour twice).
    pub local_hour: u32,
    pub cost: HourCost,
    /// Every input known, the consumption included.
    pub complete: bool,
}

/// The day's hours that have readings, in time order.
///
/// # Errors
/// A reading whose length is neither 15 nor 60 minutes.
pub fn cost_of_day(day: &MeterDay<'_>) -> Result<Vec<CostHour>, HourError> {
    let mut hours: BTreeMap<DateTime<Utc>, [Option<Decimal>; 4]> = BTreeMap::new();
    let mut hourly: BTreeMap<DateTime<Utc>, Decimal> = BTreeMap::new();
    for r in day.readings {
        let hour = hour_of(r.start);
        match r.minutes {
            60 => {
                hourly.insert(hour, r.kwh);
            }
            15 => {
                let quarter = (r.start.minute() / 15) as usize;
                hours.entry(hour).or_default()[quarter] = Some(r.kwh);
            }
            other => {
                return Err(HourError::Parts(
                    usize::try_from(60 / other.max(1)).unwrap_or(0),
                ))
            }
        }
    }
    let starts: std::collections::BTreeSet<DateTime<Utc>> =
        hours.keys().chain(hourly.keys()).copied().collect();
    let rates = day.rates.on(day.zone, day.local_date);
    let mut out = Vec::with_capacity(starts.len());
    for start in starts {
        let (kwh, consumption_complete): (Vec<Decimal>, bool) = match hourly.get(&start) {
            Some(v) => (vec![*v], true),
            None => {
                let quarters = hours.get(&start).copied().unwrap_or_default();
                (
                    quarters
                        .iter()
                        .map(|q| q.unwrap_or(Decimal::ZERO))
                        .collect(),
                    quarters.iter().all(Option::is_some),
                )
            }
        };
        let local_hour = start.with_timezone(&day.tz).hour();
        let prices = spot_of_hour(day.prices, start);
        let cost = cost_of_hour(&HourInput {
            kwh: &kwh,
            spot_ore: prices.as_deref(),
            scheme: day.scheme,
            export: day.export,
            grid_energy_ore: day.tariff.map(|t| {
                if day.export {
                    Decimal::ZERO
                } else {
                    t.energy.price_ore(day.local_date, local_hour)
                }
            }),
            rates,
        })?;
        out.push(CostHour {
            hour_start: start,
            local_hour,
            complete: consumption_complete && cost.complete(),
            cost,
        });
    }
    Ok(out)
}

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t - Duration::minutes(i64::from(t.minute())) - Duration::seconds(i64::from(t.second()))
}

/// The hour's prices: the hourly price at its start, or all four quarter prices inside it.
fn spot_of_hour(prices: &Prices, start: DateTime<Utc>) -> Option<Vec<Decimal>> {
    if let Some((60, p)) = prices.get(&start) {
        return Some(vec![*p]);
    }
    (0..4)
        .map(|q| match prices.get(&(start + Duration::minutes(15 * q))) {
            Some((15, p)) => Some(*p),
            _ => None,
        })
        .collect()
}
