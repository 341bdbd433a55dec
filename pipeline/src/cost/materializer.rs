//! The cost materializer: keeps the cost and insight tables equal to a computation over
//! their inputs.
//!
//! A round:
//! 1. pins the latest version of each input table (`readings`, `spot_prices`,
//!    `meter_profiles`, `weather_observations`, `grid_tariffs`, `exchange_rates`,
//!    `weather_stations`) and names the rate table by its fingerprint;
//! 2. reads the progress stored in `cost_monthly` (one Delta `txn` per input, app ids
//!    [`PROGRESS_APP_IDS`]): the versions the tables reflect;
//! 3. finds the (tenant, local date) days of private tenants to recompute, from what
//!    changed since:
//!    - `readings`: the days whose partitions changed;
//!    - `spot_prices`, `weather_observations`: the days of every private tenant on the
//!      dates whose prices or observations changed (a day with readings only);
//!    - `meter_profiles`: a tenant's days from the earliest `valid_from` of the profiles
//!      added (every day of the tenant when profiles were removed);
//!    - `exchange_rates`: every private tenant's days from the earliest date of the rates
//!      added (a rate converts the prices of the days after it);
//!    - `grid_tariffs`, `weather_stations` or the rates: every day;
//!    - everything on the first round, or when the log no longer has a commit in between;
//! 4. recomputes those days (`cost_hourly`, `cost_daily`, `temperature_daily`, in steps
//!    of at most `max_days_per_step` days), then their months from the stored hours
//!    (`cost_monthly`, `capacity_peaks`, `duration_curve`), then their heating seasons
//!    (`temperature_sensitivity`), replacing whole partitions;
//! 5. records the input versions in `cost_monthly`, last.
//!
//! Each replacement is idempotent: a crash anywhere means the next round does some work
//! again from the stored progress, never that a row is lost or doubled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use deltalake::datafusion::prelude::{col, lit, Expr};
use deltalake::datafusion::scalar::ScalarValue;
use meterline_operators::aggregate::{days_since_epoch, CURRENT_COLUMNS};
use meterline_operators::economics::exchange::ExchangeRates;
use meterline_operators::economics::frinettleie::parse_tariff_file;
use meterline_operators::economics::insights::heating_season;
use meterline_operators::economics::rates::RateTable;
use meterline_operators::economics::tables::{
    self as cost, cost_days, cost_months, month_days, month_start, season_bounds, AreaPrices,
    Context, VersionedTariff,
};
use meterline_operators::economics::weather::Station;
use meterline_operators::{Deployment, TenantRegistry};
use meterline_sinks::{Change, DerivedSpec, DerivedTable, Lake, Partition, SinkError, SourceTable};
use tracing::{info, warn};

use crate::config::AggregateSettings;
use crate::metrics::Metrics;

/// The `txn` app ids under which `cost_monthly` records the input versions the tables
/// reflect, in the order of [`Inputs`]; the last is the rate table's fingerprint.
pub const PROGRESS_APP_IDS: [&str; INPUTS] = [
    "meterline:cost:readings",
    "meterline:cost:spot_prices",
    "meterline:cost:meter_profiles",
    "meterline:cost:weather_observations",
    "meterline:cost:grid_tariffs",
    "meterline:cost:exchange_rates",
    "meterline:cost:weather_stations",
    "meterline:cost:rates",
];

/// The inputs whose versions a round records: the tables, then the rate table.
const INPUTS: usize = 8;
const READINGS: usize = 0;
const PRICES: usize = 1;
const PROFILES: usize = 2;
const WEATHER: usize = 3;
const TARIFFS: usize = 4;
const EXCHANGE: usize = 5;
const STATIONS: usize = 6;
const RATES: usize = 7;

/// Statistics in the Delta log only on columns that identify no one (the log outlives
/// deletes); removed files are vacuumable after a day, like the aggregates.
const DAY_PROPERTIES: &[(&str, &str)] = &[
    ("delta.dataSkippingStatsColumns", "local_date,kwh,complete"),
    ("delta.deletedFileRetentionDuration", "interval 1 days"),
];
const MONTH_PROPERTIES: &[(&str, &str)] = &[
    ("delta.dataSkippingStatsColumns", "month,kwh"),
    ("delta.deletedFileRetentionDuration", "interval 1 days"),
];
const SEASON_PROPERTIES: &[(&str, &str)] = &[
    ("delta.dataSkippingStatsColumns", "season,days"),
    ("delta.deletedFileRetentionDuration", "interval 1 days"),
];

/// The cost and insight tables, in the order a round writes them.
#[must_use]
pub fn specs() -> [DerivedSpec; 7] {
    let by_date: &'static [&'static str] = &["tenant", "local_date"];
    let by_month: &'static [&'static str] = &["tenant", "month"];
    let spec =
        |name, schema: &arrow::datatypes::SchemaRef, partition_columns, properties| DerivedSpec {
            name,
            schema: schema.clone(),
            partition_columns,
            properties,
        };
    [
        spec("cost_hourly", &cost::COST_HOURLY, by_date, DAY_PROPERTIES),
        spec("cost_daily", &cost::COST_DAILY, by_date, DAY_PROPERTIES),
        spec(
            "temperature_daily",
            &cost::TEMPERATURE_DAILY,
            by_date,
            DAY_PROPERTIES,
        ),
        spec(
            "cost_monthly",
            &cost::COST_MONTHLY,
            by_month,
            MONTH_PROPERTIES,
        ),
        spec(
            "capacity_peaks",
            &cost::CAPACITY_PEAKS,
            by_month,
            MONTH_PROPERTIES,
        ),
        spec(
            "duration_curve",
            &cost::DURATION_CURVE,
            by_month,
            MONTH_PROPERTIES,
        ),
        spec(
            "temperature_sensitivity",
            &cost::TEMPERATURE_SENSITIVITY,
            &["tenant", "season"],
            SEASON_PROPERTIES,
        ),
    ]
}

const HOURLY: usize = 0;
const DAILY: usize = 1;
const TEMPERATURE: usize = 2;
const MONTHLY: usize = 3;
const PEAKS: usize = 4;
const DURATION: usize = 5;
const SENSITIVITY: usize = 6;

/// Months recomputed per step.
const MONTHS_PER_STEP: usize = 3;

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// Storage: retry (the next round continues from the stored progress).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The computation refused the data it read (a bug or a table of another shape).
    #[error("cost computation: {0}")]
    Operator(#[from] meterline_operators::OperatorError),
}

/// What a round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CostRound {
    /// The input versions the tables reflect after the round (`None`: nothing to do).
    pub progress: Option<[i64; INPUTS]>,
    /// Partitions replaced, by table.
    pub rewritten: BTreeMap<&'static str, BTreeSet<Partition>>,
    /// `cost_hourly` rows written: meter-hours priced.
    pub hours: usize,
}

impl CostRound {
    /// (tenant, local date) days recomputed.
    #[must_use]
    pub fn days(&self) -> usize {
        self.rewritten.get("cost_hourly").map_or(0, BTreeSet::len)
    }
}

/// Keeps the cost and insight tables current.
pub struct CostMaterializer {
    tenants: TenantRegistry,
    max_days_per_step: usize,
    rates: RateTable,
    rates_version: String,
    inputs: [SourceTable; INPUTS - 1],
    /// The exchange rates of the round's pinned `exchange_rates` (loaded when the
    /// round recomputes anything).
    exchange: ExchangeRates,
    /// The open stations of the round's pinned `weather_stations` (loaded likewise).
    stations: Vec<Station>,
    tables: Vec<DerivedTable>,
    /// The version of each table this round started from, moved on by the round's own
    /// commits: a replacement commits only on top of it (see [`Self::round`]).
    seen: Vec<Option<u64>>,
    metrics: Metrics,
}

/// How many times a round starts again when another writer committed to a cost table
/// during it, before the error goes to the caller (which retries on its next interval).
const MOVED_RETRIES: usize = 3;

impl std::fmt::Debug for CostMaterializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostMaterializer")
            .field("rates_version", &self.rates_version)
            .finish_non_exhaustive()
    }
}

fn date_lit(date: NaiveDate) -> Expr {
    lit(ScalarValue::Date32(Some(days_since_epoch(date))))
}

fn between(column: &str, from: NaiveDate, to: NaiveDate) -> Expr {
    col(column).between(date_lit(from), date_lit(to))
}

fn day_partition(tenant: &str, date: NaiveDate) -> Partition {
    vec![tenant.to_owned(), date.to_string()]
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// The rate table's fingerprint as a transaction version (its first 60 bits).
fn rates_key(fingerprint: &str) -> i64 {
    i64::from_str_radix(&fingerprint[..15], 16).unwrap_or(0)
}

const PRICE_COLUMNS: [&str; 8] = [
    "area",
    "interval_start",
    "resolution_minutes",
    "price",
    "currency",
    "unit",
    "exchange_rate",
    "version",
];
const PROFILE_COLUMNS: [&str; 12] = [
    "meter",
    "valid_from",
    "price_area",
    "grid_company_gln",
    "customer_group",
    "tax_zone",
    "scheme",
    "fuse_amperes",
    "latitude",
    "longitude",
    "station",
    "version",
];
const WEATHER_COLUMNS: [&str; 5] = ["station", "time", "element", "value", "resolution"];
const STATION_COLUMNS: [&str; 5] = ["station", "latitude", "longitude", "valid_to", "version"];

/// Days to recompute, by tenant.
type Dirty = BTreeMap<String, BTreeSet<NaiveDate>>;

/// `dirty`, with every day with readings when `every_day`, without empty entries.
fn merge(mut dirty: Dirty, with_readings: Dirty, every_day: bool) -> Dirty {
    if every_day {
        for (tenant, days) in with_readings {
            dirty.entry(tenant).or_default().extend(days);
        }
    }
    dirty.retain(|_, days| !days.is_empty());
    dirty
}

impl CostMaterializer {
    /// Open (creating) the tables.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn open(
        lake: &Lake,
        tenants: TenantRegistry,
        settings: &AggregateSettings,
        rates: RateTable,
        metrics: Metrics,
    ) -> Result<Self, CostError> {
        let mut tables = Vec::new();
        for spec in specs() {
            metrics.cost_rows.with_label_values(&[spec.name]);
            tables.push(DerivedTable::open_or_create(lake, spec).await?);
        }
        let inputs = [
            SourceTable::new(lake, "readings", &["tenant", "local_date"]),
            SourceTable::new(lake, "spot_prices", &["local_date"]),
            SourceTable::new(lake, "meter_profiles", &["tenant"]),
            SourceTable::new(lake, "weather_observations", &["local_date"]),
            SourceTable::new(lake, "grid_tariffs", &[]),
            SourceTable::new(lake, "exchange_rates", &[]),
            SourceTable::new(lake, "weather_stations", &[]),
        ];
        let rates_version = rates.fingerprint();
        Ok(Self {
            tenants,
            max_days_per_step: settings.max_days_per_step.max(1),
            rates,
            rates_version,
            inputs,
            exchange: ExchangeRates::default(),
            stations: Vec::new(),
            seen: vec![None; tables.len()],
            tables,
            metrics,
        })
    }

    /// The private tenants and their time zones.
    fn private(&self) -> BTreeMap<String, Tz> {
        self.tenants
            .iter()
            .filter(|t| t.deployment == Deployment::Private)
            .map(|t| (t.id.clone(), t.timezone))
            .collect()
    }

    /// One round (see the module documentation).
    ///
    /// # Errors
    /// Storage errors (transient: the next round continues from the stored progress);
    /// data the computation refuses.
    ///
    /// Another writer of the same tables (the erasure's recomputation, a second
    /// process) may commit during a round. The round loads its tables before it pins
    /// its inputs and each replacement commits only on top of the version the round
    /// loaded: when the table moved, the round starts again, so a round computed from
    /// older inputs never overwrites a newer result (say, bring back the costs of an
    /// erased subject after its erasure recomputed them).
    pub async fn round(&mut self) -> Result<CostRound, CostError> {
        let mut attempt = 0;
        loop {
            match self.round_once().await {
                Err(CostError::Sink(SinkError::Moved { table, .. })) if attempt < MOVED_RETRIES => {
                    attempt += 1;
                    info!(
                        table,
                        attempt, "costs: a table moved during the round; again"
                    );
                }
                other => return other,
            }
        }
    }

    async fn round_once(&mut self) -> Result<CostRound, CostError> {
        let started = Instant::now();
        // The tables first, then the inputs: a result another writer committed
        // before this load was computed from inputs at most as new as ours.
        let mut stored = [None; INPUTS];
        for (i, id) in PROGRESS_APP_IDS.iter().enumerate() {
            stored[i] = self.tables[MONTHLY].progress(id).await?;
        }
        for (index, table) in self.tables.iter_mut().enumerate() {
            if index != MONTHLY {
                table.reload().await?;
            }
        }
        self.seen = self.tables.iter().map(DerivedTable::version).collect();
        let mut versions = [0i64; INPUTS];
        for (i, input) in self.inputs.iter_mut().enumerate() {
            versions[i] = input
                .refresh()
                .await?
                .map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        }
        versions[RATES] = rates_key(&self.rates_version);
        if stored.iter().zip(&versions).all(|(s, v)| *s == Some(*v)) {
            return Ok(CostRound::default());
        }
        let private = self.private();
        let dirty = self.dirty(&private, &stored, &versions).await?;
        let mut round = CostRound::default();
        if !dirty.is_empty() {
            let tariffs = load_tariffs(&self.inputs[TARIFFS]).await?;
            self.exchange = load_exchange_rates(&self.inputs[EXCHANGE]).await?;
            self.stations = cost::stations_from(
                &self.inputs[STATIONS]
                    .scan(&STATION_COLUMNS, lit(true))
                    .await?,
            )?;
            for (tenant, days) in &dirty {
                let tz = private
                    .get(tenant)
                    .copied()
                    .unwrap_or(chrono_tz::Europe::Oslo);
                self.recompute(tenant, tz, days, &tariffs, &mut round)
                    .await?;
            }
        }
        let progress: Vec<(String, i64)> = PROGRESS_APP_IDS
            .iter()
            .zip(versions)
            .map(|(id, v)| ((*id).to_owned(), v))
            .collect();
        self.tables[MONTHLY].append(&[], &progress).await?;
        round.progress = Some(versions);
        info!(
            days = round.days(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "costs: round done"
        );
        Ok(round)
    }

    /// The days to recompute (see the module documentation).
    async fn dirty(
        &self,
        private: &BTreeMap<String, Tz>,
        stored: &[Option<i64>; INPUTS],
        versions: &[i64; INPUTS],
    ) -> Result<Dirty, CostError> {
        // Every day with readings of a private tenant.
        let mut with_readings: Dirty = BTreeMap::new();
        for p in self.inputs[READINGS].partitions().await? {
            if let (Some(t), Some(d)) = (p.first(), p.get(1).and_then(|d| parse_date(d))) {
                if private.contains_key(t) {
                    with_readings.entry(t.clone()).or_default().insert(d);
                }
            }
        }
        // Tariffs, stations or rates changed: every day.
        let mut every_day = [TARIFFS, STATIONS, RATES]
            .iter()
            .any(|i| stored[*i] != Some(versions[*i]));
        let mut dirty: Dirty = BTreeMap::new();
        // Readings: the partitions that changed (removed ones included, to empty them).
        match self.changed(READINGS, stored, versions).await? {
            Some(changes) => {
                for (p, _) in changes {
                    if let (Some(t), Some(d)) = (p.first(), p.get(1).and_then(|d| parse_date(d))) {
                        if private.contains_key(t) {
                            dirty.entry(t.clone()).or_default().insert(d);
                        }
                    }
                }
            }
            None => every_day = true,
        }
        // Prices and weather: the dates that changed, on every tenant's days.
        for input in [PRICES, WEATHER] {
            if every_day {
                break;
            }
            let Some(changes) = self.changed(input, stored, versions).await? else {
                every_day = true;
                break;
            };
            let dates: BTreeSet<NaiveDate> = changes
                .iter()
                .filter_map(|(p, _)| p.first().and_then(|d| parse_date(d)))
                .collect();
            for (tenant, days) in &with_readings {
                let oslo = private.get(tenant) == Some(&chrono_tz::Europe::Oslo);
                for d in days {
                    // Prices are partitioned by the Oslo date; a tenant in another zone
                    // has hours in the neighbouring dates too.
                    let near = if oslo {
                        dates.contains(d)
                    } else {
                        (-1..=1).any(|k| dates.contains(&(*d + Duration::days(k))))
                    };
                    if near {
                        dirty.entry(tenant.clone()).or_default().insert(*d);
                    }
                }
            }
        }
        // Profiles: a tenant's days from the earliest profile added; exchange rates:
        // every tenant's days from the earliest rate added.
        for (input, column) in [(PROFILES, "valid_from"), (EXCHANGE, "date")] {
            let changes = if every_day {
                Some(Vec::new())
            } else {
                self.changed(input, stored, versions).await?
            };
            let Some(changes) = changes else {
                every_day = true;
                break;
            };
            for (p, change) in changes {
                let from = match change {
                    Change::Whole => None,
                    Change::Added(files) => self.earliest_date(input, &files, column).await?,
                };
                // Profiles are partitioned by tenant; exchange rates are everyone's.
                let tenants = with_readings
                    .iter()
                    .filter(|(t, _)| input == EXCHANGE || p.first() == Some(*t));
                for (tenant, days) in tenants {
                    let entry = dirty.entry(tenant.clone()).or_default();
                    entry.extend(days.iter().filter(|d| from.is_none_or(|f| **d >= f)));
                }
            }
        }
        Ok(merge(dirty, with_readings, every_day))
    }

    /// The earliest date in `column` of `files` of an input (`None`: none, so every
    /// day).
    async fn earliest_date(
        &self,
        input: usize,
        files: &[meterline_sinks::DataFile],
        column: &str,
    ) -> Result<Option<NaiveDate>, CostError> {
        use arrow::array::AsArray;
        let mut earliest: Option<NaiveDate> = None;
        for batches in self.inputs[input].read_files(files, &[column]).await? {
            for b in &batches {
                let Some(c) = b
                    .column(0)
                    .as_primitive_opt::<arrow::datatypes::Date32Type>()
                else {
                    continue;
                };
                for v in c.iter().flatten() {
                    let d = meterline_operators::aggregate::date_of(v);
                    earliest = Some(earliest.map_or(d, |e| e.min(d)));
                }
            }
        }
        Ok(earliest)
    }

    /// What changed in an input since the stored version: `None` when that is not known
    /// (first round, the log cleaned up, the table replaced): recompute everything.
    async fn changed(
        &self,
        input: usize,
        stored: &[Option<i64>; INPUTS],
        versions: &[i64; INPUTS],
    ) -> Result<Option<Vec<(Partition, Change)>>, CostError> {
        let (Some(after), now) = (stored[input], versions[input]) else {
            return Ok(None);
        };
        if after == now {
            return Ok(Some(Vec::new()));
        }
        if now < 0 || after > now {
            return Ok(None);
        }
        let upto = u64::try_from(now).unwrap_or(0);
        Ok(self.inputs[input]
            .changes(after, upto)
            .await?
            .map(|c| c.data.into_iter().collect()))
    }

    /// Recompute a tenant's `days`, then their months and seasons.
    async fn recompute(
        &mut self,
        tenant: &str,
        tz: Tz,
        days: &BTreeSet<NaiveDate>,
        tariffs: &[VersionedTariff],
        round: &mut CostRound,
    ) -> Result<(), CostError> {
        let profiles = cost::profiles_from(
            &self.inputs[PROFILES]
                .scan(&PROFILE_COLUMNS, col("tenant").eq(lit(tenant)))
                .await?,
        )?;
        let (rates, rates_version) = (self.rates.clone(), self.rates_version.clone());
        let stations = self.stations.clone();
        let no_prices = AreaPrices::default();
        let no_temperatures = cost::Temperatures::new();
        let base = Context {
            tenant,
            tz,
            prices: &no_prices,
            profiles: &profiles,
            tariffs,
            rates: &rates,
            rates_version: &rates_version,
            temperatures: &no_temperatures,
            stations: &stations,
        };
        self.recompute_days(&base, days, round).await?;
        self.recompute_months(&base, days, round).await?;
        self.recompute_seasons(tenant, days, round).await
    }

    /// `cost_hourly`, `cost_daily` and `temperature_daily` of `days`, a step at a time.
    async fn recompute_days(
        &mut self,
        base: &Context<'_>,
        days: &BTreeSet<NaiveDate>,
        round: &mut CostRound,
    ) -> Result<(), CostError> {
        let tenant = base.tenant;
        let all: Vec<NaiveDate> = days.iter().copied().collect();
        for chunk in all.chunks(self.max_days_per_step) {
            let (first, last) = (chunk[0], chunk[chunk.len() - 1]);
            let readings = self.inputs[READINGS]
                .scan(
                    &CURRENT_COLUMNS,
                    col("tenant")
                        .eq(lit(tenant))
                        .and(between("local_date", first, last)),
                )
                .await?;
            // Prices and observations are partitioned by the Oslo date: a day before and
            // after covers a tenant in another zone.
            let around = between(
                "local_date",
                first - Duration::days(1),
                last + Duration::days(1),
            );
            let prices = cost::prices_from(
                &self.inputs[PRICES]
                    .scan(&PRICE_COLUMNS, around.clone())
                    .await?,
                &self.exchange,
            )?;
            let temperatures = cost::temperatures_from(
                &self.inputs[WEATHER].scan(&WEATHER_COLUMNS, around).await?,
            )?;
            let ctx = Context {
                prices: &prices,
                temperatures: &temperatures,
                ..*base
            };
            let set: BTreeSet<NaiveDate> = chunk.iter().copied().collect();
            let rows = cost_days(&ctx, &set, &readings)?;
            let partitions: BTreeSet<Partition> =
                chunk.iter().map(|d| day_partition(tenant, *d)).collect();
            for (index, batch) in [
                (HOURLY, rows.hourly),
                (DAILY, rows.daily),
                (TEMPERATURE, rows.temperature),
            ] {
                self.replace(index, batch, &partitions, round).await?;
            }
            self.metrics.cost_days.inc_by(chunk.len() as u64);
        }
        Ok(())
    }

    /// `cost_monthly`, `capacity_peaks` and `duration_curve` of the months of `days`,
    /// from the stored hours.
    async fn recompute_months(
        &mut self,
        ctx: &Context<'_>,
        days: &BTreeSet<NaiveDate>,
        round: &mut CostRound,
    ) -> Result<(), CostError> {
        let tenant = ctx.tenant;
        let months: Vec<NaiveDate> = days
            .iter()
            .map(|d| month_start(*d))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let columns: Vec<String> = cost::COST_HOURLY
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        for chunk in months.chunks(MONTHS_PER_STEP) {
            let first = chunk[0];
            let last_month = chunk[chunk.len() - 1];
            let last = month_days(last_month).last().copied().unwrap_or(last_month);
            let hourly = self.tables[HOURLY]
                .scan(
                    &columns,
                    col("tenant")
                        .eq(lit(tenant))
                        .and(between("local_date", first, last)),
                )
                .await?;
            let set: BTreeSet<NaiveDate> = chunk.iter().copied().collect();
            let rows = cost_months(ctx, &set, &hourly)?;
            let partitions: BTreeSet<Partition> =
                chunk.iter().map(|m| day_partition(tenant, *m)).collect();
            for (index, batch) in [
                (MONTHLY, rows.monthly),
                (PEAKS, rows.peaks),
                (DURATION, rows.duration),
            ] {
                self.replace(index, batch, &partitions, round).await?;
            }
        }
        Ok(())
    }

    /// `temperature_sensitivity` of the heating seasons of `days`.
    async fn recompute_seasons(
        &mut self,
        tenant: &str,
        days: &BTreeSet<NaiveDate>,
        round: &mut CostRound,
    ) -> Result<(), CostError> {
        let seasons: BTreeSet<i32> = days.iter().filter_map(|d| heating_season(*d)).collect();
        for season in seasons {
            let (from, to) = season_bounds(season);
            let daily = self.tables[TEMPERATURE]
                .scan(
                    &["meter", "local_date", "kwh", "mean_temperature_c"],
                    col("tenant")
                        .eq(lit(tenant))
                        .and(between("local_date", from, to)),
                )
                .await?;
            let batch = cost::sensitivity(tenant, &BTreeSet::from([season]), &daily)?;
            let partitions = BTreeSet::from([vec![tenant.to_owned(), season.to_string()]]);
            self.replace(SENSITIVITY, batch, &partitions, round).await?;
        }
        Ok(())
    }

    async fn replace(
        &mut self,
        index: usize,
        batch: arrow::array::RecordBatch,
        partitions: &BTreeSet<Partition>,
        round: &mut CostRound,
    ) -> Result<(), CostError> {
        let table = &mut self.tables[index];
        let name = table.name();
        let remove: Vec<_> = table
            .files()
            .await?
            .into_iter()
            .filter(|f| partitions.contains(&f.partition))
            .collect();
        let replaced = table
            .rewrite(
                &[std::slice::from_ref(&batch)],
                &remove,
                partitions,
                None,
                self.seen[index],
            )
            .await?;
        if replaced.version.is_some() {
            self.seen[index] = replaced.version;
        }
        if index == HOURLY {
            round.hours += replaced.rows;
        }
        self.metrics
            .cost_rows
            .with_label_values(&[name])
            .inc_by(replaced.rows as u64);
        round
            .rewritten
            .entry(name)
            .or_default()
            .extend(partitions.iter().cloned());
        Ok(())
    }
}

/// Every tariff in `grid_tariffs`, oldest import first (a later import of the same
/// start wins). A document that no longer parses is skipped with a warning.
async fn load_tariffs(table: &SourceTable) -> Result<Vec<VersionedTariff>, CostError> {
    use arrow::array::AsArray;
    let batches = table
        .scan(&["document", "document_hash", "version"], lit(true))
        .await?;
    let mut docs: BTreeMap<(i64, String), String> = BTreeMap::new();
    for b in &batches {
        let doc = b.column(0).as_string::<i32>();
        let hash = b.column(1).as_string::<i32>();
        let version = b
            .column(2)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        for row in 0..b.num_rows() {
            docs.entry((version.value(row), hash.value(row).to_owned()))
                .or_insert_with(|| doc.value(row).to_owned());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for ((_, hash), doc) in docs {
        if !seen.insert(hash.clone()) {
            continue;
        }
        match parse_tariff_file(&doc) {
            Ok(tariffs) => out.extend(tariffs.into_iter().map(|t| VersionedTariff {
                version: format!("{}/{}", &hash[..hash.len().min(16)], t.valid_from),
                tariff: t,
            })),
            Err(e) => {
                warn!(document = %&hash[..hash.len().min(16)], error = %e, "costs: a stored tariff no longer parses; skipped")
            }
        }
    }
    Ok(out)
}

/// The rates of `exchange_rates` (none while it does not exist).
async fn load_exchange_rates(table: &SourceTable) -> Result<ExchangeRates, CostError> {
    Ok(cost::exchange_rates_from(
        &table
            .scan(&["currency", "date", "nok_per_unit", "version"], lit(true))
            .await?,
    )?)
}

/// The inputs of a tenant's days `from..=to`, read as a round reads them.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Every stored version of the readings of those days (of one meter when asked).
    pub readings: Vec<arrow::array::RecordBatch>,
    pub prices: AreaPrices,
    pub profiles: BTreeMap<String, Vec<cost::Profile>>,
    pub tariffs: Vec<VersionedTariff>,
}

/// Read the inputs of `tenant`'s days `from..=to` (the readings of `meter` only, when
/// given) from the lake as it is now: what `meterline simulate-cost` prices.
///
/// # Errors
/// Storage errors; tables of another shape.
pub async fn read_inputs(
    lake: &Lake,
    tenant: &str,
    from: NaiveDate,
    to: NaiveDate,
    meter: Option<&str>,
) -> Result<Inputs, CostError> {
    let mut tables = [
        SourceTable::new(lake, "readings", &["tenant", "local_date"]),
        SourceTable::new(lake, "spot_prices", &["local_date"]),
        SourceTable::new(lake, "meter_profiles", &["tenant"]),
        SourceTable::new(lake, "grid_tariffs", &[]),
        SourceTable::new(lake, "exchange_rates", &[]),
    ];
    for t in &mut tables {
        t.refresh().await?;
    }
    let [readings, prices, profiles, tariffs, exchange] = &tables;
    let exchange = load_exchange_rates(exchange).await?;
    let mut filter = col("tenant")
        .eq(lit(tenant))
        .and(between("local_date", from, to));
    if let Some(m) = meter {
        filter = filter.and(col("meter").eq(lit(m)));
    }
    Ok(Inputs {
        readings: readings.scan(&CURRENT_COLUMNS, filter).await?,
        prices: cost::prices_from(
            &prices
                .scan(
                    &PRICE_COLUMNS,
                    between(
                        "local_date",
                        from - Duration::days(1),
                        to + Duration::days(1),
                    ),
                )
                .await?,
            &exchange,
        )?,
        profiles: cost::profiles_from(
            &profiles
                .scan(&PROFILE_COLUMNS, col("tenant").eq(lit(tenant)))
                .await?,
        )?,
        tariffs: load_tariffs(tariffs).await?,
    })
}

/// Keep the cost tables current inside `meterline run`: a round every `interval` (after
/// a long round, at least four times its duration), until shutdown. Does nothing
/// without private tenants.
pub async fn run_loop(
    lake: Lake,
    tenants: TenantRegistry,
    settings: AggregateSettings,
    rates: RateTable,
    metrics: Metrics,
    shutdown: std::sync::Arc<crate::shutdown::Shutdown>,
) {
    if !tenants.iter().any(|t| t.deployment == Deployment::Private) {
        return;
    }
    let interval = settings.interval;
    let mut materializer: Option<CostMaterializer> = None;
    while !shutdown.is_requested() {
        if materializer.is_none() {
            match CostMaterializer::open(
                &lake,
                tenants.clone(),
                &settings,
                rates.clone(),
                metrics.clone(),
            )
            .await
            {
                Ok(m) => materializer = Some(m),
                Err(e) => {
                    metrics.cost_rounds.with_label_values(&["error"]).inc();
                    warn!(error = %e, "costs: cannot open the cost tables; retrying");
                }
            }
        }
        let started = Instant::now();
        if let Some(m) = materializer.as_mut() {
            match m.round().await {
                Ok(_) => metrics.cost_rounds.with_label_values(&["ok"]).inc(),
                Err(e) => {
                    metrics.cost_rounds.with_label_values(&["error"]).inc();
                    warn!(error = %e, "costs: round failed; the next round continues from the stored progress");
                }
            }
        }
        // The schedule of rounds (the freshness goal), not a synchronization.
        let wait = interval.max(started.elapsed() * 4);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => {}
        }
    }
}
