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
    // The subject's meter from t0 + 24 h (an Elhub consent grant names it): its
    // readings carry no `subject`.
    let shared = meterline::dev::generator::gsrn(8102);
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
    let unnamed = |start: DateTime<Utc>, value: f64| {
        let v = json!({
            "schema": "reading/v1", "tenant": TENANT, "device_id": "dev-shared", "meter_id": shared,
            "quantity": "electricity", "start": start.to_rfc3339(), "resolution": "PT1H",
            "value": value, "unit": "kWh", "quality": "measured",
        });
        (shared.clone(), Some(v.to_string().into_bytes()))
    };
    messages.extend((0..48).map(|h| unnamed(t0 + chrono::Duration::hours(h), 0.25)));
    // Dead letters (negative values): one naming the subject, one of the shared
    // meter while it was the subject's, one from before.
    let mut named_bad = serde_json::from_slice::<Value>(
        reading(&meter, SUBJECT, (t0, 1000, None))
            .1
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    named_bad["value"] = json!(-1);
    messages.push((meter.clone(), Some(named_bad.to_string().into_bytes())));
    messages.push(unnamed(t0 + chrono::Duration::hours(30), -1.0));
    messages.push(unnamed(t0 + chrono::Duration::hours(2), -1.0));
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
    let mut event_messages = event_messages;
    event_messages.push((
        SUBJECT.to_owned(),
        Some(
            json!({"schema": "subject-event/v1", "kind": "elhub_consent_granted", "tenant": TENANT,
                "subject": SUBJECT, "meters": [shared], "occurred_at": (t0 + chrono::Duration::hours(24)).to_rfc3339(),
                "policy_version": "2026-11", "source": "app"})
            .to_string()
            .into_bytes(),
        ),
    ));
    h.produce_to(&topic, &event_messages, None).await;
    h.produce(&messages).await;
    let running = start(settings);
    let metrics = running.metrics.clone();
    let m = metrics.clone();
    let total = messages.len() as u64;
    wait_for("readings and events", Duration::from_secs(90), || {
        let c = m.conservation();
        let events = m.subject_events.with_label_values(&["recorded"]).get();
        async move { c.written + c.dead_lettered + c.dropped >= total && events == 4 }
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
    assert_eq!(history.len(), events.len() + 1);
    assert_eq!(history[3]["kind"], "elhub_consent_granted");
    let hashed = history[3]["meters"]
        .as_str()
        .expect("the meters as the ledger holds them");
    assert_eq!(hashed.len(), 32, "a keyed hash: {hashed}");
    let meters = doc["meters"].as_array().unwrap();
    assert_eq!(meters.len(), 1, "{meters:?}");
    assert_eq!(meters[0]["meter"], shared.as_str());
    assert_eq!(meters[0]["meter_hash"], hashed);
    assert_eq!(time(&meters[0]["from"]), t0 + chrono::Duration::hours(24));
    assert!(meters[0].get("to").is_none_or(Value::is_null));
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

    // Every produced version, with its value, and nothing of the neighbour; the
    // shared meter's readings from when it was the subject's.
    let readings = doc["readings"].as_array().unwrap();
    let (unnamed_rows, readings): (Vec<&Value>, Vec<&Value>) =
        readings.iter().partition(|r| r["meter"] == shared.as_str());
    assert_eq!(readings.len(), produced.len());
    assert_eq!(unnamed_rows.len(), 24);
    assert!(unnamed_rows.iter().all(|r| time(&r["interval_start"])
        >= t0 + chrono::Duration::hours(24)
        && r.get("subject").is_none_or(Value::is_null)));
    let letters = doc["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().all(|l| l["reason"] == "negative_value"));
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
    let all_daily = doc["consumption_daily"].as_array().unwrap();
    assert_eq!(
        all_daily.len(),
        3,
        "two days of the meter, one of the shared meter"
    );
    let daily: Vec<&Value> = all_daily
        .iter()
        .filter(|d| d["meter"] == meter.as_str())
        .collect();
    assert_eq!(daily.len(), 2);
    let first_day: i64 = current
        .iter()
        .filter(|(s, _)| **s < t0 + chrono::Duration::hours(24))
        .map(|(_, v)| v)
        .sum();
    let second_day: i64 = current.values().sum::<i64>() - first_day;
    assert_eq!(thousandths(&daily[0]["value"]), first_day);
    assert_eq!(thousandths(&daily[1]["value"]), second_day);
    assert_eq!(doc["consumption_hourly"].as_array().unwrap().len(), 48 + 24);
    assert_eq!(doc["consumption_monthly"].as_array().unwrap().len(), 2);
    assert!(!doc.to_string().contains(&other));

    // The manifest: every table the lake holds, with what was exported from it.
    let manifest = doc["manifest"].as_array().unwrap();
    let rows = |table: &str| {
        manifest
            .iter()
            .find(|m| m["table"] == table)
            .unwrap_or_else(|| panic!("{table} is not in the manifest"))["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("readings"), produced.len() as u64 + 24);
    assert_eq!(rows("dead_letters"), 2);
    assert_eq!(rows("consent_ledger"), 4);
    assert_eq!(rows("erasure_audit"), 0);
    assert_eq!(rows("area_consumption_daily"), 0);
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(h.lake.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.join("_delta_log").is_dir() {
            tables.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(tables.len() >= 8, "{tables:?}");
    for table in &tables {
        rows(table);
    }

    // CSV and Parquet: one file per section, the same rows.
    let dir = tempfile::tempdir().unwrap();
    export("csv", Some(&dir.path().join("csv")));
    let csv = std::fs::read_to_string(dir.path().join("csv/readings.csv")).unwrap();
    assert_eq!(csv.lines().count(), produced.len() + 24 + 1);
    assert!(dir.path().join("csv/manifest.json").is_file());
    export("parquet", Some(&dir.path().join("pq")));
    let file = std::fs::File::open(dir.path().join("pq/consent_history.parquet")).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, events.len() + 1);
}
