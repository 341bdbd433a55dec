//! Crash during materialization: `meterline run` is SIGKILLed in the middle of an
//! aggregation round (some aggregate tables committed, others not), then restarted;
//! the aggregates end exact (equal to `readings_current`) with no duplicate rows.

use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use meterline::aggregate::{Materializer, FAILPOINT_ENV};
use meterline::config::AggregateSettings;
use meterline::dev::generator::tenants;
use meterline::metrics::Metrics;
use meterline_sinks::{Lake, SourceTable};

use crate::rig::{messages, serial, Rig};
use crate::GRACE;

async fn single(rig: &Rig, sql: &str) -> i64 {
    let batches = rig.query(sql).await.expect("query");
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_materialization_then_restart_is_exact() {
    let _serial = serial().await;
    let mut rig = Rig::new(2);
    rig.produce(&messages(20_000, 0, 21)).await;
    let config = rig.config(
        "aggregate-crash",
        None,
        "max_batch_rows = 5000\n\n[aggregate]\ninterval_secs = 1\nmax_days_per_step = 3",
    );
    // The first process stalls its aggregation round after 8 commits (readings
    // keep flowing), and is killed there.
    let mut first = rig.spawn_with_env("first", &config, &[(FAILPOINT_ENV, "8")]);
    first.wait_line(0, Duration::from_secs(240), |l| {
        l.contains("failpoint: aggregate round stalled")
    });
    first.kill();
    tokio::time::sleep_until(crate::rig::restart_after_kill()).await;

    let mut second = rig.spawn("second", &config);
    rig.await_rows(rig.produced.good, Duration::from_secs(240))
        .await;
    // Poll the lake until every aggregate table reflects the last readings version.
    let lake = Lake::new(&rig.lake()).unwrap();
    let mut readings = SourceTable::new(&lake, "readings", &["tenant", "local_date"]);
    let mut view = Materializer::open(
        &lake,
        tenants(),
        AggregateSettings::default(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let latest = readings.refresh().await.unwrap().map(|v| v as i64);
        let folded = view.progress().await.unwrap();
        if latest.is_some() && folded == latest {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "aggregates did not catch up: readings {latest:?}, aggregates {folded:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = second.terminate(GRACE + Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop");

    // No duplicate rows in any per-meter table.
    for (table, time) in [
        ("consumption_hourly", "hour_start"),
        ("consumption_daily", "local_date"),
        ("consumption_monthly", "month"),
    ] {
        let duplicated = single(
            &rig,
            &format!(
                "SELECT count(*) FROM (SELECT tenant, meter, quantity, direction, {time} \
                 FROM {table} GROUP BY tenant, meter, quantity, direction, {time} HAVING count(*) > 1) d"
            ),
        )
        .await;
        assert_eq!(duplicated, 0, "{table} has duplicate rows");
    }
    // Every day equals readings_current, and every reading is in some day.
    assert_eq!(
        rig.daily_differences().await,
        0,
        "consumption_daily differs from readings_current"
    );
    let totals = rig
        .query(
            "SELECT (SELECT sum(value) FROM consumption_hourly) = (SELECT sum(value) FROM readings_current) AS hours, \
             (SELECT sum(value) FROM consumption_monthly) = (SELECT sum(value) FROM readings_current) AS months",
        )
        .await
        .unwrap();
    assert!(totals[0].column(0).as_boolean().value(0), "hourly total");
    assert!(totals[0].column(1).as_boolean().value(0), "monthly total");
}
