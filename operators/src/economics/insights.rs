//! Energy insights: duration curves, heating degree days and temperature sensitivity.
//!
//! - **Duration curve**: a period's hourly kWh sorted from the highest down, with ranks 1..n
//!   (equal values keep time order).
//! - **Heating degree days** of a day: `max(0, 17 °C - mean temperature)`.
//! - **Temperature sensitivity** of a meter over a heating season (1 October to 30 April):
//!   the least-squares line of daily kWh against daily mean temperature. `slope` is kWh per
//!   °C (negative when colder days use more), `intercept` the kWh at 0 °C, `r2` the share of
//!   the variance the line explains. Sums are exact decimals; the three results are rounded
//!   half to even to 6 decimals, so they are exact to 10⁻⁶ (no float anywhere).

use chrono::{Datelike, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};

/// The base temperature of heating degree days, °C.
pub const HDD_BASE_C: i64 = 17;
/// Decimals kept of a fit's results.
pub const FIT_DECIMALS: u32 = 6;

/// A period's hours from the highest kWh down: `(rank, index of the hour, kWh)`.
#[must_use]
pub fn duration_curve(kwh: &[Decimal]) -> Vec<(u32, usize, Decimal)> {
    let mut order: Vec<usize> = (0..kwh.len()).collect();
    order.sort_by(|&a, &b| kwh[b].cmp(&kwh[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .enumerate()
        .map(|(rank, i)| (u32::try_from(rank + 1).unwrap_or(u32::MAX), i, kwh[i]))
        .collect()
}

/// Heating degree days of a day with `mean_c`.
#[must_use]
pub fn heating_degree_days(mean_c: Decimal) -> Decimal {
    (Decimal::from(HDD_BASE_C) - mean_c).max(Decimal::ZERO)
}

/// The heating season a date belongs to, by the year it starts in (October 2026 to April
/// 2027 is 2026); `None` from May to September.
#[must_use]
pub fn heating_season(date: NaiveDate) -> Option<i32> {
    match date.month() {
        10..=12 => Some(date.year()),
        1..=4 => Some(date.year() - 1),
        _ => None,
    }
}

/// A least-squares line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub slope: Decimal,
    pub intercept: Decimal,
    pub r2: Decimal,
    pub days: u32,
}

/// The line of `y` against `x` over `points`; `None` with fewer than 3 points, when every
/// `x` is the same, or when a sum leaves the decimal range.
#[must_use]
pub fn least_squares(points: &[(Decimal, Decimal)]) -> Option<Fit> {
    if points.len() < 3 {
        return None;
    }
    let n = Decimal::from(points.len());
    let (mut sx, mut sy, mut sxy, mut sxx, mut syy) = (
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
        Decimal::ZERO,
    );
    for (x, y) in points {
        sx = sx.checked_add(*x)?;
        sy = sy.checked_add(*y)?;
        sxy = sxy.checked_add(x.checked_mul(*y)?)?;
        sxx = sxx.checked_add(x.checked_mul(*x)?)?;
        syy = syy.checked_add(y.checked_mul(*y)?)?;
    }
    // n·Σxy - Σx·Σy, n·Σx² - (Σx)², n·Σy² - (Σy)²: exact.
    let cov = n.checked_mul(sxy)?.checked_sub(sx.checked_mul(sy)?)?;
    let var_x = n.checked_mul(sxx)?.checked_sub(sx.checked_mul(sx)?)?;
    let var_y = n.checked_mul(syy)?.checked_sub(sy.checked_mul(sy)?)?;
    if var_x.is_zero() {
        return None;
    }
    let slope = cov.checked_div(var_x)?;
    let intercept = sy.checked_sub(slope.checked_mul(sx)?)?.checked_div(n)?;
    // r² = cov² / (var_x · var_y) = slope · cov / var_y; all y equal: the line is exact.
    let r2 = if var_y.is_zero() {
        Decimal::ONE
    } else {
        slope.checked_mul(cov)?.checked_div(var_y)?
    };
    let round =
        |d: Decimal| d.round_dp_with_strategy(FIT_DECIMALS, RoundingStrategy::MidpointNearestEven);
    Some(Fit {
        slope: round(slope),
        intercept: round(intercept),
        r2: round(r2),
        days: u32::try_from(points.len()).unwrap_or(u32::MAX),
    })
}
