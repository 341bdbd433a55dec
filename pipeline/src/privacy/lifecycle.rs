//! The privacy lifecycle of stored data: erasure on request, retention sweeps, and
//! the `erasure_audit` table that proves both happened.
//!
//! ```text
//!  subject.erasure (tombstone, ─▶ erase in that tenant: readings (by subject, and its meters'
//!   key = tenant/subject)         │  readings without one), dead_letters, subjects, access_log
//!                                 │  (rewrite only files holding the subject)
//!                                 ├─▶ aggregates recomputed from what is left
//!                                 ├─▶ purge: the old files deleted from storage
//!                                 └─▶ erasure_audit row + Kafka position, one commit
//!  schedule / `meterline          ─▶ sweep: readings per tenant policy, revoked Elhub meters,
//!   retention run`                │  dead letters, access log, ended accounts
//!                                 └─▶ same recompute, purge and audit
//! ```
//!
//! Every step is idempotent: a crash at any point repeats the request, which finds
//! less (or nothing) to remove, recomputes and purges again, and records it once
//! (the audit commit carries the Kafka position it answers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use meterline_operators::consent::SubjectMeters;
use meterline_operators::pseudonym::LedgerHasher;
use meterline_operators::{retain, MasterKey, TenantRegistry};
use meterline_sinks::{
    open_existing, purge, remove_files, remove_rows, DerivedTable, Lake, Removal, SinkError,
    DEAD_LETTERS,
};
use tracing::{info, warn};

use crate::aggregate::Materializer;

/// What an erasure removes from one table: the table, its schema, the columns its
/// matcher reads, which files to look at, and which rows.
type Target<'a> = (
    &'static str,
    SchemaRef,
    &'a [&'a str],
    meterline_sinks::erase::FileFilter<'a>,
    meterline_sinks::erase::RowMatcher<'a>,
);

/// The economics input that holds personal data (`meter-profile/v1`).
const PROFILES_TABLE: &str = "meter_profiles";
use crate::config::{AggregateSettings, LifecycleSettings};
use crate::metrics::Metrics;
use crate::privacy::tables::{
    audit_spec, kind, subject_hash, ACCESS_LOG, ACCESS_LOG_TABLE, AUDIT, SUBJECTS, SUBJECTS_TABLE,
};

/// Test hook: when set, an erasure stalls forever after removing the subject's
/// readings (before the aggregates, the purge and the audit row), so a test can
/// SIGKILL the process in the middle of an erasure.
pub const FAILPOINT_ENV: &str = "METERLINE_FAILPOINT_ERASURE_STALL";

/// Why an erasure, a sweep or a key destruction did not complete (it is retried:
/// every step is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Aggregate(#[from] crate::aggregate::AggregateError),
    #[error(transparent)]
    Cost(#[from] crate::cost::CostError),
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub request_id: String,
    pub kind: &'static str,
    /// `subject` for erasures; `telemetry` or `dead_letters` for retention.
    pub category: String,
    pub tenant: Option<String>,
    pub subject_hash: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub completed_at: DateTime<Utc>,
    /// Tables changed (rows removed or recomputed), in the order touched.
    pub tables: Vec<String>,
    pub rows_removed: u64,
    pub files_rewritten: u64,
    pub files_vacuumed: u64,
    pub detail: Option<String>,
}

fn audit_batch(entries: &[AuditEntry]) -> RecordBatch {
    let ts = |f: &dyn Fn(&AuditEntry) -> Option<i64>| {
        Arc::new(TimestampMicrosecondArray::from_iter(entries.iter().map(f)).with_timezone("UTC"))
    };
    let count = |f: &dyn Fn(&AuditEntry) -> u64| {
        Arc::new(Int64Array::from_iter_values(
            entries
                .iter()
                .map(|e| i64::try_from(f(e)).unwrap_or(i64::MAX)),
        ))
    };
    RecordBatch::try_new(
        AUDIT.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.request_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.kind),
            )),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.category.as_str()),
            )),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.tenant.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.subject_hash.as_deref()),
            )),
            ts(&|e| Some(e.requested_at.timestamp_micros())),
            ts(&|e| e.deadline_at.map(|d| d.timestamp_micros())),
            ts(&|e| Some(e.completed_at.timestamp_micros())),
            Arc::new(StringArray::from_iter_values(
                entries.iter().map(|e| e.tables.join(",")),
            )),
            count(&|e| e.rows_removed),
            count(&|e| e.files_rewritten),
            count(&|e| e.files_vacuumed),
            Arc::new(StringArray::from_iter(
                entries.iter().map(|e| e.detail.as_deref()),
            )),
        ],
    )
    .expect("columns match AUDIT")
}

/// A string column of a matcher's batch, by name (the batch holds the file's
/// columns in the file's order).
fn strings<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b StringArray, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no string column `{name}`")))
}

/// A timestamp column of a matcher's batch, by name.
fn timestamps<'b>(
    batch: &'b RecordBatch,
    name: &str,
) -> Result<&'b arrow::array::PrimitiveArray<TimestampMicrosecondType>, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no timestamp column `{name}`")))
}

/// Readings (columns `subject`, `meter`, `interval_start`) of the subject: those
/// naming it, and those without a subject of a meter that was the subject's at
/// the interval (`meters`; meters compared by their ledger hash).
fn reading_of<'a>(
    subject: &'a str,
    meters: &'a SubjectMeters,
    hasher: Option<&'a LedgerHasher>,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    move |batch| {
        let subjects = strings(batch, "subject")?;
        let meter = strings(batch, "meter")?;
        let start = timestamps(batch, "interval_start")?;
        // One hash per distinct meter of the file.
        let mut hashes: HashMap<&str, String> = HashMap::new();
        Ok((0..batch.num_rows())
            .map(|i| {
                if subjects.is_valid(i) {
                    return Some(subjects.value(i) == subject);
                }
                let Some(hasher) = hasher.filter(|_| !meters.is_empty()) else {
                    return Some(false);
                };
                let m = meter.value(i);
                let hash = hashes.entry(m).or_insert_with(|| hasher.hash(m));
                Some(meters.covers(hash, start.value(i)))
            })
            .collect())
    }
}

/// Meter profiles (columns `meter`, `valid_from`; the files are the tenant's, by
/// their partition) that are the subject's ([`SubjectMeters::covers_profile`]).
fn profile_of<'a>(
    meters: &'a SubjectMeters,
    hasher: Option<&'a LedgerHasher>,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    move |batch| {
        let meter = strings(batch, "meter")?;
        let valid_from = batch
            .column_by_name("valid_from")
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Date32Type>())
            .ok_or_else(|| ArrowError::SchemaError("no date column `valid_from`".into()))?;
        let mut hashes: HashMap<&str, String> = HashMap::new();
        Ok((0..batch.num_rows())
            .map(|i| {
                let Some(hasher) = hasher.filter(|_| !meters.is_empty()) else {
                    return Some(false);
                };
                let m = meter.value(i);
                let hash = hashes.entry(m).or_insert_with(|| hasher.hash(m));
                Some(meters.covers_profile(hash, valid_from.value(i)))
            })
            .collect())
    }
}

/// Rows whose `tenant` and `subject` are the pair.
fn tenant_subject<'a>(
    tenant: &'a str,
    subject: &'a str,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    move |batch| {
        let (t, s) = (strings(batch, "tenant")?, strings(batch, "subject")?);
        Ok((0..batch.num_rows())
            .map(|i| Some(t.value(i) == tenant && s.value(i) == subject))
            .collect())
    }
}

/// Dead letters (columns `tenant`, `payload`) of `tenant` whose stored payload
/// names `subject` (private tenants keep it).
fn payload_names<'a>(
    tenant: &'a str,
    subject: &'a str,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    #[derive(serde::Deserialize)]
    struct Subject<'p> {
        #[serde(borrow, default)]
        subject: Option<std::borrow::Cow<'p, str>>,
    }
    move |batch| {
        let (tenants, payloads) = (strings(batch, "tenant")?, strings(batch, "payload")?);
        Ok((0..batch.num_rows())
            .map(|i| {
                // Cheap tests first; then parse, so `"subject" : "x"` with spaces and
                // escapes count too.
                let hit =
                    tenants.is_valid(i) && tenants.value(i) == tenant && payloads.is_valid(i) && {
                        let p = payloads.value(i);
                        p.contains("subject")
                            && serde_json::from_str::<Subject<'_>>(p)
                                .is_ok_and(|s| s.subject.as_deref() == Some(subject))
                    };
                Some(hit)
            })
            .collect())
    }
}

/// The audit category of the deletion that follows an Elhub consent revocation.
pub const REVOCATION_CATEGORY: &str = "elhub_consent";

/// The audit request id of a revocation's deletion (one per ledger entry).
pub fn revocation_request_id(tenant: &str, subject_hash: &str, seq: i64) -> String {
    format!("{REVOCATION_CATEGORY}:{tenant}:{subject_hash}:{seq}")
}

/// Readings (columns `meter`, `interval_start`) of a revoked meter (`meters`:
/// ledger hashes) from before the revocation was recorded (`before`, µs).
fn revoked_reading<'a>(
    meters: &'a [String],
    before: i64,
    hasher: &'a LedgerHasher,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    move |batch| {
        let meter = strings(batch, "meter")?;
        let start = timestamps(batch, "interval_start")?;
        let mut hits: HashMap<&str, bool> = HashMap::new();
        Ok((0..batch.num_rows())
            .map(|i| {
                let m = meter.value(i);
                let revoked = *hits
                    .entry(m)
                    .or_insert_with(|| meters.contains(&hasher.hash(m)));
                Some(revoked && start.value(i) < before)
            })
            .collect())
    }
}

/// Rows whose timestamp column is before `cutoff` (µs).
fn before(cutoff: i64) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync {
    move |batch| {
        let column = batch
            .column(0)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| ArrowError::SchemaError("not a timestamp column".to_owned()))?;
        Ok(column
            .iter()
            .map(|v| Some(v.is_some_and(|t| t < cutoff)))
            .collect())
    }
}

/// Why a subject is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// A tombstone on the erasure topic.
    Request,
    /// The account ended longer ago than its retention.
    AccountRetention,
}

/// Accumulated work of one request across attempts (a transient error in the
/// middle repeats the request; what the first attempt removed still counts).
#[derive(Debug, Default, Clone)]
pub struct Work {
    tables: Vec<String>,
    rows: u64,
    rewritten: u64,
    vacuumed: u64,
}

impl Work {
    fn add(&mut self, table: &str, removal: &Removal) {
        if removal.changed() {
            self.touch(table);
            self.rows += removal.rows_removed;
            self.rewritten += removal.files_rewritten as u64;
        }
    }

    fn touch(&mut self, table: &str) {
        if !self.tables.iter().any(|t| t == table) {
            self.tables.push(table.to_owned());
        }
    }
}

/// Erasure and retention over one lake.
pub struct Lifecycle {
    lake: Lake,
    tenants: TenantRegistry,
    key: Option<std::sync::Arc<MasterKey>>,
    settings: LifecycleSettings,
    aggregate: AggregateSettings,
    metrics: Metrics,
    audit: DerivedTable,
    materializer: Option<Materializer>,
    /// The rates costs are computed with (`None`: the cost tables are left to the cost
    /// task of `meterline run`).
    rates: Option<meterline_operators::economics::rates::RateTable>,
    costs: Option<crate::cost::CostMaterializer>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle").finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// Open (creating when needed) the audit table.
    ///
    /// # Errors
    /// Storage errors (transient); a table of another shape (internal).
    pub async fn open(
        lake: &Lake,
        tenants: TenantRegistry,
        key: Option<std::sync::Arc<MasterKey>>,
        settings: LifecycleSettings,
        aggregate: AggregateSettings,
        metrics: Metrics,
    ) -> Result<Self, LifecycleError> {
        meterline_sinks::set_orphan_age(settings.orphan_age);
        let audit = DerivedTable::open_or_create(lake, audit_spec()).await?;
        for table in [
            "readings",
            "dead_letters",
            SUBJECTS_TABLE,
            ACCESS_LOG_TABLE,
            PROFILES_TABLE,
        ] {
            metrics.retention_deleted.with_label_values(&[table]);
            metrics.erased_rows.with_label_values(&[table]);
        }
        Ok(Self {
            lake: lake.clone(),
            tenants,
            key,
            settings,
            aggregate,
            metrics,
            audit,
            materializer: None,
            rates: None,
            costs: None,
        })
    }

    /// Recompute the cost tables after an erasure or a sweep with these rates (the ones
    /// `meterline run` prices with), so their removed rows are purged with the others.
    #[must_use]
    pub fn with_rates(mut self, rates: meterline_operators::economics::rates::RateTable) -> Self {
        self.rates = Some(rates);
        self
    }

    pub fn settings(&self) -> &LifecycleSettings {
        &self.settings
    }

    /// The Kafka position of the erasure topic the audit table has answered up to.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn answered(&mut self, app_id: &str) -> Result<Option<i64>, LifecycleError> {
        Ok(self.audit.progress(app_id).await?)
    }

    /// Record that the requests up to these positions are answered without an
    /// erasure (records that are not erasure requests).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn answer(&mut self, progress: &[(String, i64)]) -> Result<(), LifecycleError> {
        self.audit.append(&[], progress).await?;
        Ok(())
    }

    /// Remove `subject` from every table that can hold it, recompute the aggregates
    /// of the days it had data on, delete the old files from storage, and record
    /// the erasure (with `progress`, the Kafka position it answers, in the same
    /// commit). `work` carries what earlier attempts of the same request did.
    ///
    /// # Errors
    /// Storage errors (transient: call again with the same `work`); internal errors.
    pub async fn erase(
        &mut self,
        request_id: &str,
        tenant: &str,
        subject: &str,
        requested_at: DateTime<Utc>,
        progress: &[(String, i64)],
        work: &mut Work,
    ) -> Result<AuditEntry, LifecycleError> {
        self.erase_for(
            Cause::Request,
            request_id,
            (tenant, subject),
            requested_at,
            progress,
            work,
        )
        .await
    }

    async fn erase_for(
        &mut self,
        cause: Cause,
        request_id: &str,
        (tenant, subject): (&str, &str),
        requested_at: DateTime<Utc>,
        progress: &[(String, i64)],
        work: &mut Work,
    ) -> Result<AuditEntry, LifecycleError> {
        let hash = self.key.as_ref().map(|k| subject_hash(k, subject));
        self.remove_subject(tenant, subject, work).await?;
        self.settle(work).await?;
        let entry = AuditEntry {
            request_id: request_id.to_owned(),
            kind: if cause == Cause::Request {
                kind::ERASURE
            } else {
                kind::RETENTION
            },
            category: if cause == Cause::Request {
                "subject"
            } else {
                "account"
            }
            .to_owned(),
            tenant: Some(tenant.to_owned()),
            subject_hash: hash,
            requested_at,
            deadline_at: (cause == Cause::Request)
                .then(|| requested_at + chrono_duration(self.settings.erasure_deadline)),
            completed_at: self.settings.clock.now(),
            tables: work.tables.clone(),
            rows_removed: work.rows,
            files_rewritten: work.rewritten,
            files_vacuumed: work.vacuumed,
            detail: None,
        };
        self.audit
            .append(&[audit_batch(std::slice::from_ref(&entry))], progress)
            .await?;
        let late = entry.completed_at > entry.deadline_at.unwrap_or(entry.completed_at);
        if cause == Cause::Request {
            self.metrics
                .erasures
                .with_label_values(&[if late { "late" } else { "completed" }])
                .inc();
        }
        info!(
            request_id,
            rows_removed = entry.rows_removed,
            files_rewritten = entry.files_rewritten,
            files_vacuumed = entry.files_vacuumed,
            tables = %entry.tables.join(","),
            late,
            "erasure complete"
        );
        Ok(entry)
    }

    /// Remove the subject's rows from every table of `tenant` that can hold them,
    /// counted in `work`: rows naming the subject, and readings without a subject
    /// of the meters that were the subject's at their interval (from its ledger
    /// entries: Elhub consent grant or upgrade to revocation or account end).
    async fn remove_subject(
        &mut self,
        tenant: &str,
        subject: &str,
        work: &mut Work,
    ) -> Result<(), LifecycleError> {
        let meters = match &self.key {
            Some(key) => {
                crate::privacy::consent::subject_meters(&self.lake, key, tenant, subject).await?
            }
            None => SubjectMeters::default(),
        };
        let hasher = self.key.as_ref().map(|k| LedgerHasher::new(k));
        let of_tenant = |p: &HashMap<String, Option<String>>| {
            p.get("tenant").cloned().flatten().as_deref() == Some(tenant)
        };
        let by_reading = reading_of(subject, &meters, hasher.as_ref());
        let by_payload = payload_names(tenant, subject);
        let by_subject = tenant_subject(tenant, subject);
        let by_profile = profile_of(&meters, hasher.as_ref());
        let tables: [Target<'_>; 5] = [
            (
                "readings",
                meterline_operators::schema::READINGS.clone(),
                &["subject", "meter", "interval_start"],
                &of_tenant,
                &by_reading,
            ),
            (
                "dead_letters",
                DEAD_LETTERS.clone(),
                &["tenant", "payload"],
                &|_| true,
                &by_payload,
            ),
            (
                SUBJECTS_TABLE,
                SUBJECTS.clone(),
                &["tenant", "subject"],
                &|_| true,
                &by_subject,
            ),
            (
                ACCESS_LOG_TABLE,
                ACCESS_LOG.clone(),
                &["tenant", "subject"],
                &|_| true,
                &by_subject,
            ),
            (
                PROFILES_TABLE,
                meterline_operators::inputs::profile::METER_PROFILES.clone(),
                &["meter", "valid_from"],
                &of_tenant,
                &by_profile,
            ),
        ];
        for target in tables {
            self.remove_from(target, work).await?;
        }
        Ok(())
    }

    /// Remove the rows of one table that `target` matches, counted in `work`.
    async fn remove_from(
        &mut self,
        (table, schema, columns, files, matcher): Target<'_>,
        work: &mut Work,
    ) -> Result<(), LifecycleError> {
        let Some(mut t) = open_existing(&self.lake, table).await? else {
            return Ok(());
        };
        let removal = remove_rows(
            &mut t,
            table,
            &schema,
            columns,
            files,
            matcher,
            kind::ERASURE,
        )
        .await?;
        self.count_erased(table, &removal);
        work.add(table, &removal);
        if table == "readings" && std::env::var_os(FAILPOINT_ENV).is_some() {
            warn!("failpoint: erasure stalled");
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    /// Apply every retention period as of `now`: readings (by local date, per
    /// tenant) and dead letters; then recompute, purge and record like an erasure.
    /// Returns the audit rows written (one per tenant and category that lost data).
    ///
    /// # Errors
    /// Storage errors (transient: the next sweep repeats it); internal errors.
    pub async fn sweep(&mut self, now: DateTime<Utc>) -> Result<Vec<AuditEntry>, LifecycleError> {
        let orphans = self.sweep_orphans(now).await?;
        let mut entries = self.sweep_data(now).await?;
        entries.extend(orphans);
        Ok(entries)
    }

    /// Delete untracked files (uploads whose commit never landed) older than the
    /// orphan age from every table (never from the key store: its keys are not
    /// in a log). One audit row (category `orphan_files`) when any were deleted.
    async fn sweep_orphans(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Option<AuditEntry>, LifecycleError> {
        let age = self.settings.orphan_age;
        // Object modification times come from the storage server's wall clock,
        // never from meterline's (possibly moved) "now": measured with a moved
        // clock, a flush's uploads in flight would look old and be deleted.
        let storage_now = self.settings.storage_clock.now().timestamp_millis();
        let mut tables: Vec<&'static str> = vec![
            "readings",
            "dead_letters",
            SUBJECTS_TABLE,
            ACCESS_LOG_TABLE,
            PROFILES_TABLE,
            "spot_prices",
            "weather_observations",
            "grid_tariffs",
            "tax_rates",
            "exchange_rates",
            "weather_stations",
            "elhub_messages",
            crate::privacy::tables::LEDGER_TABLE,
            crate::privacy::tables::AUDIT_TABLE,
        ];
        tables.extend(crate::aggregate::specs().iter().map(|s| s.name));
        tables.extend(crate::cost::specs().iter().map(|s| s.name));
        let mut deleted = 0u64;
        let mut touched = Vec::new();
        for name in tables {
            let Some(mut t) = open_existing(&self.lake, name).await? else {
                continue;
            };
            let n = meterline_sinks::vacuum_orphans(&mut t, name, age, storage_now).await?;
            if n > 0 {
                deleted += n as u64;
                touched.push(name.to_owned());
            }
        }
        if deleted == 0 {
            return Ok(None);
        }
        self.metrics.orphan_files_removed.inc_by(deleted);
        let entry = AuditEntry {
            request_id: format!("retention:{}:orphan_files", now.timestamp_micros()),
            kind: kind::RETENTION,
            category: "orphan_files".to_owned(),
            tenant: None,
            subject_hash: None,
            requested_at: now,
            deadline_at: None,
            completed_at: self.settings.clock.now(),
            tables: touched,
            rows_removed: 0,
            files_rewritten: 0,
            files_vacuumed: deleted,
            detail: Some(format!(
                "files no commit references, older than {} s",
                age.as_secs()
            )),
        };
        self.audit
            .append(&[audit_batch(std::slice::from_ref(&entry))], &[])
            .await?;
        info!(files = deleted, "orphan files deleted");
        Ok(Some(entry))
    }

    /// Every data retention period, revocation and ended account as of `now`.
    async fn sweep_data(&mut self, now: DateTime<Utc>) -> Result<Vec<AuditEntry>, LifecycleError> {
        let mut entries = Vec::new();
        let mut work = Work::default();
        self.sweep_telemetry(now, &mut work, &mut entries).await?;
        self.sweep_revocations(now, &mut work, &mut entries).await?;
        self.sweep_dated_rows(now, &mut work, &mut entries).await?;
        let mut destroyed = self.destroy_closed_keys(now).await?;
        destroyed.extend(self.destroy_dead_letter_keys(now).await?);
        let ended = self.ended_accounts(now).await?;
        if entries.is_empty() && ended.is_empty() {
            if !destroyed.is_empty() {
                self.audit.append(&[audit_batch(&destroyed)], &[]).await?;
            }
            return Ok(destroyed);
        }
        self.settle(&mut work).await?;
        let completed = self.settings.clock.now();
        for e in &mut entries {
            e.completed_at = completed;
            e.files_vacuumed = work.vacuumed;
            e.tables.clone_from(&work.tables);
        }
        self.audit.append(&[audit_batch(&entries)], &[]).await?;
        if !destroyed.is_empty() {
            self.audit.append(&[audit_batch(&destroyed)], &[]).await?;
            for d in &destroyed {
                info!(
                    tenant = d.tenant.as_deref().unwrap_or_default(),
                    detail = d.detail.as_deref().unwrap_or_default(),
                    "pseudonym key destroyed"
                );
            }
        }
        // Accounts past their retention: a whole erasure each (audited as retention).
        for (tenant, subject, terminated_at) in ended {
            let hash = self.key.as_ref().map(|k| subject_hash(k, &subject));
            let request_id = format!(
                "retention:{}:account:{}",
                now.timestamp_micros(),
                hash.as_deref().unwrap_or("-")
            );
            let mut account_work = Work::default();
            let entry = self
                .erase_for(
                    Cause::AccountRetention,
                    &request_id,
                    (&tenant, &subject),
                    terminated_at,
                    &[],
                    &mut account_work,
                )
                .await?;
            entries.push(entry);
        }
        entries.extend(destroyed);
        info!(
            entries = entries.len(),
            rows_removed = entries.iter().map(|e| e.rows_removed).sum::<u64>(),
            files_vacuumed = work.vacuumed,
            "retention applied"
        );
        Ok(entries)
    }

    /// Readings: whole `(tenant, local_date)` partitions older than each tenant's
    /// telemetry retention.
    async fn sweep_telemetry(
        &mut self,
        now: DateTime<Utc>,
        work: &mut Work,
        entries: &mut Vec<AuditEntry>,
    ) -> Result<(), LifecycleError> {
        let Some(mut readings) = open_existing(&self.lake, "readings").await? else {
            return Ok(());
        };
        let policies: BTreeMap<String, (u32, chrono::NaiveDate)> = self
            .tenants
            .iter()
            .filter_map(|t| {
                let days = *self.settings.telemetry_days.get(&t.id)?;
                let oldest = retain::oldest_kept_local_date(now, t.timezone, days);
                Some((t.id.clone(), (days, oldest)))
            })
            .collect();
        for (tenant, (days, cutoff)) in &policies {
            let cutoff_text = cutoff.format("%Y-%m-%d").to_string();
            // Partition values are ISO dates: text order is date order.
            let old = |p: &HashMap<String, Option<String>>| {
                p.get("tenant").cloned().flatten().as_deref() == Some(tenant.as_str())
                    && p.get("local_date")
                        .cloned()
                        .flatten()
                        .is_some_and(|d| d < cutoff_text)
            };
            let removal = remove_files(&mut readings, "readings", &old, kind::RETENTION).await?;
            if removal.changed() {
                self.metrics
                    .retention_deleted
                    .with_label_values(&["readings"])
                    .inc_by(removal.rows_removed);
                work.add("readings", &removal);
                entries.push(self.retention_entry(
                    "telemetry",
                    Some(tenant.clone()),
                    now,
                    &removal,
                    format!("local_date < {cutoff_text} ({days} days)"),
                ));
            }
        }
        Ok(())
    }

    /// Readings of meters whose Elhub consent was revoked longer ago than
    /// `revocation_days`: every reading of the meter before the revocation was
    /// recorded (nothing of that time is stored after it; see the consent view).
    /// One audit row per revocation (category `elhub_consent`), written once: a
    /// revocation with an audit row is done.
    async fn sweep_revocations(
        &mut self,
        now: DateTime<Utc>,
        work: &mut Work,
        entries: &mut Vec<AuditEntry>,
    ) -> Result<(), LifecycleError> {
        let Some(key) = self.key.clone() else {
            return Ok(());
        };
        let due = crate::privacy::consent::revocations(&self.lake).await?;
        if due.is_empty() {
            return Ok(());
        }
        let done = self.audited(REVOCATION_CATEGORY).await?;
        let hasher = LedgerHasher::new(&key);
        let days = chrono::Duration::days(i64::from(self.settings.revocation_days));
        for r in due {
            let request_id = revocation_request_id(&r.tenant, &r.subject_hash, r.seq);
            let recorded = DateTime::from_timestamp_micros(r.recorded).unwrap_or(now);
            if done.contains(&request_id) || recorded + days > now {
                continue;
            }
            let mut removal = Removal::default();
            if let Some(mut readings) = open_existing(&self.lake, "readings").await? {
                let of_tenant = |p: &HashMap<String, Option<String>>| {
                    p.get("tenant").cloned().flatten().as_deref() == Some(r.tenant.as_str())
                };
                let matcher = revoked_reading(&r.meters, r.recorded, &hasher);
                removal = remove_rows(
                    &mut readings,
                    "readings",
                    &meterline_operators::schema::READINGS,
                    &["meter", "interval_start"],
                    &of_tenant,
                    &matcher,
                    kind::RETENTION,
                )
                .await?;
            }
            self.metrics
                .retention_deleted
                .with_label_values(&["readings"])
                .inc_by(removal.rows_removed);
            work.add("readings", &removal);
            let mut entry = self.retention_entry(
                REVOCATION_CATEGORY,
                Some(r.tenant.clone()),
                now,
                &removal,
                format!(
                    "{} meter(s), readings before the revocation recorded at {}; {} day(s) after it",
                    r.meters.len(),
                    recorded.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    self.settings.revocation_days
                ),
            );
            entry.request_id = request_id;
            entry.subject_hash = Some(r.subject_hash.clone());
            entry.requested_at = recorded;
            entry.deadline_at = Some(recorded + days);
            entries.push(entry);
        }
        Ok(())
    }

    /// Request ids of the audit rows of `category`.
    async fn audited(
        &mut self,
        category: &str,
    ) -> Result<std::collections::HashSet<String>, LifecycleError> {
        self.audit.reload().await?;
        let batches = self
            .audit
            .scan(
                &["request_id"],
                deltalake::datafusion::prelude::col("category")
                    .eq(deltalake::datafusion::prelude::lit(category)),
            )
            .await?;
        Ok(batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| c.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Dead letters and the access log: rows older than their retention.
    async fn sweep_dated_rows(
        &mut self,
        now: DateTime<Utc>,
        work: &mut Work,
        entries: &mut Vec<AuditEntry>,
    ) -> Result<(), LifecycleError> {
        for (table, schema, column, days) in [
            (
                "dead_letters",
                DEAD_LETTERS.clone(),
                "dead_lettered_at",
                self.settings.dead_letter_days,
            ),
            (
                ACCESS_LOG_TABLE,
                ACCESS_LOG.clone(),
                "seen_at",
                self.settings.access_log_days,
            ),
        ] {
            let Some(mut t) = open_existing(&self.lake, table).await? else {
                continue;
            };
            let cutoff = retain::oldest_kept_instant(now, days);
            let matcher = before(cutoff.timestamp_micros());
            let removal = remove_rows(
                &mut t,
                table,
                &schema,
                &[column],
                &|_| true,
                &matcher,
                kind::RETENTION,
            )
            .await?;
            if removal.changed() {
                self.metrics
                    .retention_deleted
                    .with_label_values(&[table])
                    .inc_by(removal.rows_removed);
                work.add(table, &removal);
                entries.push(self.retention_entry(
                    table,
                    None,
                    now,
                    &removal,
                    format!(
                        "{column} < {} ({days} days)",
                        cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Destroy the keys of epochs that ended more than the tenant's grace period
    /// ago (their pseudonyms become unlinkable); one audit entry per key.
    async fn destroy_closed_keys(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, LifecycleError> {
        let Some(master) = self.key.clone() else {
            return Ok(Vec::new());
        };
        let rotating: Vec<_> = self
            .tenants
            .iter()
            .filter(|t| {
                t.deployment == meterline_operators::Deployment::Public
                    && t.rules.key_rotation != meterline_operators::epoch::Rotation::Never
            })
            .cloned()
            .collect();
        if rotating.is_empty() {
            return Ok(Vec::new());
        }
        let store = crate::privacy::keys::KeyStore::open(&self.lake, master).await?;
        let stored = store.list().await?;
        let mut out = Vec::new();
        for t in rotating {
            let today = retain::local_today(now, t.timezone);
            let grace = t.rules.key_grace_days;
            for epoch in stored.get(&t.id).into_iter().flatten() {
                if !epoch.closed(today, grace) || !store.destroy(&t.id, *epoch).await? {
                    continue;
                }
                out.push(AuditEntry {
                    request_id: format!("key:{}:{epoch}", t.id),
                    kind: kind::KEY_DESTROYED,
                    category: "pseudonym_key".to_owned(),
                    tenant: Some(t.id.clone()),
                    subject_hash: None,
                    requested_at: now,
                    deadline_at: None,
                    completed_at: self.settings.clock.now(),
                    tables: vec![crate::privacy::keys::KEYS_DIR.to_owned()],
                    rows_removed: 0,
                    files_rewritten: 0,
                    files_vacuumed: 1,
                    detail: Some(format!(
                        "epoch {epoch} ended {}; grace {grace} days",
                        epoch.end().map(|d| d.to_string()).unwrap_or_default()
                    )),
                });
            }
        }
        Ok(out)
    }

    /// Destroy the dead-letter key of every UTC day whose dead letters are all
    /// past their retention (this sweep deleted the last of them); one audit
    /// entry per key. The pseudonyms in the day's dead letters (and on the
    /// dead-letter topic) link to nothing after it.
    async fn destroy_dead_letter_keys(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, LifecycleError> {
        let Some(master) = self.key.clone() else {
            return Ok(Vec::new());
        };
        let store = crate::privacy::keys::KeyStore::open(&self.lake, master).await?;
        let days = self.settings.dead_letter_days;
        let mut out = Vec::new();
        for day in store.dead_letter_key_days().await? {
            if !crate::privacy::keys::dead_letter_key_expired(day, days, now)
                || !store.destroy_dead_letter_key(day).await?
            {
                continue;
            }
            out.push(AuditEntry {
                request_id: format!("key:{}:{day}", crate::privacy::keys::DEAD_LETTERS_DIR),
                kind: kind::KEY_DESTROYED,
                category: "dead_letter_key".to_owned(),
                tenant: None,
                subject_hash: None,
                requested_at: now,
                deadline_at: None,
                completed_at: self.settings.clock.now(),
                tables: vec![crate::privacy::keys::KEYS_DIR.to_owned()],
                rows_removed: 0,
                files_rewritten: 0,
                files_vacuumed: 1,
                detail: Some(format!(
                    "dead letters of {day} (UTC) past their retention of {days} days"
                )),
            });
        }
        Ok(out)
    }

    /// (tenant, subject, terminated at) of accounts terminated longer ago than
    /// their retention that still have a profile.
    async fn ended_accounts(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, LifecycleError> {
        if open_existing(&self.lake, SUBJECTS_TABLE).await?.is_none() {
            return Ok(Vec::new());
        }
        let [_, spec, _] = crate::privacy::tables::subject_specs();
        let table = DerivedTable::open_or_create(&self.lake, spec).await?;
        let cutoff = retain::oldest_kept_instant(now, self.settings.account_days);
        let batches = table
            .scan(
                &["tenant", "subject", "terminated_at"],
                deltalake::datafusion::prelude::col("terminated_at").lt(
                    deltalake::datafusion::prelude::lit(
                        deltalake::datafusion::scalar::ScalarValue::TimestampMicrosecond(
                            Some(cutoff.timestamp_micros()),
                            Some("UTC".into()),
                        ),
                    ),
                ),
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let t = b.column(0).as_string::<i32>();
            let s = b.column(1).as_string::<i32>();
            let at = b.column(2).as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                out.push((
                    t.value(i).to_owned(),
                    s.value(i).to_owned(),
                    DateTime::from_timestamp_micros(at.value(i)).unwrap_or(now),
                ));
            }
        }
        Ok(out)
    }

    fn retention_entry(
        &self,
        category: &str,
        tenant: Option<String>,
        now: DateTime<Utc>,
        removal: &Removal,
        detail: String,
    ) -> AuditEntry {
        AuditEntry {
            request_id: format!("retention:{}:{category}", now.timestamp_micros()),
            kind: kind::RETENTION,
            category: category.to_owned(),
            tenant,
            subject_hash: None,
            requested_at: now,
            deadline_at: None,
            completed_at: now,
            tables: Vec::new(),
            rows_removed: removal.rows_removed,
            files_rewritten: removal.files_rewritten as u64,
            files_vacuumed: 0,
            detail: Some(detail),
        }
    }

    fn count_erased(&self, table: &str, removal: &Removal) {
        self.metrics
            .erased_rows
            .with_label_values(&[table])
            .inc_by(removal.rows_removed);
    }

    /// After removing rows: bring the aggregates up to date with what is left
    /// (they are recomputed from `readings`, not edited), then delete every removed
    /// file from storage.
    async fn settle(&mut self, work: &mut Work) -> Result<(), LifecycleError> {
        // The aggregates (and costs) are brought up to the readings as they are now
        // before anything is purged, even when this attempt removed nothing: a
        // request repeated after a crash finds the readings already gone while the
        // aggregates may still hold the subject, and a replacement committed after
        // the purge would leave the files it drops in storage.
        let readings_changed = work.tables.iter().any(|t| t == "readings");
        if self.aggregate.enabled {
            if self.materializer.is_none() {
                self.materializer = Some(
                    Materializer::open(
                        &self.lake,
                        self.tenants.clone(),
                        self.aggregate.clone(),
                        self.metrics.clone(),
                    )
                    .await?,
                );
            }
            if let Some(m) = self.materializer.as_mut() {
                m.round().await?;
                // The aggregates are made of the readings just removed, so they
                // changed because of this erasure whoever recomputed them: this
                // round, or the pipeline's aggregate task, which watches the same
                // table and may get there first (this round then has nothing
                // left to do). The audit names them either way.
                if readings_changed {
                    for spec in crate::aggregate::specs() {
                        work.touch(spec.name);
                    }
                }
            }
        }
        if let Some(rates) = self.rates.clone() {
            if self.costs.is_none() {
                self.costs = Some(
                    crate::cost::CostMaterializer::open(
                        &self.lake,
                        self.tenants.clone(),
                        &self.aggregate,
                        rates,
                        self.metrics.clone(),
                    )
                    .await?,
                );
            }
            if let Some(c) = self.costs.as_mut() {
                let round = c.round().await?;
                // As for the aggregates: whoever recomputed them, they changed
                // because of this removal.
                let removed = work
                    .tables
                    .iter()
                    .any(|t| t == "readings" || t == PROFILES_TABLE);
                if removed && !round.rewritten.is_empty() {
                    for spec in crate::cost::specs() {
                        work.touch(spec.name);
                    }
                }
            }
        }
        let mut tables: Vec<&'static str> = vec![
            "readings",
            "dead_letters",
            SUBJECTS_TABLE,
            ACCESS_LOG_TABLE,
            PROFILES_TABLE,
        ];
        tables.extend(crate::aggregate::specs().iter().map(|s| s.name));
        tables.extend(crate::cost::specs().iter().map(|s| s.name));
        for name in tables {
            if let Some(mut t) = open_existing(&self.lake, name).await? {
                work.vacuumed += purge(&mut t, name).await? as u64;
            }
        }
        Ok(())
    }
}

/// Tenants with data in the lake whose retention depends on the tenant's
/// configuration (readings and aggregates, profiles, pseudonym epoch keys), with
/// the places they were found. Dead letters, the access log and the consent
/// ledger are left out: their retention (or keeping) does not depend on a
/// tenant's settings.
///
/// # Errors
/// Storage errors (transient).
pub async fn lake_tenants(
    lake: &Lake,
    key: Option<&std::sync::Arc<MasterKey>>,
) -> Result<BTreeMap<String, Vec<&'static str>>, LifecycleError> {
    let mut found: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut note = |tenant: &str, table: &'static str| {
        let places = found.entry(tenant.to_owned()).or_default();
        if !places.contains(&table) {
            places.push(table);
        }
    };
    let by_date: &'static [&'static str] = &["tenant", "local_date"];
    let mut partitioned: Vec<(&'static str, &'static [&'static str])> =
        vec![("readings", by_date), (PROFILES_TABLE, &["tenant"])];
    partitioned.extend(
        crate::aggregate::specs()
            .iter()
            .chain(crate::cost::specs().iter())
            .map(|s| (s.name, s.partition_columns)),
    );
    for (name, columns) in partitioned {
        let mut table = meterline_sinks::SourceTable::new(lake, name, columns);
        if table.refresh().await?.is_none() {
            continue;
        }
        for p in table.partitions().await? {
            if let Some(t) = p.first() {
                note(t, name);
            }
        }
    }
    if open_existing(lake, SUBJECTS_TABLE).await?.is_some() {
        let [_, spec, _] = crate::privacy::tables::subject_specs();
        let table = DerivedTable::open_or_create(lake, spec).await?;
        for b in table
            .scan(&["tenant"], deltalake::datafusion::prelude::lit(true))
            .await?
        {
            let c = b.column(0).as_string::<i32>();
            for i in 0..b.num_rows() {
                note(c.value(i), SUBJECTS_TABLE);
            }
        }
    }
    if let Some(master) = key {
        let store = crate::privacy::keys::KeyStore::open(lake, master.clone()).await?;
        for (tenant, epochs) in store.list().await? {
            if !epochs.is_empty() {
                note(&tenant, crate::privacy::keys::KEYS_DIR);
            }
        }
    }
    Ok(found)
}

/// Tenants with data in the lake that are not configured (neither active nor
/// `retired`), with where their data is: nothing would ever delete it.
///
/// # Errors
/// Storage errors (transient).
pub async fn unconfigured_tenants(
    lake: &Lake,
    tenants: &TenantRegistry,
    key: Option<&std::sync::Arc<MasterKey>>,
) -> Result<Vec<(String, Vec<&'static str>)>, LifecycleError> {
    Ok(lake_tenants(lake, key)
        .await?
        .into_iter()
        .filter(|(t, _)| tenants.by_id(t).is_none())
        .collect())
}

/// Log each unconfigured tenant as an error (at start and every sweep).
pub async fn warn_unconfigured(
    lake: &Lake,
    tenants: &TenantRegistry,
    key: Option<&std::sync::Arc<MasterKey>>,
) {
    match unconfigured_tenants(lake, tenants, key).await {
        Ok(list) => {
            for (tenant, places) in list {
                tracing::error!(
                    %tenant,
                    tables = %places.join(","),
                    "tenant has data in the lake but is not configured: nothing deletes it; \
                     list it under [[tenants]] with retired = true and its retention, or erase it"
                );
            }
        }
        Err(e) => warn!(error = %e, "could not list the lake's tenants"),
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What runs after each sweep, whatever its outcome (the service refreshes the audit
/// gauges with it).
pub type AfterSweep =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Sweep every `settings.retention_every` (the first at start) until shutdown, then
/// run `after`. Failures are logged and counted; the next sweep repeats the work.
pub async fn retention_loop(
    lake: Lake,
    all: crate::config::Settings,
    metrics: Metrics,
    shutdown: Arc<crate::shutdown::Shutdown>,
    after: Option<AfterSweep>,
) {
    let (tenants, key, settings) = (all.tenants, all.key, all.lifecycle);
    let (aggregate, rates) = (all.aggregate, all.economics.rates);
    let every = settings.retention_every;
    let mut lifecycle: Option<Lifecycle> = None;
    while !shutdown.is_requested() {
        if lifecycle.is_none() {
            match Lifecycle::open(
                &lake,
                tenants.clone(),
                key.clone(),
                settings.clone(),
                aggregate.clone(),
                metrics.clone(),
            )
            .await
            {
                Ok(l) => lifecycle = Some(l.with_rates(rates.clone())),
                Err(e) => warn!(error = %e, "retention: cannot open the audit table; retrying"),
            }
        }
        warn_unconfigured(&lake, &tenants, key.as_ref()).await;
        if let Some(l) = lifecycle.as_mut() {
            let outcome = l.sweep(settings.clock.now()).await;
            metrics
                .retention_sweeps
                .with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }])
                .inc();
            if let Err(e) = outcome {
                warn!(error = %e, "retention sweep failed; the next sweep repeats it");
            }
            // Not after shutdown was requested, and given up when it is: the
            // audit only reads, and a scan left running past the runtime's end
            // would panic in the Delta kernel's executor.
            if let Some(after) = after.as_ref().filter(|_| !shutdown.is_requested()) {
                tokio::select! {
                    () = after() => {}
                    () = shutdown.requested() => {
                        info!("retention: the audit after the sweep stopped for shutdown");
                    }
                }
            }
        }
        // The sweep schedule, not a synchronization.
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.requested() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use meterline_operators::consent::{Change, ChangeKind};

    /// Columns as a Parquet file of `readings` holds them: `meter` before `subject`.
    fn readings(rows: &[(&str, Option<&str>, i64)]) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("meter", DataType::Utf8, false),
                Field::new("subject", DataType::Utf8, true),
                Field::new("interval_start", ts, false),
            ])),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_subjects_readings_are_those_naming_it_and_its_meters_while_they_were_its() {
        let hasher = LedgerHasher::new(&MasterKey::from_bytes([9; 32]));
        let mut meters = SubjectMeters::default();
        let m = [hasher.hash("m-own")];
        meters.apply(&Change {
            tenant: "t",
            subject_hash: "h",
            kind: ChangeKind::ElhubGranted,
            meters: &m,
            occurred: 100,
            recorded: 100,
        });
        meters.apply(&Change {
            tenant: "t",
            subject_hash: "h",
            kind: ChangeKind::ElhubRevoked,
            meters: &m,
            occurred: 200,
            recorded: 200,
        });
        let batch = readings(&[
            ("m-other", Some("acct-1"), 0),   // names the subject
            ("m-other", Some("acct-2"), 150), // another subject
            ("m-own", None, 99),              // before the meter was theirs
            ("m-own", None, 100),
            ("m-own", None, 199),
            ("m-own", None, 200), // after the revocation: the next occupant's
            ("m-own", Some("acct-2"), 150),
            ("m-other", None, 150),
        ]);
        let hits = reading_of("acct-1", &meters, Some(&hasher))(&batch).unwrap();
        assert_eq!(
            hits.iter().map(Option::unwrap).collect::<Vec<_>>(),
            [true, false, false, true, true, false, false, false]
        );
        let revoked = revoked_reading(&m, 150, &hasher)(&batch).unwrap();
        assert_eq!(
            revoked.iter().map(Option::unwrap).collect::<Vec<_>>(),
            [false, false, true, true, false, false, false, false]
        );
    }
}
