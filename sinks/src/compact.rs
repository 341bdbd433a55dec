//! Compaction: the many small files of a table partition rewritten as one,
//! sorted by meter.
//!
//! A 10-second flush writes one file per partition it touches, so a busy day of
//! `readings` ends as thousands of small files; every query opens them all. A
//! compaction reads one partition's files, writes their rows again as one file
//! in the order every writer uses (meter, then time: `write::CLUSTER_BY`, so the
//! meter column's page statistics let a one-meter query skip the other pages),
//! and commits *removes* of exactly the files it read and the *add*, both with
//! `dataChange = false`, as an `OPTIMIZE` with no `txn` action. So:
//! - the Kafka offsets stored in the table are untouched (exactly-once holds);
//! - an append that commits while the compaction runs is kept: its file is not
//!   among the removed ones, and Delta's conflict checker lets a commit that
//!   changes no data follow an append;
//! - a concurrent erasure or retention rewrite that removed one of the files the
//!   compaction read makes the compaction's commit conflict (both remove the same
//!   file): nothing is committed, its upload is deleted, an erased row is never
//!   written back; the next round tries again;
//! - readers of `dataChange` (the aggregate materializer) see a reorganization,
//!   not a change ([`crate::files::Changes::reorganized`]).
//!
//! deltalake's own optimize was tried first: its Z-order on one string column
//! orders by a truncated key (GSRNs share their first 16 bytes), so files came
//! out unsorted; its bin-packing does not sort.
//!
//! The partition is held in memory while it is rewritten: callers bound it by
//! rows ([`partition_files`] reports them). The replaced files stay in storage
//! until [`purge_replaced`] deletes them, so that a query reading the version
//! before the compaction can finish.

use std::collections::BTreeMap;
use std::time::Duration;

use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::Action;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::delta::{transient, writer_properties};
use crate::derived::{commit_or_discard, partition_of, Partition};
use crate::erase::{read_all, with_partition_columns};
use crate::write::write_files;
use crate::SinkError;

/// A partition's data files: how many, their rows (from the log's statistics;
/// `None` when a file has none) and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionFiles {
    pub files: usize,
    pub rows: Option<u64>,
    pub bytes: u64,
}

/// The files of each partition of `table` (reloaded first).
///
/// # Errors
/// Storage errors (transient).
pub async fn partition_files(
    table: &mut DeltaTable,
    name: &'static str,
    partition_columns: &[&str],
) -> Result<BTreeMap<Partition, PartitionFiles>, SinkError> {
    table.update_state().await.map_err(transient(name))?;
    let mut out: BTreeMap<Partition, PartitionFiles> = BTreeMap::new();
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
        let entry = out.entry(partition).or_insert(PartitionFiles {
            rows: Some(0),
            ..PartitionFiles::default()
        });
        entry.files += 1;
        entry.bytes += u64::try_from(f.size()).unwrap_or(0);
        let rows = f.num_records().map(|n| n as u64);
        entry.rows = entry.rows.zip(rows).map(|(a, b)| a + b);
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

/// Rewrite the files `table` (as loaded) has in `partition` (values of
/// `partition_columns`, in that order) as one file sorted by meter and time, in
/// one commit. `None` when the commit conflicted with one that removed a file it
/// read (an erasure, a retention sweep, another compaction): nothing changed,
/// try again later. A partition with fewer than two files is left as it is.
///
/// # Errors
/// Storage errors (transient); unreadable data files (internal).
pub async fn compact_partition(
    table: &DeltaTable,
    name: &'static str,
    partition_columns: &[&str],
    partition: &Partition,
) -> Result<Option<(DeltaTable, Compacted)>, SinkError> {
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect::<Vec<_>>()
        .await
        .map_err(transient(name))?
        .into_iter()
        .filter(|f| &partition_of(&f.partition_values_map(), partition_columns) == partition)
        .collect();
    if files.len() < 2 {
        return Ok(Some((table.clone(), Compacted::default())));
    }
    let (batches, mut actions, mut done) = read_files(table, name, &files).await?;
    let uploaded_at = std::time::Instant::now();
    let adds = write_files(table, &writer_properties(), partition_columns, &batches)
        .await
        .map_err(transient(name))?;
    drop(batches);
    for mut add in adds {
        add.data_change = false;
        done.files_added += 1;
        done.bytes_added += u64::try_from(add.size).unwrap_or(0);
        actions.push(Action::Add(add));
    }
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: i64::try_from(done.bytes_added).unwrap_or(i64::MAX),
    };
    let committed = commit_or_discard(
        table,
        name,
        actions,
        operation,
        CommitProperties::default(),
        uploaded_at,
    )
    .await;
    match committed {
        Ok(finalized) => {
            let mut compacted = table.clone();
            compacted.state = Some(finalized.snapshot());
            Ok(Some((compacted, done)))
        }
        Err(SinkError::Transient { error, .. })
            if matches!(
                *error,
                DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(_)
                }
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Every row of `files` (with their partition columns), a remove action of each
/// (`dataChange = false`), and what they add up to.
async fn read_files(
    table: &DeltaTable,
    name: &'static str,
    files: &[deltalake::kernel::LogicalFileView],
) -> Result<(Vec<arrow::array::RecordBatch>, Vec<Action>, Compacted), SinkError> {
    let schema = table
        .snapshot()
        .map_err(transient(name))?
        .snapshot()
        .arrow_schema();
    let store = table.object_store();
    let storage = |e| transient(name)(DeltaTableError::ObjectStore { source: e });
    let unreadable = |e: arrow::error::ArrowError| SinkError::Internal {
        table: name,
        error: Box::new(DeltaTableError::Generic(format!(
            "compaction reading a data file: {e}"
        ))),
    };
    let mut done = Compacted::default();
    let mut batches = Vec::with_capacity(files.len());
    let mut actions = Vec::with_capacity(files.len() + 1);
    for file in files {
        let bytes = store
            .get(&file.object_store_path())
            .await
            .map_err(storage)?
            .bytes()
            .await
            .map_err(storage)?;
        let batch = read_all(&bytes)
            .and_then(|b| with_partition_columns(&b, &schema, &file.partition_values_map()))
            .map_err(unreadable)?;
        batches.push(batch);
        actions.push(Action::Remove(file.remove_action(false)));
        done.files_removed += 1;
        done.bytes_removed += u64::try_from(file.size()).unwrap_or(0);
    }
    Ok((batches, actions, done))
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
