//! The privacy lifecycle end to end: erasure through a tombstone on the erasure
//! topic while the pipeline runs, retention with a fake clock, and `meterline
//! audit` / `meterline retention run` as a user runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use chrono::{NaiveDate, TimeZone, Utc};
use meterline::config::AggregateSettings;
use meterline::config::LifecycleSettings;
use meterline::dev::generator::gsrn;
use meterline::dev::testkit::clock;
use meterline::metrics::Metrics;
use meterline::privacy::lifecycle::Lifecycle;
use meterline::privacy::tables::subject_hash;
use meterline_operators::MasterKey;
use serde_json::json;

use crate::common::start;
use crate::common::{
    collect_files, contains, count, query, stored_views, wait_for, Harness, KEY_HEX,
};

const PRIVATE: &str = "acme-industri";
const PUBLIC: &str = "oslo-utility";
const OSLO: chrono_tz::Tz = chrono_tz::Europe::Oslo;
/// The subject to erase: distinctive bytes, a prefix of no other id.
const ERASED: &str = "acct-erase-7d3f1c";
const KEPT: [&str; 2] = ["acct-keep-a91", "acct-keep-b27"];

/// Hourly readings of one meter over `days` local days from 2026-10-24.
fn readings(
    tenant: &str,
    meter: &str,
    subject: Option<&str>,
    days: u32,
) -> Vec<(String, Option<Vec<u8>>)> {
    let start = OSLO
        .with_ymd_and_hms(2026, 10, 24, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    // 24 + 25 + 24 hours for the three days from 2026-10-24 (DST ends on the 25th).
    let hours = [24, 25, 24, 24][..days as usize].iter().sum::<i64>();
    (0..hours)
        .map(|h| {
            let mut v = json!({
                "schema": "reading/v1", "tenant": tenant, "device_id": format!("dev-{meter}"),
                "meter_id": meter, "quantity": "electricity",
                "start": (start + chrono::Duration::hours(h)).to_rfc3339(),
                "resolution": "PT1H", "value": 0.25 + (h % 7) as f64 / 10.0, "unit": "kWh",
                "quality": "measured", "area": "NO1",
            });
            if let Some(s) = subject {
                v["subject"] = json!(s);
            }
            (meter.to_owned(), Some(v.to_string().into_bytes()))
        })
        .collect()
}

/// A dead letter of a private subject (negative value): its payload keeps `subject`.
fn bad_reading(meter: &str, subject: &str) -> (String, Option<Vec<u8>>) {
    let v = json!({
        "schema": "reading/v1", "tenant": PRIVATE, "device_id": format!("dev-{meter}"),
        "meter_id": meter, "quantity": "electricity", "start": "2026-10-24T10:00:00Z",
        "resolution": "PT1H", "value": -1.0, "unit": "kWh", "quality": "measured",
        "subject": subject,
    });
    (meter.to_owned(), Some(v.to_string().into_bytes()))
}

/// Files under the lake that hold `needle` (in their bytes or, for Parquet, their
/// values), the lake's config files excepted.
fn files_holding(lake: &Path, needle: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = stored_views(lake)
        .into_iter()
        .filter(|(f, _)| f.extension().is_none_or(|e| e != "toml"))
        .filter(|(_, bytes)| contains(bytes, needle))
        .map(|(f, _)| f)
        .collect();
    files.dedup();
    files
}

/// (tenant, meter, local date) -> sum of value, from a query returning those columns.
async fn per_day(
    lake: &meterline_sinks::LakeConfig,
    sql: &str,
) -> BTreeMap<(String, String, i32), i128> {
    let mut out = BTreeMap::new();
    for b in query(lake, sql).await {
        for i in 0..b.num_rows() {
            out.insert(
                (
                    b.column(0).as_string::<i32>().value(i).to_owned(),
                    b.column(1).as_string::<i32>().value(i).to_owned(),
                    b.column(2).as_primitive::<Date32Type>().value(i),
                ),
                b.column(3).as_primitive::<Decimal128Type>().value(i),
            );
        }
    }
    out
}

fn aggregate_settings() -> AggregateSettings {
    AggregateSettings {
        enabled: true,
        interval: Duration::from_millis(500),
        ..AggregateSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_erases_the_subject_from_every_table_and_storage() {
    let h = Harness::new(2);
    let erasure_topic = format!("erasure-{}", rand::random::<u32>());
    h.create_topic(&erasure_topic, 1);
    let mut settings = h.settings("lifecycle");
    settings.aggregate = aggregate_settings();
    settings.lifecycle = LifecycleSettings {
        erasure_topic: erasure_topic.clone(),
        erasure_group: "lifecycle.erasure".to_owned(),
        erasure_deadline: Duration::from_secs(60),
        ..settings.lifecycle.clone()
    };
    let running = start(settings.clone());
    let metrics = running.metrics.clone();

    // The erased subject has two meters; others share the tenant, the days and
    // the area; a public tenant's meters too.
    let erased_meters = [gsrn(9101), gsrn(9102)];
    let mut messages = Vec::new();
    for m in &erased_meters {
        messages.extend(readings(PRIVATE, m, Some(ERASED), 3));
    }
    for (i, s) in KEPT.iter().enumerate() {
        messages.extend(readings(PRIVATE, &gsrn(9200 + i as u32), Some(s), 3));
    }
    for i in 0..3 {
        messages.extend(readings(PUBLIC, &gsrn(9300 + i), None, 2));
    }
    messages.push(bad_reading(&erased_meters[0], ERASED));
    messages.push(bad_reading(&gsrn(9200), KEPT[0]));
    h.produce(&messages).await;
    let lake = h.lake_config();
    let m = metrics.clone();
    let total = messages.len() as u64;
    wait_for("all records accounted for", Duration::from_secs(90), || {
        let c = m.conservation();
        async move { c.written + c.dead_lettered + c.dropped >= total }
    })
    .await;
    wait_for(
        "the erased subject's days are aggregated",
        Duration::from_secs(90),
        || {
            let lake = lake.clone();
            let meter = erased_meters[1].clone();
            async move {
                meterline::query::sql::query(
                    &lake,
                    &format!("SELECT count(*) FROM consumption_daily WHERE meter = '{meter}'"),
                )
                .await
                .is_ok_and(|b| b[0].column(0).as_primitive::<Int64Type>().value(0) == 3)
            }
        },
    )
    .await;
    let erased_rows = count(
        &lake,
        &format!("SELECT count(*) FROM readings WHERE subject = '{ERASED}'"),
    )
    .await;
    assert_eq!(erased_rows, 2 * 73);
    let kept_rows = count(&lake, "SELECT count(*) FROM readings").await - erased_rows;
    let held_before = files_holding(h.lake.path(), ERASED);
    assert!(
        held_before
            .iter()
            .any(|f| f.to_string_lossy().contains("/readings/")),
        "{held_before:?}"
    );
    assert!(held_before
        .iter()
        .any(|f| f.to_string_lossy().contains("/dead_letters/")));

    // The request: key = tenant/subject, no value.
    h.produce_to(
        &erasure_topic,
        &[(format!("{PRIVATE}/{ERASED}"), None)],
        None,
    )
    .await;
    wait_for("the erasure is recorded", Duration::from_secs(60), || {
        let lake = lake.clone();
        async move {
            meterline::query::sql::query(&lake, "SELECT count(*) FROM erasure_audit")
                .await
                .is_ok_and(|b| b[0].column(0).as_primitive::<Int64Type>().value(0) == 1)
        }
    })
    .await;

    // SQL finds nothing of theirs, anywhere; everyone else's data is intact.
    for sql in [
        format!("SELECT count(*) FROM readings WHERE subject = '{ERASED}'"),
        format!("SELECT count(*) FROM readings_current WHERE subject = '{ERASED}'"),
        format!("SELECT count(*) FROM dead_letters WHERE payload LIKE '%{ERASED}%'"),
        format!(
            "SELECT count(*) FROM consumption_daily WHERE meter IN ('{}', '{}')",
            erased_meters[0], erased_meters[1]
        ),
        format!(
            "SELECT count(*) FROM consumption_hourly WHERE meter IN ('{}', '{}')",
            erased_meters[0], erased_meters[1]
        ),
        format!(
            "SELECT count(*) FROM consumption_monthly WHERE meter IN ('{}', '{}')",
            erased_meters[0], erased_meters[1]
        ),
    ] {
        assert_eq!(count(&lake, &sql).await, 0, "{sql}");
    }
    assert_eq!(
        count(&lake, "SELECT count(*) FROM readings").await,
        kept_rows
    );
    assert_eq!(count(&lake, "SELECT count(*) FROM dead_letters").await, 1);

    // Aggregates equal an oracle over what is left (recomputed, not just deleted).
    let oracle = per_day(
        &lake,
        "SELECT tenant, meter, local_date, sum(value) FROM readings_current \
         GROUP BY tenant, meter, local_date",
    )
    .await;
    let daily = per_day(
        &lake,
        "SELECT tenant, meter, local_date, value FROM consumption_daily",
    )
    .await;
    assert_eq!(daily, oracle);
    assert_eq!(daily.len(), 2 * 3 + 3 * 2);

    // The files that held them are gone from storage, and no byte of the lake
    // (Parquet and Delta log) holds the subject or the meters' ids.
    for f in &held_before {
        assert!(!f.exists(), "{} still exists", f.display());
    }
    for needle in [ERASED, erased_meters[0].as_str(), erased_meters[1].as_str()] {
        assert_eq!(files_holding(h.lake.path(), needle), Vec::<PathBuf>::new());
    }

    // The audit row: what, when, how much; the subject only as a keyed hash.
    let audit = query(
        &lake,
        "SELECT kind, subject_hash, tables, rows_removed, files_vacuumed, \
         requested_at, completed_at, deadline_at FROM erasure_audit",
    )
    .await;
    let b = &audit[0];
    assert_eq!(b.column(0).as_string::<i32>().value(0), "erasure");
    let key = MasterKey::from_hex(KEY_HEX).unwrap();
    assert_eq!(
        b.column(1).as_string::<i32>().value(0),
        subject_hash(&key, ERASED)
    );
    let tables = b.column(2).as_string::<i32>().value(0).to_owned();
    for t in [
        "readings",
        "dead_letters",
        "consumption_daily",
        "area_consumption_daily",
    ] {
        assert!(tables.split(',').any(|x| x == t), "{tables}");
    }
    assert_eq!(b.column(3).as_primitive::<Int64Type>().value(0), 2 * 73 + 1);
    assert!(b.column(4).as_primitive::<Int64Type>().value(0) as usize >= held_before.len());
    let ts = |i: usize| {
        b.column(i)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0)
    };
    assert!(
        ts(5) <= ts(6) && ts(6) <= ts(7),
        "completed within the deadline: requested {}, completed {}, deadline {}",
        ts(5),
        ts(6),
        ts(7)
    );
    assert_eq!(metrics.erasures.with_label_values(&["completed"]).get(), 1);

    // Not a tombstone, or a tombstone that names no tenant (the format before
    // tenants were required): ignored, counted, and answered (never pending).
    h.produce_to(
        &erasure_topic,
        &[
            (format!("{PRIVATE}/{}", KEPT[0]), Some(b"{}".to_vec())),
            (KEPT[0].to_owned(), None),
        ],
        None,
    )
    .await;
    let m = metrics.clone();
    wait_for(
        "the requests without a tenant or with a value are ignored",
        Duration::from_secs(30),
        || {
            let n = m.erasures.with_label_values(&["ignored"]).get();
            async move { n == 2 }
        },
    )
    .await;
    running.stop().await;
    assert_eq!(
        count(
            &lake,
            &format!(
                "SELECT count(*) FROM readings WHERE subject = '{}'",
                KEPT[0]
            )
        )
        .await,
        73
    );
    let report = meterline::query::audit::report(&settings, None, clock().now())
        .await
        .unwrap();
    assert!(report.clean(), "{:?}", report.violations);
    assert_eq!(report.erasures_completed, 1);
    assert_eq!(report.pending.map(|p| p.requests), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_with_a_fake_clock_removes_what_is_past_and_records_it() {
    let h = Harness::new(1);
    let mut messages = readings(PRIVATE, &gsrn(9400), Some(KEPT[0]), 3);
    messages.extend(readings(PUBLIC, &gsrn(9401), None, 3));
    messages.push(bad_reading(&gsrn(9400), KEPT[0]));
    let total = messages.len() as u64;
    h.produce(&messages).await;
    crate::common::run_until_accounted(h.settings("retention"), total).await;
    let lake_config = h.lake_config();
    let lake = meterline_sinks::Lake::new(&lake_config).unwrap();
    // The fake "now" of the sweep: past the dead letters' 14 days, and with a
    // telemetry retention that makes 2026-10-26 the oldest local date kept.
    let fake = clock().now() + chrono::Duration::days(15);
    let kept_date = NaiveDate::from_ymd_opt(2026, 10, 26).unwrap();
    let days =
        u32::try_from((fake.with_timezone(&OSLO).date_naive() - kept_date).num_days()).unwrap();
    let mut settings = h.settings("retention");
    settings.aggregate = aggregate_settings();
    settings.lifecycle = LifecycleSettings {
        dead_letter_days: 14,
        telemetry_days: [(PRIVATE.to_owned(), days), (PUBLIC.to_owned(), days)]
            .into_iter()
            .collect(),
        ..settings.lifecycle.clone()
    };
    let mut lifecycle = Lifecycle::open(
        &lake,
        settings.tenants.clone(),
        settings.key.clone(),
        settings.lifecycle.clone(),
        settings.aggregate.clone(),
        Metrics::new(),
    )
    .await
    .unwrap();

    // Within every period (the pipeline just ran): nothing is removed.
    let early = clock().now();
    assert!(lifecycle.sweep(early).await.unwrap().is_empty());
    let report = meterline::query::audit::report(&settings, None, early)
        .await
        .unwrap();
    assert!(report.clean(), "{:?}", report.violations);

    let before = meterline::query::audit::report(&settings, None, fake)
        .await
        .unwrap();
    assert!(!before.clean(), "data past its retention is a violation");
    let expected_removed = count(
        &lake_config,
        &format!("SELECT count(*) FROM readings WHERE local_date < DATE '{kept_date}'"),
    )
    .await;
    let entries = lifecycle.sweep(fake).await.unwrap();
    let telemetry: u64 = entries
        .iter()
        .filter(|e| e.category == "telemetry")
        .map(|e| e.rows_removed)
        .sum();
    assert_eq!(telemetry, expected_removed);
    assert!(entries
        .iter()
        .any(|e| e.category == "dead_letters" && e.rows_removed == 1));
    assert_eq!(
        count(
            &lake_config,
            &format!("SELECT count(*) FROM readings WHERE local_date < DATE '{kept_date}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(&lake_config, "SELECT count(*) FROM dead_letters").await,
        0
    );
    // The aggregates follow: no day before the cutoff, and the month is the sum
    // of the days left.
    assert_eq!(
        count(
            &lake_config,
            &format!(
                "SELECT count(*) FROM consumption_daily WHERE local_date < DATE '{kept_date}'"
            )
        )
        .await,
        0
    );
    let left = per_day(
        &lake_config,
        "SELECT tenant, meter, local_date, sum(value) FROM readings_current GROUP BY tenant, meter, local_date",
    )
    .await;
    let daily = per_day(
        &lake_config,
        "SELECT tenant, meter, local_date, value FROM consumption_daily",
    )
    .await;
    assert_eq!(daily, left);
    // The removed partitions' files are gone from storage.
    for d in [24, 25] {
        let dir = h
            .lake
            .path()
            .join(format!("readings/tenant={PRIVATE}/local_date=2026-10-{d}"));
        let mut files = Vec::new();
        if dir.exists() {
            collect_files(&dir, &mut files);
        }
        assert!(files.is_empty(), "{files:?}");
    }
    // Recorded, and the audit is clean again at the same fake time.
    let recorded = count(
        &lake_config,
        "SELECT count(*) FROM erasure_audit WHERE kind = 'retention'",
    )
    .await;
    // (The sweep's other entries are key destructions: the dead letters' day key.)
    let retention = entries.iter().filter(|e| e.kind == "retention").count();
    assert_eq!(recorded, retention as u64);
    let after = meterline::query::audit::report(&settings, None, fake)
        .await
        .unwrap();
    assert!(after.clean(), "{:?}", after.violations);
    let private = after
        .holdings
        .iter()
        .find(|h| h.tenant == PRIVATE && h.table == "readings")
        .expect("private readings reported");
    assert_eq!(
        private.oldest.as_deref(),
        Some(kept_date.to_string().as_str())
    );
    assert_eq!(private.deployment, "private");
}

/// `meterline audit` and `meterline retention run`, as a user runs them: a lake
/// whose data is past a short retention is a violation (exit 3); after a sweep it
/// is clean (exit 0). An erasure requested long before it could be done is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exits_non_zero_while_a_promise_is_broken() {
    let h = Harness::new(1);
    let erasure_topic = format!("erasure-{}", rand::random::<u32>());
    h.create_topic(&erasure_topic, 1);
    let messages = readings(PRIVATE, &gsrn(9500), Some(KEPT[1]), 2);
    let total = messages.len() as u64;
    h.produce(&messages).await;
    crate::common::run_until_accounted(h.settings("audit"), total).await;

    // The same lake under a short retention (its readings are from October 2026).
    let short = h.lake.path().join("short.toml");
    std::fs::write(
        &short,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "audit"
readings_topic = "{topic}"

[lake]
uri = "{lake}"

[privacy]
erasure_topic = "{erasure_topic}"
erasure_deadline_secs = 60

[[tenants]]
id = "oslo-utility"
deployment = "public"
telemetry_retention_days = 2
validation = {{ max_age_days = 1 }}

[[tenants]]
id = "acme-industri"
deployment = "private"
telemetry_retention_days = 2
validation = {{ max_age_days = 1 }}
"#,
            brokers = h.brokers,
            topic = h.topic,
            lake = h.lake.path().display(),
        ),
    )
    .unwrap();
    let audit = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meterline"))
            .args(["audit", "--config"])
            .arg(&short)
            .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
            .envs(meterline::dev::testkit::clock_env())
            .output()
            .unwrap()
    };
    let out = audit();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("VIOLATION: tenant acme-industri: readings holds local date 2026-10-24"),
        "{stdout}"
    );
    assert!(stdout.contains("private"), "{stdout}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(["retention", "run", "--config"])
        .arg(&short)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .envs(meterline::dev::testkit::clock_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("telemetry acme-industri: 49 rows removed")
    );
    let out = audit();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("OK: no retention or erasure deadline is broken"),
        "{stdout}"
    );

    // An erasure request waiting past its deadline (requested two hours ago, no
    // pipeline running) is a violation; once done (late), the audit says so too.
    // A Kafka create time is a wall time (the clock moves it like every other).
    let two_hours_ago = (Utc::now() - chrono::Duration::hours(2)).timestamp_millis();
    h.produce_to(
        &erasure_topic,
        &[(format!("{PRIVATE}/{}", KEPT[1]), None)],
        Some(two_hours_ago),
    )
    .await;
    let out = audit();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("erasure requests pending: 1"), "{stdout}");
    assert!(
        stdout.contains("still pending after its deadline"),
        "{stdout}"
    );

    let mut settings = h.settings("audit");
    settings.lifecycle = LifecycleSettings {
        erasure_topic: erasure_topic.clone(),
        erasure_group: "audit.erasure".to_owned(),
        erasure_deadline: Duration::from_secs(60),
        ..settings.lifecycle.clone()
    };
    let running = start(settings);
    let metrics = running.metrics.clone();
    let m = metrics.clone();
    wait_for("the late erasure is done", Duration::from_secs(60), || {
        let n = m.erasures.with_label_values(&["late"]).get();
        async move { n == 1 }
    })
    .await;
    running.stop().await;
    let out = audit();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("1 erasure(s) completed after their deadline"),
        "{stdout}"
    );
    assert!(stdout.contains("erasure requests pending: 0"), "{stdout}");
}
