//! `aggregate`: consumption per local hour, day and month, from `readings`.
//!
//! Pure functions over Arrow batches; the pipeline decides *which* rows to feed
//! (whole (tenant, local date) partitions of `readings`, every stored version) and
//! replaces the matching partitions of the aggregate tables with the result. So an
//! aggregate row always equals a computation over `readings_current` of its day:
//! late readings, corrections and deletions change the day's rows instead of adding
//! to them.
//!
//! Semantics (README "Aggregates"):
//! - the current value of a key (meter, quantity, direction, interval start) is its
//!   row with the highest `version` (a missing version is the oldest), exactly as the
//!   `readings_current` view;
//! - a reading counts in the local clock hour and the local date its interval
//!   starts in, in the tenant's time zone; the repeated autumn hour appears twice,
//!   with different `hour_start` (UTC);
//! - `withdrawn` readings (Elhub quality 58) count neither in `value` nor in
//!   `intervals`: the interval is a gap;
//! - `expected_intervals`: per hour 1 (PT1H) or 4 (PT15M, when any reading of the
//!   hour is PT15M); per day the local day's length in hours (23/24/25) times 1 or 4
//!   (4 when any reading of the day is PT15M); `complete` when `intervals` equals it;
//! - `estimated_share`: the share of counted intervals whose quality is not
//!   `measured`;
//! - monthly rows sum the daily rows of the local calendar month (`month` is its
//!   first day); `complete` when every day of the month is;
//! - area cells (public tenants) sum per-meter rows per (area, quantity, direction)
//!   and are suppressed when they have fewer than `min_meters` distinct meters or one
//!   meter contributes more than `max_meter_share` of the value.
//!
//! Values are summed exactly in thousandths (`Decimal128(38, 3)`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int32Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::operator::OperatorError;
use crate::schema::UTC;
use crate::{FastMap, FastSet};

/// Precision of aggregate values (sums of Decimal(18, 3) values).
pub const VALUE_PRECISION: u8 = 38;
/// Scale of aggregate values: thousandths, like readings.
pub const VALUE_SCALE: i8 = 3;

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

fn value_type() -> DataType {
    DataType::Decimal128(VALUE_PRECISION, VALUE_SCALE)
}

fn key_fields() -> Vec<Field> {
    vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("meter", DataType::Utf8, false),
        Field::new("quantity", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
    ]
}

fn area_key_fields() -> Vec<Field> {
    vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("area", DataType::Utf8, false),
        Field::new("quantity", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
    ]
}

fn schema(mut head: Vec<Field>, tail: Vec<Field>) -> SchemaRef {
    head.extend(tail);
    Arc::new(Schema::new(head))
}

/// `consumption_hourly`, partitioned by (tenant, local_date).
pub static HOURLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(
        key_fields(),
        vec![
            Field::new("hour_start", ts(), false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("local_hour", DataType::Int32, false),
            Field::new("area", DataType::Utf8, true),
            Field::new("value", value_type(), false),
            Field::new("intervals", DataType::Int32, false),
            Field::new("expected_intervals", DataType::Int32, false),
            Field::new("complete", DataType::Boolean, false),
            Field::new("estimated_share", DataType::Float64, false),
        ],
    )
});

/// `consumption_daily`, partitioned by (tenant, local_date).
pub static DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(
        key_fields(),
        vec![
            Field::new("local_date", DataType::Date32, false),
            Field::new("area", DataType::Utf8, true),
            Field::new("value", value_type(), false),
            Field::new("intervals", DataType::Int32, false),
            Field::new("expected_intervals", DataType::Int32, false),
            Field::new("complete", DataType::Boolean, false),
            Field::new("estimated_share", DataType::Float64, false),
        ],
    )
});

/// `consumption_monthly`, partitioned by (tenant, month).
pub static MONTHLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(
        key_fields(),
        vec![
            Field::new("month", DataType::Date32, false),
            Field::new("value", value_type(), false),
            Field::new("days_complete", DataType::Int32, false),
            Field::new("days_in_month", DataType::Int32, false),
            Field::new("complete", DataType::Boolean, false),
        ],
    )
});

/// `area_consumption_hourly`, partitioned by (tenant, local_date).
pub static AREA_HOURLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(
        area_key_fields(),
        vec![
            Field::new("hour_start", ts(), false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("local_hour", DataType::Int32, false),
            Field::new("value", value_type(), false),
            Field::new("meters", DataType::Int32, false),
        ],
    )
});

/// `area_consumption_daily`, partitioned by (tenant, local_date).
pub static AREA_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(
        area_key_fields(),
        vec![
            Field::new("local_date", DataType::Date32, false),
            Field::new("value", value_type(), false),
            Field::new("meters", DataType::Int32, false),
        ],
    )
});

/// `area_consumption_monthly`, partitioned by (tenant, month).
pub static AREA_MONTHLY: LazyLock<SchemaRef> = LazyLock::new(|| {
    schema(
        area_key_fields(),
        vec![
            Field::new("month", DataType::Date32, false),
            Field::new("value", value_type(), false),
            Field::new("meters", DataType::Int32, false),
        ],
    )
});

/// When an area cell may be published (public tenants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disclosure {
    /// At least this many distinct meters per cell (k).
    pub min_meters: usize,
    /// No meter may contribute more than this share of a cell's value (0..=1).
    pub max_meter_share: f64,
}

impl Default for Disclosure {
    fn default() -> Self {
        Self {
            min_meters: 10,
            max_meter_share: 0.5,
        }
    }
}

impl Disclosure {
    /// True if a cell with these per-meter values may be written.
    fn allows(&self, per_meter: &FastMap<&str, i128>) -> bool {
        let total: i128 = per_meter.values().sum();
        let max = per_meter.values().copied().max().unwrap_or(0);
        self.allows_summary(per_meter.len(), total, max)
    }

    /// [`allows`](Self::allows) from a cell's number of meters, total and largest
    /// per-meter value.
    fn allows_summary(&self, meters: usize, total: i128, max: i128) -> bool {
        if meters < self.min_meters {
            return false;
        }
        // Exact in millionths of the share (no float rounding on the sums).
        let share = (self.max_meter_share.clamp(0.0, 1.0) * 1e6).round() as i128;
        total <= 0 || max * 1_000_000 <= share * total
    }
}

fn schema_error(column: &'static str) -> OperatorError {
    OperatorError::Schema {
        operator: "aggregate",
        column,
    }
}

fn arrow_error(source: arrow::error::ArrowError) -> OperatorError {
    OperatorError::Arrow {
        operator: "aggregate",
        source,
    }
}

/// Qualities that are not `measured` but count (see `estimated_share`).
fn is_estimate(quality: &str) -> bool {
    matches!(
        quality,
        "estimated" | "final_estimate" | "temporary" | "calculated"
    )
}

/// Days since 1970-01-01 of a date.
pub fn days_since_epoch(date: NaiveDate) -> i32 {
    date.signed_duration_since(NaiveDate::default()).num_days() as i32
}

/// The date of days since 1970-01-01.
pub fn date_of(days: i32) -> NaiveDate {
    NaiveDate::default() + Duration::days(i64::from(days))
}

/// The first day of the month of `days` (days since the epoch).
pub fn month_of(days: i32) -> i32 {
    let d = date_of(days);
    days_since_epoch(d.with_day(1).expect("day 1 exists"))
}

/// Days in the month starting at `month` (days since the epoch).
pub fn days_in_month(month: i32) -> i32 {
    let first = date_of(month);
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .expect("valid month");
    (next - first).num_days() as i32
}

/// The first instant (µs since the epoch) of a local date: local midnight, or the
/// first existing local time after it where a transition skips midnight.
pub fn day_start(tz: Tz, days: i32) -> i64 {
    let date = date_of(days);
    let mut time = NaiveTime::MIN;
    loop {
        if let Some(t) = tz.from_local_datetime(&date.and_time(time)).earliest() {
            return t.timestamp_micros();
        }
        // Gaps are at most a few hours; local times in them do not exist.
        time += Duration::minutes(15);
    }
}

/// Length of a local date in minutes (1380, 1440 or 1500 in Europe/Oslo).
pub fn day_minutes(tz: Tz, days: i32) -> i64 {
    (day_start(tz, days + 1) - day_start(tz, days)) / MICROS_PER_MINUTE
}

/// UTC offset in microseconds at an instant, cached per 15-minute slot (every real
/// offset and transition is on that grid). Lives for one call, so its slots are
/// bounded by that call's rows.
struct Offsets {
    tz: Tz,
    cache: FastMap<i64, i64>,
}

impl Offsets {
    fn new(tz: Tz) -> Self {
        Self {
            tz,
            cache: FastMap::default(),
        }
    }

    fn at(&mut self, micros: i64) -> i64 {
        let slot = micros.div_euclid(15 * MICROS_PER_MINUTE);
        let tz = self.tz;
        *self.cache.entry(slot).or_insert_with(|| {
            let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
            i64::from(
                tz.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ) * 1_000_000
        })
    }
}

/// One current reading.
struct Current<'a> {
    area: Option<&'a str>,
    resolution: i32,
    local_date: i32,
    value: i128,
    quality: &'a str,
}

/// (meter, quantity, direction)
type Series<'a> = (&'a str, &'a str, &'a str);

/// Per hour or day of one series: value, counted intervals, estimated intervals,
/// finest resolution, area.
#[derive(Default, Clone)]
struct Sum<'a> {
    value: i128,
    intervals: i32,
    estimated: i32,
    finest: i32,
    area: Option<&'a str>,
}

impl<'a> Sum<'a> {
    fn add(&mut self, r: &Current<'a>) {
        self.finest = if self.finest == 0 {
            r.resolution
        } else {
            self.finest.min(r.resolution)
        };
        self.area = self.area.max(r.area);
        if r.quality == "withdrawn" {
            return;
        }
        self.value += r.value;
        self.intervals += 1;
        self.estimated += i32::from(is_estimate(r.quality));
    }

    fn share(&self) -> f64 {
        if self.intervals == 0 {
            0.0
        } else {
            f64::from(self.estimated) / f64::from(self.intervals)
        }
    }
}

/// Hourly and daily rows of one tenant.
#[derive(Debug, Clone)]
pub struct HourlyDaily {
    pub hourly: RecordBatch,
    pub daily: RecordBatch,
}

fn strings<'a>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a StringArray, OperatorError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or(schema_error(name))
}

fn decimal_array<'a>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a Decimal128Array, OperatorError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Decimal128Type>())
        .ok_or(schema_error(name))
}

fn dates<'a>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<Date32Type>, OperatorError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .ok_or(schema_error(name))
}

fn int32s<'a>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a arrow::array::PrimitiveArray<Int32Type>, OperatorError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or(schema_error(name))
}

fn timestamps<'a>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a TimestampMicrosecondArray, OperatorError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or(schema_error(name))
}

fn decimal_column(values: Vec<i128>) -> Result<ArrayRef, OperatorError> {
    Ok(Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(VALUE_PRECISION, VALUE_SCALE)
            .map_err(arrow_error)?,
    ))
}

fn utf8<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn timestamp_column(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone(UTC))
}

/// Hourly and daily consumption of one tenant from `readings` rows (every stored
/// version of complete local-date partitions; columns `meter`, `quantity`,
/// `direction`, `interval_start`, `resolution_minutes`, `local_date`, `value`,
/// `quality`, `version`, `area`, and optionally `ingested_at`, which breaks ties
/// between equal versions like the view does).
///
/// # Errors
/// Batches without those columns.
pub fn hourly_daily(
    tenant: &str,
    tz: Tz,
    readings: &[RecordBatch],
) -> Result<HourlyDaily, OperatorError> {
    let current = current_versions(readings)?;
    let (series, hours, days) = sums(&current, tz);
    Ok(HourlyDaily {
        hourly: hourly_batch(tenant, &series, &hours)?,
        daily: daily_batch(tenant, tz, &series, &days)?,
    })
}

/// The columns of `readings` that [`hourly_daily`] and [`current_readings`] read.
pub const CURRENT_COLUMNS: [&str; 11] = [
    "ingested_at",
    "meter",
    "quantity",
    "direction",
    "interval_start",
    "resolution_minutes",
    "local_date",
    "value",
    "quality",
    "version",
    "area",
];

/// One current reading (the `readings_current` view's row), as [`current_readings`] gives
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentReading<'a> {
    pub meter: &'a str,
    pub quantity: &'a str,
    pub direction: &'a str,
    /// Interval start, µs since the epoch.
    pub start_micros: i64,
    pub resolution_minutes: i32,
    /// Days since the epoch.
    pub local_date: i32,
    /// Thousandths.
    pub value: i128,
}

/// The current version of every key of `readings` rows (the columns of
/// [`hourly_daily`]), withdrawn readings left out, in no particular order: what the
/// aggregates sum, for other computations over the same readings (costs).
///
/// # Errors
/// Batches without those columns.
pub fn current_readings(
    readings: &[RecordBatch],
) -> Result<Vec<CurrentReading<'_>>, OperatorError> {
    Ok(current_versions(readings)?
        .into_iter()
        .filter(|(_, (_, r))| r.quality != "withdrawn")
        .map(
            |(((meter, quantity, direction), start), (_, r))| CurrentReading {
                meter,
                quantity,
                direction,
                start_micros: start,
                resolution_minutes: r.resolution,
                local_date: r.local_date,
                value: r.value,
            },
        )
        .collect())
}

/// Each key's version, ordered: highest version, then latest ingestion.
type VersionOrder = (i64, i64);
/// A series' readings by interval start: the current version of each.
type CurrentReadings<'a> = FastMap<(Series<'a>, i64), (VersionOrder, Current<'a>)>;
/// Sums per series and local hour (hour start in UTC micros): local date, local
/// hour of day, sum.
type HourSums<'a> = BTreeMap<(Rank, i64), (i32, i32, Sum<'a>)>;
/// Sums per series and local date.
type DaySums<'a> = BTreeMap<(Rank, i32), Sum<'a>>;
/// A series' place in the sorted series of a computation: sums are keyed by it,
/// so ordering them compares integers, not meter ids (most of the time of a
/// round went to string comparisons before).
type Rank = u32;

/// The current version of every key: highest version, then latest ingestion (the
/// order of the `readings_current` view).
fn current_versions(readings: &[RecordBatch]) -> Result<CurrentReadings<'_>, OperatorError> {
    let mut current: CurrentReadings<'_> = FastMap::default();
    for batch in readings {
        let meter = strings(batch, "meter")?;
        let quantity = strings(batch, "quantity")?;
        let direction = strings(batch, "direction")?;
        let quality = strings(batch, "quality")?;
        let area = strings(batch, "area")?;
        let start = timestamps(batch, "interval_start")?;
        let version = timestamps(batch, "version")?;
        let resolution = int32s(batch, "resolution_minutes")?;
        let local_date = dates(batch, "local_date")?;
        let value = decimal_array(batch, "value")?;
        let ingested = batch
            .column_by_name("ingested_at")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
        for row in 0..batch.num_rows() {
            let key = (
                (meter.value(row), quantity.value(row), direction.value(row)),
                start.value(row),
            );
            let v = (
                if version.is_valid(row) {
                    version.value(row)
                } else {
                    i64::MIN
                },
                ingested.map_or(0, |i| i.value(row)),
            );
            let reading = Current {
                area: area.is_valid(row).then(|| area.value(row)),
                resolution: resolution.value(row),
                local_date: local_date.value(row),
                value: value.value(row),
                quality: quality.value(row),
            };
            match current.get(&key) {
                Some((stored, _)) if *stored >= v => {}
                _ => {
                    current.insert(key, (v, reading));
                }
            }
        }
    }
    Ok(current)
}

/// Sum the current readings per local hour and per local date (ordered output,
/// by series rank: the series in sort order are returned with the sums).
fn sums<'a>(current: &CurrentReadings<'a>, tz: Tz) -> (Vec<Series<'a>>, HourSums<'a>, DaySums<'a>) {
    let mut offsets = Offsets::new(tz);
    let distinct: FastSet<Series<'a>> = current.keys().map(|(series, _)| *series).collect();
    let mut ranked: Vec<Series<'a>> = distinct.into_iter().collect();
    ranked.sort_unstable();
    let rank: FastMap<Series<'a>, Rank> = ranked
        .iter()
        .enumerate()
        .map(|(i, series)| (*series, i as Rank))
        .collect();
    let mut hours: HourSums<'a> = BTreeMap::new();
    let mut days: DaySums<'a> = BTreeMap::new();
    for ((series, start), (_, r)) in current {
        let series = rank[series];
        let offset = offsets.at(*start);
        let local = start + offset;
        let hour_start = start - local.rem_euclid(MICROS_PER_HOUR);
        let local_hour = (local.div_euclid(MICROS_PER_HOUR)).rem_euclid(24) as i32;
        hours
            .entry((series, hour_start))
            .or_insert_with(|| (r.local_date, local_hour, Sum::default()))
            .2
            .add(r);
        days.entry((series, r.local_date)).or_default().add(r);
    }
    (ranked, hours, days)
}

fn hourly_batch(
    tenant: &str,
    series: &[Series<'_>],
    hours: &HourSums<'_>,
) -> Result<RecordBatch, OperatorError> {
    let n = hours.len();
    let (mut h_meter, mut h_quantity, mut h_direction) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut h_start, mut h_date, mut h_hour, mut h_area) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut h_value, mut h_intervals, mut h_expected, mut h_complete, mut h_share) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((rank, start), (date, hour, sum)) in hours {
        let (m, q, d) = &series[*rank as usize];
        let expected = if sum.finest == 15 { 4 } else { 1 };
        h_meter.push(*m);
        h_quantity.push(*q);
        h_direction.push(*d);
        h_start.push(*start);
        h_date.push(*date);
        h_hour.push(*hour);
        h_area.push(sum.area);
        h_value.push(sum.value);
        h_intervals.push(sum.intervals);
        h_expected.push(expected);
        h_complete.push(sum.intervals == expected);
        h_share.push(sum.share());
    }
    RecordBatch::try_new(
        HOURLY.clone(),
        vec![
            utf8(std::iter::repeat_n(tenant, n)),
            utf8(h_meter),
            utf8(h_quantity),
            utf8(h_direction),
            timestamp_column(h_start),
            Arc::new(Date32Array::from(h_date)),
            Arc::new(Int32Array::from(h_hour)),
            Arc::new(StringArray::from(h_area)),
            decimal_column(h_value)?,
            Arc::new(Int32Array::from(h_intervals)),
            Arc::new(Int32Array::from(h_expected)),
            Arc::new(BooleanArray::from(h_complete)),
            Arc::new(Float64Array::from(h_share)),
        ],
    )
    .map_err(arrow_error)
}

fn daily_batch(
    tenant: &str,
    tz: Tz,
    series: &[Series<'_>],
    days: &DaySums<'_>,
) -> Result<RecordBatch, OperatorError> {
    let n = days.len();
    let mut day_minutes_cache: FastMap<i32, i64> = FastMap::default();
    let (mut d_meter, mut d_quantity, mut d_direction, mut d_date, mut d_area) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut d_value, mut d_intervals, mut d_expected, mut d_complete, mut d_share) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((rank, date), sum) in days {
        let (m, q, d) = &series[*rank as usize];
        let minutes = *day_minutes_cache
            .entry(*date)
            .or_insert_with(|| day_minutes(tz, *date));
        let per = if sum.finest == 15 { 15 } else { 60 };
        let expected = (minutes / per) as i32;
        d_meter.push(*m);
        d_quantity.push(*q);
        d_direction.push(*d);
        d_date.push(*date);
        d_area.push(sum.area);
        d_value.push(sum.value);
        d_intervals.push(sum.intervals);
        d_expected.push(expected);
        d_complete.push(sum.intervals == expected);
        d_share.push(sum.share());
    }
    RecordBatch::try_new(
        DAILY.clone(),
        vec![
            utf8(std::iter::repeat_n(tenant, n)),
            utf8(d_meter),
            utf8(d_quantity),
            utf8(d_direction),
            Arc::new(Date32Array::from(d_date)),
            Arc::new(StringArray::from(d_area)),
            decimal_column(d_value)?,
            Arc::new(Int32Array::from(d_intervals)),
            Arc::new(Int32Array::from(d_expected)),
            Arc::new(BooleanArray::from(d_complete)),
            Arc::new(Float64Array::from(d_share)),
        ],
    )
    .map_err(arrow_error)
}

/// Monthly consumption of one tenant from its `consumption_daily` rows of whole
/// months (columns `meter`, `quantity`, `direction`, `local_date`, `value`,
/// `complete`).
///
/// # Errors
/// Batches without those columns.
pub fn monthly(tenant: &str, daily: &[RecordBatch]) -> Result<RecordBatch, OperatorError> {
    let mut months: BTreeMap<(Series<'_>, i32), (i128, i32)> = BTreeMap::new();
    for batch in daily {
        let meter = strings(batch, "meter")?;
        let quantity = strings(batch, "quantity")?;
        let direction = strings(batch, "direction")?;
        let date = dates(batch, "local_date")?;
        let value = decimal_array(batch, "value")?;
        let complete = batch
            .column_by_name("complete")
            .and_then(|c| c.as_boolean_opt())
            .ok_or(schema_error("complete"))?;
        for row in 0..batch.num_rows() {
            let e = months
                .entry((
                    (meter.value(row), quantity.value(row), direction.value(row)),
                    month_of(date.value(row)),
                ))
                .or_default();
            e.0 += value.value(row);
            e.1 += i32::from(complete.value(row));
        }
    }
    let n = months.len();
    let mut cols: (Vec<&str>, Vec<&str>, Vec<&str>, Vec<i32>) = Default::default();
    let mut value = Vec::with_capacity(n);
    let (mut complete_days, mut in_month, mut complete) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (((m, q, d), month), (v, days_complete)) in &months {
        let days = days_in_month(*month);
        cols.0.push(m);
        cols.1.push(q);
        cols.2.push(d);
        cols.3.push(*month);
        value.push(*v);
        complete_days.push(*days_complete);
        in_month.push(days);
        complete.push(*days_complete == days);
    }
    RecordBatch::try_new(
        MONTHLY.clone(),
        vec![
            utf8(std::iter::repeat_n(tenant, n)),
            utf8(cols.0),
            utf8(cols.1),
            utf8(cols.2),
            Arc::new(Date32Array::from(cols.3)),
            decimal_column(value)?,
            Arc::new(Int32Array::from(complete_days)),
            Arc::new(Int32Array::from(in_month)),
            Arc::new(BooleanArray::from(complete)),
        ],
    )
    .map_err(arrow_error)
}

/// The grain of an area table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// From `consumption_hourly` rows.
    Hour,
    /// From `consumption_daily` rows.
    Day,
    /// From `consumption_daily` rows of whole months.
    Month,
}

/// Area cells of one (public) tenant from per-meter rows (`consumption_hourly` for
/// [`Grain::Hour`], `consumption_daily` otherwise), without the cells `rules` do
/// not allow. Rows without an area are in no cell. Returns the batch and the number
/// of cells suppressed.
///
/// # Errors
/// Batches without the needed columns.
pub fn area_cells(
    tenant: &str,
    grain: Grain,
    rows: &[RecordBatch],
    rules: Disclosure,
) -> Result<(RecordBatch, usize), OperatorError> {
    let cells = cells_of(grain, rows)?;
    let mut suppressed = 0;
    let mut kept: Vec<(Cell<'_>, i32, i32, i128, i32)> = Vec::new();
    for (cell, (date, hour, per_meter)) in &cells {
        if rules.allows(per_meter) {
            let total = per_meter.values().sum();
            kept.push((*cell, *date, *hour, total, per_meter.len() as i32));
        } else {
            suppressed += 1;
        }
    }
    Ok((cells_batch(tenant, grain, &kept)?, suppressed))
}

/// The rows of an area table: (cell, local date, local hour, value, meters), in
/// cell order.
fn cells_batch(
    tenant: &str,
    grain: Grain,
    kept: &[(Cell<'_>, i32, i32, i128, i32)],
) -> Result<RecordBatch, OperatorError> {
    let n = kept.len();
    let head: Vec<ArrayRef> = vec![
        utf8(std::iter::repeat_n(tenant, n)),
        utf8(kept.iter().map(|k| k.0 .0)),
        utf8(kept.iter().map(|k| k.0 .1)),
        utf8(kept.iter().map(|k| k.0 .2)),
    ];
    let value = decimal_column(kept.iter().map(|k| k.3).collect())?;
    let meters: ArrayRef = Arc::new(Int32Array::from_iter_values(kept.iter().map(|k| k.4)));
    let (schema, tail): (&SchemaRef, Vec<ArrayRef>) = match grain {
        Grain::Hour => (
            &AREA_HOURLY,
            vec![
                timestamp_column(kept.iter().map(|k| k.0 .3).collect()),
                Arc::new(Date32Array::from_iter_values(kept.iter().map(|k| k.1))),
                Arc::new(Int32Array::from_iter_values(kept.iter().map(|k| k.2))),
                value,
                meters,
            ],
        ),
        Grain::Day | Grain::Month => (
            if grain == Grain::Day {
                &AREA_DAILY
            } else {
                &AREA_MONTHLY
            },
            vec![
                Arc::new(Date32Array::from_iter_values(
                    kept.iter().map(|k| k.0 .3 as i32),
                )),
                value,
                meters,
            ],
        ),
    };
    let columns: Vec<ArrayRef> = head.into_iter().chain(tail).collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

/// An area cell: (area, quantity, direction, time key); the time key is the hour
/// start (µs), the local date or the month.
type Cell<'a> = (&'a str, &'a str, &'a str, i64);
/// Per cell: its local date and local hour (hours only), and each meter's sum.
type Cells<'a> = BTreeMap<Cell<'a>, (i32, i32, FastMap<&'a str, i128>)>;

/// Sum the rows per area cell and meter (rows without an area are in no cell).
fn cells_of(grain: Grain, rows: &[RecordBatch]) -> Result<Cells<'_>, OperatorError> {
    // Hashed while summing (a lookup per row), ordered once at the end (few cells).
    let mut cells: FastMap<Cell<'_>, (i32, i32, FastMap<&str, i128>)> = FastMap::default();
    for batch in rows {
        let meter = strings(batch, "meter")?;
        let area = strings(batch, "area")?;
        let quantity = strings(batch, "quantity")?;
        let direction = strings(batch, "direction")?;
        let date = dates(batch, "local_date")?;
        let value = decimal_array(batch, "value")?;
        let (hour_start, hour) = match grain {
            Grain::Hour => (
                Some(timestamps(batch, "hour_start")?),
                Some(int32s(batch, "local_hour")?),
            ),
            _ => (None, None),
        };
        for row in 0..batch.num_rows() {
            if !area.is_valid(row) {
                continue;
            }
            let time = match grain {
                Grain::Hour => hour_start.map_or(0, |h| h.value(row)),
                Grain::Day => i64::from(date.value(row)),
                Grain::Month => i64::from(month_of(date.value(row))),
            };
            let e = cells
                .entry((
                    area.value(row),
                    quantity.value(row),
                    direction.value(row),
                    time,
                ))
                .or_insert_with(|| {
                    (
                        date.value(row),
                        hour.map_or(0, |h| h.value(row)),
                        FastMap::default(),
                    )
                });
            *e.2.entry(meter.value(row)).or_default() += value.value(row);
        }
    }
    Ok(cells.into_iter().collect())
}

/// The distinct local dates of a set of day numbers grouped into their months.
pub fn months_of(days: impl IntoIterator<Item = i32>) -> BTreeSet<i32> {
    days.into_iter().map(month_of).collect()
}

mod area;
mod rows;

pub use area::AreaState;
pub use rows::{meters_by, select_rows, MeterHasher, MeterSet};

#[cfg(test)]
mod tests;
