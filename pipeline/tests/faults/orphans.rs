//! Orphan files on real infrastructure (tansu + S3): `meterline run` is SIGKILLed
//! between uploading a flush's data files and committing them (a test hook stalls
//! it there), so files holding a subject's readings sit in the bucket with no
//! commit referencing them. After a restart the readings are stored once, the
//! subject is erased, and still the killed commit's files hold the subject's
//! rows, until the orphan sweep of `meterline retention run`, at a "now" past
//! the orphan age, deletes them and records it in `erasure_audit`.

use std::time::Duration;

use chrono::DurationRound;
use meterline::dev::generator::{gsrn, Message};
use meterline::dev::testkit::unique_name;
use meterline_sinks::delta::COMMIT_STALL_ENV;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::rig::{assert_ledger, bucket_views, eventually_async, holding, serial, Rig, KEY_HEX};
use crate::GRACE;

const SUBJECT: &str = "acct-orphan-4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_of_a_killed_commit_leave_the_bucket_with_the_orphan_sweep() {
    let _serial = serial().await;
    let mut rig = Rig::new(1);
    let erasure_topic = unique_name("erasure");
    rig.broker.create_topic(&erasure_topic, 1);
    let config = rig.config("orphans", None, "max_batch_rows = 1000");
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "\n[privacy]\nerasure_topic = \"{erasure_topic}\"\nerasure_deadline_secs = 600\n"
        );
    std::fs::write(&config, text).unwrap();
    let now = meterline::dev::testkit::clock().now();
    let fake_now =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let from =
        now.duration_trunc(chrono::Duration::hours(1)).unwrap() - chrono::Duration::hours(30);
    // The subject's meter, and another one (no subject) whose rows must survive
    // the sweep: the files the tables reference are never orphans.
    let meter = gsrn(40_004);
    let other = gsrn(40_005);
    let reading = |m: &str, subject: Option<&str>, h: i64| {
        let mut v = json!({
            "schema": "reading/v1", "tenant": "acme-industri", "device_id": format!("dev-{m}"),
            "meter_id": m, "quantity": "electricity",
            "start": fake_now(from + chrono::Duration::hours(h)), "resolution": "PT1H",
            "value": 1.5, "unit": "kWh", "quality": "measured",
        });
        if let Some(s) = subject {
            v["subject"] = json!(s);
        }
        Message {
            key: m.to_owned(),
            payload: v.to_string().into_bytes(),
            bad_reason: None,
        }
    };
    let mut messages: Vec<Message> = (0..24).map(|h| reading(&meter, Some(SUBJECT), h)).collect();
    messages.extend((0..24).map(|h| reading(&other, None, h)));
    rig.produce(&messages).await;
    let now_text = fake_now(now);

    // Killed between upload and commit.
    let mut stalled = rig.spawn_with_env(
        "stalled",
        &config,
        &[(COMMIT_STALL_ENV, "1"), ("METERLINE_FAKE_NOW", &now_text)],
    );
    stalled.wait_line(0, Duration::from_secs(120), |l| {
        l.contains("failpoint: commit stalled")
    });
    stalled.kill();
    let restart_at = crate::rig::restart_after_kill();
    let orphaned = holding(&bucket_views(&rig).await, SUBJECT);
    assert!(
        !orphaned.is_empty(),
        "the killed commit's uploads hold the subject"
    );

    // Restarted: stored once; then the subject is erased.
    tokio::time::sleep_until(restart_at).await;
    let mut run = rig.spawn_with_env("run", &config, &[("METERLINE_FAKE_NOW", &now_text)]);
    rig.await_rows(48, Duration::from_secs(180)).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&erasure_topic).key(&format!("acme-industri/{SUBJECT}")),
            Duration::from_secs(30),
        )
        .await
        .expect("tombstone delivered");
    eventually_async("the erasure", Duration::from_secs(180), || async {
        rig.try_count("SELECT count(*) FROM erasure_audit WHERE kind = 'erasure'")
            .await
            == Ok(1)
    })
    .await;
    assert!(run
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert_ledger(&run);
    assert_eq!(
        rig.count(&format!(
            "SELECT count(*) FROM readings WHERE subject = '{SUBJECT}'"
        ))
        .await,
        0
    );
    let left = holding(&bucket_views(&rig).await, SUBJECT);
    assert!(
        !left.is_empty() && left.iter().all(|o| orphaned.contains(o)),
        "after the erasure only the orphans hold the subject: {left:?}"
    );

    // The sweep, before the orphan age: nothing; past it: the orphans are gone.
    // The orphan age is measured against the objects' modification times, which
    // the S3 server stamps with the wall clock: the sweeps' storage clock is the
    // wall clock moved on, as meterline's own "now" is the test's clock moved on.
    let wall = chrono::Utc::now();
    let sweep = |hours: i64| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterline"))
            .args(["retention", "run", "--config"])
            .arg(&config)
            .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
            .env(
                "METERLINE_FAKE_NOW",
                fake_now(now + chrono::Duration::hours(hours)),
            )
            .env(
                meterline::config::FAKE_STORAGE_NOW_ENV,
                fake_now(wall + chrono::Duration::hours(hours)),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let early = sweep(1);
    assert!(!early.contains("orphan_files"), "{early}");
    assert_eq!(holding(&bucket_views(&rig).await, SUBJECT), left);
    let late = sweep(7);
    assert!(late.contains("orphan_files"), "{late}");
    assert_eq!(
        holding(&bucket_views(&rig).await, SUBJECT),
        Vec::<String>::new()
    );
    assert_eq!(
        rig.count("SELECT count(*) FROM erasure_audit WHERE category = 'orphan_files' AND files_vacuumed > 0")
            .await,
        1
    );
    // Every file the tables reference is still there: the tables read whole.
    assert_eq!(rig.count("SELECT count(*) FROM readings").await, 24);
    assert_eq!(
        rig.count(&format!(
            "SELECT count(*) FROM readings WHERE meter = '{other}' AND value = 1.5"
        ))
        .await,
        24
    );
    assert!(rig.count("SELECT count(*) FROM consumption_hourly").await > 0);
}
