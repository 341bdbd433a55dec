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

use arrow::array::{Array, AsArray};
use meterline::config::LifecycleSettings;
use meterline::dev::testkit::{free_port, http, Process};
use meterline::privacy::subjects::SCHEMA;
use meterline_operators::ids::with_check_digits;
use serde_json::json;

use crate::common::{
    assert_none_planted, query, start, stored_views, topic_bytes, wait_for, Harness, KEY_HEX,
};

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
            let meter = meterline::dev::generator::gsrn(900 + i * 2 + t as u32);
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
allow_static_pseudonyms = true
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

/// National identity numbers written out with check digits worked out by hand from
/// DOMAIN.md section 1 (k1 weights 3 7 6 1 8 9 4 5 2 over d1..d9 = sum1, k2 weights
/// 5 4 3 2 7 6 5 4 3 2 over d1..d10 = sum2; (sum1 + k1) % 11 == 0, (sum2 + k2) % 11
/// == 0), never by the code under test.
mod vectors {
    /// 01.01.70 #123: sum1 = 0+7+0+1+56+0+4+10+6 = 84, k1 = 4 (88 = 8*11);
    /// sum2 = 0+4+0+2+49+0+5+8+9+8 = 85, k2 = 3 (88).
    pub const FNR_LEADING_ZERO: &str = "01017012343";
    /// 05.03.91 #321: sum1 = 0+35+0+3+72+9+12+10+2 = 143 = 13*11, k1 = 0;
    /// sum2 = 0+20+0+6+63+6+15+8+3+0 = 121 = 11*11, k2 = 0.
    pub const FNR: &str = "05039132100";
    /// D-number of 01.01.70 #567: sum1 = 12+7+0+1+56+0+20+30+14 = 140, k1 = 3 (143);
    /// sum2 = 20+4+0+2+49+0+25+24+21+6 = 151, k2 = 3 (154 = 14*11).
    pub const D_NUMBER: &str = "41017056733";
    /// H-number of 01.01.70 #234: sum1 = 0+7+24+1+56+0+8+15+8 = 119, k1 = 2 (121);
    /// sum2 = 0+4+12+2+49+0+10+12+12+4 = 105, k2 = 5 (110).
    pub const H_NUMBER_LEADING_ZERO: &str = "01417023425";
    /// H-number of 12.12.85 #678: sum1 = 3+14+30+2+64+45+24+35+16 = 233, k1 = 9 (242);
    /// sum2 = 5+8+15+4+56+30+30+28+24+18 = 218, k2 = 2 (220).
    pub const H_NUMBER: &str = "12528567892";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_national_id_in_the_name_or_address_of_a_subject_event_is_never_stored() {
    use vectors::*;
    let h = Harness::new(1);
    let topic = format!("subjects-{}", rand::random::<u32>());
    h.create_topic(&topic, 1);
    let mut settings = h.settings("sensitive-subjects");
    settings.lifecycle = LifecycleSettings {
        subject_events_topic: topic.clone(),
        subject_group: "sensitive.subjects".to_owned(),
        ..settings.lifecycle.clone()
    };
    let running = start(settings);
    let metrics = running.metrics.clone();
    let tenant = "acme-industri";
    let ev = |subject: &str, day: u32, extra: serde_json::Value| {
        let mut v = json!({
            "schema": SCHEMA, "kind": "consent_granted", "tenant": tenant, "subject": subject,
            "occurred_at": format!("2026-11-{day:02}T10:00:00Z"), "source": "app",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        (subject.to_owned(), Some(v.to_string().into_bytes()))
    };
    // The forms people write them in: `DDMMYY NNNNN`, `DD.MM.YY-NNNNN`, 11 digits,
    // `DD.MM.YY NNNNN`; a number that lost its leading 0; a field named for one.
    let name_fnr = format!(
        "Kari Fnrnavn {} {}",
        &FNR_LEADING_ZERO[..6],
        &FNR_LEADING_ZERO[6..]
    );
    let d = D_NUMBER;
    let address_d = format!(
        "Fnrveien 3, {}.{}.{}-{}",
        &d[..2],
        &d[2..4],
        &d[4..6],
        &d[6..]
    );
    let hn = H_NUMBER;
    let address_h = format!("{}.{}.{} {}", &hn[..2], &hn[2..4], &hn[4..6], &hn[6..]);
    let ten_digits: u64 = FNR_LEADING_ZERO.parse().unwrap();
    let a = "acct-fnr-a1";
    let b = "acct-fnr-b2";
    let events = vec![
        ev(
            a,
            1,
            json!({"purpose": "name", "email": "a1@example.no", "name": name_fnr,
                        "customer_no": ten_digits}),
        ),
        ev(
            a,
            2,
            json!({"purpose": "address", "address": address_d, "fnr": "not a number"}),
        ),
        ev(
            a,
            3,
            json!({"purpose": "phone", "name": H_NUMBER_LEADING_ZERO, "address": address_h}),
        ),
        // The same data without national ids is stored (the test would be empty otherwise).
        ev(
            b,
            1,
            json!({"purpose": "name", "email": "b2@example.no", "name": "Ola Kontroll"}),
        ),
        ev(
            b,
            2,
            json!({"purpose": "address", "address": "Kontrollveien 9, 0150 Oslo"}),
        ),
        // A national id as the subject: a dead letter.
        ev(FNR, 1, json!({"purpose": "name", "email": "c3@example.no"})),
    ];
    h.produce_to(&topic, &events, None).await;
    let m = metrics.clone();
    wait_for("the events are handled", Duration::from_secs(60), || {
        let recorded = m.subject_events.with_label_values(&["recorded"]).get();
        let dead = m.subject_events.with_label_values(&["dead_lettered"]).get();
        async move { recorded + dead == 6 }
    })
    .await;
    let lake = h.lake_config();
    let profile = |subject: &'static str| {
        let lake = lake.clone();
        async move {
            let batches = query(
                &lake,
                &format!("SELECT email, name, address FROM subjects WHERE subject = '{subject}'"),
            )
            .await;
            let b = batches
                .into_iter()
                .find(|b| b.num_rows() == 1)
                .expect("one row");
            (0..3)
                .map(|i| {
                    let c = b.column(i).as_string::<i32>();
                    c.is_valid(0).then(|| c.value(0).to_owned())
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        profile("acct-fnr-a1").await,
        [Some("a1@example.no".to_owned()), None, None]
    );
    assert_eq!(
        profile("acct-fnr-b2").await,
        [
            Some("b2@example.no".to_owned()),
            Some("Ola Kontroll".to_owned()),
            Some("Kontrollveien 9, 0150 Oslo".to_owned())
        ]
    );
    assert_eq!(
        metrics
            .subject_events
            .with_label_values(&["recorded"])
            .get(),
        5
    );
    assert_eq!(
        crate::common::count(
            &lake,
            "SELECT count(*) FROM dead_letters WHERE reason = 'sensitive_identifier' AND payload IS NULL"
        )
        .await,
        1
    );
    // Counted like the readings' removals: fødselsnummer in the name, the number
    // without its 0, the `fnr` field and the subject; the D-number; two H-numbers.
    let removed = |kind: &str| metrics.sensitive_removed.with_label_values(&[kind]).get();
    assert_eq!(
        ["fodselsnummer", "d_number", "h_number", "special_category"].map(removed),
        [4, 1, 2, 0]
    );
    running.stop().await;
    let views: Vec<(String, Vec<u8>)> = stored_views(h.lake.path())
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    assert!(views.iter().any(|(p, _)| p.contains("/subjects/")));
    let planted = [
        "Fnrnavn",
        "Fnrveien",
        &name_fnr[13..],
        &address_d[12..],
        &address_h,
        H_NUMBER_LEADING_ZERO,
        FNR,
    ]
    .map(str::to_owned);
    assert_none_planted(&views, &planted);
}
