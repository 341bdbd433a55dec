//! Compaction: many small files of a table partition rewritten as a few, sorted
//! by meter.
//!
//! A 10-second flush writes one file per partition it touches, so a busy day of
//! `readings` ends as thousands of small files; every query opens them all. A
//! compaction rewrites one partition with deltalake's optimize (Z-order on the
//! `meter` column alone, which is a sort by meter): the commit *removes* the old
//! files and *adds* the new ones, both with `dataChange = false`, and carries no
//! `txn` action, so:
//! - the Kafka offsets stored in the table are untouched (exactly-once holds);
//! - an append that commits while the compaction runs is kept: Delta's conflict
//!   checker lets a rewrite that changes no data commit after it, and the appended
//!   file is not among the removed ones;
//! - a concurrent erasure or retention rewrite that removed one of the files the
//!   compaction read makes the compaction's commit conflict: nothing is committed
//!   (an erased row is never written back), the next round tries again;
//! - readers of `dataChange` (the aggregate materializer) see a reorganization,
//!   not a change ([`crate::files::Changes::reorganized`]).
//!
//! The replaced files stay in storage until [`purge_replaced`] deletes them, so
//! that a query reading the version before the compaction can finish.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::kernel::transaction::TransactionError;
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, DeltaTableError, FilterOp, FilterValue};
use futures::TryStreamExt;

use crate::delta::{classify, transient, writer_properties};
use crate::derived::{partition_of, Partition};
use crate::SinkError;

/// The column a compacted file's rows are ordered by.
pub const SORT_BY: &str = "meter";

/// The files of each partition of `table`, with their total size in bytes.
///
/// # Errors
/// Storage errors (transient).
pub async fn partition_files(
    table: &mut DeltaTable,
    name: &'static str,
    partition_columns: &[&str],
) -> Result<BTreeMap<Partition, (usize, u64)>, SinkError> {
    table.update_state().await.map_err(transient(name))?;
    let mut out: BTreeMap<Partition, (usize, u64)> = BTreeMap::new();
    if table.version().is_none() {
        return Ok(out);
    }
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(transient(name))?;
    for f in &files {
        let partition = partition_of(&f.partition_values_map(), partition_columns);
        let entry = out.entry(partition).or_default();
        entry.0 += 1;
        entry.1 += u64::try_from(f.size()).unwrap_or(0);
    }
    Ok(out)
}

/// What one partition's compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub files_removed: u64,
    pub files_added: u64,
    pub bytes_removed: u64,
    pub bytes_added: u64,
}

/// Rewrite the files of `partition` (values of `partition_columns`, in that
/// order) as few files of about `target_bytes`, rows sorted by [`SORT_BY`], in
/// one commit from `table`'s loaded version. `None` when the commit conflicted
/// with one that removed a file it read (an erasure, a retention sweep, another
/// compaction): nothing changed, try again later.
///
/// # Errors
/// Storage errors (transient); a table without a `meter` column (internal).
pub async fn compact_partition(
    table: &DeltaTable,
    name: &'static str,
    partition_columns: &[&str],
    partition: &Partition,
    target_bytes: u64,
) -> Result<Option<(DeltaTable, Compacted)>, SinkError> {
    let filters: Vec<_> = partition_columns
        .iter()
        .zip(partition)
        .map(|(column, value)| (*column, FilterOp::Eq, FilterValue::Scalar(value.as_str())))
        .collect();
    let mut optimize = table
        .clone()
        .optimize()
        .with_type(OptimizeType::ZOrder(vec![SORT_BY.to_owned()]))
        .with_filters(&filters)
        .with_writer_properties(writer_properties())
        .with_max_concurrent_tasks(1);
    if let Some(target) = NonZeroU64::new(target_bytes) {
        optimize = optimize.with_target_size(target);
    }
    match optimize.await {
        Ok((table, metrics)) => Ok(Some((
            table,
            Compacted {
                files_removed: metrics.num_files_removed,
                files_added: metrics.num_files_added,
                bytes_removed: u64::try_from(metrics.files_removed.total_size).unwrap_or(0),
                bytes_added: u64::try_from(metrics.files_added.total_size).unwrap_or(0),
            },
        ))),
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_),
        }) => Ok(None),
        Err(e) => Err(classify(name, e)),
    }
}

/// Delete the files `table` removed (compaction's replaced files among them)
/// more than `after` ago: a query still reading an older version has that long.
/// Returns the number of files deleted.
///
/// # Errors
/// Storage errors (transient).
pub async fn purge_replaced(
    table: &mut DeltaTable,
    name: &'static str,
    after: Duration,
) -> Result<usize, SinkError> {
    table.update_state().await.map_err(transient(name))?;
    if table.version().is_none() {
        return Ok(0);
    }
    let retention = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let (vacuumed, metrics) = table
        .clone()
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await
        .map_err(transient(name))?;
    *table = vacuumed;
    Ok(metrics.files_deleted.len())
}
