//! What a meter's consumption over a period cost, and what it would have cost under
//! another support scheme or another grid tariff: the computation behind `meterline
//! simulate-cost` (`query/simulate.rs` reads the lake and prints). Pure: the same
//! `cost_days` and `cost_months` as the cost tables, run twice.

use std::collections::BTreeSet;

use anyhow::Context as _;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int32Type};
use chrono::NaiveDate;
use meterline_operators::economics::hour::Scheme;
use meterline_operators::economics::tables::{
    cost_days, cost_months, month_start, Context, VersionedTariff,
};
use meterline_operators::economics::tariff::GridTariff;
use rust_decimal::Decimal;

/// One side's sums over the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    /// kWh and the amounts, in the order of [`LINES`]; `None` when unknown.
    pub values: Vec<Option<Decimal>>,
    /// Hours priced, hours with every input.
    pub hours: usize,
    pub complete_hours: usize,
}

/// The lines printed: (label, `cost_monthly` column).
pub const LINES: [(&str, &str); 10] = [
    ("consumption (kWh)", "kwh"),
    ("spot", "spot_nok"),
    ("strømstøtte / Norgespris difference", "support_nok"),
    ("grid energy charge", "grid_energy_nok"),
    ("consumption tax", "consumption_tax_nok"),
    ("Enova fee", "enova_nok"),
    ("VAT on energy", "vat_nok"),
    ("capacity charge", "capacity_nok"),
    ("VAT on the capacity charge", "capacity_vat_nok"),
    ("total", "total_nok"),
];

/// Sum `column` of `monthly` rows: `None` when any row's is null.
fn sum(monthly: &[RecordBatch], column: &str) -> Option<Decimal> {
    let mut total = Decimal::ZERO;
    for b in monthly {
        let c = b
            .column_by_name(column)
            .and_then(|c| c.as_primitive_opt::<Decimal128Type>())?;
        let scale = u32::try_from(c.scale()).unwrap_or(0);
        for row in 0..b.num_rows() {
            if c.is_null(row) {
                return None;
            }
            total += Decimal::from_i128_with_scale(c.value(row), scale);
        }
    }
    Some(total)
}

fn hours(monthly: &[RecordBatch]) -> usize {
    monthly
        .iter()
        .filter_map(|b| {
            b.column_by_name("hours")
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
        })
        .flat_map(|c| c.iter().flatten())
        .map(|h| usize::try_from(h).unwrap_or(0))
        .sum()
}

fn complete_hours(hourly: &RecordBatch) -> usize {
    hourly
        .column_by_name("complete")
        .and_then(|c| c.as_boolean_opt())
        .map_or(0, |c| c.true_count())
}

/// The period's sums with `ctx`.
fn price(
    ctx: &Context<'_>,
    days: &BTreeSet<NaiveDate>,
    readings: &[RecordBatch],
) -> anyhow::Result<Sums> {
    let rows = cost_days(ctx, days, readings)?;
    let months: BTreeSet<NaiveDate> = days.iter().map(|d| month_start(*d)).collect();
    let monthly = cost_months(ctx, &months, std::slice::from_ref(&rows.hourly))?;
    // Consumption only: production is valued elsewhere.
    let import = filter_import(&monthly.monthly)?;
    let import = std::slice::from_ref(&import);
    Ok(Sums {
        values: LINES.iter().map(|(_, c)| sum(import, c)).collect(),
        hours: hours(import),
        complete_hours: complete_hours(&filter_import(&rows.hourly)?),
    })
}

fn filter_import(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let direction = batch
        .column_by_name("direction")
        .and_then(|c| c.as_string_opt::<i32>())
        .context("no direction column")?;
    let mask = arrow::compute::kernels::cmp::eq(
        direction,
        &arrow::array::StringArray::new_scalar("import"),
    )?;
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

/// The period's sums as priced by `actual`, and with the meter's profiles' scheme replaced
/// by `scheme` and/or the tariffs replaced by `other` (priced as if the meter's grid
/// company had published them).
///
/// # Errors
/// Readings the computation refuses.
pub fn compare(
    actual: &Context<'_>,
    meter: &str,
    scheme: Option<Scheme>,
    other: Option<Vec<GridTariff>>,
    days: &BTreeSet<NaiveDate>,
    readings: &[RecordBatch],
) -> anyhow::Result<(Sums, Sums)> {
    let before = price(actual, days, readings)?;
    let mut profiles = actual.profiles.clone();
    if let Some(scheme) = scheme {
        for p in profiles.values_mut().flatten() {
            p.scheme = scheme;
        }
    }
    let glns: BTreeSet<String> = actual
        .profiles
        .get(meter)
        .into_iter()
        .flatten()
        .map(|p| p.gln.clone())
        .collect();
    let tariffs: Vec<VersionedTariff> = match other {
        None => actual.tariffs.to_vec(),
        Some(parsed) => parsed
            .into_iter()
            .map(|mut t| {
                t.gln = glns.iter().cloned().collect();
                VersionedTariff {
                    version: format!("simulated/{}", t.valid_from),
                    tariff: t,
                }
            })
            .collect(),
    };
    let simulated = Context {
        profiles: &profiles,
        tariffs: &tariffs,
        ..*actual
    };
    let after = price(&simulated, days, readings)?;
    Ok((before, after))
}
