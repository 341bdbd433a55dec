//! Which meters have any stored reading in a (tenant, local date) partition.
//!
//! The version rules need the stored keys of every (tenant, local date, meter) a
//! batch touches. Reading them costs a scan of the date partition, and the lake
//! cannot prune that scan by meter (identifier statistics stay out of the Delta log,
//! because the log outlives deletes). Most keys, though, are new: a backfill, the
//! morning delivery of yesterday's values, live readings. For those nothing stored
//! needs to be read, if the pipeline knows that the meter has no row in the
//! partition at all.
//!
//! `MeterPresence` is that knowledge. A partition becomes known by reading its
//! `meter` column once (one column, once per partition while the process owns its
//! Kafka partitions), and it stays exact by adding the meters of every batch the
//! pipeline stores. A meter is held as a 64-bit hash: a collision only makes a new
//! meter look stored, which costs a scan and never a wrong answer. Nothing here
//! leaves the process.
//!
//! The set is bounded: past `max_entries` meters in all, the partitions used least
//! recently are forgotten (and read again when met). A partition with more meters
//! than the bound is not kept: its meters are always looked up in the lake.

use std::hash::BuildHasher;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Date32Type;

use crate::operator::OperatorError;
use crate::{FastMap, FastSet};

/// Approximate memory per meter held (a hash in a hash set), for the pipeline's
/// memory bound.
pub const BYTES_PER_ENTRY: u64 = 16;

#[derive(Debug, Clone, Default)]
struct Partition {
    meters: FastSet<u64>,
    last_used: u64,
}

/// The meters stored per (tenant, local date) partition, for the partitions known.
#[derive(Debug, Clone)]
pub struct MeterPresence {
    hasher: foldhash::fast::RandomState,
    partitions: FastMap<(String, i32), Partition>,
    entries: usize,
    max_entries: usize,
    tick: u64,
}

fn schema_error(column: &'static str) -> OperatorError {
    OperatorError::Schema {
        operator: "presence",
        column,
    }
}

impl MeterPresence {
    /// Nothing known; at most `max_entries` meters held in all.
    pub fn new(max_entries: usize) -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            partitions: FastMap::default(),
            entries: 0,
            max_entries: max_entries.max(1),
            tick: 0,
        }
    }

    /// Meters held, over all known partitions.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Forget everything: other processes may have written (partitions moved).
    pub fn clear(&mut self) {
        self.partitions.clear();
        self.entries = 0;
    }

    /// The dates among `dates` whose partition of `tenant` is not known, in the
    /// order given; the known ones count as used now (for the bound).
    pub fn unknown(&mut self, tenant: &str, dates: &[i32]) -> Vec<i32> {
        self.tick += 1;
        let mut out = Vec::new();
        let mut key = (tenant.to_owned(), 0);
        for date in dates {
            key.1 = *date;
            match self.partitions.get_mut(&key) {
                Some(p) => p.last_used = self.tick,
                None => out.push(*date),
            }
        }
        out
    }

    /// Make the partitions of `tenant` at `dates` known, from their stored rows
    /// (batches with columns `local_date` and `meter`: every row of those
    /// partitions). A date without rows becomes known as empty.
    ///
    /// # Errors
    /// Batches without those columns.
    pub fn load(
        &mut self,
        tenant: &str,
        dates: &[i32],
        stored: &[RecordBatch],
    ) -> Result<(), OperatorError> {
        let mut loaded: FastMap<i32, FastSet<u64>> =
            dates.iter().map(|d| (*d, FastSet::default())).collect();
        for batch in stored {
            let date = batch
                .column_by_name("local_date")
                .and_then(|c| c.as_primitive_opt::<Date32Type>())
                .ok_or(schema_error("local_date"))?;
            let meter = batch
                .column_by_name("meter")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or(schema_error("meter"))?;
            for row in 0..batch.num_rows() {
                if let Some(set) = loaded.get_mut(&date.value(row)) {
                    set.insert(self.hasher.hash_one(meter.value(row)));
                }
            }
        }
        self.tick += 1;
        for (date, meters) in loaded {
            if meters.len() > self.max_entries {
                continue;
            }
            self.evict_for(meters.len());
            self.entries += meters.len();
            let old = self.partitions.insert(
                (tenant.to_owned(), date),
                Partition {
                    meters,
                    last_used: self.tick,
                },
            );
            self.entries -= old.map_or(0, |p| p.meters.len());
        }
        Ok(())
    }

    /// Forget the least recently used partitions until `incoming` more meters fit
    /// under the bound.
    fn evict_for(&mut self, incoming: usize) {
        if self.entries + incoming <= self.max_entries {
            return;
        }
        let target = self.max_entries.saturating_sub(incoming);
        let mut by_age: Vec<(u64, (String, i32))> = self
            .partitions
            .iter()
            .map(|(k, p)| (p.last_used, k.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, key) in by_age {
            if self.entries <= target {
                break;
            }
            if let Some(p) = self.partitions.remove(&key) {
                self.entries -= p.meters.len();
            }
        }
    }

    /// Whether `meter` may have stored rows in the partition (tenant, date): `false`
    /// only when the partition is known and the meter is not in it.
    pub fn may_contain(&self, tenant: &str, date: i32, meter: &str) -> bool {
        // A lookup by (&str, i32) would need a borrowed key type; partitions per
        // batch are few, so the owned key is built per call site instead.
        self.partitions
            .get(&(tenant.to_owned(), date))
            .is_none_or(|p| p.meters.contains(&self.hasher.hash_one(meter)))
    }

    /// Add the meters of rows about to be stored (a `readings` batch with
    /// `tenant`, `local_date` and `meter`) to their partitions, where known. An
    /// unknown partition stays unknown: its other meters have not been read.
    ///
    /// # Errors
    /// A batch without those columns.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        let (tenant, date, meter) = crate::versions::partition_columns(batch, "presence")?;
        let mut key = (String::new(), 0);
        for row in 0..batch.num_rows() {
            if key.0 != tenant.value(row) {
                key.0 = tenant.value(row).to_owned();
            }
            key.1 = date.value(row);
            if let Some(p) = self.partitions.get_mut(&key) {
                if p.meters.insert(self.hasher.hash_one(meter.value(row))) {
                    self.entries += 1;
                }
            }
        }
        self.evict_for(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Date32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    /// Rows (tenant, date, meter).
    fn batch(rows: &[(&str, i32, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("tenant", DataType::Utf8, false),
            Field::new("local_date", DataType::Date32, false),
            Field::new("meter", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn unknown_partitions_may_contain_anything() {
        let mut p = MeterPresence::new(100);
        assert!(p.may_contain("t", 1, "m"));
        assert_eq!(p.unknown("t", &[1, 2]), vec![1, 2]);
    }

    #[test]
    fn a_loaded_partition_answers_for_its_meters_only() {
        let mut p = MeterPresence::new(100);
        p.load("t", &[1, 2], &[batch(&[("t", 1, "a"), ("t", 1, "b")])])
            .unwrap();
        assert!(p.unknown("t", &[1, 2, 3]) == vec![3]);
        assert!(p.may_contain("t", 1, "a"));
        assert!(!p.may_contain("t", 1, "c"));
        // Date 2 was read and had no rows.
        assert!(!p.may_contain("t", 2, "a"));
        // Another tenant's partition of the same date is not known.
        assert!(p.may_contain("u", 1, "c"));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn stored_batches_extend_known_partitions_only() {
        let mut p = MeterPresence::new(100);
        p.load("t", &[1], &[]).unwrap();
        p.add(&batch(&[("t", 1, "a"), ("t", 1, "a"), ("t", 2, "b")]))
            .unwrap();
        assert!(p.may_contain("t", 1, "a"));
        assert!(!p.may_contain("t", 1, "b"));
        // Date 2 is still unknown: someone else's meters may be stored there.
        assert_eq!(p.unknown("t", &[2]), vec![2]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_bound_forgets_the_least_recently_used_partitions() {
        let mut p = MeterPresence::new(4);
        p.load("t", &[1], &[batch(&[("t", 1, "a"), ("t", 1, "b")])])
            .unwrap();
        p.load("t", &[2], &[batch(&[("t", 2, "a"), ("t", 2, "b")])])
            .unwrap();
        // Date 1 used more recently than date 2.
        assert!(p.unknown("t", &[1]).is_empty());
        p.load("t", &[3], &[batch(&[("t", 3, "a")])]).unwrap();
        assert!(p.len() <= 4, "{}", p.len());
        assert_eq!(p.unknown("t", &[1, 2, 3]), vec![2]);
        // A forgotten partition may contain anything again.
        assert!(p.may_contain("t", 2, "z"));
    }

    #[test]
    fn a_partition_larger_than_the_bound_is_not_kept() {
        let mut p = MeterPresence::new(2);
        p.load(
            "t",
            &[1],
            &[batch(&[("t", 1, "a"), ("t", 1, "b"), ("t", 1, "c")])],
        )
        .unwrap();
        assert_eq!(p.unknown("t", &[1]), vec![1]);
        assert!(p.may_contain("t", 1, "z"));
        assert!(p.is_empty());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut p = MeterPresence::new(10);
        p.load("t", &[1], &[batch(&[("t", 1, "a")])]).unwrap();
        p.clear();
        assert!(p.is_empty());
        assert!(p.may_contain("t", 1, "z"));
    }
}
