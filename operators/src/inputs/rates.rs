//! The `tax_rates` table: the dated rates meterline prices with (consumption tax, Enova
//! fee, VAT, strømstøtte threshold and share, Norgespris), its defaults for 2024-2026 plus
//! the rows of `[[economics.rates]]`, in the order they apply (a later row wins over one
//! of the same start; see [`crate::economics::rates`]). `meterline run` writes it at start
//! whenever it differs, so SQL shows the rates in effect.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::economics::rates::RateRow;

/// Decimals of a stored value.
pub const VALUE_SCALE: u32 = 6;

fn value_type() -> DataType {
    DataType::Decimal128(18, VALUE_SCALE as i8)
}

/// The `tax_rates` table's columns.
pub static TAX_RATES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // Position in the table: of two rows with the same start, the later wins.
        Field::new("position", DataType::Int32, false),
        Field::new("rate", DataType::Utf8, false),
        // standard, north, finnmark; null: every zone.
        Field::new("zone", DataType::Utf8, true),
        Field::new("valid_from", DataType::Date32, false),
        // Excluded; null: until replaced.
        Field::new("valid_to", DataType::Date32, true),
        Field::new("value", value_type(), false),
        // ore_per_kwh or share.
        Field::new("unit", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
    ]))
});

/// The rows of a rate table, in order.
///
/// # Errors
/// A value with more decimals than the table keeps.
pub fn batch(rows: &[RateRow]) -> Result<RecordBatch, ArrowError> {
    let days = crate::aggregate::days_since_epoch;
    let values = rows
        .iter()
        .map(|r| super::scaled_to(r.value, VALUE_SCALE))
        .collect::<Result<Vec<_>, _>>()?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            (0..rows.len()).map(|i| i32::try_from(i).unwrap_or(i32::MAX)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.rate.name()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.zone.map(|z| z.name())),
        )),
        Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|r| days(r.valid_from)),
        )),
        Arc::new(Date32Array::from_iter(
            rows.iter().map(|r| r.valid_to.map(days)),
        )),
        Arc::new(Decimal128Array::from_iter_values(values).with_data_type(value_type())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.rate.unit()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
    ];
    RecordBatch::try_new(TAX_RATES.clone(), columns)
}
