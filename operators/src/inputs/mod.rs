//! The economics inputs' contracts: `price/v1`, `meter-profile/v1` and `observation/v1`,
//! each a JSON object per Kafka message, decoded into its table's Arrow batch.
//!
//! ```text
//!  market.prices        ─ price/v1 ─────────▶ spot_prices            (reference data)
//!  meter.profiles       ─ meter-profile/v1 ─▶ meter_profiles         (private tenants only)
//!  weather.observations ─ observation/v1 ───▶ weather_observations   (reference data)
//!                                  └─ refused ─▶ DeadLetter { reason, detail }
//! ```
//!
//! Guarantees, as for readings: every record comes out once, as a row or as a dead letter
//! with a stable [`Reason`]; numbers are read from their JSON text, exactly; `detail` names
//! fields and rules, never values. Payloads are small: these are low-volume topics, decoded
//! record by record through `serde_json` (not the readings' fast path).
//!
//! - `price.rs`, `profile.rs`, `observation.rs`: one contract each;
//! - `tariffs.rs`: the `grid_tariffs` table (`meterline import tariffs`, no topic);
//! - `rates.rs`: the `tax_rates` table (defaults and `[[economics.rates]]`, no topic);
//! - `exchange.rs`: the `exchange_rates` table (`meterline import exchange-rates`, no topic);
//! - `stations.rs`: the `weather_stations` table (`meterline import stations`, no topic);
//! - `fields.rs`: the envelope (size, UTF-8, object, `schema`) and typed field readers.

pub mod exchange;
pub mod fields;
pub mod observation;
pub mod price;
pub mod profile;
pub mod rates;
pub mod stations;
pub mod tariffs;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::DeadLetter;

/// The type of every stored instant: microseconds, UTC.
pub(crate) fn utc_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(crate::schema::UTC.into()))
}

/// The columns every input table ends with: when each row was consumed, and its Kafka
/// partition and offset (what exactly-once commits are keyed by).
pub(crate) fn provenance_fields() -> [Field; 3] {
    [
        Field::new("ingested_at", utc_timestamp(), false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
    ]
}

/// The [`provenance_fields`] columns of `rows` (Kafka partition, offset, row).
pub(crate) fn provenance_columns<T>(rows: &[(i32, i64, T)], ingested_at: i64) -> [ArrayRef; 3] {
    [
        Arc::new(
            TimestampMicrosecondArray::from(vec![ingested_at; rows.len()])
                .with_timezone(crate::schema::UTC),
        ),
        Arc::new(rows.iter().map(|r| r.0).collect::<Int32Array>()),
        Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
    ]
}

/// `value` as an `i128` of `scale` decimals (a `Decimal128` column's value), or why not.
pub(crate) fn scaled_to(
    value: rust_decimal::Decimal,
    scale: u32,
) -> Result<i128, arrow::error::ArrowError> {
    if value.normalize().scale() > scale {
        return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "a value has more than {scale} decimals"
        )));
    }
    let mut v = value;
    v.rescale(scale);
    Ok(v.mantissa())
}

/// What decoding a slice of one input's records gives.
#[derive(Debug)]
pub struct InputOutput {
    pub batch: RecordBatch,
    pub dead_letters: Vec<DeadLetter>,
}

/// What every input decoder is given besides the records.
#[derive(Debug, Clone, Copy)]
pub struct InputContext {
    /// When the records were consumed (microseconds since the epoch, UTC).
    pub ingested_at_micros: i64,
    /// Larger payloads are `too_large` dead letters.
    pub max_message_bytes: usize,
}
