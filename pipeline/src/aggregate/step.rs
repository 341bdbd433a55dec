//! One step of a round: the changed days of one tenant, recomputed per changed
//! meter.
//!
//! A day whose `readings` files were only added (a backfill, a delivery, live
//! readings, corrections: every ingestion) changed for the meters in those files.
//! For them only:
//! 1. their stored readings of the day are read: the added files, and the earlier
//!    files that hold the same meters ([`FileIndex`]);
//! 2. their hourly and daily rows are computed, and replace their rows in the
//!    per-meter tables: the files holding those meters are rewritten without them,
//!    plus the new rows, in one commit per table;
//! 3. the area cells of the day follow ([`AreaState`]: the meters' old rows out,
//!    the new in);
//! 4. their monthly rows are summed from their daily rows of the month and
//!    replace theirs; the month's area cells follow the same way.
//!
//! A day with removed rows (retention, erasure, a rewrite) is recomputed whole,
//! as on a first round. The work of a step is the changed meters' rows, not the
//! day's, so a backfill that touches every day of a growing lake costs the same
//! per reading at the end as at the start.
//!
//! A day with more readings to read than `max_readings_per_step` comes as several
//! steps, one [`Share`] of its meters each. A share's step is the case above: its
//! meters changed (a whole day's share: its old meters of the share and its new
//! ones). It reads the share's rows a file at a time, and writes what it rewrites
//! in files of one share each, so the next share's step reads only its own.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;
use deltalake::datafusion::prelude::{col, lit};
use meterline_operators::aggregate::{
    self, date_of, days_in_month, hourly_daily, meters_by, month_of, select_rows, AreaState,
    Disclosure, Grain, HourlyDaily, MeterSet,
};
use meterline_operators::Deployment;
use meterline_sinks::{Change, DataFile, Partition, Replaced};
use tracing::debug;

use super::materializer::{
    date_lit, date_value, group, parse_date, AggregateError, Materializer, Round, Share,
    AREA_DAILY, AREA_HOURLY, AREA_MONTHLY, DAILY, HOURLY, MONTHLY, READ_COLUMNS,
};

/// Area states held at most (a few kB each); past it they are dropped and built
/// again when needed.
const MAX_AREA_STATES: usize = 4096;

/// The columns of a table's schema.
fn all_columns(spec_schema: &arrow::datatypes::SchemaRef) -> Vec<String> {
    spec_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// What a step is about: one tenant, and the progress its commits record.
struct Scope<'a> {
    tenant: &'a str,
    public: bool,
    rules: Disclosure,
    progress: Option<(&'a str, i64)>,
}

impl Scope<'_> {
    /// The (tenant, date) partition of a local date (or of a month's first day).
    fn part(&self, date: i32) -> Partition {
        vec![self.tenant.to_owned(), date_value(date)]
    }

    /// The day partitions of the month starting at `month`.
    fn month_days(&self, month: i32) -> Vec<Partition> {
        (month..month + days_in_month(month))
            .map(|d| self.part(d))
            .collect()
    }
}

/// The changed meters of a step's days and their recomputed rows.
struct Changed {
    /// Days recomputed whole.
    whole: BTreeSet<i32>,
    /// The meters that changed per day (every meter, old and new, of a whole day).
    meters: BTreeMap<i32, MeterSet>,
    /// Their hourly and daily rows.
    computed: HourlyDaily,
    /// The same meters per month.
    months: BTreeMap<i32, MeterSet>,
    /// The shares the step's day is split in (1: not split). The rows a step
    /// writes into the per-meter tables are grouped by share, a file each, so the
    /// next share's step reads only its own.
    shares: u64,
}

impl Changed {
    fn partitions(&self, scope: &Scope<'_>) -> BTreeSet<Partition> {
        self.meters.keys().map(|d| scope.part(*d)).collect()
    }
}

impl Materializer {
    /// Recompute the changed `days` of one tenant (see the module docs) and the
    /// months they fall in.
    pub(super) async fn step(
        &mut self,
        tenant: &str,
        days: &[(i32, Change, Share)],
        progress: Option<(&str, i64)>,
        round: &mut Round,
    ) -> Result<(), AggregateError> {
        let started = std::time::Instant::now();
        let info = self
            .tenants
            .by_id(tenant)
            .expect("steps only for configured tenants")
            .clone();
        let scope = Scope {
            tenant,
            public: info.deployment == Deployment::Public,
            rules: self
                .settings
                .disclosure
                .get(tenant)
                .copied()
                .unwrap_or_default(),
            progress,
        };
        let changed = self.recompute(&scope, info.timezone, days, round).await?;
        let month_before = self.before_writes(&scope, &changed).await?;
        let before = self.per_meter_rows(&scope, &changed).await?;
        self.day_cells(&scope, &changed, &before, round).await?;
        self.months(&scope, &changed, &month_before, round).await?;
        // A day split in shares counts once.
        round.partitions += days.iter().filter(|(_, _, s)| s.index == 0).count();
        debug!(
            days = days.len(),
            share = days[0].2.index,
            shares = changed.shares,
            whole = changed.whole.len(),
            first = %date_of(days[0].0),
            months = changed.months.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "aggregates: step done"
        );
        Ok(())
    }

    /// 1. The readings of the changed meters (every stored version), their hourly
    ///    and daily rows, and which meters changed per day.
    async fn recompute(
        &mut self,
        scope: &Scope<'_>,
        tz: chrono_tz::Tz,
        days: &[(i32, Change, Share)],
        round: &mut Round,
    ) -> Result<Changed, AggregateError> {
        // Days recomputed whole, every meter at once; a share of a day is
        // recomputed as its meters having changed.
        let whole: BTreeSet<i32> = days
            .iter()
            .filter(|(_, c, s)| *c == Change::Whole && s.is_all())
            .map(|(d, _, _)| *d)
            .collect();
        let shares = days.iter().map(|(_, _, s)| s.of).max().unwrap_or(1);
        let mut rows: Vec<RecordBatch> = Vec::new();
        if !whole.is_empty() {
            let filter = col("tenant").eq(lit(scope.tenant)).and(
                col("local_date").in_list(whole.iter().map(|d| date_lit(*d)).collect(), false),
            );
            rows.extend(self.readings.scan(&READ_COLUMNS, filter).await?);
            for d in &whole {
                self.readings_index.forget(&scope.part(*d));
            }
        }
        let mut meters: BTreeMap<i32, MeterSet> = BTreeMap::new();
        for (d, change, share) in days {
            match change {
                Change::Added(files) => {
                    let (held, batches) =
                        self.added_readings(&scope.part(*d), files, *share).await?;
                    rows.extend(batches);
                    meters.insert(*d, held);
                }
                Change::Whole if !share.is_all() => {
                    rows.extend(self.share_of_day(&scope.part(*d), *share).await?);
                }
                Change::Whole => {}
            }
        }
        let read = rows.iter().map(RecordBatch::num_rows).sum::<usize>();
        round.readings += read;
        round.largest_step = round.largest_step.max(read);
        let computed = hourly_daily(scope.tenant, tz, &rows)?;
        drop(rows);
        // A whole day changed for its old meters and its new ones.
        let new_meters = meters_by(
            std::slice::from_ref(&computed.daily),
            &self.hasher,
            "local_date",
        )?;
        for d in &whole {
            let p = scope.part(*d);
            let mut held = self.derived_meters(DAILY, &p).await?;
            held.extend(self.derived_meters(HOURLY, &p).await?);
            if let Some(new) = new_meters.get(d) {
                held.extend(new.iter().copied());
            }
            meters.insert(*d, held);
        }
        // A share of a day changed for its old meters of the share and its new ones.
        for (d, _, share) in days
            .iter()
            .filter(|(_, c, s)| *c == Change::Whole && !s.is_all())
        {
            let p = scope.part(*d);
            let mut held = self.derived_meters(DAILY, &p).await?;
            held.extend(self.derived_meters(HOURLY, &p).await?);
            held.retain(|h| share.holds(*h));
            if let Some(new) = new_meters.get(d) {
                held.extend(new.iter().copied());
            }
            meters.insert(*d, held);
        }
        let mut months: BTreeMap<i32, MeterSet> = BTreeMap::new();
        for (d, held) in &meters {
            months
                .entry(month_of(*d))
                .or_default()
                .extend(held.iter().copied());
        }
        Ok(Changed {
            whole,
            meters,
            computed,
            months,
            shares,
        })
    }

    /// Every stored reading of a day's meters of `share`, read a file at a time
    /// (what the file holds of other meters is dropped as soon as it is read).
    async fn share_of_day(
        &mut self,
        partition: &Partition,
        share: Share,
    ) -> Result<Vec<RecordBatch>, AggregateError> {
        // Rows were removed from the day: what was known of its files is not.
        self.readings_index.forget(partition);
        let files = self.readings_partition_files(partition).await?;
        let hasher = &self.hasher;
        let per_file = self
            .readings
            .read_files_each(&files, &READ_COLUMNS, |batches| {
                select_rows(&batches, hasher, |h, _| share.holds(h))
            })
            .await?;
        let mut rows = Vec::new();
        for selected in per_file {
            rows.extend(selected?);
        }
        Ok(rows)
    }

    /// The meters of files added to a `readings` partition, and all their stored
    /// rows there: the added files, and the earlier files holding those meters.
    /// The meters of `share` in files added to a `readings` partition, and all
    /// their stored rows there: the added files, and the earlier files holding
    /// those meters. Files are read a few at a time and only the share's rows kept.
    async fn added_readings(
        &mut self,
        partition: &Partition,
        files: &[DataFile],
        share: Share,
    ) -> Result<(MeterSet, Vec<RecordBatch>), AggregateError> {
        let hasher = &self.hasher;
        let per_file = self
            .readings
            .read_files_each(files, &READ_COLUMNS, |batches| {
                let held = hasher.meters(&batches)?;
                let kept = if share.is_all() {
                    batches
                } else {
                    select_rows(&batches, hasher, |h, _| share.holds(h))?
                };
                Ok::<_, meterline_operators::OperatorError>((held, kept))
            })
            .await?;
        let mut meters = MeterSet::default();
        let mut rows: Vec<RecordBatch> = Vec::new();
        for (file, read) in files.iter().zip(per_file) {
            let (held, kept) = read?;
            meters.extend(held.iter().copied().filter(|h| share.holds(*h)));
            self.readings_index.add(file.clone(), held);
            rows.extend(kept);
        }
        let added: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let earlier: Vec<DataFile> = self
            .readings_files_with(partition, &meters)
            .await?
            .into_iter()
            .filter(|f| !added.contains(f.path.as_str()))
            .collect();
        let hasher = &self.hasher;
        let earlier_rows = self
            .readings
            .read_files_each(&earlier, &READ_COLUMNS, |batches| {
                select_rows(&batches, hasher, |h, _| meters.contains(&h))
            })
            .await?;
        for selected in earlier_rows {
            rows.extend(selected?);
        }
        Ok((meters, rows))
    }

    /// 2. Before anything is written: the changed meters' daily rows of their
    ///    months, and the area cells as they are.
    async fn before_writes(
        &mut self,
        scope: &Scope<'_>,
        changed: &Changed,
    ) -> Result<BTreeMap<i32, Vec<RecordBatch>>, AggregateError> {
        let columns = all_columns(&aggregate::DAILY);
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut month_before = BTreeMap::new();
        for (month, meters) in &changed.months {
            let mut files = Vec::new();
            for p in scope.month_days(*month) {
                files.extend(self.derived_files_with(DAILY, &p, meters).await?);
            }
            let batches = self.tables[DAILY]
                .read_files(&files, &columns)
                .await?
                .concat();
            month_before.insert(
                *month,
                select_rows(&batches, &self.hasher, |h, _| meters.contains(&h))?,
            );
        }
        if scope.public {
            for d in changed.meters.keys().filter(|d| !changed.whole.contains(d)) {
                let p = scope.part(*d);
                self.ensure_area(AREA_HOURLY, HOURLY, Grain::Hour, &p)
                    .await?;
                self.ensure_area(AREA_DAILY, DAILY, Grain::Day, &p).await?;
            }
            for month in changed.months.keys() {
                let key = (AREA_MONTHLY, scope.part(*month));
                if !self.areas.contains_key(&key) {
                    let state = self
                        .build_area(DAILY, Grain::Month, &scope.month_days(*month))
                        .await?;
                    self.keep_area(key.0, key.1, state);
                }
            }
        }
        Ok(month_before)
    }

    /// 3. The per-meter hourly and daily rows: the files holding the changed
    ///    meters are rewritten without them, plus their new rows. Returns each
    ///    table's rows of those meters as they were.
    async fn per_meter_rows(
        &mut self,
        scope: &Scope<'_>,
        changed: &Changed,
    ) -> Result<BTreeMap<usize, Vec<RecordBatch>>, AggregateError> {
        let partitions = changed.partitions(scope);
        let mut before = BTreeMap::new();
        for (index, new_rows) in [
            (HOURLY, &changed.computed.hourly),
            (DAILY, &changed.computed.daily),
        ] {
            let columns = all_columns(&self.tables_schema(index));
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            let mut remove: Vec<DataFile> = Vec::new();
            let mut write: Vec<RecordBatch> = Vec::new();
            let mut old: Vec<RecordBatch> = Vec::new();
            for (d, meters) in &changed.meters {
                let p = scope.part(*d);
                let files = if changed.whole.contains(d) {
                    self.derived_files(index, &p).await?
                } else {
                    self.derived_files_with(index, &p, meters).await?
                };
                let batches = self.tables[index]
                    .read_files(&files, &columns)
                    .await?
                    .concat();
                old.extend(select_rows(&batches, &self.hasher, |h, _| {
                    meters.contains(&h)
                })?);
                write.extend(select_rows(&batches, &self.hasher, |h, _| {
                    !meters.contains(&h)
                })?);
                remove.extend(files);
            }
            write.push(new_rows.clone());
            let groups = self.by_share(&write, changed.shares)?;
            self.rewrite(
                index,
                &groups,
                &remove,
                &partitions,
                scope.progress,
                "local_date",
            )
            .await?;
            before.insert(index, old);
        }
        Ok(before)
    }

    /// 4. The area cells of the days: the changed meters' old rows out, the new
    ///    in (a whole day, or a stale state, from every meter's rows).
    async fn day_cells(
        &mut self,
        scope: &Scope<'_>,
        changed: &Changed,
        before: &BTreeMap<usize, Vec<RecordBatch>>,
        round: &mut Round,
    ) -> Result<(), AggregateError> {
        let partitions = changed.partitions(scope);
        if !scope.public {
            // Nothing of a private tenant in the area tables; only the progress.
            let none = BTreeSet::new();
            self.write(AREA_HOURLY, &[], &none, scope.progress).await?;
            self.write(AREA_DAILY, &[], &none, scope.progress).await?;
            return Ok(());
        }
        for (area, per_meter, grain, new_rows) in [
            (AREA_HOURLY, HOURLY, Grain::Hour, &changed.computed.hourly),
            (AREA_DAILY, DAILY, Grain::Day, &changed.computed.daily),
        ] {
            let mut out = Vec::new();
            let mut suppressed = 0;
            for d in changed.meters.keys() {
                let p = scope.part(*d);
                let on_day = |_: u64, date: i32| date == *d;
                let new_d = select_rows(std::slice::from_ref(new_rows), &self.hasher, on_day)?;
                let held = self.areas.remove(&(area, p.clone()));
                let state = match held {
                    _ if changed.whole.contains(d) => AreaState::build(grain, &new_d)?,
                    Some(mut state) => {
                        state.remove(&select_rows(&before[&per_meter], &self.hasher, on_day)?)?;
                        state.add(&new_d)?;
                        state
                    }
                    // Not held (dropped since): built below from what was written.
                    None => AreaState::stale(grain),
                };
                let state = if state.is_stale() {
                    self.build_area(per_meter, grain, std::slice::from_ref(&p))
                        .await?
                } else {
                    state
                };
                let (batch, s) = state.batch(scope.tenant, scope.rules)?;
                out.push(batch);
                suppressed += s;
                self.keep_area(area, p, state);
            }
            self.count_suppressed(area, suppressed, round);
            self.write(area, &out, &partitions, scope.progress).await?;
        }
        Ok(())
    }

    /// 5. The months: the changed meters' monthly rows from their daily rows of
    ///    the month (the ones not replaced and the new ones), and the month's area
    ///    cells.
    async fn months(
        &mut self,
        scope: &Scope<'_>,
        changed: &Changed,
        month_before: &BTreeMap<i32, Vec<RecordBatch>>,
        round: &mut Round,
    ) -> Result<(), AggregateError> {
        let columns = all_columns(&aggregate::MONTHLY);
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let partitions: BTreeSet<Partition> =
            changed.months.keys().map(|m| scope.part(*m)).collect();
        let (mut remove, mut write, mut cells) = (Vec::new(), Vec::new(), Vec::new());
        let mut suppressed = 0;
        for (month, meters) in &changed.months {
            let p = scope.part(*month);
            let before = &month_before[month];
            let mut now = select_rows(before, &self.hasher, |h, date| {
                !changed.meters.get(&date).is_some_and(|m| m.contains(&h))
            })?;
            now.extend(select_rows(
                std::slice::from_ref(&changed.computed.daily),
                &self.hasher,
                |_, date| month_of(date) == *month,
            )?);
            write.push(aggregate::monthly(scope.tenant, &now)?);
            let files = self.derived_files_with(MONTHLY, &p, meters).await?;
            let batches = self.tables[MONTHLY]
                .read_files(&files, &columns)
                .await?
                .concat();
            write.extend(select_rows(&batches, &self.hasher, |h, _| {
                !meters.contains(&h)
            })?);
            remove.extend(files);
            if scope.public {
                let mut state = self
                    .areas
                    .remove(&(AREA_MONTHLY, p.clone()))
                    .unwrap_or_else(|| AreaState::stale(Grain::Month));
                if !state.is_stale() {
                    state.remove(before)?;
                    state.add(&now)?;
                }
                if state.is_stale() {
                    // From every daily row of the month (written above).
                    state = self
                        .build_area(DAILY, Grain::Month, &scope.month_days(*month))
                        .await?;
                }
                let (batch, s) = state.batch(scope.tenant, scope.rules)?;
                cells.push(batch);
                suppressed += s;
                self.keep_area(AREA_MONTHLY, p, state);
            }
        }
        let groups = self.by_share(&write, changed.shares)?;
        self.rewrite(
            MONTHLY,
            &groups,
            &remove,
            &partitions,
            scope.progress,
            "month",
        )
        .await?;
        if scope.public {
            self.count_suppressed(AREA_MONTHLY, suppressed, round);
            self.write(AREA_MONTHLY, &cells, &partitions, scope.progress)
                .await
        } else {
            self.write(AREA_MONTHLY, &[], &BTreeSet::new(), scope.progress)
                .await
        }
    }

    fn tables_schema(&self, index: usize) -> arrow::datatypes::SchemaRef {
        match index {
            HOURLY => aggregate::HOURLY.clone(),
            DAILY => aggregate::DAILY.clone(),
            _ => aggregate::MONTHLY.clone(),
        }
    }

    fn count_suppressed(&self, area: usize, suppressed: usize, round: &mut Round) {
        round.suppressed += suppressed;
        self.metrics
            .aggregate_suppressed
            .with_label_values(&[self.tables[area].name()])
            .inc_by(suppressed as u64);
    }

    fn keep_area(&mut self, area: usize, partition: Partition, state: AreaState) {
        if self.areas.len() >= MAX_AREA_STATES {
            self.areas.clear();
        }
        self.areas.insert((area, partition), state);
    }

    /// The rows of `batches` grouped by the share (of `shares`) their meter is
    /// in: one group when the day is not split.
    fn by_share(
        &self,
        batches: &[RecordBatch],
        shares: u64,
    ) -> Result<Vec<Vec<RecordBatch>>, AggregateError> {
        if shares <= 1 {
            return Ok(vec![batches.to_vec()]);
        }
        (0..shares)
            .map(|index| {
                let share = Share { index, of: shares };
                Ok(select_rows(batches, &self.hasher, |h, _| share.holds(h))?)
            })
            .collect()
    }

    /// Replace the rows of `remove` (files of a per-meter table) with the rows of
    /// `groups` (files of their own each), and keep the file index of the table
    /// exact.
    async fn rewrite(
        &mut self,
        index: usize,
        groups: &[Vec<RecordBatch>],
        remove: &[DataFile],
        partitions: &BTreeSet<Partition>,
        progress: Option<(&str, i64)>,
        date_column: &'static str,
    ) -> Result<(), AggregateError> {
        let expected = self.seen[index];
        let slices: Vec<&[RecordBatch]> = groups.iter().map(Vec::as_slice).collect();
        let done = self.tables[index]
            .rewrite(&slices, remove, partitions, progress, expected)
            .await?;
        self.written(index, &done).await?;
        self.listings[index] = None;
        self.derived_index[index].remove(remove);
        let by_date = meters_by(&groups.concat(), &self.hasher, date_column)?;
        for file in done.added {
            let held = file
                .partition
                .get(1)
                .and_then(|d| parse_date(d))
                .and_then(|d| by_date.get(&d).cloned());
            match held {
                Some(held) => self.derived_index[index].add(file, held),
                None => self.derived_index[index].forget(&file.partition.clone()),
            }
        }
        Ok(())
    }

    /// Metrics and the failpoint after a commit of table `index`.
    pub(super) async fn written(
        &mut self,
        index: usize,
        done: &Replaced,
    ) -> Result<(), AggregateError> {
        self.seen[index] = self.tables[index].version();
        self.record(index, done).await;
        Ok(())
    }

    /// The files of a `readings` partition at the pinned version (the listing is
    /// read once per round).
    async fn readings_partition_files(
        &mut self,
        partition: &Partition,
    ) -> Result<Vec<DataFile>, AggregateError> {
        if self.readings_listing.is_none() {
            self.readings_listing = Some(group(self.readings.files().await?));
        }
        Ok(self
            .readings_listing
            .as_ref()
            .and_then(|l| l.get(partition))
            .cloned()
            .unwrap_or_default())
    }

    /// The files of a `readings` partition holding any of `meters`.
    async fn readings_files_with(
        &mut self,
        partition: &Partition,
        meters: &MeterSet,
    ) -> Result<Vec<DataFile>, AggregateError> {
        if let Some(files) = self.readings_index.files_with(partition, meters) {
            return Ok(files);
        }
        let files = self.readings_partition_files(partition).await?;
        let per_file = self.readings.read_files(&files, &["meter"]).await?;
        let held = files
            .iter()
            .cloned()
            .zip(per_file.iter().map(|b| self.hasher.meters(b)))
            .map(|(f, m)| m.map(|m| (f, m)))
            .collect::<Result<Vec<_>, _>>()?;
        if self.readings_index.load(partition, held) {
            Ok(self
                .readings_index
                .files_with(partition, meters)
                .unwrap_or_default())
        } else {
            // Too large to hold: every file may be relevant.
            Ok(files)
        }
    }

    /// The files of a derived table's partition.
    async fn derived_files(
        &mut self,
        index: usize,
        partition: &Partition,
    ) -> Result<Vec<DataFile>, AggregateError> {
        if self.listings[index].is_none() {
            self.listings[index] = Some(group(self.tables[index].files().await?));
        }
        Ok(self.listings[index]
            .as_ref()
            .and_then(|l| l.get(partition))
            .cloned()
            .unwrap_or_default())
    }

    /// Make sure the file index of a derived table holds `partition`; false when it
    /// is too large to be held.
    async fn load_derived(
        &mut self,
        index: usize,
        partition: &Partition,
    ) -> Result<bool, AggregateError> {
        if self.derived_index[index].knows(partition) {
            return Ok(true);
        }
        let files = self.derived_files(index, partition).await?;
        let per_file = self.tables[index].read_files(&files, &["meter"]).await?;
        let held = files
            .into_iter()
            .zip(per_file.iter().map(|b| self.hasher.meters(b)))
            .map(|(f, m)| m.map(|m| (f, m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.derived_index[index].load(partition, held))
    }

    /// The files of a derived table's partition holding any of `meters`.
    async fn derived_files_with(
        &mut self,
        index: usize,
        partition: &Partition,
        meters: &MeterSet,
    ) -> Result<Vec<DataFile>, AggregateError> {
        if self.load_derived(index, partition).await? {
            Ok(self.derived_index[index]
                .files_with(partition, meters)
                .unwrap_or_default())
        } else {
            self.derived_files(index, partition).await
        }
    }

    /// Every meter of a derived table's partition.
    async fn derived_meters(
        &mut self,
        index: usize,
        partition: &Partition,
    ) -> Result<MeterSet, AggregateError> {
        if self.load_derived(index, partition).await? {
            return Ok(self.derived_index[index]
                .meters(partition)
                .unwrap_or_default());
        }
        let files = self.derived_files(index, partition).await?;
        let batches = self.tables[index].read_files(&files, &["meter"]).await?;
        Ok(self.hasher.meters(&batches.concat())?)
    }

    /// The area state of a day partition, built from every meter's rows of the
    /// per-meter table when not held.
    async fn ensure_area(
        &mut self,
        area: usize,
        per_meter: usize,
        grain: Grain,
        partition: &Partition,
    ) -> Result<(), AggregateError> {
        if !self.areas.contains_key(&(area, partition.clone())) {
            let state = self
                .build_area(per_meter, grain, std::slice::from_ref(partition))
                .await?;
            self.keep_area(area, partition.clone(), state);
        }
        Ok(())
    }

    async fn build_area(
        &mut self,
        per_meter: usize,
        grain: Grain,
        partitions: &[Partition],
    ) -> Result<AreaState, AggregateError> {
        let mut files = Vec::new();
        for p in partitions {
            files.extend(self.derived_files(per_meter, p).await?);
        }
        let columns = all_columns(&self.tables_schema(per_meter));
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let batches = self.tables[per_meter]
            .read_files(&files, &columns)
            .await?
            .concat();
        Ok(AreaState::build(grain, &batches)?)
    }
}
