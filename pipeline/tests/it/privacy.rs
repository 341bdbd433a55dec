//! For a public tenant nothing stored anywhere under the lake contains a raw
//! device id, meter id, subject or pii value: every Parquet file is decoded (values)
//! and scanned as bytes (statistics, page headers, footer metadata); every other
//! file (Delta log, checkpoints, CRCs) is scanned as bytes.

use arrow::json::ArrayWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

use crate::common::{collect_files, contains, run_until_accounted, Harness};

fn secrets_for(i: usize) -> Vec<String> {
    vec![
        format!("devsecret-{i:05}-x"),
        meterline::dev::generator::gsrn(4_200_000 + i as u32), // a valid GSRN
        format!("subject-secret-{i:04}"),
        format!("Kari Nordmann {i}"),
        format!("kari.{i}@example.no"),
        format!("+47 4455{i:04}"),
        format!("Hemmelig gate {i}, Oslo"),
        format!("203.0.113.{}", 100 + i),
        format!("N-0{i:03}-zip"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_identifier_or_pii_of_a_public_tenant_is_stored() {
    let h = Harness::new(2);
    let meters = 20;
    let mut messages = Vec::new();
    let mut secrets = Vec::new();
    for i in 0..meters {
        let s = secrets_for(i);
        for hour in 0..24 {
            let mut v = json!({
                "schema": "reading/v1", "tenant": "oslo-utility",
                "device_id": s[0], "meter_id": s[1], "subject": s[2],
                "quantity": "electricity",
                "start": format!("2026-10-25T{:02}:00:00Z", hour % 24),
                "resolution": "PT1H", "value": 0.5 + hour as f64, "unit": "kWh",
                "quality": "measured", "version": "2026-10-26T06:00:00Z", "area": "NO1",
                "pii": { "name": s[3], "email": s[4], "phone": s[5], "address": s[6],
                         "ip": s[7], "zip": s[8], "lat": 59.91, "lon": 10.75 }
            });
            if hour == 5 {
                // A dead letter of the same tenant carries the same personal data.
                v["value"] = json!(-1);
            }
            messages.push((s[0].clone(), Some(v.to_string().into_bytes())));
        }
        secrets.extend(s);
    }
    let produced = messages.len() as u64;
    h.produce(&messages).await;
    run_until_accounted(h.settings("privacy-group"), produced).await;
    assert_eq!(
        h.count("SELECT count(*) FROM readings").await,
        produced - meters as u64
    );
    assert_eq!(
        h.count("SELECT count(*) FROM dead_letters").await,
        meters as u64
    );
    assert_eq!(
        h.count("SELECT count(*) FROM readings WHERE subject IS NOT NULL")
            .await,
        0
    );

    let mut files = Vec::new();
    collect_files(h.lake.path(), &mut files);
    let mut parquet_files = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let mut views = vec![bytes.clone()];
        if path.extension().is_some_and(|e| e == "parquet") {
            parquet_files += 1;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            let mut text = Vec::new();
            {
                let mut w = ArrayWriter::new(&mut text);
                for batch in reader {
                    w.write(&batch.unwrap()).unwrap();
                }
                w.finish().unwrap();
            }
            views.push(text);
        }
        for view in &views {
            for secret in &secrets {
                assert!(
                    !contains(view, secret),
                    "{} contains a raw personal value",
                    path.display()
                );
            }
        }
    }
    assert!(
        parquet_files >= 2,
        "scanned the data files ({parquet_files})"
    );
}

/// The canary: a public tenant's stream full of personal data (names, emails,
/// phones, addresses, IPs, coordinates, national identity numbers in free text)
/// and raw identifiers, through `meterline run` with aggregates, the dead-letter
/// topic, subject events and debug logs; afterwards no byte of any file in the
/// lake, of the dead-letter topic, of the logs or of the metrics holds any of them.
#[test]
fn canary_no_personal_value_of_a_public_tenant_survives_anywhere() {
    use meterline::dev::testkit::{free_port, http, Process};
    use std::time::Duration;

    let h = Harness::new(2);
    let dlq_topic = format!("dead-letters-{}", rand::random::<u32>());
    let subjects_topic = format!("subjects-{}", rand::random::<u32>());
    h.create_topic(&dlq_topic, 1);
    h.create_topic(&subjects_topic, 1);
    let yesterday = meterline::dev::testkit::clock().now().date_naive() - chrono::Days::new(1);
    let mut planted: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    let mut events = Vec::new();
    let meters = 12;
    let mut dead = 0u64;
    for i in 0..meters {
        let fnr = (0..1000)
            .find_map(|ind| {
                meterline_operators::ids::with_check_digits(&format!("{:02}0590{ind:03}", 10 + i))
            })
            .unwrap();
        let device = format!("canary-dev-{i:02}-x7q");
        let meter = meterline::dev::generator::gsrn(5_100_000 + i);
        let subject = format!("canary-subj-{i:02}");
        let name = format!("Canary Nordmann {i:02}");
        let email = format!("canary{i:02}@example.no");
        let phone = format!("+47 417 {i:02} 993");
        let address = format!("Kanarigata {i:02}, 0150 Oslo");
        let ip = format!("198.51.100.{}", 100 + i);
        let (lat, lon) = (format!("59.9138{i:02}"), format!("10.7522{i:02}"));
        planted.extend([
            device.clone(),
            meter.clone(),
            subject.clone(),
            name.clone(),
            email.clone(),
            phone.clone(),
            address.clone(),
            ip.clone(),
            lat.clone(),
            lon.clone(),
            fnr.clone(),
        ]);
        let note = format!("Ring {name} på {phone}, fnr {fnr}, {email}, {address}");
        for hour in 0..24u32 {
            let start = format!("{yesterday}T{hour:02}:00:00Z");
            let mut v = json!({
                "schema": "reading/v1", "tenant": "oslo-utility", "device_id": device,
                "meter_id": meter, "subject": subject, "quantity": "electricity",
                "start": start, "resolution": "PT1H", "value": 0.5 + f64::from(hour),
                "unit": "kWh", "quality": "measured", "area": "NO1",
                "pii": { "name": name, "email": email, "phone": phone, "address": address,
                         "ip": ip, "lat": lat.parse::<f64>().unwrap(), "lon": lon.parse::<f64>().unwrap() },
                "note": note, "location": { "lat": lat, "lon": lon },
            });
            match hour {
                // The address in a contract field: dropped, the reading kept.
                3 => v["area"] = json!(address),
                // Dead letters: a bad value; personal data in an enumerated field.
                5 => {
                    v["value"] = json!(-1);
                    dead += 1;
                }
                6 => {
                    v["unit"] = json!(name);
                    v["quality"] = json!(email);
                    v["version"] = json!(phone);
                    dead += 1;
                }
                _ => {}
            }
            messages.push((meter.clone(), Some(v.to_string().into_bytes())));
        }
        let e = json!({
            "schema": "subject-event/v1", "kind": "consent_granted", "tenant": "oslo-utility",
            "subject": subject, "purpose": "name", "occurred_at": format!("{yesterday}T12:00:00Z"),
            "email": email, "name": name, "phone": phone, "address": address, "ip": ip,
            "source": "app",
        });
        events.push((subject.clone(), Some(e.to_string().into_bytes())));
        // Free text in a ledger label: refused (a dead letter without payload). Not
        // the note: its national id would be dropped first, and the event recorded.
        let mut e = e.clone();
        e["source"] = json!(format!("Ring {name} på {phone}, {email}, {address}"));
        events.push((subject.clone(), Some(e.to_string().into_bytes())));
    }
    let produced = messages.len() as u64;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(h.produce(&messages));
    runtime.block_on(h.produce_to(&subjects_topic, &events, None));

    let port = free_port();
    let config = h.config_file("canary");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text
        .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""))
        // Monthly key epochs (the default for public tenants): the data is recent.
        .replace("key_rotation = \"never\"\n", "");
    text.push_str(&format!(
        "\n[dead_letters]\nkafka_topic = \"{dlq_topic}\"\n\n[aggregate]\ninterval_secs = 1\n\n[privacy]\nsubject_events_topic = \"{subjects_topic}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_meterline"));
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", crate::common::KEY_HEX)
        .env("METERLINE_LOG", "debug");
    let mut run = Process::spawn("meterline", command);
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mut metrics = String::new();
    runtime.block_on(crate::common::wait_for(
        "records, events and area aggregates",
        Duration::from_secs(120),
        || {
            let text = http(port, "GET", "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            let done = metric(&text, "meterline_records_written_total")
                + metric(&text, "meterline_dead_letters_total")
                + metric(&text, "meterline_records_dropped_total")
                >= produced
                && metric(
                    &text,
                    "meterline_subject_events_total{outcome=\"recorded\"}",
                ) == u64::from(meters)
                && metric(
                    &text,
                    "meterline_aggregate_rows_written_total{table=\"area_consumption_daily\"}",
                ) > 0;
            metrics = text;
            async move { done }
        },
    ));
    let status = run.terminate(Duration::from_secs(30)).expect("stops");
    assert!(status.success(), "{status:?}");
    let ledger = run.ledger().expect("ledger line");
    assert!(ledger.balanced(), "{ledger:?}");
    let lake = h.lake_config();
    let reasons = runtime.block_on(crate::common::query(
        &lake,
        "SELECT reason, source_topic, count(*) FROM dead_letters GROUP BY reason, source_topic",
    ));
    assert_eq!(
        ledger.dead_lettered,
        dead,
        "{}",
        arrow::util::pretty::pretty_format_batches(&reasons).unwrap()
    );

    // Something was stored: readings, dead letters, area cells, the ledger.
    for (sql, at_least) in [
        ("SELECT count(*) FROM readings", produced - dead),
        (
            "SELECT count(*) FROM dead_letters",
            dead + u64::from(meters),
        ),
        ("SELECT count(*) FROM area_consumption_daily", 1),
        ("SELECT count(*) FROM consent_ledger", u64::from(meters)),
    ] {
        let n = runtime.block_on(crate::common::count(&lake, sql));
        assert!(n >= at_least, "{sql}: {n}");
    }
    assert_eq!(
        runtime.block_on(crate::common::count(&lake, "SELECT count(*) FROM subjects")),
        0,
        "public subjects have no profile"
    );
    let mut views: Vec<(String, Vec<u8>)> = crate::common::stored_views(h.lake.path())
        .into_iter()
        .filter(|(p, _)| p.extension().is_none_or(|e| e != "toml"))
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    for (i, b) in crate::common::topic_bytes(&h.brokers, &dlq_topic, dead as usize)
        .into_iter()
        .enumerate()
    {
        views.push((format!("dead-letter topic message {i}"), b));
    }
    let logs = run.lines_matching(|_| true).join("\n");
    assert!(logs.contains("flushed"), "debug logs were captured");
    views.push(("logs".into(), logs.into_bytes()));
    views.push(("metrics".into(), metrics.into_bytes()));
    crate::common::assert_none_planted(&views, &planted);
}
