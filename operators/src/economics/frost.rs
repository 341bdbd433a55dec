//! MET Norway Frost observations (`/observations/v0.jsonld`) into temperature observations.
//!
//! ```text
//! { "data": [ { "sourceId": "SN18700:0", "referenceTime": "2026-01-15T00:00:00.000Z",
//!               "observations": [ { "elementId": "air_temperature", "value": -3.4,
//!                                   "unit": "degC", "timeResolution": "PT1H",
//!                                   "timeSeriesId": 0, "qualityCode": 0 } ] } ] }
//! ```
//!
//! A station can answer with several series of one element (two sensors, `SN18700:0` and
//! `SN18700:1`, or two `timeSeriesId`s). One value per station, element, resolution and time
//! is kept: the one with the best (lowest) quality code, then the lowest series id, then the
//! lowest sensor; the others are counted as duplicates, not stored. Values are read from the
//! JSON text exactly (no float).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One observation of one station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The station, without the sensor suffix: `SN18700`.
    pub station: String,
    pub time: DateTime<Utc>,
    pub element: String,
    pub value: Decimal,
    pub unit: String,
    /// ISO 8601 duration as Frost gives it (`PT1H`, `PT10M`, `P1D`).
    pub resolution: String,
    /// Frost's quality code (0 best); `None` when absent.
    pub quality: Option<u8>,
}

/// What a Frost document held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FrostObservations {
    pub observations: Vec<Observation>,
    /// Values of a station, element, resolution and time already given by a better series.
    pub duplicates: usize,
}

/// Why a Frost document was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrostError {
    #[error("not a Frost observations document: {0}")]
    Json(String),
    #[error("item {item}: `{field}` is not valid: `{text}`")]
    Invalid {
        item: usize,
        field: &'static str,
        text: String,
    },
}

#[derive(Debug, Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    data: Vec<Item<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    source_id: String,
    reference_time: String,
    #[serde(borrow)]
    observations: Vec<Value<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Value<'a> {
    element_id: String,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    time_resolution: Option<String>,
    #[serde(default)]
    time_series_id: Option<u32>,
    #[serde(default)]
    quality_code: Option<u8>,
}

/// Station, element, resolution, time: one value each.
type SeriesKey = (String, String, String, DateTime<Utc>);
/// Quality code, series id, sensor: lower is preferred.
type Rank = (u8, u32, u32);

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The observations of a Frost document, one per station, element, resolution and time.
///
/// # Errors
/// Not JSON of that shape; a time or value that does not parse.
pub fn parse_frost(json: &str) -> Result<FrostObservations, FrostError> {
    let doc: Document<'_> = serde_json::from_str(json)
        .map_err(|e| FrostError::Json(e.to_string().chars().take(200).collect()))?;
    let mut kept: std::collections::BTreeMap<SeriesKey, (Rank, Observation)> =
        std::collections::BTreeMap::new();
    let mut duplicates = 0;
    for (i, item) in doc.data.iter().enumerate() {
        let item_no = i + 1;
        let invalid = |field, text: &str| FrostError::Invalid {
            item: item_no,
            field,
            text: clip(text),
        };
        let (station, sensor) = match item.source_id.split_once(':') {
            Some((s, n)) => (
                s,
                n.parse::<u32>()
                    .map_err(|_| invalid("sourceId", &item.source_id))?,
            ),
            None => (item.source_id.as_str(), 0),
        };
        if station.is_empty() {
            return Err(invalid("sourceId", &item.source_id));
        }
        let time = DateTime::parse_from_rfc3339(&item.reference_time)
            .map_err(|_| invalid("referenceTime", &item.reference_time))?
            .with_timezone(&Utc);
        for v in &item.observations {
            let text = v.value.get();
            let value = Decimal::from_str_exact(text)
                .or_else(|_| Decimal::from_scientific(text))
                .map_err(|_| invalid("value", text))?;
            let resolution = v.time_resolution.clone().unwrap_or_default();
            let rank = (
                v.quality_code.unwrap_or(u8::MAX),
                v.time_series_id.unwrap_or(0),
                sensor,
            );
            let observation = Observation {
                station: station.to_owned(),
                time,
                element: v.element_id.clone(),
                value,
                unit: v.unit.clone().unwrap_or_default(),
                resolution: resolution.clone(),
                quality: v.quality_code,
            };
            let key = (station.to_owned(), v.element_id.clone(), resolution, time);
            match kept.get_mut(&key) {
                Some(present) => {
                    duplicates += 1;
                    if rank < present.0 {
                        *present = (rank, observation);
                    }
                }
                None => {
                    kept.insert(key, (rank, observation));
                }
            }
        }
    }
    Ok(FrostObservations {
        observations: kept.into_values().map(|(_, o)| o).collect(),
        duplicates,
    })
}
