//! Area cells kept up to date as meters change, instead of summed again from every
//! meter of the partition.
//!
//! A cell is published when enough meters contribute and no meter dominates
//! ([`Disclosure`]): that needs each cell's total, its number of meters and its
//! largest per-meter value. All three follow from adding a meter's contribution;
//! the first two also from removing one. The largest does not when the meter
//! removed held it: such a cell is *stale* and the partition's state must be built
//! again from every meter ([`AreaState::is_stale`]). Backfills and deliveries only
//! add meters; only corrections and deletions can make a cell stale.

use arrow::array::RecordBatch;

use super::{cells_batch, cells_of, Disclosure, Grain};
use crate::operator::OperatorError;
use crate::FastMap;

/// An area cell: area, quantity, direction and time key (see `Cell`).
type Key = (Box<str>, Box<str>, Box<str>, i64);

#[derive(Debug, Clone, Default)]
struct Summary {
    /// Local date and local hour (hours only) of the cell.
    date: i32,
    hour: i32,
    total: i128,
    meters: i32,
    largest: i128,
}

/// The area cells of one partition of an area table, with what deciding their
/// disclosure needs.
#[derive(Debug, Clone)]
pub struct AreaState {
    grain: Grain,
    cells: FastMap<Key, Summary>,
    stale: bool,
}

impl AreaState {
    /// The cells of every meter's rows (`consumption_hourly` rows for
    /// [`Grain::Hour`], `consumption_daily` rows otherwise).
    ///
    /// # Errors
    /// Rows without the needed columns.
    pub fn build(grain: Grain, rows: &[RecordBatch]) -> Result<Self, OperatorError> {
        let mut state = Self {
            grain,
            cells: FastMap::default(),
            stale: false,
        };
        state.add(rows)?;
        Ok(state)
    }

    /// A state that knows nothing: to be built again.
    pub fn stale(grain: Grain) -> Self {
        Self {
            grain,
            cells: FastMap::default(),
            stale: true,
        }
    }

    /// Add the contributions of meters not in the cells yet (after
    /// [`remove`](Self::remove) of their earlier rows, if they had any).
    ///
    /// # Errors
    /// Rows without the needed columns.
    pub fn add(&mut self, rows: &[RecordBatch]) -> Result<(), OperatorError> {
        for ((area, quantity, direction, time), (date, hour, per_meter)) in
            cells_of(self.grain, rows)?
        {
            let key: Key = (area.into(), quantity.into(), direction.into(), time);
            let cell = self.cells.entry(key).or_insert_with(|| Summary {
                date,
                hour,
                largest: i128::MIN,
                ..Summary::default()
            });
            for v in per_meter.values() {
                cell.total += v;
                cell.meters += 1;
                cell.largest = cell.largest.max(*v);
            }
        }
        Ok(())
    }

    /// Remove the contributions of meters' rows (exactly the rows that were added
    /// for them).
    ///
    /// # Errors
    /// Rows without the needed columns.
    pub fn remove(&mut self, rows: &[RecordBatch]) -> Result<(), OperatorError> {
        for ((area, quantity, direction, time), (_, _, per_meter)) in cells_of(self.grain, rows)? {
            let key: Key = (area.into(), quantity.into(), direction.into(), time);
            let Some(cell) = self.cells.get_mut(&key) else {
                // Rows that were never added: the state does not match the table.
                self.stale = true;
                continue;
            };
            for v in per_meter.values() {
                cell.total -= v;
                cell.meters -= 1;
                if *v >= cell.largest {
                    self.stale = true;
                }
            }
            if cell.meters <= 0 {
                if cell.meters < 0 {
                    self.stale = true;
                }
                self.cells.remove(&key);
            }
        }
        Ok(())
    }

    /// True when a cell's largest per-meter value is no longer known: build the
    /// state again from every meter's rows.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The rows of the area table (cells in order, the ones `rules` do not allow
    /// left out) and the number of cells suppressed.
    ///
    /// # Errors
    /// [`OperatorError::Internal`] when the state is stale.
    pub fn batch(
        &self,
        tenant: &str,
        rules: Disclosure,
    ) -> Result<(RecordBatch, usize), OperatorError> {
        if self.stale {
            return Err(OperatorError::Internal {
                operator: "aggregate",
                reason: "area cells read while stale",
            });
        }
        let mut cells: Vec<(&Key, &Summary)> = self.cells.iter().collect();
        cells.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut suppressed = 0;
        let mut kept = Vec::with_capacity(cells.len());
        for ((area, quantity, direction, time), s) in cells {
            if rules.allows_summary(s.meters as usize, s.total, s.largest) {
                kept.push((
                    (&**area, &**quantity, &**direction, *time),
                    s.date,
                    s.hour,
                    s.total,
                    s.meters,
                ));
            } else {
                suppressed += 1;
            }
        }
        Ok((cells_batch(tenant, self.grain, &kept)?, suppressed))
    }
}
