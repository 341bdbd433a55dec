//! What the consent ledger says, as the readings chain needs it: which meters have
//! valid Elhub consent when, and which public-tenant subjects upgraded to private
//! treatment from when. Built by the pipeline from the `consent_ledger` table; the
//! operators only read it. Subjects and meters appear only as ledger hashes
//! ([`crate::pseudonym::LedgerHasher`]).

use std::collections::HashMap;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::error::ArrowError;

use crate::pseudonym::LedgerHasher;
use crate::schema::col;
use crate::tenant::TenantRegistry;

/// A period `[from, to)` in microseconds; `to = None`: still valid.
pub type Period = (i64, Option<i64>);

/// The consent state the readings chain checks.
///
/// Keyed by ledger content, and deliberately not capped: it is the whole ledger's
/// state, and forgetting an entry would drop readings a meter has consent for, or
/// treat an upgraded subject's readings as public. It is bounded by the
/// `consent_ledger` table instead: it is built from that table (every entry is a
/// ledger row stored first; see `pipeline/src/subjects.rs`), rebuilt rather than
/// grown when the ledger changes, and readings only look it up (`&self`), so no
/// reading adds to it.
#[derive(Debug, Clone)]
pub struct ConsentView {
    hasher: LedgerHasher,
    /// (tenant, meter hash) -> periods of valid Elhub consent.
    elhub: HashMap<(String, String), Vec<Period>>,
    /// (tenant, subject hash) -> upgrade time (µs).
    upgrades: HashMap<(String, String), i64>,
}

/// Whether a reading may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Consent was revoked before the interval, or given only after it.
    NotCovered,
    /// The ledger knows nothing of this meter.
    Unknown,
}

impl ConsentView {
    pub fn new(hasher: LedgerHasher) -> Self {
        Self {
            hasher,
            elhub: HashMap::new(),
            upgrades: HashMap::new(),
        }
    }

    pub fn hasher(&self) -> &LedgerHasher {
        &self.hasher
    }

    /// Record an Elhub consent grant (`granted`) or revocation for a meter hash at
    /// `at` (µs), in ledger order.
    pub fn elhub_event(&mut self, tenant: &str, meter_hash: &str, at: i64, granted: bool) {
        let periods = self
            .elhub
            .entry((tenant.to_owned(), meter_hash.to_owned()))
            .or_default();
        match (granted, periods.last_mut()) {
            (true, Some((_, None))) => {} // already valid
            (true, _) => periods.push((at, None)),
            (false, Some(last @ (_, None))) => last.1 = Some(at.max(last.0)),
            (false, _) => {}
        }
    }

    /// Record an upgrade to private treatment.
    pub fn upgrade(&mut self, tenant: &str, subject_hash: &str, at: i64) {
        self.upgrades
            .entry((tenant.to_owned(), subject_hash.to_owned()))
            .and_modify(|t| *t = (*t).min(at))
            .or_insert(at);
    }

    /// May a reading of `meter_id` starting at `start` (µs) be stored?
    pub fn elhub(&self, tenant: &str, meter_id: &str, start: i64) -> Verdict {
        let key = (tenant.to_owned(), self.hasher.hash(meter_id));
        match self.elhub.get(&key) {
            None => Verdict::Unknown,
            Some(periods) => {
                if periods
                    .iter()
                    .any(|(from, to)| *from <= start && to.is_none_or(|t| start < t))
                {
                    Verdict::Allowed
                } else {
                    Verdict::NotCovered
                }
            }
        }
    }

    /// True when the subject upgraded to private treatment at or before `start`.
    pub fn upgraded(&self, tenant: &str, subject: &str, start: i64) -> bool {
        if self.upgrades.is_empty() {
            return false;
        }
        let key = (tenant.to_owned(), self.hasher.hash(subject));
        self.upgrades.get(&key).is_some_and(|at| *at <= start)
    }

    pub fn has_upgrades(&self) -> bool {
        !self.upgrades.is_empty()
    }
}

/// Keep the rows of a [`crate::schema::DECODED`] batch that may be stored: rows of
/// tenants that require Elhub consent need a meter with consent valid at the
/// interval's start. Returns the kept rows and how many were dropped. Without a
/// view nothing is known, so every such row is dropped.
///
/// # Errors
/// A batch of another schema.
pub fn elhub_filter(
    batch: RecordBatch,
    tenants: &TenantRegistry,
    view: Option<&ConsentView>,
) -> Result<(RecordBatch, usize), ArrowError> {
    if !tenants.iter().any(|t| t.rules.requires_elhub_consent) || batch.num_rows() == 0 {
        return Ok((batch, 0));
    }
    let tenant = batch.column(col::TENANT).as_string::<i32>();
    let meter = batch.column(col::METER_ID).as_string::<i32>();
    let start = batch
        .column(col::INTERVAL_START)
        .as_primitive::<TimestampMicrosecondType>();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let t = tenant.value(i);
            let required = tenants
                .by_id(t)
                .is_none_or(|x| x.rules.requires_elhub_consent);
            Some(
                !required
                    || (meter.is_valid(i)
                        && view.is_some_and(|v| {
                            v.elhub(t, meter.value(i), start.value(i)) == Verdict::Allowed
                        })),
            )
        })
        .collect();
    let dropped = keep.false_count();
    if dropped == 0 {
        return Ok((batch, 0));
    }
    Ok((filter_record_batch(&batch, &keep)?, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    #[test]
    fn elhub_periods_cover_from_grant_until_revocation() {
        let hasher = LedgerHasher::new(&MasterKey::from_bytes([3; 32]));
        let m = hasher.hash("707057500000000018");
        let mut v = ConsentView::new(hasher);
        assert_eq!(v.elhub("t", "707057500000000018", 5), Verdict::Unknown);
        v.elhub_event("t", &m, 10, true);
        v.elhub_event("t", &m, 20, false);
        v.elhub_event("t", &m, 30, true);
        let at = |s| v.elhub("t", "707057500000000018", s);
        assert_eq!(at(9), Verdict::NotCovered);
        assert_eq!(at(10), Verdict::Allowed);
        assert_eq!(at(19), Verdict::Allowed);
        assert_eq!(at(20), Verdict::NotCovered);
        assert_eq!(at(29), Verdict::NotCovered);
        assert_eq!(at(1_000), Verdict::Allowed);
        assert_eq!(v.elhub("u", "707057500000000018", 15), Verdict::Unknown);
    }

    #[test]
    fn upgrades_count_from_their_time_on() {
        let hasher = LedgerHasher::new(&MasterKey::from_bytes([3; 32]));
        let s = hasher.hash("acct-9");
        let mut v = ConsentView::new(hasher);
        v.upgrade("t", &s, 100);
        assert!(!v.upgraded("t", "acct-9", 99));
        assert!(v.upgraded("t", "acct-9", 100));
        assert!(!v.upgraded("u", "acct-9", 100));
    }
}
