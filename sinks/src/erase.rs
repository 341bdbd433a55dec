//! Removing rows for good: erasure and retention in a Parquet lake.
//!
//! Delta tables are copy-on-write. Removing rows means writing new files without
//! them and committing `remove` actions for the old ones; the old files stay in
//! storage (for time travel) until VACUUM deletes them. Erasure cannot wait for the
//! usual retention, so [`purge`] vacuums with no retention at all.
//!
//! [`remove_rows`] is a DELETE of our own rather than delta-rs' `DELETE ... WHERE`:
//! - the predicate would be written into the commit's `operationParameters`, that
//!   is, the subject's id would be stored in the Delta log for good;
//! - it reads only the columns the predicate needs, and rewrites only the files
//!   that hold a matching row (a file of which every row matches is just removed);
//! - it reports exactly what it did (rows, files rewritten, files removed).
//!
//! The commit has no read predicate, so concurrent appends (the pipeline keeps
//! writing) never conflict with it; a concurrent removal of the same files does,
//! and the caller retries.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchReader, StringArray,
};
use arrow::compute::{cast, filter_record_batch, not};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Action;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use tracing::debug;

use crate::delta::{transient, writer_properties};
use crate::derived::commit_or_discard;
use crate::write::write_files;
use crate::SinkError;

/// Which rows to remove: given a batch of the requested columns of one file, true
/// for each row to remove. The batch holds the columns in the file's order, not
/// the order they were requested in: look them up by name.
pub type RowMatcher<'a> = &'a (dyn Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync);

/// Which files to look at (or, for [`remove_files`], to remove): given a file's
/// partition values.
pub type FileFilter<'a> = &'a (dyn Fn(&HashMap<String, Option<String>>) -> bool + Sync);

/// What a removal did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    pub rows_removed: u64,
    /// Files read to find matching rows.
    pub files_scanned: usize,
    /// Files replaced by a copy without the matching rows.
    pub files_rewritten: usize,
    /// Files removed without a replacement (every row matched).
    pub files_removed: usize,
    /// The commit, when anything was removed.
    pub version: Option<u64>,
}

impl Removal {
    pub fn changed(&self) -> bool {
        self.version.is_some()
    }
}

/// Remove the rows `matcher` selects from the files `files` selects. `columns` are
/// the (non-partition) columns `matcher` reads; `schema` is the table's full Arrow
/// schema, partition columns included; `reason` goes into the commit's metadata
/// (`meterline.reason`): it must not contain personal data.
///
/// # Errors
/// Storage errors and conflicts with a concurrent removal of the same files (both
/// transient: call again); unreadable files (internal).
pub async fn remove_rows(
    table: &mut DeltaTable,
    name: &'static str,
    schema: &SchemaRef,
    columns: &[&str],
    files: FileFilter<'_>,
    matcher: RowMatcher<'_>,
    reason: &str,
) -> Result<Removal, SinkError> {
    upsert(
        table,
        name,
        schema,
        columns,
        files,
        matcher,
        &[],
        &[],
        reason,
    )
    .await
}

/// [`remove_rows`], and append `rows` plus `progress` (app id, version) actions in
/// the same commit: replacing rows (a profile that changed) atomically.
///
/// # Errors
/// As [`remove_rows`].
#[allow(clippy::too_many_arguments)]
pub async fn upsert(
    table: &mut DeltaTable,
    name: &'static str,
    schema: &SchemaRef,
    columns: &[&str],
    files: FileFilter<'_>,
    matcher: RowMatcher<'_>,
    rows: &[RecordBatch],
    progress: &[(String, i64)],
    reason: &str,
) -> Result<Removal, SinkError> {
    let Some(candidates) = live_files(table, name).await? else {
        return Ok(Removal::default());
    };
    let uploaded_at = std::time::Instant::now();
    let store = table.object_store();
    let mut removal = Removal::default();
    let mut actions = Vec::new();
    // The table's partition columns, for writing kept rows back (file by file,
    // so an erasure holds one file's rows at a time).
    let partition_columns: Vec<String> = table
        .snapshot()
        .map_err(transient(name))?
        .metadata()
        .partition_columns()
        .to_vec();
    let partition_columns: Vec<&str> = partition_columns.iter().map(String::as_str).collect();
    let properties = writer_properties();
    for file in candidates {
        let partition = file.partition_values_map();
        if !files(&partition) {
            continue;
        }
        removal.files_scanned += 1;
        let bytes = store
            .get(&file.object_store_path())
            .await
            .map_err(|e| transient(name)(DeltaTableError::ObjectStore { source: e }))?
            .bytes()
            .await
            .map_err(|e| transient(name)(DeltaTableError::ObjectStore { source: e }))?;
        let mask = matches_in(&bytes, columns, matcher).map_err(internal(name))?;
        let hits = mask.true_count();
        if hits == 0 {
            continue;
        }
        removal.rows_removed += hits as u64;
        actions.push(Action::Remove(file.remove_action(true)));
        if hits == mask.len() {
            removal.files_removed += 1;
            continue;
        }
        removal.files_rewritten += 1;
        let kept = read_all(&bytes)
            .and_then(|b| filter_record_batch(&b, &not(&mask)?))
            .and_then(|b| with_partition_columns(&b, schema, &partition))
            .map_err(internal(name))?;
        let adds = write_files(table, &properties, &partition_columns, &[kept])
            .await
            .map_err(transient(name))?;
        actions.extend(adds.into_iter().map(Action::Add));
    }
    let adds = write_files(table, &properties, &partition_columns, rows)
        .await
        .map_err(transient(name))?;
    actions.extend(adds.into_iter().map(Action::Add));
    let now = chrono::Utc::now().timestamp_millis();
    actions.extend(progress.iter().map(|(app_id, version)| {
        Action::Txn(deltalake::kernel::Transaction::new_with_last_update(
            app_id,
            *version,
            Some(now),
        ))
    }));
    if actions.is_empty() {
        return Ok(removal);
    }
    removal.version = Some(commit_removal(table, name, actions, reason, uploaded_at).await?);
    debug!(
        table = name,
        rows = removal.rows_removed,
        rewritten = removal.files_rewritten,
        removed = removal.files_removed,
        reason,
        "rows removed"
    );
    Ok(removal)
}

/// Remove whole files, those `files` selects (for retention by partition: no file
/// is read or rewritten). The row count comes from the files' statistics.
///
/// # Errors
/// Storage errors and conflicts (transient).
pub async fn remove_files(
    table: &mut DeltaTable,
    name: &'static str,
    files: FileFilter<'_>,
    reason: &str,
) -> Result<Removal, SinkError> {
    let Some(candidates) = live_files(table, name).await? else {
        return Ok(Removal::default());
    };
    let mut removal = Removal::default();
    let mut actions = Vec::new();
    for file in candidates {
        if !files(&file.partition_values_map()) {
            continue;
        }
        removal.files_removed += 1;
        removal.rows_removed += file.num_records().unwrap_or(0) as u64;
        actions.push(Action::Remove(file.remove_action(true)));
    }
    if actions.is_empty() {
        return Ok(removal);
    }
    // Nothing uploaded: removes only.
    let now = std::time::Instant::now();
    removal.version = Some(commit_removal(table, name, actions, reason, now).await?);
    Ok(removal)
}

/// Delete, now, every file the table has removed (by erasure, retention or
/// replacement) that is still in storage: a VACUUM without retention, of
/// tombstoned files only (files being uploaded by a writer are not touched).
/// Readers of an older version may find a file gone; that is what erasure means.
/// Returns the number of files deleted.
///
/// # Errors
/// Storage errors (transient).
pub async fn purge(table: &mut DeltaTable, name: &'static str) -> Result<usize, SinkError> {
    table.update_state().await.map_err(transient(name))?;
    if table.version().is_none() {
        return Ok(0);
    }
    let (vacuumed, metrics) = table
        .clone()
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .await
        .map_err(transient(name))?;
    *table = vacuumed;
    Ok(metrics.files_deleted.len())
}

/// Reload the table and list its files (`None` while it has no version).
async fn live_files(
    table: &mut DeltaTable,
    name: &'static str,
) -> Result<Option<Vec<deltalake::kernel::LogicalFileView>>, SinkError> {
    table.update_state().await.map_err(transient(name))?;
    if table.version().is_none() {
        return Ok(None);
    }
    let files = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(transient(name))?;
    Ok(Some(files))
}

async fn commit_removal(
    table: &mut DeltaTable,
    name: &'static str,
    actions: Vec<Action>,
    reason: &str,
    uploaded_at: std::time::Instant,
) -> Result<u64, SinkError> {
    let properties = CommitProperties::default().with_metadata([(
        "meterline.reason".to_owned(),
        serde_json::Value::String(reason.to_owned()),
    )]);
    // No predicate: the operation parameters would keep it in the log.
    let operation = DeltaOperation::Delete { predicate: None };
    let finalized =
        commit_or_discard(table, name, actions, operation, properties, uploaded_at).await?;
    let version = finalized.version();
    table.state = Some(finalized.snapshot());
    Ok(version)
}

fn internal(name: &'static str) -> impl Fn(ArrowError) -> SinkError {
    move |e| SinkError::Internal {
        table: name,
        error: Box::new(DeltaTableError::Generic(format!(
            "reading a data file: {e}"
        ))),
    }
}

/// The rows of one Parquet file that `matcher` selects, reading only `columns`.
fn matches_in(
    bytes: &bytes::Bytes,
    columns: &[&str],
    matcher: RowMatcher<'_>,
) -> Result<BooleanArray, ArrowError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    let reader = builder.with_projection(mask).build()?;
    let mut out: Vec<bool> = Vec::new();
    for batch in reader {
        let hits = matcher(&batch?)?;
        out.extend((0..hits.len()).map(|i| hits.is_valid(i) && hits.value(i)));
    }
    Ok(BooleanArray::from(out))
}

/// Every row of one Parquet file as one batch.
pub(crate) fn read_all(bytes: &bytes::Bytes) -> Result<RecordBatch, ArrowError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?.build()?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    arrow::compute::concat_batches(&schema, &batches)
}

/// The file's rows with the partition columns put back (Delta keeps them in the
/// path, not the file), in the table's column order.
pub(crate) fn with_partition_columns(
    batch: &RecordBatch,
    schema: &SchemaRef,
    partition: &HashMap<String, Option<String>>,
) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => cast(column, field.data_type()),
            None => match partition.get(field.name()).cloned().flatten() {
                Some(value) => cast(
                    &(Arc::new(StringArray::from(vec![value; rows])) as ArrayRef),
                    field.data_type(),
                ),
                None => Ok(new_null_array(field.data_type(), rows)),
            },
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DerivedSpec, DerivedTable};
    use arrow::array::{AsArray, Int32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use deltalake::datafusion::prelude::lit;
    use std::collections::BTreeSet;

    const SUBJECT: &str = "acct-erase-me-4711";

    fn spec() -> DerivedSpec {
        DerivedSpec {
            name: "people",
            schema: Arc::new(Schema::new(vec![
                Field::new("tenant", DataType::Utf8, false),
                Field::new("subject", DataType::Utf8, true),
                Field::new("v", DataType::Int32, false),
            ])),
            partition_columns: &["tenant"],
            properties: &[("delta.dataSkippingStatsColumns", "v")],
        }
    }

    fn rows(rows: &[(&str, Option<&str>, i32)]) -> RecordBatch {
        RecordBatch::try_new(
            spec().schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn files_on_disk(dir: &std::path::Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.insert(p.to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    fn is_subject(b: &RecordBatch) -> Result<BooleanArray, ArrowError> {
        let s = b.column(0).as_string::<i32>();
        Ok(s.iter().map(|v| Some(v == Some(SUBJECT))).collect())
    }

    #[tokio::test]
    async fn only_files_holding_the_subject_are_rewritten_and_the_old_ones_are_gone() {
        let (dir, lake) = crate::lake::temporary_lake();
        let mut t = DerivedTable::open_or_create(&lake, spec()).await.unwrap();
        // Three commits, four files: mixed (a), only others (a, b), only the subject (b).
        t.append(
            &[rows(&[
                ("a", Some(SUBJECT), 1),
                ("a", Some("other"), 2),
                ("b", Some("other"), 3),
            ])],
            &[],
        )
        .await
        .unwrap();
        t.append(&[rows(&[("a", None, 4), ("b", Some(SUBJECT), 5)])], &[])
            .await
            .unwrap();
        let before = files_on_disk(dir.path());
        assert_eq!(before.len(), 4);

        let schema = spec().schema;
        let removal = remove_rows(
            t.table_mut(),
            "people",
            &schema,
            &["subject"],
            &|_| true,
            &is_subject,
            "erasure",
        )
        .await
        .unwrap();
        assert_eq!(removal.rows_removed, 2);
        assert_eq!(removal.files_scanned, 4);
        assert_eq!(removal.files_rewritten, 1, "the mixed file only");
        assert_eq!(removal.files_removed, 1, "the subject-only file");

        // The others' rows are all there, with their partition values.
        let left = t
            .scan(&["tenant", "subject", "v"], lit(true))
            .await
            .unwrap();
        let mut seen: Vec<(String, Option<String>, i32)> = left
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    let s = b.column(1).as_string::<i32>();
                    (
                        b.column(0).as_string::<i32>().value(i).to_owned(),
                        s.is_valid(i).then(|| s.value(i).to_owned()),
                        b.column(2)
                            .as_primitive::<arrow::datatypes::Int32Type>()
                            .value(i),
                    )
                })
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("a".into(), None, 4),
                ("a".into(), Some("other".into()), 2),
                ("b".into(), Some("other".into()), 3),
            ]
        );

        // Until the purge the old files are still in storage; after it they are not.
        assert!(before.is_subset(&files_on_disk(dir.path())));
        let purged = purge(t.table_mut(), "people").await.unwrap();
        assert_eq!(purged, 2);
        let after = files_on_disk(dir.path());
        assert_eq!(
            before.intersection(&after).count(),
            2,
            "untouched files stay"
        );
        assert_eq!(after.len(), 3, "two untouched + one rewritten");

        // No byte of storage, log included, holds the subject's id any more.
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let bytes = std::fs::read(&p).unwrap();
                    assert!(
                        !bytes
                            .windows(SUBJECT.len())
                            .any(|w| w == SUBJECT.as_bytes()),
                        "{} still holds the subject",
                        p.display()
                    );
                }
            }
        }

        // Nothing matches any more: no commit.
        let again = remove_rows(
            t.table_mut(),
            "people",
            &schema,
            &["subject"],
            &|_| true,
            &is_subject,
            "erasure",
        )
        .await
        .unwrap();
        assert!(!again.changed());
    }
}
