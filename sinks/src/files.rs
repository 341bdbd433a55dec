//! The data files of a table, one by one: listing them, the files each commit
//! added, and reading chosen files (for work that knows which files it needs,
//! like the materializer's per-meter recomputation, instead of scanning
//! partitions).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Date32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use deltalake::kernel::Action;
use deltalake::{DeltaTable, DeltaTableError};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::delta::{storage_caused, transient};
use crate::derived::{partition_of, Partition};
use crate::SinkError;

/// Files read at once (object stores answer many small reads best in parallel).
const PARALLEL_READS: usize = 8;

/// A data file of a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataFile {
    /// Path relative to the table root, decoded (as in the log's JSON).
    pub path: String,
    /// Its partition values, in the table's partition column order.
    pub partition: Partition,
    pub size: u64,
    /// Rows, from the log statistics (`None`: written without them).
    pub rows: Option<u64>,
}

impl DataFile {
    fn location(&self) -> deltalake::Path {
        deltalake::Path::parse(&self.path).unwrap_or_else(|_| deltalake::Path::from(&*self.path))
    }
}

/// How a partition changed over a range of commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Files were only added: these.
    Added(Vec<DataFile>),
    /// Rows were removed or rewritten (a delete, an erasure, a retention sweep):
    /// only the whole partition tells what it holds now.
    Whole,
}

/// What changed in a table over a range of commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Partitions whose data changed.
    pub data: BTreeMap<Partition, Change>,
    /// Partitions whose files were reorganized without a change of data
    /// (compaction): a list of their files made before is out of date.
    pub reorganized: BTreeSet<Partition>,
}

/// The live data files of a table as loaded.
pub(crate) async fn live_files(
    table: &DeltaTable,
    name: &'static str,
    partition_columns: &[&str],
) -> Result<Vec<DataFile>, SinkError> {
    if table.version().is_none() {
        return Ok(Vec::new());
    }
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(transient(name))?;
    Ok(files
        .iter()
        .map(|f| DataFile {
            path: f.path().into_owned(),
            partition: partition_of(&f.partition_values_map(), partition_columns),
            size: u64::try_from(f.size()).unwrap_or(0),
            rows: f.num_records().map(|n| n as u64),
        })
        .collect())
}

/// A file added by a commit (or by a writer, before committing).
pub(crate) fn added_file(add: &deltalake::kernel::Add, partition_columns: &[&str]) -> DataFile {
    let values = add.partition_values.clone().into_iter().collect();
    DataFile {
        path: add.path.clone(),
        partition: partition_of(&values, partition_columns),
        size: u64::try_from(add.size).unwrap_or(0),
        rows: add
            .get_stats()
            .ok()
            .flatten()
            .map(|s| u64::try_from(s.num_records).unwrap_or(0)),
    }
}

/// Fold one commit's actions into `changes`.
pub(crate) fn fold_commit(actions: &[Action], partition_columns: &[&str], changes: &mut Changes) {
    for action in actions {
        match action {
            Action::Add(a) => {
                let file = added_file(a, partition_columns);
                if a.data_change {
                    match changes
                        .data
                        .entry(file.partition.clone())
                        .or_insert_with(|| Change::Added(Vec::new()))
                    {
                        Change::Added(files) => files.push(file),
                        Change::Whole => {}
                    }
                } else {
                    changes.reorganized.insert(file.partition);
                }
            }
            Action::Remove(r) => {
                let values = r
                    .partition_values
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let partition = partition_of(&values, partition_columns);
                if r.data_change {
                    changes.data.insert(partition, Change::Whole);
                } else {
                    changes.reorganized.insert(partition);
                }
            }
            _ => {}
        }
    }
}

/// Read `columns` (data or partition columns of `schema`, the table's) of `files`,
/// in that column order: each file's batches, in the order of `files`. Files are
/// read whole; the caller selects rows.
///
/// # Errors
/// Storage errors (transient); a file that is not Parquet of the table's columns
/// (internal).
pub(crate) async fn read_files(
    table: &DeltaTable,
    name: &'static str,
    schema: &SchemaRef,
    partition_columns: &[&str],
    files: &[DataFile],
    columns: &[&str],
) -> Result<Vec<Vec<RecordBatch>>, SinkError> {
    read_files_each(
        table,
        name,
        schema,
        partition_columns,
        files,
        columns,
        |b| b,
    )
    .await
}

/// As [`read_files`], with `each` applied to each file's batches as soon as the
/// file is read (in the order of `files`): what is kept of a file is all that
/// stays in memory of it, besides the few files read ahead.
///
/// # Errors
/// As [`read_files`].
pub(crate) async fn read_files_each<T>(
    table: &DeltaTable,
    name: &'static str,
    schema: &SchemaRef,
    partition_columns: &[&str],
    files: &[DataFile],
    columns: &[&str],
    each: impl FnMut(Vec<RecordBatch>) -> T,
) -> Result<Vec<T>, SinkError> {
    let fields = columns
        .iter()
        .map(|c| {
            schema
                .field_with_name(c)
                .cloned()
                .map_err(|e| internal(name, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));
    let store = table.object_store();
    futures::stream::iter(files.iter().cloned())
        .map(|file| {
            let store = store.clone();
            let out_schema = out_schema.clone();
            async move { read_file(store, name, &out_schema, partition_columns, &file).await }
        })
        .buffered(PARALLEL_READS)
        .map_ok(each)
        .try_collect::<Vec<T>>()
        .await
}

fn internal(name: &'static str, message: String) -> SinkError {
    SinkError::Internal {
        table: name,
        error: Box::new(DeltaTableError::Generic(message)),
    }
}

async fn read_file(
    store: Arc<dyn deltalake::ObjectStore>,
    name: &'static str,
    out_schema: &SchemaRef,
    partition_columns: &[&str],
    file: &DataFile,
) -> Result<Vec<RecordBatch>, SinkError> {
    let reader = FileReader {
        store,
        path: file.location(),
        size: file.size,
    };
    let parquet_error = |e: parquet::errors::ParquetError| {
        let error = Box::new(DeltaTableError::Generic(format!(
            "data file {}: {e}",
            file.path
        )));
        if storage_caused(&e) {
            SinkError::Transient { table: name, error }
        } else {
            SinkError::Internal { table: name, error }
        }
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(parquet_error)?;
    let data: Vec<&str> = out_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|c| !partition_columns.contains(c))
        .collect();
    let mask = ProjectionMask::columns(builder.parquet_schema(), data.iter().copied());
    let stream = builder
        .with_projection(mask)
        .build()
        .map_err(parquet_error)?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(parquet_error)?;
    batches
        .iter()
        .map(|b| assemble(name, out_schema, partition_columns, file, b))
        .collect()
}

/// A file's batch in `out_schema`: its data columns (cast to the table's types)
/// and the partition columns from the file's partition values.
fn assemble(
    name: &'static str,
    out_schema: &SchemaRef,
    partition_columns: &[&str],
    file: &DataFile,
    batch: &RecordBatch,
) -> Result<RecordBatch, SinkError> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    for field in out_schema.fields() {
        let column = if let Some(i) = partition_columns.iter().position(|c| c == field.name()) {
            partition_column(field.data_type(), file.partition.get(i), rows)
                .ok_or_else(|| internal(name, format!("partition column {}", field.name())))?
        } else {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                internal(
                    name,
                    format!("data file {} has no column {}", file.path, field.name()),
                )
            })?;
            if column.data_type() == field.data_type() {
                column.clone()
            } else {
                arrow::compute::cast(column, field.data_type())
                    .map_err(|e| internal(name, e.to_string()))?
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(out_schema.clone(), columns).map_err(|e| internal(name, e.to_string()))
}

/// A partition column of `rows` rows (Delta writes the value in the path and the
/// log, not in the file). `None` for a type partitions of ours never have.
fn partition_column(data_type: &DataType, value: Option<&String>, rows: usize) -> Option<ArrayRef> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Some(new_null_array(data_type, rows));
    };
    match data_type {
        DataType::Utf8 => Some(Arc::new(StringArray::from(vec![value.as_str(); rows]))),
        DataType::Date32 => {
            let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
            let days = i32::try_from((date - epoch).num_days()).ok()?;
            Some(Arc::new(Date32Array::from(vec![days; rows])))
        }
        _ => None,
    }
}

/// Reads a data file of known size from the object store (the footer with one
/// ranged read, no HEAD request).
struct FileReader {
    store: Arc<dyn deltalake::ObjectStore>,
    path: deltalake::Path,
    size: u64,
}

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(store_error)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
