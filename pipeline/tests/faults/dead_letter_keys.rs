//! Dead-letter pseudonyms on real infrastructure (tansu + S3). A public tenant
//! whose keys rotate monthly: its dead letter names the meter by the pseudonym
//! the meter's readings of that month have; a tenant that is not configured gets
//! a pseudonym under the day's dead-letter key (`_keys/DEAD_LETTERS/<day>.key`),
//! and no object in the bucket holds a raw meter id. Once the day's dead letters
//! are past their retention, `meterline audit` reports the key still there, and
//! `meterline retention run` destroys it and records it in `erasure_audit`.

use std::process::Command;
use std::time::Duration;

use arrow::array::AsArray;
use chrono::DurationRound;
use meterline::dev::generator::{gsrn, Message};
use serde_json::json;

use crate::rig::{assert_ledger, bucket_views, holding, serial, Rig, KEY_HEX};
use crate::GRACE;

const RETENTION_DAYS: i64 = 2;

fn at(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `meterline <args> --config <config>` at "now" = `now`: (success, stdout).
fn cli(
    args: &[&str],
    config: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .env("METERLINE_FAKE_NOW", at(now))
        .output()
        .expect("run meterline");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

async fn strings(rig: &Rig, sql: &str) -> Vec<String> {
    rig.query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn key_objects(views: &[(String, Vec<u8>)]) -> Vec<String> {
    views
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("lake/_keys/DEAD_LETTERS/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_use_their_epochs_key_or_a_day_key_that_is_destroyed() {
    let _serial = serial().await;
    let mut rig = Rig::new(1);
    let config = rig.config("dlkeys", None, "max_batch_rows = 1000");
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "\n[[tenants]]\nid = \"bergen-kraft\"\ndeployment = \"public\"\n\
             timezone = \"Europe/Oslo\"\nkey_rotation = \"monthly\"\n\
             telemetry_retention_days = 36600\n\
             \n[dead_letters]\nretention_days = {RETENTION_DAYS}\n"
        );
    std::fs::write(&config, text).unwrap();
    let now = meterline::dev::testkit::clock().now();
    // Two hours back (whole hours): over, and in an open epoch.
    let start =
        now.duration_trunc(chrono::Duration::hours(1)).unwrap() - chrono::Duration::hours(2);
    let (meter, stranger) = (gsrn(50_001), gsrn(50_002));
    let reading = |tenant: &str, m: &str, hour: i64, kwh: f64| Message {
        key: m.to_owned(),
        payload: json!({
            "schema": "reading/v1", "tenant": tenant, "device_id": format!("dev-{m}"),
            "meter_id": m, "quantity": "electricity",
            "start": at(start + chrono::Duration::hours(hour)), "resolution": "PT1H",
            "value": kwh, "unit": "kWh", "quality": "measured",
        })
        .to_string()
        .into_bytes(),
        bad_reason: None,
    };
    rig.produce(&[
        reading("bergen-kraft", &meter, 0, 1.5),
        // Beyond the physical maximum of 25 kWh per hour.
        reading("bergen-kraft", &meter, 1, 400.0),
        reading("nowhere-energi", &stranger, 0, 1.5),
    ])
    .await;
    let mut run = rig.spawn("run", &config);
    rig.await_rows(1, Duration::from_secs(180)).await;
    crate::rig::eventually_async("the dead letters", Duration::from_secs(120), || async {
        rig.try_count("SELECT count(*) FROM dead_letters").await == Ok(2)
    })
    .await;
    assert!(run
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert_ledger(&run);

    // The dead letter of the configured tenant: the pseudonyms of its readings.
    let stored = strings(
        &rig,
        "SELECT meter FROM readings WHERE tenant = 'bergen-kraft'",
    )
    .await;
    let devices = strings(
        &rig,
        "SELECT device FROM readings WHERE tenant = 'bergen-kraft'",
    )
    .await;
    let payload = |reason: &str| {
        let rig = &rig;
        let sql = format!("SELECT payload FROM dead_letters WHERE reason = '{reason}'");
        async move {
            let texts = strings(rig, &sql).await;
            assert_eq!(texts.len(), 1, "{sql}");
            serde_json::from_str::<serde_json::Value>(&texts[0]).unwrap()
        }
    };
    let too_high = payload("value_too_high").await;
    assert_eq!(too_high["meter_id"].as_str(), Some(stored[0].as_str()));
    assert_eq!(too_high["device_id"].as_str(), Some(devices[0].as_str()));
    // The stranger's: a pseudonym (not the raw id), under the day's key.
    let unknown = payload("unknown_tenant").await;
    let p = unknown["meter_id"].as_str().expect("a pseudonym");
    assert!(p.len() == 32 && p != stranger, "{unknown}");
    let views = bucket_views(&rig).await;
    for raw in [&meter, &stranger] {
        assert_eq!(holding(&views, raw), Vec::<String>::new(), "{raw} stored");
    }
    let day_keys = key_objects(&views);
    let utc_today = now.date_naive();
    assert!(
        day_keys.contains(&format!("lake/_keys/DEAD_LETTERS/{utc_today}.key")),
        "{day_keys:?}"
    );

    // Past the retention of every dead letter written so far (those keys
    // included): the audit reports each key, the sweep destroys them.
    let later = now + chrono::Duration::days(RETENTION_DAYS + 3);
    let (clean, audit) = cli(&["audit"], &config, later);
    assert!(!clean, "{audit}");
    assert_eq!(
        audit.matches("the dead-letter key of").count(),
        day_keys.len(),
        "{audit}"
    );
    let (ok, sweep) = cli(&["retention", "run"], &config, later);
    assert!(ok, "{sweep}");
    assert_eq!(
        sweep.matches("dead_letter_key").count(),
        day_keys.len(),
        "{sweep}"
    );
    assert_eq!(key_objects(&bucket_views(&rig).await), Vec::<String>::new());
    assert_eq!(rig.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        rig.count("SELECT count(*) FROM erasure_audit WHERE category = 'dead_letter_key'")
            .await,
        day_keys.len() as u64
    );
    let (_, audit) = cli(&["audit"], &config, later);
    assert!(!audit.contains("the dead-letter key of"), "{audit}");
}
