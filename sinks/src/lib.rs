//! # meterline-sinks
//!
//! Where meterline's data lands: Delta Lake tables on object storage (a local
//! directory or S3), written exactly once per Kafka offset.
//!
//! ```text
//!  readings batches ──▶ delta::OffsetTable("readings")      ─┐  each commit carries, per Kafka
//!  dead letters     ──▶ delta::OffsetTable("dead_letters")  ─┘  partition, a Delta `txn` action
//!                                                               (app id = topic+partition,
//!                                                               version = last offset written)
//! ```
//!
//! Guarantees:
//! - a commit makes its rows and its offsets visible together, or neither;
//! - before committing, each partition's stored offset is compared with what this
//!   writer expects; a mismatch (another process wrote the partition after a
//!   rebalance) aborts the commit with [`SinkError::Fenced`] instead of duplicating;
//! - concurrent commits touching the same partition are rejected by Delta's conflict
//!   checker (same `txn` app id), so the check above cannot race.

// Unit tests: a scenario reads best whole (the lint applies to everything else).
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod bucket;
pub mod compact;
pub mod dead_letter;
pub mod delta;
pub mod derived;
pub mod elhub;
pub mod erase;
pub mod files;
pub mod inputs;
pub mod lake;
pub mod orphans;
mod write;

pub use dead_letter::{dead_letter_batch, dead_letters_spec, readings_spec, DEAD_LETTERS};
pub use delta::{plain_strings, AppendOutcome, OffsetTable, TableSpec};
pub use derived::{open_existing, DerivedSpec, DerivedTable, Partition, Replaced, SourceTable};
pub use elhub::{elhub_messages_spec, processed_batch, ProcessedMessage};
pub use erase::{purge, remove_files, remove_rows, upsert, Removal};
pub use files::{Change, Changes, DataFile};
pub use inputs::{
    exchange_rates_spec, grid_tariffs_spec, meter_profiles_spec, spot_prices_spec, tax_rates_spec,
    weather_observations_spec, weather_stations_spec,
};
pub use lake::{Lake, LakeConfig};
pub use orphans::{set_orphan_age, vacuum_orphans};

/// Errors of the sinks, classed so the caller can decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Storage is unreachable or failed; retry the same append with backoff.
    #[error("transient storage error on table `{table}`: {error}")]
    Transient {
        table: &'static str,
        error: Box<deltalake::DeltaTableError>,
    },
    /// Another writer committed offsets for these partitions: this process no longer
    /// owns them. Drop buffered data for them and re-read the stored offsets.
    #[error("table `{table}`: partitions {partitions:?} were written by another process")]
    Fenced {
        table: &'static str,
        partitions: Vec<i32>,
    },
    /// A table moved past the version the caller's knowledge of its files came
    /// from (another writer committed): look at the table again, then retry.
    #[error("table `{table}` was changed by another writer (now version {found:?}, expected {expected:?})")]
    Moved {
        table: &'static str,
        found: Option<u64>,
        expected: Option<u64>,
    },
    /// The lake location or options are unusable; fix the configuration.
    #[error("lake configuration: {0}")]
    Config(String),
    /// A bug or an incompatible table (for example a schema that is not ours).
    #[error("table `{table}`: {error}")]
    Internal {
        table: &'static str,
        error: Box<deltalake::DeltaTableError>,
    },
}

impl SinkError {
    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient { .. } | SinkError::Moved { .. })
    }
}
