//! Arrow schemas of the batches that flow between operators and into the lake.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::decimal::{PRECISION, SCALE};

/// Time zone of every stored timestamp: instants are UTC; local dates are separate.
pub const UTC: &str = "UTC";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// Columns shared by the decoded and the stored form, after the identifier columns.
fn common_tail() -> Vec<Field> {
    vec![
        Field::new("quantity", DataType::Utf8, false),
        Field::new("direction", DataType::Utf8, false),
        Field::new("interval_start", ts(), false),
        Field::new("resolution_minutes", DataType::Int32, false),
        Field::new("local_date", DataType::Date32, false),
        Field::new("value", DataType::Decimal128(PRECISION, SCALE), false),
        Field::new("unit", DataType::Utf8, false),
        Field::new("quality", DataType::Utf8, false),
        Field::new("version", ts(), true),
        Field::new("area", DataType::Utf8, true),
        Field::new("ingested_at", ts(), false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
    ]
}

/// What `decode` produces: the message's fields, typed, identifiers still raw;
/// `flags` is a bit set (see [`crate::flags`]). This schema never reaches storage.
pub static DECODED: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("device_id", DataType::Utf8, false),
        Field::new("meter_id", DataType::Utf8, true),
        Field::new("subject", DataType::Utf8, true),
    ];
    fields.extend(common_tail());
    fields.push(Field::new("flags", DataType::UInt32, false));
    Arc::new(Schema::new(fields))
});

/// The `readings` table: what `anonymize` produces and the lake stores.
/// `meter` is a pseudonym (public tenants) or `meter_id`, else `device_id` (private);
/// `device` likewise; `subject` is null for public tenants; `flags` lists the
/// flags a reading passed with (see [`crate::flags`]).
pub static READINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("meter", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, true),
    ];
    fields.extend(common_tail());
    fields.push(Field::new("flags", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

/// Column indexes in [`DECODED`] and [`READINGS`] (same positions from `quantity` on).
pub mod col {
    pub const TENANT: usize = 0;
    pub const DEVICE_ID: usize = 1;
    pub const METER_ID: usize = 2;
    pub const SUBJECT: usize = 3;
    pub const QUANTITY: usize = 4;
    pub const INTERVAL_START: usize = 6;
    pub const LOCAL_DATE: usize = 8;
    pub const VALUE: usize = 9;
    pub const SOURCE_PARTITION: usize = 15;
    pub const RESOLUTION: usize = 7;
    pub const UNIT: usize = 10;
    pub const DIRECTION: usize = 5;
    pub const VERSION: usize = 12;
    pub const SOURCE_OFFSET: usize = 16;
    pub const FLAGS: usize = 17;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_indexes_match_schemas() {
        let d = &*DECODED;
        assert_eq!(d.field(col::TENANT).name(), "tenant");
        assert_eq!(d.field(col::DEVICE_ID).name(), "device_id");
        assert_eq!(d.field(col::METER_ID).name(), "meter_id");
        assert_eq!(d.field(col::SUBJECT).name(), "subject");
        assert_eq!(d.field(col::QUANTITY).name(), "quantity");
        assert_eq!(d.field(col::INTERVAL_START).name(), "interval_start");
        assert_eq!(d.field(col::LOCAL_DATE).name(), "local_date");
        assert_eq!(d.field(col::VALUE).name(), "value");
        assert_eq!(d.field(col::SOURCE_PARTITION).name(), "source_partition");
        assert_eq!(d.field(col::SOURCE_OFFSET).name(), "source_offset");
        assert_eq!(d.field(col::RESOLUTION).name(), "resolution_minutes");
        assert_eq!(d.field(col::UNIT).name(), "unit");
        assert_eq!(d.field(col::DIRECTION).name(), "direction");
        assert_eq!(d.field(col::VERSION).name(), "version");
        assert_eq!(d.field(col::FLAGS).name(), "flags");
        assert_eq!(READINGS.field(col::FLAGS).name(), "flags");
        assert_eq!(READINGS.fields().len(), d.fields().len());
        assert_eq!(READINGS.field(1).name(), "meter");
    }
}
