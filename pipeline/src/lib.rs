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

pub mod aggregate;
pub mod audit;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod dlq;
pub mod erasure;
pub mod export;
pub mod generator;
pub mod geo;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod runner;
pub mod service;
pub mod sql;
pub mod subjects;
pub mod testkit;
