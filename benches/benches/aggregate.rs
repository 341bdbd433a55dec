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
//! Run: `cargo bench --workspace --bench aggregate` (a minute or two).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Instant;

use chrono::NaiveDate;
use meterline::aggregate::{AggregateSettings, Materializer};
use meterline::generator::{tenants, GeneratorSpec};
use meterline::metrics::Metrics;
use meterline_operators::{
    Chain, DecodeConfig, MasterKey, OperatorContext, Pseudonymizer, RawRecord,
};
use meterline_sinks::{readings_spec, Lake, LakeConfig, OffsetTable};

const METERS: usize = 40;
const DAYS: u32 = 365;

/// Payloads through the operator chain into `readings`, in commits of `per_commit`.
async fn append(
    table: &mut OffsetTable,
    chain: &mut Chain,
    payloads: &[Vec<u8>],
    first_offset: i64,
    per_commit: usize,
) {
    let ctx = OperatorContext {
        now_micros: chrono::Utc::now().timestamp_micros(),
    };
    for (c, chunk) in payloads.chunks(per_commit).enumerate() {
        let base = first_offset + (c * per_commit) as i64;
        let records: Vec<RawRecord<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord {
                partition: 0,
                offset: base + i as i64,
                payload: Some(p),
                replay_tag: None,
            })
            .collect();
        let out = chain.process(&records, &ctx).expect("chain");
        assert!(
            out.dead_letters.is_empty(),
            "{:?}",
            out.dead_letters.first()
        );
        let last = base + chunk.len() as i64 - 1;
        table
            .append(&[out.readings], &BTreeMap::from([(0, last)]))
            .await
            .expect("append");
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LakeConfig {
            uri: dir.path().to_string_lossy().into_owned(),
            storage_options: Default::default(),
        };
        let lake = Lake::new(&config).expect("lake");
        let mut readings = OffsetTable::open_or_create(&lake, readings_spec(), "bench")
            .await
            .expect("readings");
        readings.load_offsets(&[0]).await.expect("offsets");
        let mut chain = Chain::new(
            DecodeConfig::default(),
            tenants(),
            Some(Pseudonymizer::new(MasterKey::from_bytes([9; 32]))),
        )
        .expect("chain");

        let spec = GeneratorSpec {
            meters: METERS,
            first_day: NaiveDate::from_ymd_opt(2025, 11, 1).expect("date"),
            days: DAYS,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: 1,
        };
        let payloads: Vec<Vec<u8>> = spec.generate().into_iter().map(|m| m.payload).collect();
        let started = Instant::now();
        append(&mut readings, &mut chain, &payloads, 0, 100_000).await;
        println!(
            "loaded a year: {} readings of {METERS} meters in {:.1}s",
            payloads.len(),
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
        let day = NaiveDate::from_ymd_opt(2026, 3, 29).expect("date");
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
        append(&mut readings, &mut chain, &late, payloads.len() as i64, 100_000).await;
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
