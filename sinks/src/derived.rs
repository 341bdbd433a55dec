//! Tables derived from `readings` (the aggregates), written by replacing whole
//! partitions, with their progress in the same commit.
//!
//! A derived partition is a pure function of the `readings` partitions it comes
//! from. Recomputing it and replacing it (remove its files, add the new ones) is
//! idempotent, so a crash or a repeated round never duplicates rows. Each commit can
//! carry a Delta `txn` action (app id, version) saying which `readings` version the
//! table reflects; on restart the materializer continues from there.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use tracing::debug;

use crate::delta::{classify, open_or_create_table, query_table, transient, writer_properties};
use crate::files::{
    added_file, fold_commit, live_files, read_files, read_files_each, Changes, DataFile,
};
use crate::lake::Lake;
use crate::write::write_files;
use crate::SinkError;

/// A partition: its values, as Delta writes them (`2026-10-25` for dates), in the
/// order of the table's partition columns.
pub type Partition = Vec<String>;

/// The shape of a derived table.
#[derive(Debug, Clone)]
pub struct DerivedSpec {
    pub name: &'static str,
    pub schema: SchemaRef,
    pub partition_columns: &'static [&'static str],
    pub properties: &'static [(&'static str, &'static str)],
}

/// What a replacement did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub rows: usize,
    pub files_added: usize,
    pub files_removed: usize,
    pub version: Option<u64>,
    /// The files written.
    pub added: Vec<DataFile>,
}

/// A table whose partitions are replaced as a whole.
pub struct DerivedTable {
    spec: DerivedSpec,
    table: DeltaTable,
}

impl std::fmt::Debug for DerivedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedTable")
            .field("table", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// The partition values of a file, in `columns` order.
pub(crate) fn partition_of(
    values: &std::collections::HashMap<String, Option<String>>,
    columns: &[&str],
) -> Partition {
    columns
        .iter()
        .map(|c| values.get(*c).cloned().flatten().unwrap_or_default())
        .collect()
}

/// The action removing a data file (its rows) from a table.
fn remove_action(file: &DataFile, columns: &[&str], now_ms: i64) -> Action {
    let partition_values = columns
        .iter()
        .zip(&file.partition)
        .map(|(c, v)| ((*c).to_owned(), (!v.is_empty()).then(|| v.clone())))
        .collect();
    Action::Remove(deltalake::kernel::Remove {
        path: file.path.clone(),
        data_change: true,
        deletion_timestamp: Some(now_ms),
        extended_file_metadata: Some(true),
        partition_values: Some(partition_values),
        size: i64::try_from(file.size).ok(),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
    })
}

/// The partitions of the files a table holds now.
async fn live_partitions(
    table: &DeltaTable,
    name: &'static str,
    columns: &[&str],
) -> Result<BTreeSet<Partition>, SinkError> {
    Ok(live_files(table, name, columns)
        .await?
        .into_iter()
        .map(|f| f.partition)
        .collect())
}

impl DerivedTable {
    /// Open the table, creating it when it does not exist.
    ///
    /// # Errors
    /// Storage errors (transient); a table with other columns (internal).
    pub async fn open_or_create(lake: &Lake, spec: DerivedSpec) -> Result<Self, SinkError> {
        let table = open_or_create_table(
            lake,
            spec.name,
            &spec.schema,
            spec.partition_columns,
            spec.properties,
        )
        .await?;
        Ok(Self { spec, table })
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Reload the table and read the version recorded for `app_id` (`None`: never).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn progress(&mut self, app_id: &str) -> Result<Option<i64>, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        let log_store = self.table.log_store();
        self.table
            .snapshot()
            .map_err(transient(name))?
            .transaction_version(log_store.as_ref(), app_id)
            .await
            .map_err(transient(name))
    }

    /// Load the latest version (reads see it until the next reload).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn reload(&mut self) -> Result<(), SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))
    }

    /// The partitions holding data now.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn partitions(&self) -> Result<BTreeSet<Partition>, SinkError> {
        live_partitions(&self.table, self.spec.name, self.spec.partition_columns).await
    }

    /// Read `columns` of the rows matching `filter` from the table as last loaded.
    ///
    /// # Errors
    /// Storage errors (transient) and planning errors (internal).
    pub async fn scan(
        &self,
        columns: &[&str],
        filter: deltalake::datafusion::prelude::Expr,
    ) -> Result<Vec<RecordBatch>, SinkError> {
        scan(&self.table, self.spec.name, columns, filter).await
    }

    /// Replace `partitions` with the rows of `batches` (which must all fall into
    /// them), recording `progress` (app id, version) in the same commit. A partition
    /// without new rows is emptied. Idempotent: the same call again gives the same
    /// table.
    ///
    /// # Errors
    /// Storage errors and conflicts with a concurrent writer (both transient: the
    /// next round recomputes); rows outside `partitions` (internal).
    pub async fn replace(
        &mut self,
        batches: &[RecordBatch],
        partitions: &BTreeSet<Partition>,
        progress: Option<(&str, i64)>,
    ) -> Result<Replaced, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        let remove: Vec<DataFile> = live_files(&self.table, name, self.spec.partition_columns)
            .await?
            .into_iter()
            .filter(|f| partitions.contains(&f.partition))
            .collect();
        self.commit_rewrite(
            std::slice::from_ref(&batches),
            &remove,
            partitions,
            progress,
        )
        .await
    }

    /// Remove the files `remove` and add the rows of `groups` (which must fall into
    /// `partitions`), recording `progress` in the same commit: the rows of some keys
    /// replaced inside partitions, when the caller knows which files hold them (it
    /// keeps the rows of those files it still wants in `groups`). Each group gets
    /// files of its own (one per partition), so a caller that groups rows by key
    /// can later rewrite one group's keys without reading the others'.
    ///
    /// `expected` is the table version the caller's knowledge of the files comes
    /// from: when another writer has committed since, nothing is written and the
    /// error is transient (the caller must look at the files again).
    ///
    /// # Errors
    /// As [`replace`](Self::replace), and the one above.
    pub async fn rewrite(
        &mut self,
        groups: &[&[RecordBatch]],
        remove: &[DataFile],
        partitions: &BTreeSet<Partition>,
        progress: Option<(&str, i64)>,
        expected: Option<u64>,
    ) -> Result<Replaced, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        if self.table.version() != expected {
            return Err(SinkError::Moved {
                table: name,
                found: self.table.version(),
                expected,
            });
        }
        self.commit_rewrite(groups, remove, partitions, progress)
            .await
    }

    async fn commit_rewrite(
        &mut self,
        groups: &[&[RecordBatch]],
        remove: &[DataFile],
        partitions: &BTreeSet<Partition>,
        progress: Option<(&str, i64)>,
    ) -> Result<Replaced, SinkError> {
        let name = self.spec.name;
        let columns = self.spec.partition_columns;
        let rows: usize = groups
            .iter()
            .flat_map(|g| g.iter())
            .map(RecordBatch::num_rows)
            .sum();

        let mut actions: Vec<Action> = Vec::new();
        let mut added = Vec::new();
        let properties = writer_properties();
        let uploaded_at = std::time::Instant::now();
        for batches in groups {
            let adds = write_files(&self.table, &properties, columns, batches)
                .await
                .map_err(transient(name))?;
            for add in &adds {
                let file = added_file(add, columns);
                if !partitions.contains(&file.partition) {
                    return Err(SinkError::Internal {
                        table: name,
                        error: Box::new(DeltaTableError::Generic(format!(
                            "rows of partition {:?} outside the partitions being replaced",
                            file.partition
                        ))),
                    });
                }
                added.push(file);
            }
            actions.extend(adds.into_iter().map(Action::Add));
        }
        let files_added = added.len();
        let files_removed = remove.len();
        let now = chrono::Utc::now().timestamp_millis();
        actions.extend(remove.iter().map(|f| remove_action(f, columns, now)));
        if let Some((app_id, version)) = progress {
            actions.push(Action::Txn(Transaction::new_with_last_update(
                app_id,
                version,
                Some(chrono::Utc::now().timestamp_millis()),
            )));
        }
        if actions.is_empty() {
            return Ok(Replaced::default());
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
            predicate: Some(format!("{} partitions recomputed", partitions.len())),
        };
        // A conflict means another materializer replaced the same partitions: ours
        // is stale or redundant; the next round recomputes from the stored progress.
        let finalized = commit_or_discard(
            &self.table,
            name,
            actions,
            operation,
            CommitProperties::default(),
            uploaded_at,
        )
        .await?;
        let version = finalized.version();
        debug!(
            table = name,
            rows, files_added, files_removed, version, "partitions replaced"
        );
        self.table.state = Some(finalized.snapshot());
        Ok(Replaced {
            rows,
            files_added,
            files_removed,
            version: Some(version),
            added,
        })
    }

    /// The version loaded (`None`: no commit yet).
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// The data files of the table as loaded.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn files(&self) -> Result<Vec<DataFile>, SinkError> {
        live_files(&self.table, self.spec.name, self.spec.partition_columns).await
    }

    /// Read `columns` (partition columns included) of every row of `files`: the
    /// batches of each file, in the order of `files`.
    ///
    /// # Errors
    /// Storage errors (transient); unreadable files (internal).
    pub async fn read_files(
        &self,
        files: &[DataFile],
        columns: &[&str],
    ) -> Result<Vec<Vec<RecordBatch>>, SinkError> {
        read_files(
            &self.table,
            self.spec.name,
            &self.spec.schema,
            self.spec.partition_columns,
            files,
            columns,
        )
        .await
    }

    /// Append `batches`, with `progress` (app id, version) actions in the same
    /// commit: a log whose entries say which requests they answer. Returns the
    /// commit version (`None` when there was nothing to commit).
    ///
    /// # Errors
    /// Storage errors and conflicts (transient).
    pub async fn append(
        &mut self,
        batches: &[RecordBatch],
        progress: &[(String, i64)],
    ) -> Result<Option<u64>, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        let uploaded_at = std::time::Instant::now();
        let mut actions: Vec<Action> = Vec::new();
        if batches.iter().any(|b| b.num_rows() > 0) {
            let adds = write_files(
                &self.table,
                &writer_properties(),
                self.spec.partition_columns,
                batches,
            )
            .await
            .map_err(transient(name))?;
            actions.extend(adds.into_iter().map(Action::Add));
        }
        let now = chrono::Utc::now().timestamp_millis();
        actions.extend(progress.iter().map(|(app_id, version)| {
            Action::Txn(Transaction::new_with_last_update(
                app_id,
                *version,
                Some(now),
            ))
        }));
        if actions.is_empty() {
            return Ok(None);
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let finalized = commit_or_discard(
            &self.table,
            name,
            actions,
            operation,
            CommitProperties::default(),
            uploaded_at,
        )
        .await?;
        let version = finalized.version();
        self.table.state = Some(finalized.snapshot());
        Ok(Some(version))
    }

    /// The underlying Delta table (for [`crate::erase`]).
    pub fn table_mut(&mut self) -> &mut DeltaTable {
        &mut self.table
    }

    /// Vacuum files removed longer ago than the table's retention.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn vacuum(&mut self) -> Result<usize, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        if self.table.version().is_none() {
            return Ok(0);
        }
        let (table, vacuumed) = self.table.clone().vacuum().await.map_err(transient(name))?;
        self.table = table;
        Ok(vacuumed.files_deleted.len())
    }
}

async fn scan(
    table: &DeltaTable,
    name: &'static str,
    columns: &[&str],
    filter: deltalake::datafusion::prelude::Expr,
) -> Result<Vec<RecordBatch>, SinkError> {
    let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    query_table(table, name, |ctx| async move {
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        ctx.table("t").await?.filter(filter)?.select_columns(&names)
    })
    .await
}

/// A source table read at a pinned version (the materializer's view of
/// `readings`): every read between two [`refresh`](Self::refresh) calls sees the
/// same version.
pub struct SourceTable {
    name: &'static str,
    partition_columns: &'static [&'static str],
    table: Option<DeltaTable>,
    lake: Lake,
}

impl std::fmt::Debug for SourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTable")
            .field("table", &self.name)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

/// Commit `actions`; when the commit did not land, delete the files they add:
/// uploaded but referenced by nothing, no VACUUM in Lite mode would remove them,
/// and they may hold data erased since. After an error that does not say (a
/// timeout, a lost answer), the log is read first: files it references are
/// kept, and the error is returned as transient so the caller repeats its
/// (idempotent) work. Files uploaded longer ago than half the orphan age are
/// not committed ([`crate::orphans::too_old`]): they are deleted and the caller
/// uploads again.
///
/// # Errors
/// Storage errors and conflicts (transient); others classified.
pub(crate) async fn commit_or_discard(
    table: &DeltaTable,
    name: &'static str,
    actions: Vec<Action>,
    operation: DeltaOperation,
    properties: CommitProperties,
    uploaded_at: std::time::Instant,
) -> Result<deltalake::kernel::transaction::FinalizedCommit, SinkError> {
    let uploaded = crate::orphans::added_paths(&actions);
    if !uploaded.is_empty() && crate::orphans::too_old(uploaded_at) {
        crate::orphans::discard(table, name, &uploaded).await;
        return Err(SinkError::Transient {
            table: name,
            error: Box::new(DeltaTableError::Generic(
                "files uploaded longer ago than half the orphan age; writing them again".into(),
            )),
        });
    }
    let snapshot = table.snapshot().map_err(transient(name))?;
    let committed = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await;
    match committed {
        Ok(finalized) => Ok(finalized),
        // Another writer changed the same files first (or every attempt found
        // the version taken): ours did not land. Read again, retry.
        Err(
            e @ DeltaTableError::Transaction {
                source:
                    TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_),
            },
        ) => {
            crate::orphans::discard(table, name, &uploaded).await;
            Err(SinkError::Transient {
                table: name,
                error: Box::new(e),
            })
        }
        // Anything else may have come after the log entry was written (a lost
        // answer): the log says whether the files are referenced.
        Err(e) => {
            match crate::orphans::landed(table, &uploaded).await {
                Some(false) => crate::orphans::discard(table, name, &uploaded).await,
                Some(true) => debug!(
                    table = name,
                    "the commit landed although it reported an error"
                ),
                None => {} // unknown: keep them; the orphan sweep decides later
            }
            Err(match e {
                e @ DeltaTableError::Transaction { .. } => SinkError::Transient {
                    table: name,
                    error: Box::new(e),
                },
                e => classify(name, e),
            })
        }
    }
}

/// Load a table that may not exist yet (`None` then).
///
/// # Errors
/// Storage errors (transient); an unreadable log (internal).
pub async fn open_existing(
    lake: &Lake,
    name: &'static str,
) -> Result<Option<DeltaTable>, SinkError> {
    let url = lake.table_url(name);
    if url.scheme() == "file"
        && url
            .to_file_path()
            .is_ok_and(|p| !p.join("_delta_log").exists())
    {
        return Ok(None);
    }
    let mut t = DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
        .await
        .map_err(transient(name))?;
    match t.load().await {
        Ok(()) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => {
            // A missing log directory reads as "not a table" on some stores and as
            // an empty listing on others.
            if t.version().is_none() {
                debug!(table = name, error = %e, "table not readable yet");
                return Ok(None);
            }
            Err(classify(name, e))
        }
    }
}

/// The actions of one commit (`None` when it is no longer in the log).
async fn read_commit(
    table: &DeltaTable,
    name: &'static str,
    version: u64,
) -> Result<Option<Vec<Action>>, SinkError> {
    let Some(bytes) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(transient(name))?
    else {
        return Ok(None);
    };
    deltalake::logstore::get_actions(version, &bytes)
        .map(Some)
        .map_err(|e| classify(name, e))
}

impl SourceTable {
    pub fn new(
        lake: &Lake,
        name: &'static str,
        partition_columns: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            partition_columns,
            table: None,
            lake: lake.clone(),
        }
    }

    /// The version read, if the table exists.
    pub fn version(&self) -> Option<u64> {
        self.table.as_ref().and_then(DeltaTable::version)
    }

    /// Load the latest version (`None` while the table does not exist yet).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn refresh(&mut self) -> Result<Option<u64>, SinkError> {
        let name = self.name;
        match &mut self.table {
            Some(t) => t.update_state().await.map_err(transient(name))?,
            None => match open_existing(&self.lake, name).await? {
                Some(t) => self.table = Some(t),
                None => return Ok(None),
            },
        }
        Ok(self.version())
    }

    /// The partitions with data at the pinned version.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn partitions(&self) -> Result<BTreeSet<Partition>, SinkError> {
        match &self.table {
            Some(t) => live_partitions(t, self.name, self.partition_columns).await,
            None => Ok(BTreeSet::new()),
        }
    }

    /// The rows of each partition at the pinned version, from the file statistics
    /// in the Delta log (`numRecords`, a count, not an identifier statistic);
    /// `None` for a partition with a file written without statistics.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn partition_rows(&self) -> Result<BTreeMap<Partition, Option<u64>>, SinkError> {
        let Some(table) = &self.table else {
            return Ok(BTreeMap::new());
        };
        if table.version().is_none() {
            return Ok(BTreeMap::new());
        }
        let files: Vec<_> = table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(transient(self.name))?;
        let mut rows: BTreeMap<Partition, Option<u64>> = BTreeMap::new();
        for f in &files {
            let partition = partition_of(&f.partition_values_map(), self.partition_columns);
            let n = f.num_records().map(|n| n as u64);
            let entry = rows.entry(partition).or_insert(Some(0));
            *entry = entry.zip(n).map(|(a, b)| a + b);
        }
        Ok(rows)
    }

    /// Read `columns` of the rows matching `filter` at the pinned version.
    ///
    /// # Errors
    /// Storage errors (transient) and planning errors (internal).
    pub async fn scan(
        &self,
        columns: &[&str],
        filter: deltalake::datafusion::prelude::Expr,
    ) -> Result<Vec<RecordBatch>, SinkError> {
        match &self.table {
            Some(t) => scan(t, self.name, columns, filter).await,
            None => Ok(Vec::new()),
        }
    }

    /// What changed in versions `after + 1 ..= upto`: per partition, the files
    /// added, or [`Change::Whole`](crate::Change::Whole) when rows were removed
    /// (compaction changes no data; it is listed as reorganized). `None` when a
    /// commit in that range is no longer in the log (cleaned up after
    /// `delta.logRetentionDuration`): recompute everything then.
    ///
    /// # Errors
    /// Storage errors (transient); an unreadable commit (internal).
    pub async fn changes(&self, after: i64, upto: u64) -> Result<Option<Changes>, SinkError> {
        let name = self.name;
        let Some(table) = &self.table else {
            return Ok(Some(Changes::default()));
        };
        let mut changes = Changes::default();
        let first = u64::try_from(after + 1).unwrap_or(0);
        for version in first..=upto {
            let Some(actions) = read_commit(table, name, version).await? else {
                return Ok(None);
            };
            fold_commit(&actions, self.partition_columns, &mut changes);
        }
        Ok(Some(changes))
    }

    /// The data files at the pinned version.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn files(&self) -> Result<Vec<DataFile>, SinkError> {
        match &self.table {
            Some(t) => live_files(t, self.name, self.partition_columns).await,
            None => Ok(Vec::new()),
        }
    }

    /// Read `columns` (partition columns included) of every row of `files`: the
    /// batches of each file, in the order of `files`.
    ///
    /// # Errors
    /// Storage errors (transient); unreadable files (internal).
    pub async fn read_files(
        &self,
        files: &[DataFile],
        columns: &[&str],
    ) -> Result<Vec<Vec<RecordBatch>>, SinkError> {
        self.read_files_each(files, columns, |b| b).await
    }

    /// As [`read_files`](Self::read_files), with `each` applied to each file's
    /// batches as soon as it is read (in the order of `files`), so that only what
    /// `each` returns is held: how a large partition is read a share at a time.
    ///
    /// # Errors
    /// As [`read_files`](Self::read_files).
    pub async fn read_files_each<T>(
        &self,
        files: &[DataFile],
        columns: &[&str],
        each: impl FnMut(Vec<RecordBatch>) -> T,
    ) -> Result<Vec<T>, SinkError> {
        let Some(table) = &self.table else {
            return Ok(Vec::new());
        };
        let schema = table
            .snapshot()
            .map_err(transient(self.name))?
            .snapshot()
            .arrow_schema();
        read_files_each(
            table,
            self.name,
            &schema,
            self.partition_columns,
            files,
            columns,
            each,
        )
        .await
    }

    /// When the commit of `version` was written (milliseconds since the epoch).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn commit_time_ms(&self, version: u64) -> Result<Option<i64>, SinkError> {
        let name = self.name;
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let Some(actions) = read_commit(table, name, version).await? else {
            return Ok(None);
        };
        Ok(actions.iter().find_map(|a| match a {
            Action::CommitInfo(info) => info.timestamp,
            _ => None,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use deltalake::datafusion::prelude::{col, lit};
    use std::sync::Arc;

    /// A small derived table (`tenant`, `v`) partitioned by tenant, for tests.
    pub(crate) fn spec() -> DerivedSpec {
        DerivedSpec {
            name: "agg",
            schema: Arc::new(Schema::new(vec![
                Field::new("tenant", DataType::Utf8, false),
                Field::new("v", DataType::Int32, false),
            ])),
            partition_columns: &["tenant"],
            properties: &[],
        }
    }

    fn rows(pairs: &[(&str, i32)]) -> RecordBatch {
        RecordBatch::try_new(
            spec().schema,
            vec![
                Arc::new(StringArray::from_iter_values(pairs.iter().map(|p| p.0))),
                Arc::new(Int32Array::from_iter_values(pairs.iter().map(|p| p.1))),
            ],
        )
        .unwrap()
    }

    fn parts(names: &[&str]) -> BTreeSet<Partition> {
        names.iter().map(|n| vec![(*n).to_owned()]).collect()
    }

    async fn contents(t: &DerivedTable) -> Vec<(String, i32)> {
        let batches = t.scan(&["tenant", "v"], lit(true)).await.unwrap();
        let mut out: Vec<(String, i32)> = batches
            .iter()
            .flat_map(|b| {
                let t = b.column(0).as_string::<i32>().clone();
                let v = b.column(1).as_primitive::<Int32Type>().clone();
                (0..b.num_rows())
                    .map(move |i| (t.value(i).to_owned(), v.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn partitions_are_replaced_whole_and_progress_travels_with_them() {
        let (_dir, lake) = crate::lake::temporary_lake();
        let mut t = DerivedTable::open_or_create(&lake, spec()).await.unwrap();
        assert_eq!(t.progress("p").await.unwrap(), None);
        let first = t
            .replace(
                &[rows(&[("a", 1), ("b", 2)])],
                &parts(&["a", "b"]),
                Some(("p", 5)),
            )
            .await
            .unwrap();
        assert_eq!(t.progress("p").await.unwrap(), Some(5));
        // Replacing a partition replaces its rows; others stay; the same call twice
        // gives the same table.
        for _ in 0..2 {
            t.replace(&[rows(&[("a", 10), ("a", 11)])], &parts(&["a"]), None)
                .await
                .unwrap();
            assert_eq!(
                contents(&t).await,
                vec![("a".into(), 10), ("a".into(), 11), ("b".into(), 2)]
            );
        }
        assert_eq!(t.progress("p").await.unwrap(), Some(5));
        // A partition without new rows is emptied.
        let emptied = t
            .replace(&[], &parts(&["b"]), Some(("p", 7)))
            .await
            .unwrap();
        assert_eq!(emptied.files_removed, 1);
        assert_eq!(contents(&t).await, vec![("a".into(), 10), ("a".into(), 11)]);
        assert_eq!(t.partitions().await.unwrap(), parts(&["a"]));
        assert_eq!(t.progress("p").await.unwrap(), Some(7));
        // Rewriting named files: refused (transiently, nothing written) when the
        // table moved past the version the caller knows; else those files go and
        // the new rows come, in one commit.
        let known = t.version();
        let files = t.files().await.unwrap();
        assert_eq!(files.len(), 1);
        let stale = t
            .rewrite(
                &[&[rows(&[("a", 12)])][..]],
                &files,
                &parts(&["a"]),
                None,
                known.map(|v| v - 1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(stale, SinkError::Moved { .. }) && stale.is_transient(),
            "{stale}"
        );
        assert_eq!(t.version(), known);
        let done = t
            .rewrite(
                &[&[rows(&[("a", 12)])][..]],
                &files,
                &parts(&["a"]),
                None,
                known,
            )
            .await
            .unwrap();
        assert_eq!((done.files_added, done.files_removed), (1, 1));
        assert_eq!(contents(&t).await, vec![("a".into(), 12)]);
        assert_eq!(t.files().await.unwrap(), done.added);
        // Groups get files of their own: one group's file is rewritten later
        // without the other's.
        let grouped = t
            .rewrite(
                &[&[rows(&[("a", 13)])][..], &[], &[rows(&[("a", 14)])][..]],
                &done.added,
                &parts(&["a"]),
                None,
                t.version(),
            )
            .await
            .unwrap();
        assert_eq!((grouped.files_added, grouped.files_removed), (2, 1));
        assert_eq!(contents(&t).await, vec![("a".into(), 13), ("a".into(), 14)]);
        let first_group = t.read_files(&grouped.added[..1], &["v"]).await.unwrap();
        assert_eq!(
            first_group[0].iter().map(|b| b.num_rows()).sum::<usize>(),
            1
        );
        t.rewrite(
            &[&[]],
            &grouped.added[..1],
            &parts(&["a"]),
            None,
            t.version(),
        )
        .await
        .unwrap();
        assert_eq!(contents(&t).await, vec![("a".into(), 14)]);
        t.replace(
            &[rows(&[("a", 10), ("a", 11)])],
            &parts(&["a"]),
            Some(("p", 7)),
        )
        .await
        .unwrap();

        // Rows outside the partitions being replaced are refused.
        let err = t
            .replace(&[rows(&[("c", 1)])], &parts(&["a"]), None)
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");

        // Read as a source: which partitions changed after the first commit (rows
        // replaced: only the whole partition tells), and in the first commit (files
        // added, readable one by one with their partition column).
        let mut source = SourceTable::new(&lake, "agg", &["tenant"]);
        let latest = source.refresh().await.unwrap().unwrap();
        let v1 = first.version.unwrap();
        let after_first = source.changes(v1 as i64, latest).await.unwrap().unwrap();
        assert_eq!(
            after_first.data,
            BTreeMap::from([
                (vec!["a".to_owned()], crate::Change::Whole),
                (vec!["b".to_owned()], crate::Change::Whole)
            ])
        );
        let in_first = source.changes(v1 as i64 - 1, v1).await.unwrap().unwrap();
        assert_eq!(in_first.data.len(), 2);
        for (partition, change) in &in_first.data {
            let crate::Change::Added(files) = change else {
                panic!("{partition:?}: {change:?}");
            };
            let batches = t
                .read_files(files, &["v", "tenant"])
                .await
                .unwrap()
                .concat();
            let rows: Vec<(String, i32)> = batches
                .iter()
                .flat_map(|b| {
                    let v = b.column(0).as_primitive::<Int32Type>().clone();
                    let t = b.column(1).as_string::<i32>().clone();
                    (0..b.num_rows())
                        .map(move |i| (t.value(i).to_owned(), v.value(i)))
                        .collect::<Vec<_>>()
                })
                .collect();
            let expected = if partition[0] == "a" { 1 } else { 2 };
            assert_eq!(rows, vec![(partition[0].clone(), expected)]);
        }
        assert_eq!(
            source.changes(latest as i64, latest).await.unwrap(),
            Some(crate::Changes::default())
        );
        let scanned = source
            .scan(&["v"], col("tenant").eq(lit("a")))
            .await
            .unwrap();
        assert_eq!(scanned.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        assert!(source.commit_time_ms(latest).await.unwrap().is_some());

        // A source table that does not exist yet.
        let mut missing = SourceTable::new(&lake, "nothing", &["tenant"]);
        assert_eq!(missing.refresh().await.unwrap(), None);
    }
}
