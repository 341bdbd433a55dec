//! Materialization of the aggregate tables on a local lake.
//!
//! 1. A year of hourly readings (`METERS` meters, 2025-11-01 .. 2026-10-31, public and
//!    private tenants) goes through the real operator chain into `readings`.
//! 2. The first materialization round folds all of it: reported as readings folded
//!    per second (the baseline of this bench).
//! 3. A late batch arrives: a correction of every meter's readings on one day. The
//!    next round recomputes only that day and its month; its time is reported as a
//!    ratio to the full round (the cost grows with the changed data, not with the
//!    year in the tables).
//!
//! Run: `cargo bench --workspace --bench aggregate` (a minute or two). Under
//! `cargo test` the same steps and checks run on a month of 4 meters.

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use meterline::aggregate::Materializer;
use meterline::config::AggregateSettings;
use meterline::dev::generator::{tenants, GeneratorSpec};
use meterline::metrics::Metrics;

mod support;

use support::{date, Scale};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut bench = support::BenchLake::new().await;
        let lake = bench.lake.clone();

        // The late day (2026-03-29, the spring DST day) lies in both ranges.
        let scale = Scale::pick(
            Scale {
                meters: 40,
                first_day: date(2025, 11, 1),
                days: 365,
                measured: true,
            },
            Scale {
                meters: 4,
                first_day: date(2026, 3, 1),
                days: 31,
                measured: false,
            },
        );
        let spec = GeneratorSpec {
            meters: scale.meters,
            first_day: scale.first_day,
            days: scale.days,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: 1,
        };
        let payloads: Vec<Vec<u8>> = spec.generate().into_iter().map(|m| m.payload).collect();
        let started = Instant::now();
        bench.append(&payloads, 0, 100_000).await;
        println!(
            "loaded {} days: {} readings of {} meters in {:.1}s",
            scale.days,
            payloads.len(),
            scale.meters,
            started.elapsed().as_secs_f64()
        );

        let mut materializer = Materializer::open(
            &lake,
            tenants(),
            AggregateSettings {
                disclosure: HashMap::new(),
                ..AggregateSettings::default()
            },
            Metrics::new(),
        )
        .await
        .expect("materializer");
        let started = Instant::now();
        let full = materializer.round().await.expect("first round");
        let full_secs = started.elapsed().as_secs_f64();
        println!(
            "full materialization: {} readings, {} local days in {full_secs:.2}s = {:.0} readings folded/s (baseline)",
            full.readings,
            full.partitions,
            full.readings as f64 / full_secs
        );

        // A late batch: every meter's readings of one day, as newer versions.
        let day = date(2026, 3, 29);
        let late_spec = GeneratorSpec {
            first_day: day,
            days: 1,
            seed: 2,
            ..spec
        };
        let late: Vec<Vec<u8>> = late_spec
            .generate()
            .into_iter()
            .map(|m| {
                let mut v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
                v["version"] = serde_json::json!("2026-11-01T00:00:00Z");
                v.to_string().into_bytes()
            })
            .collect();
        bench.append(&late, payloads.len() as i64, 100_000).await;
        let started = Instant::now();
        let incremental = materializer.round().await.expect("late round");
        let late_secs = started.elapsed().as_secs_f64();
        println!(
            "late batch: {} readings on {day} -> {} local day(s) recomputed, {} readings read, in {late_secs:.3}s",
            late.len(),
            incremental.partitions,
            incremental.readings,
        );
        println!(
            "ratio late/full: {:.4} (a year in the tables; the late round touches one day and its month)",
            late_secs / full_secs
        );
        if incremental.partitions != 2 {
            // One day for each of the two tenants.
            eprintln!(
                "expected the late round to recompute 2 (tenant, day) partitions, got {}",
                incremental.partitions
            );
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    })
}
