//! Energy economics: what a kWh cost, exactly.
//!
//! ```text
//!  spot prices (EUR/MWh, PT15M or PT60M) ─┐
//!  exchange rate (NOK per EUR) ───────────┤
//!  grid tariff (energy charge by hour) ───┼─▶ cost of an hour ─▶ cost_hourly ─▶ daily, monthly
//!  tax rates on the day (tax, Enova, VAT, │      (components,        │
//!    support threshold, Norgespris) ──────┤       complete?)         └─▶ capacity peaks ─▶ step
//!  meter profile (area, scheme, zone) ────┘
//! ```
//!
//! - `rates.rs`: the dated rates the state sets (consumption tax, Enova fee, VAT and its exempt
//!   zones, strømstøtte, Norgespris), with defaults for 2024-2026;
//! - `hour.rs`: the cost of one hour of one meter, component by component;
//! - `day.rs`: one meter's local day priced hour by hour (DST days have 23 or 25);
//! - `month.rs`: a meter's month: the hours summed, the capacity charge, the total;
//! - `capacity.rs`: the monthly capacity charge (kapasitetsledd): named, pluggable rules that
//!   find the demand, and the steps it falls in;
//! - `insights.rs`: duration curves, heating degree days, temperature sensitivity (exact
//!   least squares);
//! - `tariff.rs`: grid tariffs: the energy charge of an hour (base price and exceptions by
//!   hours, days and months), the capacity charge, which tariff applies to a meter on a day;
//! - `holidays.rs`: Norwegian public holidays, for tariff exceptions;
//! - `weather.rs`: a meter's weather station (named, or the nearest) and a day's mean
//!   temperature;
//! - `entsoe.rs`: ENTSO-E day-ahead price documents (A44), with A03 gap filling;
//! - `frinettleie.rs`: Fri nettleie tariff files (YAML);
//! - `pricefeed.rs`: the simple JSON spot price feeds (`NOK_per_kWh`, `EXR`, ...);
//! - `exchange.rs`: Norges Bank's exchange rates (CSV), and which day's rate converts a
//!   delivery day's EUR prices;
//! - `frost.rs`: MET Norway Frost temperature observations (JSON), one value per station and
//!   time.
//!
//! Guarantees:
//! - money is never a float: every amount is a [`Decimal`] computed exactly from its inputs,
//!   and rounded once, half to even, to [`NOK_SCALE`] decimals of a krone (see `hour.rs`);
//! - a missing input is reported as missing, never priced as zero.

pub mod capacity;
pub mod day;
pub mod entsoe;
pub mod exchange;
pub mod frinettleie;
pub mod frost;
pub mod holidays;
pub mod hour;
pub mod insights;
pub mod month;
pub mod pricefeed;
pub mod rates;
pub mod tables;
pub mod tariff;
pub mod weather;

#[cfg(test)]
pub(crate) mod tests;

pub use rust_decimal::Decimal;

/// Decimals of a krone kept in every stored amount: 10⁻⁹ NOK, a ten-millionth of an øre.
/// Finer than any bill; coarse enough that a year of hours sums without overflow.
pub const NOK_SCALE: u32 = 9;

/// The Norwegian day-ahead price areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PriceArea {
    No1,
    No2,
    No3,
    No4,
    No5,
}

impl PriceArea {
    pub const ALL: [Self; 5] = [Self::No1, Self::No2, Self::No3, Self::No4, Self::No5];

    /// `NO1`..`NO5`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::No1 => "NO1",
            Self::No2 => "NO2",
            Self::No3 => "NO3",
            Self::No4 => "NO4",
            Self::No5 => "NO5",
        }
    }

    /// The bidding zone's EIC code, as ENTSO-E documents name it.
    #[must_use]
    pub fn eic(self) -> &'static str {
        match self {
            Self::No1 => "10YNO-1--------2",
            Self::No2 => "10YNO-2--------T",
            Self::No3 => "10YNO-3--------J",
            Self::No4 => "10YNO-4--------9",
            Self::No5 => "10Y1001A1001A48H",
        }
    }

    /// The area of a code (`NO1`) or an EIC code.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.code().eq_ignore_ascii_case(text) || a.eic() == text)
    }
}

/// `units` rounded half to even to [`NOK_SCALE`] decimals.
#[must_use]
pub fn round_nok(units: Decimal) -> Decimal {
    units.round_dp_with_strategy(
        NOK_SCALE,
        rust_decimal::RoundingStrategy::MidpointNearestEven,
    )
}
