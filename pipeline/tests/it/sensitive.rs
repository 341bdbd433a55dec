//! Sensitive data that must never be stored: national identity numbers
//! (fødselsnummer, D- and H-numbers) and special-category fields are planted in
//! every position of messages of a public and a private tenant, good records and
//! dead letters alike. `meterline run` (the real binary, debug logging, dead-letter
//! topic on) processes them; afterwards no byte of any lake file (Parquet values,
//! statistics and metadata, the Delta log), no dead letter on the dead-letter
//! topic, no log line and no metric contains any planted value, while the readings
//! themselves are kept and flagged.

use std::process::Command;
use std::time::Duration;

use meterline::testkit::{free_port, http, Process};
use meterline_operators::ids::with_check_digits;
use serde_json::json;

use crate::common::{assert_none_planted, stored_views, topic_bytes, wait_for, Harness, KEY_HEX};

/// A valid number of each kind for meter `i`.
fn national_ids(i: u32) -> [String; 3] {
    let find = |dd: u32, mm: u32| {
        (0..1000)
            .find_map(|ind| with_check_digits(&format!("{dd:02}{mm:02}8{}{ind:03}", i % 10)))
            .expect("a valid number exists")
    };
    [find(10 + i % 18, 4), find(41 + i % 18, 6), find(12, 43)]
}

#[test]
fn sensitive_values_never_reach_the_lake_the_dead_letter_topic_logs_or_metrics() {
    let h = Harness::new(2);
    let dlq_topic = format!("dead-letters-{}", rand::random::<u32>());
    h._cluster.create_topic(&dlq_topic, 1, 1).unwrap();
    let mut planted: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    let (mut good, mut identifier_dead, mut other_dead) = (0u64, 0u64, 0u64);
    for i in 0..8u32 {
        let [fnr, dnr, hnr] = national_ids(i);
        let secret = |what: &str| format!("{what}-secret-{i}");
        for s in [&fnr, &dnr, &hnr] {
            planted.push(s.clone());
        }
        for w in ["religion", "diagnosis", "child", "union", "politics"] {
            planted.push(secret(w));
        }
        for (t, tenant) in ["oslo-utility", "acme-industri"].iter().enumerate() {
            let meter = meterline::generator::gsrn(900 + i * 2 + t as u32);
            let base = |hour: u32| {
                json!({
                    "schema": "reading/v1", "tenant": tenant, "device_id": format!("dev-{i}-{t}"),
                    "meter_id": meter, "quantity": "electricity",
                    "start": format!("2026-06-01T{hour:02}:00:00Z"), "resolution": "PT1H",
                    "value": 1.25, "unit": "kWh", "quality": "measured",
                    "version": "2026-06-02T06:00:00Z"
                })
            };
            let mut variants = Vec::new();
            let mut v = base(0);
            v["subject"] = json!(format!("customer {fnr}"));
            variants.push(v.to_string());
            let mut v = base(1);
            v["area"] = json!(dnr);
            variants.push(v.to_string());
            let mut v = base(2);
            let n: i64 = fnr.parse().unwrap();
            v["status"] = json!({
                "note": format!("owner {hnr}"),
                "ids": [n, 3],
                "negative": -n,
                "float": n as f64,
            });
            variants.push(v.to_string());
            let mut v = base(3);
            v["pii"] = json!({ "national_id": fnr, "religion": secret("religion"), "name": "x" });
            v["health_condition"] = json!({ "diagnosis": secret("diagnosis") });
            v["children"] = json!([secret("child")]);
            v["Trade-Union"] = json!(secret("union"));
            v["pii"]["politicalOpinion"] = json!(secret("politics"));
            variants.push(v.to_string());
            // Escaped digits do not hide a number (the raw text keeps the escapes).
            let escaped: String = dnr
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            let text = base(4)
                .to_string()
                .replacen('{', &format!("{{\"ssn\":\"{escaped}\","), 1);
            assert!(!text.contains(&dnr));
            variants.push(text);
            good += variants.len() as u64;
            // Dead letters carrying the same data: an identifier that is a national id,
            // and a bad value with sensitive data elsewhere.
            let mut v = base(5);
            v["device_id"] = json!(format!("dev {fnr}"));
            variants.push(v.to_string());
            let mut v = base(6);
            v["meter_id"] = json!(dnr);
            variants.push(v.to_string());
            identifier_dead += 2;
            let mut v = base(7);
            v["value"] = json!(-1);
            v["status"] = json!({ "owner": hnr, "religion": secret("religion") });
            v["subject"] = json!(fnr);
            variants.push(v.to_string());
            other_dead += 1;
            for v in variants {
                messages.push((meter.clone(), Some(v.into_bytes())));
            }
        }
    }
    let produced = messages.len() as u64;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(h.produce(&messages));

    let port = free_port();
    let config = h.lake.path().join("sensitive.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "sensitive"
readings_topic = "{topic}"

[lake]
uri = "{lake}"

[pipeline]
flush_interval_secs = 1

[metrics]
listen = "127.0.0.1:{port}"

[dead_letters]
kafka_topic = "{dlq_topic}"

[[tenants]]
id = "oslo-utility"
deployment = "public"
key_rotation = "never"
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}

[[tenants]]
id = "acme-industri"
deployment = "private"
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}
"#,
            brokers = h.brokers,
            topic = h.topic,
            lake = h.lake.path().join("lake").display(),
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_meterline"));
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .env("METERLINE_LOG", "debug");
    let mut run = Process::spawn("meterline", command);
    let mut metrics = String::new();
    runtime.block_on(wait_for(
        "every record accounted for",
        Duration::from_secs(90),
        || {
            let text = http(port, "GET", "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            let sum: u64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("meterline_records_written_total")
                        || l.starts_with("meterline_dead_letters_total")
                        || l.starts_with("meterline_records_dropped_total")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            metrics = text;
            async move { sum >= produced }
        },
    ));
    let status = run.terminate(Duration::from_secs(30)).expect("stops");
    assert!(status.success(), "{status:?}");
    let ledger = run.ledger().expect("ledger line");
    assert!(ledger.balanced(), "{ledger:?}");
    assert_eq!(ledger.written, good);
    assert_eq!(ledger.dead_lettered, identifier_dead + other_dead);

    // Readings were kept, flagged, and counted by kind.
    let lake = meterline_sinks::LakeConfig {
        uri: h.lake.path().join("lake").to_string_lossy().into_owned(),
        storage_options: Default::default(),
    };
    let flagged = runtime.block_on(crate::common::count(
        &lake,
        "SELECT count(*) FROM readings WHERE flags LIKE '%sensitive_removed%'",
    ));
    assert_eq!(flagged, good);
    let identifier = runtime.block_on(crate::common::count(
        &lake,
        "SELECT count(*) FROM dead_letters WHERE reason = 'sensitive_identifier'",
    ));
    assert_eq!(identifier, identifier_dead);
    for kind in ["fodselsnummer", "d_number", "h_number", "special_category"] {
        let line = format!("meterline_sensitive_removed_total{{kind=\"{kind}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n >= 16, "{kind}: {n}");
    }

    // What a reader of the dead-letter topic sees.
    let dlq_bytes = topic_bytes(
        &h.brokers,
        &dlq_topic,
        (identifier_dead + other_dead) as usize,
    );

    // Every stored byte.
    let mut views: Vec<(String, Vec<u8>)> = stored_views(&h.lake.path().join("lake"))
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    assert!(views.len() > 4, "the lake has files");
    for (i, b) in dlq_bytes.into_iter().enumerate() {
        views.push((format!("dead-letter topic message {i}"), b));
    }
    let logs = run.lines_matching(|_| true).join("\n");
    assert!(logs.contains("flushed"), "debug logs were captured");
    views.push(("logs".into(), logs.into_bytes()));
    views.push(("metrics".into(), metrics.into_bytes()));
    assert_none_planted(&views, &planted);
}
