//! The `exchange_rates` table: each import of a Norges Bank rate file (`meterline import
//! exchange-rates`, no topic) as one row per currency and day, NOK per unit.
//!
//! The cost tables convert an EUR price that carries no rate of its own with the rate
//! [`crate::economics::exchange::ExchangeRates::for_delivery`] picks. Every import is
//! kept (`version`, `document_hash`): a rate published again replaces the earlier one
//! from the newer import on.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::utc_timestamp;
use crate::economics::exchange::ExchangeRate;

/// Decimals of the stored rate (Norges Bank quotes 4, a currency quoted per 100 units
/// gets 6).
pub const RATE_SCALE: u32 = 8;

fn rate_type() -> DataType {
    DataType::Decimal128(18, RATE_SCALE as i8)
}

/// The `exchange_rates` table's columns.
pub static EXCHANGE_RATES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // ISO 4217, e.g. EUR.
        Field::new("currency", DataType::Utf8, false),
        // The day the rate was published for.
        Field::new("date", DataType::Date32, false),
        Field::new("nok_per_unit", rate_type(), false),
        // Who published it (`norges-bank` unless the import says otherwise).
        Field::new("source", DataType::Utf8, false),
        // The import's time: the newest version of a (currency, date) wins.
        Field::new("version", utc_timestamp(), false),
        Field::new("document_hash", DataType::Utf8, false),
    ]))
});

/// The rows of one imported file.
///
/// # Errors
/// A rate with more decimals than the table keeps.
pub fn batch(
    rates: &[ExchangeRate],
    source: &str,
    hash: &str,
    version_micros: i64,
) -> Result<RecordBatch, ArrowError> {
    let n = rates.len();
    let values = rates
        .iter()
        .map(|r| super::scaled_to(r.nok_per_unit, RATE_SCALE))
        .collect::<Result<Vec<_>, _>>()?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rates.iter().map(|r| r.currency.as_str()),
        )),
        Arc::new(Date32Array::from_iter_values(
            rates
                .iter()
                .map(|r| crate::aggregate::days_since_epoch(r.date)),
        )),
        Arc::new(Decimal128Array::from_iter_values(values).with_data_type(rate_type())),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            source, n,
        ))),
        Arc::new(
            TimestampMicrosecondArray::from(vec![version_micros; n])
                .with_timezone(crate::schema::UTC),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(hash, n))),
    ];
    RecordBatch::try_new(EXCHANGE_RATES.clone(), columns)
}
