//! `meterline dlq replay`: records dead-lettered because their tenant was not
//! configured yet are replayed after the tenant is added and become readings; the
//! public tenant's redacted payloads keep their pseudonyms, a forged `redacted`
//! payload is refused, and replaying again stores nothing twice. A tenant not
//! configured has no epoch keys: its dead letters are pseudonymized under the
//! day's short-lived dead-letter key, so the replayed rows do not link to the
//! pseudonyms a direct ingestion gives (that linkage ends when the day's key is
//! destroyed; `it/epochs.rs` shows a configured tenant's replay linking).

use arrow::array::AsArray;
use meterline::query::dlq::{replay, Filter};
use meterline_operators::{Deployment, Reason, Tenant, TenantRegistry};
use serde_json::json;

use crate::common::{query, run_until_accounted, tenants, Harness};

fn reading(tenant: &str, meter: &str, hour: u32) -> Option<Vec<u8>> {
    Some(
        json!({
            "schema": "reading/v1", "tenant": tenant, "device_id": format!("dev-{meter}"),
            "meter_id": meter, "quantity": "electricity",
            "start": format!("2026-06-01T{hour:02}:00:00Z"), "resolution": "PT1H",
            "value": 0.75, "unit": "kWh", "quality": "measured",
            "version": "2026-06-02T06:00:00Z", "pii": {"name": "Kari"}
        })
        .to_string()
        .into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_adding_the_tenant_is_idempotent_and_keeps_pseudonyms() {
    let h = Harness::new(2);
    let meters: Vec<String> = (0..6)
        .map(|i| meterline::dev::generator::gsrn(7_000 + i))
        .collect();
    let mut messages = Vec::new();
    for m in &meters {
        for hour in 0..3 {
            messages.push((m.clone(), reading("new-utility", m, hour)));
        }
    }
    // A producer cannot claim its payload was redacted by meterline.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&reading("oslo-utility", &meters[0], 9).unwrap()).unwrap();
    forged["redacted"] = json!(true);
    messages.push(("forged".into(), Some(forged.to_string().into_bytes())));
    let produced = messages.len() as u64;
    h.produce(&messages).await;

    // 1. The tenant is unknown: everything is a dead letter.
    let metrics = run_until_accounted(h.settings("replay"), produced).await;
    assert_eq!(metrics.conservation().dead_lettered, produced);
    assert_eq!(
        h.count("SELECT count(*) FROM dead_letters WHERE reason = 'invalid_replay'")
            .await,
        1
    );

    // 2. The tenant is added (public); the dead letters are replayed.
    let mut settings = h.settings("replay");
    let mut all: Vec<Tenant> = tenants().iter().cloned().collect();
    all.push(Tenant {
        id: "new-utility".into(),
        deployment: Deployment::Public,
        timezone: chrono_tz::Europe::Oslo,
        rules: tenants().get(0).rules.clone(),
    });
    settings.tenants = TenantRegistry::new(all).unwrap();
    let filter = Filter {
        reason: Some(Reason::UnknownTenant),
        since: None,
    };
    let report = replay(&settings, &filter, false).await.expect("replay");
    assert_eq!(report.replayed, produced - 1);
    assert_eq!(report.not_replayable, 0);
    // Fresh readings of the same meters, ingested directly.
    let direct: Vec<(String, Option<Vec<u8>>)> = meters
        .iter()
        .map(|m| (m.clone(), reading("new-utility", m, 5)))
        .collect();
    h.produce(&direct).await;
    let metrics =
        run_until_accounted(settings.clone(), report.replayed + direct.len() as u64).await;
    let c = metrics.conservation();
    assert_eq!(c.written, report.replayed + direct.len() as u64, "{c:?}");
    assert_eq!(
        h.count("SELECT count(*) FROM readings WHERE flags LIKE '%replayed%'")
            .await,
        report.replayed
    );
    // One pseudonym per meter among the replayed rows (pseudonymized when
    // dead-lettered) and one among the direct rows, never the same: the
    // dead letters' day key is not the tenant's. No raw meter id is stored.
    let distinct = |filter: &'static str| {
        let lake = h.lake_config();
        async move {
            let rows = query(
                &lake,
                &format!(
                    "SELECT count(DISTINCT meter), count(DISTINCT device) FROM readings \
                     WHERE tenant = 'new-utility' {filter}"
                ),
            )
            .await;
            let col = |i: usize| {
                rows[0]
                    .column(i)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(0)
            };
            (col(0), col(1))
        }
    };
    let n = meters.len() as i64;
    assert_eq!(distinct("AND flags LIKE '%replayed%'").await, (n, n));
    assert_eq!(
        distinct("AND (flags IS NULL OR flags NOT LIKE '%replayed%')").await,
        (n, n)
    );
    assert_eq!(distinct("").await, (2 * n, 2 * n));
    assert_eq!(
        h.count("SELECT count(*) FROM readings WHERE meter LIKE '707057%'")
            .await,
        0
    );

    // 3. Replaying again stores nothing new: every record is a duplicate.
    let again = replay(&settings, &filter, false).await.expect("replay");
    assert_eq!(again, report);
    let metrics = run_until_accounted(settings, again.replayed).await;
    let c = metrics.conservation();
    assert_eq!(c.written, 0, "{c:?}");
    assert_eq!(c.dropped, again.replayed);
    assert_eq!(
        h.count("SELECT count(*) FROM readings WHERE tenant = 'new-utility'")
            .await,
        report.replayed + meters.len() as u64
    );
}
