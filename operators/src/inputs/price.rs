//! `price/v1`: one spot price of one area for one interval.
//!
//! ```json
//! {"schema": "price/v1", "area": "NO1", "start": "2026-01-15T00:00:00Z",
//!  "resolution": "PT15M", "price": 45.12, "currency": "EUR", "unit": "MWh",
//!  "exchange_rate": 11.70, "source": "entsoe", "version": "2026-01-14T12:42:00Z"}
//! ```
//!
//! - `area`: `NO1`..`NO5`; `resolution`: `PT15M` or `PT60M` (`PT1H`); `start` on its grid;
//! - `price` in `EUR` per `MWh` (ENTSO-E) or `NOK` per `kWh` (the JSON feeds), excluding
//!   VAT, at most 6 decimals; `exchange_rate` (NOK per EUR) optional;
//! - prices outside -500..4000 EUR/MWh are `price_out_of_range`. A NOK price is converted
//!   at its `exchange_rate`, or, without one, at 15 NOK/EUR (refusing only what is out of
//!   range at any plausible rate: -7.5..60 NOK/kWh);
//! - `version`: when the price was published. For one area, start and resolution the newest
//!   version is the price (the `spot_prices_current` view); older ones stay as history.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::fields::{decode_each, Fields, Refusal};
use super::{provenance_columns, provenance_fields, utc_timestamp, InputContext, InputOutput};
use crate::dead_letter::Reason;
use crate::economics::PriceArea;
use crate::RawRecord;

/// The contract's `schema` value.
pub const SCHEMA: &str = "price/v1";

/// Decimals kept of a price and a rate.
pub const PRICE_SCALE: i8 = 6;
const PRICE_PRECISION: u8 = 18;

/// The plausible range of a day-ahead price, EUR/MWh (the market's own limits).
pub const MIN_EUR_PER_MWH: i64 = -500;
pub const MAX_EUR_PER_MWH: i64 = 4000;
/// The rate a NOK price without its own is checked at.
const CHECK_RATE_NOK_PER_EUR: i64 = 15;

fn price_type() -> DataType {
    DataType::Decimal128(PRICE_PRECISION, PRICE_SCALE)
}

/// The `spot_prices` table's columns.
pub static SPOT_PRICES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        vec![
            Field::new("area", DataType::Utf8, false),
            Field::new("interval_start", utc_timestamp(), false),
            Field::new("resolution_minutes", DataType::Int32, false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("price", price_type(), false),
            Field::new("currency", DataType::Utf8, false),
            Field::new("unit", DataType::Utf8, false),
            Field::new("exchange_rate", price_type(), true),
            Field::new("source", DataType::Utf8, false),
            Field::new("version", utc_timestamp(), false),
        ]
        .into_iter()
        .chain(provenance_fields())
        .collect::<Vec<_>>(),
    ))
});

/// One decoded price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub area: PriceArea,
    pub start_micros: i64,
    pub resolution_minutes: i32,
    pub price: Decimal,
    pub currency: &'static str,
    pub unit: &'static str,
    pub exchange_rate: Option<Decimal>,
    pub source: String,
    pub version_micros: i64,
}

/// `value` at [`PRICE_SCALE`] decimals as an `i128` of that scale.
///
/// # Errors
/// More decimals than that, or more than 12 integer digits.
pub fn scaled(name: &str, value: Decimal) -> Result<i128, Refusal> {
    let scale = u32::try_from(PRICE_SCALE).unwrap_or(6);
    if value.normalize().scale() > scale {
        return Err(Refusal::new(
            Reason::InvalidValue,
            format!("{name} has more than {PRICE_SCALE} decimals"),
        ));
    }
    let mut v = value;
    v.rescale(scale);
    let units = v.mantissa();
    if units.abs() >= 10_i128.pow(u32::from(PRICE_PRECISION)) {
        return Err(Refusal::new(
            Reason::InvalidValue,
            format!("{name} is too large"),
        ));
    }
    Ok(units)
}

/// Read one `price/v1` record.
///
/// # Errors
/// The refusal that makes it a dead letter.
pub fn parse(f: &Fields<'_>) -> Result<Price, Refusal> {
    let area_text = f.text("area")?;
    let area = PriceArea::ALL
        .into_iter()
        .find(|a| a.code() == area_text)
        .ok_or_else(|| Refusal::new(Reason::InvalidValue, "area must be NO1..NO5"))?;
    let resolution_minutes = match f.text("resolution")?.as_str() {
        "PT15M" => 15,
        "PT60M" | "PT1H" => 60,
        _ => {
            return Err(Refusal::new(
                Reason::InvalidValue,
                "resolution must be PT15M or PT60M",
            ))
        }
    };
    let start_micros = f.instant("start")?;
    if start_micros.rem_euclid(i64::from(resolution_minutes) * 60_000_000) != 0 {
        return Err(Refusal::new(Reason::MisalignedInterval, "start"));
    }
    let (currency, unit) = match (f.text("currency")?.as_str(), f.text("unit")?.as_str()) {
        ("EUR", "MWh") => ("EUR", "MWh"),
        ("NOK", "kWh") => ("NOK", "kWh"),
        _ => {
            return Err(Refusal::new(
                Reason::UnitNotAllowed,
                "currency/unit must be EUR/MWh or NOK/kWh",
            ))
        }
    };
    let price = f.decimal("price")?;
    scaled("price", price)?;
    let exchange_rate = f.opt_decimal("exchange_rate")?;
    if let Some(rate) = exchange_rate {
        scaled("exchange_rate", rate)?;
        if rate <= Decimal::ZERO {
            return Err(Refusal::new(
                Reason::InvalidValue,
                "exchange_rate must be above 0",
            ));
        }
    }
    let eur_per_mwh = match currency {
        "EUR" => price,
        _ => {
            price * Decimal::ONE_THOUSAND
                / exchange_rate.unwrap_or(Decimal::from(CHECK_RATE_NOK_PER_EUR))
        }
    };
    if eur_per_mwh < Decimal::from(MIN_EUR_PER_MWH) || eur_per_mwh > Decimal::from(MAX_EUR_PER_MWH)
    {
        return Err(Refusal::new(
            Reason::PriceOutOfRange,
            format!("price outside {MIN_EUR_PER_MWH}..{MAX_EUR_PER_MWH} EUR/MWh"),
        ));
    }
    Ok(Price {
        area,
        start_micros,
        resolution_minutes,
        price,
        currency,
        unit,
        exchange_rate,
        source: f.label("source", 64)?,
        version_micros: f.instant("version")?,
    })
}

/// Decode `records` into a `spot_prices` batch and dead letters.
///
/// # Panics
/// Never: the columns match [`SPOT_PRICES`] by construction.
#[must_use]
pub fn decode(records: &[RawRecord<'_>], ctx: &InputContext) -> InputOutput {
    let (rows, dead_letters) = decode_each(records, ctx, SCHEMA, true, parse);
    InputOutput {
        batch: batch(&rows, ctx.ingested_at_micros),
        dead_letters,
    }
}

fn batch(rows: &[(i32, i64, Price)], ingested_at: i64) -> RecordBatch {
    let n = rows.len();
    let mut area = StringBuilder::with_capacity(n, n * 3);
    let mut start = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(crate::schema::UTC);
    let mut resolution = Int32Builder::with_capacity(n);
    let mut local_date = Date32Builder::with_capacity(n);
    let mut price = Decimal128Builder::with_capacity(n).with_data_type(price_type());
    let mut currency = StringBuilder::with_capacity(n, n * 3);
    let mut unit = StringBuilder::with_capacity(n, n * 3);
    let mut rate = Decimal128Builder::with_capacity(n).with_data_type(price_type());
    let mut source = StringBuilder::with_capacity(n, n * 8);
    let mut version =
        TimestampMicrosecondBuilder::with_capacity(n).with_timezone(crate::schema::UTC);
    for (_, _, row) in rows {
        area.append_value(row.area.code());
        start.append_value(row.start_micros);
        resolution.append_value(row.resolution_minutes);
        local_date.append_value(oslo_date(row.start_micros));
        price.append_value(scaled("price", row.price).unwrap_or_default());
        currency.append_value(row.currency);
        unit.append_value(row.unit);
        rate.append_option(
            row.exchange_rate
                .and_then(|r| scaled("exchange_rate", r).ok()),
        );
        source.append_value(&row.source);
        version.append_value(row.version_micros);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(area.finish()),
        Arc::new(start.finish()),
        Arc::new(resolution.finish()),
        Arc::new(local_date.finish()),
        Arc::new(price.finish()),
        Arc::new(currency.finish()),
        Arc::new(unit.finish()),
        Arc::new(rate.finish()),
        Arc::new(source.finish()),
        Arc::new(version.finish()),
    ];
    columns.extend(provenance_columns(rows, ingested_at));
    RecordBatch::try_new(SPOT_PRICES.clone(), columns).expect("columns match SPOT_PRICES")
}

/// The Europe/Oslo date of an instant, as days since 1970-01-01: prices are a Norwegian
/// market's, whatever the tenant's calendar.
#[must_use]
pub fn oslo_date(micros: i64) -> i32 {
    let t = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    crate::aggregate::days_since_epoch(t.with_timezone(&chrono_tz::Europe::Oslo).date_naive())
}

/// A `price/v1` record (what `meterline import prices` produces), keyed by area.
#[must_use]
pub fn record(p: &Price) -> (String, String) {
    let start = DateTime::<Utc>::from_timestamp_micros(p.start_micros).unwrap_or_default();
    let version = DateTime::<Utc>::from_timestamp_micros(p.version_micros).unwrap_or_default();
    let v = serde_json::json!({
        "schema": SCHEMA,
        "area": p.area.code(),
        "start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "resolution": if p.resolution_minutes == 15 { "PT15M" } else { "PT60M" },
        "currency": p.currency,
        "unit": p.unit,
        "source": p.source,
        "version": version.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    // Numbers go out as their exact decimal text, never through f64.
    let mut text = v.to_string();
    let mut extra = format!(",\"price\":{}", p.price.normalize());
    if let Some(rate) = p.exchange_rate {
        extra.push_str(&format!(",\"exchange_rate\":{}", rate.normalize()));
    }
    text.insert_str(text.len() - 1, &extra);
    (p.area.code().to_owned(), text)
}
