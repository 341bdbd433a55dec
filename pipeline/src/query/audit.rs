//! `meterline audit`: what the lake stores per tenant and data category, under which
//! deployment type and retention, the oldest record of each, the erasures done and
//! pending; and whether any promise is broken (data older than its retention plus
//! the sweep interval, an erasure finished after its deadline, a request waiting
//! past its deadline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate, Utc};
use meterline_operators::aggregate::date_of;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Settings;
use crate::metrics::audit_check;
use crate::privacy::keys::KeyStore;
use crate::privacy::lifecycle::{revocation_request_id, REVOCATION_CATEGORY};
use crate::privacy::subjects::{ledger_entries, verify_chain, LedgerEntry};
use crate::privacy::tables::ChainKey;
use crate::privacy::tables::{kind, ACCESS_LOG_TABLE, AUDIT_TABLE, LEDGER_TABLE, SUBJECTS_TABLE};

/// Exit code of `meterline audit` when a promise is broken.
pub const VIOLATION_EXIT: u8 = 3;

/// One line of the report: a table's rows of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub tenant: String,
    pub deployment: String,
    pub category: &'static str,
    pub table: &'static str,
    pub rows: i64,
    /// The oldest record's date or time, as text.
    pub oldest: Option<String>,
    pub retention: String,
}

/// Erasure requests read from the topic but not answered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub requests: i64,
    pub oldest_requested_at: Option<DateTime<Utc>>,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub holdings: Vec<Holding>,
    pub erasures_completed: i64,
    pub erasures_late: i64,
    pub retention_deletions: i64,
    pub keys_destroyed: i64,
    /// `None`: no erasure topic configured, or Kafka not reachable (see `notes`).
    pub pending: Option<Pending>,
    pub violations: Vec<String>,
    /// Findings per check (`crate::metrics::audit_check`), every check present.
    pub findings: BTreeMap<&'static str, i64>,
    pub notes: Vec<String>,
    /// Settings that weaken a promise on purpose (an override the operator
    /// chose), listed on every report until they are removed.
    pub exceptions: Vec<String>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// A broken promise of `check`.
    fn violate(&mut self, check: &'static str, message: String) {
        self.violations.push(message);
        *self.findings.entry(check).or_default() += 1;
    }

    /// The report as the gauges `meterline_audit_violations{check}` (late erasures
    /// counted each, not once) and `meterline_erasures_pending`.
    pub fn set_gauges(&self, metrics: &crate::metrics::Metrics) {
        for check in audit_check::ALL {
            let n = match check {
                audit_check::ERASURE_LATE => self.erasures_late,
                _ => self.findings.get(check).copied().unwrap_or(0),
            };
            metrics.audit_violations.with_label_values(&[check]).set(n);
        }
        if let Some(p) = &self.pending {
            metrics.erasures_pending.set(p.requests);
        }
    }
}

/// Tables whose rows have a local date, and the category they are reported in.
const DATED: [(&str, &str); 8] = [
    ("readings", "telemetry"),
    ("consumption_hourly", "aggregates"),
    ("consumption_daily", "aggregates"),
    ("area_consumption_hourly", "aggregates"),
    ("area_consumption_daily", "aggregates"),
    ("cost_hourly", "costs"),
    ("cost_daily", "costs"),
    ("temperature_daily", "costs"),
];

async fn query(settings: &Settings, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    crate::query::sql::query(&settings.lake, sql).await
}

async fn exists(settings: &Settings, table: &'static str) -> anyhow::Result<bool> {
    let lake = meterline_sinks::Lake::existing(&settings.lake)?;
    Ok(meterline_sinks::open_existing(&lake, table)
        .await?
        .is_some())
}

/// Rows (tenant, count, oldest date) of a table with `local_date`.
async fn dated(
    settings: &Settings,
    table: &str,
) -> anyhow::Result<Vec<(String, i64, Option<NaiveDate>)>> {
    let batches = query(
        settings,
        &format!(
            "SELECT tenant, count(*) AS n, min(local_date) AS oldest FROM {table} GROUP BY tenant"
        ),
    )
    .await?;
    let mut out = Vec::new();
    for b in &batches {
        let tenants = b.column(0).as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        let oldest = b.column(2).as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            out.push((
                tenants.value(i).to_owned(),
                counts.value(i),
                oldest.is_valid(i).then(|| date_of(oldest.value(i))),
            ));
        }
    }
    Ok(out)
}

fn deployment_of(settings: &Settings, tenant: &str) -> String {
    settings
        .tenants
        .by_id(tenant)
        .map_or("unconfigured", |c| c.deployment.as_str())
        .to_owned()
}

/// The holdings as an aligned text table with a header line.
fn holdings_table(holdings: &[Holding]) -> String {
    let mut out = String::new();
    let headers = [
        "tenant",
        "deployment",
        "category",
        "table",
        "rows",
        "oldest",
        "retention",
    ];
    let rows: Vec<[String; 7]> = holdings
        .iter()
        .map(|h| {
            [
                h.tenant.clone(),
                h.deployment.clone(),
                h.category.to_owned(),
                h.table.to_owned(),
                h.rows.to_string(),
                h.oldest.clone().unwrap_or_else(|| "-".to_owned()),
                h.retention.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(&headers.map(str::to_owned)));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// Build the report as of `now`.
///
/// # Errors
/// The lake cannot be read.
pub async fn report(
    settings: &Settings,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    // A sweep runs every `retention_every`; data may outlive its period by that
    // much (plus a day: retention of readings goes by whole local days).
    let grace = chrono::Duration::from_std(settings.lifecycle.retention_every)?;
    let scope = Scope {
        settings,
        tenant,
        now,
        grace,
    };
    scope.dated_holdings(&mut report).await?;
    scope.timed_holdings(&mut report).await?;
    scope.audit_counts(&mut report).await?;
    scope.pending_erasures(&mut report).await?;
    scope.live_keys(&mut report).await?;
    scope.dead_letter_keys(&mut report).await?;
    scope.ledger_chains(&mut report).await?;
    scope.revocations(&mut report).await?;
    scope.unconfigured(&mut report).await?;
    report.exceptions = standing_exceptions(settings);
    Ok(report)
}

/// The overrides in effect that weaken what the lake promises.
fn standing_exceptions(settings: &Settings) -> Vec<String> {
    let mut exceptions = Vec::new();
    for t in settings.tenants.iter() {
        if t.deployment == meterline_operators::Deployment::Public
            && t.rules.key_rotation == meterline_operators::epoch::Rotation::Never
        {
            exceptions.push(format!(
                "tenants.{}: key_rotation = never (allow_static_pseudonyms): one pseudonym per \
                 meter for good, linkable across all time and never destroyed",
                t.id
            ));
        }
    }
    if settings.allow_versioned_bucket {
        exceptions.push(
            "privacy.allow_versioned_bucket = true: the lake's bucket may keep old versions of \
             erased data and destroyed key epochs; its lifecycle rules must expire noncurrent \
             versions"
                .to_owned(),
        );
    }
    if settings.kafka.allow_plaintext {
        exceptions.push(
            "kafka.allow_plaintext = true: Kafka traffic to brokers off loopback may be \
             unencrypted"
                .to_owned(),
        );
    }
    if meterline_sinks::lake::allows_http(&settings.lake.storage_options) {
        exceptions.push(
            "lake.storage_options.allow_http = true: S3 requests may be unencrypted".to_owned(),
        );
    }
    exceptions
}

/// What one report looks at: the settings, the tenant asked about (all when
/// `None`), "now", and the slack a sweep's schedule gives.
struct Scope<'a> {
    settings: &'a Settings,
    tenant: Option<&'a str>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
}

impl Scope<'_> {
    fn wanted(&self, t: &str) -> bool {
        self.tenant.is_none_or(|w| w == t)
    }

    /// Tables with a local date: rows and oldest date per tenant, against the
    /// tenant's telemetry retention.
    async fn dated_holdings(&self, report: &mut Report) -> anyhow::Result<()> {
        let settings = self.settings;
        for (table, category) in DATED {
            if !exists(settings, table).await? {
                continue;
            }
            for (t, rows, oldest) in dated(settings, table).await? {
                if !self.wanted(&t) {
                    continue;
                }
                let configured = settings.tenants.by_id(&t);
                let days = settings.lifecycle.telemetry_days.get(&t).copied();
                if let (Some(cfg), Some(days), Some(oldest)) = (configured, days, oldest) {
                    let today = (self.now - self.grace)
                        .with_timezone(&cfg.timezone)
                        .date_naive();
                    let limit = today - chrono::Days::new(u64::from(days) + 1);
                    if oldest < limit {
                        report.violate(audit_check::RETENTION_OVERDUE, format!(
                            "tenant {t}: {table} holds local date {oldest}, older than its retention of {days} days"
                        ));
                    }
                }
                report.holdings.push(Holding {
                    deployment: deployment_of(settings, &t),
                    tenant: t,
                    category,
                    table,
                    rows,
                    oldest: oldest.map(|d| d.to_string()),
                    retention: days.map_or("none".to_owned(), |d| format!("{d} days")),
                });
            }
        }
        Ok(())
    }

    /// Tables whose records carry a time: (table, category, time column, days kept
    /// or `None` for kept for good, the rule as reported).
    fn timed_tables(
        &self,
    ) -> [(
        &'static str,
        &'static str,
        &'static str,
        Option<u32>,
        String,
    ); 5] {
        let lifecycle = &self.settings.lifecycle;
        let account_days = lifecycle.account_days;
        let access_days = lifecycle.access_log_days;
        let dead_days = lifecycle.dead_letter_days;
        [
            (
                "dead_letters",
                "dead_letters",
                "dead_lettered_at",
                Some(dead_days),
                format!("{dead_days} days"),
            ),
            (
                ACCESS_LOG_TABLE,
                "access_log",
                "seen_at",
                Some(access_days),
                format!("{access_days} days"),
            ),
            (
                SUBJECTS_TABLE,
                "account",
                "terminated_at",
                Some(account_days),
                format!("account life + {account_days} days"),
            ),
            (
                LEDGER_TABLE,
                "consent",
                "recorded_at",
                None,
                "kept (keyed hashes only)".to_owned(),
            ),
            (
                "meter_profiles",
                "meter_profiles",
                "ingested_at",
                None,
                "until the meter's subjects are erased".to_owned(),
            ),
        ]
    }

    /// Tables whose records carry a time: rows and oldest time per tenant, against
    /// the table's retention.
    async fn timed_holdings(&self, report: &mut Report) -> anyhow::Result<()> {
        let timed = self.timed_tables();
        for (table, category, column, days, rule) in timed {
            if !exists(self.settings, table).await? {
                continue;
            }
            let batches = query(
                self.settings,
                &format!(
                    "SELECT coalesce(tenant, '(unknown)') AS tenant, count(*) AS n, \
                     min({column}) AS oldest FROM {table} GROUP BY 1"
                ),
            )
            .await?;
            let limit = days.map(|d| self.now - self.grace - chrono::Duration::days(d.into()));
            for b in &batches {
                let tenants = b.column(0).as_string::<i32>();
                let counts = b.column(1).as_primitive::<Int64Type>();
                let oldest = b.column(2).as_primitive::<TimestampMicrosecondType>();
                for i in 0..b.num_rows() {
                    let t = tenants.value(i);
                    if !self.wanted(t) {
                        continue;
                    }
                    let oldest = oldest
                        .is_valid(i)
                        .then(|| DateTime::from_timestamp_micros(oldest.value(i)))
                        .flatten()
                        .map(|o| o.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    let past = oldest
                        .as_ref()
                        .zip(limit)
                        .is_some_and(|(o, l)| DateTime::parse_from_rfc3339(o).is_ok_and(|o| o < l));
                    if past {
                        report.violate(audit_check::RETENTION_OVERDUE, format!(
                            "tenant {t}: {table} holds data past its retention ({rule}; {column} {})",
                            oldest.as_deref().unwrap_or_default()
                        ));
                    }
                    report.holdings.push(Holding {
                        tenant: t.to_owned(),
                        deployment: deployment_of(self.settings, t),
                        category,
                        table,
                        rows: counts.value(i),
                        oldest,
                        retention: rule.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// What `erasure_audit` says was done, and erasures completed late.
    async fn audit_counts(&self, report: &mut Report) -> anyhow::Result<()> {
        if !exists(self.settings, AUDIT_TABLE).await? {
            return Ok(());
        }
        let batches = query(
            self.settings,
            &format!(
                "SELECT kind, count(*) AS n, \
                 sum(CASE WHEN completed_at > deadline_at THEN 1 ELSE 0 END) AS late \
                 FROM {AUDIT_TABLE} GROUP BY kind"
            ),
        )
        .await?;
        for b in &batches {
            let kinds = b.column(0).as_string::<i32>();
            let counts = b.column(1).as_primitive::<Int64Type>();
            let late = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                match kinds.value(i) {
                    kind::ERASURE => {
                        report.erasures_completed = counts.value(i);
                        report.erasures_late = late.value(i);
                    }
                    kind::RETENTION => report.retention_deletions = counts.value(i),
                    kind::KEY_DESTROYED => report.keys_destroyed = counts.value(i),
                    _ => {}
                }
            }
        }
        if report.erasures_late > 0 {
            report.violate(audit_check::ERASURE_LATE, format!(
                "{} erasure(s) completed after their deadline (see {AUDIT_TABLE}: completed_at > deadline_at)",
                report.erasures_late
            ));
        }
        Ok(())
    }

    /// Erasure requests on the topic not answered yet, and whether the oldest is
    /// past its deadline (a note when Kafka cannot be read).
    async fn pending_erasures(&self, report: &mut Report) -> anyhow::Result<()> {
        let lifecycle = &self.settings.lifecycle;
        if lifecycle.erasure_topic.is_empty() {
            return Ok(());
        }
        match pending(self.settings).await {
            Ok(p) => {
                let deadline = chrono::Duration::from_std(lifecycle.erasure_deadline)?;
                if let Some(oldest) = p.oldest_requested_at {
                    if self.now - oldest > deadline {
                        report.violate(audit_check::ERASURE_OVERDUE, format!(
                            "an erasure requested at {} is still pending after its deadline of {} s",
                            oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            lifecycle.erasure_deadline.as_secs()
                        ));
                    }
                }
                report.pending = Some(p);
            }
            Err(e) => report.notes.push(format!(
                "pending erasures not checked: {e:#} (is Kafka reachable?)"
            )),
        }
        Ok(())
    }

    /// Tenants with data in the lake that are not configured (a violation: nothing
    /// deletes their data), and retired tenants (a note).
    async fn unconfigured(&self, report: &mut Report) -> anyhow::Result<()> {
        let settings = self.settings;
        let lake = meterline_sinks::Lake::existing(&settings.lake)?;
        let found = crate::privacy::lifecycle::lake_tenants(&lake, settings.key.as_ref()).await?;
        for (tenant, places) in found {
            if !self.wanted(&tenant) {
                continue;
            }
            match settings.tenants.index_of(&tenant) {
                None => report.violate(
                    audit_check::RETENTION_OVERDUE,
                    format!(
                        "tenant {tenant} has data in the lake ({}) but is not configured: nothing \
                     deletes it; list it under [[tenants]] with retired = true and its \
                     retention, or erase it",
                        places.join(", ")
                    ),
                ),
                Some(i) if settings.tenants.is_retired(i) => report.notes.push(format!(
                    "tenant {tenant} is retired: its data ({}) is kept until its retention ends",
                    places.join(", ")
                )),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Every subject's consent ledger chain, verified with the chain key: each
    /// broken one is a violation (tenant, subject hash, first bad seq).
    async fn ledger_chains(&self, report: &mut Report) -> anyhow::Result<()> {
        let settings = self.settings;
        if !exists(settings, LEDGER_TABLE).await? {
            return Ok(());
        }
        let Some(master) = &settings.key else {
            report
                .notes
                .push("consent ledger chains not verified: no pseudonym key configured".to_owned());
            return Ok(());
        };
        let batches = query(settings, &format!("SELECT * FROM {LEDGER_TABLE}")).await?;
        let mut chains: BTreeMap<(String, String), Vec<LedgerEntry>> = BTreeMap::new();
        // Every row's (tenant, subject hash, seq): a row whose kind is not one
        // meterline writes is not an entry, and breaks the chain where it stands.
        let mut rows: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        for b in &batches {
            let (t, h) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
            );
            let seq = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                rows.entry((t.value(i).to_owned(), h.value(i).to_owned()))
                    .or_default()
                    .push(seq.value(i));
            }
        }
        for e in ledger_entries(&batches) {
            chains
                .entry((e.tenant.clone(), e.subject_hash.clone()))
                .or_default()
                .push(e);
        }
        let key = ChainKey::new(master);
        let mut broken = 0;
        for k in rows.keys() {
            chains.entry(k.clone()).or_default();
        }
        for ((tenant, hash), mut entries) in chains {
            if !self.wanted(&tenant) {
                continue;
            }
            entries.sort_by_key(|e| e.seq);
            let mut seqs = rows
                .remove(&(tenant.clone(), hash.clone()))
                .unwrap_or_default();
            seqs.sort_unstable();
            let unreadable = seqs
                .iter()
                .find(|s| !entries.iter().any(|e| e.seq == **s))
                .copied();
            if let Err(seq) = unreadable.map_or_else(|| verify_chain(&key, &entries), Err) {
                broken += 1;
                report.violate(audit_check::LEDGER_CHAIN, format!(
                    "tenant {tenant}: the consent ledger chain of subject hash {hash} is broken at seq {seq} (an entry was edited, removed or reordered)"
                ));
            }
        }
        if broken == 0 {
            report
                .notes
                .push("consent ledger: every chain verified".to_owned());
        }
        Ok(())
    }

    /// Elhub consent revocations whose readings should have been deleted (the
    /// retention after the revocation plus the sweep interval) but whose deletion
    /// is not in `erasure_audit`.
    async fn revocations(&self, report: &mut Report) -> anyhow::Result<()> {
        let settings = self.settings;
        let lake = meterline_sinks::Lake::existing(&settings.lake)?;
        let all = crate::privacy::consent::revocations(&lake).await?;
        if all.is_empty() {
            return Ok(());
        }
        let mut done = std::collections::HashSet::new();
        if exists(settings, AUDIT_TABLE).await? {
            let batches = query(
                settings,
                &format!(
                    "SELECT request_id FROM {AUDIT_TABLE} WHERE category = '{REVOCATION_CATEGORY}'"
                ),
            )
            .await?;
            for b in &batches {
                let c = b.column(0).as_string::<i32>();
                done.extend((0..b.num_rows()).map(|i| c.value(i).to_owned()));
            }
        }
        let days = chrono::Duration::days(settings.lifecycle.revocation_days.into());
        for r in all {
            if !self.wanted(&r.tenant) {
                continue;
            }
            let recorded = DateTime::from_timestamp_micros(r.recorded).unwrap_or(self.now);
            let id = revocation_request_id(&r.tenant, &r.subject_hash, r.seq);
            if recorded + days + self.grace < self.now && !done.contains(&id) {
                report.violate(audit_check::RETENTION_OVERDUE, format!(
                    "tenant {}: readings of meters whose Elhub consent was revoked at {} (subject hash {}) are past their retention of {} day(s) and not deleted",
                    r.tenant,
                    recorded.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.subject_hash,
                    settings.lifecycle.revocation_days
                ));
            }
        }
        Ok(())
    }

    /// Pseudonym epoch keys that should have been destroyed (a day of slack for
    /// the sweep schedule), and a note of each rotating tenant's live epochs.
    async fn live_keys(&self, report: &mut Report) -> anyhow::Result<()> {
        let settings = self.settings;
        let Some(master) = &settings.key else {
            return Ok(());
        };
        let rotating: Vec<_> = settings
            .tenants
            .iter()
            .filter(|t| {
                t.deployment == meterline_operators::Deployment::Public
                    && t.rules.key_rotation != meterline_operators::epoch::Rotation::Never
                    && self.wanted(&t.id)
            })
            .collect();
        if rotating.is_empty() {
            return Ok(());
        }
        let lake = meterline_sinks::Lake::existing(&settings.lake)?;
        let store = KeyStore::open(&lake, master.clone()).await?;
        let stored = store.list().await?;
        for t in rotating {
            let today = (self.now - chrono::Duration::days(1))
                .with_timezone(&t.timezone)
                .date_naive();
            let epochs = stored.get(&t.id).cloned().unwrap_or_default();
            report.notes.push(format!(
                "tenant {}: pseudonym keys rotate {} (grace {} days); live epochs: {}",
                t.id,
                t.rules.key_rotation.as_str(),
                t.rules.key_grace_days,
                epochs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for e in epochs
                .iter()
                .filter(|e| e.closed(today, t.rules.key_grace_days))
            {
                report.violate(
                    audit_check::KEY_PAST_GRACE,
                    format!(
                    "tenant {}: the pseudonym key of epoch {e} still exists after its grace period",
                    t.id
                ),
                );
            }
        }
        Ok(())
    }
}

impl Scope<'_> {
    /// Dead-letter keys that should have been destroyed: a day whose dead letters
    /// were all past retention before the sweep's slack.
    async fn dead_letter_keys(&self, report: &mut Report) -> anyhow::Result<()> {
        let settings = self.settings;
        let (Some(master), None) = (&settings.key, self.tenant) else {
            return Ok(());
        };
        let lake = meterline_sinks::Lake::existing(&settings.lake)?;
        let store = KeyStore::open(&lake, master.clone()).await?;
        let days = settings.lifecycle.dead_letter_days;
        for day in store.dead_letter_key_days().await? {
            if crate::privacy::keys::dead_letter_key_expired(day, days, self.now - self.grace) {
                report.violate(audit_check::KEY_PAST_GRACE, format!(
                    "the dead-letter key of {day} still exists after the dead-letter retention ({days} days)"
                ));
            }
        }
        Ok(())
    }
}

/// The erasure requests on the topic after the position the audit table answers.
async fn pending(settings: &Settings) -> anyhow::Result<Pending> {
    let clock = settings.clock;
    let topic = settings.lifecycle.erasure_topic.clone();
    let consumer: BaseConsumer = crate::kafka::client::consumer(
        &settings.kafka,
        &format!("{}.audit", settings.kafka.group_id),
    )
    .set("log_level", "3")
    .create()?;
    let consumer = std::sync::Arc::new(consumer);
    let timeout = Duration::from_secs(10);
    let partitions = {
        let (consumer, topic) = (consumer.clone(), topic.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i32>> {
            let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
            Ok(metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect())
        })
        .await??
    };
    let lake = meterline_sinks::Lake::existing(&settings.lake)?;
    let mut answered = BTreeMap::new();
    if let Some(table) = meterline_sinks::open_existing(&lake, AUDIT_TABLE).await? {
        let log_store = table.log_store();
        let snapshot = table.snapshot()?;
        for p in &partitions {
            let app_id = format!("meterline:{topic}:{p}");
            if let Some(v) = snapshot
                .transaction_version(log_store.as_ref(), &app_id)
                .await?
            {
                answered.insert(*p, v);
            }
        }
    }
    tokio::task::spawn_blocking(move || -> anyhow::Result<Pending> {
        let mut pending = Pending {
            requests: 0,
            oldest_requested_at: None,
        };
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
            let next = answered.get(&p).map_or(low, |a| (*a + 1).max(low));
            if next >= high {
                continue;
            }
            pending.requests += high - next;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(next))?;
            consumer.assign(&tpl)?;
            if let Some(Ok(m)) = consumer.poll(timeout) {
                // The record's create time (wall time) on the settings' clock,
                // as the erasure consumer reads it.
                let at = m
                    .timestamp()
                    .to_millis()
                    .and_then(DateTime::from_timestamp_millis)
                    .map(|wall| clock.from_wall(wall));
                pending.oldest_requested_at = match (pending.oldest_requested_at, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        Ok(pending)
    })
    .await?
}

/// The report as text for people.
pub fn render(report: &Report) -> String {
    let mut out = holdings_table(&report.holdings);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "erasures completed: {} ({} after their deadline); retention deletions recorded: {}; key epochs destroyed: {}",
        report.erasures_completed, report.erasures_late, report.retention_deletions, report.keys_destroyed
    );
    match &report.pending {
        Some(p) => {
            let _ = writeln!(
                out,
                "erasure requests pending: {}{}",
                p.requests,
                p.oldest_requested_at
                    .map(|t| format!(
                        " (oldest requested at {})",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "erasure requests pending: not checked");
        }
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for e in &report.exceptions {
        let _ = writeln!(out, "standing exception: {e}");
    }
    if report.violations.is_empty() {
        let _ = writeln!(out, "OK: no retention or erasure deadline is broken");
    } else {
        for v in &report.violations {
            let _ = writeln!(out, "VIOLATION: {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_say_each_checks_findings_and_forget_the_last_audits() {
        let mut r = Report::default();
        r.violate(audit_check::KEY_PAST_GRACE, "a".into());
        r.violate(audit_check::KEY_PAST_GRACE, "b".into());
        r.violate(audit_check::LEDGER_CHAIN, "c".into());
        r.erasures_late = 3;
        r.pending = Some(Pending {
            requests: 4,
            oldest_requested_at: None,
        });
        let m = crate::metrics::Metrics::new();
        // What an earlier audit found, and this one no longer does.
        m.audit_violations
            .with_label_values(&["retention_overdue"])
            .set(9);
        r.set_gauges(&m);
        let text = m.render();
        for (check, n) in [
            ("key_past_grace", 2),
            ("ledger_chain", 1),
            ("erasure_late", 3),
            ("retention_overdue", 0),
            ("erasure_overdue", 0),
        ] {
            let line = format!("meterline_audit_violations{{check=\"{check}\"}} {n}\n");
            assert!(text.contains(&line), "{line}");
        }
        assert!(text.contains("meterline_erasures_pending 4\n"));
        assert_eq!(r.violations, ["a", "b", "c"]);
    }
}
