//! The materializer: keeps the aggregate tables equal to a computation over
//! `readings_current`.
//!
//! A round:
//! 1. pins the latest `readings` version `v`;
//! 2. reads the progress stored in the aggregate tables (the `readings` version
//!    they reflect, a Delta `txn` action with app id [`PROGRESS_APP_ID`]);
//! 3. lists the (tenant, local date) partitions of `readings` whose data changed
//!    since then, from the Delta log (everything on the first round);
//! 4. recomputes those days' hourly and daily rows (and area cells for public
//!    tenants) from every stored version of those partitions at `v`, and the
//!    months they fall in from the daily rows, and replaces the matching partitions
//!    of the aggregate tables; the last commit of each table records `v`.
//!
//! Replacing a partition is idempotent, so a crash anywhere in a round only means
//! the next round (from the stored progress) does some of the work again. The cost
//! of a round grows with the days that changed, not with the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use arrow::array::RecordBatch;
use deltalake::datafusion::prelude::{col, lit, Expr};
use deltalake::datafusion::scalar::ScalarValue;
use meterline_operators::aggregate::{
    self, area_cells, date_of, days_in_month, days_since_epoch, hourly_daily, month_of, Disclosure,
    Grain,
};
use meterline_operators::{Deployment, TenantRegistry};
use meterline_sinks::{DerivedSpec, DerivedTable, Lake, Partition, SinkError, SourceTable};
use tracing::{debug, info, warn};

use crate::config::AggregateSettings;
use crate::metrics::Metrics;

/// The `txn` app id under which aggregate tables record the `readings` version
/// they reflect.
pub const PROGRESS_APP_ID: &str = "meterline:aggregate:readings";

/// Statistics in the Delta log only on non-identifying columns (the log outlives
/// deletes); removed files are vacuumable after a day, like `readings`.
const PER_METER_PROPERTIES: &[(&str, &str)] = &[
    (
        "delta.dataSkippingStatsColumns",
        "quantity,direction,value,intervals,expected_intervals",
    ),
    ("delta.deletedFileRetentionDuration", "interval 1 days"),
];
const MONTHLY_PROPERTIES: &[(&str, &str)] = &[
    (
        "delta.dataSkippingStatsColumns",
        "quantity,direction,value,days_complete,days_in_month",
    ),
    ("delta.deletedFileRetentionDuration", "interval 1 days"),
];
const AREA_PROPERTIES: &[(&str, &str)] = &[
    (
        "delta.dataSkippingStatsColumns",
        "area,quantity,direction,value,meters",
    ),
    ("delta.deletedFileRetentionDuration", "interval 1 days"),
];

/// The aggregate tables, in the order a round writes them.
pub fn specs() -> [DerivedSpec; 6] {
    let by_date: &'static [&'static str] = &["tenant", "local_date"];
    let by_month: &'static [&'static str] = &["tenant", "month"];
    [
        DerivedSpec {
            name: "consumption_hourly",
            schema: aggregate::HOURLY.clone(),
            partition_columns: by_date,
            properties: PER_METER_PROPERTIES,
        },
        DerivedSpec {
            name: "consumption_daily",
            schema: aggregate::DAILY.clone(),
            partition_columns: by_date,
            properties: PER_METER_PROPERTIES,
        },
        DerivedSpec {
            name: "area_consumption_hourly",
            schema: aggregate::AREA_HOURLY.clone(),
            partition_columns: by_date,
            properties: AREA_PROPERTIES,
        },
        DerivedSpec {
            name: "area_consumption_daily",
            schema: aggregate::AREA_DAILY.clone(),
            partition_columns: by_date,
            properties: AREA_PROPERTIES,
        },
        DerivedSpec {
            name: "consumption_monthly",
            schema: aggregate::MONTHLY.clone(),
            partition_columns: by_month,
            properties: MONTHLY_PROPERTIES,
        },
        DerivedSpec {
            name: "area_consumption_monthly",
            schema: aggregate::AREA_MONTHLY.clone(),
            partition_columns: by_month,
            properties: AREA_PROPERTIES,
        },
    ]
}

/// Indexes into the table array (same order as [`specs`]).
const HOURLY: usize = 0;
const DAILY: usize = 1;
const AREA_HOURLY: usize = 2;
const AREA_DAILY: usize = 3;
const MONTHLY: usize = 4;
const AREA_MONTHLY: usize = 5;

/// The columns of `readings` a recomputation reads.
const READ_COLUMNS: [&str; 11] = [
    "ingested_at",
    "meter",
    "quantity",
    "direction",
    "interval_start",
    "resolution_minutes",
    "local_date",
    "value",
    "quality",
    "version",
    "area",
];

/// What a round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// The `readings` version the aggregates reflect after the round (`None`: no
    /// `readings` table yet).
    pub folded: Option<u64>,
    /// (tenant, local date) partitions recomputed.
    pub partitions: usize,
    /// `readings` rows read.
    pub readings: usize,
    /// Area cells not written (too few meters or a dominant meter).
    pub suppressed: usize,
}

/// Test hook: after this many aggregate commits the round stalls forever (so a
/// test can SIGKILL the process at a known point in the middle of a round).
pub const FAILPOINT_ENV: &str = "METERLINE_FAILPOINT_AGGREGATE_STALL_AFTER_COMMITS";

/// Keeps the aggregate tables current.
pub struct Materializer {
    tenants: TenantRegistry,
    settings: AggregateSettings,
    readings: SourceTable,
    tables: Vec<DerivedTable>,
    metrics: Metrics,
    commits: u64,
    stall_after: Option<u64>,
}

impl std::fmt::Debug for Materializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materializer")
            .field("readings", &self.readings)
            .finish_non_exhaustive()
    }
}

/// A Date32 literal.
fn date_lit(days: i32) -> Expr {
    lit(ScalarValue::Date32(Some(days)))
}

/// Partition value of a date, as Delta writes it.
fn date_value(days: i32) -> String {
    date_of(days).format("%Y-%m-%d").to_string()
}

fn parse_date(value: &str) -> Option<i32> {
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .map(days_since_epoch)
}

/// All days of the months starting at `months`.
fn days_of_months(months: &BTreeSet<i32>) -> Vec<i32> {
    months
        .iter()
        .flat_map(|m| *m..*m + days_in_month(*m))
        .collect()
}

impl Materializer {
    /// Open (creating when needed) the aggregate tables.
    ///
    /// # Errors
    /// Storage errors (transient) and tables of another shape (internal).
    pub async fn open(
        lake: &Lake,
        tenants: TenantRegistry,
        settings: AggregateSettings,
        metrics: Metrics,
    ) -> Result<Self, AggregateError> {
        let mut tables = Vec::new();
        for spec in specs() {
            // Zeros on dashboards from the start. (Not in records_written or
            // storage_errors: those count the ingestion path, whose ledger is
            // consumed = written + dead-lettered + dropped.)
            let label = [spec.name];
            metrics.commits.with_label_values(&label);
            metrics.aggregate_rows.with_label_values(&label);
            if spec.name.starts_with("area_") {
                metrics.aggregate_suppressed.with_label_values(&label);
            }
            tables.push(DerivedTable::open_or_create(lake, spec).await?);
        }
        Ok(Self {
            tenants,
            settings,
            readings: SourceTable::new(lake, "readings", &["tenant", "local_date"]),
            tables,
            metrics,
            commits: 0,
            stall_after: std::env::var(FAILPOINT_ENV)
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    /// The `readings` version every aggregate table reflects (the lowest progress),
    /// `None` before the first complete round.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn progress(&mut self) -> Result<Option<i64>, AggregateError> {
        let mut lowest: Option<i64> = Some(i64::MAX);
        for t in &mut self.tables {
            let p = t.progress(PROGRESS_APP_ID).await?;
            lowest = match (lowest, p) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        Ok(lowest)
    }

    /// The changed `(tenant, local_date)` partitions as steps of one configured
    /// tenant, each of at most `max_days_per_step` days and
    /// `max_readings_per_step` stored readings (`rows`, per partition).
    fn steps(
        &self,
        changed: &BTreeSet<Partition>,
        rows: &BTreeMap<Partition, Option<u64>>,
    ) -> Vec<(String, Vec<i32>)> {
        let mut by_tenant: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for p in changed {
            let (Some(tenant), Some(date)) = (p.first(), p.get(1).and_then(|d| parse_date(d)))
            else {
                continue;
            };
            by_tenant.entry(tenant.clone()).or_default().insert(date);
        }
        let mut steps: Vec<(String, Vec<i32>)> = Vec::new();
        for (tenant, dates) in by_tenant {
            if self.tenants.by_id(&tenant).is_none() {
                // Without its time zone its calendar is unknown; its aggregates stay
                // as they were until it is configured again.
                warn!(
                    days = dates.len(),
                    "aggregates: readings of a tenant that is not configured; skipped"
                );
                continue;
            }
            let dates: Vec<(i32, u64)> = dates
                .into_iter()
                .map(|d| {
                    // A partition without row counts counts as a full step.
                    let n = rows
                        .get(&vec![tenant.clone(), date_value(d)])
                        .copied()
                        .unwrap_or(Some(0))
                        .unwrap_or(u64::MAX);
                    (d, n)
                })
                .collect();
            for chunk in chunk_days(
                &dates,
                self.settings.max_days_per_step,
                self.settings.max_readings_per_step as u64,
            ) {
                steps.push((tenant.clone(), chunk));
            }
        }
        steps
    }

    /// One round (see the module docs).
    ///
    /// # Errors
    /// Storage errors (transient: the next round continues from the stored
    /// progress); internal errors.
    pub async fn round(&mut self) -> Result<Round, AggregateError> {
        let Some(upto) = self.readings.refresh().await? else {
            self.metrics.aggregate_lag.set(0.0);
            return Ok(Round::default());
        };
        let from = self.progress().await?;
        // How long the oldest commit not reflected yet has waited (the freshness
        // the aggregates had when this round started).
        let lag = self.lag(from, upto).await?;
        self.metrics.aggregate_lag.set(lag);
        if from == Some(upto as i64) {
            self.metrics.aggregate_version.set(upto as i64);
            return Ok(Round {
                folded: Some(upto),
                ..Round::default()
            });
        }
        let changed = match from {
            Some(after) => self.readings.changed_partitions(after, upto).await?,
            None => None,
        };
        let changed = match changed {
            Some(c) => c,
            None => {
                // First round, or the log no longer holds the commits since the
                // stored progress: every day with data now or before.
                let mut all = self.readings.partitions().await?;
                all.extend(self.tables[HOURLY].partitions().await?);
                all.extend(self.tables[DAILY].partitions().await?);
                info!(partitions = all.len(), "aggregates: recomputing every day");
                all
            }
        };
        let rows = self.readings.partition_rows().await?;
        let steps = self.steps(&changed, &rows);
        let mut round = Round {
            folded: Some(upto),
            ..Round::default()
        };
        let count = steps.len();
        for (i, (tenant, dates)) in steps.into_iter().enumerate() {
            let progress = (i + 1 == count).then_some((PROGRESS_APP_ID, upto as i64));
            self.step(&tenant, &dates, progress, &mut round).await?;
        }
        if count == 0 {
            // Nothing to recompute (e.g. only compaction): record the progress.
            for t in &mut self.tables {
                t.replace(&[], &BTreeSet::new(), Some((PROGRESS_APP_ID, upto as i64)))
                    .await?;
            }
        }
        self.metrics.aggregate_version.set(upto as i64);
        self.metrics
            .aggregate_partitions
            .inc_by(round.partitions as u64);
        self.metrics
            .aggregate_readings
            .inc_by(round.readings as u64);
        info!(
            version = upto,
            partitions = round.partitions,
            readings = round.readings,
            "aggregates: folded readings"
        );
        Ok(round)
    }

    /// Recompute `dates` of one tenant and the months they fall in.
    async fn step(
        &mut self,
        tenant: &str,
        dates: &[i32],
        progress: Option<(&str, i64)>,
        round: &mut Round,
    ) -> Result<(), AggregateError> {
        let started = Instant::now();
        let info = self
            .tenants
            .by_id(tenant)
            .expect("steps only for configured tenants")
            .clone();
        let public = info.deployment == Deployment::Public;
        let rules = self
            .settings
            .disclosure
            .get(tenant)
            .copied()
            .unwrap_or_default();
        let filter = col("tenant")
            .eq(lit(tenant))
            .and(col("local_date").in_list(dates.iter().map(|d| date_lit(*d)).collect(), false));
        let readings = self.readings.scan(&READ_COLUMNS, filter).await?;
        round.readings += readings.iter().map(RecordBatch::num_rows).sum::<usize>();
        let computed = hourly_daily(tenant, info.timezone, &readings)?;
        let day_partitions: BTreeSet<Partition> = dates
            .iter()
            .map(|d| vec![tenant.to_owned(), date_value(*d)])
            .collect();
        let none = BTreeSet::new();
        let mut outputs: Vec<(usize, Vec<RecordBatch>, &BTreeSet<Partition>)> = vec![
            (HOURLY, vec![computed.hourly.clone()], &day_partitions),
            (DAILY, vec![computed.daily.clone()], &day_partitions),
        ];
        if public {
            let (h, hs) = area_cells(tenant, Grain::Hour, &[computed.hourly], rules)?;
            let (d, ds) = area_cells(tenant, Grain::Day, &[computed.daily], rules)?;
            round.suppressed += hs + ds;
            self.metrics
                .aggregate_suppressed
                .with_label_values(&["area_consumption_hourly"])
                .inc_by(hs as u64);
            self.metrics
                .aggregate_suppressed
                .with_label_values(&["area_consumption_daily"])
                .inc_by(ds as u64);
            outputs.push((AREA_HOURLY, vec![h], &day_partitions));
            outputs.push((AREA_DAILY, vec![d], &day_partitions));
        } else {
            // Nothing of a private tenant in the area tables; only the progress.
            outputs.push((AREA_HOURLY, vec![], &none));
            outputs.push((AREA_DAILY, vec![], &none));
        }
        for (index, batches, partitions) in outputs {
            self.write(index, &batches, partitions, progress).await?;
        }

        let months = self
            .months(tenant, public, rules, dates, progress, round)
            .await?;
        round.partitions += dates.len();
        debug!(
            days = dates.len(),
            first = %date_of(dates[0]),
            months,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "aggregates: step done"
        );
        Ok(())
    }

    /// The months of `dates`, from the daily rows just written: `consumption_monthly`
    /// and, for a public tenant, `area_consumption_monthly`. Returns how many months.
    async fn months(
        &mut self,
        tenant: &str,
        public: bool,
        rules: Disclosure,
        dates: &[i32],
        progress: Option<(&str, i64)>,
        round: &mut Round,
    ) -> Result<usize, AggregateError> {
        let months: BTreeSet<i32> = dates.iter().map(|d| month_of(*d)).collect();
        let month_days = days_of_months(&months);
        let filter = col("tenant").eq(lit(tenant)).and(
            col("local_date").in_list(month_days.iter().map(|d| date_lit(*d)).collect(), false),
        );
        let daily = self.tables[DAILY]
            .scan(
                &[
                    "meter",
                    "quantity",
                    "direction",
                    "local_date",
                    "area",
                    "value",
                    "complete",
                ],
                filter,
            )
            .await?;
        let monthly = aggregate::monthly(tenant, &daily)?;
        let month_partitions: BTreeSet<Partition> = months
            .iter()
            .map(|m| vec![tenant.to_owned(), date_value(*m)])
            .collect();
        self.write(MONTHLY, &[monthly], &month_partitions, progress)
            .await?;
        if public {
            let (cells, suppressed) = area_cells(tenant, Grain::Month, &daily, rules)?;
            round.suppressed += suppressed;
            self.metrics
                .aggregate_suppressed
                .with_label_values(&["area_consumption_monthly"])
                .inc_by(suppressed as u64);
            self.write(AREA_MONTHLY, &[cells], &month_partitions, progress)
                .await?;
        } else {
            self.write(AREA_MONTHLY, &[], &BTreeSet::new(), progress)
                .await?;
        }
        Ok(months.len())
    }

    async fn write(
        &mut self,
        index: usize,
        batches: &[RecordBatch],
        partitions: &BTreeSet<Partition>,
        progress: Option<(&str, i64)>,
    ) -> Result<(), AggregateError> {
        let table = &mut self.tables[index];
        let name = table.name();
        if partitions.is_empty() && progress.is_none() {
            return Ok(());
        }
        match table.replace(batches, partitions, progress).await {
            Ok(done) => {
                if done.version.is_some() {
                    self.metrics.commits.with_label_values(&[name]).inc();
                    self.commits += 1;
                }
                self.metrics
                    .aggregate_rows
                    .with_label_values(&[name])
                    .inc_by(done.rows as u64);
                if self.stall_after == Some(self.commits) {
                    warn!(
                        commits = self.commits,
                        "failpoint: aggregate round stalled ({FAILPOINT_ENV})"
                    );
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
            // Counted by the round (meterline_aggregate_rounds_total{outcome="error"}).
            Err(e) => Err(e.into()),
        }
    }

    /// Seconds since the oldest `readings` commit after `folded` was written (0 when
    /// `folded` is `latest`).
    async fn lag(&self, folded: Option<i64>, latest: u64) -> Result<f64, AggregateError> {
        let waiting = match folded {
            Some(v) if v >= latest as i64 => return Ok(0.0),
            Some(v) => (v + 1) as u64,
            None => 0,
        };
        Ok(match self.readings.commit_time_ms(waiting).await? {
            // Wall time on purpose: Delta commit times are wall times.
            Some(ms) => ((chrono::Utc::now().timestamp_millis() - ms).max(0) as f64) / 1000.0,
            None => 0.0,
        })
    }

    /// Update the lag gauge without folding (after a failed round).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn measure_lag(&mut self) -> Result<f64, AggregateError> {
        let Some(latest) = self.readings.refresh().await? else {
            return Ok(0.0);
        };
        let folded = self.progress().await?;
        let lag = self.lag(folded, latest).await?;
        self.metrics.aggregate_lag.set(lag);
        Ok(lag)
    }
}

/// Why a round (or opening the tables) failed.
/// Consecutive days (ascending, with their stored readings) in steps of at most
/// `max_days` days and `max_readings` readings; a day above `max_readings` is a
/// step of its own (a day is recomputed whole).
fn chunk_days(days: &[(i32, u64)], max_days: usize, max_readings: u64) -> Vec<Vec<i32>> {
    let mut steps: Vec<Vec<i32>> = Vec::new();
    let mut current: Vec<i32> = Vec::new();
    let mut readings: u64 = 0;
    for &(day, n) in days {
        if !current.is_empty()
            && (current.len() >= max_days.max(1) || readings.saturating_add(n) > max_readings)
        {
            steps.push(std::mem::take(&mut current));
            readings = 0;
        }
        current.push(day);
        readings = readings.saturating_add(n);
    }
    if !current.is_empty() {
        steps.push(current);
    }
    steps
}

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// Storage: retry (the next round continues from the stored progress).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The computation refused the data it read (a bug or a table of another shape).
    #[error("aggregate computation: {0}")]
    Operator(#[from] meterline_operators::OperatorError),
}

/// A round is followed by a wait of at least this many times its own duration, so
/// the materializer is busy at most a fifth of the time. A round costs what the
/// days it recomputes hold; while a backfill touches every day of a growing lake,
/// each round costs more, and without this its share of the CPU would grow with
/// the lake. Paced, rounds grow further apart instead (the aggregates lag behind
/// a backfill by a few round durations) and their cost per reading stays flat;
/// in steady operation rounds are short and `interval` decides.
const PACE: u32 = 4;

/// Open the aggregate tables and run rounds every `settings.interval` (or
/// [`PACE`] times the last round's duration, if longer) until shutdown is
/// requested. Errors (also when opening) are logged and counted; the next round
/// continues from the stored progress.
pub async fn run_loop(
    lake: Lake,
    tenants: TenantRegistry,
    settings: AggregateSettings,
    metrics: Metrics,
    shutdown: std::sync::Arc<crate::shutdown::Shutdown>,
) {
    let interval = settings.interval;
    let mut materializer: Option<Materializer> = None;
    while !shutdown.is_requested() {
        if materializer.is_none() {
            match Materializer::open(&lake, tenants.clone(), settings.clone(), metrics.clone())
                .await
            {
                Ok(m) => materializer = Some(m),
                Err(e) => {
                    metrics.aggregate_rounds.with_label_values(&["error"]).inc();
                    warn!(error = %e, "aggregates: cannot open the aggregate tables; retrying");
                }
            }
        }
        let started = Instant::now();
        if let Some(m) = materializer.as_mut() {
            match m.round().await {
                Ok(_) => metrics.aggregate_rounds.with_label_values(&["ok"]).inc(),
                Err(e) => {
                    metrics.aggregate_rounds.with_label_values(&["error"]).inc();
                    warn!(error = %e, "aggregates: round failed; the next round continues from the stored progress");
                    let _ = m.measure_lag().await;
                }
            }
        }
        // The schedule of rounds (the freshness goal), not a synchronization.
        let wait = interval.max(started.elapsed() * PACE);
        if wait > interval {
            debug!(
                wait_ms = wait.as_millis() as u64,
                "aggregates: long round; the next waits longer"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps hold consecutive days under both limits; an oversized day stands
    /// alone; every day is in exactly one step, in order.
    #[test]
    fn steps_respect_the_day_and_reading_limits() {
        let days = [
            (1, 50),
            (2, 50),
            (3, 50),
            (4, 500),
            (5, 10),
            (6, 10),
            (7, 10),
        ];
        assert_eq!(
            chunk_days(&days, 31, 100),
            vec![vec![1, 2], vec![3], vec![4], vec![5, 6, 7]]
        );
        assert_eq!(
            chunk_days(&days, 2, 10_000),
            vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7]]
        );
        // Unknown counts (u64::MAX) make a step of their own without overflow.
        assert_eq!(
            chunk_days(&[(1, 5), (2, u64::MAX), (3, 5)], 31, 100),
            vec![vec![1], vec![2], vec![3]]
        );
        assert!(chunk_days(&[], 31, 100).is_empty());
    }
    use crate::dev::generator::{tenants, GeneratorSpec, PRIVATE_TENANT, PUBLIC_TENANT};
    use arrow::array::AsArray;
    use arrow::datatypes::{Decimal128Type, Int64Type};
    use meterline_operators::{
        Chain, DecodeConfig, MasterKey, OperatorContext, Pseudonymizer, RawRecord,
    };
    use meterline_sinks::{readings_spec, LakeConfig, OffsetTable};
    use std::collections::HashMap;

    /// Readings through the real operator chain, appended with offsets.
    async fn append(table: &mut OffsetTable, payloads: &[Vec<u8>], first_offset: i64) {
        let mut chain = Chain::new(
            DecodeConfig::default(),
            tenants(),
            Some(Pseudonymizer::new(MasterKey::from_bytes([7; 32]))),
        )
        .unwrap();
        let records: Vec<RawRecord<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| RawRecord {
                partition: 0,
                offset: first_offset + i as i64,
                payload: Some(p),
                replay_tag: None,
            })
            .collect();
        // A fixed "now" after the test data (October 2026).
        let ctx = OperatorContext {
            now_micros: chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
                .unwrap()
                .timestamp_micros(),
        };
        let out = chain.process(&records, &ctx).unwrap();
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        let last = first_offset + payloads.len() as i64 - 1;
        table
            .append(&[out.readings], &BTreeMap::from([(0, last)]))
            .await
            .unwrap();
    }

    /// (tenant, meter, direction, local date) -> (value, intervals), from SQL.
    async fn per_day(
        lake: &LakeConfig,
        sql: &str,
    ) -> BTreeMap<(String, String, String, i32), (i128, i64)> {
        let batches = crate::query::sql::query(lake, sql).await.unwrap();
        let mut out = BTreeMap::new();
        for b in &batches {
            let s = |i: usize| b.column(i).as_string::<i32>().clone();
            let (t, m, d) = (s(0), s(1), s(2));
            let date = b
                .column(3)
                .as_primitive::<arrow::datatypes::Date32Type>()
                .clone();
            let v =
                arrow::compute::cast(b.column(4), &arrow::datatypes::DataType::Decimal128(38, 3))
                    .unwrap();
            let v = v.as_primitive::<Decimal128Type>().clone();
            let n = arrow::compute::cast(b.column(5), &arrow::datatypes::DataType::Int64).unwrap();
            let n = n.as_primitive::<Int64Type>().clone();
            for i in 0..b.num_rows() {
                out.insert(
                    (
                        t.value(i).to_owned(),
                        m.value(i).to_owned(),
                        d.value(i).to_owned(),
                        date.value(i),
                    ),
                    (v.value(i), n.value(i)),
                );
            }
        }
        out
    }

    const FROM_CURRENT: &str = "SELECT tenant, meter, direction, local_date, \
        sum(CASE WHEN quality = 'withdrawn' THEN 0 ELSE value END), \
        sum(CASE WHEN quality = 'withdrawn' THEN 0 ELSE 1 END) \
        FROM readings_current GROUP BY tenant, meter, direction, local_date";
    const FROM_DAILY: &str = "SELECT tenant, meter, direction, local_date, value, intervals \
        FROM consumption_daily";

    #[tokio::test]
    async fn rounds_follow_readings_and_recompute_only_changed_days() {
        let dir = tempfile::tempdir().unwrap();
        let config = LakeConfig {
            uri: dir.path().to_string_lossy().into_owned(),
            storage_options: Default::default(),
        };
        let lake = Lake::new(&config).unwrap();
        let mut readings = OffsetTable::open_or_create(&lake, readings_spec(), "t")
            .await
            .unwrap();
        readings.load_offsets(&[0]).await.unwrap();
        let spec = GeneratorSpec {
            meters: 24,
            first_day: chrono::NaiveDate::from_ymd_opt(2026, 10, 24).unwrap(),
            days: 3,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: 5,
        };
        let messages = spec.generate();
        let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.payload.clone()).collect();
        append(&mut readings, &payloads, 0).await;

        let metrics = Metrics::new();
        let settings = AggregateSettings {
            disclosure: HashMap::from([(
                PUBLIC_TENANT.to_owned(),
                Disclosure {
                    min_meters: 10,
                    max_meter_share: 0.5,
                },
            )]),
            ..AggregateSettings::default()
        };
        let mut m = Materializer::open(&lake, tenants(), settings, metrics.clone())
            .await
            .unwrap();
        assert_eq!(m.progress().await.unwrap(), None);
        let first = m.round().await.unwrap();
        // 2 tenants x 3 local days.
        assert_eq!(first.partitions, 6);
        assert_eq!(first.readings, payloads.len());
        assert_eq!(
            per_day(&config, FROM_DAILY).await,
            per_day(&config, FROM_CURRENT).await
        );
        let daily = per_day(&config, FROM_DAILY).await;
        let dst =
            aggregate::days_since_epoch(chrono::NaiveDate::from_ymd_opt(2026, 10, 25).unwrap());
        assert!(daily
            .iter()
            .filter(|(k, _)| k.3 == dst)
            .all(|(_, (_, n))| *n == 25 || *n == 100));

        // Nothing new: nothing recomputed.
        let idle = m.round().await.unwrap();
        assert_eq!(idle.partitions, 0);
        assert_eq!(m.progress().await.unwrap(), idle.folded.map(|v| v as i64));

        // A late correction of one private reading on one day: only that day.
        let private = messages
            .iter()
            .find(|m| String::from_utf8_lossy(&m.payload).contains(PRIVATE_TENANT))
            .unwrap();
        let mut corrected: serde_json::Value = serde_json::from_slice(&private.payload).unwrap();
        corrected["version"] = serde_json::json!("2026-11-01T00:00:00Z");
        corrected["value"] = serde_json::json!(19.5);
        append(
            &mut readings,
            &[corrected.to_string().into_bytes()],
            payloads.len() as i64,
        )
        .await;
        let late = m.round().await.unwrap();
        assert_eq!(late.partitions, 1);
        assert_eq!(
            per_day(&config, FROM_DAILY).await,
            per_day(&config, FROM_CURRENT).await
        );
        assert_ne!(per_day(&config, FROM_DAILY).await, daily);

        // Months equal the days; every area cell has at least k meters.
        let months = crate::query::sql::query(
            &config,
            "SELECT (SELECT sum(value) FROM consumption_monthly) = (SELECT sum(value) FROM consumption_daily) AS same, \
             (SELECT count(*) FROM area_consumption_daily WHERE meters < 10) AS small, \
             (SELECT count(*) FROM area_consumption_daily) AS cells",
        )
        .await
        .unwrap();
        let b = &months[0];
        assert!(b.column(0).as_boolean().value(0));
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 0);
        assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), 3);
        assert!(metrics
            .render()
            .contains("meterline_aggregate_partitions_recomputed_total 7"));

        // Deletions (retention, erasure) are reflected: the first local day of
        // readings is deleted; its aggregate rows go, and its month is recomputed.
        let cutoff = chrono::DateTime::parse_from_rfc3339("2026-10-24T22:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let (deleted, _) = readings
            .delete_before("interval_start", cutoff)
            .await
            .unwrap();
        assert!(deleted > 0);
        let after_delete = m.round().await.unwrap();
        assert_eq!(
            after_delete.partitions, 2,
            "the deleted day of both tenants"
        );
        let daily = per_day(&config, FROM_DAILY).await;
        assert_eq!(daily, per_day(&config, FROM_CURRENT).await);
        let first_day =
            aggregate::days_since_epoch(chrono::NaiveDate::from_ymd_opt(2026, 10, 24).unwrap());
        assert!(daily.keys().all(|k| k.3 != first_day));
        let sums = crate::query::sql::query(
            &config,
            "SELECT (SELECT sum(value) FROM consumption_monthly) = (SELECT sum(value) FROM readings_current) AS months, \
             (SELECT count(*) FROM consumption_hourly WHERE local_date = DATE '2026-10-24') AS hours",
        )
        .await
        .unwrap();
        assert!(sums[0].column(0).as_boolean().value(0));
        assert_eq!(sums[0].column(1).as_primitive::<Int64Type>().value(0), 0);
    }
}
