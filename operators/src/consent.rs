//! What the consent ledger says, as the readings chain and the erasure need it:
//! which meters have valid Elhub consent when, which public-tenant subjects
//! upgraded to private treatment for which of their meters and when, and which
//! meters were a subject's when. Built by the pipeline from the `consent_ledger`
//! table, entry by entry in the order they were recorded ([`ConsentView::apply`]);
//! the operators only read it. Subjects and meters appear only as ledger hashes
//! ([`crate::pseudonym::LedgerHasher`]).
//!
//! Times a producer cannot move: every change takes effect no earlier than the
//! moment meterline recorded it where an earlier time would widen what is linked
//! or stored (an upgrade, a grant after a revocation), and no later than that
//! moment where a later time would keep something longer (a revocation, a
//! termination, a withdrawal).

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

/// The purpose an upgrade to private treatment is consented under when its event
/// names none: `consent_withdrawn` of this purpose ends the upgrade.
pub const DEFAULT_UPGRADE_PURPOSE: &str = "private_treatment";

/// A consent ledger entry as the view needs it (subject and meters as ledger
/// hashes; times in µs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    pub tenant: &'a str,
    pub subject_hash: &'a str,
    pub kind: ChangeKind<'a>,
    /// Ledger hashes of the meters (or devices) the entry names.
    pub meters: &'a [String],
    /// The time the producer gave (`occurred_at`).
    pub occurred: i64,
    /// The time meterline recorded the entry (`recorded_at`).
    pub recorded: i64,
}

/// What a ledger entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind<'a> {
    ElhubGranted,
    ElhubRevoked,
    /// An upgrade to private treatment, consented under this purpose.
    Upgraded(&'a str),
    Terminated,
    /// A purpose withdrawn (ends an upgrade consented under it).
    Withdrawn(&'a str),
    /// Anything else (a purpose granted): no effect on the view.
    Other,
}

/// One meter's Elhub consent in one tenant.
#[derive(Debug, Clone, Default)]
struct MeterConsent {
    /// Periods of valid consent, each with the subject hash that granted it.
    periods: Vec<(Period, String)>,
    /// When the last revocation (or the granting account's end) was recorded:
    /// nothing of the meter before it may be stored again.
    revoked: Option<i64>,
}

/// A link kept raw for an upgraded subject: one meter (or device) over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    meter_hash: String,
    period: Period,
}

/// One upgraded subject.
#[derive(Debug, Clone, Default)]
struct Upgrade {
    purpose: String,
    links: Vec<Link>,
}

/// The consent state the readings chain checks.
///
/// Keyed by ledger content, and deliberately not capped: it is the whole ledger's
/// state, and forgetting an entry would drop readings a meter has consent for, or
/// treat an upgraded subject's readings as public. It is bounded by the
/// `consent_ledger` table instead: it is built from that table (every entry is a
/// ledger row stored first; see `pipeline/src/privacy/subjects`), rebuilt rather
/// than grown when the ledger changes, and readings only look it up (`&self`), so
/// no reading adds to it.
#[derive(Debug, Clone)]
pub struct ConsentView {
    hasher: LedgerHasher,
    /// (tenant, meter hash) -> Elhub consent.
    elhub: HashMap<(String, String), MeterConsent>,
    /// (tenant, subject hash) -> the upgrade.
    upgrades: HashMap<(String, String), Upgrade>,
}

/// Whether a reading may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Consent was revoked, or given only after the interval.
    NotCovered,
    /// The ledger knows nothing of this meter.
    Unknown,
}

fn close(period: &mut Period, at: i64) {
    if period.1.is_none() {
        period.1 = Some(at.max(period.0));
    }
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

    /// Apply one ledger entry. Entries must come in the order they were recorded.
    pub fn apply(&mut self, change: &Change<'_>) {
        let earliest = change.occurred.min(change.recorded);
        let latest = change.occurred.max(change.recorded);
        match change.kind {
            ChangeKind::ElhubGranted => {
                for m in change.meters {
                    let consent = self
                        .elhub
                        .entry((change.tenant.to_owned(), m.clone()))
                        .or_default();
                    if consent.periods.iter().any(|(p, _)| p.1.is_none()) {
                        continue; // already valid
                    }
                    // A grant after a revocation cannot reopen what the revocation
                    // closed (that data is being deleted).
                    let from = consent
                        .revoked
                        .map_or(change.occurred, |r| change.occurred.max(r));
                    consent
                        .periods
                        .push(((from, None), change.subject_hash.to_owned()));
                }
            }
            ChangeKind::ElhubRevoked => {
                for m in change.meters {
                    if let Some(consent) =
                        self.elhub.get_mut(&(change.tenant.to_owned(), m.clone()))
                    {
                        Self::revoke(consent, change.recorded, earliest);
                    }
                }
            }
            ChangeKind::Upgraded(purpose) => self.upgrade(change, purpose, latest),
            ChangeKind::Withdrawn(purpose) => {
                if let Some(upgrade) = self
                    .upgrades
                    .get_mut(&(change.tenant.to_owned(), change.subject_hash.to_owned()))
                {
                    if upgrade.purpose == purpose {
                        for l in &mut upgrade.links {
                            close(&mut l.period, earliest);
                        }
                    }
                }
            }
            ChangeKind::Terminated => {
                if let Some(upgrade) = self
                    .upgrades
                    .get_mut(&(change.tenant.to_owned(), change.subject_hash.to_owned()))
                {
                    for l in &mut upgrade.links {
                        close(&mut l.period, earliest);
                    }
                }
                // The account's Elhub consents end with it.
                for ((tenant, _), consent) in &mut self.elhub {
                    if tenant == change.tenant
                        && consent
                            .periods
                            .iter()
                            .any(|(p, s)| p.1.is_none() && s == change.subject_hash)
                    {
                        Self::revoke(consent, change.recorded, earliest);
                    }
                }
            }
            ChangeKind::Other => {}
        }
    }

    /// Link the meters an upgrade lists, from `from` (never before it was
    /// recorded: a backdated upgrade links nothing that came before).
    fn upgrade(&mut self, change: &Change<'_>, purpose: &str, from: i64) {
        let upgrade = self
            .upgrades
            .entry((change.tenant.to_owned(), change.subject_hash.to_owned()))
            .or_default();
        purpose.clone_into(&mut upgrade.purpose);
        for m in change.meters {
            if upgrade
                .links
                .iter()
                .any(|l| &l.meter_hash == m && l.period.1.is_none())
            {
                continue;
            }
            upgrade.links.push(Link {
                meter_hash: m.clone(),
                period: (from, None),
            });
        }
    }

    /// Close the open period (at the earlier of the event's times) and bar the
    /// meter's past from storage from the moment the revocation was recorded.
    fn revoke(consent: &mut MeterConsent, recorded: i64, earliest: i64) {
        for (p, _) in &mut consent.periods {
            close(p, earliest);
        }
        consent.revoked = Some(consent.revoked.map_or(recorded, |r| r.max(recorded)));
    }

    /// May a reading of `meter_id` starting at `start` (µs) be stored?
    pub fn elhub(&self, tenant: &str, meter_id: &str, start: i64) -> Verdict {
        let key = (tenant.to_owned(), self.hasher.hash(meter_id));
        match self.elhub.get(&key) {
            None => Verdict::Unknown,
            Some(consent) => {
                let barred = consent.revoked.is_some_and(|r| start < r);
                let covered = consent
                    .periods
                    .iter()
                    .any(|((from, to), _)| *from <= start && to.is_none_or(|t| start < t));
                if covered && !barred {
                    Verdict::Allowed
                } else {
                    Verdict::NotCovered
                }
            }
        }
    }

    /// True when the subject's upgrade to private treatment covers the meter or
    /// the device at `start`: only meters the upgrade lists, only from the moment
    /// it was recorded, until the account ends or the upgrade's consent is
    /// withdrawn.
    pub fn upgraded(
        &self,
        tenant: &str,
        subject: &str,
        meter: Option<&str>,
        device: &str,
        start: i64,
    ) -> bool {
        if self.upgrades.is_empty() {
            return false;
        }
        let Some(upgrade) = self
            .upgrades
            .get(&(tenant.to_owned(), self.hasher.hash(subject)))
        else {
            return false;
        };
        let ids = [
            meter.map(|m| self.hasher.hash(m)),
            Some(self.hasher.hash(device)),
        ];
        upgrade.links.iter().any(|l| {
            let (from, to) = l.period;
            from <= start
                && to.is_none_or(|t| start < t)
                && ids.iter().flatten().any(|h| *h == l.meter_hash)
        })
    }

    pub fn has_upgrades(&self) -> bool {
        !self.upgrades.is_empty()
    }

    /// Every (tenant, meter hash) whose revocation was recorded, with that time (µs).
    pub fn revocations(&self) -> impl Iterator<Item = (&str, &str, i64)> + '_ {
        self.elhub
            .iter()
            .filter_map(|((t, m), c)| c.revoked.map(|r| (t.as_str(), m.as_str(), r)))
    }
}

/// The meters (ledger hashes) that were one subject's, and when: from an Elhub
/// consent grant or an upgrade naming the meter to its revocation, the
/// withdrawal of the upgrade or the account's end. Built from that subject's
/// ledger entries in order; used to find its readings that carry no `subject`.
/// Periods end at the later of the event's times (what was stored until
/// meterline knew is theirs); they begin at the grant, or when an upgrade was
/// recorded (its links begin then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectMeters {
    periods: HashMap<String, Vec<Period>>,
    upgrade_purpose: Option<String>,
}

impl SubjectMeters {
    /// Apply one of the subject's entries (in `seq` order).
    pub fn apply(&mut self, change: &Change<'_>) {
        let latest = change.occurred.max(change.recorded);
        let mut open = |m: &String, from: i64| {
            let periods = self.periods.entry(m.clone()).or_default();
            if !periods.iter().any(|p| p.1.is_none()) {
                periods.push((from, None));
            }
        };
        match change.kind {
            ChangeKind::ElhubGranted => change.meters.iter().for_each(|m| open(m, change.occurred)),
            ChangeKind::Upgraded(purpose) => {
                change.meters.iter().for_each(|m| open(m, latest));
                self.upgrade_purpose = Some(purpose.to_owned());
            }
            ChangeKind::ElhubRevoked => {
                for m in change.meters {
                    self.periods
                        .get_mut(m)
                        .into_iter()
                        .flatten()
                        .for_each(|p| close(p, latest));
                }
            }
            ChangeKind::Withdrawn(purpose) if self.upgrade_purpose.as_deref() == Some(purpose) => {
                self.periods
                    .values_mut()
                    .flatten()
                    .for_each(|p| close(p, latest));
            }
            ChangeKind::Terminated => self
                .periods
                .values_mut()
                .flatten()
                .for_each(|p| close(p, latest)),
            ChangeKind::Withdrawn(_) | ChangeKind::Other => {}
        }
    }

    /// True when meter `meter_hash` was the subject's at `at` (µs).
    pub fn covers(&self, meter_hash: &str, at: i64) -> bool {
        self.periods.get(meter_hash).is_some_and(|ps| {
            ps.iter()
                .any(|(from, to)| *from <= at && to.is_none_or(|t| at < t))
        })
    }

    /// Until when meter `meter_hash` was the subject's: `None` if it never was,
    /// `Some(None)` while it still is, `Some(Some(end))` with the end (µs) of its
    /// last period otherwise.
    pub fn held_until(&self, meter_hash: &str) -> Option<Option<i64>> {
        let periods = self.periods.get(meter_hash)?;
        if periods.iter().any(|(_, to)| to.is_none()) {
            return Some(None);
        }
        Some(periods.iter().filter_map(|(_, to)| *to).max())
    }

    /// Whether a meter profile of `meter_hash` that takes effect on `valid_from`
    /// (days since 1970-01-01) is the subject's data: one of the meter's profiles
    /// from its first up to the (UTC) day its last period with the subject ended,
    /// every one while it still is theirs. A profile the next holder sent from the
    /// day they took the meter over is not; earlier holders' profiles of the meter
    /// are (erasing more is the safe side; an adapter sends a meter's current
    /// profile again).
    pub fn covers_profile(&self, meter_hash: &str, valid_from: i32) -> bool {
        match self.held_until(meter_hash) {
            None => false,
            Some(None) => true,
            Some(Some(end)) => i64::from(valid_from) < end.div_euclid(86_400_000_000),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.periods.is_empty()
    }

    /// Every meter (ledger hash) with its periods, in hash order.
    pub fn meters(&self) -> Vec<(&str, &[Period])> {
        let mut out: Vec<_> = self
            .periods
            .iter()
            .map(|(m, p)| (m.as_str(), p.as_slice()))
            .collect();
        out.sort_by_key(|(m, _)| *m);
        out
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

    const METER: &str = "707057500000000018";

    fn change<'a>(
        kind: ChangeKind<'a>,
        subject: &'a str,
        meters: &'a [String],
        occurred: i64,
        recorded: i64,
    ) -> Change<'a> {
        Change {
            tenant: "t",
            subject_hash: subject,
            kind,
            meters,
            occurred,
            recorded,
        }
    }

    #[test]
    fn elhub_periods_cover_from_grant_and_a_revocation_bars_the_past() {
        let hasher = LedgerHasher::new(&MasterKey::from_bytes([3; 32]));
        let m = [hasher.hash(METER)];
        let mut v = ConsentView::new(hasher);
        assert_eq!(v.elhub("t", METER, 5), Verdict::Unknown);
        v.apply(&change(ChangeKind::ElhubGranted, "s", &m, 10, 11));
        let at = |v: &ConsentView, s| v.elhub("t", METER, s);
        assert_eq!(at(&v, 9), Verdict::NotCovered);
        assert_eq!(at(&v, 10), Verdict::Allowed);
        assert_eq!(at(&v, 1_000), Verdict::Allowed);
        // Revoked (occurred 20, recorded 25): nothing before 25 is stored any more,
        // whatever its interval.
        v.apply(&change(ChangeKind::ElhubRevoked, "s", &m, 20, 25));
        for s in [10, 19, 20, 24, 25, 1_000] {
            assert_eq!(at(&v, s), Verdict::NotCovered, "{s}");
        }
        // A new grant, backdated to 15: a new period from the revocation on.
        v.apply(&change(ChangeKind::ElhubGranted, "s", &m, 15, 30));
        assert_eq!(at(&v, 24), Verdict::NotCovered);
        assert_eq!(at(&v, 25), Verdict::Allowed);
        assert_eq!(v.elhub("u", METER, 25), Verdict::Unknown);
        assert_eq!(v.revocations().map(|r| r.2).collect::<Vec<_>>(), [25]);
    }

    #[test]
    fn the_account_end_revokes_the_meters_it_granted() {
        let hasher = LedgerHasher::new(&MasterKey::from_bytes([3; 32]));
        let m = [hasher.hash(METER)];
        let mut v = ConsentView::new(hasher);
        v.apply(&change(ChangeKind::ElhubGranted, "s", &m, 10, 10));
        v.apply(&change(ChangeKind::Terminated, "other", &[], 20, 20));
        assert_eq!(v.elhub("t", METER, 30), Verdict::Allowed);
        v.apply(&change(ChangeKind::Terminated, "s", &[], 40, 35));
        assert_eq!(v.elhub("t", METER, 30), Verdict::NotCovered);
        assert_eq!(v.elhub("t", METER, 50), Verdict::NotCovered);
    }

    #[test]
    fn upgrades_link_listed_meters_from_their_record_time_until_they_end() {
        let hasher = LedgerHasher::new(&MasterKey::from_bytes([3; 32]));
        let s = hasher.hash("acct-9");
        let m = [hasher.hash(METER), hasher.hash("dev-9")];
        let mut v = ConsentView::new(hasher);
        // Occurred at 50, recorded at 100: linked from 100.
        v.apply(&change(
            ChangeKind::Upgraded("private_treatment"),
            &s,
            &m,
            50,
            100,
        ));
        let up = |v: &ConsentView, meter: Option<&str>, device: &str, at| {
            v.upgraded("t", "acct-9", meter, device, at)
        };
        assert!(!up(&v, Some(METER), "x", 99));
        assert!(up(&v, Some(METER), "x", 100));
        assert!(up(&v, None, "dev-9", 100));
        assert!(
            !up(&v, Some("707057500000000025"), "dev-other", 100),
            "a meter not listed"
        );
        assert!(!v.upgraded("u", "acct-9", Some(METER), "x", 100));
        // Another purpose withdrawn: nothing changes; the upgrade's own: unlinked.
        v.apply(&change(ChangeKind::Withdrawn("name"), &s, &[], 200, 200));
        assert!(up(&v, Some(METER), "x", 300));
        v.apply(&change(
            ChangeKind::Withdrawn("private_treatment"),
            &s,
            &[],
            300,
            250,
        ));
        assert!(up(&v, Some(METER), "x", 249));
        assert!(!up(&v, Some(METER), "x", 250));
        // Upgraded again, then terminated (a future-dated termination ends it when
        // recorded).
        v.apply(&change(
            ChangeKind::Upgraded("private_treatment"),
            &s,
            &m,
            400,
            400,
        ));
        assert!(up(&v, Some(METER), "x", 450));
        v.apply(&change(ChangeKind::Terminated, &s, &[], 9_000, 500));
        assert!(up(&v, Some(METER), "x", 499));
        assert!(!up(&v, Some(METER), "x", 500));
    }

    #[test]
    fn a_subjects_meters_are_theirs_only_between_grant_and_end() {
        let m = ["m1".to_owned()];
        let mut s = SubjectMeters::default();
        assert!(s.is_empty());
        s.apply(&change(ChangeKind::ElhubGranted, "s", &m, 10, 12));
        s.apply(&change(ChangeKind::ElhubRevoked, "s", &m, 20, 25));
        s.apply(&change(ChangeKind::ElhubGranted, "s", &m, 40, 40));
        s.apply(&change(ChangeKind::Terminated, "s", &[], 60, 55));
        let c = |at| s.covers("m1", at);
        assert!(!c(9));
        assert!(c(10) && c(24));
        assert!(!c(25) && !c(39));
        assert!(c(40) && c(59));
        assert!(!c(60));
        assert!(!s.covers("m2", 15));
        assert_eq!(s.held_until("m1"), Some(Some(60)));
        assert_eq!(s.held_until("m2"), None);
        s.apply(&change(ChangeKind::ElhubGranted, "s", &m, 70, 70));
        assert_eq!(s.held_until("m1"), Some(None), "held again");
    }

    #[test]
    fn a_meters_profiles_are_the_subjects_until_the_day_it_left_them() {
        const DAY: i64 = 86_400_000_000;
        let m = ["m1".to_owned()];
        let mut s = SubjectMeters::default();
        // Held from day 10 to day 20 at noon.
        s.apply(&change(
            ChangeKind::ElhubGranted,
            "s",
            &m,
            10 * DAY,
            10 * DAY,
        ));
        s.apply(&change(
            ChangeKind::ElhubRevoked,
            "s",
            &m,
            20 * DAY + DAY / 2,
            20 * DAY + DAY / 2,
        ));
        assert!(
            s.covers_profile("m1", 0),
            "a profile in effect when they took it"
        );
        assert!(s.covers_profile("m1", 15));
        assert!(s.covers_profile("m1", 19));
        assert!(
            !s.covers_profile("m1", 20),
            "the next holder's from the day they moved in"
        );
        assert!(!s.covers_profile("m1", 30));
        assert!(!s.covers_profile("m2", 15), "never theirs");
        s.apply(&change(
            ChangeKind::ElhubGranted,
            "s",
            &m,
            40 * DAY,
            40 * DAY,
        ));
        assert!(s.covers_profile("m1", 30), "theirs again: every profile");
    }
}
