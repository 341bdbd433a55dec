//! The `grid_tariffs` table: each import of a Fri nettleie file (`meterline import tariffs`)
//! as one row per tariff, with the file itself.
//!
//! The columns a person queries (company, GLNs, customer groups, validity, the energy
//! charge's base price, the capacity method and steps) are there for SQL; the cost of an
//! hour is computed from `document`, the whole file as imported, parsed again by
//! [`crate::economics::frinettleie`]: what is stored is exactly what was published. Each
//! import is a new `version` of the company's tariffs (the newest version of a company
//! wins; `document_hash` tells an import of the same file apart from a new one).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::utc_timestamp;
use crate::economics::capacity;
use crate::economics::tariff::GridTariff;

/// Decimals of the stored base price (øre/kWh).
pub const PRICE_SCALE: u32 = 6;

fn price_type() -> DataType {
    DataType::Decimal128(18, PRICE_SCALE as i8)
}

/// The `grid_tariffs` table's columns.
pub static GRID_TARIFFS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("company", DataType::Utf8, false),
        // The company's GLNs, comma-separated.
        Field::new("gln", DataType::Utf8, false),
        // household, cabin, small_business; comma-separated.
        Field::new("customer_groups", DataType::Utf8, false),
        Field::new("tariff_name", DataType::Utf8, true),
        Field::new("valid_from", DataType::Date32, false),
        // Excluded; null: open.
        Field::new("valid_to", DataType::Date32, true),
        Field::new("energy_base_ore_per_kwh", price_type(), false),
        Field::new("energy_exceptions", DataType::Int32, false),
        Field::new("capacity_method", DataType::Utf8, false),
        // The rule meterline prices it with (see `economics::capacity`); null: none.
        Field::new("capacity_rule", DataType::Utf8, true),
        // `from:NOK per year` pairs, `;`-separated: "0:2400;5:3072".
        Field::new("capacity_steps", DataType::Utf8, false),
        Field::new("threshold_included", DataType::Boolean, false),
        Field::new("version", utc_timestamp(), false),
        Field::new("document_hash", DataType::Utf8, false),
        Field::new("document", DataType::Utf8, false),
    ]))
});

fn days(date: chrono::NaiveDate) -> i32 {
    crate::aggregate::days_since_epoch(date)
}

/// The rows of one imported file: its `tariffs` (as parsed from `document`), the file's
/// `hash` and the import's `version` (µs).
///
/// # Errors
/// A price with more decimals than the table keeps.
pub fn batch(
    tariffs: &[GridTariff],
    document: &str,
    hash: &str,
    version_micros: i64,
) -> Result<RecordBatch, ArrowError> {
    let n = tariffs.len();
    let text = |f: &dyn Fn(&GridTariff) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(tariffs.iter().map(f)))
    };
    let base = tariffs
        .iter()
        .map(|t| super::scaled_to(t.energy.base_ore, PRICE_SCALE))
        .collect::<Result<Vec<_>, _>>()?;
    let columns: Vec<ArrayRef> = vec![
        text(&|t| t.company.clone()),
        text(&|t| t.gln.join(",")),
        text(&|t| {
            t.customer_groups
                .iter()
                .map(|g| g.name())
                .collect::<Vec<_>>()
                .join(",")
        }),
        Arc::new(StringArray::from_iter(
            tariffs.iter().map(|t| t.name.as_deref()),
        )),
        Arc::new(Date32Array::from_iter_values(
            tariffs.iter().map(|t| days(t.valid_from)),
        )),
        Arc::new(Date32Array::from_iter(
            tariffs.iter().map(|t| t.valid_to.map(days)),
        )),
        Arc::new(Decimal128Array::from_iter_values(base).with_data_type(price_type())),
        Arc::new(Int32Array::from_iter_values(tariffs.iter().map(|t| {
            i32::try_from(t.energy.exceptions.len()).unwrap_or(i32::MAX)
        }))),
        text(&|t| t.capacity.method.clone()),
        Arc::new(StringArray::from_iter(
            tariffs
                .iter()
                .map(|t| capacity::rule(&t.capacity.method).map(|r| r.name())),
        )),
        text(&|t| {
            t.capacity
                .steps
                .steps
                .iter()
                .map(|s| format!("{}:{}", s.from.normalize(), s.nok_per_year.normalize()))
                .collect::<Vec<_>>()
                .join(";")
        }),
        Arc::new(BooleanArray::from_iter(
            tariffs
                .iter()
                .map(|t| Some(t.capacity.steps.threshold_included)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(vec![version_micros; n])
                .with_timezone(crate::schema::UTC),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(hash, n))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            document, n,
        ))),
    ];
    RecordBatch::try_new(GRID_TARIFFS.clone(), columns)
}
