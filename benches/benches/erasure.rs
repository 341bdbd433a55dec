//! Erasure of one subject in a lake of a million readings.
//!
//! 1. A year of readings (`METERS` meters, about 1.02 million readings, public and
//!    private tenants) goes through the real operator chain into `readings`; the
//!    subject to erase has readings on three days only.
//! 2. Baseline: one SQL scan of `readings` for the subject (what any reader pays to
//!    find its rows).
//! 3. The erasure's removal (read the `subject` column of every file, rewrite the
//!    files holding a match) and the purge of the old files, reported as a ratio to
//!    the baseline, with how many files it rewrote out of how many the table has.
//!    The run fails if it rewrote a file without the subject, or left a row.
//!
//! Run: `cargo bench --workspace --bench erasure` (a few minutes). Under
//! `cargo test` the same steps and checks run on a month of 4 meters.

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

use std::process::ExitCode;
use std::time::Instant;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use meterline::dev::generator::{GeneratorSpec, PRIVATE_TENANT};
use meterline_sinks::{purge, remove_rows, LakeConfig};

const SUBJECT: &str = "acct-bench-erase-1";

fn is_subject(batch: &RecordBatch) -> Result<BooleanArray, arrow::error::ArrowError> {
    let c = batch.column(0).as_string::<i32>();
    Ok((0..c.len())
        .map(|i| Some(c.is_valid(i) && c.value(i) == SUBJECT))
        .collect())
}

async fn count(lake: &LakeConfig, sql: &str) -> i64 {
    let b = meterline::query::sql::query(lake, sql)
        .await
        .expect("query");
    b[0].column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0)
}

mod support;

use support::{date, Scale};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut bench = support::BenchLake::new().await;
        let (config, lake) = (bench.config.clone(), bench.lake.clone());
        // The subject's days (2026-04-10 .. 12) lie in both ranges.
        let scale = Scale::pick(
            Scale {
                meters: 66,
                first_day: date(2025, 11, 1),
                days: 365,
                measured: true,
            },
            Scale {
                meters: 4,
                first_day: date(2026, 4, 1),
                days: 30,
                measured: false,
            },
        );
        let spec = GeneratorSpec {
            meters: scale.meters,
            first_day: scale.first_day,
            days: scale.days,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: 3,
        };
        let mut payloads: Vec<Vec<u8>> = spec.generate().into_iter().map(|m| m.payload).collect();
        // The subject: a private meter with readings on three days in spring,
        // produced among the other meters' readings of those days (so their files
        // are shared and must be rewritten, not dropped).
        let meter = meterline::dev::generator::gsrn(9_999_001);
        let at = payloads
            .iter()
            .position(|p| String::from_utf8_lossy(p).contains("2026-04-12T"))
            .unwrap_or(payloads.len());
        let mut subject_payloads = Vec::new();
        for day in 0..3 {
            for hour in 0..24 {
                subject_payloads.push(
                    serde_json::json!({
                        "schema": "reading/v1", "tenant": PRIVATE_TENANT,
                        "device_id": "dev-bench-erase", "meter_id": meter,
                        "quantity": "electricity",
                        "start": format!("2026-04-{:02}T{hour:02}:00:00Z", 10 + day),
                        "resolution": "PT1H", "value": 0.5, "unit": "kWh",
                        "quality": "measured", "subject": SUBJECT,
                    })
                    .to_string()
                    .into_bytes(),
                );
            }
        }
        payloads.splice(at..at, subject_payloads);
        let started = Instant::now();
        bench.append(&payloads, 0, 100_000).await;
        println!(
            "loaded {} readings of {} meters in {:.1}s",
            payloads.len(),
            scale.meters + 1,
            started.elapsed().as_secs_f64()
        );

        let scan = Instant::now();
        let held = count(
            &config,
            &format!("SELECT count(*) FROM readings WHERE subject = '{SUBJECT}'"),
        )
        .await;
        let baseline = scan.elapsed().as_secs_f64();
        assert_eq!(held, 72);

        let mut table = meterline_sinks::open_existing(&lake, "readings")
            .await
            .expect("open")
            .expect("exists");
        let files_total = table
            .snapshot()
            .expect("snapshot")
            .log_data()
            .num_files();
        let erase = Instant::now();
        let schema = meterline_operators::schema::READINGS.clone();
        let removal = remove_rows(
            &mut table,
            "readings",
            &schema,
            &["subject"],
            &|_| true,
            &is_subject,
            "erasure",
        )
        .await
        .expect("remove");
        let purged = purge(&mut table, "readings").await.expect("purge");
        let took = erase.elapsed().as_secs_f64();
        let left = count(
            &config,
            &format!("SELECT count(*) FROM readings WHERE subject = '{SUBJECT}'"),
        )
        .await;
        println!(
            "erasure: {} rows removed; files scanned {}, rewritten {}, dropped {}, of {files_total}; \
             {purged} old files deleted from storage",
            removal.rows_removed, removal.files_scanned, removal.files_rewritten, removal.files_removed
        );
        println!(
            "erasure {:.2}s vs one SQL scan for the subject {:.2}s: ratio {:.2}",
            took,
            baseline,
            took / baseline.max(1e-9)
        );
        // The subject's three local days are three partitions of the private
        // tenant: at most one file each per commit that wrote them.
        let ok = left == 0
            && removal.rows_removed == 72
            && removal.files_rewritten + removal.files_removed <= 6
            && purged == removal.files_rewritten + removal.files_removed;
        if ok {
            ExitCode::SUCCESS
        } else {
            eprintln!("FAILED: erasure touched more than the files holding the subject, or left rows");
            ExitCode::FAILURE
        }
    })
}
