use super::*;
use arrow::datatypes::Float64Type;
use proptest::prelude::*;

const OSLO: Tz = chrono_tz::Europe::Oslo;
const NEW_YORK: Tz = chrono_tz::America::New_York;

fn day(y: i32, m: u32, d: u32) -> i32 {
    days_since_epoch(NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

/// One stored reading, as the test writes it.
#[derive(Debug, Clone)]
struct R {
    meter: String,
    direction: &'static str,
    start: i64,
    resolution: i32,
    value: i128,
    quality: &'static str,
    version: Option<i64>,
    area: Option<String>,
}

fn local_date(tz: Tz, micros: i64) -> i32 {
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
    days_since_epoch(t.with_timezone(&tz).date_naive())
}

fn batch(tz: Tz, rows: &[R]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("meter", DataType::Utf8, false),
        Field::new("quantity", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
        Field::new("interval_start", ts(), false),
        Field::new("resolution_minutes", DataType::Int32, false),
        Field::new("local_date", DataType::Date32, false),
        Field::new("value", DataType::Decimal128(18, 3), false),
        Field::new("quality", DataType::Utf8, false),
        Field::new("version", ts(), true),
        Field::new("area", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            utf8(rows.iter().map(|r| r.meter.as_str())),
            utf8(rows.iter().map(|_| "electricity")),
            utf8(rows.iter().map(|r| r.direction)),
            timestamp_column(rows.iter().map(|r| r.start).collect()),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.resolution),
            )),
            Arc::new(Date32Array::from_iter_values(
                rows.iter().map(|r| local_date(tz, r.start)),
            )),
            Arc::new(
                Decimal128Array::from_iter_values(rows.iter().map(|r| r.value))
                    .with_precision_and_scale(18, 3)
                    .unwrap(),
            ),
            utf8(rows.iter().map(|r| r.quality)),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.version).collect::<Vec<_>>())
                    .with_timezone(UTC),
            ),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.area.as_deref()).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// Every interval of a local day at a resolution.
fn day_intervals(tz: Tz, date: i32, resolution: i32) -> Vec<i64> {
    let (start, end) = (day_start(tz, date), day_start(tz, date + 1));
    (start..end)
        .step_by((i64::from(resolution) * MICROS_PER_MINUTE) as usize)
        .collect()
}

fn full_day(tz: Tz, meter: &str, date: i32, resolution: i32, value: i128) -> Vec<R> {
    day_intervals(tz, date, resolution)
        .into_iter()
        .map(|start| R {
            meter: meter.into(),
            direction: "import",
            start,
            resolution,
            value,
            quality: "measured",
            version: None,
            area: Some("NO1".into()),
        })
        .collect()
}

fn column_i32(b: &RecordBatch, name: &str) -> Vec<i32> {
    b.column_by_name(name)
        .unwrap()
        .as_primitive::<Int32Type>()
        .values()
        .to_vec()
}

fn column_values(b: &RecordBatch) -> Vec<i128> {
    b.column_by_name("value")
        .unwrap()
        .as_primitive::<Decimal128Type>()
        .values()
        .to_vec()
}

#[test]
fn dst_days_have_23_and_25_hours_in_oslo() {
    assert_eq!(day_minutes(OSLO, day(2025, 3, 30)), 23 * 60);
    assert_eq!(day_minutes(OSLO, day(2025, 10, 26)), 25 * 60);
    assert_eq!(day_minutes(OSLO, day(2026, 3, 29)), 23 * 60);
    assert_eq!(day_minutes(OSLO, day(2026, 10, 25)), 25 * 60);
    assert_eq!(day_minutes(OSLO, day(2025, 6, 1)), 24 * 60);
    // shared/DOMAIN.md: 2026-10-25 starts 2026-10-24T22:00Z.
    assert_eq!(
        day_start(OSLO, day(2026, 10, 25)),
        chrono::DateTime::parse_from_rfc3339("2026-10-24T22:00:00Z")
            .unwrap()
            .timestamp_micros()
    );
    assert_eq!(day_minutes(NEW_YORK, day(2026, 3, 8)), 23 * 60);
    assert_eq!(day_minutes(NEW_YORK, day(2026, 11, 1)), 25 * 60);
}

#[test]
fn the_autumn_day_has_25_hourly_rows_with_the_repeated_hour_twice() {
    let date = day(2026, 10, 25);
    let rows = full_day(OSLO, "m1", date, 60, 1000);
    let out = hourly_daily("t", OSLO, &[batch(OSLO, &rows)]).unwrap();
    assert_eq!(out.hourly.num_rows(), 25);
    let hours = column_i32(&out.hourly, "local_hour");
    assert_eq!(hours.iter().filter(|h| **h == 2).count(), 2);
    assert_eq!(column_i32(&out.daily, "expected_intervals"), vec![25]);
    assert_eq!(column_i32(&out.daily, "intervals"), vec![25]);
    assert_eq!(column_values(&out.daily), vec![25_000]);
    let complete = out.daily.column_by_name("complete").unwrap().as_boolean();
    assert!(complete.value(0));

    // Quarter hours: 100 expected, 4 per hour.
    let rows = full_day(OSLO, "m1", day(2026, 3, 29), 15, 250);
    let out = hourly_daily("t", OSLO, &[batch(OSLO, &rows)]).unwrap();
    assert_eq!(out.hourly.num_rows(), 23);
    assert_eq!(column_i32(&out.daily, "expected_intervals"), vec![92]);
    assert!(column_i32(&out.hourly, "expected_intervals")
        .iter()
        .all(|e| *e == 4));
    assert!(column_i32(&out.hourly, "intervals").iter().all(|e| *e == 4));
}

#[test]
fn current_versions_gaps_and_quality() {
    let date = day(2026, 1, 15);
    let mut rows = full_day(OSLO, "m1", date, 60, 1000);
    // A correction of hour 0, an older version of hour 1, a withdrawn hour 2.
    let mut correction = rows[0].clone();
    correction.version = Some(10);
    correction.value = 5000;
    correction.quality = "estimated";
    rows[1].version = Some(20);
    let mut older = rows[1].clone();
    older.version = Some(5);
    older.value = 99_000;
    rows[2].quality = "withdrawn";
    rows.push(correction);
    rows.push(older);
    rows.reverse();
    let out = hourly_daily("t", OSLO, &[batch(OSLO, &rows)]).unwrap();
    assert_eq!(column_values(&out.daily), vec![5000 + 22 * 1000]);
    assert_eq!(column_i32(&out.daily, "intervals"), vec![23]);
    assert!(!out
        .daily
        .column_by_name("complete")
        .unwrap()
        .as_boolean()
        .value(0));
    let share = out
        .daily
        .column_by_name("estimated_share")
        .unwrap()
        .as_primitive::<Float64Type>()
        .value(0);
    assert!((share - 1.0 / 23.0).abs() < 1e-12);
}

#[test]
fn months_sum_days_and_know_their_length() {
    let mut rows = Vec::new();
    for d in 1..=28 {
        rows.extend(full_day(OSLO, "m1", day(2026, 2, d), 60, 10));
    }
    rows.extend(full_day(OSLO, "m1", day(2026, 3, 1), 60, 10));
    let out = hourly_daily("t", OSLO, &[batch(OSLO, &rows)]).unwrap();
    let months = monthly("t", &[out.daily]).unwrap();
    assert_eq!(months.num_rows(), 2);
    assert_eq!(column_i32(&months, "days_in_month"), vec![28, 31]);
    assert_eq!(column_i32(&months, "days_complete"), vec![28, 1]);
    let complete = months.column_by_name("complete").unwrap().as_boolean();
    assert!(complete.value(0) && !complete.value(1));
    assert_eq!(column_values(&months), vec![28 * 24 * 10, 24 * 10]);
}

#[test]
fn small_or_dominated_area_cells_are_suppressed() {
    let date = day(2026, 1, 15);
    let mut rows = Vec::new();
    // NO1: 10 meters, equal values -> published.
    for m in 0..10 {
        rows.extend(full_day(OSLO, &format!("a{m}"), date, 60, 100));
    }
    // NO2: 9 meters -> fewer than k.
    for m in 0..9 {
        let mut r = full_day(OSLO, &format!("b{m}"), date, 60, 100);
        r.iter_mut().for_each(|r| r.area = Some("NO2".into()));
        rows.extend(r);
    }
    // NO3: 12 meters, one with more than half of the value.
    for m in 0..12 {
        let value = if m == 0 { 5_000 } else { 100 };
        let mut r = full_day(OSLO, &format!("c{m}"), date, 60, value);
        r.iter_mut().for_each(|r| r.area = Some("NO3".into()));
        rows.extend(r);
    }
    let out = hourly_daily("t", OSLO, &[batch(OSLO, &rows)]).unwrap();
    let rules = Disclosure::default();
    for (grain, input) in [
        (Grain::Hour, &out.hourly),
        (Grain::Day, &out.daily),
        (Grain::Month, &out.daily),
    ] {
        let (cells, suppressed) =
            area_cells("t", grain, std::slice::from_ref(input), rules).unwrap();
        let areas: BTreeSet<&str> = cells
            .column_by_name("area")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(areas, BTreeSet::from(["NO1"]), "{grain:?}");
        assert!(column_i32(&cells, "meters").iter().all(|m| *m == 10));
        assert_eq!(suppressed, if grain == Grain::Hour { 48 } else { 2 });
    }
}

/// A generated stream: per meter and day a resolution and which intervals arrive,
/// values, qualities, and extra versions (corrections, duplicates, older ones).
#[derive(Debug, Clone)]
struct Plan {
    tz: Tz,
    rows: Vec<R>,
    /// Days generated complete (every interval once, none withdrawn), with their
    /// resolution.
    complete_days: Vec<(String, i32, i32)>,
}

fn plan() -> impl Strategy<Value = Plan> {
    let oslo_days = vec![
        day(2025, 3, 30),
        day(2025, 10, 26),
        day(2026, 3, 29),
        day(2026, 10, 25),
        day(2025, 6, 1),
        day(2026, 1, 31),
        day(2026, 2, 1),
    ];
    let ny_days = vec![day(2026, 3, 8), day(2026, 11, 1), day(2026, 6, 30)];
    (
        prop_oneof![3 => Just(OSLO), 1 => Just(NEW_YORK)],
        prop::collection::vec(
            (
                0usize..3,       // meter
                0usize..7,       // day index
                prop::bool::ANY, // PT15M?
                prop::bool::ANY, // complete?
                0u64..u64::MAX,  // seed for values and extras
            ),
            1..6,
        ),
        0u64..u64::MAX,
    )
        .prop_map(move |(tz, days, shuffle_seed)| {
            let pool = if tz == OSLO { &oslo_days } else { &ny_days };
            let mut rows = Vec::new();
            let mut complete_days = Vec::new();
            let mut seen = BTreeSet::new();
            for (meter, d, quarter, complete, seed) in days {
                let date = pool[d % pool.len()];
                let meter = format!("m{meter}");
                if !seen.insert((meter.clone(), date)) {
                    continue; // one resolution per meter and day
                }
                let resolution = if quarter { 15 } else { 60 };
                let mut s = seed;
                let mut next = || {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s
                };
                for start in day_intervals(tz, date, resolution) {
                    if !complete && next() % 5 == 0 {
                        continue;
                    }
                    let base = R {
                        meter: meter.clone(),
                        direction: if next() % 7 == 0 { "export" } else { "import" },
                        start,
                        resolution,
                        value: i128::from(next() % 5000),
                        quality: if complete {
                            "measured"
                        } else {
                            ["measured", "estimated", "withdrawn"][(next() % 3) as usize]
                        },
                        version: Some(1_000 + (next() % 3) as i64),
                        area: Some(format!("NO{}", next() % 2)),
                    };
                    match next() % 6 {
                        0 => {
                            let mut newer = base.clone();
                            newer.version = base.version.map(|v| v + 5);
                            newer.value = i128::from(next() % 5000);
                            rows.push(newer);
                        }
                        1 => {
                            let mut older = base.clone();
                            older.version = None;
                            older.value = i128::from(next() % 5000);
                            rows.push(older);
                        }
                        2 => rows.push(base.clone()), // duplicate
                        _ => {}
                    }
                    rows.push(base);
                }
                if complete {
                    complete_days.push((meter, date, resolution));
                }
            }
            // Arrival order.
            let mut s = shuffle_seed | 1;
            for i in (1..rows.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                rows.swap(i, (s % (i as u64 + 1)) as usize);
            }
            Plan {
                tz,
                rows,
                complete_days,
            }
        })
}

/// The independent oracle: current value per key (highest version), per meter.
fn oracle(rows: &[R]) -> BTreeMap<String, i128> {
    let mut current: BTreeMap<(String, &str, i64), (i64, i128, &str)> = BTreeMap::new();
    for r in rows {
        let v = r.version.unwrap_or(i64::MIN);
        let e = current
            .entry((r.meter.clone(), r.direction, r.start))
            .or_insert((v, r.value, r.quality));
        if v > e.0 {
            *e = (v, r.value, r.quality);
        }
    }
    let mut out = BTreeMap::new();
    for ((meter, _, _), (_, value, quality)) in current {
        *out.entry(meter).or_default() += if quality == "withdrawn" { 0 } else { value };
    }
    out
}

fn per_meter(batches: &[&RecordBatch]) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for b in batches {
        let meters = b.column_by_name("meter").unwrap().as_string::<i32>();
        for (m, v) in meters.iter().zip(column_values(b)) {
            *out.entry(m.unwrap().to_owned()).or_default() += v;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Hourly, daily, monthly and readings_current agree per meter, exactly, for any
    /// arrival order, split into batches; complete days expect 23/24/25 hours (x4).
    #[test]
    fn sums_agree_at_every_grain(plan in plan(), split in 1usize..4) {
        let tz = plan.tz;
        let chunk = plan.rows.len().div_ceil(split).max(1);
        let batches: Vec<RecordBatch> = plan.rows.chunks(chunk).map(|c| batch(tz, c)).collect();
        let out = hourly_daily("t", tz, &batches).unwrap();
        let months = monthly("t", std::slice::from_ref(&out.daily)).unwrap();
        let expected = oracle(&plan.rows);
        let expected: BTreeMap<String, i128> = expected.into_iter().collect();
        prop_assert_eq!(&per_meter(&[&out.hourly]), &expected);
        prop_assert_eq!(&per_meter(&[&out.daily]), &expected);
        prop_assert_eq!(&per_meter(&[&months]), &expected);

        let meters = out.daily.column_by_name("meter").unwrap().as_string::<i32>();
        let dates = out.daily.column_by_name("local_date").unwrap().as_primitive::<Date32Type>();
        let expected_intervals = column_i32(&out.daily, "expected_intervals");
        let intervals = column_i32(&out.daily, "intervals");
        let complete = out.daily.column_by_name("complete").unwrap().as_boolean();
        let directions = out.daily.column_by_name("direction").unwrap().as_string::<i32>();
        for (meter, date, resolution) in &plan.complete_days {
            let hours = (day_minutes(tz, *date) / 60) as i32;
            let per_hour = if *resolution == 15 { 4 } else { 1 };
            let mut total = 0;
            for row in 0..out.daily.num_rows() {
                if meters.value(row) == meter && dates.value(row) == *date {
                    prop_assert_eq!(expected_intervals[row], hours * per_hour);
                    total += intervals[row];
                    if directions.value(row) == "import" && intervals[row] == hours * per_hour {
                        prop_assert!(complete.value(row));
                    }
                }
            }
            // import and export rows of the day cover every interval once.
            prop_assert_eq!(total, hours * per_hour);
        }
    }
}

/// Daily per-meter rows (the columns area cells read) of (meter, area, date, value).
fn daily_rows(rows: &[(String, Option<&str>, i32, i128)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("meter", DataType::Utf8, false),
        Field::new("quantity", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
        Field::new("local_date", DataType::Date32, false),
        Field::new("area", DataType::Utf8, true),
        Field::new("value", value_type(), false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            utf8(rows.iter().map(|r| r.0.as_str())),
            utf8(rows.iter().map(|_| "electricity")),
            utf8(rows.iter().map(|_| "consumption")),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
            decimal_column(rows.iter().map(|r| r.3).collect()).unwrap(),
        ],
    )
    .unwrap()
}

proptest! {
    /// Area cells kept by adding and removing meters equal the cells summed from
    /// every meter's rows (`area_cells`), at day and month grain; only removals make
    /// a state stale, and a rebuilt state agrees too.
    #[test]
    fn area_state_follows_meter_changes(
        initial in proptest::collection::vec((0u8..12, 0u8..3, 0u8..3, 0i128..50), 0..60),
        changes in proptest::collection::vec(
            (proptest::collection::btree_set(0u8..12, 1..5),
             proptest::collection::vec((0u8..12, 0u8..3, 0u8..3, 0i128..50), 0..20)),
            1..4),
        min_meters in 1usize..4,
    ) {
        let rules = Disclosure { min_meters, max_meter_share: 0.6 };
        let areas = [Some("NO1"), Some("NO2"), None];
        let first = day(2026, 10, 30);
        let row = |(m, a, d, v): (u8, u8, u8, i128)| {
            (format!("m{m}"), areas[a as usize], first + i32::from(d), v * 1000)
        };
        for grain in [Grain::Day, Grain::Month] {
            let mut stored: Vec<_> = initial.iter().copied().map(row).collect();
            let mut state = AreaState::build(grain, &[daily_rows(&stored)]).unwrap();
            prop_assert!(!state.is_stale());
            for (meters, new) in &changes {
                let names: BTreeSet<String> = meters.iter().map(|m| format!("m{m}")).collect();
                let (old, kept): (Vec<_>, Vec<_>) =
                    stored.iter().cloned().partition(|r| names.contains(&r.0));
                let new: Vec<_> = new
                    .iter()
                    .copied()
                    .filter(|r| meters.contains(&r.0))
                    .map(row)
                    .collect();
                let additions_only = old.is_empty();
                state.remove(&[daily_rows(&old)]).unwrap();
                state.add(&[daily_rows(&new)]).unwrap();
                stored = kept.into_iter().chain(new).collect();
                if additions_only {
                    prop_assert!(!state.is_stale());
                }
                if state.is_stale() {
                    prop_assert!(state.batch("t", rules).is_err());
                    state = AreaState::build(grain, &[daily_rows(&stored)]).unwrap();
                }
                let expected = area_cells("t", grain, &[daily_rows(&stored)], rules).unwrap();
                let got = state.batch("t", rules).unwrap();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
