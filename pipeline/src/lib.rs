//! # meterline
//!
//! The service and command-line tool: Kafka consumer group in, operators over Arrow
//! batches, Delta tables on object storage out, SQL over the lake, Prometheus
//! metrics. See `docs/ARCHITECTURE.md` for the whole picture.
//!
//! ```text
//!  Kafka ──(kafka-consumer thread: chunks, waits when full)──▶ bounded channel
//!     ──▶ runner: decode ─▶ anonymize ─▶ buffer ─▶ flush ─▶ Delta `readings` (+ `dead_letters`)
//!                                                   │        with per-partition txn offsets
//!                                                   └──▶ group offset commit (monitoring only)
//! ```
//!
//! Modules, lowest layer first; a module imports only from layers below its own
//! (checked by `tests/it/layers.rs`, see docs/ARCHITECTURE.md):
//!
//! | layer | modules |
//! |---|---|
//! | 0 | `shutdown`, `metrics`, `privacy::{tables, keys, geo}`, `query::sql`, `dev::{generator, emif}` |
//! | 1 | `config` |
//! | 2 | `kafka` |
//! | 3 | `aggregate`, `compact`, `cost`, `privacy::consent` |
//! | 4 | `ingest`, `privacy::{subjects, lifecycle}` |
//! | 5 | `privacy::erasure`, `inputs`, `elhub` |
//! | 6 | `query::{audit, export, dlq}` |
//! | 7 | `service` (the only module that wires tasks together) |
//! | 8 | `dev::{demo, testkit}` |

// Unit tests: a scenario reads best whole (the lint applies to everything else).
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod aggregate;
pub mod compact;
pub mod config;
pub mod cost;
pub mod dev;
pub mod elhub;
pub mod ingest;
pub mod inputs;
pub mod kafka;
pub mod metrics;
pub mod privacy;
pub mod query;
pub mod serve;
pub mod service;
pub mod shutdown;

/// jemalloc instead of the system allocator, for the `meterline` binary and for
/// everything that links this crate (tests and benches measure what ships).
///
/// glibc's malloc handed large, short-lived buffers (a flush's hash tables and
/// Parquet encoders) back to the kernel and took them again on the next flush:
/// page faults and page clearing were 13 % of the CPU of a backfill, and its
/// per-thread arenas made peak RSS run well past the live data.
///
/// The `system-allocator` feature leaves the system allocator in place, for heap
/// profilers that hook `malloc` (heaptrack; see the README's Performance).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
