//! Consent end to end: subject events through the running pipeline become a
//! hash-chained ledger and profiles holding only consented fields; a withdrawal
//! clears a field from then on (and from storage); an upgrade from a public tenant
//! keeps profile data only from the upgrade on; raw IPs live only in `access_log`,
//! which the retention sweep empties after 90 days; an erasure removes the
//! profile and the access log but leaves the ledger (keyed hashes). Upgrades bound
//! to meters, Elhub revocation, tenant-scoped erasure and the keyed chain run
//! against a real broker and S3 in `tests/faults/privacy.rs`.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use meterline::config::LifecycleSettings;
use meterline::dev::testkit::clock;
use meterline::metrics::Metrics;
use meterline::privacy::geo::CidrTable;
use meterline::privacy::lifecycle::Lifecycle;
use meterline::privacy::subjects::{ledger_entries, verify_chain, SCHEMA};
use meterline::privacy::tables::{subject_hash, ChainKey};
use meterline_operators::MasterKey;
use serde_json::json;

use crate::common::start;
use crate::common::{contains, count, query, stored_views, wait_for, Harness, KEY_HEX};

const PRIVATE_SUBJECT: &str = "acct-consent-5e1";
const PUBLIC_SUBJECT: &str = "pub-consent-77c";
const NAME: &str = "Kari Samtykke Nordmann";
const PHONE: &str = "+47 41 00 77 31";
const ADDRESS: &str = "Samtykkegata 17, 0150 Oslo";
const IP: &str = "192.0.2.77";
const PUBLIC_NAME: &str = "Ola Offentlig Before-Upgrade";
const PUBLIC_PHONE: &str = "+47 92 11 22 33";

fn ev(kind: &str, tenant: &str, subject: &str, at: &str, extra: serde_json::Value) -> Vec<u8> {
    let mut v = json!({
        "schema": SCHEMA, "kind": kind, "tenant": tenant, "subject": subject,
        "occurred_at": at, "policy_version": "2026-11", "source": "app",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string().into_bytes()
}

/// Files under the lake holding `needle` (bytes, or Parquet values).
fn files_holding(h: &Harness, needle: &str) -> Vec<String> {
    let mut out: Vec<String> = stored_views(h.lake.path())
        .into_iter()
        .filter(|(_, bytes)| contains(bytes, needle))
        .map(|(p, _)| p.display().to_string())
        .collect();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_hold_only_consented_fields_from_the_moment_of_consent() {
    let h = Harness::new(1);
    let topic = format!("subjects-{}", rand::random::<u32>());
    let erasure = format!("erasure-{}", rand::random::<u32>());
    h.create_topic(&topic, 1);
    h.create_topic(&erasure, 1);
    let mut settings = h.settings("consent");
    settings.lifecycle = LifecycleSettings {
        subject_events_topic: topic.clone(),
        subject_group: "consent.subjects".to_owned(),
        erasure_topic: erasure.clone(),
        erasure_group: "consent.erasure".to_owned(),
        geo: Arc::new(CidrTable::parse("192.0.2.0/24,Oslo,NO\n").unwrap()),
        ..settings.lifecycle.clone()
    };
    let running = start(settings.clone());
    let metrics = running.metrics.clone();
    let private = "acme-industri";
    let public = "oslo-utility";
    let key_p = PRIVATE_SUBJECT.to_owned();
    let key_q = PUBLIC_SUBJECT.to_owned();
    let events = vec![
        // Name consented; phone and address offered without consent.
        (
            key_p.clone(),
            Some(ev(
                "consent_granted",
                private,
                PRIVATE_SUBJECT,
                "2026-11-01T10:00:00Z",
                json!({"purpose": "name", "email": "kari@example.no", "name": NAME, "phone": PHONE,
                   "address": ADDRESS, "ip": IP}),
            )),
        ),
        // Phone consented, but this event carries no phone: none is stored.
        (
            key_p.clone(),
            Some(ev(
                "consent_granted",
                private,
                PRIVATE_SUBJECT,
                "2026-11-02T10:00:00Z",
                json!({"purpose": "phone"}),
            )),
        ),
        // The public subject's profile data before an upgrade: never stored.
        (
            key_q.clone(),
            Some(ev(
                "consent_granted",
                public,
                PUBLIC_SUBJECT,
                "2026-11-01T10:00:00Z",
                json!({"purpose": "name", "email": "ola@example.no", "name": PUBLIC_NAME,
                   "phone": PUBLIC_PHONE, "ip": "192.0.2.99"}),
            )),
        ),
        (
            key_q.clone(),
            Some(ev(
                "upgraded_to_private",
                public,
                PUBLIC_SUBJECT,
                "2026-11-03T10:00:00Z",
                json!({"email": "ola@example.no", "meters": ["dev-pub-consent-1"]}),
            )),
        ),
        (
            key_q.clone(),
            Some(ev(
                "consent_granted",
                public,
                PUBLIC_SUBJECT,
                "2026-11-04T10:00:00Z",
                json!({"purpose": "phone", "phone": "+47 92 00 00 01"}),
            )),
        ),
        // Not valid: a dead letter without the payload.
        (
            key_p.clone(),
            Some(ev(
                "bogus",
                private,
                PRIVATE_SUBJECT,
                "2026-11-05T10:00:00Z",
                json!({"name": NAME}),
            )),
        ),
    ];
    h.produce_to(&topic, &events, None).await;
    let m = metrics.clone();
    wait_for("the events are handled", Duration::from_secs(60), || {
        let done = m.subject_events.with_label_values(&["recorded"]).get()
            + m.subject_events.with_label_values(&["dead_lettered"]).get();
        async move { done == 6 }
    })
    .await;
    let lake = h.lake_config();
    let profile = |subject: &'static str| {
        let lake = lake.clone();
        async move {
            let b = query(
                &lake,
                &format!("SELECT email, name, phone, address, city, country, consents, upgraded_at FROM subjects WHERE subject = '{subject}'"),
            )
            .await;
            assert_eq!(
                b.iter().map(|b| b.num_rows()).sum::<usize>(),
                1,
                "one profile row"
            );
            let b = b.into_iter().find(|b| b.num_rows() == 1).unwrap();
            (0..7)
                .map(|i| {
                    let c = b.column(i).as_string::<i32>();
                    c.is_valid(0).then(|| c.value(0).to_owned())
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        profile(PRIVATE_SUBJECT).await,
        vec![
            Some("kari@example.no".to_owned()),
            Some(NAME.to_owned()),
            None,
            None,
            Some("Oslo".to_owned()),
            Some("NO".to_owned()),
            Some("name,phone".to_owned()),
        ]
    );
    assert_eq!(
        profile(PUBLIC_SUBJECT).await,
        vec![
            Some("ola@example.no".to_owned()),
            None,
            Some("+47 92 00 00 01".to_owned()),
            None,
            None,
            None,
            Some("name,phone".to_owned()),
        ]
    );
    // Never stored: the unconsented phone and address, the public subject's data
    // from before the upgrade. The raw IP only in access_log.
    for needle in [PHONE, ADDRESS, PUBLIC_NAME, PUBLIC_PHONE, "192.0.2.99"] {
        assert_eq!(files_holding(&h, needle), Vec::<String>::new(), "{needle}");
    }
    let ip_files = files_holding(&h, IP);
    assert!(!ip_files.is_empty());
    assert!(
        ip_files.iter().all(|f| f.contains("/access_log/")),
        "{ip_files:?}"
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM dead_letters WHERE reason = 'invalid_value' AND payload IS NULL"
        )
        .await,
        1
    );

    // Withdrawal: the name is gone from the table and from storage, from then on.
    h.produce_to(
        &topic,
        &[(
            key_p.clone(),
            Some(ev(
                "consent_withdrawn",
                private,
                PRIVATE_SUBJECT,
                "2026-11-06T10:00:00Z",
                json!({"purpose": "name", "name": NAME}),
            )),
        )],
        None,
    )
    .await;
    let m = metrics.clone();
    wait_for(
        "the withdrawal is recorded",
        Duration::from_secs(60),
        || {
            let n = m.subject_events.with_label_values(&["recorded"]).get();
            async move { n == 6 }
        },
    )
    .await;
    assert_eq!(profile(PRIVATE_SUBJECT).await[1], None);
    assert_eq!(profile(PRIVATE_SUBJECT).await[6].as_deref(), Some("phone"));
    assert_eq!(files_holding(&h, NAME), Vec::<String>::new());

    // The ledger: every event of the subject, chained, the subject only hashed.
    let key = MasterKey::from_hex(KEY_HEX).unwrap();
    let hash = subject_hash(&key, PRIVATE_SUBJECT);
    let batches = query(
        &lake,
        &format!("SELECT * FROM consent_ledger WHERE subject_hash = '{hash}' ORDER BY seq"),
    )
    .await;
    let entries = ledger_entries(&batches);
    assert_eq!(entries.len(), 3);
    assert_eq!(verify_chain(&ChainKey::new(&key), &entries), Ok(()));
    assert_eq!(
        entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["consent_granted", "consent_granted", "consent_withdrawn"]
    );
    assert!(files_holding(&h, PRIVATE_SUBJECT)
        .iter()
        .all(|f| !f.contains("/consent_ledger/")));

    // Erasure: profile and access log gone, the ledger stays (hashes only).
    h.produce_to(
        &erasure,
        &[(format!("acme-industri/{PRIVATE_SUBJECT}"), None)],
        None,
    )
    .await;
    let m = metrics.clone();
    wait_for("the erasure", Duration::from_secs(60), || {
        let n = m.erasures.with_label_values(&["completed"]).get();
        async move { n == 1 }
    })
    .await;
    running.stop().await;
    assert_eq!(files_holding(&h, PRIVATE_SUBJECT), Vec::<String>::new());
    assert_eq!(files_holding(&h, IP), Vec::<String>::new());
    assert_eq!(
        count(
            &lake,
            &format!("SELECT count(*) FROM consent_ledger WHERE subject_hash = '{hash}'")
        )
        .await,
        3
    );

    // The audit reports the ledger; 91 days on, the sweep removes the dead letter.
    let lake_handle = meterline_sinks::Lake::new(&lake).unwrap();
    let mut lifecycle = Lifecycle::open(
        &lake_handle,
        settings.tenants.clone(),
        settings.key.clone(),
        settings.lifecycle.clone(),
        settings.aggregate.clone(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let report = meterline::query::audit::report(
        &settings,
        None,
        clock().now() + chrono::Duration::days(91),
    )
    .await
    .unwrap();
    assert!(report.holdings.iter().any(|h| h.table == "consent_ledger"));
    let entries = lifecycle
        .sweep(clock().now() + chrono::Duration::days(91))
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.category == "dead_letters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_ips_leave_the_access_log_after_90_days_and_ended_accounts_after_30() {
    let h = Harness::new(1);
    let topic = format!("subjects-{}", rand::random::<u32>());
    h.create_topic(&topic, 1);
    let mut settings = h.settings("access");
    settings.lifecycle = LifecycleSettings {
        subject_events_topic: topic.clone(),
        subject_group: "access.subjects".to_owned(),
        ..settings.lifecycle.clone()
    };
    let seen = clock().now() - chrono::Duration::days(10);
    let mut events: Vec<_> = (0..3)
        .map(|i| {
            (
                format!("acct-ip-{i}"),
                Some(ev(
                    "consent_granted",
                    "acme-industri",
                    &format!("acct-ip-{i}"),
                    &seen.to_rfc3339(),
                    json!({"purpose": "name", "email": format!("{i}@example.no"), "ip": format!("198.51.100.{i}")}),
                )),
            )
        })
        .collect();
    // One account ends today: its data goes 30 days on.
    events.push((
        "acct-ip-0".to_owned(),
        Some(ev(
            "account_terminated",
            "acme-industri",
            "acct-ip-0",
            &clock().now().to_rfc3339(),
            json!({}),
        )),
    ));
    h.produce_to(&topic, &events, None).await;
    let running = start(settings.clone());
    let metrics = running.metrics.clone();
    let m = metrics.clone();
    wait_for("the events are recorded", Duration::from_secs(60), || {
        let n = m.subject_events.with_label_values(&["recorded"]).get();
        async move { n == 4 }
    })
    .await;
    running.stop().await;
    let lake = h.lake_config();
    assert_eq!(count(&lake, "SELECT count(*) FROM access_log").await, 3);
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM subjects WHERE terminated_at IS NOT NULL"
        )
        .await,
        1
    );
    let lake_handle = meterline_sinks::Lake::new(&lake).unwrap();
    let mut lifecycle = Lifecycle::open(
        &lake_handle,
        settings.tenants.clone(),
        settings.key.clone(),
        settings.lifecycle.clone(),
        settings.aggregate.clone(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let at = |days: i64| clock().now() + chrono::Duration::days(days);
    // The ended account: kept 29 days on, erased (profile, access log) 31 days on.
    assert!(lifecycle
        .sweep(at(29))
        .await
        .unwrap()
        .iter()
        .all(|e| e.category != "account"));
    assert_eq!(count(&lake, "SELECT count(*) FROM subjects").await, 3);
    let late_account = meterline::query::audit::report(&settings, None, at(32))
        .await
        .unwrap();
    assert!(
        late_account
            .violations
            .iter()
            .any(|v| v.contains("subjects holds data past its retention")),
        "{:?}",
        late_account.violations
    );
    let entries = lifecycle.sweep(at(31)).await.unwrap();
    let account = entries
        .iter()
        .find(|e| e.category == "account")
        .expect("recorded");
    assert_eq!(account.kind, "retention");
    assert_eq!(account.tenant.as_deref(), Some("acme-industri"));
    assert_eq!(count(&lake, "SELECT count(*) FROM subjects").await, 2);
    assert_eq!(count(&lake, "SELECT count(*) FROM access_log").await, 2);
    assert_eq!(files_holding(&h, "acct-ip-0"), Vec::<String>::new());
    // The access log: 79 days on (89 after they were seen) kept, 81 days on (91) gone.
    assert!(meterline::query::audit::report(&settings, None, at(79))
        .await
        .unwrap()
        .clean());
    assert!(lifecycle
        .sweep(at(79))
        .await
        .unwrap()
        .iter()
        .all(|e| e.category != "access_log"));
    assert_eq!(count(&lake, "SELECT count(*) FROM access_log").await, 2);
    let late = meterline::query::audit::report(&settings, None, at(82))
        .await
        .unwrap();
    assert!(
        late.violations.iter().any(|v| v.contains("access_log")),
        "{:?}",
        late.violations
    );
    let entries = lifecycle.sweep(at(81)).await.unwrap();
    let access = entries
        .iter()
        .find(|e| e.category == "access_log")
        .expect("recorded");
    assert_eq!(access.rows_removed, 2);
    assert_eq!(count(&lake, "SELECT count(*) FROM access_log").await, 0);
    for i in 0..3 {
        assert_eq!(
            files_holding(&h, &format!("198.51.100.{i}")),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM erasure_audit WHERE category = 'access_log'"
        )
        .await,
        1
    );
}
