//! A local lake for the lake benches: `readings` filled through the real operator
//! chain, with offsets, as the pipeline writes it.
//!
//! Compiled into each bench that declares `mod support;`; not every bench uses
//! every part.
#![allow(dead_code)]

use std::collections::BTreeMap;

use meterline::generator::tenants;
use meterline_operators::{
    Chain, DecodeConfig, MasterKey, OperatorContext, Pseudonymizer, RawRecord,
};
use meterline_sinks::{readings_spec, Lake, LakeConfig, OffsetTable};

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
