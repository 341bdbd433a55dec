//! Ingest: the readings runner. Chunks from the Kafka thread go through the
//! operator chain, are buffered, and are committed to `readings` and
//! `dead_letters` together with their Kafka offsets, exactly once.

mod runner;

pub use runner::{without_partitions, RunError, Runner};
