//! Erasure on real infrastructure (tansu + S3): a tombstone on the erasure topic,
//! `meterline run` SIGKILLed in the middle of the erasure (rows removed from
//! `readings`, aggregates not recomputed, old files not deleted, nothing recorded),
//! then restarted: the erasure completes once, the aggregates equal
//! `readings_current`, and no file the tables referenced before the erasure and
//! dropped since is left in the bucket.

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use deltalake::ObjectStore;
use futures::TryStreamExt;
use meterline::dev::testkit::unique_name;
use meterline::privacy::lifecycle::FAILPOINT_ENV;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::rig::{eventually_async, messages, restart_after_kill, serial, Rig};
use crate::GRACE;

/// The subject of the generator's private meter 1 (`acct-1`).
const SUBJECT: &str = "acct-1";

async fn single(rig: &Rig, sql: &str) -> i64 {
    let batches = rig.query(sql).await.expect("query");
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Parquet objects in the table's directory, and the files its snapshot references.
async fn objects_and_live(rig: &Rig, table: &'static str) -> (BTreeSet<String>, BTreeSet<String>) {
    let lake = meterline_sinks::Lake::new(&rig.lake()).unwrap();
    let t = meterline_sinks::open_existing(&lake, table)
        .await
        .unwrap()
        .expect("table exists");
    let live: BTreeSet<String> = t
        .get_active_add_actions_by_partitions(&[])
        .map_ok(|f| f.object_store_path().to_string())
        .try_collect()
        .await
        .unwrap();
    let objects: BTreeSet<String> = t
        .object_store()
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    (objects, live)
}

const CHECKED: [&str; 4] = [
    "readings",
    "consumption_daily",
    "consumption_hourly",
    "consumption_monthly",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_erasure_then_restart_completes_it_once() {
    let _serial = serial().await;
    let mut rig = Rig::new(2);
    let erasure_topic = unique_name("erasure");
    rig.broker.create_topic(&erasure_topic, 1);
    rig.produce(&messages(6_000, 0, 33)).await;
    let config = rig.config(
        "erasure",
        None,
        &format!(
            "max_batch_rows = 2000\n\n[aggregate]\ninterval_secs = 1\n\n\
             [privacy]\nerasure_topic = \"{erasure_topic}\"\nerasure_deadline_secs = 600"
        ),
    );
    let mut first = rig.spawn_with_env("first", &config, &[(FAILPOINT_ENV, "1")]);
    rig.await_rows(rig.produced.good, Duration::from_secs(240))
        .await;
    let held = single(
        &rig,
        &format!("SELECT count(*) FROM readings WHERE subject = '{SUBJECT}'"),
    )
    .await;
    assert!(held > 0, "the generator gives {SUBJECT} readings");
    let meters_sql = format!("SELECT DISTINCT meter FROM readings WHERE subject = '{SUBJECT}'");
    eventually_async(
        "the subject's meters are aggregated",
        Duration::from_secs(120),
        || async {
            single(
                &rig,
                &format!("SELECT count(*) FROM consumption_daily WHERE meter IN ({meters_sql})"),
            )
            .await
                > 0
        },
    )
    .await;
    let meters: Vec<String> = rig
        .query(&meters_sql)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();

    let mut live_before = Vec::new();
    for table in CHECKED {
        live_before.push(objects_and_live(&rig, table).await.1);
    }
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
    first.wait_line(0, Duration::from_secs(120), |l| {
        l.contains("failpoint: erasure stalled")
    });
    first.kill();
    let restart_at = restart_after_kill();
    // Killed between the readings commit and everything else: rows gone, the
    // aggregates still show the meters, nothing recorded.
    assert_eq!(
        single(
            &rig,
            &format!("SELECT count(*) FROM readings WHERE subject = '{SUBJECT}'")
        )
        .await,
        0
    );
    assert_eq!(rig.count("SELECT count(*) FROM erasure_audit").await, 0);

    tokio::time::sleep_until(restart_at).await;
    let mut second = rig.spawn("second", &config);
    eventually_async(
        "the erasure is recorded",
        Duration::from_secs(180),
        || async { rig.try_count("SELECT count(*) FROM erasure_audit").await == Ok(1) },
    )
    .await;
    let status = second.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop");

    let list = meters
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(",");
    for table in [
        "consumption_hourly",
        "consumption_daily",
        "consumption_monthly",
        "cost_hourly",
        "cost_daily",
        "cost_monthly",
    ] {
        assert_eq!(
            single(
                &rig,
                &format!("SELECT count(*) FROM {table} WHERE meter IN ({list})")
            )
            .await,
            0,
            "{table} still has the erased meters"
        );
    }
    assert_eq!(
        rig.rows().await,
        rig.produced.good - held as u64,
        "only the subject's readings are gone"
    );
    assert_eq!(
        rig.daily_differences().await,
        0,
        "consumption_daily differs from readings_current"
    );
    // Files the tables referenced before and dropped since (those that held the
    // subject, and the aggregates computed with them) are gone from the bucket.
    for (table, before) in CHECKED.into_iter().zip(live_before) {
        let (objects, live) = objects_and_live(&rig, table).await;
        let dropped: Vec<&String> = before.difference(&live).collect();
        assert!(!dropped.is_empty(), "{table}: the erasure changed files");
        let left: Vec<&&String> = dropped.iter().filter(|f| objects.contains(**f)).collect();
        assert!(
            left.is_empty(),
            "{table}: dropped files still in storage: {left:?}"
        );
    }
}
