//! Aggregates end to end: a stream over the autumn DST day, materialized, then late
//! readings and corrections arrive; after the pipeline settles every row of every
//! aggregate table equals an independent computation from the produced records,
//! and no area cell has fewer than k meters or a dominant meter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type, TimestampMicrosecondType};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use meterline::config::AggregateSettings;
use meterline::metrics::Metrics;
use meterline::shutdown::Shutdown;
use meterline_operators::aggregate::Disclosure;
use meterline_operators::pseudonym::IdKind;
use meterline_operators::{MasterKey, Pseudonymizer};
use serde_json::json;

use crate::common::{query, wait_for, Harness, KEY_HEX};

const PUBLIC: &str = "oslo-utility";
const PRIVATE: &str = "acme-industri";
const OSLO: chrono_tz::Tz = chrono_tz::Europe::Oslo;
const K: usize = 10;

/// One produced reading.
#[derive(Debug, Clone)]
struct Produced {
    tenant: &'static str,
    meter: String,
    area: &'static str,
    start: DateTime<Utc>,
    resolution: i64,
    value: i128,
    version: DateTime<Utc>,
    quality: &'static str,
}

impl Produced {
    fn message(&self) -> (String, Option<Vec<u8>>) {
        let v = json!({
            "schema": "reading/v1", "tenant": self.tenant, "device_id": format!("dev-{}", self.meter),
            "meter_id": self.meter, "quantity": "electricity", "direction": "import",
            "start": self.start.with_timezone(&OSLO).to_rfc3339(),
            "resolution": if self.resolution == 15 { "PT15M" } else { "PT1H" },
            "value": format!("{}.{:03}", self.value / 1000, self.value % 1000).parse::<f64>().unwrap(),
            "unit": "kWh", "quality": self.quality,
            "version": self.version.to_rfc3339(), "area": self.area,
        });
        (self.meter.clone(), Some(v.to_string().into_bytes()))
    }
}

fn local_midnight(date: NaiveDate) -> DateTime<Utc> {
    OSLO.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// The stream: public meters in three areas (NO1: 12 meters; NO2: 4, too few;
/// NO3: 12, one of which uses far more than the rest), a few private meters, some
/// at PT15M, over 2026-10-24..26 (the 25th has 25 hours in Europe/Oslo).
fn stream() -> (Vec<Produced>, Vec<Produced>) {
    let days = [
        NaiveDate::from_ymd_opt(2026, 10, 24).unwrap(),
        NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
        NaiveDate::from_ymd_opt(2026, 10, 26).unwrap(),
    ];
    let mut meters: Vec<(&'static str, String, &'static str, i64, i128)> = Vec::new();
    for i in 0..28u32 {
        let area = match i {
            0..12 => "NO1",
            12..16 => "NO2",
            _ => "NO3",
        };
        let scale = if i == 16 { 24 } else { 1 };
        // Some PT15M meters (not in NO3, whose dominant meter must stay dominant
        // in every hour).
        let resolution = if i % 5 == 0 && i < 16 { 15 } else { 60 };
        meters.push((
            PUBLIC,
            meterline::dev::generator::gsrn(900 + i),
            area,
            resolution,
            scale,
        ));
    }
    for i in 0..4u32 {
        meters.push((
            PRIVATE,
            meterline::dev::generator::gsrn(950 + i),
            "NO1",
            60,
            1,
        ));
    }
    let version = Utc.with_ymd_and_hms(2026, 10, 27, 6, 0, 0).unwrap();
    let (mut initial, mut late) = (Vec::new(), Vec::new());
    for (m, (tenant, meter, area, resolution, scale)) in meters.iter().enumerate() {
        for day in days {
            let (start, end) = (local_midnight(day), local_midnight(day.succ_opt().unwrap()));
            let mut t = start;
            let mut n = 0i128;
            while t < end {
                let r = Produced {
                    tenant,
                    meter: meter.clone(),
                    area,
                    start: t,
                    resolution: *resolution,
                    value: (n % 7 + 1) * 113 * scale + m as i128,
                    version,
                    quality: if n % 11 == 3 { "estimated" } else { "measured" },
                };
                // Some hours of the DST day arrive late (after the first round).
                if day == days[1] && (n + m as i128) % 6 == 0 {
                    late.push(r);
                } else {
                    initial.push(r);
                }
                n += 1;
                t += chrono::Duration::minutes(*resolution);
            }
        }
    }
    // Corrections after the first round: newer versions (other values), an older
    // version (ignored), a resend (duplicate), a withdrawal.
    let mut corrections = Vec::new();
    for (i, r) in initial.iter().enumerate().filter(|(i, _)| i % 37 == 0) {
        let mut newer = r.clone();
        newer.version = r.version + chrono::Duration::days(3);
        newer.value = r.value + 4_321;
        corrections.push(newer);
        let mut older = r.clone();
        older.version = r.version - chrono::Duration::days(1);
        older.value = 1;
        corrections.push(older);
        if i % 2 == 0 {
            corrections.push(r.clone());
        }
    }
    let mut withdrawn = initial[5].clone();
    withdrawn.version += chrono::Duration::days(4);
    withdrawn.quality = "withdrawn";
    corrections.push(withdrawn);
    late.extend(corrections);
    (initial, late)
}

type HourKey = (String, String, i64);
type DayKey = (String, String, i32);

#[derive(Debug, Default)]
struct Oracle {
    /// (tenant, meter as stored, hour_start µs) -> (local date, local hour, value, intervals, expected)
    hourly: BTreeMap<HourKey, (i32, i32, i128, i32, i32)>,
    /// (tenant, meter, local date) -> (value, intervals, expected, complete)
    daily: BTreeMap<DayKey, (i128, i32, i32, bool)>,
    /// (tenant, meter, month) -> (value, days complete, days in month)
    monthly: BTreeMap<DayKey, (i128, i32, i32)>,
    /// (tenant, area, local date) -> (value, meters), only cells that may be published
    area_daily: BTreeMap<DayKey, (i128, i32)>,
    area_hourly: BTreeMap<HourKey, (i128, i32)>,
}

fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// An independent computation from the produced records.
fn oracle(all: &[Produced]) -> Oracle {
    let mut pseudonyms = Pseudonymizer::new(MasterKey::from_hex(KEY_HEX).unwrap());
    // Current version per key (later arrival wins among equal versions: resends
    // are identical).
    let mut current: BTreeMap<(String, i64), &Produced> = BTreeMap::new();
    for r in all {
        let key = (r.meter.clone(), r.start.timestamp_micros());
        match current.get(&key) {
            Some(c) if c.version >= r.version => {}
            _ => {
                current.insert(key, r);
            }
        }
    }
    let mut o = Oracle::default();
    let mut day_res: BTreeMap<DayKey, i64> = BTreeMap::new();
    let mut area_cells_d: BTreeMap<(String, String, i32), BTreeMap<String, i128>> = BTreeMap::new();
    let mut area_cells_h: BTreeMap<(String, String, i64), BTreeMap<String, i128>> = BTreeMap::new();
    for r in current.values() {
        let meter = if r.tenant == PUBLIC {
            pseudonyms.pseudonym(r.tenant, IdKind::Meter, &r.meter)
        } else {
            r.meter.clone()
        };
        let local = r.start.with_timezone(&OSLO);
        let date = days(local.date_naive());
        let hour_start = r.start.timestamp_micros() - i64::from(local.minute()) * 60_000_000;
        let counted = r.quality != "withdrawn";
        let value = if counted { r.value } else { 0 };
        let per_hour = if r.resolution == 15 { 4 } else { 1 };
        let h = o
            .hourly
            .entry((r.tenant.to_owned(), meter.clone(), hour_start))
            .or_insert((date, local.hour() as i32, 0, 0, per_hour));
        h.2 += value;
        h.3 += i32::from(counted);
        let d = o
            .daily
            .entry((r.tenant.to_owned(), meter.clone(), date))
            .or_insert((0, 0, 0, false));
        d.0 += value;
        d.1 += i32::from(counted);
        day_res.insert((r.tenant.to_owned(), meter.clone(), date), r.resolution);
        if r.tenant == PUBLIC {
            *area_cells_d
                .entry((r.tenant.to_owned(), r.area.to_owned(), date))
                .or_default()
                .entry(meter.clone())
                .or_default() += value;
            *area_cells_h
                .entry((r.tenant.to_owned(), r.area.to_owned(), hour_start))
                .or_default()
                .entry(meter.clone())
                .or_default() += value;
        }
    }
    for (key, d) in o.daily.iter_mut() {
        let date =
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(i64::from(key.2));
        let hours =
            (local_midnight(date.succ_opt().unwrap()) - local_midnight(date)).num_hours() as i32;
        d.2 = hours * if day_res[key] == 15 { 4 } else { 1 };
        d.3 = d.1 == d.2;
    }
    for ((t, m, date), (value, _, _, complete)) in &o.daily {
        let first =
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(i64::from(*date));
        let month = first.with_day(1).unwrap();
        let next = if month.month() == 12 {
            NaiveDate::from_ymd_opt(month.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(month.year(), month.month() + 1, 1)
        }
        .unwrap();
        let e = o
            .monthly
            .entry((t.clone(), m.clone(), days(month)))
            .or_insert((0, 0, (next - month).num_days() as i32));
        e.0 += value;
        e.1 += i32::from(*complete);
    }
    let publishable = |per_meter: &BTreeMap<String, i128>| {
        let total: i128 = per_meter.values().sum();
        let max = per_meter.values().copied().max().unwrap_or(0);
        per_meter.len() >= K && (total == 0 || max * 2 <= total)
    };
    for ((t, a, date), per_meter) in area_cells_d {
        if publishable(&per_meter) {
            o.area_daily.insert(
                (t, a, date),
                (per_meter.values().sum(), per_meter.len() as i32),
            );
        }
    }
    for ((t, a, hour), per_meter) in area_cells_h {
        if publishable(&per_meter) {
            o.area_hourly.insert(
                (t, a, hour),
                (per_meter.values().sum(), per_meter.len() as i32),
            );
        }
    }
    o
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a arrow::array::ArrayRef {
    b.column_by_name(name).unwrap()
}

fn strings(b: &RecordBatch, name: &str) -> Vec<String> {
    col(b, name)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_owned())
        .collect()
}

fn ints(b: &RecordBatch, name: &str) -> Vec<i32> {
    col(b, name).as_primitive::<Int32Type>().values().to_vec()
}

fn values(b: &RecordBatch) -> Vec<i128> {
    col(b, "value")
        .as_primitive::<Decimal128Type>()
        .values()
        .to_vec()
}

fn dates(b: &RecordBatch, name: &str) -> Vec<i32> {
    col(b, name).as_primitive::<Date32Type>().values().to_vec()
}

async fn lake_state(lake: &meterline_sinks::LakeConfig) -> Oracle {
    let mut o = Oracle::default();
    for b in query(lake, "SELECT * FROM consumption_daily").await {
        let complete = col(&b, "complete").as_boolean();
        let (t, m, d, v) = (
            strings(&b, "tenant"),
            strings(&b, "meter"),
            dates(&b, "local_date"),
            values(&b),
        );
        let (n, e) = (ints(&b, "intervals"), ints(&b, "expected_intervals"));
        for i in 0..b.num_rows() {
            let previous = o.daily.insert(
                (t[i].clone(), m[i].clone(), d[i]),
                (v[i], n[i], e[i], complete.value(i)),
            );
            assert!(previous.is_none(), "duplicate daily row");
        }
    }
    for b in query(lake, "SELECT * FROM consumption_hourly").await {
        let hs = col(&b, "hour_start").as_primitive::<TimestampMicrosecondType>();
        let (t, m, d, v) = (
            strings(&b, "tenant"),
            strings(&b, "meter"),
            dates(&b, "local_date"),
            values(&b),
        );
        let (h, n, e) = (
            ints(&b, "local_hour"),
            ints(&b, "intervals"),
            ints(&b, "expected_intervals"),
        );
        for i in 0..b.num_rows() {
            let previous = o.hourly.insert(
                (t[i].clone(), m[i].clone(), hs.value(i)),
                (d[i], h[i], v[i], n[i], e[i]),
            );
            assert!(previous.is_none(), "duplicate hourly row");
        }
    }
    for b in query(lake, "SELECT * FROM consumption_monthly").await {
        let (t, m, d, v) = (
            strings(&b, "tenant"),
            strings(&b, "meter"),
            dates(&b, "month"),
            values(&b),
        );
        let (c, n) = (ints(&b, "days_complete"), ints(&b, "days_in_month"));
        for i in 0..b.num_rows() {
            let previous = o
                .monthly
                .insert((t[i].clone(), m[i].clone(), d[i]), (v[i], c[i], n[i]));
            assert!(previous.is_none(), "duplicate monthly row");
        }
    }
    for b in query(lake, "SELECT * FROM area_consumption_daily").await {
        let (t, a, d, v) = (
            strings(&b, "tenant"),
            strings(&b, "area"),
            dates(&b, "local_date"),
            values(&b),
        );
        let meters = ints(&b, "meters");
        for i in 0..b.num_rows() {
            assert!(
                meters[i] as usize >= K,
                "an area cell below k exists in the lake"
            );
            o.area_daily
                .insert((t[i].clone(), a[i].clone(), d[i]), (v[i], meters[i]));
        }
    }
    for b in query(lake, "SELECT * FROM area_consumption_hourly").await {
        let hs = col(&b, "hour_start").as_primitive::<TimestampMicrosecondType>();
        let (t, a, v) = (strings(&b, "tenant"), strings(&b, "area"), values(&b));
        let meters = ints(&b, "meters");
        for i in 0..b.num_rows() {
            assert!(
                meters[i] as usize >= K,
                "an area cell below k exists in the lake"
            );
            o.area_hourly
                .insert((t[i].clone(), a[i].clone(), hs.value(i)), (v[i], meters[i]));
        }
    }
    o
}

/// Wait until every produced record is accounted for and the aggregates reflect
/// the latest `readings` version.
async fn settle(h: &Harness, metrics: &Metrics, produced: u64) {
    let m = metrics.clone();
    wait_for(
        "all records accounted for",
        Duration::from_secs(120),
        || {
            let c = m.conservation();
            async move { c.written + c.dead_lettered + c.dropped >= produced }
        },
    )
    .await;
    let lake = meterline_sinks::Lake::new(&h.lake_config()).unwrap();
    let mut readings =
        meterline_sinks::SourceTable::new(&lake, "readings", &["tenant", "local_date"]);
    let latest = readings.refresh().await.unwrap().expect("readings exist") as i64;
    let m = metrics.clone();
    wait_for(
        "aggregates reflect the latest readings",
        Duration::from_secs(120),
        || {
            let folded = m.aggregate_version.get();
            async move { folded == latest }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_an_oracle_after_late_data_and_corrections() {
    let h = Harness::new(3);
    let mut settings = h.settings("aggregates");
    settings.aggregate = AggregateSettings {
        enabled: true,
        interval: Duration::from_millis(500),
        max_days_per_step: 2,
        // Small enough that some steps end on the reading limit, not the day limit.
        max_readings_per_step: 300,
        disclosure: [(
            PUBLIC.to_owned(),
            Disclosure {
                min_meters: K,
                max_meter_share: 0.5,
            },
        )]
        .into_iter()
        .collect(),
    };
    let metrics = Metrics::new();
    let shutdown = Arc::new(Shutdown::default());
    let task = tokio::spawn(meterline::service::run_pipeline(
        settings,
        metrics.clone(),
        shutdown.clone(),
    ));

    let (initial, late) = stream();
    let messages: Vec<_> = initial.iter().map(Produced::message).collect();
    h.produce(&messages).await;
    settle(&h, &metrics, initial.len() as u64).await;
    let first = lake_state(&h.lake_config()).await;
    assert!(!first.daily.is_empty());

    let messages: Vec<_> = late.iter().map(Produced::message).collect();
    h.produce(&messages).await;
    settle(&h, &metrics, (initial.len() + late.len()) as u64).await;
    shutdown.request();
    task.await.unwrap().unwrap();

    let all: Vec<Produced> = initial.iter().chain(&late).cloned().collect();
    let want = oracle(&all);
    let got = lake_state(&h.lake_config()).await;
    assert_eq!(got.daily, want.daily);
    assert_eq!(got.hourly, want.hourly);
    assert_eq!(got.monthly, want.monthly);
    assert_eq!(got.area_daily, want.area_daily);
    assert_eq!(got.area_hourly, want.area_hourly);
    // The stream was built to exercise suppression: NO2 is too small, NO3 has a
    // dominant meter (in every day; in most hours: corrections of other meters
    // make it less than half of a few hours).
    let areas: BTreeSet<&str> = got.area_daily.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(areas, BTreeSet::from(["NO1"]));
    let hours = |area: &str| got.area_hourly.keys().filter(|k| k.1 == area).count();
    assert_eq!(hours("NO2"), 0);
    assert!(
        hours("NO3") * 4 < hours("NO1"),
        "NO3 hours: {}",
        hours("NO3")
    );
    // The 25-hour day: 25 hourly rows per PT1H meter, 100 quarters per PT15M meter.
    let dst = days(NaiveDate::from_ymd_opt(2026, 10, 25).unwrap());
    assert!(got
        .daily
        .iter()
        .filter(|(k, _)| k.2 == dst)
        .all(|(_, d)| d.2 == 25 || d.2 == 100));
    // The late data changed the first materialization (it was recomputed).
    assert_ne!(first.daily, got.daily);
}
