//! Versions and corrections: duplicates, newer and older versions and conflicts in
//! random order, across many batches and two restarts, leave exactly the expected
//! `readings_current` (the highest version per key, first arrival among equal
//! versions), `readings` holds each accepted version once, conflicts are dead
//! letters, and duplicates and superseded versions are counted drops.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::common::{query, run_until_accounted, Harness};

/// (meter, interval start micros) -> (version micros, value thousandths)
type Current = BTreeMap<(String, i64), (Option<i64>, i128)>;

#[derive(Default, Debug, PartialEq)]
struct Outcome {
    accepted: u64,
    duplicates: u64,
    superseded: u64,
    conflicts: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_in_random_order_across_batches_and_restarts() {
    let h = Harness::new(3);
    let mut rng = StdRng::seed_from_u64(4);
    let base: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 28, 0, 0, 0).unwrap();
    let version = |v: i64| base + Duration::days(1) + Duration::hours(v);

    // Events per key; some keys never carry a version (a missing version is older
    // than any).
    let mut events: Vec<(String, i64, Option<i64>, i128)> = Vec::new();
    for m in 0..10u32 {
        let meter = meterline::dev::generator::gsrn(500 + m);
        for hour in 0..6 {
            let start = base + Duration::hours(hour);
            let versioned = !(m + hour as u32).is_multiple_of(5);
            for _ in 0..rng.random_range(1..7) {
                let v = versioned.then(|| rng.random_range(1..4));
                // Few distinct values, so equal versions often carry equal values.
                let value = i128::from(rng.random_range(0..3u32)) * 250 + 1_000;
                events.push((meter.clone(), start.timestamp_micros(), v, value));
            }
        }
    }
    events.shuffle(&mut rng);

    // The model, in production order (one partition per meter keeps it).
    let mut model: Current = BTreeMap::new();
    let mut want = Outcome::default();
    for (meter, start, v, value) in &events {
        let v = v.map(|v| version(v).timestamp_micros());
        match model.get(&(meter.clone(), *start)) {
            None => {
                want.accepted += 1;
                model.insert((meter.clone(), *start), (v, *value));
            }
            Some((cv, _)) if v > *cv => {
                want.accepted += 1;
                model.insert((meter.clone(), *start), (v, *value));
            }
            Some((cv, cx)) if v == *cv && value == cx => want.duplicates += 1,
            Some((cv, _)) if v == *cv => want.conflicts += 1,
            Some(_) => want.superseded += 1,
        }
    }
    assert!(
        want.duplicates > 0 && want.superseded > 0 && want.conflicts > 0,
        "{want:?}"
    );

    let messages: Vec<(String, Option<Vec<u8>>)> = events
        .iter()
        .map(|(meter, start, v, value)| {
            let mut j = json!({
                "schema": "reading/v1", "tenant": "acme-industri", "device_id": format!("dev-{meter}"),
                "meter_id": meter, "quantity": "electricity",
                "start": DateTime::from_timestamp_micros(*start).unwrap().to_rfc3339(),
                "resolution": "PT1H", "value": format!("{}.{:03}", value / 1000, value % 1000).parse::<f64>().unwrap(),
                "unit": "kWh", "quality": "measured"
            });
            if let Some(v) = v {
                j["version"] = json!(version(*v).to_rfc3339());
            }
            (meter.clone(), Some(j.to_string().into_bytes()))
        })
        .collect();

    // Three phases, each run ends with a graceful stop; small batches.
    let mut got = Outcome::default();
    let thirds = messages.len().div_ceil(3);
    for (phase, part) in messages.chunks(thirds).enumerate() {
        h.produce(part).await;
        let mut settings = h.settings("corrections");
        settings.pipeline.chunk_max_records = 7;
        settings.pipeline.max_batch_rows = 25;
        let metrics = run_until_accounted(settings, part.len() as u64).await;
        let c = metrics.conservation();
        assert!(c.holds(), "phase {phase}: {c:?}");
        assert_eq!(c.consumed, part.len() as u64, "phase {phase}");
        let text = metrics.render();
        let value = |line: &str| {
            text.lines()
                .find(|l| l.starts_with(line))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        got.duplicates += value("meterline_records_dropped_total{reason=\"duplicate\"}");
        got.superseded += value("meterline_records_dropped_total{reason=\"superseded\"}");
        got.conflicts += value("meterline_dead_letters_total{reason=\"version_conflict\"}");
        got.accepted += value("meterline_records_written_total{table=\"readings\"}");
    }
    assert_eq!(got, want);

    let lake = h.lake_config();
    assert_eq!(
        h.count("SELECT count(*) FROM readings").await,
        want.accepted
    );
    assert_eq!(
        h.count("SELECT count(*) FROM dead_letters WHERE reason = 'version_conflict'")
            .await,
        want.conflicts
    );
    let rows = query(
        &lake,
        "SELECT meter, interval_start, version, value FROM readings_current",
    )
    .await;
    let mut current: Current = BTreeMap::new();
    for b in &rows {
        let meter = b.column(0).as_string::<i32>();
        let start = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let version = b.column(2).as_primitive::<TimestampMicrosecondType>();
        let value = b.column(3).as_primitive::<Decimal128Type>();
        for i in 0..b.num_rows() {
            let key = (meter.value(i).to_owned(), start.value(i));
            let v = version.is_valid(i).then(|| version.value(i));
            assert!(
                current.insert(key, (v, value.value(i))).is_none(),
                "one row per key"
            );
        }
    }
    assert_eq!(current, model);
}
