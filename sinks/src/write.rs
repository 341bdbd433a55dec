//! The data files of an append, written one table partition at a time.
//!
//! deltalake's `RecordBatchWriter::write` splits a batch by partition and keeps a
//! Parquet writer open for every partition until `flush`: column encoders,
//! compression contexts (parquet's zstd codec holds a decompression context of
//! about 100 KB per column) and the upload buffer. A backfill flush that spans a
//! year of dates held 365 of them at once. Here the rows are grouped by partition
//! first, and each partition's file is finished before the next is begun, so the
//! writer holds one partition whatever the flush spans. Each partition still gets
//! one file per append.
//!
//! Within a file, the rows of a table with a `meter` column are ordered by meter,
//! then by time ([`CLUSTER_BY`]). With the meter column's page statistics (see
//! `delta::writer_properties`), a query for one meter reads the few pages that
//! hold it instead of the whole file: the Parquet page index prunes the rest.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::row::{RowConverter, SortField};
use buoyant_kernel::expressions::Scalar;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::Add;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableError};
use indexmap::IndexMap;

/// The sort order of the rows in a file of a table with a `meter` column: by
/// meter, then by the first of these time columns the table has.
pub(crate) const CLUSTER_BY: [&str; 4] = ["meter", "interval_start", "hour_start", "month"];

/// One partition's rows and its partition values.
struct Group {
    values: IndexMap<String, Scalar>,
    batches: Vec<RecordBatch>,
}

/// Write `batches` (rows of `table`'s schema, partition columns included) as data
/// files, one partition at a time; their `add` actions, not yet committed.
///
/// # Errors
/// Storage errors, and rows that do not fit the table's schema.
pub(crate) async fn write_files(
    table: &DeltaTable,
    properties: &WriterProperties,
    partition_columns: &[&str],
    batches: &[RecordBatch],
) -> Result<Vec<Add>, DeltaTableError> {
    let mut writer =
        RecordBatchWriter::for_table(table)?.with_writer_properties(properties.clone());
    let mut adds = Vec::new();
    for group in by_partition(batches, partition_columns)?.into_values() {
        let batch = match group.batches.as_slice() {
            [one] => one.clone(),
            many => concat_batches(&many[0].schema(), many)?,
        };
        let batch = clustered(batch)?;
        writer
            .write_partition(batch, &group.values, WriteMode::Default)
            .await?;
        adds.extend(writer.flush().await?);
    }
    Ok(adds)
}

/// `batch` ordered by [`CLUSTER_BY`] when it has a `meter` column; as it is
/// otherwise.
fn clustered(batch: RecordBatch) -> Result<RecordBatch, DeltaTableError> {
    if batch.column_by_name(CLUSTER_BY[0]).is_none() || batch.num_rows() < 2 {
        return Ok(batch);
    }
    let meter_and_time: Vec<SortColumn> = CLUSTER_BY
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .take(2)
        .map(|values| SortColumn {
            values: values.clone(),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&meter_and_time, None)?;
    Ok(take_record_batch(&batch, &order)?)
}

/// The rows of `batches` grouped by their partition columns' values, in the
/// order of those values (a group keeps the rows' order).
fn by_partition(
    batches: &[RecordBatch],
    partition_columns: &[&str],
) -> Result<BTreeMap<Vec<u8>, Group>, DeltaTableError> {
    let mut groups: BTreeMap<Vec<u8>, Group> = BTreeMap::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let columns = partition_columns
            .iter()
            .map(|name| {
                batch.column_by_name(name).cloned().ok_or_else(|| {
                    DeltaTableError::generic(format!("partition column {name} missing"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if columns.is_empty() {
            groups
                .entry(Vec::new())
                .or_insert_with(|| Group {
                    values: IndexMap::new(),
                    batches: Vec::new(),
                })
                .batches
                .push(batch.clone());
            continue;
        }
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let keys = converter.convert_columns(&columns)?;
        let mut rows: HashMap<_, Vec<u32>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let i = u32::try_from(i).map_err(|_| DeltaTableError::generic("batch too large"))?;
            rows.entry(key).or_default().push(i);
        }
        for (key, indices) in rows {
            let first = indices[0] as usize;
            let group = match groups.entry(key.as_ref().to_vec()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let values = partition_columns
                        .iter()
                        .zip(&columns)
                        .map(|(name, column)| {
                            Scalar::from_array(column, first)
                                .map(|v| ((*name).to_owned(), v))
                                .ok_or_else(|| {
                                    DeltaTableError::generic(format!(
                                        "partition column {name}: unsupported value"
                                    ))
                                })
                        })
                        .collect::<Result<IndexMap<_, _>, _>>()?;
                    e.insert(Group {
                        values,
                        batches: Vec::new(),
                    })
                }
            };
            let rows = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices))?
            };
            group.batches.push(rows);
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Date32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::delta::open_or_create_table;

    fn batch(schema: &Arc<Schema>, rows: &[(&str, i32, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn each_partition_gets_one_file_with_its_rows_in_order() {
        let (dir, lake) = crate::lake::temporary_lake();
        let schema = Arc::new(Schema::new(vec![
            Field::new("tenant", DataType::Utf8, false),
            Field::new("day", DataType::Date32, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let table = open_or_create_table(&lake, "t", &schema, &["tenant", "day"], &[])
            .await
            .unwrap();
        // Partitions interleaved within a batch and spread over two batches.
        let input = [
            batch(
                &schema,
                &[("a", 1, 10), ("b", 1, 20), ("a", 2, 30), ("a", 1, 11)],
            ),
            batch(&schema, &[("b", 1, 21), ("a", 1, 12)]),
            batch(&schema, &[]),
        ];
        let adds = write_files(
            &table,
            &crate::delta::writer_properties(),
            &["tenant", "day"],
            &input,
        )
        .await
        .unwrap();

        // The oracle: the input's rows grouped by hand.
        let expected: BTreeMap<(String, String), Vec<i64>> = BTreeMap::from([
            (("a".into(), "1970-01-02".into()), vec![10, 11, 12]),
            (("a".into(), "1970-01-03".into()), vec![30]),
            (("b".into(), "1970-01-02".into()), vec![20, 21]),
        ]);
        let mut written = BTreeMap::new();
        for add in &adds {
            let value = |k: &str| add.partition_values[k].clone().unwrap();
            // Partition values here need no percent-encoding in the path.
            assert!(!add.path.contains('%'), "{}", add.path);
            let path = dir.path().join("t").join(&add.path);
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let reader =
                deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                    file, 1024,
                )
                .unwrap();
            let values: Vec<i64> = reader
                .flat_map(|b| {
                    b.unwrap()
                        .column_by_name("v")
                        .unwrap()
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            assert!(
                written
                    .insert((value("tenant"), value("day")), values)
                    .is_none(),
                "two files for one partition"
            );
        }
        assert_eq!(written, expected);
    }

    /// A file of a table with a meter column: rows by meter then time, the
    /// meter column with a page index whose pages cover ascending, disjoint meter
    /// ranges, and no meter value in the Delta log.
    #[tokio::test]
    async fn rows_are_clustered_by_meter_with_page_statistics_kept_out_of_the_log() {
        use arrow::array::TimestampMicrosecondArray;
        use arrow::datatypes::TimeUnit;
        use deltalake::parquet::file::page_index::column_index::ColumnIndexMetaData;
        use deltalake::parquet::file::reader::FileReader;
        use deltalake::parquet::file::serialized_reader::{
            ReadOptionsBuilder, SerializedFileReader,
        };

        let (dir, lake) = crate::lake::temporary_lake();
        let schema = Arc::new(Schema::new(vec![
            Field::new("tenant", DataType::Utf8, false),
            Field::new("day", DataType::Date32, false),
            Field::new("meter", DataType::Utf8, false),
            Field::new(
                "interval_start",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("v", DataType::Int64, false),
        ]));
        let table = open_or_create_table(
            &lake,
            "m",
            &schema,
            &["tenant", "day"],
            &[("delta.dataSkippingStatsColumns", "interval_start,v")],
        )
        .await
        .unwrap();
        // 200 meters x 24 hours, time-major (as traffic arrives), meters in a
        // scrambled order within each hour.
        let meters: Vec<String> = (0..200)
            .map(|i| format!("7070575000{:08}", (i * 7919) % 200))
            .collect();
        let mut rows: Vec<(String, i64, i64)> = Vec::new();
        for hour in 0..24_i64 {
            for (i, meter) in meters.iter().enumerate() {
                rows.push((meter.clone(), hour * 3_600_000_000, hour * 1000 + i as i64));
            }
        }
        let input = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "t"))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|_| 20_000))),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let adds = write_files(
            &table,
            &crate::delta::writer_properties(),
            &["tenant", "day"],
            &[input],
        )
        .await
        .unwrap();
        assert_eq!(adds.len(), 1);

        // The oracle: the input sorted by (meter, time) by hand.
        let mut expected = rows.clone();
        expected.sort();
        let path = dir.path().join("m").join(&adds[0].path);
        let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            std::fs::File::open(&path).unwrap(),
            8192,
        )
        .unwrap();
        let mut written: Vec<(String, i64, i64)> = Vec::new();
        for b in reader {
            let b = b.unwrap();
            let m = b.column_by_name("meter").unwrap().as_string::<i32>();
            let t = b
                .column_by_name("interval_start")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let v = b.column_by_name("v").unwrap().as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                written.push((m.value(i).to_owned(), t.value(i), v.value(i)));
            }
        }
        assert_eq!(written, expected);

        let file = SerializedFileReader::new_with_options(
            std::fs::File::open(&path).unwrap(),
            ReadOptionsBuilder::new().with_page_index().build(),
        )
        .unwrap();
        let metadata = file.metadata();
        let meter_column = metadata
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == "meter")
            .unwrap();
        let index = &metadata.column_index().expect("a page index")[0][meter_column];
        let ColumnIndexMetaData::BYTE_ARRAY(index) = index else {
            panic!("no meter statistics per page: {index:?}");
        };
        let pages = usize::try_from(index.num_pages()).unwrap();
        let expected_pages = rows.len().div_ceil(crate::delta::PAGE_ROWS);
        assert_eq!(pages, expected_pages);
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = (0..pages)
            .map(|p| {
                (
                    index.min_value(p).unwrap().to_vec(),
                    index.max_value(p).unwrap().to_vec(),
                )
            })
            .collect();
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "pages overlap: {pair:?}");
        }

        // What the commit writes to the log: statistics of time and value, never
        // a meter.
        let stats = adds[0].stats.clone().expect("statistics for the log");
        assert!(stats.contains("interval_start"), "{stats}");
        for meter in &meters {
            assert!(
                !stats.contains(meter.as_str()),
                "meter {meter} in the log: {stats}"
            );
        }
    }
}
