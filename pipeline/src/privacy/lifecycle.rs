//! The privacy lifecycle of stored data: erasure on request, retention sweeps, and
//! the `erasure_audit` table that proves both happened.
//!
//! ```text
//!  subject.erasure (tombstone, key = subject) ─▶ erase: readings, dead_letters
//!                                                 │  (rewrite only files holding the subject)
//!                                                 ├─▶ aggregates recomputed from what is left
//!                                                 ├─▶ purge: the old files deleted from storage
//!                                                 └─▶ erasure_audit row + Kafka position, one commit
//!  schedule / `meterline retention run` ────────▶ sweep: readings per tenant policy, dead letters
//!                                                 └─▶ same recompute, purge and audit
//! ```
//!
//! Every step is idempotent: a crash at any point repeats the request, which finds
//! less (or nothing) to remove, recomputes and purges again, and records it once
//! (the audit commit carries the Kafka position it answers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use meterline_operators::{retain, MasterKey, TenantRegistry};
use meterline_sinks::{
    open_existing, purge, remove_files, remove_rows, DerivedTable, Lake, Removal, SinkError,
    DEAD_LETTERS,
};
use tracing::{info, warn};

use crate::aggregate::Materializer;
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

/// Rows whose (first requested) column is `subject`.
fn subject_is<'a>(
    subject: &'a str,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    move |batch| {
        let column = batch.column(0).as_string_opt::<i32>().ok_or_else(|| {
            ArrowError::SchemaError("`subject` is not a string column".to_owned())
        })?;
        Ok(column.iter().map(|v| Some(v == Some(subject))).collect())
    }
}

/// Dead letters whose stored payload names `subject` (private tenants keep it).
fn payload_names<'a>(
    subject: &'a str,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    #[derive(serde::Deserialize)]
    struct Subject<'p> {
        #[serde(borrow, default)]
        subject: Option<std::borrow::Cow<'p, str>>,
    }
    move |batch| {
        let column = batch.column(0).as_string_opt::<i32>().ok_or_else(|| {
            ArrowError::SchemaError("`payload` is not a string column".to_owned())
        })?;
        Ok(column
            .iter()
            .map(|payload| {
                // Cheap test first; then parse, so `"subject" : "x"` with spaces and
                // escapes count too.
                let hit = payload.is_some_and(|p| {
                    p.contains("subject")
                        && serde_json::from_str::<Subject<'_>>(p)
                            .is_ok_and(|s| s.subject.as_deref() == Some(subject))
                });
                Some(hit)
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
        let audit = DerivedTable::open_or_create(lake, audit_spec()).await?;
        for table in ["readings", "dead_letters", SUBJECTS_TABLE, ACCESS_LOG_TABLE] {
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
        })
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
        subject: &str,
        requested_at: DateTime<Utc>,
        progress: &[(String, i64)],
        work: &mut Work,
    ) -> Result<AuditEntry, LifecycleError> {
        self.erase_for(
            Cause::Request,
            request_id,
            subject,
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
        subject: &str,
        requested_at: DateTime<Utc>,
        progress: &[(String, i64)],
        work: &mut Work,
    ) -> Result<AuditEntry, LifecycleError> {
        let hash = self.key.as_ref().map(|k| subject_hash(k, subject));
        self.remove_subject(subject, work).await?;
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
            tenant: None,
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

    /// Remove the subject's rows from every table that can hold them, counted in
    /// `work`.
    async fn remove_subject(
        &mut self,
        subject: &str,
        work: &mut Work,
    ) -> Result<(), LifecycleError> {
        // Where a subject can be stored, and the column that names it. (Public
        // tenants' readings never carry a subject: they are not linked to one.)
        let by_subject = subject_is(subject);
        let by_payload = payload_names(subject);
        let tables: [(
            &'static str,
            SchemaRef,
            &str,
            meterline_sinks::erase::RowMatcher<'_>,
        ); 4] = [
            (
                "readings",
                meterline_operators::schema::READINGS.clone(),
                "subject",
                &by_subject,
            ),
            ("dead_letters", DEAD_LETTERS.clone(), "payload", &by_payload),
            (SUBJECTS_TABLE, SUBJECTS.clone(), "subject", &by_subject),
            (ACCESS_LOG_TABLE, ACCESS_LOG.clone(), "subject", &by_subject),
        ];
        for (table, schema, column, matcher) in tables {
            let Some(mut t) = open_existing(&self.lake, table).await? else {
                continue;
            };
            let removal = remove_rows(
                &mut t,
                table,
                &schema,
                &[column],
                &|_| true,
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
        let mut entries = Vec::new();
        let mut work = Work::default();
        self.sweep_telemetry(now, &mut work, &mut entries).await?;
        self.sweep_dated_rows(now, &mut work, &mut entries).await?;
        let destroyed = self.destroy_closed_keys(now).await?;
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
                    "pseudonym epoch key destroyed"
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
            let mut entry = self
                .erase_for(
                    Cause::AccountRetention,
                    &request_id,
                    &subject,
                    terminated_at,
                    &[],
                    &mut account_work,
                )
                .await?;
            entry.tenant = Some(tenant);
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
        if self.aggregate.enabled && work.tables.iter().any(|t| t == "readings") {
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
                for spec in crate::aggregate::specs() {
                    work.touch(spec.name);
                }
            }
        }
        let mut tables: Vec<&'static str> =
            vec!["readings", "dead_letters", SUBJECTS_TABLE, ACCESS_LOG_TABLE];
        tables.extend(crate::aggregate::specs().iter().map(|s| s.name));
        for name in tables {
            if let Some(mut t) = open_existing(&self.lake, name).await? {
                work.vacuumed += purge(&mut t, name).await? as u64;
            }
        }
        Ok(())
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Sweep every `settings.retention_every` (the first at start) until shutdown.
/// Failures are logged and counted; the next sweep repeats the work.
pub async fn retention_loop(
    lake: Lake,
    tenants: TenantRegistry,
    key: Option<std::sync::Arc<MasterKey>>,
    settings: LifecycleSettings,
    aggregate: AggregateSettings,
    metrics: Metrics,
    shutdown: Arc<crate::shutdown::Shutdown>,
) {
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
                Ok(l) => lifecycle = Some(l),
                Err(e) => warn!(error = %e, "retention: cannot open the audit table; retrying"),
            }
        }
        if let Some(l) = lifecycle.as_mut() {
            let outcome = l.sweep(settings.clock.now()).await;
            metrics
                .retention_sweeps
                .with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }])
                .inc();
            if let Err(e) = outcome {
                warn!(error = %e, "retention sweep failed; the next sweep repeats it");
            }
        }
        // The sweep schedule, not a synchronization.
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.requested() => {}
        }
    }
}
