//! Exactly-once appends to a Delta table, keyed by Kafka offsets.
//!
//! Each Kafka partition `p` of topic `t` has an application id `meterline:t:p`. A
//! commit contains the new data files *and* a `txn` action `(app id, last offset)` for
//! every partition the flush covered. On start and on every assignment the consumer
//! seeks to `stored + 1`; rows at or below the stored offset are dropped before
//! writing. Together: every offset is in the table at most once and, once consumed
//! and flushed, at least once.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, Int64Type, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};
use tracing::{debug, info};

use crate::lake::Lake;
use crate::SinkError;

/// Test hook: when set, a commit of data files stalls forever after the upload
/// (before the commit), so a test can SIGKILL the process with uploaded files
/// that nothing references.
pub const COMMIT_STALL_ENV: &str = "METERLINE_FAILPOINT_COMMIT_STALL";

/// The shape of one table, fixed at creation.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Directory name under the lake root, also the SQL table name.
    pub name: &'static str,
    pub schema: SchemaRef,
    pub partition_columns: &'static [&'static str],
    /// Delta table properties set at creation (`delta.*`).
    pub properties: &'static [(&'static str, &'static str)],
    /// Column names holding the Kafka partition and offset of each row.
    pub partition_column: &'static str,
    pub offset_column: &'static str,
}

/// What an append did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Rows committed.
    pub rows: usize,
    /// The table version created, if anything was committed.
    pub version: Option<u64>,
}

/// A Delta table written exactly once per Kafka offset.
pub struct OffsetTable {
    spec: TableSpec,
    table: DeltaTable,
    topic: String,
    /// Per partition: the offset this writer believes is stored (None: nothing yet).
    expected: HashMap<i32, Option<i64>>,
    writer_properties: WriterProperties,
}

impl std::fmt::Debug for OffsetTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetTable")
            .field("table", &self.spec.name)
            .field("topic", &self.topic)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

pub(crate) fn transient(table: &'static str) -> impl FnOnce(DeltaTableError) -> SinkError {
    move |source| classify(table, source)
}

/// Storage and I/O failures are transient; everything else is internal.
pub(crate) fn classify(table: &'static str, source: DeltaTableError) -> SinkError {
    match &source {
        DeltaTableError::ObjectStore { .. }
        | DeltaTableError::Io { .. }
        | DeltaTableError::Transaction {
            source: TransactionError::ObjectStore { .. } | TransactionError::MaxCommitAttempts(_),
        } => SinkError::Transient {
            table,
            error: Box::new(source),
        },
        // Kernel and log-read errors wrap storage failures too (a table file that
        // cannot be fetched); retrying is the safe choice.
        DeltaTableError::KernelError(_) | DeltaTableError::Kernel { .. } => SinkError::Transient {
            table,
            error: Box::new(source),
        },
        // A Parquet or Arrow error whose cause is a failed upload (for example a
        // multipart upload cut off by an outage) is a storage error too.
        _ if storage_caused(&source) => SinkError::Transient {
            table,
            error: Box::new(source),
        },
        _ => SinkError::Internal {
            table,
            error: Box::new(source),
        },
    }
}

/// DataFusion reads strings as `Utf8View` and partition columns as dictionaries;
/// callers get plain `Utf8` (`Binary`) and the dictionaries' value types, what
/// Arrow writers and most consumers expect.
///
/// # Errors
/// A column that cannot be cast (not expected for these types).
pub fn plain_strings(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let plain = match field.data_type() {
            DataType::Dictionary(_, value) => Some(value.as_ref().clone()),
            other => Some(other.clone()),
        }
        .map(|t| match t {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            t => t,
        })
        .filter(|t| t != field.data_type());
        if let Some(plain) = plain {
            columns.push(arrow::compute::cast(column, &plain)?);
            fields.push(Field::new(field.name(), plain, field.is_nullable()));
        } else {
            columns.push(column.clone());
            fields.push(field.as_ref().clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
}

/// True if an object store or I/O error is anywhere in the error's cause chain.
pub(crate) fn storage_caused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<deltalake::ObjectStoreError>() || e.is::<std::io::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Open a table, creating it (with this schema, partitioning and properties) when
/// it does not exist yet. Safe when several processes start at once: a lost
/// creation race just loads the winner's table.
///
/// # Errors
/// Transient storage errors; [`SinkError::Internal`] if the existing table's
/// columns are not `schema`'s.
pub(crate) async fn open_or_create_table(
    lake: &Lake,
    name: &'static str,
    schema: &SchemaRef,
    partition_columns: &[&str],
    properties: &[(&str, &str)],
) -> Result<DeltaTable, SinkError> {
    let url = lake.table_url(name);
    if url.scheme() == "file" {
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path)
                .map_err(|e| SinkError::Config(format!("cannot create {}: {e}", path.display())))?;
        }
    }
    let mut table =
        DeltaTable::try_from_url_with_storage_options(url.clone(), lake.storage_options().clone())
            .await
            .map_err(transient(name))?;
    let wanted: StructType =
        schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| SinkError::Internal {
                table: name,
                error: Box::new(DeltaTableError::Generic(e.to_string())),
            })?;
    if table.version().is_none() {
        let mut create = table
            .create()
            .with_table_name(name)
            .with_columns(wanted.fields().cloned())
            .with_partition_columns(partition_columns.iter().copied())
            .with_save_mode(deltalake::protocol::SaveMode::Ignore);
        for (k, v) in properties {
            create = create.with_configuration_property(
                k.parse()
                    .map_err(|e: DeltaTableError| SinkError::Internal {
                        table: name,
                        error: Box::new(e),
                    })?,
                Some(*v),
            );
        }
        match create.await {
            Ok(created) => {
                info!(table = name, "created delta table");
                table = created;
            }
            Err(e) => {
                // Someone else may have created it concurrently: load theirs.
                debug!(table = name, error = %e, "create failed; loading existing table");
                table.load().await.map_err(transient(name))?;
            }
        }
    }
    let existing: StructType = table
        .snapshot()
        .map_err(transient(name))?
        .schema()
        .as_ref()
        .clone();
    let names = |s: &StructType| s.fields().map(|f| f.name().clone()).collect::<Vec<_>>();
    if names(&existing) != names(&wanted) {
        return Err(SinkError::Internal {
            table: name,
            error: Box::new(DeltaTableError::Generic(format!(
                "existing table has columns {:?}, meterline writes {:?}",
                names(&existing),
                names(&wanted)
            ))),
        });
    }
    Ok(table)
}

/// Run a DataFusion plan over a table as loaded (registered as `t`; no reload, so
/// the result is of exactly that version). Strings come back as `Utf8`; an empty
/// table gives no batches.
pub(crate) async fn query_table<F, Fut>(
    table: &DeltaTable,
    name: &'static str,
    plan: F,
) -> Result<Vec<RecordBatch>, SinkError>
where
    F: FnOnce(deltalake::datafusion::prelude::SessionContext) -> Fut,
    Fut: std::future::Future<
        Output = Result<
            deltalake::datafusion::prelude::DataFrame,
            deltalake::datafusion::error::DataFusionError,
        >,
    >,
{
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    let failed = |e: deltalake::datafusion::error::DataFusionError| {
        let error = Box::new(DeltaTableError::Generic(e.to_string()));
        if storage_caused(&e) {
            SinkError::Transient { table: name, error }
        } else {
            SinkError::Internal { table: name, error }
        }
    };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(transient(name))?;
    let provider = table.table_provider().await.map_err(failed)?;
    ctx.register_table("t", provider).map_err(failed)?;
    let batches = plan(ctx)
        .await
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    batches
        .iter()
        .map(|b| plain_strings(b).map_err(|e| failed(e.into())))
        .collect()
}

/// Rows per data page: with rows ordered by meter within a file (see
/// `write::CLUSTER_BY`), a day's file of 1,000 hourly meters has 24 pages per
/// column and one meter's rows lie in one or two of them.
pub(crate) const PAGE_ROWS: usize = 1024;

/// The writer settings of every table: zstd level 1; statistics per column chunk,
/// and per page for `meter` (the page index lets a query for one meter skip the
/// pages of the others; the rows are ordered by meter, see `write::CLUSTER_BY`);
/// pages of at most [`PAGE_ROWS`] rows; no dictionary for the columns whose
/// values are nearly all distinct (`value`, `source_offset`), where it only costs
/// hashing; no statistics for `device` and `subject`, which no query prunes by.
///
/// Meter statistics stay inside the data file, which holds the meter anyway and
/// is rewritten or deleted with its rows by erasure and retention. They never
/// reach the Delta log: no table lists an identifier in
/// `delta.dataSkippingStatsColumns`, because the log outlives DELETE + VACUUM.
pub(crate) fn writer_properties() -> WriterProperties {
    use deltalake::parquet::file::properties::EnabledStatistics;
    use deltalake::parquet::schema::types::ColumnPath;
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_dictionary_enabled(ColumnPath::from("source_offset"), false)
        .set_column_statistics_enabled(ColumnPath::from("meter"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("device"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("subject"), EnabledStatistics::None)
        .set_created_by("meterline".to_owned())
        .build()
}

impl OffsetTable {
    /// Open the table, creating it (with `spec`'s schema, partitioning and
    /// properties) when it does not exist yet. Safe when several processes start at
    /// once: a lost creation race just loads the winner's table.
    ///
    /// # Errors
    /// Transient storage errors; [`SinkError::Internal`] if the existing table's
    /// schema is not `spec`'s.
    pub async fn open_or_create(
        lake: &Lake,
        spec: TableSpec,
        topic: &str,
    ) -> Result<Self, SinkError> {
        let table = open_or_create_table(
            lake,
            spec.name,
            &spec.schema,
            spec.partition_columns,
            spec.properties,
        )
        .await?;
        Ok(Self {
            spec,
            table,
            topic: topic.to_owned(),
            expected: HashMap::new(),
            writer_properties: writer_properties(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The Delta application id recording a partition's offsets.
    pub fn app_id(&self, partition: i32) -> String {
        format!("meterline:{}:{}", self.topic, partition)
    }

    /// The table as last loaded (for queries in tests and tools).
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// Reload the table and read the stored offsets of `partitions`; they become this
    /// writer's expectations (the writer now owns these partitions).
    ///
    /// # Errors
    /// Transient storage errors.
    pub async fn load_offsets(
        &mut self,
        partitions: &[i32],
    ) -> Result<HashMap<i32, Option<i64>>, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        let mut out = HashMap::new();
        for &p in partitions {
            let v = self.stored_offset(p).await?;
            self.expected.insert(p, v);
            out.insert(p, v);
        }
        Ok(out)
    }

    async fn stored_offset(&self, partition: i32) -> Result<Option<i64>, SinkError> {
        let name = self.spec.name;
        let log_store = self.table.log_store();
        self.table
            .snapshot()
            .map_err(transient(name))?
            .transaction_version(log_store.as_ref(), self.app_id(partition))
            .await
            .map_err(transient(name))
    }

    /// Forget partitions this process no longer owns.
    pub fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.expected.remove(p);
        }
    }

    /// The offset this writer believes is stored for a partition.
    pub fn expected(&self, partition: i32) -> Option<i64> {
        self.expected.get(&partition).copied().flatten()
    }

    /// Drop rows whose offset is already stored (re-delivered after a restart or a
    /// rebalance). Returns the remaining rows and how many were dropped.
    ///
    /// # Errors
    /// [`SinkError::Internal`] if the batch lacks the partition/offset columns.
    pub fn filter_stored(&self, batch: &RecordBatch) -> Result<(RecordBatch, usize), SinkError> {
        let name = self.spec.name;
        let bad = |what: &str| SinkError::Internal {
            table: name,
            error: Box::new(DeltaTableError::Generic(format!(
                "batch has no {what} column"
            ))),
        };
        let partitions = batch
            .column_by_name(self.spec.partition_column)
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .ok_or_else(|| bad("partition"))?;
        let offsets = batch
            .column_by_name(self.spec.offset_column)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| bad("offset"))?;
        let keep: BooleanArray = partitions
            .values()
            .iter()
            .zip(offsets.values().iter())
            .map(|(p, o)| Some(self.expected(*p).is_none_or(|stored| *o > stored)))
            .collect();
        if keep.true_count() == batch.num_rows() {
            // The common case: nothing re-delivered; share the batch, no copy.
            return Ok((batch.clone(), 0));
        }
        let kept = filter_record_batch(batch, &keep).map_err(|e| SinkError::Internal {
            table: name,
            error: Box::new(e.into()),
        })?;
        let dropped = batch.num_rows() - kept.num_rows();
        Ok((kept, dropped))
    }

    /// Append `batches` and record `offsets` (partition -> last offset covered by this
    /// flush) in one Delta commit. Rows must already be filtered with
    /// [`filter_stored`](Self::filter_stored). Safe to call again with the same input
    /// after a transient error.
    ///
    /// # Errors
    /// - [`SinkError::Fenced`] when a partition's stored offset is not what this writer
    ///   expects (another process wrote it), or a concurrent commit touched it;
    /// - [`SinkError::Transient`] for storage failures (retry with backoff).
    pub async fn append(
        &mut self,
        batches: &[RecordBatch],
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<AppendOutcome, SinkError> {
        let name = self.spec.name;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // Only partitions that move forward need a txn action.
        let advancing: BTreeMap<i32, i64> = offsets
            .iter()
            .filter(|(p, o)| self.expected(**p).is_none_or(|stored| **o > stored))
            .map(|(p, o)| (*p, *o))
            .collect();
        if rows == 0 && advancing.is_empty() {
            return Ok(AppendOutcome::default());
        }

        // 1-2. Upload the data files (not yet visible: nothing references them),
        // then fence.
        let Some(mut actions) = self.upload_fenced(batches, rows, &advancing).await? else {
            return Ok(self.landed_earlier(&advancing, rows));
        };

        // 3. Commit files and offsets together.
        let uploads = crate::orphans::added_paths(&actions);
        let now_ms = chrono::Utc::now().timestamp_millis();
        actions.extend(advancing.iter().map(|(p, o)| {
            Action::Txn(Transaction::new_with_last_update(
                self.app_id(*p),
                *o,
                Some(now_ms),
            ))
        }));
        let operation = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: format!("meterline:{}", self.topic),
            epoch_id: now_ms,
        };
        let snapshot = self.table.snapshot().map_err(transient(name))?;
        debug!(table = name, rows, "data files uploaded; committing");
        let committed = CommitBuilder::from(CommitProperties::default())
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await;
        let finalized = match committed {
            Ok(f) => f,
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(conflict),
            }) => {
                debug!(table = name, %conflict, "commit conflict on owned partitions");
                // This attempt's commit did not land (an earlier one may have).
                crate::orphans::discard(&self.table, name, &uploads).await;
                return self.after_conflict(&advancing, rows).await;
            }
            Err(e) => {
                // The answer may have been lost after the commit landed: the log
                // says. Landed: the files are referenced; not: they are orphans.
                if !advancing.is_empty() {
                    if let Ok(outcome) = self.after_conflict(&advancing, rows).await {
                        return Ok(outcome);
                    }
                }
                if crate::orphans::landed(&self.table, &uploads).await == Some(false) {
                    crate::orphans::discard(&self.table, name, &uploads).await;
                }
                return Err(classify(name, e));
            }
        };
        let version = finalized.version();
        debug!(table = name, rows, version, "committed");
        self.table.state = Some(finalized.snapshot());
        for (p, o) in advancing {
            self.expected.insert(p, Some(o));
        }
        Ok(AppendOutcome {
            rows,
            version: Some(version),
        })
    }

    /// Upload the data files, then fence: the latest stored offsets must be the
    /// ones this writer expects. `None` when an earlier attempt of this very
    /// commit had landed (its response was lost: timeout, connection reset): the
    /// offsets it recorded are exactly this flush's, the rows are stored once,
    /// and this attempt's uploads are deleted. Uploads are deleted too when the
    /// fence fails, and uploaded again when they became too old to commit (see
    /// [`crate::orphans`]).
    async fn upload_fenced(
        &mut self,
        batches: &[RecordBatch],
        rows: usize,
        advancing: &BTreeMap<i32, i64>,
    ) -> Result<Option<Vec<Action>>, SinkError> {
        let mut actions = self.upload(batches, rows).await?;
        let uploaded_at = std::time::Instant::now();
        match self.fence(advancing).await {
            Ok(true) => {
                self.discard(&actions).await;
                return Ok(None);
            }
            Ok(false) => {}
            Err(e) => {
                self.discard(&actions).await;
                return Err(e);
            }
        }
        if std::env::var_os(COMMIT_STALL_ENV).is_some() && rows > 0 {
            tracing::warn!(
                table = self.spec.name,
                "failpoint: commit stalled after the upload"
            );
            std::future::pending::<()>().await;
        }
        // A writer paused between upload and commit must not reference files the
        // orphan sweep may have deleted meanwhile: upload them again.
        if crate::orphans::too_old(uploaded_at) {
            self.discard(&actions).await;
            actions = self.upload(batches, rows).await?;
        }
        Ok(Some(actions))
    }

    /// Delete the files `actions` add (their commit did not land).
    async fn discard(&self, actions: &[Action]) {
        crate::orphans::discard(
            &self.table,
            self.spec.name,
            &crate::orphans::added_paths(actions),
        )
        .await;
    }

    /// Write `batches` as data files of the table; their `add` actions.
    async fn upload(&self, batches: &[RecordBatch], rows: usize) -> Result<Vec<Action>, SinkError> {
        let name = self.spec.name;
        if rows == 0 {
            return Ok(Vec::new());
        }
        debug!(table = name, rows, "uploading data files");
        let adds = crate::write::write_files(
            &self.table,
            &self.writer_properties,
            self.spec.partition_columns,
            batches,
        )
        .await
        .map_err(transient(name))?;
        Ok(adds.into_iter().map(Action::Add).collect())
    }

    /// Compare the latest stored offsets with what this writer expects. True when
    /// they are already the `advancing` ones (an earlier attempt landed);
    /// [`SinkError::Fenced`] when another process moved a partition.
    async fn fence(&mut self, advancing: &BTreeMap<i32, i64>) -> Result<bool, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        let mut fenced = Vec::new();
        let mut landed = !advancing.is_empty();
        for (&p, &target) in advancing {
            let stored = self.stored_offset(p).await?;
            if stored != self.expected(p) {
                fenced.push(p);
            }
            landed &= stored == Some(target);
        }
        if landed {
            return Ok(true);
        }
        if !fenced.is_empty() {
            return Err(SinkError::Fenced {
                table: name,
                partitions: fenced,
            });
        }
        Ok(false)
    }

    /// A commit conflicted on owned partitions: either another writer committed
    /// them, or our own commit landed during an attempt whose answer was lost and
    /// the retry conflicted with it. The stored offsets tell which.
    async fn after_conflict(
        &mut self,
        advancing: &BTreeMap<i32, i64>,
        rows: usize,
    ) -> Result<AppendOutcome, SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        let mut ours = true;
        for (&p, &target) in advancing {
            ours &= self.stored_offset(p).await? == Some(target);
        }
        if ours {
            return Ok(self.landed_earlier(advancing, rows));
        }
        Err(SinkError::Fenced {
            table: name,
            partitions: advancing.keys().copied().collect(),
        })
    }

    /// Run a query over the latest version of the table (registered as `t`).
    /// Strings come back as `Utf8`.
    ///
    /// # Errors
    /// Storage errors (transient) and SQL errors (internal).
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, SinkError> {
        self.run(|ctx| async move { ctx.sql(sql).await }).await
    }

    /// Read `columns` of the rows matching `filter` (a DataFusion expression, so
    /// values need no quoting) from the latest version of the table.
    ///
    /// # Errors
    /// Storage errors (transient) and planning errors (internal).
    pub async fn scan(
        &mut self,
        columns: &[&str],
        filter: deltalake::datafusion::prelude::Expr,
    ) -> Result<Vec<RecordBatch>, SinkError> {
        let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        self.run(|ctx| async move {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            ctx.table("t").await?.filter(filter)?.select_columns(&names)
        })
        .await
    }

    async fn run<F, Fut>(&mut self, plan: F) -> Result<Vec<RecordBatch>, SinkError>
    where
        F: FnOnce(deltalake::datafusion::prelude::SessionContext) -> Fut,
        Fut: std::future::Future<
            Output = Result<
                deltalake::datafusion::prelude::DataFrame,
                deltalake::datafusion::error::DataFusionError,
            >,
        >,
    {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        query_table(&self.table, name, plan).await
    }

    /// Delete the rows where `column` (a timestamp) is before `cutoff`, then vacuum
    /// files removed longer ago than the table's `delta.deletedFileRetentionDuration`.
    /// Returns (rows deleted, files vacuumed).
    ///
    /// # Errors
    /// Storage errors (transient) and conflicts with a concurrent writer (retry later).
    pub async fn delete_before(
        &mut self,
        column: &str,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<(usize, usize), SinkError> {
        let name = self.spec.name;
        self.table.update_state().await.map_err(transient(name))?;
        if self.table.version().is_none() {
            return Ok((0, 0));
        }
        let predicate = format!(
            "{column} < '{}'",
            cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        let (table, metrics) = self
            .table
            .clone()
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(transient(name))?;
        self.table = table;
        let (table, vacuumed) = self.table.clone().vacuum().await.map_err(transient(name))?;
        self.table = table;
        Ok((
            metrics.num_deleted_rows.unwrap_or(0),
            vacuumed.files_deleted.len(),
        ))
    }

    /// Bookkeeping when a previous attempt of this commit is found in the log.
    fn landed_earlier(&mut self, advancing: &BTreeMap<i32, i64>, rows: usize) -> AppendOutcome {
        info!(
            table = self.spec.name,
            "an earlier attempt of this commit had landed; not writing it again"
        );
        for (&p, &o) in advancing {
            self.expected.insert(p, Some(o));
        }
        AppendOutcome {
            rows,
            version: self.table.version(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dead_letter_batch, dead_letters_spec};
    use meterline_operators::{DeadLetter, Reason};

    fn letter(offset: i64) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset,
            reason: Reason::UnknownTenant,
            detail: "field `tenant`: not a configured tenant".into(),
            tenant: None,
            payload: Some("{}".into()),
            payload_bytes: 2,
        }
    }

    #[tokio::test]
    async fn retention_deletes_old_dead_letters_only_and_keeps_offsets() {
        let (_dir, lake) = crate::lake::temporary_lake();
        let mut table = OffsetTable::open_or_create(&lake, dead_letters_spec(), "t")
            .await
            .unwrap();
        table.load_offsets(&[0]).await.unwrap();
        let now = chrono::Utc::now();
        let old = (now - chrono::Duration::days(20)).timestamp_micros();
        let recent = (now - chrono::Duration::days(2)).timestamp_micros();
        let batches = [
            dead_letter_batch("t", &[letter(0), letter(1)], old),
            dead_letter_batch("t", &[letter(2)], recent),
        ];
        table
            .append(&batches, &BTreeMap::from([(0, 2)]))
            .await
            .unwrap();
        let (deleted, _) = table
            .delete_before("dead_lettered_at", now - chrono::Duration::days(14))
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        let left = table
            .query("SELECT source_offset FROM t ORDER BY source_offset")
            .await
            .unwrap();
        let offsets: Vec<i64> = left
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(offsets, vec![2]);
        // The Kafka offsets recorded with the rows are untouched.
        assert_eq!(
            table.load_offsets(&[0]).await.unwrap().get(&0),
            Some(&Some(2))
        );
        // Nothing older left: a second pass deletes nothing.
        let (again, _) = table
            .delete_before("dead_lettered_at", now - chrono::Duration::days(14))
            .await
            .unwrap();
        assert_eq!(again, 0);
    }

    #[test]
    fn a_parquet_error_caused_by_a_failed_upload_is_transient() {
        let upload = deltalake::ObjectStoreError::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        let error = DeltaTableError::Parquet {
            source: deltalake::parquet::errors::ParquetError::External(Box::new(upload)),
        };
        assert!(classify("readings", error).is_transient());

        let bug = DeltaTableError::Parquet {
            source: deltalake::parquet::errors::ParquetError::General("bad schema".into()),
        };
        assert!(!classify("readings", bug).is_transient());
    }
}
