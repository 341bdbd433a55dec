//! The `dead_letters` table: records that could not become readings, with a reason.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use meterline_operators::DeadLetter;

use crate::delta::TableSpec;

/// Schema of `dead_letters`.
pub static DEAD_LETTERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, true),
        Field::new("source_topic", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, true),
        Field::new("payload_bytes", DataType::Int64, false),
        Field::new("dead_lettered_at", ts, false),
    ]))
});

/// The table spec of `dead_letters`.
pub fn dead_letters_spec() -> TableSpec {
    TableSpec {
        name: "dead_letters",
        schema: DEAD_LETTERS.clone(),
        partition_columns: &[],
        // Statistics only on positions and times: payload text never enters the log.
        properties: &[
            (
                "delta.dataSkippingStatsColumns",
                "source_partition,source_offset,reason,dead_lettered_at",
            ),
            ("delta.deletedFileRetentionDuration", "interval 1 days"),
        ],
        partition_column: "source_partition",
        offset_column: "source_offset",
    }
}

/// Turn dead letters into a batch of the `dead_letters` schema.
pub fn dead_letter_batch(topic: &str, letters: &[DeadLetter], now_micros: i64) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter(
            letters.iter().map(|d| d.tenant.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(letters.iter().map(|_| topic))),
        Arc::new(Int32Array::from_iter_values(
            letters.iter().map(|d| d.partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            letters.iter().map(|d| d.offset),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            letters.iter().map(|d| d.detail.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            letters.iter().map(|d| d.payload.as_deref()),
        )),
        Arc::new(Int64Array::from_iter_values(
            letters
                .iter()
                .map(|d| i64::try_from(d.payload_bytes).unwrap_or(i64::MAX)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(letters.iter().map(|_| now_micros))
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(DEAD_LETTERS.clone(), columns).expect("dead letter columns match schema")
}

/// The table spec of `readings`.
pub fn readings_spec() -> TableSpec {
    TableSpec {
        name: "readings",
        schema: meterline_operators::schema::READINGS.clone(),
        partition_columns: &["tenant", "local_date"],
        // Statistics (min/max in the Delta log) only on non-identifying columns: the
        // log outlives DELETE + VACUUM, so identifiers must never be in it.
        properties: &[
            (
                "delta.dataSkippingStatsColumns",
                "quantity,direction,interval_start,resolution_minutes,value,version,ingested_at,source_partition,source_offset",
            ),
            ("delta.deletedFileRetentionDuration", "interval 1 days"),
        ],
        partition_column: "source_partition",
        offset_column: "source_offset",
    }
}
