//! The cost of one hour of one meter's consumption, component by component.
//!
//! All prices are øre/kWh excluding VAT; amounts come out in NOK.
//!
//! - **spot**: each part of the hour's consumption times the price of that part. A meter read
//!   hourly pays the mean of the hour's four quarter prices (the Nordic day-ahead market has
//!   quarter prices since 1 October 2025); a meter read every 15 minutes pays each quarter at
//!   its own price; an hourly price covers every part.
//! - **support** (strømstøtte): minus the support share (90 %) of the hour's mean spot above the
//!   threshold, times the hour's kWh. Strømstøtte stays hourly when prices are quarterly.
//!   Under Norgespris the same column holds the Norgespris difference: the fixed price times
//!   the kWh minus the spot amount, so spot plus support is what the customer pays for energy.
//!   A business (no scheme) has none: zero.
//! - **grid energy** (energiledd), **consumption tax**, **Enova fee**: price times kWh.
//! - **VAT**: the VAT share of the sum of the five components above (0 in exempt zones).
//!
//! **Rounding**: each component is computed exactly, then rounded once, half to even, to
//! [`NOK_SCALE`] decimals; VAT is computed from the rounded components and rounded the same
//! way; the total is the sum of the rounded components and VAT, so the columns add up exactly.
//! Days and months are sums of the hours' stored amounts, without further rounding.
//!
//! **Export** (a household's solar production, direction `export`) is valued at spot: the spot
//! column is minus the spot amount (what the customer is paid), the grid column is the
//! tariff's production charge (zero when it has none), and no support, tax, Enova fee or VAT
//! apply (a household sells without VAT).
//!
//! A component whose input is missing (no spot price, no rate on that day, Norgespris chosen
//! outside its period) is `None`, and so are VAT and the total: never a silent zero.

use rust_decimal::Decimal;

use super::rates::RatesOnDay;
use super::{round_nok, NOK_SCALE};

/// How a metering point buys its energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Households: strømstøtte on the hourly spot above the threshold.
    Stromstotte,
    /// A fixed price per kWh instead of spot and strømstøtte.
    Norgespris,
    /// Neither (businesses).
    None,
}

impl Scheme {
    pub const ALL: [Self; 3] = [Self::Stromstotte, Self::Norgespris, Self::None];

    /// `stromstotte`, `norgespris`, `none`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stromstotte => "stromstotte",
            Self::Norgespris => "norgespris",
            Self::None => "none",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// What an hour is priced from.
#[derive(Debug, Clone, Copy)]
pub struct HourInput<'a> {
    /// The hour's consumption in kWh, in 1 (hourly meter), 2 or 4 (15-minute meter) equal
    /// parts in time order.
    pub kwh: &'a [Decimal],
    /// The hour's spot prices, øre/kWh: 1 (hourly prices) or 4 (quarter prices) in time order;
    /// `None`: no price for the hour.
    pub spot_ore: Option<&'a [Decimal]>,
    pub scheme: Scheme,
    /// Consumption (`false`) or production fed into the grid (`true`).
    pub export: bool,
    /// The grid company's energy charge for this hour (for export: its production charge),
    /// øre/kWh; `None`: no tariff.
    pub grid_energy_ore: Option<Decimal>,
    pub rates: RatesOnDay,
}

/// An hour's cost in NOK, each component rounded to [`NOK_SCALE`] decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourCost {
    pub kwh: Decimal,
    pub spot_nok: Option<Decimal>,
    pub support_nok: Option<Decimal>,
    pub grid_energy_nok: Option<Decimal>,
    pub consumption_tax_nok: Option<Decimal>,
    pub enova_nok: Option<Decimal>,
    pub vat_nok: Option<Decimal>,
    pub total_nok: Option<Decimal>,
}

impl HourCost {
    /// Every component known.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.total_nok.is_some()
    }
}

/// Why an hour could not be priced at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HourError {
    #[error("an hour's consumption comes in 1, 2 or 4 parts, not {0}")]
    Parts(usize),
    #[error("an hour's spot prices come as 1 or 4, not {0}")]
    Prices(usize),
}

/// The cost of one hour: see the module documentation.
///
/// # Errors
/// Consumption or prices in a number of parts that does not divide the hour.
pub fn cost_of_hour(input: &HourInput<'_>) -> Result<HourCost, HourError> {
    let parts = input.kwh.len();
    if ![1, 2, 4].contains(&parts) {
        return Err(HourError::Parts(parts));
    }
    if let Some(prices) = input.spot_ore {
        if ![1, 4].contains(&prices.len()) {
            return Err(HourError::Prices(prices.len()));
        }
    }
    let kwh: Decimal = input.kwh.iter().sum();
    let nok = |ore: Decimal| round_nok(ore / Decimal::ONE_HUNDRED);
    let spot_ore = input
        .spot_ore
        .map(|prices| spot_amount_ore(input.kwh, prices));
    if input.export {
        return Ok(export_cost(kwh, spot_ore, input.grid_energy_ore));
    }
    let mean_spot = input
        .spot_ore
        .map(|p| p.iter().sum::<Decimal>() / Decimal::from(p.len()));
    let support_ore = match input.scheme {
        Scheme::None => Some(Decimal::ZERO),
        Scheme::Stromstotte => match (
            mean_spot,
            input.rates.support_threshold_ore,
            input.rates.support_share,
        ) {
            (Some(mean), Some(threshold), Some(share)) => {
                Some(-(share * (mean - threshold).max(Decimal::ZERO) * kwh))
            }
            _ => None,
        },
        Scheme::Norgespris => match (spot_ore, input.rates.norgespris_ore) {
            (Some(spot), Some(fixed)) => Some(fixed * kwh - spot),
            _ => None,
        },
    };
    let times_kwh = |price: Option<Decimal>| price.map(|p| nok(p * kwh));
    let mut cost = HourCost {
        kwh,
        spot_nok: spot_ore.map(nok),
        support_nok: support_ore.map(nok),
        grid_energy_nok: times_kwh(input.grid_energy_ore),
        consumption_tax_nok: times_kwh(input.rates.consumption_tax_ore),
        enova_nok: times_kwh(input.rates.enova_ore),
        vat_nok: None,
        total_nok: None,
    };
    let ex_vat = [
        cost.spot_nok,
        cost.support_nok,
        cost.grid_energy_nok,
        cost.consumption_tax_nok,
        cost.enova_nok,
    ]
    .into_iter()
    .sum::<Option<Decimal>>();
    if let (Some(ex_vat), Some(share)) = (ex_vat, input.rates.vat_share) {
        let vat = round_nok(share * ex_vat);
        cost.vat_nok = Some(vat);
        cost.total_nok = Some(ex_vat + vat);
    }
    debug_assert!(cost.total_nok.is_none_or(|t| t.scale() <= NOK_SCALE));
    Ok(cost)
}

/// Production: paid spot, charged the production charge, nothing else.
fn export_cost(
    kwh: Decimal,
    spot_ore: Option<Decimal>,
    production_ore: Option<Decimal>,
) -> HourCost {
    let nok = |ore: Decimal| round_nok(ore / Decimal::ONE_HUNDRED);
    let zero = Some(Decimal::ZERO);
    let spot_nok = spot_ore.map(|s| nok(-s));
    let grid_energy_nok = production_ore.map(|p| nok(p * kwh));
    HourCost {
        kwh,
        spot_nok,
        support_nok: zero,
        grid_energy_nok,
        consumption_tax_nok: zero,
        enova_nok: zero,
        vat_nok: zero,
        total_nok: spot_nok.zip(grid_energy_nok).map(|(s, g)| s + g),
    }
}

/// Σ part kWh × the mean price of the quarters the part covers, øre.
fn spot_amount_ore(kwh: &[Decimal], prices: &[Decimal]) -> Decimal {
    if prices.len() == 1 {
        return kwh.iter().sum::<Decimal>() * prices[0];
    }
    let per_part = prices.len() / kwh.len().max(1);
    kwh.iter()
        .zip(prices.chunks(per_part.max(1)))
        .map(|(k, quarter_prices)| {
            *k * quarter_prices.iter().sum::<Decimal>() / Decimal::from(quarter_prices.len())
        })
        .sum()
}

/// øre/kWh from EUR/MWh at `nok_per_eur`: EUR/MWh × NOK/EUR = NOK/MWh = øre/10 per kWh.
#[must_use]
pub fn ore_per_kwh(eur_per_mwh: Decimal, nok_per_eur: Decimal) -> Decimal {
    eur_per_mwh * nok_per_eur / Decimal::TEN
}
