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
//!
//! Frost's stations (`/sources/v0.jsonld?types=SensorSystem&elements=air_temperature`) give
//! each station's position, for the meters whose profile has coordinates but names no
//! station ([`parse_sources`]):
//!
//! ```text
//! { "data": [ { "@type": "SensorSystem", "id": "SN18700", "name": "OSLO - BLINDERN",
//!               "geometry": { "@type": "Point", "coordinates": [10.72, 59.9423] },
//!               "validFrom": "1931-01-01T00:00:00.000Z" } ] }
//! ```
//!
//! `coordinates` are GeoJSON's: longitude first.

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

/// A station of a Frost sources document.
#[derive(Debug, Clone, PartialEq)]
pub struct FrostStation {
    /// `SN18700`.
    pub id: String,
    pub name: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
    /// When the station closed; `None`: it is open.
    pub valid_to: Option<DateTime<Utc>>,
}

/// What a Frost sources document held.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrostSources {
    pub stations: Vec<FrostStation>,
    /// Sources that are not a station with a position (`@type` other than
    /// `SensorSystem`, or no `geometry`): not stations a meter can be near.
    pub skipped: usize,
}

#[derive(Debug, Deserialize)]
struct SourcesDocument {
    data: Vec<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    #[serde(rename = "@type", default)]
    kind: Option<String>,
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    geometry: Option<Geometry>,
    #[serde(default)]
    valid_to: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Geometry {
    coordinates: Vec<f64>,
}

/// The stations of a Frost sources document (see the module documentation).
///
/// # Errors
/// Not JSON of that shape; an id that is not a station id (`SN` and digits); coordinates
/// that are not a longitude and a latitude; a `validTo` that is not a time; the same
/// station twice.
pub fn parse_sources(json: &str) -> Result<FrostSources, FrostError> {
    let doc: SourcesDocument = serde_json::from_str(json)
        .map_err(|e| FrostError::Json(e.to_string().chars().take(200).collect()))?;
    let mut out = FrostSources::default();
    let mut seen = std::collections::BTreeSet::new();
    for (i, source) in doc.data.into_iter().enumerate() {
        let invalid = |field, text: &str| FrostError::Invalid {
            item: i + 1,
            field,
            text: clip(text),
        };
        let Some(geometry) = source.geometry else {
            out.skipped += 1;
            continue;
        };
        if source.kind.as_deref().is_some_and(|k| k != "SensorSystem") {
            out.skipped += 1;
            continue;
        }
        let id = source.id;
        let digits = id.strip_prefix("SN").unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("id", &id));
        }
        let [longitude, latitude] = geometry.coordinates[..] else {
            return Err(invalid(
                "geometry.coordinates",
                &format!("{:?}", geometry.coordinates),
            ));
        };
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Err(invalid(
                "geometry.coordinates",
                &format!("[{longitude}, {latitude}]"),
            ));
        }
        let valid_to = source
            .valid_to
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| invalid("validTo", &t))
            })
            .transpose()?;
        if !seen.insert(id.clone()) {
            return Err(invalid("id", &format!("{id} (twice)")));
        }
        out.stations.push(FrostStation {
            id,
            name: source.name,
            latitude,
            longitude,
            valid_to,
        });
    }
    Ok(out)
}
