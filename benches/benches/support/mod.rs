//! Shared by the benches: a local lake with `readings` filled through the real
//! operator chain, with offsets, as the pipeline writes it; and, for the benches
//! that run `meterline` as a process, test selection, `/proc` and `/metrics`
//! readers.
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
    /// Held for the bench's life: dropping it deletes the lake (none for a lake
    /// kept at a given path, see [`BenchLake::at`]).
    _dir: Option<tempfile::TempDir>,
    pub config: LakeConfig,
    pub lake: Lake,
    pub readings: OffsetTable,
    pub chain: Chain,
}

impl BenchLake {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        Self::open(Some(dir), &path).await
    }

    /// A lake at `path` that outlives the bench (created when missing; an
    /// existing one is opened with what it holds).
    pub async fn at(path: &std::path::Path) -> Self {
        std::fs::create_dir_all(path).expect("lake directory");
        Self::open(None, path).await
    }

    async fn open(dir: Option<tempfile::TempDir>, path: &std::path::Path) -> Self {
        let config = LakeConfig {
            uri: path.to_string_lossy().into_owned(),
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

/// Whether libtest-style arguments (filters, `--skip`, `--exact`) select the test
/// named `test` (a bench binary without the libtest harness runs one test).
pub fn selected(test: &str, args: &[String]) -> bool {
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |pattern: &str| {
        if exact {
            pattern == test
        } else {
            test.contains(pattern)
        }
    };
    let mut filters = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        if a == "--skip" {
            if args.next().is_some_and(|p| matches(p.as_str())) {
                return false;
            }
        } else if let Some(p) = a.strip_prefix("--skip=") {
            if matches(p) {
                return false;
            }
        } else if !a.starts_with('-') {
            filters.push(a.as_str());
        }
    }
    filters.is_empty() || filters.into_iter().any(matches)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in bytes; `None`
/// when the process is gone or the field is missing.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
}

/// CPU time (user + system) of a process so far, in seconds, from
/// `/proc/<pid>/stat`; `None` when the process is gone or the file unreadable.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    // USER_HZ: 100 on every Linux architecture the project builds for.
    const TICKS_PER_SEC: f64 = 100.0;
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on:
    // utime is field 14, stime field 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// The sum of a metric's samples on meterline's `/metrics` (every label set whose
/// line starts with `name`); NaN when the endpoint cannot be read.
///
/// # Panics
/// The endpoint answers but has no such metric (a misspelt name must not read
/// as 0).
pub fn metric(port: u16, name: &str) -> f64 {
    let Ok((200, text)) = meterline::dev::testkit::http(port, "GET", "/metrics") else {
        return f64::NAN;
    };
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(!values.is_empty(), "no metric {name} on /metrics");
    values.iter().sum()
}

/// Produce `(key, payload)` messages to `topic` and wait until the broker has
/// acknowledged every one.
///
/// # Panics
/// A message the producer refuses or the broker does not acknowledge.
pub async fn send_all<K, P>(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    messages: impl IntoIterator<Item = (K, P)>,
) where
    K: AsRef<[u8]>,
    P: AsRef<[u8]>,
{
    let mut pending = Vec::new();
    for (key, payload) in messages {
        let record = rdkafka::producer::FutureRecord::to(topic)
            .key(key.as_ref())
            .payload(payload.as_ref());
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for delivery in pending {
        delivery
            .await
            .expect("report")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// The bound in a "pipeline started" log line (`memory_bound_mib=764`), in bytes.
pub fn logged_bound(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("memory_bound_mib="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no memory_bound_mib in the start line: {line}"))
        * 1024
        * 1024
}
