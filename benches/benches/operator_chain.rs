//! The operator chain in-process: `reading/v1` JSON -> decode (with the sensitive
//! data scan) -> validate -> anonymize -> version rules -> Parquet bytes (what a
//! flush writes, minus the upload).
//!
//! Reported as readings per second (criterion "elements"). The baseline in the same
//! run is a generic `serde_json::Value` parse of the same messages, which does none
//! of the typing, checking, pseudonymizing or encoding: compare the two to read the
//! figure independently of the machine.

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meterline_benches::{messages, pseudonymizer, tenants};
use meterline_operators::{Chain, DecodeConfig, Decoder, OperatorContext, RawRecord, VersionIndex};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const N: usize = 50_000;

fn records(payloads: &[Vec<u8>]) -> Vec<RawRecord<'_>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            partition: (i % 4) as i32,
            offset: i as i64,
            payload: Some(p),
            replay_tag: None,
        })
        .collect()
}

fn chain(c: &mut Criterion) {
    let payloads = messages(N, 2_000);
    let ctx = OperatorContext {
        now_micros: 1_780_000_000_000_000,
    };
    let mut group = c.benchmark_group("operator_chain");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);

    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &payloads {
                let v: serde_json::Value = serde_json::from_slice(p).expect("valid json");
                n += v.as_object().map_or(0, |m| m.len());
            }
            n
        })
    });

    group.bench_function("decode", |b| {
        let mut decoder = Decoder::new(DecodeConfig::default(), tenants(), Some(pseudonymizer()));
        b.iter(|| decoder.decode(&records(&payloads), &ctx).batch.num_rows())
    });

    group.bench_function("decode_validate_anonymize_versions_parquet", |b| {
        let mut chain = Chain::new(DecodeConfig::default(), tenants(), Some(pseudonymizer()))
            .expect("key given");
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level")))
            .build();
        b.iter_batched(
            || {
                let mut index = VersionIndex::new(10_000_000);
                index.load("oslo", &[], &[], &[]).expect("empty load");
                (Vec::with_capacity(8 << 20), index)
            },
            |(mut out, mut index)| {
                let chained = chain.process(&records(&payloads), &ctx).expect("schema");
                assert!(chained.dead_letters.is_empty());
                // Every partition counts as loaded and empty (a new lake).
                let batch = {
                    let missing = index.missing(&chained.readings).expect("schema");
                    let mut by_tenant: std::collections::BTreeMap<String, (Vec<i32>, Vec<String>)> =
                        Default::default();
                    for (tenant, date, meter) in missing {
                        let e = by_tenant.entry(tenant).or_default();
                        e.0.push(date);
                        e.1.push(meter);
                    }
                    for (tenant, (mut dates, meters)) in by_tenant {
                        dates.sort_unstable();
                        dates.dedup();
                        let meters: Vec<&str> = meters.iter().map(String::as_str).collect();
                        index
                            .load(&tenant, &dates, &meters, &[])
                            .expect("empty load");
                    }
                    index.classify(&chained.readings).expect("schema").accepted
                };
                assert_eq!(batch.num_rows(), N);
                let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props.clone()))
                    .expect("writer");
                w.write(&batch).expect("write");
                w.close().expect("close");
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, chain);
criterion_main!(benches);
