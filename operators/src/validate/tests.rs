use super::*;
use crate::chain::Chain;
use crate::decode::{DecodeConfig, RawRecord};
use crate::pseudonym::{MasterKey, Pseudonymizer};
use crate::tenant::{Deployment, Tenant};
use arrow::array::AsArray;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;

/// 2026-11-25T00:00:00Z
const NOW: i64 = 1_795_564_800_000_000;

fn tenants(rules: Rules) -> TenantRegistry {
    TenantRegistry::new([
        Tenant {
            id: "oslo".into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Europe::Oslo,
            rules,
        },
        Tenant {
            id: "kolkata".into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Asia::Kolkata,
            rules: Rules::default(),
        },
    ])
    .unwrap()
}

fn chain(rules: Rules) -> Chain {
    Chain::new(
        DecodeConfig::default(),
        tenants(rules),
        Some(Pseudonymizer::new(MasterKey::from_bytes([1; 32]))),
    )
    .unwrap()
}

/// A reading with overrides (JSON values).
fn reading(overrides: &[(&str, &str)]) -> String {
    let mut v: serde_json::Value = serde_json::from_str(
        r#"{"schema":"reading/v1","tenant":"oslo","device_id":"dev-1",
        "meter_id":"707057500000000018","quantity":"electricity",
        "start":"2026-10-25T00:00:00Z","resolution":"PT1H","value":1.5,"unit":"kWh",
        "quality":"measured","version":"2026-10-26T06:00:00Z"}"#,
    )
    .unwrap();
    for (k, val) in overrides {
        v[*k] = serde_json::from_str(val).unwrap();
    }
    v.to_string()
}

struct Run {
    readings: RecordBatch,
    reasons: Vec<(i64, Reason)>,
}

fn run_with(chain: &mut Chain, texts: &[String]) -> Run {
    let records: Vec<RawRecord> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| RawRecord {
            partition: 0,
            offset: i as i64,
            payload: Some(t.as_bytes()),
            replay_tag: None,
        })
        .collect();
    let out = chain
        .process(&records, &OperatorContext { now_micros: NOW })
        .unwrap();
    assert_eq!(
        out.readings.num_rows() + out.dead_letters.len(),
        texts.len(),
        "every record accounted for"
    );
    let mut reasons: Vec<(i64, Reason)> = out
        .dead_letters
        .iter()
        .map(|d| (d.offset, d.reason))
        .collect();
    reasons.sort();
    Run {
        readings: out.readings,
        reasons,
    }
}

fn run(texts: &[String]) -> Run {
    run_with(&mut chain(Rules::default()), texts)
}

fn reason_of(overrides: &[(&str, &str)]) -> Option<Reason> {
    run(&[reading(overrides)]).reasons.first().map(|r| r.1)
}

fn flags_of(batch: &RecordBatch) -> Vec<Option<String>> {
    batch
        .column_by_name("flags")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|f| f.map(str::to_owned))
        .collect()
}

#[test]
fn a_good_reading_passes_without_flags() {
    let r = run(&[reading(&[])]);
    assert!(r.reasons.is_empty());
    assert_eq!(flags_of(&r.readings), vec![None]);
}

#[test]
fn gsrn_rules() {
    assert_eq!(reason_of(&[("meter_id", "\"707057500022939815\"")]), None);
    assert_eq!(
        reason_of(&[("meter_id", "\"707057500022939816\"")]),
        Some(Reason::InvalidGsrn)
    );
    assert_eq!(
        reason_of(&[("meter_id", "\"707057500202939815\"")]),
        Some(Reason::InvalidGsrn)
    );
    assert_eq!(
        reason_of(&[("meter_id", "\"70705750002293981\"")]),
        Some(Reason::InvalidGsrn)
    );
    assert_eq!(
        reason_of(&[("meter_id", "\"meter-7\"")]),
        Some(Reason::InvalidGsrn)
    );
    // No meter id: the device is the key; nothing to check.
    assert_eq!(reason_of(&[("meter_id", "null")]), None);

    // The prefix rule is separate and per tenant.
    let danish_body = "57131234567890123";
    let danish = format!(
        "{danish_body}{}",
        crate::ids::gs1_check_digit(danish_body.as_bytes())
    );
    let norwegian_only = Rules {
        gsrn_prefixes: vec!["707057500".into()],
        ..Rules::default()
    };
    let texts = [
        reading(&[("meter_id", &format!("\"{danish}\""))]),
        reading(&[("meter_id", "\"707057500022939815\"")]),
    ];
    assert!(run(&texts).reasons.is_empty(), "any prefix by default");
    let r = run_with(&mut chain(norwegian_only), &texts);
    assert_eq!(r.reasons, vec![(0, Reason::GsrnPrefix)]);
}

#[test]
fn intervals_are_aligned_in_utc_terms() {
    let cases = [
        ("2026-10-25T00:00:00Z", "PT1H", None),
        ("2026-10-25T02:00:00+02:00", "PT1H", None),
        (
            "2026-10-25T00:30:00Z",
            "PT1H",
            Some(Reason::MisalignedInterval),
        ),
        (
            "2026-10-25T00:00:01Z",
            "PT1H",
            Some(Reason::MisalignedInterval),
        ),
        ("2026-10-25T00:45:00Z", "PT15M", None),
        (
            "2026-10-25T00:50:00Z",
            "PT15M",
            Some(Reason::MisalignedInterval),
        ),
        // +05:30: local half past is a whole UTC hour.
        ("2026-10-25T05:30:00+05:30", "PT1H", None),
        (
            "2026-10-25T05:00:00+05:30",
            "PT1H",
            Some(Reason::MisalignedInterval),
        ),
    ];
    for (start, res, want) in cases {
        let got = reason_of(&[
            ("start", &format!("\"{start}\"")),
            ("resolution", &format!("\"{res}\"")),
            ("value", "0.5"),
        ]);
        assert_eq!(got, want, "{start} {res}");
    }
}

#[test]
fn future_and_too_old() {
    let at = |t: DateTime<Utc>| format!("\"{}\"", t.to_rfc3339());
    let now = DateTime::from_timestamp_micros(NOW).unwrap();
    // The interval that ended just now is fine; a quarter that ends in 15 min is
    // within the default 15 min skew; an hour that ends in 1 h is not.
    assert_eq!(reason_of(&[("start", &at(now - Duration::hours(1)))]), None);
    assert_eq!(
        reason_of(&[
            ("start", &at(now)),
            ("resolution", "\"PT15M\""),
            ("value", "1")
        ]),
        None
    );
    assert_eq!(
        reason_of(&[
            ("start", &at(now + Duration::minutes(15))),
            ("resolution", "\"PT15M\""),
            ("value", "1")
        ]),
        Some(Reason::FutureInterval)
    );
    assert_eq!(
        reason_of(&[("start", &at(now))]),
        Some(Reason::FutureInterval)
    );
    assert_eq!(
        reason_of(&[("start", &at(now + Duration::days(400)))]),
        Some(Reason::FutureInterval)
    );
    assert_eq!(
        reason_of(&[("start", &at(now - Duration::days(1095)))]),
        None
    );
    assert_eq!(
        reason_of(&[("start", &at(now - Duration::days(1097)))]),
        Some(Reason::TooOld)
    );
    let strict = Rules {
        max_age_micros: 30 * 86_400 * 1_000_000,
        ..Rules::default()
    };
    let r = run_with(
        &mut chain(strict),
        &[reading(&[("start", &at(now - Duration::days(31)))])],
    );
    assert_eq!(r.reasons, vec![(0, Reason::TooOld)]);
}

#[test]
fn units_per_quantity_and_wh_conversion() {
    assert_eq!(
        reason_of(&[("quantity", "\"gas\""), ("unit", "\"m3\"")]),
        None
    );
    assert_eq!(
        reason_of(&[("quantity", "\"water\""), ("unit", "\"kWh\"")]),
        None
    );
    assert_eq!(
        reason_of(&[("quantity", "\"district_heating\""), ("unit", "\"m3\"")]),
        Some(Reason::UnitNotAllowed)
    );
    assert_eq!(
        reason_of(&[("unit", "\"m3\"")]),
        Some(Reason::UnitNotAllowed)
    );
    assert_eq!(
        reason_of(&[("unit", "\"Wh\""), ("value", "1500")]),
        Some(Reason::UnitNotAllowed)
    );
    let convert = Rules {
        convert_wh: true,
        ..Rules::default()
    };
    let r = run_with(
        &mut chain(convert),
        &[
            reading(&[("unit", "\"Wh\""), ("value", "1500")]),
            reading(&[
                ("unit", "\"Wh\""),
                ("value", "2.5"),
                ("start", "\"2026-10-25T01:00:00Z\""),
            ]),
            reading(&[
                ("unit", "\"Wh\""),
                ("value", "30000"),
                ("start", "\"2026-10-25T02:00:00Z\""),
            ]),
        ],
    );
    assert_eq!(
        r.reasons,
        vec![(2, Reason::ValueTooHigh)],
        "converted, then bounded"
    );
    let values = r
        .readings
        .column_by_name("value")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    assert_eq!(values.value(0), 1_500);
    assert_eq!(
        values.value(1),
        2,
        "2.5 Wh is 0.0025 kWh: half to even -> 0.002"
    );
    let units = r
        .readings
        .column_by_name("unit")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(units.value(0), "kWh");
    assert_eq!(flags_of(&r.readings)[0].as_deref(), Some("unit_converted"));
}

#[test]
fn value_bounds_scale_with_resolution() {
    assert_eq!(reason_of(&[("value", "25")]), None);
    assert_eq!(
        reason_of(&[("value", "25.001")]),
        Some(Reason::ValueTooHigh)
    );
    assert_eq!(reason_of(&[("value", "0")]), None);
    assert_eq!(
        reason_of(&[("value", "-0.001")]),
        Some(Reason::NegativeValue)
    );
    assert_eq!(
        reason_of(&[("value", "6.25"), ("resolution", "\"PT15M\"")]),
        None
    );
    assert_eq!(
        reason_of(&[("value", "6.251"), ("resolution", "\"PT15M\"")]),
        Some(Reason::ValueTooHigh)
    );
    assert_eq!(
        reason_of(&[
            ("quantity", "\"water\""),
            ("unit", "\"m3\""),
            ("value", "10.001")
        ]),
        Some(Reason::ValueTooHigh)
    );
    let big_fuse = Rules {
        max_kwh_per_hour: 100_000,
        ..Rules::default()
    };
    let r = run_with(&mut chain(big_fuse), &[reading(&[("value", "99")])]);
    assert!(r.reasons.is_empty());
}

#[test]
fn quality_codes_are_normalized() {
    let texts: Vec<String> = [
        ("127", "measured"),
        ("56", "estimated"),
        ("81", "final_estimate"),
        ("21", "temporary"),
        ("58", "withdrawn"),
        ("\"127\"", "measured"),
        ("\"calculated\"", "calculated"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (q, _))| {
        reading(&[
            ("quality", q),
            ("start", &format!("\"2026-10-25T{i:02}:00:00Z\"")),
        ])
    })
    .collect();
    let r = run(&texts);
    assert!(r.reasons.is_empty());
    let got: Vec<&str> = r
        .readings
        .column_by_name("quality")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(
        got,
        [
            "measured",
            "estimated",
            "final_estimate",
            "temporary",
            "withdrawn",
            "measured",
            "calculated"
        ]
    );
    assert_eq!(reason_of(&[("quality", "99")]), Some(Reason::InvalidValue));
    assert_eq!(reason_of(&[("quality", "1.5")]), Some(Reason::WrongType));
    assert_eq!(reason_of(&[("quality", "true")]), Some(Reason::WrongType));
}

fn day_of(values: &[f64], res: &str, meter: &str) -> Vec<String> {
    let step = if res == "PT15M" { 15 } else { 60 };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap() - Duration::hours(2)
                + Duration::minutes(step * i as i64);
            reading(&[
                ("start", &format!("\"{}\"", t.to_rfc3339())),
                ("resolution", &format!("\"{res}\"")),
                ("value", &v.to_string()),
                ("meter_id", &format!("\"{meter}\"")),
            ])
        })
        .collect()
}

#[test]
fn spikes_are_flagged_not_rejected() {
    let mut values = vec![1.0; 24];
    values[18] = 6.0; // > 5 x the third-highest (1.0)
    let r = run(&day_of(&values, "PT1H", "707057500000000018"));
    assert!(r.reasons.is_empty());
    let flags = flags_of(&r.readings);
    assert_eq!(flags[18].as_deref(), Some("spike"));
    assert_eq!(flags.iter().filter(|f| f.is_some()).count(), 1);

    let mut values = vec![1.0; 24];
    values[18] = 5.0; // exactly 5 x: not a spike
    values[7] = 4.0;
    let r = run(&day_of(&values, "PT1H", "707057500000000018"));
    assert!(flags_of(&r.readings).iter().all(Option::is_none));
}

#[test]
fn a_resolution_change_within_a_local_day_is_flagged() {
    let mut c = chain(Rules::default());
    let hourly = day_of(&[1.0; 4], "PT1H", "707057500022939815");
    let quarters = day_of(&[0.2; 4], "PT15M", "707057500022939815");
    let r1 = run_with(&mut c, &hourly);
    assert!(flags_of(&r1.readings).iter().all(Option::is_none));
    // Later, the same meter-day in PT15M (in another batch).
    let shifted: Vec<String> = quarters.iter().map(|q| q.replace("T22:", "T23:")).collect();
    let r2 = run_with(&mut c, &shifted);
    assert!(flags_of(&r2.readings)
        .iter()
        .all(|f| f.as_deref() == Some("resolution_mix")));
    // Another meter in PT15M on the same day is not mixed.
    let r3 = run_with(&mut c, &day_of(&[0.2; 4], "PT15M", "707057500000000018"));
    assert!(flags_of(&r3.readings).iter().all(Option::is_none));
}

/// Every interval of a local day, from its local midnight to the next.
fn local_day(tz: chrono_tz::Tz, date: NaiveDate, step_minutes: i64) -> Vec<DateTime<Utc>> {
    let midnight = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    };
    let (from, to) = (midnight(date), midnight(date.succ_opt().unwrap()));
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.push(t);
        t += Duration::minutes(step_minutes);
    }
    out
}

#[test]
fn dst_days_have_23_and_25_hours_of_accepted_readings() {
    for (date, hours) in [
        ((2025, 3, 30), 23),
        ((2025, 10, 26), 25),
        ((2026, 3, 29), 23),
        ((2026, 10, 25), 25),
        ((2025, 6, 1), 24),
    ] {
        let date = NaiveDate::from_ymd_opt(date.0, date.1, date.2).unwrap();
        for (res, step, per_hour) in [("PT1H", 60, 1), ("PT15M", 15, 4)] {
            let texts: Vec<String> = local_day(chrono_tz::Europe::Oslo, date, step)
                .iter()
                .map(|t| {
                    reading(&[
                        ("start", &format!("\"{}\"", t.to_rfc3339())),
                        ("resolution", &format!("\"{res}\"")),
                        ("value", "0.5"),
                    ])
                })
                .collect();
            assert_eq!(texts.len(), hours * per_hour, "{date} {res}");
            let r = run(&texts);
            assert!(r.reasons.is_empty(), "{date} {res}: {:?}", r.reasons);
            let dates = r
                .readings
                .column_by_name("local_date")
                .unwrap()
                .as_primitive::<Date32Type>();
            let want = (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
            assert!(dates.values().iter().all(|d| *d == want), "{date} {res}");
        }
    }
}

proptest! {
    /// Any aligned interval within the horizon passes; any start off the grid is
    /// rejected as misaligned, for both resolutions and any offset notation.
    #[test]
    fn alignment_property(hours_back in 1i64..20_000, minute in 0i64..60, quarter in proptest::bool::ANY, offset_quarters in -48i32..56) {
        let (res, step) = if quarter { ("PT15M", 15) } else { ("PT1H", 60) };
        let now = DateTime::from_timestamp_micros(NOW).unwrap();
        let start = now - Duration::hours(hours_back) + Duration::minutes(minute);
        let offset = chrono::FixedOffset::east_opt(offset_quarters * 15 * 60).unwrap();
        let text = start.with_timezone(&offset).to_rfc3339();
        let got = reason_of(&[("start", &format!("\"{text}\"")), ("resolution", &format!("\"{res}\"")), ("value", "0.1")]);
        let aligned = start.timestamp() % (step * 60) == 0;
        prop_assert_eq!(got, if aligned { None } else { Some(Reason::MisalignedInterval) }, "{}", text);
    }

    /// Values are accepted exactly up to the scaled maximum.
    #[test]
    fn value_bound_property(thousandths in 0i64..40_000, quarter in proptest::bool::ANY) {
        let (res, max) = if quarter { ("PT15M", 6_250) } else { ("PT1H", 25_000) };
        let value = format!("{}.{:03}", thousandths / 1000, thousandths % 1000);
        let got = reason_of(&[("value", &value), ("resolution", &format!("\"{res}\""))]);
        prop_assert_eq!(got, if thousandths > max { Some(Reason::ValueTooHigh) } else { None });
    }
}

#[test]
fn resolutions_are_per_quantity_and_direction() {
    let mut c = chain(Rules::default());
    let meter = "707057500022939815";
    let texts: Vec<String> = (0..4)
        .flat_map(|i| {
            let hour = format!("\"2026-06-01T0{i}:00:00Z\"");
            let quarter = format!("\"2026-06-01T0{i}:15:00Z\"");
            [
                reading(&[("start", &hour), ("meter_id", &format!("\"{meter}\""))]),
                reading(&[
                    ("start", &quarter),
                    ("resolution", "\"PT15M\""),
                    ("quantity", "\"water\""),
                    ("unit", "\"m3\""),
                    ("value", "0.1"),
                    ("meter_id", &format!("\"{meter}\"")),
                ]),
                reading(&[
                    ("start", &quarter),
                    ("resolution", "\"PT15M\""),
                    ("direction", "\"export\""),
                    ("value", "0.1"),
                    ("meter_id", &format!("\"{meter}\"")),
                ]),
            ]
        })
        .collect();
    let r = run_with(&mut c, &texts);
    assert!(r.reasons.is_empty(), "{:?}", r.reasons);
    assert!(flags_of(&r.readings).iter().all(Option::is_none));
}

/// Meter ids are message content: the resolution memory stays within its bound
/// however many meter-days arrive, and still flags a mix after being cleared.
#[test]
fn the_resolution_memory_stays_bounded_over_many_meter_days() {
    const MAX: usize = 1_000;
    let mut decoder =
        crate::decode::Decoder::new(DecodeConfig::default(), tenants(Rules::default()), None);
    let mut validate = Validate::new(tenants(Rules::default())).with_max_remembered_days(MAX);
    let ctx = OperatorContext { now_micros: NOW };
    let mut process = |texts: &[String]| {
        let records: Vec<RawRecord> = texts
            .iter()
            .map(|t| RawRecord {
                partition: 0,
                offset: 0,
                payload: Some(t.as_bytes()),
                replay_tag: None,
            })
            .collect();
        let decoded = decoder.decode(&records, &ctx);
        assert!(decoded.dead_letters.is_empty());
        let out = validate.process(decoded.batch, &ctx).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
        (out.accepted, validate.remembered_days())
    };
    for batch in 0..12 {
        // 400 new devices (without meter ids), each a meter-day of its own.
        let texts: Vec<String> = (0..400)
            .map(|i| {
                let device = format!("\"dev-{batch}-{i}-{}\"", "x".repeat(100));
                reading(&[("device_id", &device), ("meter_id", "null")])
            })
            .collect();
        let (_, remembered) = process(&texts);
        assert!(remembered <= MAX, "{remembered} after batch {batch}");
    }
    // A resolution change is still seen across batches after the clears.
    let device = ("device_id", "\"dev-mixed\"");
    process(&[reading(&[device, ("meter_id", "null")])]);
    let (accepted, _) = process(&[reading(&[
        device,
        ("meter_id", "null"),
        ("resolution", "\"PT15M\""),
        ("start", "\"2026-10-25T03:15:00Z\""),
    ])]);
    let bits = accepted
        .column(crate::schema::col::FLAGS)
        .as_primitive::<UInt32Type>();
    assert_eq!(bits.value(0), flags::RESOLUTION_MIX);
}
