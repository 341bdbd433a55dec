//! Weather for a meter: which station, and a day's mean temperature.
//!
//! - A meter's station is the one its profile names, or else the nearest station to its
//!   (2-decimal) coordinates by great-circle distance; equal distances go to the lower id.
//!   Distance is geometry, not money: computed in `f64`.
//! - A local day's mean temperature is the mean of the hourly `air_temperature` values
//!   observed in it, rounded half to even to 3 decimals, when at least
//!   [`MIN_HOURS_FOR_MEAN`] hours have a value; otherwise there is no mean (a day with a
//!   broken sensor is not an average of its first hours).

use rust_decimal::{Decimal, RoundingStrategy};

/// Hours with a value a day needs for its mean temperature.
pub const MIN_HOURS_FOR_MEAN: usize = 18;

/// A weather station.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    pub id: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// Great-circle distance in km (haversine, mean Earth radius).
#[must_use]
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_KM: f64 = 6371.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_KM * a.sqrt().asin()
}

/// The station of a meter: `named` if given, else the nearest to `at` (latitude,
/// longitude); `None` without either.
#[must_use]
pub fn station_for<'a>(
    named: Option<&'a str>,
    at: Option<(f64, f64)>,
    stations: &'a [Station],
) -> Option<&'a str> {
    if let Some(id) = named {
        return Some(id);
    }
    let (lat, lon) = at?;
    stations
        .iter()
        .map(|s| {
            (
                distance_km(lat, lon, s.latitude, s.longitude),
                s.id.as_str(),
            )
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, id)| id)
}

/// The mean of a day's hourly values (see the module documentation).
#[must_use]
pub fn daily_mean(hourly: &[Decimal]) -> Option<Decimal> {
    if hourly.len() < MIN_HOURS_FOR_MEAN {
        return None;
    }
    let sum: Decimal = hourly.iter().sum();
    Some(
        (sum / Decimal::from(hourly.len()))
            .round_dp_with_strategy(3, RoundingStrategy::MidpointNearestEven),
    )
}
