//! Bad input of every kind lands in `dead_letters` with its reason, the pipeline
//! keeps going, and produced = stored + dead-lettered (+ counted drops).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use meterline::generator::GeneratorSpec;

use crate::common::{query, run_until_accounted, Harness};

/// Key, payload (None: no value), and the reason it should be dead-lettered for.
type Planted = (String, Option<Vec<u8>>, Option<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_is_a_dead_letter_with_its_reason() {
    let h = Harness::new(3);
    let spec = GeneratorSpec {
        meters: 8,
        first_day: NaiveDate::from_ymd_opt(2026, 3, 28).unwrap(),
        days: 2,
        timezone: chrono_tz::Europe::Oslo,
        bad: 12, // two of each generator kind
        seed: 3,
    };
    let generated = spec.generate();
    let mut messages: Vec<Planted> = generated
        .iter()
        .map(|m| (m.key.clone(), Some(m.payload.clone()), m.bad_reason))
        .collect();
    // Kinds the generator does not make: no value, bytes that are not UTF-8, a
    // hostile size, valid JSON that is not an object, an unsupported schema.
    let extra: Vec<(Option<Vec<u8>>, &str)> = vec![
        (None, "empty_payload"),
        (Some(vec![b'{', 0xc3, 0x28, b'}']), "not_utf8"),
        (Some(format!("{{\"x\":\"{}\"}}", "A".repeat(200_000)).into_bytes()), "too_large"),
        (Some(b"[1,2,3]".to_vec()), "not_an_object"),
        (Some(b"{\"schema\":\"reading/v9\"}".to_vec()), "missing_field"),
        (
            Some(
                br#"{"schema":"reading/v9","tenant":"acme-industri","device_id":"d","quantity":"electricity","start":"2026-03-28T00:00:00Z","resolution":"PT1H","value":1,"unit":"kWh","quality":"measured"}"#
                    .to_vec(),
            ),
            "unsupported_schema",
        ),
        (Some("{\"a\":".repeat(100).into_bytes()), "malformed_json"),
        (Some(vec![b'['; 5_000]), "malformed_json"),
    ];
    for (i, (payload, reason)) in extra.into_iter().enumerate() {
        let at = (i * 37) % messages.len();
        messages.insert(at, (format!("extra-{i}"), payload, Some(reason)));
    }
    let produced = messages.len() as u64;
    let bad = messages.iter().filter(|m| m.2.is_some()).count() as u64;
    h.produce(
        &messages
            .iter()
            .map(|(k, p, _)| (k.clone(), p.clone()))
            .collect::<Vec<_>>(),
    )
    .await;

    let metrics = run_until_accounted(h.settings("dlq-group"), produced).await;

    let lake = h.lake_config();
    let stored = h.count("SELECT count(*) FROM readings").await;
    let dead = h.count("SELECT count(*) FROM dead_letters").await;
    assert_eq!(stored, produced - bad, "every good record stored");
    assert_eq!(dead, bad, "every bad record dead-lettered");
    let c = metrics.conservation();
    assert!(c.holds(), "{c:?}");
    assert_eq!(c.consumed, produced);
    assert_eq!(c.dropped, 0);

    // Each reason appears as often as it was planted.
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for (_, _, reason) in &messages {
        if let Some(r) = reason {
            *want.entry((*r).to_owned()).or_default() += 1;
        }
    }
    let rows = query(
        &lake,
        "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason",
    )
    .await;
    let mut got = BTreeMap::new();
    for b in &rows {
        for i in 0..b.num_rows() {
            got.insert(
                b.column(0).as_string::<i32>().value(i).to_owned(),
                b.column(1).as_primitive::<Int64Type>().value(i),
            );
        }
    }
    assert_eq!(got, want);

    // Details name rules, never values; unparseable payloads are not stored.
    let rows = query(
        &lake,
        "SELECT detail, payload FROM dead_letters WHERE reason IN ('too_large', 'not_utf8', 'malformed_json', 'empty_payload')",
    )
    .await;
    for b in &rows {
        let payload = b.column(1);
        assert_eq!(
            payload.null_count(),
            b.num_rows(),
            "unparseable payloads are not kept"
        );
        for d in b.column(0).as_string::<i32>().iter().flatten() {
            assert!(!d.contains("AAAA"), "{d}");
        }
    }
    // The stored metric agrees with the lake.
    assert_eq!(metrics.conservation().written, stored);
    assert_eq!(metrics.conservation().dead_lettered, dead);
}
