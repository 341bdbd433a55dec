//! The materializer: keeps the aggregate tables equal to a computation over
//! `readings_current`.
//!
//! A round:
//! 1. pins the latest `readings` version `v`;
//! 2. reads the progress stored in the aggregate tables (the `readings` version
//!    they reflect, a Delta `txn` action with app id [`PROGRESS_APP_ID`]);
//! 3. lists what changed in `readings` since then, from the Delta log: per
//!    (tenant, local date) partition, the files added, or "whole" when rows were
//!    removed (everything is whole on the first round);
//! 4. recomputes, in steps (see [`super::step`]), the changed meters of those days
//!    (every meter of a whole day): their hourly and daily rows, the area cells of
//!    the days, and the months they fall in; it rewrites only the files holding
//!    those meters; the last commit of each table records `v`.
//!
//! Each rewrite is idempotent, so a crash anywhere in a round only means the next
//! round (from the stored progress) does some of the work again. The cost of a
//! round grows with the readings that changed, not with the days they fall in or
//! the tables.
//!
//! What the materializer holds between rounds (which files hold which meters, the
//! area cells) is checked against the tables' versions at the start of every
//! round and dropped when another writer changed them; a rewrite refuses to commit
//! when the table moved since ([`SinkError::Moved`](meterline_sinks::SinkError)),
//! and the round is then run again from what the tables hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use arrow::array::RecordBatch;
use deltalake::datafusion::prelude::{lit, Expr};
use deltalake::datafusion::scalar::ScalarValue;
use meterline_operators::aggregate::{self, date_of, days_since_epoch, AreaState, MeterHasher};
use meterline_operators::TenantRegistry;
use meterline_sinks::{
    Change, DataFile, DerivedSpec, DerivedTable, Lake, Partition, Replaced, SinkError, SourceTable,
};
use tracing::{debug, info, warn};

use super::index::FileIndex;

use crate::config::{AggregateSettings, AGGREGATE_INDEX_ENTRIES};
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
pub(super) const HOURLY: usize = 0;
pub(super) const DAILY: usize = 1;
pub(super) const AREA_HOURLY: usize = 2;
pub(super) const AREA_DAILY: usize = 3;
pub(super) const MONTHLY: usize = 4;
pub(super) const AREA_MONTHLY: usize = 5;

/// Times a round is run again when a table moved under it.
const MOVED_RETRIES: usize = 3;

/// The columns of `readings` a recomputation reads.
pub(super) const READ_COLUMNS: [&str; 11] = aggregate::CURRENT_COLUMNS;

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
    /// The most `readings` rows one step read (what a step holds in memory
    /// follows it; `max_readings_per_step` bounds it, see [`Share`]).
    pub largest_step: usize,
}

/// Test hook: after this many aggregate commits the round stalls forever (so a
/// test can SIGKILL the process at a known point in the middle of a round).
pub const FAILPOINT_ENV: &str = "METERLINE_FAILPOINT_AGGREGATE_STALL_AFTER_COMMITS";

/// Keeps the aggregate tables current.
pub struct Materializer {
    pub(super) tenants: TenantRegistry,
    pub(super) settings: AggregateSettings,
    pub(super) readings: SourceTable,
    pub(super) tables: Vec<DerivedTable>,
    pub(super) metrics: Metrics,
    commits: u64,
    stall_after: Option<u64>,
    pub(super) hasher: MeterHasher,
    /// Which meters each `readings` file holds (partitions met so far).
    pub(super) readings_index: FileIndex,
    /// The same for the per-meter tables (by table index; the area ones unused).
    pub(super) derived_index: Vec<FileIndex>,
    /// The files of `readings` at the pinned version, by partition (per round).
    pub(super) readings_listing: Option<BTreeMap<Partition, Vec<DataFile>>>,
    /// The files of each table, by partition (until it is next written).
    pub(super) listings: Vec<Option<BTreeMap<Partition, Vec<DataFile>>>>,
    /// Area cells per (area table, partition).
    pub(super) areas: HashMap<(usize, Partition), AreaState>,
    /// The version of each table that what is held reflects.
    pub(super) seen: Vec<Option<u64>>,
}

impl std::fmt::Debug for Materializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materializer")
            .field("readings", &self.readings)
            .finish_non_exhaustive()
    }
}

/// A Date32 literal.
pub(super) fn date_lit(days: i32) -> Expr {
    lit(ScalarValue::Date32(Some(days)))
}

/// Partition value of a date, as Delta writes it.
pub(super) fn date_value(days: i32) -> String {
    date_of(days).format("%Y-%m-%d").to_string()
}

pub(super) fn parse_date(value: &str) -> Option<i32> {
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .map(days_since_epoch)
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
        let seen = tables.iter().map(DerivedTable::version).collect();
        let count = tables.len();
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
            hasher: MeterHasher::default(),
            // One budget: half for `readings`, the rest shared by the per-meter tables.
            readings_index: FileIndex::new(AGGREGATE_INDEX_ENTRIES / 2),
            derived_index: (0..count)
                .map(|_| FileIndex::new(AGGREGATE_INDEX_ENTRIES / 6))
                .collect(),
            readings_listing: None,
            listings: vec![None; count],
            areas: HashMap::new(),
            seen,
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
    /// tenant, each of at most `max_days_per_step` days and `max_readings_per_step`
    /// readings to read (a whole day's stored readings from `rows`, per partition;
    /// the added ones otherwise). A day with more readings than that is split: a
    /// step per [`Share`] of its meters.
    fn steps(
        &self,
        changed: BTreeMap<Partition, Change>,
        rows: &BTreeMap<Partition, Option<u64>>,
    ) -> Vec<(String, Vec<StepDay>)> {
        let mut by_tenant: BTreeMap<String, BTreeMap<i32, (Change, u64)>> = BTreeMap::new();
        for (p, change) in changed {
            let (Some(tenant), Some(date)) = (p.first(), p.get(1).and_then(|d| parse_date(d)))
            else {
                continue;
            };
            // A partition without row counts counts as a full step.
            let n = match &change {
                Change::Whole => rows.get(&p).copied().unwrap_or(Some(0)),
                Change::Added(files) => files.iter().map(|f| f.rows).sum(),
            }
            .unwrap_or(u64::MAX);
            by_tenant
                .entry(tenant.clone())
                .or_default()
                .insert(date, (change, n));
        }
        let mut steps = Vec::new();
        for (tenant, mut days) in by_tenant {
            if self.tenants.by_id(&tenant).is_none() {
                // Without its time zone its calendar is unknown; its aggregates stay
                // as they were until it is configured again.
                warn!(
                    days = days.len(),
                    "aggregates: readings of a tenant that is not configured; skipped"
                );
                continue;
            }
            let sizes: Vec<(i32, u64)> = days.iter().map(|(d, (_, n))| (*d, *n)).collect();
            let max_readings = self.settings.max_readings_per_step as u64;
            for chunk in chunk_days(&sizes, self.settings.max_days_per_step, max_readings) {
                if let [day] = chunk[..] {
                    let Some((change, n)) = days.remove(&day) else {
                        continue;
                    };
                    let of = shares(n, max_readings);
                    for index in 0..of {
                        let share = Share { index, of };
                        steps.push((tenant.clone(), vec![(day, change.clone(), share)]));
                    }
                    continue;
                }
                let step = chunk
                    .into_iter()
                    .filter_map(|d| days.remove(&d).map(|(c, _)| (d, c, Share::ALL)))
                    .collect();
                steps.push((tenant.clone(), step));
            }
        }
        steps
    }

    /// Drop what is held about tables another writer changed since.
    fn check_tables(&mut self) {
        let moved = self
            .tables
            .iter()
            .zip(&self.seen)
            .any(|(t, seen)| t.version() != *seen);
        if moved {
            debug!("aggregates: tables changed by another writer; file lists dropped");
            self.forget_held();
        }
    }

    /// Forget every file list and area state (they are read again when needed).
    fn forget_held(&mut self) {
        self.readings_index.clear();
        for index in &mut self.derived_index {
            index.clear();
        }
        for listing in &mut self.listings {
            *listing = None;
        }
        self.areas.clear();
        self.seen = self.tables.iter().map(DerivedTable::version).collect();
    }

    /// One round (see the module docs), run again (up to [`MOVED_RETRIES`] times)
    /// when another writer changed a table under it.
    ///
    /// # Errors
    /// Storage errors (transient: the next round continues from the stored
    /// progress); internal errors.
    pub async fn round(&mut self) -> Result<Round, AggregateError> {
        let mut attempt = 0;
        loop {
            match self.round_once().await {
                Err(AggregateError::Sink(SinkError::Moved { table, .. }))
                    if attempt < MOVED_RETRIES =>
                {
                    attempt += 1;
                    debug!(
                        table,
                        attempt, "aggregates: a table moved during the round; again"
                    );
                    self.forget_held();
                }
                Err(e) => {
                    // What is held may not match what was written.
                    self.forget_held();
                    return Err(e);
                }
                Ok(round) => return Ok(round),
            }
        }
    }

    async fn round_once(&mut self) -> Result<Round, AggregateError> {
        let Some(upto) = self.readings.refresh().await? else {
            self.metrics.aggregate_lag.set(0.0);
            return Ok(Round::default());
        };
        self.readings_listing = None;
        let from = self.progress().await?;
        self.check_tables();
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
        let changes = match from {
            Some(after) => self.readings.changes(after, upto).await?,
            None => None,
        };
        let changed = match changes {
            Some(c) => {
                for p in &c.reorganized {
                    self.readings_index.forget(p);
                }
                c.data
            }
            None => {
                // First round, or the log no longer holds the commits since the
                // stored progress: every day with data now or before, whole.
                let mut all = self.readings.partitions().await?;
                all.extend(self.tables[HOURLY].partitions().await?);
                all.extend(self.tables[DAILY].partitions().await?);
                info!(partitions = all.len(), "aggregates: recomputing every day");
                all.into_iter().map(|p| (p, Change::Whole)).collect()
            }
        };
        let rows = self.readings.partition_rows().await?;
        let steps = self.steps(changed, &rows);
        let mut round = Round {
            folded: Some(upto),
            ..Round::default()
        };
        let count = steps.len();
        for (i, (tenant, days)) in steps.into_iter().enumerate() {
            let progress = (i + 1 == count).then_some((PROGRESS_APP_ID, upto as i64));
            self.step(&tenant, &days, progress, &mut round).await?;
        }
        if count == 0 {
            // Nothing to recompute (e.g. only compaction): record the progress.
            for index in 0..self.tables.len() {
                self.write(
                    index,
                    &[],
                    &BTreeSet::new(),
                    Some((PROGRESS_APP_ID, upto as i64)),
                )
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

    /// Replace whole `partitions` of table `index` with `batches`.
    pub(super) async fn write(
        &mut self,
        index: usize,
        batches: &[RecordBatch],
        partitions: &BTreeSet<Partition>,
        progress: Option<(&str, i64)>,
    ) -> Result<(), AggregateError> {
        if partitions.is_empty() && progress.is_none() {
            return Ok(());
        }
        let done = self.tables[index]
            .replace(batches, partitions, progress)
            .await?;
        self.listings[index] = None;
        for p in partitions {
            self.derived_index[index].forget(p);
        }
        self.written(index, &done).await
    }

    /// Count a commit (and stall at the failpoint).
    pub(super) async fn record(&mut self, index: usize, done: &Replaced) {
        let name = self.tables[index].name();
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

/// A day of a step: its date, how it changed, and the share of its meters.
pub(super) type StepDay = (i32, Change, Share);

/// Files by partition.
pub(super) fn group(files: Vec<DataFile>) -> BTreeMap<Partition, Vec<DataFile>> {
    let mut out: BTreeMap<Partition, Vec<DataFile>> = BTreeMap::new();
    for f in files {
        out.entry(f.partition.clone()).or_default().push(f);
    }
    out
}

/// A share of a day's meters: those whose hash ([`MeterHasher`]) is `index`
/// modulo `of`. A day with more readings than `max_readings_per_step` is
/// recomputed in `of` steps, one share each, so that a step holds about that many
/// readings however many the day has (hashes spread meters evenly; a meter is
/// never split, and a meter-day holds at most 100 readings per version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Share {
    pub index: u64,
    pub of: u64,
}

impl Share {
    /// Every meter.
    pub const ALL: Share = Share { index: 0, of: 1 };

    pub fn holds(self, meter: u64) -> bool {
        meter % self.of == self.index
    }

    pub fn is_all(self) -> bool {
        self.of == 1
    }
}

/// How many shares a day of `n` readings is recomputed in (one when the count is
/// unknown: `u64::MAX`).
fn shares(n: u64, max_readings: u64) -> u64 {
    if n == u64::MAX {
        1
    } else {
        n.div_ceil(max_readings.max(1)).max(1)
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
    use crate::dev::generator::{tenants, GeneratorSpec, Message, PRIVATE_TENANT, PUBLIC_TENANT};
    use arrow::array::AsArray;
    use arrow::datatypes::{Decimal128Type, Int64Type};
    use meterline_operators::aggregate::Disclosure;
    use meterline_operators::{
        Chain, DecodeConfig, MasterKey, OperatorContext, Pseudonymizer, RawRecord,
    };
    use meterline_sinks::{readings_spec, LakeConfig, OffsetTable};
    use std::collections::HashMap;

    /// A lake in a temporary directory (kept while the guard lives) with an empty
    /// `readings` table.
    async fn lake_with_readings() -> (tempfile::TempDir, LakeConfig, Lake, OffsetTable) {
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
        (dir, config, lake, readings)
    }

    /// Generated readings of Oslo meters (no bad records).
    fn generate(meters: usize, first_day: (i32, u32, u32), days: u32, seed: u64) -> Vec<Message> {
        GeneratorSpec {
            meters,
            first_day: chrono::NaiveDate::from_ymd_opt(first_day.0, first_day.1, first_day.2)
                .unwrap(),
            days,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed,
        }
        .generate()
    }

    /// Settings: area cells of the public tenant need `min_meters` meters and no
    /// meter above half; steps of at most `max_readings` readings.
    fn settings(min_meters: usize, max_readings: usize) -> AggregateSettings {
        AggregateSettings {
            disclosure: HashMap::from([(
                PUBLIC_TENANT.to_owned(),
                Disclosure {
                    min_meters,
                    max_meter_share: 0.5,
                },
            )]),
            max_readings_per_step: max_readings,
            ..AggregateSettings::default()
        }
    }

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
        let (_dir, config, lake, mut readings) = lake_with_readings().await;
        let messages = generate(24, (2026, 10, 24), 3, 5);
        let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.payload.clone()).collect();
        append(&mut readings, &payloads, 0).await;

        let metrics = Metrics::new();
        let settings = settings(10, AggregateSettings::default().max_readings_per_step);
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

    /// Rows of `a` not in `b` plus rows of `b` not in `a` (two SQL queries of the
    /// same columns).
    async fn difference(lake: &LakeConfig, a: &str, b: &str) -> i64 {
        let sql = format!(
            "SELECT (SELECT count(*) FROM (({a}) EXCEPT ({b}))) + (SELECT count(*) FROM (({b}) EXCEPT ({a}))) AS n"
        );
        let out = crate::query::sql::query(lake, &sql).await.unwrap();
        out[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    async fn count(lake: &LakeConfig, table: &str) -> i64 {
        let out = crate::query::sql::query(lake, &format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        out[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    /// Every aggregate table equals SQL over what it is made of: daily rows over
    /// `readings_current`, months over days, area cells (k = 3, no meter above half)
    /// over the per-meter rows.
    async fn assert_exact(lake: &LakeConfig) {
        assert_eq!(
            per_day(lake, FROM_DAILY).await,
            per_day(lake, FROM_CURRENT).await
        );
        let months = difference(
            lake,
            "SELECT tenant, meter, direction, month, value FROM consumption_monthly",
            "SELECT tenant, meter, direction, CAST(date_trunc('month', local_date) AS DATE), \
             sum(value) FROM consumption_daily GROUP BY 1, 2, 3, 4",
        )
        .await;
        assert_eq!(
            months, 0,
            "monthly rows differ from the sums of the daily rows"
        );
        let cells = |table: &str, time: &str| {
            format!(
                "SELECT tenant, area, quantity, direction, {time}, sum(value), CAST(count(*) AS INT) \
                 FROM {table} WHERE area IS NOT NULL AND tenant = '{PUBLIC_TENANT}' \
                 GROUP BY 1, 2, 3, 4, 5 HAVING count(*) >= 3 AND 2 * max(value) <= sum(value)"
            )
        };
        for (area, per_meter, time) in [
            ("area_consumption_daily", "consumption_daily", "local_date"),
            (
                "area_consumption_hourly",
                "consumption_hourly",
                "hour_start",
            ),
        ] {
            let stored = format!(
                "SELECT tenant, area, quantity, direction, {time}, value, meters FROM {area}"
            );
            assert_eq!(
                difference(lake, &stored, &cells(per_meter, time)).await,
                0,
                "{area} differs from its cells summed over {per_meter}"
            );
        }
    }

    /// A backfill meter by meter: after the first round, each round reads only the
    /// readings added since (none of the meters already folded, though every round
    /// touches every day), and after every round, and after a correction that
    /// lowers a meter's value, every table is exact.
    #[tokio::test]
    async fn rounds_read_only_changed_meters_and_stay_exact() {
        let (_dir, config, lake, mut readings) = lake_with_readings().await;
        let messages = generate(30, (2026, 10, 30), 4, 11);
        // Each device's history in turn.
        let mut devices: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for m in &messages {
            match devices.iter_mut().find(|(k, _)| *k == m.key) {
                Some((_, p)) => p.push(m.payload.clone()),
                None => devices.push((m.key.clone(), vec![m.payload.clone()])),
            }
        }
        let settings = settings(3, 500);
        let mut m = Materializer::open(&lake, tenants(), settings, Metrics::new())
            .await
            .unwrap();
        let mut offset = 0;
        for (i, chunk) in devices.chunks(7).enumerate() {
            let payloads: Vec<Vec<u8>> = chunk.iter().flat_map(|(_, p)| p.clone()).collect();
            append(&mut readings, &payloads, offset).await;
            offset += payloads.len() as i64;
            let round = m.round().await.unwrap();
            assert!(round.partitions >= 4, "every day is touched");
            if i > 0 {
                assert_eq!(
                    round.readings,
                    payloads.len(),
                    "round {i} read more than was added"
                );
            }
            assert_exact(&config).await;
        }
        assert!(count(&config, "area_consumption_daily").await > 0);
        assert!(count(&config, "area_consumption_hourly").await > 0);

        // A correction lowering one public reading: the meter's day is read (its
        // rows only) and the cells it was in lose what it had.
        let public = messages
            .iter()
            .rev()
            .find(|m| String::from_utf8_lossy(&m.payload).contains(PUBLIC_TENANT))
            .unwrap();
        let mut corrected: serde_json::Value = serde_json::from_slice(&public.payload).unwrap();
        corrected["version"] = serde_json::json!("2026-11-20T00:00:00Z");
        corrected["value"] = serde_json::json!(0.001);
        append(&mut readings, &[corrected.to_string().into_bytes()], offset).await;
        let round = m.round().await.unwrap();
        assert_eq!(round.partitions, 1);
        assert!(
            round.readings > 1 && round.readings < 200,
            "{}",
            round.readings
        );
        assert_exact(&config).await;
    }

    /// The hourly rows equal SQL over `readings_current` (what [`assert_exact`]
    /// checks of the days, for the hours).
    async fn assert_hours_exact(lake: &LakeConfig) {
        let hours = difference(
            lake,
            "SELECT tenant, meter, direction, to_unixtime(hour_start), CAST(value AS DOUBLE) \
             FROM consumption_hourly",
            "SELECT tenant, meter, direction, to_unixtime(date_trunc('hour', interval_start)), \
             CAST(sum(value) AS DOUBLE) FROM readings_current GROUP BY 1, 2, 3, 4",
        )
        .await;
        assert_eq!(
            hours, 0,
            "hourly rows differ from the readings' hourly sums"
        );
    }

    /// A day with more readings than `max_readings_per_step` is recomputed a share
    /// of its meters at a time: no step reads the whole day (about a step's worth
    /// each), and every table stays exact, whether the day is new (a first round),
    /// added to, or had rows removed.
    #[tokio::test]
    async fn a_day_above_the_step_limit_is_recomputed_in_shares_and_stays_exact() {
        let (_dir, config, lake, mut readings) = lake_with_readings().await;
        // 200 public meters (hourly: 4,800 readings a day) and 200 private (half
        // quarter-hourly: 12,000 a day); the second day is 25 hours long.
        let messages = generate(400, (2026, 10, 24), 2, 3);
        let second_day = chrono::DateTime::parse_from_rfc3339("2026-10-24T22:00:00Z").unwrap();
        let (first, second): (Vec<_>, Vec<_>) = messages.iter().partition(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            chrono::DateTime::parse_from_rfc3339(v["start"].as_str().unwrap()).unwrap() < second_day
        });
        let payloads =
            |m: &[&Message]| -> Vec<Vec<u8>> { m.iter().map(|m| m.payload.clone()).collect() };
        let max = 1000;
        let settings = settings(3, max);
        let mut m = Materializer::open(&lake, tenants(), settings, Metrics::new())
            .await
            .unwrap();
        // The smallest day of a tenant holds 4,800 readings; a share of it about
        // `max` (hashes spread 200 meters evenly; 2.5x leaves room for chance).
        let bounded = |round: &Round, label: &str| {
            assert!(
                round.largest_step > 0 && round.largest_step <= max * 5 / 2,
                "{label}: a step read {} readings",
                round.largest_step
            );
        };

        append(&mut readings, &payloads(&first), 0).await;
        let round = m.round().await.unwrap();
        assert_eq!(round.readings, first.len());
        assert_eq!(round.partitions, 2, "one day of two tenants");
        bounded(&round, "first round");
        assert_exact(&config).await;
        assert_hours_exact(&config).await;

        append(&mut readings, &payloads(&second), first.len() as i64).await;
        let round = m.round().await.unwrap();
        assert_eq!(round.readings, second.len());
        assert_eq!(round.partitions, 2, "the added day of two tenants");
        bounded(&round, "added day");
        assert_exact(&config).await;
        assert_hours_exact(&config).await;

        // Rows removed from the first day (its first 6 hours): it is recomputed
        // whole, a share at a time.
        let cutoff = chrono::DateTime::parse_from_rfc3339("2026-10-24T04:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let (deleted, _) = readings
            .delete_before("interval_start", cutoff)
            .await
            .unwrap();
        assert!(deleted > 0);
        let round = m.round().await.unwrap();
        assert_eq!(round.partitions, 2, "the first day of two tenants");
        bounded(&round, "day with rows removed");
        assert_exact(&config).await;
        assert_hours_exact(&config).await;
    }
}
