//! Pseudonym key epochs: a public tenant's readings are pseudonymized under the key
//! of their local month; a month that closed (its end plus the grace period has
//! passed) takes no more readings; the retention sweep destroys closed epochs'
//! keys, records each destruction, and `meterline audit` reports a key kept too
//! long. A dead letter of the tenant carries the pseudonyms of its reading's
//! epoch, so replaying it after a fix links it to the meter's other readings;
//! the day keys of dead letters are destroyed once the dead letters have left.
//! Dates are relative to the tests' clock (`METERLINE_FAKE_NOW` moves it):
//! epochs are about the calendar, and the expected keys are worked out below from
//! the calendar rule, not by `Epoch::open`.

use std::collections::BTreeSet;

use arrow::array::AsArray;
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use meterline::config::LifecycleSettings;
use meterline::metrics::Metrics;
use meterline::privacy::keys::KeyStore;
use meterline::privacy::lifecycle::Lifecycle;
use meterline_operators::epoch::{Epoch, Rotation};
use meterline_operators::{Deployment, MasterKey, Rules, Tenant, TenantRegistry};
use serde_json::json;

use crate::common::{count, query, run_until_accounted, Harness, KEY_HEX};

const OSLO: chrono_tz::Tz = chrono_tz::Europe::Oslo;
const GRACE: u32 = 40;

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap()
}

/// A PT15M reading at local `hour:minute` of `local`.
fn reading(meter: &str, local: NaiveDate, hour: u32, minute: u32) -> (String, Option<Vec<u8>>) {
    reading_of(meter, local, (hour, minute), 0.7)
}

fn reading_of(
    meter: &str,
    local: NaiveDate,
    (hour, minute): (u32, u32),
    kwh: f64,
) -> (String, Option<Vec<u8>>) {
    let start = OSLO
        .from_local_datetime(&local.and_hms_opt(hour, minute, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc);
    let v = json!({
        "schema": "reading/v1", "tenant": "oslo-utility", "device_id": format!("dev-{meter}"),
        "meter_id": meter, "quantity": "electricity", "start": start.to_rfc3339(),
        "resolution": "PT15M", "value": kwh, "unit": "kWh", "quality": "measured", "area": "NO1",
    });
    (meter.to_owned(), Some(v.to_string().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonyms_change_per_epoch_closed_epochs_take_nothing_and_keys_are_destroyed() {
    let h = Harness::new(1);
    let tenants = TenantRegistry::new([Tenant {
        id: "oslo-utility".into(),
        deployment: Deployment::Public,
        timezone: OSLO,
        rules: Rules {
            key_rotation: Rotation::Monthly,
            key_grace_days: GRACE,
            ..Rules::default()
        },
    }])
    .unwrap();
    let mut settings = h.settings("epochs");
    settings.tenants = tenants.clone();
    let clock = meterline::dev::testkit::clock();
    let today = clock.now().with_timezone(&OSLO).date_naive();
    let this_month = first_of_month(today);
    let last_month = first_of_month(this_month - Duration::days(1));
    let closed_month =
        first_of_month(first_of_month(last_month - Duration::days(1)) - Duration::days(1));
    let meter = meterline::dev::generator::gsrn(6001);
    // This month (today's first quarter-hour: over by 00:30, the earliest moment
    // the date-dependent tests run at), the last day of last month (open: grace 40
    // days), and three months back (closed).
    // And a reading of this month beyond the tenant's physical maximum (25 kWh
    // per hour): a dead letter.
    let messages = vec![
        reading(&meter, today, 0, 0),
        reading(&meter, this_month - Duration::days(1), 12, 0),
        reading(&meter, closed_month + Duration::days(3), 12, 0),
        reading_of(&meter, today, (0, 15), 40.0),
    ];
    h.produce(&messages).await;
    let metrics = run_until_accounted(settings.clone(), messages.len() as u64).await;
    assert!(metrics.conservation().holds());
    assert_eq!(metrics.conservation().dead_lettered, 1);
    assert_eq!(
        metrics
            .records_dropped
            .with_label_values(&["epoch_closed"])
            .get(),
        1
    );
    let lake = h.lake_config();
    assert_eq!(count(&lake, "SELECT count(*) FROM readings").await, 2);
    // Two epochs, two pseudonyms for one meter; none is the raw id.
    let batches = query(&lake, "SELECT DISTINCT meter FROM readings").await;
    let pseudonyms: BTreeSet<String> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(pseudonyms.len(), 2, "{pseudonyms:?}");
    assert!(pseudonyms
        .iter()
        .all(|p| p.len() == 32 && !p.contains(&meter)));

    // The dead letter names the meter as this month's reading does.
    let strings = |sql: &'static str| {
        let lake = lake.clone();
        async move {
            query(&lake, sql)
                .await
                .iter()
                .flat_map(|b| {
                    let c = b.column(0).as_string::<i32>();
                    (0..b.num_rows())
                        .map(|i| c.value(i).to_owned())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<String>>()
        }
    };
    let this_months = strings("SELECT meter FROM readings ORDER BY local_date DESC LIMIT 1").await;
    let dead = strings("SELECT payload FROM dead_letters WHERE reason = 'value_too_high'").await;
    let payload: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(payload["meter_id"].as_str(), Some(this_months[0].as_str()));

    // The maximum was wrong: raised, and the dead letter replayed. It is stored
    // under the meter's pseudonym of this month, and no new one appears.
    let mut fixed: Vec<Tenant> = tenants.iter().cloned().collect();
    fixed[0].rules.max_kwh_per_hour = 1_000_000;
    settings.tenants = TenantRegistry::new(fixed).unwrap();
    let filter = meterline::query::dlq::Filter {
        reason: Some(meterline_operators::Reason::ValueTooHigh),
        since: None,
    };
    let replayed = meterline::query::dlq::replay(&settings, &filter, false)
        .await
        .unwrap();
    assert_eq!(replayed.replayed, 1);
    let metrics = run_until_accounted(settings.clone(), 1).await;
    assert_eq!(metrics.conservation().written, 1);
    assert_eq!(
        strings("SELECT DISTINCT meter FROM readings WHERE flags LIKE '%replayed%'").await,
        this_months
    );
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT meter) FROM readings").await,
        2
    );

    // The key store holds the open epochs: from last month (or the one before,
    // early in a month) to next month.
    let lake_handle = meterline_sinks::Lake::new(&lake).unwrap();
    let master = std::sync::Arc::new(MasterKey::from_hex(KEY_HEX).unwrap());
    let store = KeyStore::open(&lake_handle, master.clone()).await.unwrap();
    let month = |d: NaiveDate| Epoch::Month(d.year(), d.month());
    let expected = meterline::dev::testkit::expected_open_months(today, GRACE);
    assert!(expected.contains(&month(last_month)) && expected.len() >= 3);
    assert_eq!(
        store
            .list()
            .await
            .unwrap()
            .get("oslo-utility")
            .cloned()
            .unwrap_or_default(),
        expected,
        "today {today}"
    );
    let keys = expected.len();
    // Key files hold no key in the clear: nothing but the wrapped form.
    let key_dir = h.lake.path().join("_keys/oslo-utility");
    let text = std::fs::read_to_string(key_dir.join(format!("{}.key", month(this_month)))).unwrap();
    assert!(text.starts_with("v1:"));

    // The dead letters' day keys (today's and tomorrow's, UTC) are in the store.
    let day_keys = store.dead_letter_key_days().await.unwrap();
    let utc_today = clock.now().date_naive();
    assert!(day_keys.contains(&utc_today), "{day_keys:?}");
    assert!(
        day_keys.contains(&(utc_today + Duration::days(1))),
        "{day_keys:?}"
    );

    // 120 days on every epoch is closed and every dead letter past its 14 days:
    // the audit says so, the sweep destroys the keys and records each, and the
    // audit is clean again.
    let later = clock.now() + Duration::days(120);
    settings.lifecycle = LifecycleSettings {
        clock,
        ..LifecycleSettings::default()
    };
    let before = meterline::query::audit::report(&settings, None, later)
        .await
        .unwrap();
    assert_eq!(
        before
            .violations
            .iter()
            .filter(|v| v.contains("pseudonym key"))
            .count(),
        keys,
        "{:?}",
        before.violations
    );
    assert_eq!(
        before
            .violations
            .iter()
            .filter(|v| v.contains("dead-letter key"))
            .count(),
        day_keys.len(),
        "{:?}",
        before.violations
    );
    let mut lifecycle = Lifecycle::open(
        &lake_handle,
        tenants,
        Some(master),
        settings.lifecycle.clone(),
        settings.aggregate.clone(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let entries = lifecycle.sweep(later).await.unwrap();
    let destroyed = |category: &str| {
        entries
            .iter()
            .filter(|e| e.kind == "key_destroyed" && e.category == category)
            .count()
    };
    assert_eq!(destroyed("pseudonym_key"), keys);
    assert_eq!(destroyed("dead_letter_key"), day_keys.len());
    assert_eq!(store.dead_letter_key_days().await.unwrap(), Vec::new());
    assert_eq!(count(&lake, "SELECT count(*) FROM dead_letters").await, 0);
    assert!(store
        .list()
        .await
        .unwrap()
        .get("oslo-utility")
        .is_none_or(Vec::is_empty));
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM erasure_audit WHERE kind = 'key_destroyed'"
        )
        .await,
        (keys + day_keys.len()) as u64
    );
    let after = meterline::query::audit::report(&settings, None, later)
        .await
        .unwrap();
    assert!(after.clean(), "{:?}", after.violations);
    assert_eq!(after.keys_destroyed as usize, keys + day_keys.len());
}
