//! The simple JSON spot price feeds (one file per area and day):
//!
//! ```text
//! [ { "NOK_per_kWh": 1.09505, "EUR_per_kWh": 0.09412, "EXR": 11.6346,
//!     "time_start": "2025-10-01T00:00:00+02:00", "time_end": "2025-10-01T00:15:00+02:00" } ]
//! ```
//!
//! Prices exclude VAT. The area is not in the file (it is in its name), so the caller names
//! it. The resolution is `time_end - time_start` (15 or 60 minutes). Numbers are read from
//! the JSON text exactly.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One price of a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPrice {
    pub start: DateTime<Utc>,
    pub resolution_minutes: u32,
    pub nok_per_kwh: Decimal,
    pub eur_per_kwh: Option<Decimal>,
    /// NOK per EUR the feed used.
    pub nok_per_eur: Option<Decimal>,
}

/// Why a feed was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("not a spot price feed: {0}")]
    Json(String),
    #[error("price {item}: `{field}` is not valid: `{text}`")]
    Invalid {
        item: usize,
        field: &'static str,
        text: String,
    },
}

#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct Item<'a> {
    #[serde(borrow)]
    NOK_per_kWh: &'a RawValue,
    #[serde(borrow, default)]
    EUR_per_kWh: Option<&'a RawValue>,
    #[serde(borrow, default)]
    EXR: Option<&'a RawValue>,
    time_start: String,
    time_end: String,
}

fn exact(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get();
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()
}

/// Every price of a feed, in the file's order.
///
/// # Errors
/// Not JSON of that shape; a time, number or interval that does not parse.
pub fn parse_feed(json: &str) -> Result<Vec<FeedPrice>, FeedError> {
    let items: Vec<Item<'_>> = serde_json::from_str(json)
        .map_err(|e| FeedError::Json(e.to_string().chars().take(200).collect()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let invalid = |field, text: &str| FeedError::Invalid {
                item: i + 1,
                field,
                text: text.chars().take(40).collect(),
            };
            let time = |field, text: &str| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| invalid(field, text))
            };
            let start = time("time_start", &item.time_start)?;
            let end = time("time_end", &item.time_end)?;
            let resolution_minutes = match (end - start).num_minutes() {
                15 => 15,
                60 => 60,
                _ => return Err(invalid("time_end", &item.time_end)),
            };
            let optional = |field, raw: Option<&RawValue>| {
                raw.filter(|r| r.get() != "null")
                    .map(|r| exact(r).ok_or_else(|| invalid(field, r.get())))
                    .transpose()
            };
            Ok(FeedPrice {
                start,
                resolution_minutes,
                nok_per_kwh: exact(item.NOK_per_kWh)
                    .ok_or_else(|| invalid("NOK_per_kWh", item.NOK_per_kWh.get()))?,
                eur_per_kwh: optional("EUR_per_kWh", item.EUR_per_kWh)?,
                nok_per_eur: optional("EXR", item.EXR)?,
            })
        })
        .collect()
}
