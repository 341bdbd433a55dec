//! The `weather_stations` table: each import of a Frost sources document (`meterline
//! import stations`, no topic) as one row per station, with its position.
//!
//! A meter whose profile has coordinates but names no station takes the nearest open
//! station of the newest import ([`crate::economics::weather::station_for`]). Stations are
//! places, not people: their positions are kept as Frost gives them.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::utc_timestamp;
use crate::economics::frost::FrostStation;

/// The `weather_stations` table's columns.
pub static WEATHER_STATIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // Frost's id, e.g. SN18700 (as `weather_observations.station`).
        Field::new("station", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        // Degrees (WGS 84).
        Field::new("latitude", DataType::Float64, false),
        Field::new("longitude", DataType::Float64, false),
        // When the station closed; null: open. Closed stations are not chosen.
        Field::new("valid_to", utc_timestamp(), true),
        Field::new("source", DataType::Utf8, false),
        // The import's time: the newest version of a station wins.
        Field::new("version", utc_timestamp(), false),
        Field::new("document_hash", DataType::Utf8, false),
    ]))
});

/// The rows of one imported document.
///
/// # Errors
/// Arrow refusing the columns (a bug).
pub fn batch(
    stations: &[FrostStation],
    source: &str,
    hash: &str,
    version_micros: i64,
) -> Result<RecordBatch, ArrowError> {
    let n = stations.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            stations.iter().map(|s| s.id.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            stations.iter().map(|s| s.name.as_deref()),
        )),
        Arc::new(Float64Array::from_iter_values(
            stations.iter().map(|s| s.latitude),
        )),
        Arc::new(Float64Array::from_iter_values(
            stations.iter().map(|s| s.longitude),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                stations
                    .iter()
                    .map(|s| s.valid_to.map(|t| t.timestamp_micros())),
            )
            .with_timezone(crate::schema::UTC),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            source, n,
        ))),
        Arc::new(
            TimestampMicrosecondArray::from(vec![version_micros; n])
                .with_timezone(crate::schema::UTC),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(hash, n))),
    ];
    RecordBatch::try_new(WEATHER_STATIONS.clone(), columns)
}
