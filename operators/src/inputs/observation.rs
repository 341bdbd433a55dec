//! `observation/v1`: one weather observation of one station.
//!
//! ```json
//! {"schema": "observation/v1", "station": "SN18700", "time": "2026-01-15T00:00:00Z",
//!  "element": "air_temperature", "value": -3.4, "unit": "degC", "resolution": "PT1H",
//!  "source": "frost"}
//! ```
//!
//! - `station`, `element`, `unit`, `resolution`, `source`: short labels;
//! - `value`: exact, at most 3 decimals, -100..100 for `degC`;
//! - one value per station, element, resolution and time: a later record replaces an earlier
//!   one (the `weather_observations_current` view).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use rust_decimal::Decimal;

use super::fields::{decode_each, Fields, Refusal};
use super::price::oslo_date;
use super::{provenance_columns, provenance_fields, utc_timestamp, InputContext, InputOutput};
use crate::dead_letter::Reason;
use crate::RawRecord;

/// The contract's `schema` value.
pub const SCHEMA: &str = "observation/v1";

const VALUE_SCALE: u32 = 3;

fn value_type() -> DataType {
    DataType::Decimal128(12, 3)
}

/// The `weather_observations` table's columns.
pub static WEATHER_OBSERVATIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        vec![
            Field::new("station", DataType::Utf8, false),
            Field::new("time", utc_timestamp(), false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("element", DataType::Utf8, false),
            Field::new("value", value_type(), false),
            Field::new("unit", DataType::Utf8, false),
            Field::new("resolution", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
        ]
        .into_iter()
        .chain(provenance_fields())
        .collect::<Vec<_>>(),
    ))
});

/// One decoded observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationRow {
    pub station: String,
    pub time_micros: i64,
    pub element: String,
    pub value: Decimal,
    pub unit: String,
    pub resolution: String,
    pub source: String,
}

/// Read one `observation/v1` record.
///
/// # Errors
/// The refusal that makes it a dead letter.
pub fn parse(f: &Fields<'_>) -> Result<ObservationRow, Refusal> {
    let value = f.decimal("value")?;
    if value.normalize().scale() > VALUE_SCALE || value.abs() >= Decimal::from(1_000_000_000) {
        return Err(Refusal::new(
            Reason::InvalidValue,
            "value must have at most 3 decimals and 9 integer digits",
        ));
    }
    let unit = f.label("unit", 16)?;
    if unit == "degC" && value.abs() > Decimal::from(100) {
        return Err(Refusal::new(
            Reason::InvalidValue,
            "value outside -100..100 degC",
        ));
    }
    Ok(ObservationRow {
        station: f.label("station", 32)?,
        time_micros: f.instant("time")?,
        element: f.label("element", 64)?,
        value,
        unit,
        resolution: f.label("resolution", 16)?,
        source: f.label("source", 64)?,
    })
}

/// Decode `records` into a `weather_observations` batch and dead letters.
#[must_use]
pub fn decode(records: &[RawRecord<'_>], ctx: &InputContext) -> InputOutput {
    let (rows, dead_letters) = decode_each(records, ctx, SCHEMA, true, parse);
    InputOutput {
        batch: batch(&rows, ctx.ingested_at_micros),
        dead_letters,
    }
}

fn batch(rows: &[(i32, i64, ObservationRow)], ingested_at: i64) -> RecordBatch {
    let n = rows.len();
    let text = || StringBuilder::with_capacity(n, n * 12);
    let stamp = || TimestampMicrosecondBuilder::with_capacity(n).with_timezone(crate::schema::UTC);
    let (mut station, mut element, mut unit, mut resolution, mut source) =
        (text(), text(), text(), text(), text());
    let mut time = stamp();
    let mut local_date = Date32Builder::with_capacity(n);
    let mut value = Decimal128Builder::with_capacity(n).with_data_type(value_type());
    for (_, _, row) in rows {
        station.append_value(&row.station);
        time.append_value(row.time_micros);
        local_date.append_value(oslo_date(row.time_micros));
        element.append_value(&row.element);
        let mut v = row.value;
        v.rescale(VALUE_SCALE);
        value.append_value(v.mantissa());
        unit.append_value(&row.unit);
        resolution.append_value(&row.resolution);
        source.append_value(&row.source);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(station.finish()),
        Arc::new(time.finish()),
        Arc::new(local_date.finish()),
        Arc::new(element.finish()),
        Arc::new(value.finish()),
        Arc::new(unit.finish()),
        Arc::new(resolution.finish()),
        Arc::new(source.finish()),
    ];
    columns.extend(provenance_columns(rows, ingested_at));
    RecordBatch::try_new(WEATHER_OBSERVATIONS.clone(), columns)
        .expect("columns match WEATHER_OBSERVATIONS")
}

/// An `observation/v1` record (what `meterline import weather` produces), keyed by
/// station. The value goes out as its exact decimal text, never through f64.
#[must_use]
pub fn record(o: &ObservationRow) -> (String, String) {
    let time =
        chrono::DateTime::<chrono::Utc>::from_timestamp_micros(o.time_micros).unwrap_or_default();
    let v = serde_json::json!({
        "schema": SCHEMA,
        "station": o.station,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "element": o.element,
        "unit": o.unit,
        "resolution": o.resolution,
        "source": o.source,
    });
    let mut text = v.to_string();
    text.insert_str(
        text.len() - 1,
        &format!(",\"value\":{}", o.value.normalize()),
    );
    (o.station.clone(), text)
}
