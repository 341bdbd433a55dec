//! The privacy lifecycle's second pass on real infrastructure (tansu + S3): an
//! upgrade links only the meters it lists and only from when it was recorded, and
//! the account's end unlinks them; Elhub revocation stops a meter's data whatever
//! its interval and the sweep deletes what was stored (audited, bytes gone); an
//! erasure names a tenant and reaches the subject's meters without a `subject`
//! field, leaving a twin subject id of another tenant byte-identical; events from
//! the future are refused and clocks start when events are recorded; `meterline
//! audit` reports revocations past retention, a tenant with data that left the
//! configuration, static pseudonyms (a standing exception) and a consent ledger
//! edited by another Delta writer (exit 3).
//!
//! The phases run `meterline` at fixed instants before the test's "now" (N, the
//! hour the test clock is in): each run records what the previous ones could not
//! see, so the record times, and with them every expected count, are known.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, DurationRound, Utc};
use meterline::dev::generator::gsrn;
use meterline::dev::testkit::unique_name;
use serde_json::json;

use crate::rig::{assert_ledger, bucket_views, eventually_async, holding, serial, Rig, KEY_HEX};
use crate::traffic::{event, hourly, hours, rfc, send};
use crate::GRACE;

const TWIN: &str = "acct-twin-17";
const UPGRADER: &str = "pub-up-17";
const ELHUB_SUBJECT: &str = "acct-elhub-17";
const ACME: &str = "acme-industri";
const BERGEN: &str = "bergen-bedrift";
const PUBLIC: &str = "oslo-utility";
const ELHUB: &str = "elhub-import";

/// Stop a phase's `meterline run` with SIGTERM: it must exit cleanly.
fn stop(run: &mut meterline::dev::testkit::Process) {
    assert!(run
        .terminate(GRACE + Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

async fn count(rig: &Rig, sql: &str) -> i64 {
    rig.count(sql).await as i64
}

/// `meterline <args> --config <config>` at `now`.
fn meterline(args: &[&str], config: &std::path::Path, now: DateTime<Utc>) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .env("METERLINE_FAKE_NOW", rfc(now))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The rows of a query as text lines, sorted (to compare tables before and after).
async fn lines(rig: &Rig, sql: &str) -> Vec<String> {
    let batches: Vec<RecordBatch> = rig.query(sql).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, r).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}

/// The live data files of `readings` under one tenant's partitions.
async fn live_files(rig: &Rig, tenant: &str) -> BTreeSet<String> {
    let lake = meterline_sinks::Lake::new(&rig.lake()).unwrap();
    let t = meterline_sinks::open_existing(&lake, "readings")
        .await
        .unwrap()
        .expect("readings exists");
    t.get_file_uris()
        .unwrap()
        .filter(|u| u.contains(&format!("tenant={tenant}/")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_revocations_tenant_erasure_and_the_keyed_ledger_keep_their_promises() {
    let _serial = serial().await;
    let mut rig = Rig::new(1);
    let subjects_topic = unique_name("subjects");
    let erasure_topic = unique_name("erasure");
    let profiles_topic = unique_name("profiles");
    rig.broker.create_topic(&subjects_topic, 1);
    rig.broker.create_topic(&erasure_topic, 1);
    rig.broker.create_topic(&profiles_topic, 1);
    let base = rig.config("privacy17", None, "max_batch_rows = 1000");
    let text = std::fs::read_to_string(&base).unwrap()
        + &format!(
            r#"
[[tenants]]
id = "{BERGEN}"
deployment = "private"
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}

[[tenants]]
id = "{ELHUB}"
deployment = "private"
elhub_consent_required = true
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}

[privacy]
subject_events_topic = "{subjects_topic}"
erasure_topic = "{erasure_topic}"
erasure_deadline_secs = 600
elhub_revocation_retention_days = 1

[inputs]
profiles_topic = "{profiles_topic}"
"#
        );
    std::fs::write(&base, text).unwrap();

    let n = meterline::dev::testkit::clock()
        .now()
        .duration_trunc(hours(1))
        .unwrap();
    let twin_a = gsrn(17_001);
    let twin_b = gsrn(17_002);
    let shared = gsrn(17_003); // acme's meter, readings without a subject
    let upgraded = gsrn(17_004);
    let neighbour = gsrn(17_005);
    let revoked = gsrn(17_006);

    // Phase 1 (now = N-30h): subject events.
    let p1 = n - hours(30);
    let events = vec![
        event(
            "consent_granted",
            ACME,
            TWIN,
            p1 - hours(1),
            json!({"purpose": "name", "email": "twin-a@example.no", "name": "Twin Acme"}),
        ),
        event(
            "consent_granted",
            BERGEN,
            TWIN,
            p1 - hours(1),
            json!({"purpose": "name", "email": "twin-b@example.no", "name": "Twin Bergen"}),
        ),
        // The shared meter was the twin's from N-40h.
        event(
            "elhub_consent_granted",
            ACME,
            TWIN,
            n - hours(40),
            json!({"meters": [shared]}),
        ),
        // Backdated ten days: it links nothing before it was recorded.
        event(
            "upgraded_to_private",
            PUBLIC,
            UPGRADER,
            n - hours(240),
            json!({"meters": [upgraded], "email": "up@example.no"}),
        ),
        event(
            "elhub_consent_granted",
            ELHUB,
            ELHUB_SUBJECT,
            n - hours(72),
            json!({"meters": [revoked]}),
        ),
        // Three days ahead: refused. Ten minutes ahead (within the skew): its IP's
        // 90 days start when it was recorded.
        event(
            "consent_granted",
            ACME,
            "acct-future-17",
            p1 + hours(72),
            json!({"purpose": "name"}),
        ),
        event(
            "consent_granted",
            ACME,
            "acct-ip-17",
            p1 + chrono::Duration::minutes(10),
            json!({"purpose": "name", "email": "ip@example.no", "ip": "192.0.2.17"}),
        ),
    ];
    send(&rig, &subjects_topic, &events, None).await;
    // Meter profiles: the shared meter's (the twin's through its Elhub consent)
    // and a meter that was never a subject's.
    let loner = gsrn(17_007);
    let profile = |meter: &str, valid_from: &str| meterline::dev::generator::Message {
        key: meter.to_owned(),
        payload: json!({"schema": "meter-profile/v1", "tenant": ACME, "meter_id": meter,
            "valid_from": valid_from, "price_area": "NO1", "grid_company_gln": "7080000000012",
            "customer_group": "household", "tax_zone": "standard", "scheme": "stromstotte",
            "version": "2026-01-01T00:00:00Z"})
        .to_string()
        .into_bytes(),
        bad_reason: None,
    };
    send(
        &rig,
        &profiles_topic,
        &[
            profile(&shared, "2026-01-01"),
            profile(&shared, "2026-10-01"),
            profile(&loner, "2026-01-01"),
        ],
        None,
    )
    .await;
    let mut run = rig.spawn_with_env("p1", &base, &[("METERLINE_FAKE_NOW", &rfc(p1))]);
    eventually_async("phase 1's events", Duration::from_secs(120), || async {
        rig.try_count("SELECT count(*) FROM meter_profiles").await == Ok(3)
            && rig.try_count("SELECT count(*) FROM consent_ledger").await == Ok(6)
            && rig
                .try_count("SELECT count(*) FROM dead_letters WHERE reason = 'invalid_timestamp'")
                .await
                == Ok(1)
    })
    .await;
    stop(&mut run);
    let seen = rig.query("SELECT seen_at FROM access_log").await.unwrap();
    let seen = seen[0]
        .column(0)
        .as_primitive::<TimestampMicrosecondType>()
        .value(0);
    assert!(
        seen < (p1 + chrono::Duration::minutes(10)).timestamp_micros(),
        "access_log.seen_at is the record time, not the future occurred_at"
    );
    let upgrade_recorded = rig
        .query("SELECT recorded_at FROM consent_ledger WHERE kind = 'upgraded_to_private'")
        .await
        .unwrap();
    let upgrade_recorded = DateTime::from_timestamp_micros(
        upgrade_recorded[0]
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
    )
    .unwrap();
    assert!(
        upgrade_recorded >= p1 && upgrade_recorded < p1 + hours(1),
        "{upgrade_recorded}"
    );

    // Phase 2 (now = N-20h): readings.
    let p2 = n - hours(20);
    let mut readings = hourly(ACME, &twin_a, Some(TWIN), n - hours(48), 24, 0.75);
    readings.extend(hourly(BERGEN, &twin_b, Some(TWIN), n - hours(48), 24, 0.75));
    readings.extend(hourly(ACME, &shared, None, n - hours(48), 24, 0.75));
    readings.extend(hourly(
        PUBLIC,
        &upgraded,
        Some(UPGRADER),
        n - hours(48),
        28,
        0.75,
    ));
    readings.extend(hourly(
        PUBLIC,
        &neighbour,
        Some(UPGRADER),
        n - hours(48),
        28,
        0.75,
    ));
    readings.extend(hourly(ELHUB, &revoked, None, n - hours(48), 28, 0.75));
    rig.produce(&readings).await;
    let mut run = rig.spawn_with_env("p2", &base, &[("METERLINE_FAKE_NOW", &rfc(p2))]);
    rig.await_rows(156, Duration::from_secs(180)).await;
    stop(&mut run);
    assert_ledger(&run);
    // The upgrade: the listed meter raw and linked from the hour after it was
    // recorded (N-29h .. N-21h: 9 hours), pseudonymized before; the neighbour's
    // meter, which the upgrade does not list, never.
    let linked = |from: DateTime<Utc>| {
        format!(
            "SELECT count(*) FROM readings WHERE meter = '{upgraded}' AND subject = '{UPGRADER}' \
             AND interval_start >= TIMESTAMP '{}'",
            rfc(from)
        )
    };
    assert_eq!(count(&rig, &linked(n - hours(48))).await, 9);
    assert_eq!(count(&rig, &linked(upgrade_recorded)).await, 9);
    assert_eq!(
        count(&rig, &format!("SELECT count(*) FROM readings WHERE meter = '{neighbour}' OR (subject IS NOT NULL AND tenant = '{PUBLIC}' AND meter <> '{upgraded}')")).await,
        0
    );
    assert_eq!(
        count(
            &rig,
            &format!("SELECT count(*) FROM readings WHERE tenant = '{PUBLIC}' AND subject IS NULL")
        )
        .await,
        19 + 28
    );

    // Phase 3 (now = N-10h): the upgrader's account ends; the Elhub consent is
    // revoked (backdated to N-30h: it takes effect when recorded).
    let p3 = n - hours(10);
    send(
        &rig,
        &subjects_topic,
        &[
            event("account_terminated", PUBLIC, UPGRADER, p3, json!({})),
            event(
                "elhub_consent_revoked",
                ELHUB,
                ELHUB_SUBJECT,
                n - hours(30),
                json!({"meters": [revoked]}),
            ),
        ],
        None,
    )
    .await;
    let mut run = rig.spawn_with_env("p3", &base, &[("METERLINE_FAKE_NOW", &rfc(p3))]);
    eventually_async("phase 3's events", Duration::from_secs(120), || async {
        rig.try_count("SELECT count(*) FROM consent_ledger").await == Ok(8)
    })
    .await;
    stop(&mut run);

    // Phase 4 (now = N): late Elhub readings of earlier intervals (dropped), then
    // the upgrader's readings around the termination.
    let mut late = hourly(ELHUB, &revoked, None, n - hours(72), 24, 0.75);
    late.extend(hourly(ELHUB, &revoked, None, n - hours(20), 20, 0.75));
    late.extend(hourly(
        PUBLIC,
        &upgraded,
        Some(UPGRADER),
        n - hours(20),
        20,
        0.75,
    ));
    rig.produce(&late).await;
    let twins_b_before = lines(
        &rig,
        &format!("SELECT * FROM readings WHERE tenant = '{BERGEN}'"),
    )
    .await;
    let profile_b_before = lines(
        &rig,
        &format!("SELECT * FROM subjects WHERE tenant = '{BERGEN}'"),
    )
    .await;
    let files_b_before = live_files(&rig, BERGEN).await;
    assert_eq!(twins_b_before.len(), 24);
    assert_eq!(profile_b_before.len(), 1);
    let mut run = rig.spawn_with_env("p4", &base, &[("METERLINE_FAKE_NOW", &rfc(n))]);
    rig.await_rows(156 + 20, Duration::from_secs(180)).await;
    // Linked before the termination (N-20h .. N-11h), pseudonymized from it on.
    assert_eq!(count(&rig, &linked(n - hours(20))).await, 10);
    assert_eq!(
        count(&rig, &format!("SELECT count(*) FROM readings WHERE tenant = '{PUBLIC}' AND subject IS NULL AND interval_start >= TIMESTAMP '{}'", rfc(n - hours(10)))).await,
        10
    );
    assert_eq!(
        count(
            &rig,
            &format!("SELECT count(*) FROM readings WHERE meter = '{revoked}'")
        )
        .await,
        28,
        "no reading of the revoked meter stored after the revocation"
    );

    // Erasure of the twin at acme: its rows, and the shared meter's rows without a
    // subject from N-40h on; the twin at bergen untouched.
    send(&rig, &erasure_topic, &[], Some(&format!("{ACME}/{TWIN}"))).await;
    eventually_async("the erasure", Duration::from_secs(180), || async {
        rig.try_count("SELECT count(*) FROM erasure_audit WHERE kind = 'erasure'")
            .await
            == Ok(1)
    })
    .await;
    stop(&mut run);
    let ledger = assert_ledger(&run);
    assert_eq!(ledger.dropped, 44, "{ledger:?}");
    assert_eq!(
        count(
            &rig,
            &format!(
                "SELECT count(*) FROM readings WHERE tenant = '{ACME}' AND subject = '{TWIN}'"
            )
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &rig,
            &format!("SELECT count(*) FROM readings WHERE meter = '{shared}'")
        )
        .await,
        8
    );
    assert_eq!(
        count(&rig, &format!("SELECT count(*) FROM readings WHERE meter = '{shared}' AND interval_start >= TIMESTAMP '{}'", rfc(n - hours(40)))).await,
        0
    );
    assert_eq!(
        count(
            &rig,
            &format!(
                "SELECT count(*) FROM subjects WHERE tenant = '{ACME}' AND subject = '{TWIN}'"
            )
        )
        .await,
        0
    );
    // The shared meter's profiles went with the twin (the meter is still theirs:
    // every profile of it); the other meter's stayed.
    assert_eq!(
        lines(&rig, "SELECT meter FROM meter_profiles").await,
        vec![loner.clone()]
    );
    assert_eq!(
        lines(
            &rig,
            &format!("SELECT * FROM readings WHERE tenant = '{BERGEN}'")
        )
        .await,
        twins_b_before
    );
    assert_eq!(
        lines(
            &rig,
            &format!("SELECT * FROM subjects WHERE tenant = '{BERGEN}'")
        )
        .await,
        profile_b_before
    );
    assert_eq!(
        live_files(&rig, BERGEN).await,
        files_b_before,
        "bergen's files are the same objects"
    );
    assert_eq!(
        count(
            &rig,
            &format!(
                "SELECT count(*) FROM erasure_audit WHERE kind = 'erasure' AND tenant = '{ACME}'"
            )
        )
        .await,
        1
    );

    // Two days on, the revoked meter's readings are past their retention (1 day
    // + the sweep interval): the audit says so until a sweep deletes them.
    let later = n + hours(48);
    let (code, out) = meterline(&["audit"], &base, later);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("Elhub consent was revoked"), "{out}");
    let (code, out) = meterline(&["retention", "run"], &base, later);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        count(
            &rig,
            &format!("SELECT count(*) FROM readings WHERE meter = '{revoked}'")
        )
        .await,
        0
    );
    let audit = rig
        .query("SELECT tenant, rows_removed, subject_hash FROM erasure_audit WHERE category = 'elhub_consent'")
        .await
        .unwrap();
    let audit: Vec<_> = audit.iter().filter(|b| b.num_rows() > 0).collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].num_rows(), 1);
    assert_eq!(audit[0].column(0).as_string::<i32>().value(0), ELHUB);
    assert_eq!(audit[0].column(1).as_primitive::<Int64Type>().value(0), 28);
    assert!(audit[0].column(2).is_valid(0));
    let (code, out) = meterline(&["audit"], &base, later);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("every chain verified"), "{out}");
    assert!(
        out.contains("standing exception: tenants.oslo-utility: key_rotation = never"),
        "{out}"
    );
    // Static pseudonyms must be asked for.
    let text = std::fs::read_to_string(&base).unwrap();
    let variant = |name: &str, text: String| {
        let path = base.with_file_name(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let static_unasked = variant(
        "static.toml",
        text.replacen("allow_static_pseudonyms = true\n", "", 1),
    );
    let (code, out) = meterline(&["audit"], &static_unasked, later);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("allow_static_pseudonyms"), "{out}");
    // A tenant that leaves the configuration is not forgotten; listed as retired,
    // its data is kept under its retention.
    let bergen_block = format!("[[tenants]]\nid = \"{BERGEN}\"\ndeployment = \"private\"\n");
    assert!(text.contains(&bergen_block));
    let bergen_rest = "telemetry_retention_days = 36600\nvalidation = { max_age_days = 36500 }\n";
    let removed = variant(
        "removed.toml",
        text.replacen(&format!("{bergen_block}{bergen_rest}"), "", 1),
    );
    let (code, out) = meterline(&["audit"], &removed, later);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!("tenant {BERGEN} has data in the lake (readings")),
        "{out}"
    );
    let (code, out) = meterline(&["retention", "run"], &removed, later);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("error: tenant {BERGEN} has data in the lake")),
        "{out}"
    );
    let retired = variant(
        "retired.toml",
        text.replacen(&bergen_block, &format!("{bergen_block}retired = true\n"), 1),
    );
    let (code, out) = meterline(&["audit"], &retired, later);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("tenant {BERGEN} is retired")),
        "{out}"
    );
    let views = bucket_views(&rig).await;
    for gone in [
        revoked.as_str(),
        twin_a.as_str(),
        "twin-a@example.no",
        "Twin Acme",
    ] {
        assert_eq!(holding(&views, gone), Vec::<String>::new(), "{gone}");
    }
    assert!(
        !holding(&views, &twin_b).is_empty(),
        "bergen's twin is still stored"
    );

    // Another Delta writer edits one ledger entry: the audit finds that chain.
    let lake = meterline_sinks::Lake::new(&rig.lake()).unwrap();
    let table = meterline_sinks::open_existing(&lake, "consent_ledger")
        .await
        .unwrap()
        .expect("ledger");
    let (_, metrics) = table
        .update()
        .with_predicate("kind = 'account_terminated'")
        .with_update("purpose", "'edited'")
        .await
        .expect("an independent update of the ledger");
    assert_eq!(metrics.num_updated_rows, 1);
    let (code, out) = meterline(&["audit"], &base, later);
    assert_eq!(code, Some(3), "{out}");
    let broken: Vec<_> = out.lines().filter(|l| l.contains("chain")).collect();
    assert_eq!(broken.len(), 1, "{out}");
    assert!(
        broken[0].contains(PUBLIC) && broken[0].contains("seq 1"),
        "{out}"
    );
}
