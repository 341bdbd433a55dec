//! Bad input of every kind (22 reasons, hostile sizes and encodings among them)
//! lands in `dead_letters` with its reason, the pipeline keeps going, and
//! produced = stored + dead-lettered + counted drops (duplicates, superseded
//! versions).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use meterline::dev::generator::GeneratorSpec;

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
    // hostile size, valid JSON that is not an object, an unsupported schema, and
    // every meter-data rule of `validate`.
    let fnr = meterline_operators::ids::with_check_digits("150387123")
        .or_else(|| meterline_operators::ids::with_check_digits("150387124"))
        .unwrap();
    let danish_body = "57131234567890123";
    let danish = format!(
        "{danish_body}{}",
        meterline_operators::ids::gs1_check_digit(danish_body.as_bytes())
    );
    let bad = |overrides: &[(&str, serde_json::Value)]| {
        let mut v = serde_json::json!({
            "schema": "reading/v1", "tenant": "acme-industri", "device_id": "dev-x",
            "meter_id": "707057500022939815", "quantity": "electricity",
            "start": "2026-03-28T10:00:00Z", "resolution": "PT1H", "value": 1.5,
            "unit": "kWh", "quality": 127, "version": "2026-03-29T06:00:00Z"
        });
        for (k, x) in overrides {
            v[*k] = x.clone();
        }
        Some(v.to_string().into_bytes())
    };
    use serde_json::json;
    let extra: Vec<(Option<Vec<u8>>, &str)> = vec![
        (bad(&[("meter_id", json!("707057500022939816"))]), "invalid_gsrn"),
        (bad(&[("meter_id", json!("7070575"))]), "invalid_gsrn"),
        (bad(&[("meter_id", json!(danish))]), "gsrn_prefix"),
        (bad(&[("start", json!("2026-03-28T10:20:00Z"))]), "misaligned_interval"),
        (
            bad(&[("start", json!("2026-03-28T10:05:00Z")), ("resolution", json!("PT15M"))]),
            "misaligned_interval",
        ),
        (bad(&[("start", json!("2099-01-01T00:00:00Z"))]), "future_interval"),
        (bad(&[("start", json!("1900-01-01T00:00:00Z"))]), "too_old"),
        (bad(&[("unit", json!("m3"))]), "unit_not_allowed"),
        (bad(&[("unit", json!("Wh"))]), "unit_not_allowed"),
        (bad(&[("value", json!(25.5))]), "value_too_high"),
        (
            bad(&[("value", json!(7)), ("resolution", json!("PT15M"))]),
            "value_too_high",
        ),
        (bad(&[("value", json!(-0.001))]), "negative_value"),
        (bad(&[("quality", json!(99))]), "invalid_value"),
        (bad(&[("quality", json!(true))]), "wrong_type"),
        (bad(&[("value", json!(1e300))]), "invalid_value"),
        (bad(&[("device_id", json!(format!("dev-{fnr}")))]), "sensitive_identifier"),
        (bad(&[("meter_id", json!(fnr))]), "sensitive_identifier"),
        (bad(&[("redacted", json!(true))]), "invalid_replay"),
        (bad(&[("tenant", json!("Bad Tenant"))]), "unknown_tenant"),
        (
            Some(br#"{"schema":"reading/v1","tenant":"\u0000x"}"#.to_vec()),
            "missing_field",
        ),
        (Some(b"{\"schema\":\"reading/v1\",\"device_id\":\"\xff\xfe\"}".to_vec()), "not_utf8"),
        (Some(vec![0u8; 70_000]), "too_large"),
        (Some(b"\xef\xbb\xbf{}".to_vec()), "malformed_json"),
        (Some(b"null".to_vec()), "not_an_object"),
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
    // A version conflict: a good reading, then the same key and version with
    // another value. Counted drops: the same reading again (duplicate) and an
    // older version (superseded).
    let good = bad(&[("meter_id", json!("707057500000000018"))]);
    let conflict = bad(&[
        ("meter_id", json!("707057500000000018")),
        ("value", json!(2.5)),
    ]);
    let older = bad(&[
        ("meter_id", json!("707057500000000018")),
        ("version", json!("2026-03-28T20:00:00Z")),
    ]);
    for (payload, reason) in [
        (good.clone(), None),
        (conflict, Some("version_conflict")),
        (good, None),
        (older, None),
    ] {
        // One key: versions of a meter stay in order within one partition.
        messages.push(("versions".to_owned(), payload, reason));
    }
    let produced = messages.len() as u64;
    let bad = messages.iter().filter(|m| m.2.is_some()).count() as u64;
    let reasons: std::collections::BTreeSet<&str> = messages.iter().filter_map(|m| m.2).collect();
    assert!(reasons.len() >= 20, "{} kinds of bad record", reasons.len());
    h.produce(
        &messages
            .iter()
            .map(|(k, p, _)| (k.clone(), p.clone()))
            .collect::<Vec<_>>(),
    )
    .await;

    // acme-industri allows Norwegian GSRNs only.
    let mut settings = h.settings("dlq-group");
    settings.tenants =
        meterline_operators::TenantRegistry::new(settings.tenants.iter().cloned().map(|mut t| {
            if t.id == "acme-industri" {
                t.rules.gsrn_prefixes = vec!["707057500".into()];
            }
            t
        }))
        .unwrap();
    let metrics = run_until_accounted(settings, produced).await;

    let lake = h.lake_config();
    let stored = h.count("SELECT count(*) FROM readings").await;
    let dead = h.count("SELECT count(*) FROM dead_letters").await;
    assert_eq!(stored, produced - bad - 2, "every good record stored once");
    assert_eq!(dead, bad, "every bad record dead-lettered");
    let c = metrics.conservation();
    assert!(c.holds(), "{c:?}");
    assert_eq!(c.consumed, produced);
    assert_eq!(c.dropped, 2, "one duplicate, one superseded version");
    let text = metrics.render();
    assert!(
        text.contains("meterline_records_dropped_total{reason=\"duplicate\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("meterline_records_dropped_total{reason=\"superseded\"} 1"),
        "{text}"
    );

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
