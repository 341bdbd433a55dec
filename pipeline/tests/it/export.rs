//! `meterline subject export` as a user runs it, checked field by field against
//! what was produced: profile, consent history, access log, every reading version,
//! and the daily consumption of the subject's meter.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use meterline::config::LifecycleSettings;
use meterline::privacy::geo::CidrTable;
use serde_json::{json, Value};

use crate::common::start;
use crate::common::{wait_for, Harness, KEY_HEX};

const SUBJECT: &str = "acct-export-31";
const TENANT: &str = "acme-industri";

fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().expect("a time string");
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A decimal as thousandths, from a JSON number or string.
fn thousandths(v: &Value) -> i64 {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = format!("{frac:0<3}");
    int.parse::<i64>().unwrap() * 1000 + frac[..3].parse::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_holds_exactly_what_was_stored_about_the_subject() {
    let h = Harness::new(1);
    let topic = format!("subjects-{}", rand::random::<u32>());
    h.create_topic(&topic, 1);
    let geo = h.lake.path().join("geo.csv");
    std::fs::write(&geo, "203.0.113.0/24,Trondheim,NO\n").unwrap();
    let mut settings = h.settings("export");
    settings.aggregate.enabled = true;
    settings.aggregate.interval = Duration::from_millis(300);
    settings.lifecycle = LifecycleSettings {
        subject_events_topic: topic.clone(),
        subject_group: "export.subjects".to_owned(),
        geo: Arc::new(CidrTable::load(&geo).unwrap()),
        ..settings.lifecycle.clone()
    };
    let meter = meterline::dev::generator::gsrn(8100);
    let other = meterline::dev::generator::gsrn(8101);
    let t0 = Utc.with_ymd_and_hms(2026, 10, 23, 22, 0, 0).unwrap();
    // Two local days of the subject's meter, a correction of hour 5, and a
    // neighbour's meter that must not appear.
    let mut produced: Vec<(DateTime<Utc>, i64, Option<&str>)> = (0..48)
        .map(|h| {
            (
                t0 + chrono::Duration::hours(h),
                1000 + h * 10,
                Some("2026-10-26T06:00:00Z"),
            )
        })
        .collect();
    produced.push((
        t0 + chrono::Duration::hours(5),
        9999,
        Some("2026-10-27T06:00:00Z"),
    ));
    let reading = |m: &str,
                   subject: &str,
                   (start, value, version): (DateTime<Utc>, i64, Option<&str>)| {
        let v = json!({
            "schema": "reading/v1", "tenant": TENANT, "device_id": format!("dev-{m}"), "meter_id": m,
            "quantity": "electricity", "start": start.to_rfc3339(), "resolution": "PT1H",
            "value": value as f64 / 1000.0, "unit": "kWh", "quality": "measured",
            "version": version, "subject": subject,
        });
        (m.to_owned(), Some(v.to_string().into_bytes()))
    };
    let mut messages: Vec<_> = produced
        .iter()
        .map(|p| reading(&meter, SUBJECT, *p))
        .collect();
    messages.extend((0..24).map(|h| {
        reading(
            &other,
            "acct-neighbour",
            (t0 + chrono::Duration::hours(h), 500, None),
        )
    }));
    let events = [
        (
            "consent_granted",
            "name",
            "2026-11-01T08:00:00Z",
            json!({"email": "e@example.no", "name": "Eksport Person", "ip": "203.0.113.9"}),
        ),
        (
            "consent_granted",
            "marketing",
            "2026-11-02T08:00:00Z",
            json!({}),
        ),
        (
            "consent_withdrawn",
            "marketing",
            "2026-11-03T08:00:00Z",
            json!({}),
        ),
    ];
    let event_messages: Vec<_> = events
        .iter()
        .map(|(kind, purpose, at, extra)| {
            let mut v = json!({"schema": "subject-event/v1", "kind": kind, "tenant": TENANT,
                "subject": SUBJECT, "purpose": purpose, "occurred_at": at, "policy_version": "2026-11", "source": "app"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            (SUBJECT.to_owned(), Some(v.to_string().into_bytes()))
        })
        .collect();
    h.produce_to(&topic, &event_messages, None).await;
    h.produce(&messages).await;
    let running = start(settings);
    let metrics = running.metrics.clone();
    let m = metrics.clone();
    let total = messages.len() as u64;
    wait_for("readings and events", Duration::from_secs(90), || {
        let c = m.conservation();
        let events = m.subject_events.with_label_values(&["recorded"]).get();
        async move { c.written + c.dead_lettered + c.dropped >= total && events == 3 }
    })
    .await;
    let lake = h.lake_config();
    wait_for("daily aggregates", Duration::from_secs(60), || {
        let lake = lake.clone();
        let meter = meter.clone();
        async move {
            meterline::query::sql::query(
                &lake,
                &format!("SELECT count(*) FROM consumption_daily WHERE meter = '{meter}'"),
            )
            .await
            .is_ok_and(|b| {
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b[0].column(0))
                    .value(0)
                    == 2
            })
        }
    })
    .await;
    running.stop().await;

    let config = h.config_file("export-cli");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[privacy]\nsubject_events_topic = \"{topic}\"\ngeoip_file = \"{}\"\n",
        geo.display()
    ));
    std::fs::write(&config, text).unwrap();
    let export = |format: &str, out: Option<&std::path::Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_meterline"));
        c.args(["subject", "export", "--config"])
            .arg(&config)
            .args(["--tenant", TENANT, "--subject", SUBJECT, "--format", format])
            .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
            .envs(meterline::dev::testkit::clock_env());
        if let Some(o) = out {
            c.arg("--out").arg(o);
        }
        let output = c.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let doc: Value = serde_json::from_slice(&export("json", None).stdout).unwrap();
    assert_eq!(doc["format"], "meterline-subject-export/v1");
    assert_eq!(doc["subject"], SUBJECT);

    let profile = doc["profile"].as_array().unwrap();
    assert_eq!(profile.len(), 1);
    assert_eq!(profile[0]["email"], "e@example.no");
    assert_eq!(profile[0]["name"], "Eksport Person");
    assert_eq!(profile[0]["city"], "Trondheim");
    assert_eq!(profile[0]["country"], "NO");
    assert_eq!(profile[0]["consents"], "name");
    assert!(profile[0].get("phone").is_none_or(Value::is_null));

    let history = doc["consent_history"].as_array().unwrap();
    assert_eq!(history.len(), events.len());
    for (i, (e, (kind, purpose, at, _))) in history.iter().zip(&events).enumerate() {
        assert_eq!(e["seq"], i);
        assert_eq!(e["kind"], *kind);
        assert_eq!(e["purpose"], *purpose);
        assert_eq!(e["policy_version"], "2026-11");
        assert_eq!(e["source"], "app");
        assert_eq!(
            time(&e["occurred_at"]),
            DateTime::parse_from_rfc3339(at).unwrap()
        );
    }
    let access = doc["access_log"].as_array().unwrap();
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["ip"], "203.0.113.9");
    assert_eq!(access[0]["city"], "Trondheim");

    // Every produced version, with its value, and nothing of the neighbour.
    let readings = doc["readings"].as_array().unwrap();
    assert_eq!(readings.len(), produced.len());
    let mut got: Vec<(DateTime<Utc>, i64)> = readings
        .iter()
        .map(|r| {
            assert_eq!(r["meter"], meter.as_str());
            assert_eq!(r["subject"], SUBJECT);
            (time(&r["interval_start"]), thousandths(&r["value"]))
        })
        .collect();
    got.sort();
    let mut want: Vec<(DateTime<Utc>, i64)> = produced.iter().map(|(s, v, _)| (*s, *v)).collect();
    want.sort();
    assert_eq!(got, want);

    // Daily consumption: the current version of each hour, per local day.
    let mut current: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    for (s, v, _) in &produced {
        current.insert(*s, *v); // the correction comes last
    }
    let daily = doc["consumption_daily"].as_array().unwrap();
    assert_eq!(daily.len(), 2);
    let first_day: i64 = current
        .iter()
        .filter(|(s, _)| **s < t0 + chrono::Duration::hours(24))
        .map(|(_, v)| v)
        .sum();
    let second_day: i64 = current.values().sum::<i64>() - first_day;
    assert_eq!(thousandths(&daily[0]["value"]), first_day);
    assert_eq!(thousandths(&daily[1]["value"]), second_day);
    assert_eq!(doc["consumption_hourly"].as_array().unwrap().len(), 48);
    assert_eq!(doc["consumption_monthly"].as_array().unwrap().len(), 1);
    assert!(!doc.to_string().contains(&other));

    // CSV and Parquet: one file per section, the same rows.
    let dir = tempfile::tempdir().unwrap();
    export("csv", Some(&dir.path().join("csv")));
    let csv = std::fs::read_to_string(dir.path().join("csv/readings.csv")).unwrap();
    assert_eq!(csv.lines().count(), produced.len() + 1);
    export("parquet", Some(&dir.path().join("pq")));
    let file = std::fs::File::open(dir.path().join("pq/consent_history.parquet")).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, events.len());
}
