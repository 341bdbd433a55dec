//! The privacy lifecycle on real infrastructure (tansu + S3): pseudonym epoch keys
//! created in the bucket with conditional PUTs, subject events recorded (ledger,
//! profile, access log), then an erasure through a tombstone; nothing of the
//! subject is left and every produced reading is accounted for.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use meterline::dev::generator::Message;
use meterline::dev::testkit::unique_name;
use meterline::privacy::keys::KeyStore;
use meterline_operators::MasterKey;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::rig::{assert_ledger, eventually_async, serial, Rig, KEY_HEX};
use crate::GRACE;

const SUBJECT: &str = "acct-s3-lifecycle-1";

async fn single(rig: &Rig, sql: &str) -> i64 {
    match rig.query(sql).await {
        Ok(b) => b[0].column(0).as_primitive::<Int64Type>().value(0),
        Err(_) => -1,
    }
}

async fn send(rig: &Rig, topic: &str, key: &str, payload: Option<String>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .create()
        .unwrap();
    let mut record = FutureRecord::<str, String>::to(topic).key(key);
    if let Some(p) = &payload {
        record = record.payload(p);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_consent_and_erasure_work_against_s3_and_a_real_broker() {
    let _serial = serial().await;
    let mut rig = Rig::new(1);
    let subjects_topic = unique_name("subjects");
    let erasure_topic = unique_name("erasure");
    rig.broker.create_topic(&subjects_topic, 1);
    rig.broker.create_topic(&erasure_topic, 1);
    // Yesterday's readings (Oslo time, so 23, 24 or 25 hours): a public tenant
    // with monthly key epochs, and the subject's private meter. The hours of
    // Oslo's yesterday lie in one month, so one key epoch and one pseudonym per
    // meter; yesterday's UTC hours would not, late on the 1st of a month.
    let clock = meterline::dev::testkit::clock();
    let oslo = chrono_tz::Europe::Oslo;
    let today = clock.now().with_timezone(&oslo).date_naive();
    let day = today - chrono::Days::new(1);
    let midnight = |d| meterline::dev::generator::local_midnight(oslo, d);
    let hours: Vec<_> = std::iter::successors(Some(midnight(day)), |t| {
        Some(*t + chrono::Duration::hours(1))
    })
    .take_while(|t| *t < midnight(today))
    .collect();
    let mut messages = Vec::new();
    for m in 0..6u32 {
        let (tenant, subject) = if m == 0 {
            ("acme-industri", Some(SUBJECT))
        } else {
            ("oslo-utility", None)
        };
        let meter = meterline::dev::generator::gsrn(70_000 + m);
        for start in &hours {
            let mut v = json!({
                "schema": "reading/v1", "tenant": tenant, "device_id": format!("dev-{m}"),
                "meter_id": meter, "quantity": "electricity",
                "start": start.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "resolution": "PT1H",
                "value": 1.25, "unit": "kWh", "quality": "measured", "area": "NO1",
            });
            if let Some(s) = subject {
                v["subject"] = json!(s);
            }
            messages.push(Message {
                key: meter.clone(),
                payload: v.to_string().into_bytes(),
                bad_reason: None,
            });
        }
    }
    rig.produce(&messages).await;
    let event = json!({
        "schema": "subject-event/v1", "kind": "consent_granted", "tenant": "acme-industri",
        "subject": SUBJECT, "purpose": "name", "occurred_at": format!("{day}T12:00:00Z"),
        "email": "s3@example.no", "name": "S3 Person", "ip": "192.0.2.44", "source": "app",
    });
    send(&rig, &subjects_topic, SUBJECT, Some(event.to_string())).await;

    let base = rig.config("lifecycle", None, "max_batch_rows = 1000");
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("key_rotation = \"never\"\n", "")
        + &format!(
            "\n[privacy]\nsubject_events_topic = \"{subjects_topic}\"\nerasure_topic = \"{erasure_topic}\"\nerasure_deadline_secs = 300\n"
        );
    std::fs::write(&base, text).unwrap();
    let mut run = rig.spawn("run", &base);
    rig.await_rows(rig.produced.good, Duration::from_secs(180))
        .await;
    eventually_async("the profile", Duration::from_secs(120), || async {
        single(&rig, "SELECT count(*) FROM subjects").await == 1
    })
    .await;
    assert_eq!(single(&rig, "SELECT count(*) FROM access_log").await, 1);
    assert_eq!(single(&rig, "SELECT count(*) FROM consent_ledger").await, 1);
    // The public tenant's epoch keys are in the bucket: every month that ended
    // less than 60 days (the grace period) ago, up to next month.
    let lake = meterline_sinks::Lake::new(&rig.lake()).unwrap();
    let store = KeyStore::open(&lake, MasterKey::from_hex(KEY_HEX).unwrap().into())
        .await
        .unwrap();
    let epochs = store.list().await.unwrap();
    let public = epochs.get("oslo-utility").cloned().unwrap_or_default();
    assert_eq!(
        public,
        meterline::dev::testkit::expected_open_months(today, 60),
        "{epochs:?}"
    );
    assert_eq!(
        single(
            &rig,
            "SELECT count(DISTINCT meter) FROM readings WHERE tenant = 'oslo-utility'"
        )
        .await,
        5
    );

    send(
        &rig,
        &erasure_topic,
        &format!("acme-industri/{SUBJECT}"),
        None,
    )
    .await;
    eventually_async("the erasure", Duration::from_secs(180), || async {
        single(
            &rig,
            "SELECT count(*) FROM erasure_audit WHERE kind = 'erasure'",
        )
        .await
            == 1
    })
    .await;
    for table in ["subjects", "access_log"] {
        assert_eq!(
            single(&rig, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        single(
            &rig,
            &format!("SELECT count(*) FROM readings WHERE subject = '{SUBJECT}'")
        )
        .await,
        0
    );
    assert_eq!(single(&rig, "SELECT count(*) FROM consent_ledger").await, 1);
    let status = run.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    assert_ledger(&run);
    assert_eq!(
        single(&rig, "SELECT count(*) FROM readings").await as u64,
        rig.produced.good - hours.len() as u64,
        "only the subject's readings are gone"
    );
}
