//! A local lake for the lake benches: `readings` filled through the real operator
//! chain, with offsets, as the pipeline writes it.
//!
//! Compiled into each bench that declares `mod support;`; not every bench uses
//! every part.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::NaiveDate;

use meterline::dev::generator::tenants;
use meterline_operators::{
    Chain, DecodeConfig, MasterKey, OperatorContext, Pseudonymizer, RawRecord,
};
use meterline_sinks::{readings_spec, Lake, LakeConfig, OffsetTable};

/// How much data a lake bench loads. `cargo bench` passes `--bench` to the bench
/// binary and gets the full size; `cargo test --all-targets` runs the same binary
/// without it and gets a quick check of the same code and assertions (as
/// criterion's test mode does), so CI does not spend minutes on measurements.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub meters: usize,
    pub first_day: NaiveDate,
    pub days: u32,
    /// True under `cargo bench`: the figures mean something.
    pub measured: bool,
}

impl Scale {
    /// `full` under `cargo bench`, else `quick`.
    pub fn pick(full: Scale, quick: Scale) -> Scale {
        if std::env::args().any(|a| a == "--bench") {
            Scale {
                measured: true,
                ..full
            }
        } else {
            println!("test mode: a small lake; `cargo bench` measures the full size");
            Scale {
                measured: false,
                ..quick
            }
        }
    }
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

/// A fresh lake in a temporary directory, its `readings` table and an operator
/// chain of the generator's tenants.
pub struct BenchLake {
    /// Held for the bench's life: dropping it deletes the lake.
    _dir: tempfile::TempDir,
    pub config: LakeConfig,
    pub lake: Lake,
    pub readings: OffsetTable,
    pub chain: Chain,
}

impl BenchLake {
    pub async fn new() -> Self {
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
        let chain = Chain::new(
            DecodeConfig::default(),
            tenants(),
            Some(Pseudonymizer::new(MasterKey::from_bytes([9; 32]))),
        )
        .expect("chain");
        Self {
            _dir: dir,
            config,
            lake,
            readings,
            chain,
        }
    }

    /// Payloads through the operator chain into `readings`, in commits of
    /// `per_commit`, at Kafka offsets from `first_offset` (partition 0).
    pub async fn append(&mut self, payloads: &[Vec<u8>], first_offset: i64, per_commit: usize) {
        let ctx = OperatorContext {
            // A fixed "now" after the benches' data (up to October 2026), so the
            // too-old and future checks do not depend on the day the bench runs.
            now_micros: date(2026, 11, 30)
                .and_hms_opt(12, 0, 0)
                .expect("time")
                .and_utc()
                .timestamp_micros(),
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
            let out = self.chain.process(&records, &ctx).expect("chain");
            assert!(
                out.dead_letters.is_empty(),
                "{:?}",
                out.dead_letters.first()
            );
            let last = base + chunk.len() as i64 - 1;
            self.readings
                .append(&[out.readings], &BTreeMap::from([(0, last)]))
                .await
                .expect("append");
        }
    }
}
