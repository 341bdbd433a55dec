//! `elhub_messages`: the Elhub adapter's registry of processed messages
//! (`meterline elhub ingest`). A message is registered after every record of it was
//! acknowledged by the broker, so a message in the registry is never published again:
//! re-delivery of the same file or message (same EMIF `Identification`, or the same Min
//! side file by its BLAKE3 hash) publishes nothing. The rows say nothing about a person:
//! ids, hashes and counts.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::DerivedSpec;

/// The registry's columns.
pub static ELHUB_MESSAGES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc = DataType::Timestamp(
        arrow::datatypes::TimeUnit::Microsecond,
        Some(meterline_operators::schema::UTC.into()),
    );
    Arc::new(Schema::new(vec![
        // `emif:<Identification>` or `minside:<BLAKE3 of the file>`.
        Field::new("message_key", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        // `e66` or `minside_csv`.
        Field::new("kind", DataType::Utf8, false),
        // BLAKE3 of the file's bytes.
        Field::new("document_hash", DataType::Utf8, false),
        Field::new("series", DataType::Int64, false),
        Field::new("refused_series", DataType::Int64, false),
        // reading/v1 records published.
        Field::new("records", DataType::Int64, false),
        Field::new("done_at", utc, false),
    ]))
});

/// The table.
#[must_use]
pub fn elhub_messages_spec() -> DerivedSpec {
    DerivedSpec {
        name: "elhub_messages",
        schema: ELHUB_MESSAGES.clone(),
        partition_columns: &[],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
    }
}

/// One processed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedMessage {
    pub message_key: String,
    pub tenant: String,
    pub kind: &'static str,
    pub document_hash: String,
    pub series: i64,
    pub refused_series: i64,
    pub records: i64,
    pub done_at_micros: i64,
}

/// The row of `m`.
///
/// # Errors
/// Arrow refusing the columns (a bug).
pub fn processed_batch(m: &ProcessedMessage) -> Result<RecordBatch, ArrowError> {
    let text = |s: &str| Arc::new(StringArray::from(vec![s.to_owned()])) as ArrayRef;
    let int = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
    RecordBatch::try_new(
        ELHUB_MESSAGES.clone(),
        vec![
            text(&m.message_key),
            text(&m.tenant),
            text(m.kind),
            text(&m.document_hash),
            int(m.series),
            int(m.refused_series),
            int(m.records),
            Arc::new(
                TimestampMicrosecondArray::from(vec![m.done_at_micros])
                    .with_timezone(meterline_operators::schema::UTC),
            ),
        ],
    )
}
