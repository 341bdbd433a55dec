//! Versions and corrections (Elhub semantics).
//!
//! Key: (tenant, meter, quantity, direction, interval_start). For a reading whose key
//! is already known (stored, or accepted earlier in this run):
//!
//! | incoming `version` vs current | outcome |
//! |---|---|
//! | newer | accepted: stored in `readings`, becomes the current value |
//! | equal, same value | duplicate: dropped, counted (`duplicate`) |
//! | equal, other value | conflict: dead letter `version_conflict` |
//! | older | ignored, counted (`superseded`) |
//!
//! A missing `version` is older than any version (two readings without a version
//! compare as equal). `readings` therefore holds each accepted version once, and the
//! current value of a key is its row with the highest version (`readings_current`).
//!
//! The index is pure; before classifying a batch the pipeline fills it from the lake
//! with the stored keys of the batch's (tenant, local date, meter) combinations not
//! loaded yet, and clears it when partitions move between processes. Its size is
//! bounded: when it holds more than the configured number of entries (keys, and the
//! (tenant, local date, meter) combinations marked loaded) it is cleared (after a
//! commit) and refilled on demand. A load marks at most that many combinations (the
//! rest are loaded again when met), so a batch of many dates and many meters cannot
//! blow the bound up by their product.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    Date32Type, Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType,
};

use crate::operator::OperatorError;
use crate::{FastMap, FastSet};

/// What `classify` did with a batch.
#[derive(Debug)]
pub struct Classified {
    /// New keys and newer versions, in input order.
    pub accepted: RecordBatch,
    pub duplicates: usize,
    pub superseded: usize,
    /// (source partition, source offset) of conflicting rows.
    pub conflicts: Vec<(i32, i64)>,
}

/// Current (version, value) per key, for the partitions loaded so far.
#[derive(Debug, Clone)]
pub struct VersionIndex {
    series: FastMap<String, u32>,
    current: FastMap<(u32, i64), (i64, i64)>,
    /// tenant -> local date -> meters whose stored keys are loaded; at most
    /// `max_keys` combinations (`loaded_len`).
    loaded: FastMap<String, FastMap<i32, FastSet<String>>>,
    loaded_len: usize,
    max_keys: usize,
    /// The series key of the last row looked up (reused: no allocation per row),
    /// and its id while `series` holds it. Rows of one meter come in runs (a day's
    /// values, a meter's history), so most rows compare with it and skip the hash.
    key_buf: String,
    last_id: Option<u32>,
}

/// Memory per key at the index's fullest, for the pipeline's memory bound. A key
/// is a 33-byte bucket of a hash table (32-byte entry and a control byte) that
/// keeps at most 7/8 of its power-of-two buckets filled, and doubles past that;
/// the index is full at such a fill level ([`VersionIndex::capacity`]), so at
/// worst, while the table last doubled, the old table (half the buckets) and the
/// new one were both held: 1.5 x 33 / (7/8) = 56.6 bytes per key.
pub const BYTES_PER_KEY: u64 = 57;

/// The keys an index configured for `max_keys` holds before it is cleared: the
/// most a hash table of power-of-two buckets holds without doubling, no more
/// than `max_keys` (1,835,008 for 2,000,000). A table left just short of a
/// doubling would hold twice the memory the keys need.
#[must_use]
pub fn capacity(max_keys: usize) -> usize {
    let mut buckets: usize = 8;
    while (buckets * 2) / 8 * 7 <= max_keys {
        buckets *= 2;
    }
    (buckets / 8 * 7).min(max_keys).max(1)
}

/// True if `key` is the series key `series_id` builds from `parts` (parts joined
/// by NUL), compared in place.
fn is_series_key(key: &str, parts: [&str; 4]) -> bool {
    let mut rest = key.as_bytes();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            match rest.split_first() {
                Some((0, tail)) => rest = tail,
                _ => return false,
            }
        }
        match rest.strip_prefix(part.as_bytes()) {
            Some(tail) => rest = tail,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Values are Decimal(18, 3): at most 10^18 - 1 thousandths, which fits an i64.
fn stored_value(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `version` as an ordered number: missing is older than everything.
const NO_VERSION: i64 = i64::MIN;

fn schema_error(column: &'static str) -> OperatorError {
    OperatorError::Schema {
        operator: "versions",
        column,
    }
}

/// The `tenant`, `local_date` and `meter` columns of a `readings` batch: a row's
/// (tenant, local date) partition and meter.
///
/// # Errors
/// A missing column or another type, reported for `operator`.
pub(crate) fn partition_columns<'a>(
    batch: &'a RecordBatch,
    operator: &'static str,
) -> Result<
    (
        &'a arrow::array::StringArray,
        &'a arrow::array::Date32Array,
        &'a arrow::array::StringArray,
    ),
    OperatorError,
> {
    let missing = |column| OperatorError::Schema { operator, column };
    let strings = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or(missing(name))
    };
    let date = batch
        .column_by_name("local_date")
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .ok_or(missing("local_date"))?;
    Ok((strings("tenant")?, date, strings("meter")?))
}

struct Columns<'a> {
    tenant: Option<&'a arrow::array::StringArray>,
    meter: &'a arrow::array::StringArray,
    quantity: &'a arrow::array::StringArray,
    direction: &'a arrow::array::StringArray,
    start: &'a arrow::array::TimestampMicrosecondArray,
    version: &'a arrow::array::TimestampMicrosecondArray,
    value: &'a arrow::array::Decimal128Array,
}

fn columns(batch: &RecordBatch, with_tenant: bool) -> Result<Columns<'_>, OperatorError> {
    let s = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or(schema_error(name))
    };
    let ts = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or(schema_error(name))
    };
    Ok(Columns {
        tenant: if with_tenant {
            Some(s("tenant")?)
        } else {
            None
        },
        meter: s("meter")?,
        quantity: s("quantity")?,
        direction: s("direction")?,
        start: ts("interval_start")?,
        version: ts("version")?,
        value: batch
            .column_by_name("value")
            .and_then(|c| c.as_primitive_opt::<Decimal128Type>())
            .ok_or(schema_error("value"))?,
    })
}

impl VersionIndex {
    /// An empty index holding at most [`capacity`]`(max_keys)` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            series: FastMap::default(),
            current: FastMap::default(),
            loaded: FastMap::default(),
            loaded_len: 0,
            max_keys: capacity(max_keys),
            key_buf: String::new(),
            last_id: None,
        }
    }

    /// Entries held, what the bound (`max_keys`) applies to: keys, plus the
    /// (tenant, local date, meter) combinations marked loaded.
    pub fn len(&self) -> usize {
        self.current.len() + self.loaded_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the index holds as many entries as it may: clear it (after a
    /// commit) before loading more.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_keys
    }

    /// Forget everything (partitions moved, or the bound was reached).
    pub fn clear(&mut self) {
        self.series.clear();
        self.last_id = None;
        self.current.clear();
        self.loaded.clear();
        self.loaded_len = 0;
    }

    /// The (tenant, local date, meter) combinations of a `readings` batch whose
    /// stored keys are not loaded yet.
    ///
    /// # Errors
    /// A batch without `tenant`, `local_date` or `meter`.
    pub fn missing(
        &self,
        batch: &RecordBatch,
    ) -> Result<BTreeSet<(String, i32, String)>, OperatorError> {
        let (tenant, date, meter) = partition_columns(batch, "versions")?;
        // Each combination is looked up once (a batch holds many rows per meter-day).
        let mut seen: FastSet<(&str, i32, &str)> = FastSet::default();
        let mut out = BTreeSet::new();
        for row in 0..batch.num_rows() {
            let key = (tenant.value(row), date.value(row), meter.value(row));
            if !seen.insert(key) {
                continue;
            }
            let (t, d, m) = key;
            let loaded = self
                .loaded
                .get(t)
                .and_then(|dates| dates.get(&d))
                .is_some_and(|meters| meters.contains(m));
            if !loaded {
                out.insert((t.to_owned(), d, m.to_owned()));
            }
        }
        Ok(out)
    }

    fn series_id(&mut self, tenant: &str, meter: &str, quantity: &str, direction: &str) -> u32 {
        let parts = [tenant, meter, quantity, direction];
        if let Some(id) = self.last_id.filter(|_| is_series_key(&self.key_buf, parts)) {
            return id;
        }
        let key = &mut self.key_buf;
        key.clear();
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                key.push('\u{0}');
            }
            key.push_str(part);
        }
        let id = if let Some(id) = self.series.get(key.as_str()) {
            *id
        } else {
            let next = self.series.len() as u32;
            self.series.insert(key.clone(), next);
            next
        };
        self.last_id = Some(id);
        id
    }

    /// Make room before loading: clear everything when the bound would be passed.
    pub fn make_room(&mut self) {
        if self.is_full() {
            self.clear();
        }
    }

    /// Record stored rows of a tenant (columns `meter`, `quantity`, `direction`,
    /// `interval_start`, `version`, `value`) read for `local_dates` x `meters`, and
    /// mark those combinations loaded (up to `max_keys` combinations in all; the
    /// others are reported by [`Self::missing`] again, and loading twice changes
    /// nothing). Several versions of a key may be given; the highest wins.
    ///
    /// # Errors
    /// Batches without those columns.
    pub fn load(
        &mut self,
        tenant: &str,
        local_dates: &[i32],
        meters: &[&str],
        stored: &[RecordBatch],
    ) -> Result<(), OperatorError> {
        for batch in stored {
            let c = columns(batch, false)?;
            for row in 0..batch.num_rows() {
                let id = self.series_id(
                    tenant,
                    c.meter.value(row),
                    c.quantity.value(row),
                    c.direction.value(row),
                );
                let version = if c.version.is_valid(row) {
                    c.version.value(row)
                } else {
                    NO_VERSION
                };
                let entry = (version, stored_value(c.value.value(row)));
                self.current
                    .entry((id, c.start.value(row)))
                    .and_modify(|e| {
                        if entry.0 > e.0 {
                            *e = entry;
                        }
                    })
                    .or_insert(entry);
            }
        }
        let combinations = local_dates
            .iter()
            .flat_map(|date| meters.iter().map(move |meter| (*date, *meter)));
        self.mark(tenant, combinations);
        Ok(())
    }

    /// Mark (local date, meter) combinations of a tenant loaded with no stored rows
    /// (known to have none, see `MeterPresence`), up to the bound like [`Self::load`].
    pub fn mark_empty(&mut self, tenant: &str, combinations: &[(i32, &str)]) {
        self.mark(tenant, combinations.iter().copied());
    }

    /// Mark combinations loaded, stopping at `max_keys` marks in all.
    fn mark<'a>(&mut self, tenant: &str, combinations: impl Iterator<Item = (i32, &'a str)>) {
        for (date, meter) in combinations {
            if self.loaded_len >= self.max_keys {
                return;
            }
            let added = self
                .loaded
                .entry(tenant.to_owned())
                .or_default()
                .entry(date)
                .or_default()
                .insert(meter.to_owned());
            self.loaded_len += usize::from(added);
        }
    }

    /// Classify a `readings` batch (in input order) against the index and add the
    /// accepted rows to it. Every partition of the batch must be loaded.
    ///
    /// # Errors
    /// Batches without the key, version or value columns.
    pub fn classify(&mut self, batch: &RecordBatch) -> Result<Classified, OperatorError> {
        let c = columns(batch, true)?;
        let tenant = c.tenant.ok_or(schema_error("tenant"))?;
        let partition = batch
            .column_by_name("source_partition")
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .ok_or(schema_error("source_partition"))?;
        let offset = batch
            .column_by_name("source_offset")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or(schema_error("source_offset"))?;
        let rows = batch.num_rows();
        let mut keep = Vec::with_capacity(rows);
        let (mut duplicates, mut superseded) = (0, 0);
        let mut conflicts = Vec::new();
        for row in 0..rows {
            let id = self.series_id(
                tenant.value(row),
                c.meter.value(row),
                c.quantity.value(row),
                c.direction.value(row),
            );
            let version = if c.version.is_valid(row) {
                c.version.value(row)
            } else {
                NO_VERSION
            };
            let value = stored_value(c.value.value(row));
            let accepted = match self.current.get(&(id, c.start.value(row))) {
                None => true,
                Some(&(v, _)) if version > v => true,
                Some(&(v, x)) if version == v && value == x => {
                    duplicates += 1;
                    false
                }
                Some(&(v, _)) if version == v => {
                    conflicts.push((partition.value(row), offset.value(row)));
                    false
                }
                Some(_) => {
                    superseded += 1;
                    false
                }
            };
            if accepted {
                self.current
                    .insert((id, c.start.value(row)), (version, value));
            }
            keep.push(accepted);
        }
        let accepted = if keep.iter().all(|k| *k) {
            batch.clone()
        } else {
            filter_record_batch(batch, &BooleanArray::from(keep)).map_err(|source| {
                OperatorError::Arrow {
                    operator: "versions",
                    source,
                }
            })?
        };
        Ok(Classified {
            accepted,
            duplicates,
            superseded,
            conflicts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use proptest::prelude::*;

    /// (meter, start, version, value) rows of tenant `t`, partition 0.
    fn batch(rows: &[(&str, i64, Option<i64>, i128)]) -> RecordBatch {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("tenant", DataType::Utf8, false),
            Field::new("meter", DataType::Utf8, false),
            Field::new("quantity", DataType::Utf8, false),
            Field::new("direction", DataType::Utf8, false),
            Field::new("interval_start", ts(), false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("version", ts(), true),
            Field::new("value", DataType::Decimal128(18, 3), false),
            Field::new("source_partition", DataType::Int32, false),
            Field::new("source_offset", DataType::Int64, false),
        ]));
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["t"; n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from(vec!["electricity"; n])),
            Arc::new(StringArray::from(vec!["import"; n])),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(vec![1; n])),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                    .with_precision_and_scale(18, 3)
                    .unwrap(),
            ),
            Arc::new(Int32Array::from(vec![0; n])),
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn newer_equal_older_and_conflicting_versions() {
        let mut index = VersionIndex::new(100);
        index
            .load("t", &[1], &["m"], &[batch(&[("m", 0, Some(10), 5)])])
            .unwrap();
        let out = index
            .classify(&batch(&[
                ("m", 0, Some(10), 5), // duplicate
                ("m", 0, Some(10), 6), // conflict
                ("m", 0, Some(9), 7),  // older
                ("m", 0, None, 7),     // no version: older than any
                ("m", 0, Some(11), 8), // newer
                ("m", 0, Some(11), 8), // now a duplicate of the newer one
                ("m", 3600, None, 1),  // new key
                ("m", 3600, None, 1),  // duplicate without versions
                ("m", 3600, None, 2),  // conflict without versions
            ]))
            .unwrap();
        assert_eq!(out.accepted.num_rows(), 2);
        assert_eq!(out.duplicates, 3);
        assert_eq!(out.superseded, 2);
        assert_eq!(out.conflicts, vec![(0, 1), (0, 8)]);
    }

    #[test]
    fn the_bound_clears_and_forgets_loaded_partitions() {
        let mut index = VersionIndex::new(2);
        index
            .load(
                "t",
                &[1],
                &["a", "b"],
                &[batch(&[("a", 0, None, 1), ("b", 0, None, 1)])],
            )
            .unwrap();
        assert!(index
            .missing(&batch(&[("a", 0, None, 1)]))
            .unwrap()
            .is_empty());
        index.make_room();
        assert!(index.is_empty());
        assert_eq!(
            index.missing(&batch(&[("a", 0, None, 1)])).unwrap().len(),
            1
        );
    }

    /// `load` marks the product of a batch's dates and meters: 1,000 x 1,000 would
    /// be a million combinations for a 2,000-row batch.
    #[test]
    fn a_load_marks_no_more_combinations_than_the_bound() {
        // 7,168 keys fill 8,192 buckets to 7/8: the index holds exactly that many.
        let mut index = VersionIndex::new(7_168);
        let dates: Vec<i32> = (0..1_000).rev().collect();
        let names: Vec<String> = (0..1_000).map(|m| format!("m{m}")).collect();
        let meters: Vec<&str> = names.iter().map(String::as_str).collect();
        index.load("t", &dates, &meters, &[]).unwrap();
        assert_eq!(index.len(), 7_168);
        let marked: usize = index
            .loaded
            .values()
            .flat_map(|d| d.values())
            .map(|m| m.len())
            .sum();
        assert_eq!(marked, 7_168);
        // Unmarked combinations are reported again; the bound clears the index.
        assert_eq!(
            index
                .missing(&batch(&[("m999", 0, None, 1)]))
                .unwrap()
                .len(),
            1
        );
        index.make_room();
        assert!(index.is_empty());
    }

    #[test]
    fn capacity_is_a_full_hash_table_within_the_configured_keys() {
        // hashbrown fills 7/8 of a power-of-two number of buckets, then doubles.
        assert_eq!(capacity(2_000_000), 7 * (1 << 21) / 8);
        assert_eq!(capacity(1_835_008), 1_835_008);
        assert_eq!(capacity(1_835_007), 7 * (1 << 20) / 8);
        assert_eq!(capacity(3), 3);
        assert_eq!(capacity(0), 1);
        // A table of that many keys has not doubled past that size.
        for max in [100_usize, 7_000, 1_000_000] {
            let keys = capacity(max);
            let mut map: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
            map.extend((0..keys as u64).map(|k| (k, k)));
            let buckets = (keys * 8 / 7).next_power_of_two();
            assert!(
                map.capacity() <= buckets / 8 * 7,
                "{max}: {}",
                map.capacity()
            );
        }
    }

    #[test]
    fn series_key_comparison_sees_where_parts_end() {
        let key = "t\u{0}ab\u{0}electricity\u{0}import";
        assert!(is_series_key(key, ["t", "ab", "electricity", "import"]));
        assert!(!is_series_key(key, ["t", "a", "belectricity", "import"]));
        assert!(!is_series_key(key, ["t", "ab", "electricity", "export"]));
        assert!(!is_series_key(key, ["t", "ab", "electricity", "impor"]));
        assert!(!is_series_key(
            key,
            ["t", "ab", "electricity", "import\u{0}"]
        ));
    }

    proptest! {
        /// Whatever the arrival order and batching, the accepted rows of a key end
        /// with the highest version (first arrival among equal versions), and every
        /// input row is accepted, a duplicate, superseded or a conflict.
        #[test]
        fn current_value_is_the_highest_version(
            rows in proptest::collection::vec((0usize..3, 0i64..3, proptest::option::of(0i64..4), 0i128..3), 1..40),
            split in 1usize..10,
        ) {
            let meters = ["a", "b", "c"];
            let input: Vec<(&str, i64, Option<i64>, i128)> =
                rows.iter().map(|(m, s, v, x)| (meters[*m], *s * 3600, *v, *x)).collect();
            let mut index = VersionIndex::new(1000);
            index.load("t", &[1], &["a", "b", "c"], &[]).unwrap();
            let mut current: HashMap<(&str, i64), (Option<i64>, i128)> = HashMap::new();
            let mut accounted = 0;
            for chunk in input.chunks(split) {
                let out = index.classify(&batch(chunk)).unwrap();
                accounted += out.accepted.num_rows() + out.duplicates + out.superseded + out.conflicts.len();
                let c = columns(&out.accepted, false).unwrap();
                for r in 0..out.accepted.num_rows() {
                    let v = c.version.is_valid(r).then(|| c.version.value(r));
                    current.insert((if c.meter.value(r) == "a" { "a" } else if c.meter.value(r) == "b" { "b" } else { "c" }, c.start.value(r)), (v, c.value.value(r)));
                }
            }
            prop_assert_eq!(accounted, input.len());
            // Model: first arrival of the maximal version per key.
            let mut model: HashMap<(&str, i64), (Option<i64>, i128)> = HashMap::new();
            for (m, s, v, x) in &input {
                match model.get(&(*m, *s)) {
                    Some((cv, _)) if v <= cv => {}
                    _ => { model.insert((*m, *s), (*v, *x)); }
                }
            }
            prop_assert_eq!(current, model);
        }
    }
}
