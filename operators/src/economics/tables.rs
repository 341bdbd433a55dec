//! The cost and insight tables over Arrow batches: what the pipeline's cost materializer
//! reads (readings, prices, profiles, tariffs, temperatures) turned into the rows it writes.
//!
//! | table | one row per | partitioned by |
//! |---|---|---|
//! | `cost_hourly` | meter, direction, hour (UTC start; 23/25 on DST days) | tenant, local_date |
//! | `cost_daily` | meter, direction, local date | tenant, local_date |
//! | `temperature_daily` | meter, local date (consumption) | tenant, local_date |
//! | `cost_monthly` | meter, direction, local month | tenant, month |
//! | `capacity_peaks` | meter, month, rank 1-3 | tenant, month |
//! | `duration_curve` | meter, direction, month, rank | tenant, month |
//! | `temperature_sensitivity` | meter, heating season | tenant, season |
//!
//! Day rows are a function of the day's readings and the inputs of that day; month rows are a
//! function of the month's `cost_hourly` rows (no reading is read twice), the profile and the
//! tariff on the month's first day; season rows are a function of `temperature_daily`.
//!
//! `complete` is false whenever something the row needs was missing: a reading (a 15-minute
//! meter's quarter, an hour of the day or month), a price, the meter's profile, a tariff, a
//! rate. A missing amount is null, never zero. Money is `Decimal128(38, 9)` NOK (see
//! `hour.rs` for the rounding).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Decimal128Array, Decimal128Builder,
    Int32Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int32Type, Schema, SchemaRef,
    TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::capacity::{self, DemandInput, HourKwh};
use super::day::{cost_of_day, CostHour, MeterDay, Prices, Reading};
use super::exchange::{ExchangeRate, ExchangeRates};
use super::hour::{ore_per_kwh, HourCost, Scheme};
use super::insights::{duration_curve, heating_degree_days, heating_season, least_squares};
use super::month::{cost_of_month, MonthInput};
use super::rates::{RateTable, TaxZone};
use super::tariff::{CustomerGroup, GridTariff};
use super::weather::{daily_mean, station_for, Station};
use super::{PriceArea, NOK_SCALE};
use crate::aggregate::{date_of, days_since_epoch};
use crate::operator::OperatorError;
use crate::schema::UTC;

const OPERATOR: &str = "cost";

/// Money: NOK with [`NOK_SCALE`] decimals.
pub const MONEY_PRECISION: u8 = 38;
/// kWh: thousandths, like readings.
pub const KWH_SCALE: u32 = 3;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}
fn money() -> DataType {
    DataType::Decimal128(MONEY_PRECISION, NOK_SCALE as i8)
}
fn kwh() -> DataType {
    DataType::Decimal128(38, KWH_SCALE as i8)
}
fn dec(scale: i8) -> DataType {
    DataType::Decimal128(38, scale)
}

const MONEY_COLUMNS: [&str; 7] = [
    "spot_nok",
    "support_nok",
    "grid_energy_nok",
    "consumption_tax_nok",
    "enova_nok",
    "vat_nok",
    "total_nok",
];

fn money_fields() -> Vec<Field> {
    MONEY_COLUMNS
        .iter()
        .map(|c| Field::new(*c, money(), true))
        .collect()
}

fn schema(fields: Vec<Vec<Field>>) -> SchemaRef {
    Arc::new(Schema::new(fields.concat()))
}

fn key(direction: bool) -> Vec<Field> {
    let mut f = vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("meter", DataType::Utf8, false),
    ];
    if direction {
        f.push(Field::new("direction", DataType::Utf8, false));
    }
    f
}

/// `cost_hourly`.
pub static COST_HOURLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(true),
        vec![
            Field::new("hour_start", ts(), false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("local_hour", DataType::Int32, false),
            Field::new("kwh", kwh(), false),
        ],
        money_fields(),
        vec![
            Field::new("complete", DataType::Boolean, false),
            Field::new("price_area", DataType::Utf8, true),
            Field::new("scheme", DataType::Utf8, true),
            Field::new("profile_valid_from", DataType::Date32, true),
            Field::new("tariff_version", DataType::Utf8, true),
            Field::new("price_version", ts(), true),
            Field::new("rates_version", DataType::Utf8, false),
        ],
    ])
});

/// `cost_daily`.
pub static COST_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(true),
        vec![
            Field::new("local_date", DataType::Date32, false),
            Field::new("kwh", kwh(), false),
        ],
        money_fields(),
        vec![
            Field::new("hours", DataType::Int32, false),
            Field::new("expected_hours", DataType::Int32, false),
            Field::new("complete", DataType::Boolean, false),
        ],
    ])
});

/// `cost_monthly`.
pub static COST_MONTHLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(true),
        vec![
            Field::new("month", DataType::Date32, false),
            Field::new("kwh", kwh(), false),
        ],
        MONEY_COLUMNS[..6]
            .iter()
            .map(|c| Field::new(*c, money(), true))
            .collect(),
        vec![
            Field::new("capacity_method", DataType::Utf8, true),
            Field::new("capacity_demand", dec(4), true),
            Field::new("capacity_step_from", dec(4), true),
            Field::new("capacity_nok", money(), true),
            Field::new("capacity_vat_nok", money(), true),
            Field::new("total_nok", money(), true),
            Field::new("hours", DataType::Int32, false),
            Field::new("expected_hours", DataType::Int32, false),
            Field::new("complete", DataType::Boolean, false),
        ],
    ])
});

/// `capacity_peaks`.
pub static CAPACITY_PEAKS: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(false),
        vec![
            Field::new("month", DataType::Date32, false),
            Field::new("rank", DataType::Int32, false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("local_hour", DataType::Int32, false),
            Field::new("kwh", kwh(), false),
            Field::new("capacity_method", DataType::Utf8, true),
            Field::new("demand", dec(4), true),
            Field::new("step_from", dec(4), true),
            Field::new("next_step_from", dec(4), true),
            Field::new("next_step_kwh", kwh(), true),
        ],
    ])
});

/// `duration_curve`.
pub static DURATION_CURVE: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(true),
        vec![
            Field::new("month", DataType::Date32, false),
            Field::new("rank", DataType::Int32, false),
            Field::new("hour_start", ts(), false),
            Field::new("kwh", kwh(), false),
        ],
    ])
});

/// `temperature_daily`.
pub static TEMPERATURE_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(false),
        vec![
            Field::new("local_date", DataType::Date32, false),
            Field::new("kwh", kwh(), false),
            Field::new("station", DataType::Utf8, true),
            Field::new("mean_temperature_c", dec(3), true),
            Field::new("heating_degree_days", dec(3), true),
        ],
    ])
});

/// `temperature_sensitivity`.
pub static TEMPERATURE_SENSITIVITY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(vec![
        key(false),
        vec![
            Field::new("season", DataType::Int32, false),
            Field::new("days", DataType::Int32, false),
            Field::new("slope_kwh_per_c", dec(6), false),
            Field::new("intercept_kwh", dec(6), false),
            Field::new("r2", dec(6), false),
        ],
    ])
});

// ---- reading inputs ----

fn schema_error(column: &'static str) -> OperatorError {
    OperatorError::Schema {
        operator: OPERATOR,
        column,
    }
}

fn arrow_error(source: arrow::error::ArrowError) -> OperatorError {
    OperatorError::Arrow {
        operator: OPERATOR,
        source,
    }
}

fn strings<'a>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::StringArray, OperatorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or(schema_error(name))
}

fn decimals<'a>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a Decimal128Array, OperatorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Decimal128Type>())
        .ok_or(schema_error(name))
}

fn int32s<'a>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<Int32Type>, OperatorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or(schema_error(name))
}

fn dates<'a>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<Date32Type>, OperatorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .ok_or(schema_error(name))
}

fn floats<'a>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<Float64Type>, OperatorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Float64Type>())
        .ok_or(schema_error(name))
}

fn times<'a>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<TimestampMicrosecondType>, OperatorError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or(schema_error(name))
}

/// The exact decimal of a `Decimal128` cell.
fn decimal_at(a: &Decimal128Array, row: usize) -> Decimal {
    Decimal::from_i128_with_scale(a.value(row), u32::try_from(a.scale()).unwrap_or(0))
}

fn opt_decimal_at(a: &Decimal128Array, row: usize) -> Option<Decimal> {
    a.is_valid(row).then(|| decimal_at(a, row))
}

fn utc(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Spot prices of each area by interval start, in øre/kWh, with the version of each.
#[derive(Debug, Clone, Default)]
pub struct AreaPrices {
    pub prices: BTreeMap<PriceArea, Prices>,
    /// The publication time (µs) of each price used.
    pub versions: BTreeMap<(PriceArea, DateTime<Utc>), i64>,
}

/// The newest version of every (currency, date) rate in `exchange_rates` rows (columns
/// `currency`, `date`, `nok_per_unit`, `version`); of equal versions, the later row.
///
/// # Errors
/// Batches without those columns.
pub fn exchange_rates_from(batches: &[RecordBatch]) -> Result<ExchangeRates, OperatorError> {
    let mut newest: BTreeMap<(String, i32), (i64, Decimal)> = BTreeMap::new();
    for b in batches {
        let currency = strings(b, "currency")?;
        let date = dates(b, "date")?;
        let rate = decimals(b, "nok_per_unit")?;
        let version = times(b, "version")?;
        for row in 0..b.num_rows() {
            let key = (currency.value(row).to_owned(), date.value(row));
            let v = version.value(row);
            if newest.get(&key).is_none_or(|(stored, _)| *stored <= v) {
                newest.insert(key, (v, decimal_at(rate, row)));
            }
        }
    }
    Ok(ExchangeRates::new(newest.into_iter().map(
        |((currency, date), (_, nok_per_unit))| ExchangeRate {
            currency,
            date: date_of(date),
            nok_per_unit,
        },
    )))
}

/// The open stations of `weather_stations` rows (columns `station`, `latitude`,
/// `longitude`, `valid_to`, `version`): the newest version of each, without those that
/// closed (`valid_to` set), ordered by id.
///
/// # Errors
/// Batches without those columns.
pub fn stations_from(batches: &[RecordBatch]) -> Result<Vec<Station>, OperatorError> {
    let mut newest: BTreeMap<String, (i64, Option<(f64, f64)>)> = BTreeMap::new();
    for b in batches {
        let id = strings(b, "station")?;
        let lat = floats(b, "latitude")?;
        let lon = floats(b, "longitude")?;
        let valid_to = times(b, "valid_to")?;
        let version = times(b, "version")?;
        for row in 0..b.num_rows() {
            let v = version.value(row);
            let at = valid_to
                .is_null(row)
                .then(|| (lat.value(row), lon.value(row)));
            let key = id.value(row);
            if newest.get(key).is_none_or(|(stored, _)| *stored <= v) {
                newest.insert(key.to_owned(), (v, at));
            }
        }
    }
    Ok(newest
        .into_iter()
        .filter_map(|(id, (_, at))| {
            at.map(|(latitude, longitude)| Station {
                id,
                latitude,
                longitude,
            })
        })
        .collect())
}

/// The newest version of every (area, start, resolution) price in `spot_prices` rows
/// (columns `area`, `interval_start`, `resolution_minutes`, `price`, `currency`, `unit`,
/// `exchange_rate`, `version`), in øre/kWh. An EUR price is converted with its own
/// `exchange_rate`, or else with the rate of `exchange` for its delivery day (Oslo's date;
/// see [`ExchangeRates::for_delivery`]); without either it is left out (its hours are
/// incomplete).
///
/// # Errors
/// Batches without those columns.
pub fn prices_from(
    batches: &[RecordBatch],
    exchange: &ExchangeRates,
) -> Result<AreaPrices, OperatorError> {
    let mut newest: BTreeMap<(PriceArea, i64, i32), (i64, Option<Decimal>)> = BTreeMap::new();
    for b in batches {
        let area = strings(b, "area")?;
        let start = times(b, "interval_start")?;
        let resolution = int32s(b, "resolution_minutes")?;
        let price = decimals(b, "price")?;
        let currency = strings(b, "currency")?;
        let unit = strings(b, "unit")?;
        let rate = decimals(b, "exchange_rate")?;
        let version = times(b, "version")?;
        for row in 0..b.num_rows() {
            let Some(a) = PriceArea::parse(area.value(row)) else {
                continue;
            };
            let p = decimal_at(price, row);
            let ore = match (currency.value(row), unit.value(row)) {
                ("NOK", "kWh") => Some(p * Decimal::ONE_HUNDRED),
                ("EUR", "MWh") => opt_decimal_at(rate, row)
                    .or_else(|| {
                        let day = utc(start.value(row))
                            .with_timezone(&chrono_tz::Europe::Oslo)
                            .date_naive();
                        exchange.for_delivery("EUR", day).map(|(_, r)| r)
                    })
                    .map(|r| ore_per_kwh(p, r)),
                _ => None,
            };
            let key = (a, start.value(row), resolution.value(row));
            let v = version.value(row);
            match newest.get(&key) {
                Some((stored, _)) if *stored >= v => {}
                _ => {
                    newest.insert(key, (v, ore));
                }
            }
        }
    }
    let mut out = AreaPrices::default();
    for ((area, start, resolution), (version, ore)) in newest {
        let Some(ore) = ore else { continue };
        let at = utc(start);
        out.prices
            .entry(area)
            .or_default()
            .insert(at, (u32::try_from(resolution).unwrap_or(0), ore));
        out.versions.insert((area, at), version);
    }
    Ok(out)
}

/// A meter's profile from a date on.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub valid_from: NaiveDate,
    pub version: i64,
    pub area: PriceArea,
    pub gln: String,
    pub group: CustomerGroup,
    pub zone: TaxZone,
    pub scheme: Scheme,
    pub fuse_amperes: Option<u32>,
    pub station: Option<String>,
    pub coordinates: Option<(f64, f64)>,
}

/// Each meter's profiles from `meter_profiles` rows, oldest first (by `valid_from`, then
/// `version`). Rows that do not parse (written by a newer contract) are left out.
///
/// # Errors
/// Batches without the table's columns.
pub fn profiles_from(
    batches: &[RecordBatch],
) -> Result<BTreeMap<String, Vec<Profile>>, OperatorError> {
    let mut out: BTreeMap<String, Vec<Profile>> = BTreeMap::new();
    for b in batches {
        let meter = strings(b, "meter")?;
        let valid_from = dates(b, "valid_from")?;
        let area = strings(b, "price_area")?;
        let gln = strings(b, "grid_company_gln")?;
        let group = strings(b, "customer_group")?;
        let zone = strings(b, "tax_zone")?;
        let scheme = strings(b, "scheme")?;
        let fuse = int32s(b, "fuse_amperes")?;
        let lat = decimals(b, "latitude")?;
        let lon = decimals(b, "longitude")?;
        let station = strings(b, "station")?;
        let version = times(b, "version")?;
        for row in 0..b.num_rows() {
            let (Some(a), Some(g), Some(z), Some(s)) = (
                PriceArea::parse(area.value(row)),
                CustomerGroup::parse(group.value(row)),
                TaxZone::parse(zone.value(row)),
                Scheme::parse(scheme.value(row)),
            ) else {
                continue;
            };
            let coordinate = |a: &Decimal128Array| {
                opt_decimal_at(a, row).and_then(|d| d.to_string().parse::<f64>().ok())
            };
            out.entry(meter.value(row).to_owned())
                .or_default()
                .push(Profile {
                    valid_from: date_of(valid_from.value(row)),
                    version: version.value(row),
                    area: a,
                    gln: gln.value(row).to_owned(),
                    group: g,
                    zone: z,
                    scheme: s,
                    fuse_amperes: fuse
                        .is_valid(row)
                        .then(|| u32::try_from(fuse.value(row)).ok())
                        .flatten(),
                    station: station.is_valid(row).then(|| station.value(row).to_owned()),
                    coordinates: coordinate(lat).zip(coordinate(lon)),
                });
        }
    }
    for p in out.values_mut() {
        p.sort_by_key(|p| (p.valid_from, p.version));
    }
    Ok(out)
}

/// The profile in force on `date`: the latest `valid_from` on or before it (the newest
/// version of that date).
#[must_use]
pub fn profile_on(profiles: &[Profile], date: NaiveDate) -> Option<&Profile> {
    profiles.iter().rev().find(|p| p.valid_from <= date)
}

/// A tariff and the version it is known by (its file's hash and start).
#[derive(Debug, Clone)]
pub struct VersionedTariff {
    pub tariff: GridTariff,
    pub version: String,
}

/// Hourly air temperatures by station and hour start.
pub type Temperatures = BTreeMap<String, BTreeMap<DateTime<Utc>, Decimal>>;

/// Hourly `air_temperature` values from `weather_observations` rows (columns `station`,
/// `time`, `element`, `value`, `resolution`), the later row winning for a station and hour.
///
/// # Errors
/// Batches without those columns.
pub fn temperatures_from(batches: &[RecordBatch]) -> Result<Temperatures, OperatorError> {
    let mut out = Temperatures::new();
    for b in batches {
        let station = strings(b, "station")?;
        let time = times(b, "time")?;
        let element = strings(b, "element")?;
        let value = decimals(b, "value")?;
        let resolution = strings(b, "resolution")?;
        for row in 0..b.num_rows() {
            if element.value(row) != "air_temperature" || resolution.value(row) != "PT1H" {
                continue;
            }
            out.entry(station.value(row).to_owned())
                .or_default()
                .insert(utc(time.value(row)), decimal_at(value, row));
        }
    }
    Ok(out)
}

/// Everything a tenant's days are priced with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub tenant: &'a str,
    pub tz: Tz,
    pub prices: &'a AreaPrices,
    pub profiles: &'a BTreeMap<String, Vec<Profile>>,
    pub tariffs: &'a [VersionedTariff],
    pub rates: &'a RateTable,
    pub rates_version: &'a str,
    pub temperatures: &'a Temperatures,
    pub stations: &'a [Station],
}

impl Context<'_> {
    /// The tariff of the profile's company and group on `date`: the latest start wins, and
    /// of equal starts the one imported last (as [`super::tariff::tariff_for`]).
    fn tariff(&self, profile: &Profile, date: NaiveDate) -> Option<&VersionedTariff> {
        self.tariffs
            .iter()
            .filter(|t| t.tariff.applies(&profile.gln, profile.group, date))
            .max_by_key(|t| t.tariff.valid_from)
    }
}

/// The rows of some local days of one tenant.
#[derive(Debug, Clone)]
pub struct DayRows {
    pub hourly: RecordBatch,
    pub daily: RecordBatch,
    pub temperature: RecordBatch,
}

/// The current electricity readings of `readings` rows (every stored version; the columns of
/// [`crate::aggregate::current_readings`]) priced for each of `dates`: the rows of
/// `cost_hourly`, `cost_daily` and `temperature_daily`. Rows of other dates are ignored.
///
/// # Errors
/// Batches without the columns; a reading of neither 15 nor 60 minutes.
pub fn cost_days(
    ctx: &Context<'_>,
    dates: &BTreeSet<NaiveDate>,
    readings: &[RecordBatch],
) -> Result<DayRows, OperatorError> {
    // (date, meter, export) -> readings
    let mut series: BTreeMap<(NaiveDate, &str, bool), Vec<Reading>> = BTreeMap::new();
    for r in crate::aggregate::current_readings(readings)? {
        let date = date_of(r.local_date);
        if r.quantity != "electricity" || !dates.contains(&date) {
            continue;
        }
        series
            .entry((date, r.meter, r.direction == "export"))
            .or_default()
            .push(Reading {
                start: utc(r.start_micros),
                minutes: u32::try_from(r.resolution_minutes).unwrap_or(0),
                kwh: Decimal::from_i128_with_scale(r.value, KWH_SCALE),
            });
    }
    let mut out = DayBuilders::default();
    for ((date, meter, export), day_readings) in &series {
        out.meter_day(ctx, *date, meter, *export, day_readings)?;
    }
    Ok(DayRows {
        hourly: out.hourly.finish()?,
        daily: out.daily.finish()?,
        temperature: out.temperature.finish()?,
    })
}

#[derive(Default)]
struct DayBuilders {
    hourly: HourlyBuilder,
    daily: DailyBuilder,
    temperature: TemperatureBuilder,
}

impl DayBuilders {
    /// One meter's day in one direction.
    fn meter_day(
        &mut self,
        ctx: &Context<'_>,
        date: NaiveDate,
        meter: &str,
        export: bool,
        readings: &[Reading],
    ) -> Result<(), OperatorError> {
        let no_prices = Prices::new();
        let no_rates = RateTable::new(Vec::new());
        let profile = ctx.profiles.get(meter).and_then(|p| profile_on(p, date));
        let tariff = profile.and_then(|p| ctx.tariff(p, date));
        let mut hours = cost_of_day(&MeterDay {
            local_date: date,
            tz: ctx.tz,
            readings,
            export,
            prices: profile
                .and_then(|p| ctx.prices.prices.get(&p.area))
                .unwrap_or(&no_prices),
            scheme: profile.map_or(Scheme::None, |p| p.scheme),
            zone: profile.map_or(TaxZone::Standard, |p| p.zone),
            tariff: tariff.map(|t| &t.tariff),
            rates: if profile.is_some() {
                ctx.rates
            } else {
                &no_rates
            },
        })
        .map_err(|_| OperatorError::Internal {
            operator: OPERATOR,
            reason: "a reading of neither 15 nor 60 minutes",
        })?;
        if profile.is_none() {
            for h in &mut hours {
                h.cost = unpriced(h.cost.kwh);
                h.complete = false;
            }
        }
        let direction = if export { "export" } else { "import" };
        for h in &hours {
            let price_version = profile.and_then(|p| {
                (0..4)
                    .filter_map(|q| {
                        ctx.prices
                            .versions
                            .get(&(p.area, h.hour_start + Duration::minutes(15 * q)))
                    })
                    .max()
                    .copied()
            });
            self.hourly.push(&HourRow {
                tenant: ctx.tenant,
                meter,
                direction,
                date,
                hour: h,
                profile,
                tariff: tariff.map(|t| t.version.as_str()),
                price_version,
                rates_version: ctx.rates_version,
            });
        }
        let expected = day_hours(ctx.tz, date);
        self.daily
            .push(ctx.tenant, meter, direction, date, &hours, expected);
        if !export {
            let station = profile
                .and_then(|p| station_for(p.station.as_deref(), p.coordinates, ctx.stations));
            let mean = station.and_then(|s| {
                let values = ctx.temperatures.get(s)?;
                let (from, to) = day_bounds(ctx.tz, date);
                let hourly: Vec<Decimal> = values.range(from..to).map(|(_, v)| *v).collect();
                daily_mean(&hourly)
            });
            let kwh: Decimal = hours.iter().map(|h| h.cost.kwh).sum();
            self.temperature
                .push(ctx.tenant, meter, date, kwh, station, mean);
        }
        Ok(())
    }
}

/// An hour without a profile: its kWh, nothing priced.
fn unpriced(kwh: Decimal) -> HourCost {
    HourCost {
        kwh,
        spot_nok: None,
        support_nok: None,
        grid_energy_nok: None,
        consumption_tax_nok: None,
        enova_nok: None,
        vat_nok: None,
        total_nok: None,
    }
}

/// The first instant of `date` and of the day after, in `tz`.
fn day_bounds(tz: Tz, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |d: NaiveDate| utc(crate::aggregate::day_start(tz, days_since_epoch(d)));
    (start(date), start(date + Duration::days(1)))
}

/// Hours of a local day (23, 24 or 25).
fn day_hours(tz: Tz, date: NaiveDate) -> i32 {
    i32::try_from(crate::aggregate::day_minutes(tz, days_since_epoch(date)) / 60).unwrap_or(24)
}

/// The first day of `date`'s month.
#[must_use]
pub fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

/// The days of the month starting at `month`.
#[must_use]
pub fn month_days(month: NaiveDate) -> Vec<NaiveDate> {
    month
        .iter_days()
        .take_while(|d| d.month() == month.month())
        .collect()
}

// ---- months ----

/// The rows of some months of one tenant.
#[derive(Debug, Clone)]
pub struct MonthRows {
    pub monthly: RecordBatch,
    pub peaks: RecordBatch,
    pub duration: RecordBatch,
}

/// One stored hour read back from `cost_hourly`.
struct StoredHour {
    date: NaiveDate,
    hour: CostHour,
}

/// The month rows of `months` from their `cost_hourly` rows (`hourly`: every column of the
/// table, the month's days; rows of other months are ignored).
///
/// # Errors
/// Batches without the table's columns.
pub fn cost_months(
    ctx: &Context<'_>,
    months: &BTreeSet<NaiveDate>,
    hourly: &[RecordBatch],
) -> Result<MonthRows, OperatorError> {
    let mut out = MonthBuilders::default();
    for ((month, meter, export), mut stored) in stored_hours(months, hourly)? {
        stored.sort_by_key(|s| s.hour.hour_start);
        out.meter_month(ctx, month, &meter, export, &stored);
    }
    Ok(MonthRows {
        monthly: out.monthly.finish()?,
        peaks: out.peaks.finish()?,
        duration: out.duration.finish()?,
    })
}

/// The stored hours of `months` by (month, meter, export).
type StoredSeries = BTreeMap<(NaiveDate, String, bool), Vec<StoredHour>>;

fn stored_hours(
    months: &BTreeSet<NaiveDate>,
    hourly: &[RecordBatch],
) -> Result<StoredSeries, OperatorError> {
    let mut series = StoredSeries::new();
    for b in hourly {
        let meter = strings(b, "meter")?;
        let direction = strings(b, "direction")?;
        let start = times(b, "hour_start")?;
        let date = dates(b, "local_date")?;
        let local_hour = int32s(b, "local_hour")?;
        let kwh = decimals(b, "kwh")?;
        let complete = b
            .column_by_name("complete")
            .and_then(|c| c.as_boolean_opt())
            .ok_or(schema_error("complete"))?;
        let money: Vec<&Decimal128Array> = MONEY_COLUMNS
            .iter()
            .map(|c| decimals(b, c))
            .collect::<Result<_, _>>()?;
        for row in 0..b.num_rows() {
            let d = date_of(date.value(row));
            let month = month_start(d);
            if !months.contains(&month) {
                continue;
            }
            let m = |i: usize| opt_decimal_at(money[i], row);
            series
                .entry((
                    month,
                    meter.value(row).to_owned(),
                    direction.value(row) == "export",
                ))
                .or_default()
                .push(StoredHour {
                    date: d,
                    hour: CostHour {
                        hour_start: utc(start.value(row)),
                        local_hour: u32::try_from(local_hour.value(row)).unwrap_or(0),
                        complete: complete.value(row),
                        cost: HourCost {
                            kwh: decimal_at(kwh, row),
                            spot_nok: m(0),
                            support_nok: m(1),
                            grid_energy_nok: m(2),
                            consumption_tax_nok: m(3),
                            enova_nok: m(4),
                            vat_nok: m(5),
                            total_nok: m(6),
                        },
                    },
                });
        }
    }
    Ok(series)
}

#[derive(Default)]
struct MonthBuilders {
    monthly: MonthlyBuilder,
    peaks: PeaksBuilder,
    duration: DurationBuilder,
}

impl MonthBuilders {
    /// One meter's month in one direction, from its stored hours in time order.
    fn meter_month(
        &mut self,
        ctx: &Context<'_>,
        month: NaiveDate,
        meter: &str,
        export: bool,
        stored: &[StoredHour],
    ) {
        let hours: Vec<CostHour> = stored.iter().map(|s| s.hour).collect();
        let days = month_days(month);
        let expected: i32 = days.iter().map(|d| day_hours(ctx.tz, *d)).sum();
        let direction = if export { "export" } else { "import" };
        // The profile of the month's first day, or of its last for a meter that came later.
        let profile = ctx.profiles.get(meter).and_then(|p| {
            profile_on(p, month).or_else(|| profile_on(p, days.last().copied().unwrap_or(month)))
        });
        let demand_hours: Vec<HourKwh> = stored
            .iter()
            .map(|s| HourKwh {
                local_date: s.date,
                local_hour: s.hour.local_hour,
                kwh: s.hour.cost.kwh,
            })
            .collect();
        let (cost, method) = match profile {
            Some(p) if !export => {
                let tariff = ctx.tariff(p, month).map(|t| &t.tariff);
                // A rule that looks back over months is not computed from one month.
                let capacity = tariff.map(|t| &t.capacity).filter(|c| {
                    capacity::rule(&c.method).is_some_and(|r| r.months_of_history() == 1)
                });
                let cost = cost_of_month(&MonthInput {
                    hours: &hours,
                    demand_hours: &demand_hours,
                    history: &demand_hours,
                    fuse_amperes: p.fuse_amperes,
                    capacity,
                    vat_share: ctx.rates.on(p.zone, month).vat_share,
                });
                self.peaks.push_month(
                    ctx.tenant,
                    meter,
                    month,
                    &demand_hours,
                    capacity,
                    p.fuse_amperes,
                );
                (cost, tariff.map(|t| t.capacity.method.clone()))
            }
            _ => (month_without_capacity(&hours, profile.is_some()), None),
        };
        let n = i32::try_from(hours.len()).unwrap_or(i32::MAX);
        self.monthly.push(&MonthRow {
            tenant: ctx.tenant,
            meter,
            direction,
            month,
            cost: &cost,
            method: method.as_deref(),
            hours: n,
            expected,
            complete: cost.complete && n == expected && profile.is_some(),
        });
        let kwh: Vec<Decimal> = hours.iter().map(|h| h.cost.kwh).collect();
        for (rank, i, k) in duration_curve(&kwh) {
            self.duration.push(
                ctx.tenant,
                meter,
                direction,
                month,
                rank,
                hours[i].hour_start,
                k,
            );
        }
    }
}

/// Export, or a meter without a profile: the hours summed, no capacity charge.
fn month_without_capacity(hours: &[CostHour], priced: bool) -> super::month::MonthCost {
    let sum = |f: fn(&CostHour) -> Option<Decimal>| -> Option<Decimal> {
        hours.iter().map(f).sum::<Option<Decimal>>()
    };
    let total_nok = sum(|h| h.cost.total_nok).filter(|_| priced);
    super::month::MonthCost {
        kwh: hours.iter().map(|h| h.cost.kwh).sum(),
        spot_nok: sum(|h| h.cost.spot_nok),
        support_nok: sum(|h| h.cost.support_nok),
        grid_energy_nok: sum(|h| h.cost.grid_energy_nok),
        consumption_tax_nok: sum(|h| h.cost.consumption_tax_nok),
        enova_nok: sum(|h| h.cost.enova_nok),
        vat_nok: sum(|h| h.cost.vat_nok),
        capacity_demand: None,
        capacity_step_from: None,
        capacity_nok: None,
        capacity_vat_nok: None,
        total_nok,
        complete: total_nok.is_some() && hours.iter().all(|h| h.complete),
    }
}

// ---- seasons ----

/// `temperature_sensitivity` rows of `seasons` from `temperature_daily` rows (columns
/// `meter`, `local_date`, `kwh`, `mean_temperature_c`): one per meter with at least three
/// days with a mean temperature in the season.
///
/// # Errors
/// Batches without those columns.
pub fn sensitivity(
    tenant: &str,
    seasons: &BTreeSet<i32>,
    daily: &[RecordBatch],
) -> Result<RecordBatch, OperatorError> {
    let mut points: BTreeMap<(i32, String), Vec<(Decimal, Decimal)>> = BTreeMap::new();
    for b in daily {
        let meter = strings(b, "meter")?;
        let date = dates(b, "local_date")?;
        let kwh = decimals(b, "kwh")?;
        let mean = decimals(b, "mean_temperature_c")?;
        for row in 0..b.num_rows() {
            let Some(season) = heating_season(date_of(date.value(row))) else {
                continue;
            };
            if !seasons.contains(&season) || !mean.is_valid(row) {
                continue;
            }
            points
                .entry((season, meter.value(row).to_owned()))
                .or_default()
                .push((decimal_at(mean, row), decimal_at(kwh, row)));
        }
    }
    let mut b = SensitivityBuilder::default();
    for ((season, meter), pts) in points {
        if let Some(fit) = least_squares(&pts) {
            b.tenant.append_value(tenant);
            b.meter.append_value(&meter);
            b.season.append_value(season);
            b.days
                .append_value(i32::try_from(fit.days).unwrap_or(i32::MAX));
            b.slope.append_value(scaled(fit.slope, 6));
            b.intercept.append_value(scaled(fit.intercept, 6));
            b.r2.append_value(scaled(fit.r2, 6));
        }
    }
    b.finish()
}

/// The first and last date of a heating season (1 October to 30 April).
#[must_use]
pub fn season_bounds(season: i32) -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(season, 10, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(season + 1, 4, 30).unwrap_or_default(),
    )
}

// ---- builders ----

/// `value` with exactly `scale` decimals as a `Decimal128` value (rounded half to even when
/// it has more, which the callers never pass).
fn scaled(value: Decimal, scale: u32) -> i128 {
    let mut v =
        value.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointNearestEven);
    v.rescale(scale);
    v.mantissa()
}

fn decimal_builder(scale: u32) -> Decimal128Builder {
    Decimal128Builder::new()
        .with_precision_and_scale(38, i8::try_from(scale).unwrap_or(0))
        .expect("a valid decimal type")
}

fn append_opt(b: &mut Decimal128Builder, v: Option<Decimal>, scale: u32) {
    match v {
        Some(v) => b.append_value(scaled(v, scale)),
        None => b.append_null(),
    }
}

fn finish(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, OperatorError> {
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone(UTC)
}

struct Money([Decimal128Builder; 7]);

impl Default for Money {
    fn default() -> Self {
        Self(std::array::from_fn(|_| decimal_builder(NOK_SCALE)))
    }
}

impl Money {
    fn push(&mut self, values: [Option<Decimal>; 7]) {
        for (b, v) in self.0.iter_mut().zip(values) {
            append_opt(b, v, NOK_SCALE);
        }
    }
    fn finish(&mut self, n: usize) -> Vec<ArrayRef> {
        self.0
            .iter_mut()
            .take(n)
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect()
    }
}

fn components(c: &HourCost) -> [Option<Decimal>; 7] {
    [
        c.spot_nok,
        c.support_nok,
        c.grid_energy_nok,
        c.consumption_tax_nok,
        c.enova_nok,
        c.vat_nok,
        c.total_nok,
    ]
}

struct HourRow<'a> {
    tenant: &'a str,
    meter: &'a str,
    direction: &'a str,
    date: NaiveDate,
    hour: &'a CostHour,
    profile: Option<&'a Profile>,
    tariff: Option<&'a str>,
    price_version: Option<i64>,
    rates_version: &'a str,
}

struct HourlyBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    direction: StringBuilder,
    hour_start: TimestampMicrosecondBuilder,
    local_date: Date32Builder,
    local_hour: Int32Builder,
    kwh: Decimal128Builder,
    money: Money,
    complete: BooleanBuilder,
    area: StringBuilder,
    scheme: StringBuilder,
    profile_from: Date32Builder,
    tariff: StringBuilder,
    price_version: TimestampMicrosecondBuilder,
    rates_version: StringBuilder,
}

impl Default for HourlyBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            direction: StringBuilder::new(),
            hour_start: timestamp_builder(),
            local_date: Date32Builder::new(),
            local_hour: Int32Builder::new(),
            kwh: decimal_builder(KWH_SCALE),
            money: Money::default(),
            complete: BooleanBuilder::new(),
            area: StringBuilder::new(),
            scheme: StringBuilder::new(),
            profile_from: Date32Builder::new(),
            tariff: StringBuilder::new(),
            price_version: timestamp_builder(),
            rates_version: StringBuilder::new(),
        }
    }
}

impl HourlyBuilder {
    fn push(&mut self, r: &HourRow<'_>) {
        self.tenant.append_value(r.tenant);
        self.meter.append_value(r.meter);
        self.direction.append_value(r.direction);
        self.hour_start
            .append_value(r.hour.hour_start.timestamp_micros());
        self.local_date.append_value(days_since_epoch(r.date));
        self.local_hour
            .append_value(i32::try_from(r.hour.local_hour).unwrap_or(0));
        self.kwh.append_value(scaled(r.hour.cost.kwh, KWH_SCALE));
        self.money.push(components(&r.hour.cost));
        self.complete.append_value(r.hour.complete);
        self.area.append_option(r.profile.map(|p| p.area.code()));
        self.scheme
            .append_option(r.profile.map(|p| p.scheme.name()));
        self.profile_from
            .append_option(r.profile.map(|p| days_since_epoch(p.valid_from)));
        self.tariff.append_option(r.tariff);
        self.price_version.append_option(r.price_version);
        self.rates_version.append_value(r.rates_version);
    }

    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.meter.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.hour_start.finish()),
            Arc::new(self.local_date.finish()),
            Arc::new(self.local_hour.finish()),
            Arc::new(self.kwh.finish()),
        ];
        cols.extend(self.money.finish(7));
        cols.extend([
            Arc::new(self.complete.finish()) as ArrayRef,
            Arc::new(self.area.finish()),
            Arc::new(self.scheme.finish()),
            Arc::new(self.profile_from.finish()),
            Arc::new(self.tariff.finish()),
            Arc::new(self.price_version.finish()),
            Arc::new(self.rates_version.finish()),
        ]);
        finish(&COST_HOURLY, cols)
    }
}

struct DailyBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    direction: StringBuilder,
    local_date: Date32Builder,
    kwh: Decimal128Builder,
    money: Money,
    hours: Int32Builder,
    expected: Int32Builder,
    complete: BooleanBuilder,
}

impl Default for DailyBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            direction: StringBuilder::new(),
            local_date: Date32Builder::new(),
            kwh: decimal_builder(KWH_SCALE),
            money: Money::default(),
            hours: Int32Builder::new(),
            expected: Int32Builder::new(),
            complete: BooleanBuilder::new(),
        }
    }
}

/// Σ of a component over hours; missing in any hour: missing.
fn sum_of(hours: &[CostHour], i: usize) -> Option<Decimal> {
    hours
        .iter()
        .map(|h| components(&h.cost)[i])
        .sum::<Option<Decimal>>()
}

impl DailyBuilder {
    fn push(
        &mut self,
        tenant: &str,
        meter: &str,
        direction: &str,
        date: NaiveDate,
        hours: &[CostHour],
        expected: i32,
    ) {
        let n = i32::try_from(hours.len()).unwrap_or(i32::MAX);
        self.tenant.append_value(tenant);
        self.meter.append_value(meter);
        self.direction.append_value(direction);
        self.local_date.append_value(days_since_epoch(date));
        self.kwh
            .append_value(scaled(hours.iter().map(|h| h.cost.kwh).sum(), KWH_SCALE));
        self.money.push(std::array::from_fn(|i| sum_of(hours, i)));
        self.hours.append_value(n);
        self.expected.append_value(expected);
        self.complete
            .append_value(n == expected && hours.iter().all(|h| h.complete));
    }

    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.meter.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.local_date.finish()),
            Arc::new(self.kwh.finish()),
        ];
        cols.extend(self.money.finish(7));
        cols.extend([
            Arc::new(self.hours.finish()) as ArrayRef,
            Arc::new(self.expected.finish()),
            Arc::new(self.complete.finish()),
        ]);
        finish(&COST_DAILY, cols)
    }
}

struct TemperatureBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    local_date: Date32Builder,
    kwh: Decimal128Builder,
    station: StringBuilder,
    mean: Decimal128Builder,
    hdd: Decimal128Builder,
}

impl Default for TemperatureBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            local_date: Date32Builder::new(),
            kwh: decimal_builder(KWH_SCALE),
            station: StringBuilder::new(),
            mean: decimal_builder(3),
            hdd: decimal_builder(3),
        }
    }
}

impl TemperatureBuilder {
    fn push(
        &mut self,
        tenant: &str,
        meter: &str,
        date: NaiveDate,
        kwh: Decimal,
        station: Option<&str>,
        mean: Option<Decimal>,
    ) {
        self.tenant.append_value(tenant);
        self.meter.append_value(meter);
        self.local_date.append_value(days_since_epoch(date));
        self.kwh.append_value(scaled(kwh, KWH_SCALE));
        self.station.append_option(station);
        append_opt(&mut self.mean, mean, 3);
        append_opt(&mut self.hdd, mean.map(heating_degree_days), 3);
    }

    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        finish(
            &TEMPERATURE_DAILY,
            vec![
                Arc::new(self.tenant.finish()),
                Arc::new(self.meter.finish()),
                Arc::new(self.local_date.finish()),
                Arc::new(self.kwh.finish()),
                Arc::new(self.station.finish()),
                Arc::new(self.mean.finish()),
                Arc::new(self.hdd.finish()),
            ],
        )
    }
}

struct MonthRow<'a> {
    tenant: &'a str,
    meter: &'a str,
    direction: &'a str,
    month: NaiveDate,
    cost: &'a super::month::MonthCost,
    method: Option<&'a str>,
    hours: i32,
    expected: i32,
    complete: bool,
}

struct MonthlyBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    direction: StringBuilder,
    month: Date32Builder,
    kwh: Decimal128Builder,
    money: Money,
    method: StringBuilder,
    demand: Decimal128Builder,
    step_from: Decimal128Builder,
    capacity: Decimal128Builder,
    capacity_vat: Decimal128Builder,
    total: Decimal128Builder,
    hours: Int32Builder,
    expected: Int32Builder,
    complete: BooleanBuilder,
}

impl Default for MonthlyBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            direction: StringBuilder::new(),
            month: Date32Builder::new(),
            kwh: decimal_builder(KWH_SCALE),
            money: Money::default(),
            method: StringBuilder::new(),
            demand: decimal_builder(4),
            step_from: decimal_builder(4),
            capacity: decimal_builder(NOK_SCALE),
            capacity_vat: decimal_builder(NOK_SCALE),
            total: decimal_builder(NOK_SCALE),
            hours: Int32Builder::new(),
            expected: Int32Builder::new(),
            complete: BooleanBuilder::new(),
        }
    }
}

impl MonthlyBuilder {
    fn push(&mut self, r: &MonthRow<'_>) {
        let c = r.cost;
        self.tenant.append_value(r.tenant);
        self.meter.append_value(r.meter);
        self.direction.append_value(r.direction);
        self.month.append_value(days_since_epoch(r.month));
        self.kwh.append_value(scaled(c.kwh, KWH_SCALE));
        self.money.push([
            c.spot_nok,
            c.support_nok,
            c.grid_energy_nok,
            c.consumption_tax_nok,
            c.enova_nok,
            c.vat_nok,
            None,
        ]);
        self.method.append_option(r.method);
        append_opt(&mut self.demand, c.capacity_demand, 4);
        append_opt(&mut self.step_from, c.capacity_step_from, 4);
        append_opt(&mut self.capacity, c.capacity_nok, NOK_SCALE);
        append_opt(&mut self.capacity_vat, c.capacity_vat_nok, NOK_SCALE);
        append_opt(&mut self.total, c.total_nok, NOK_SCALE);
        self.hours.append_value(r.hours);
        self.expected.append_value(r.expected);
        self.complete.append_value(r.complete);
    }

    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.meter.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.month.finish()),
            Arc::new(self.kwh.finish()),
        ];
        cols.extend(self.money.finish(6));
        cols.extend([
            Arc::new(self.method.finish()) as ArrayRef,
            Arc::new(self.demand.finish()),
            Arc::new(self.step_from.finish()),
            Arc::new(self.capacity.finish()),
            Arc::new(self.capacity_vat.finish()),
            Arc::new(self.total.finish()),
            Arc::new(self.hours.finish()),
            Arc::new(self.expected.finish()),
            Arc::new(self.complete.finish()),
        ]);
        finish(&COST_MONTHLY, cols)
    }
}

struct PeaksBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    month: Date32Builder,
    rank: Int32Builder,
    local_date: Date32Builder,
    local_hour: Int32Builder,
    kwh: Decimal128Builder,
    method: StringBuilder,
    demand: Decimal128Builder,
    step_from: Decimal128Builder,
    next_from: Decimal128Builder,
    next_kwh: Decimal128Builder,
}

impl Default for PeaksBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            month: Date32Builder::new(),
            rank: Int32Builder::new(),
            local_date: Date32Builder::new(),
            local_hour: Int32Builder::new(),
            kwh: decimal_builder(KWH_SCALE),
            method: StringBuilder::new(),
            demand: decimal_builder(4),
            step_from: decimal_builder(4),
            next_from: decimal_builder(4),
            next_kwh: decimal_builder(KWH_SCALE),
        }
    }
}

impl PeaksBuilder {
    /// The month's three highest daily peaks; with a capacity charge, the demand, its step,
    /// and what one hour on a new day must reach to move the month up a step (rounded up to
    /// a Wh, so that reaching it does move the month).
    fn push_month(
        &mut self,
        tenant: &str,
        meter: &str,
        month: NaiveDate,
        hours: &[HourKwh],
        charge: Option<&super::tariff::CapacityCharge>,
        fuse: Option<u32>,
    ) {
        let top = capacity::daily_peaks(hours);
        let rule = charge.and_then(|c| capacity::rule(&c.method));
        let demand = rule.and_then(|r| {
            r.demand(&DemandInput {
                month: hours,
                history: hours,
                fuse_amperes: fuse,
            })
        });
        let step = charge
            .zip(demand.as_ref())
            .and_then(|(c, d)| c.steps.step_for(d));
        let days = match rule.map(|r| r.name()) {
            Some("top3_days") => Some(3),
            Some("monthly_max") => Some(1),
            _ => None,
        };
        let next = charge
            .zip(demand.as_ref())
            .zip(days)
            .and_then(|((c, d), days)| capacity::next_step(&c.steps, d, days));
        for (rank, peak) in top.iter().take(3).enumerate() {
            self.tenant.append_value(tenant);
            self.meter.append_value(meter);
            self.month.append_value(days_since_epoch(month));
            self.rank
                .append_value(i32::try_from(rank + 1).unwrap_or(i32::MAX));
            self.local_date
                .append_value(days_since_epoch(peak.local_date));
            self.local_hour
                .append_value(i32::try_from(peak.local_hour).unwrap_or(0));
            self.kwh.append_value(scaled(peak.kwh, KWH_SCALE));
            self.method.append_option(charge.map(|c| c.method.as_str()));
            append_opt(&mut self.demand, demand.as_ref().map(|d| d.rounded(4)), 4);
            append_opt(&mut self.step_from, step.map(|s| s.from), 4);
            append_opt(&mut self.next_from, next.map(|(s, _)| s.from), 4);
            append_opt(
                &mut self.next_kwh,
                next.map(|(_, k)| {
                    k.round_dp_with_strategy(
                        KWH_SCALE,
                        rust_decimal::RoundingStrategy::AwayFromZero,
                    )
                }),
                KWH_SCALE,
            );
        }
    }

    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        finish(
            &CAPACITY_PEAKS,
            vec![
                Arc::new(self.tenant.finish()),
                Arc::new(self.meter.finish()),
                Arc::new(self.month.finish()),
                Arc::new(self.rank.finish()),
                Arc::new(self.local_date.finish()),
                Arc::new(self.local_hour.finish()),
                Arc::new(self.kwh.finish()),
                Arc::new(self.method.finish()),
                Arc::new(self.demand.finish()),
                Arc::new(self.step_from.finish()),
                Arc::new(self.next_from.finish()),
                Arc::new(self.next_kwh.finish()),
            ],
        )
    }
}

struct DurationBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    direction: StringBuilder,
    month: Date32Builder,
    rank: Int32Builder,
    hour_start: TimestampMicrosecondBuilder,
    kwh: Decimal128Builder,
}

impl Default for DurationBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            direction: StringBuilder::new(),
            month: Date32Builder::new(),
            rank: Int32Builder::new(),
            hour_start: timestamp_builder(),
            kwh: decimal_builder(KWH_SCALE),
        }
    }
}

impl DurationBuilder {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        tenant: &str,
        meter: &str,
        direction: &str,
        month: NaiveDate,
        rank: u32,
        start: DateTime<Utc>,
        kwh: Decimal,
    ) {
        self.tenant.append_value(tenant);
        self.meter.append_value(meter);
        self.direction.append_value(direction);
        self.month.append_value(days_since_epoch(month));
        self.rank
            .append_value(i32::try_from(rank).unwrap_or(i32::MAX));
        self.hour_start.append_value(start.timestamp_micros());
        self.kwh.append_value(scaled(kwh, KWH_SCALE));
    }

    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        finish(
            &DURATION_CURVE,
            vec![
                Arc::new(self.tenant.finish()),
                Arc::new(self.meter.finish()),
                Arc::new(self.direction.finish()),
                Arc::new(self.month.finish()),
                Arc::new(self.rank.finish()),
                Arc::new(self.hour_start.finish()),
                Arc::new(self.kwh.finish()),
            ],
        )
    }
}

struct SensitivityBuilder {
    tenant: StringBuilder,
    meter: StringBuilder,
    season: Int32Builder,
    days: Int32Builder,
    slope: Decimal128Builder,
    intercept: Decimal128Builder,
    r2: Decimal128Builder,
}

impl Default for SensitivityBuilder {
    fn default() -> Self {
        Self {
            tenant: StringBuilder::new(),
            meter: StringBuilder::new(),
            season: Int32Builder::new(),
            days: Int32Builder::new(),
            slope: decimal_builder(6),
            intercept: decimal_builder(6),
            r2: decimal_builder(6),
        }
    }
}

impl SensitivityBuilder {
    fn finish(mut self) -> Result<RecordBatch, OperatorError> {
        finish(
            &TEMPERATURE_SENSITIVITY,
            vec![
                Arc::new(self.tenant.finish()),
                Arc::new(self.meter.finish()),
                Arc::new(self.season.finish()),
                Arc::new(self.days.finish()),
                Arc::new(self.slope.finish()),
                Arc::new(self.intercept.finish()),
                Arc::new(self.r2.finish()),
            ],
        )
    }
}

/// The local time of an hour start, for callers that print hours.
#[must_use]
pub fn local(tz: Tz, t: DateTime<Utc>) -> (NaiveDate, u32) {
    let l = tz.from_utc_datetime(&t.naive_utc());
    (l.date_naive(), l.hour())
}
