//! Dead letters on real infrastructure (tansu + S3): every dead letter reaches both
//! the `dead_letters` table and the dead-letter topic with its reason and source
//! position in headers; `meterline dlq list` shows them; after the missing tenant
//! is configured, `meterline dlq replay` re-publishes them and a restarted
//! pipeline stores them; a second replay stores nothing new.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use meterline::dev::generator::Message;
use meterline::dev::testkit::{free_port, unique_name};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use serde_json::json;

use crate::rig::{assert_ledger, eventually, messages, metric, scrape, serial, Rig};
use crate::GRACE;

fn late_tenant(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let meter = meterline::dev::generator::gsrn(80_000 + (i % 5) as u32);
            let payload = json!({
                "schema": "reading/v1", "tenant": "late-utility", "device_id": format!("late-{}", i % 5),
                "meter_id": meter, "quantity": "electricity",
                "start": format!("2026-10-2{}T{:02}:00:00Z", i / 5 / 24, (i / 5) % 24),
                "resolution": "PT1H", "value": 1.5, "unit": "kWh", "quality": 127,
                "version": "2026-10-29T06:00:00Z"
            });
            Message {
                key: meter,
                payload: payload.to_string().into_bytes(),
                bad_reason: Some("unknown_tenant"),
            }
        })
        .collect()
}

fn cli(args: &[&str], config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("METERLINE_PSEUDONYM_KEY", crate::rig::KEY_HEX)
        .envs(meterline::dev::testkit::clock_env())
        .output()
        .expect("run meterline");
    assert!(
        out.status.success(),
        "meterline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_reach_table_and_topic_and_replay_after_a_fix() {
    let _serial = serial().await;
    let mut rig = Rig::new(2);
    let dlq_topic = unique_name("dead-letters");
    rig.broker.create_topic(&dlq_topic, 1);
    let mut stream = messages(2_000, 12, 21);
    let late = late_tenant(60);
    for (i, m) in late.iter().enumerate() {
        stream.insert((i * 53) % stream.len(), m.clone());
    }
    rig.produce(&stream).await;
    let good = rig.produced.good;
    let bad = rig.produced.bad;

    let port = free_port();
    let config = rig.config("dlq", Some(port), "max_batch_rows = 1000");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[dead_letters]\nkafka_topic = \"{dlq_topic}\"\n"
    ));
    std::fs::write(&config, &text).unwrap();

    let mut first = rig.spawn("first", &config);
    rig.await_rows(good, Duration::from_secs(180)).await;
    eventually(
        "every dead letter committed",
        Duration::from_secs(60),
        || scrape(port).is_some_and(|m| metric(&m, "meterline_dead_letters_total") as u64 >= bad),
    )
    .await;
    let status = first.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    let one = assert_ledger(&first);
    assert_eq!(one.dead_lettered, bad);
    rig.assert_exact().await;

    // The topic holds one message per dead letter, with reason and position.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .set("group.id", unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&dlq_topic]).unwrap();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut keys = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while keys.len() < bad as usize {
        assert!(
            Instant::now() < deadline,
            "dead-letter topic: {} of {bad}",
            keys.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|x| x.key == name))
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let reason = header("meterline-reason").expect("reason header");
            let position = format!(
                "{}:{}",
                header("meterline-source-partition").expect("partition header"),
                header("meterline-source-offset").expect("offset header")
            );
            if keys.insert(position) {
                *by_reason.entry(reason).or_default() += 1;
            }
        }
    }
    assert_eq!(keys.len() as u64, bad, "each dead letter at least once");
    assert_eq!(
        by_reason.get("unknown_tenant").copied().unwrap_or(0),
        60 + 2
    );

    // `dlq list` shows them.
    let listed = cli(
        &[
            "dlq",
            "list",
            "--reason",
            "unknown_tenant",
            "--format",
            "csv",
            "--limit",
            "1000",
        ],
        &config,
    );
    assert_eq!(listed.lines().count(), 1 + 62, "{listed}");

    // The tenant is configured; replay; restart.
    text.push_str(
        "\n[[tenants]]\nid = \"late-utility\"\ndeployment = \"public\"\nkey_rotation = \"never\"\nallow_static_pseudonyms = true\ntelemetry_retention_days = 36600\nvalidation = { max_age_days = 36500 }\n",
    );
    std::fs::write(&config, &text).unwrap();
    let still_unknown =
        "SELECT count(DISTINCT payload) FROM dead_letters WHERE tenant = 'no-such-tenant'";
    assert_eq!(rig.count(still_unknown).await, 2);
    let out = cli(&["dlq", "replay", "--reason", "unknown_tenant"], &config);
    assert!(out.contains("replayed 62 dead letters"), "{out}");
    let mut second = rig.spawn("second", &config);
    rig.await_rows(good + 60, Duration::from_secs(180)).await;
    eventually("the replay accounted for", Duration::from_secs(60), || {
        scrape(port).is_some_and(|m| {
            metric(&m, "meterline_records_written_total") as u64
                + metric(&m, "meterline_dead_letters_total") as u64
                >= 62
        })
    })
    .await;
    let status = second.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()));
    let two = assert_ledger(&second);
    assert_eq!((two.consumed, two.written, two.dead_lettered), (62, 60, 2));
    // Dead-lettered again, their payloads are the same (pseudonyms are not hashed
    // twice), so a later replay still finds the same meters.
    assert_eq!(rig.count(still_unknown).await, 2);
    assert_eq!(
        rig.count("SELECT count(*) FROM dead_letters WHERE tenant = 'no-such-tenant'")
            .await,
        4
    );
    // The replayed public tenant's rows carry one pseudonym per meter: the one
    // its dead letters got (under the day's dead-letter key: the tenant was not
    // configured then).
    assert_eq!(
        rig.count("SELECT count(DISTINCT meter) FROM readings WHERE tenant = 'late-utility'")
            .await,
        5
    );

    // Replaying again stores nothing new: duplicates under the version rules.
    let out = cli(&["dlq", "replay", "--reason", "unknown_tenant"], &config);
    assert!(out.contains("replayed"), "{out}");
    let mut third = rig.spawn("third", &config);
    eventually(
        "the second replay accounted for",
        Duration::from_secs(120),
        || {
            scrape(port).is_some_and(|m| {
                metric(&m, "meterline_records_written_total") as u64
                    + metric(&m, "meterline_dead_letters_total") as u64
                    + metric(&m, "meterline_records_dropped_total") as u64
                    >= 62
            })
        },
    )
    .await;
    let status = third.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()));
    let three = assert_ledger(&third);
    assert_eq!(three.written, 0, "{three:?}");
    assert_eq!(three.dropped, 60, "{three:?}");
    assert_eq!(rig.rows().await, good + 60);
}
