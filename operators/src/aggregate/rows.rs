//! Meters as 64-bit hashes, and selecting the rows of some meters: the unit in
//! which the materializer tracks what changed.
//!
//! A hash collision makes two meters one unit of change: both are read, recomputed
//! and rewritten together, which costs work and never a wrong row (every selection
//! and every rewrite goes by the same hash). Hashes never leave the process.

use std::hash::BuildHasher;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;

use super::{arrow_error, dates, strings};
use crate::operator::OperatorError;
use crate::FastSet;

/// A set of meter hashes.
pub type MeterSet = FastSet<u64>;

/// Hashes meter ids, the same way for the life of the value (clones included).
#[derive(Debug, Clone, Default)]
pub struct MeterHasher(foldhash::fast::RandomState);

impl MeterHasher {
    pub fn hash(&self, meter: &str) -> u64 {
        self.0.hash_one(meter)
    }

    /// Every meter of `batches` (column `meter`).
    ///
    /// # Errors
    /// A batch without a `meter` column of strings.
    pub fn meters(&self, batches: &[RecordBatch]) -> Result<MeterSet, OperatorError> {
        let mut set = MeterSet::default();
        for batch in batches {
            let meter = strings(batch, "meter")?;
            // Consecutive rows mostly share a meter: hash each run once.
            let mut last: Option<&str> = None;
            for m in meter.iter().flatten() {
                if last != Some(m) {
                    set.insert(self.hash(m));
                    last = Some(m);
                }
            }
        }
        Ok(set)
    }
}

/// The rows of `batches` for which `keep(meter hash, local date)` holds (the date
/// is 0 in batches without a `local_date` column). Empty batches are left out.
///
/// # Errors
/// A batch without a `meter` column of strings.
pub fn select_rows(
    batches: &[RecordBatch],
    hasher: &MeterHasher,
    keep: impl Fn(u64, i32) -> bool,
) -> Result<Vec<RecordBatch>, OperatorError> {
    let mut out = Vec::new();
    for batch in batches {
        let meter = strings(batch, "meter")?;
        let date = batch
            .column_by_name("local_date")
            .map(|_| dates(batch, "local_date"))
            .transpose()?;
        let mut last: Option<(&str, u64)> = None;
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                let m = meter.value(row);
                let h = match last {
                    Some((prev, h)) if prev == m => h,
                    _ => {
                        let h = hasher.hash(m);
                        last = Some((m, h));
                        h
                    }
                };
                Some(keep(h, date.map_or(0, |d| d.value(row))))
            })
            .collect();
        let selected = if mask.true_count() == batch.num_rows() {
            batch.clone()
        } else {
            filter_record_batch(batch, &mask).map_err(arrow_error)?
        };
        if selected.num_rows() > 0 {
            out.push(selected);
        }
    }
    Ok(out)
}

/// The meters of `batches` per value of a Date32 column (`local_date`, `month`):
/// which meters the rows written into each partition hold.
///
/// # Errors
/// A batch without a `meter` column of strings or without `column` of dates.
pub fn meters_by(
    batches: &[RecordBatch],
    hasher: &MeterHasher,
    column: &'static str,
) -> Result<std::collections::BTreeMap<i32, MeterSet>, OperatorError> {
    let mut out: std::collections::BTreeMap<i32, MeterSet> = std::collections::BTreeMap::new();
    for batch in batches {
        let meter = strings(batch, "meter")?;
        let date = dates(batch, column)?;
        let mut last: Option<(&str, i32)> = None;
        for row in 0..batch.num_rows() {
            let key = (meter.value(row), date.value(row));
            if last != Some(key) {
                out.entry(key.1).or_default().insert(hasher.hash(key.0));
                last = Some(key);
            }
        }
    }
    Ok(out)
}
