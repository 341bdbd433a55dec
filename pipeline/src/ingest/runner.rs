//! The pipeline task: chunks in, operators over Arrow batches, exactly-once commits
//! to the lake out.
//!
//! ```text
//!  Event::Records ─▶ decode ─▶ validate ─▶ anonymize ─▶ versions ─▶ buffer ──(size or timer)──▶ flush
//!  Event::Assigned ─▶ read stored offsets from the lake ─▶ reply (consumer seeks)
//!  Event::Revoked  ─▶ flush ─▶ forget partitions ─▶ reply (group may move them)
//!  Event::Stopped  ─▶ final flush ─▶ done
//! ```
//!
//! `versions` applies the version rules against the lake. The first time a batch
//! touches a (tenant, local date) partition, the meters that partition holds are
//! read (one column, see `MeterPresence`); the stored keys of the batch's meters
//! that are in it are read into a bounded in-memory index (see `VersionIndex`).
//! New meters, the common case, cost no read of stored keys.
//!
//! A flush filters out rows already stored (re-deliveries), publishes dead letters
//! to the dead-letter topic (if configured), commits them to `dead_letters` and then
//! readings with the flush's offsets, retrying storage errors
//! with capped exponential backoff. While it retries nothing is consumed: the
//! channel fills and the Kafka thread waits (librdkafka stops fetching once its
//! bounded prefetch queue is full).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, PrimitiveArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type};
use meterline_operators::{
    Chain, Classified, DeadLetter, MeterPresence, OperatorContext, Pseudonymizer, RawRecord,
    Reason, VersionIndex,
};
use meterline_sinks::{
    dead_letter_batch, dead_letters_spec, readings_spec, Lake, OffsetTable, SinkError,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::Settings;
use crate::kafka::{Event, OffsetsReply};
use crate::metrics::{drop_reason, Metrics};
use crate::shutdown::Shutdown;

/// Why the pipeline stopped other than by a clean shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("another process wrote partitions {0:?} of this topic; restart to resume from the offsets in the lake")]
    Fenced(Vec<i32>),
    #[error("shutdown grace period ended before the last flush was committed; its records were not stored and will be consumed again on restart")]
    GraceExceeded,
    #[error(transparent)]
    Operator(#[from] meterline_operators::OperatorError),
    #[error("configuration: {0}")]
    Config(String),
    /// A bug: a batch without the shape the pipeline builds.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The columns of a dead-letter batch that its Kafka copy carries.
struct DeadLetterColumns<'a> {
    tenant: &'a StringArray,
    src_topic: &'a StringArray,
    partition: &'a PrimitiveArray<Int32Type>,
    offset: &'a PrimitiveArray<Int64Type>,
    reason: &'a StringArray,
    detail: &'a StringArray,
    payload: &'a StringArray,
}

impl<'a> DeadLetterColumns<'a> {
    fn of(dl: &'a RecordBatch) -> Result<Self, RunError> {
        let string = |name: &str| {
            dl.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
        };
        let missing = || RunError::Internal("dead letter batch without its columns".into());
        Ok(Self {
            tenant: string("tenant").ok_or_else(missing)?,
            src_topic: string("source_topic").ok_or_else(missing)?,
            partition: dl
                .column_by_name("source_partition")
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
                .ok_or_else(missing)?,
            offset: dl
                .column_by_name("source_offset")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(missing)?,
            reason: string("reason").ok_or_else(missing)?,
            detail: string("detail").ok_or_else(missing)?,
            payload: string("payload").ok_or_else(missing)?,
        })
    }

    /// The headers of row `i`'s Kafka copy: why, and where it came from
    /// (`partition` and `offset` as text, borrowed until delivery).
    fn headers(&self, i: usize, partition: &str, offset: &str) -> OwnedHeaders {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "meterline-reason",
                value: Some(self.reason.value(i)),
            })
            .insert(Header {
                key: "meterline-detail",
                value: Some(self.detail.value(i)),
            })
            .insert(Header {
                key: "meterline-source-topic",
                value: Some(self.src_topic.value(i)),
            })
            .insert(Header {
                key: "meterline-source-partition",
                value: Some(partition),
            })
            .insert(Header {
                key: "meterline-source-offset",
                value: Some(offset),
            });
        if self.tenant.is_valid(i) {
            headers.insert(Header {
                key: "meterline-tenant",
                value: Some(self.tenant.value(i)),
            })
        } else {
            headers
        }
    }
}

#[derive(Default)]
struct Buffer {
    readings: Vec<RecordBatch>,
    dead: Vec<DeadLetter>,
    /// Highest offset consumed per partition since the last flush.
    offsets: BTreeMap<i32, i64>,
    rows: usize,
    records: usize,
    /// Payload bytes of the buffered records (the memory the buffer stands for).
    bytes: usize,
    since: Option<Instant>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Remove everything buffered for `partitions`; returns how many records that was.
    fn discard(&mut self, partitions: &BTreeSet<i32>) -> Result<usize, RunError> {
        let mut removed = 0;
        let mut kept = Vec::with_capacity(self.readings.len());
        for batch in self.readings.drain(..) {
            let filtered = without_partitions(&batch, partitions)?;
            removed += batch.num_rows() - filtered.num_rows();
            self.rows -= batch.num_rows() - filtered.num_rows();
            kept.push(filtered);
        }
        self.readings = kept;
        let before = self.dead.len();
        self.dead.retain(|d| !partitions.contains(&d.partition));
        removed += before - self.dead.len();
        self.offsets.retain(|p, _| !partitions.contains(p));
        self.records -= removed;
        Ok(removed)
    }
}

/// The rows of `batch` whose `source_partition` is not in `partitions` (what a
/// revocation leaves of a buffered batch).
///
/// # Errors
/// [`RunError::Internal`] if the batch has no `source_partition` column.
pub fn without_partitions(
    batch: &RecordBatch,
    partitions: &BTreeSet<i32>,
) -> Result<RecordBatch, RunError> {
    let parts = batch
        .column_by_name("source_partition")
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| RunError::Internal("batch without source_partition".into()))?;
    let mask: arrow::array::BooleanArray = parts
        .values()
        .iter()
        .map(|p| Some(!partitions.contains(p)))
        .collect();
    arrow::compute::filter_record_batch(batch, &mask).map_err(|e| RunError::Internal(e.to_string()))
}

/// The columns the version rules read back from `readings`.
const KEY_COLUMNS: [&str; 6] = [
    "meter",
    "quantity",
    "direction",
    "interval_start",
    "version",
    "value",
];

/// The filter selecting the (tenant, local date) partitions of `readings`: values
/// as literals, not SQL text, so identifiers need no quoting.
fn partitions(tenant: &str, dates: &[i32]) -> datafusion::prelude::Expr {
    use datafusion::prelude::{col, lit};
    use datafusion::scalar::ScalarValue;
    col("tenant").eq(lit(tenant)).and(
        col("local_date").in_list(
            dates
                .iter()
                .map(|d| lit(ScalarValue::Date32(Some(*d))))
                .collect(),
            false,
        ),
    )
}

/// The pipeline: operators plus the two offset tables.
pub struct Runner {
    topic: String,
    chain: Chain,
    /// The consent state, refreshed by [`crate::privacy::consent::consent_loop`].
    consent: Option<crate::privacy::consent::ConsentHandle>,
    /// Pseudonym epoch keys (public tenants with key rotation) and when they
    /// were last loaded.
    keys: Option<(crate::privacy::keys::KeyStore, Instant)>,
    tenants: meterline_operators::TenantRegistry,
    versions: VersionIndex,
    /// Which meters each (tenant, local date) partition holds, so new meters need
    /// no read of stored keys.
    presence: MeterPresence,
    dlq: Option<(FutureProducer, String)>,
    readings: OffsetTable,
    dead: OffsetTable,
    buffer: Buffer,
    metrics: Metrics,
    commits: std::sync::mpsc::Sender<Vec<(i32, i64)>>,
    shutdown: Arc<Shutdown>,
    flush_interval: Duration,
    max_batch_rows: usize,
    max_batch_bytes: usize,
    grace: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    stop_deadline: Option<Instant>,
    clock: meterline_operators::Clock,
}

impl Runner {
    /// Open (or create) the lake tables and build the operators.
    ///
    /// # Errors
    /// Lake configuration and storage errors, a missing key for public tenants.
    pub async fn new(
        settings: &Settings,
        metrics: Metrics,
        commits: std::sync::mpsc::Sender<Vec<(i32, i64)>>,
        shutdown: Arc<Shutdown>,
    ) -> Result<Self, RunError> {
        let lake = Lake::new(&settings.lake)?;
        let topic = settings.kafka.readings_topic.clone();
        let readings = OffsetTable::open_or_create(&lake, readings_spec(), &topic).await?;
        let dead = OffsetTable::open_or_create(&lake, dead_letters_spec(), &topic).await?;
        let pseudonymizer = settings.key.clone().map(Pseudonymizer::new);
        let mut chain = Chain::new(
            settings.decode_config(),
            settings.tenants.clone(),
            pseudonymizer,
        )
        .map_err(|e| RunError::Config(e.to_string()))?;
        // With a master key, the key store holds the open epochs' keys and the
        // short-lived keys of dead letters no epoch key applies to.
        let keys = match &settings.key {
            Some(master) => {
                let store = crate::privacy::keys::KeyStore::open(&lake, master.clone()).await?;
                load_keys(&store, &settings.tenants, settings.clock.now(), &mut chain).await?;
                Some((store, Instant::now()))
            }
            None => None,
        };
        let p = &settings.pipeline;
        let d = &settings.dead_letters;
        let dlq = if d.kafka_topic.is_empty() {
            None
        } else {
            let producer: FutureProducer = crate::kafka::client::producer(&settings.kafka)
                .create()
                .map_err(|e| RunError::Config(format!("dead_letters.kafka_topic: {e}")))?;
            Some((producer, d.kafka_topic.clone()))
        };
        Ok(Self {
            topic,
            chain,
            consent: None,
            keys,
            tenants: settings.tenants.clone(),
            versions: VersionIndex::new(p.version_index_max_keys),
            presence: MeterPresence::new(p.version_index_max_keys),
            dlq,
            readings,
            dead,
            buffer: Buffer::default(),
            metrics,
            commits,
            shutdown,
            flush_interval: settings.flush_interval(),
            max_batch_rows: p.max_batch_rows,
            max_batch_bytes: p.max_batch_bytes,
            grace: Duration::from_secs(p.shutdown_grace_secs),
            backoff_initial: Duration::from_millis(p.retry_initial_backoff_ms),
            backoff_max: Duration::from_secs(p.retry_max_backoff_secs),
            stop_deadline: None,
            clock: settings.clock,
        })
    }

    /// Run until the Kafka thread reports [`Event::Stopped`] and the last flush is
    /// committed.
    ///
    /// # Errors
    /// [`RunError::Fenced`] (another process owns our partitions),
    /// [`RunError::GraceExceeded`] (storage unavailable at shutdown), internal errors.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) -> Result<(), RunError> {
        let tick = (self.flush_interval / 4).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.metrics.set_ready(true);
        loop {
            if self.shutdown.is_requested() && self.stop_deadline.is_none() {
                self.stop_deadline = Some(Instant::now() + self.grace);
            }
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Records(chunk)) => {
                        self.process(&chunk).await?;
                        if self.buffer.rows + self.buffer.dead.len() >= self.max_batch_rows
                            || self.buffer.bytes >= self.max_batch_bytes
                        {
                            self.flush().await?;
                        }
                    }
                    Some(Event::Assigned { partitions, reply }) => {
                        let answer = self.assign(&partitions).await;
                        let _ = reply.send(answer);
                    }
                    Some(Event::Revoked { partitions, reply }) => {
                        let result = self.revoke(&partitions).await;
                        let _ = reply.send(());
                        result?;
                    }
                    Some(Event::Stopped) | None => {
                        if self.stop_deadline.is_none() {
                            self.stop_deadline = Some(Instant::now() + self.grace);
                        }
                        let result = self.flush().await;
                        self.metrics.set_ready(false);
                        return result;
                    }
                },
                _ = ticker.tick() => {
                    let due = self.buffer.since.is_some_and(|t| t.elapsed() >= self.flush_interval);
                    if due {
                        self.flush().await?;
                    }
                }
            }
        }
    }

    /// Reload the open epochs' keys and the dead-letter keys once a minute (a new
    /// epoch's or day's key exists before it starts; a closed epoch's key is
    /// dropped). Failures keep the loaded keys.
    async fn refresh_epoch_keys(&mut self) {
        let Some((store, loaded)) = &self.keys else {
            return;
        };
        if loaded.elapsed() < Duration::from_secs(60) {
            return;
        }
        match load_keys(store, &self.tenants, self.clock.now(), &mut self.chain).await {
            Ok(()) => {
                if let Some((_, loaded)) = self.keys.as_mut() {
                    *loaded = Instant::now();
                }
            }
            Err(e) => {
                warn!(error = %e, "pseudonym keys not reloaded; keeping the loaded ones")
            }
        }
    }

    /// Check readings against this consent state (Elhub consent, upgrades).
    #[must_use]
    pub fn with_consent(mut self, handle: crate::privacy::consent::ConsentHandle) -> Self {
        self.consent = Some(handle);
        self
    }

    fn ctx(&self) -> OperatorContext {
        OperatorContext {
            now_micros: self.clock.now_micros(),
        }
    }

    /// Run the operator chain and the version rules over one chunk; buffer the
    /// result. On an error (the process then stops) the chunk and whatever is still
    /// buffered are counted as not stored: the next owner consumes them again.
    async fn process(&mut self, chunk: &crate::kafka::Chunk) -> Result<(), RunError> {
        let result = self.process_chunk(chunk).await;
        if result.is_err() {
            let lost = chunk.len() + self.buffer.records;
            self.buffer = Buffer::default();
            self.metrics
                .records_dropped
                .with_label_values(&[drop_reason::UNCOMMITTED_AT_EXIT])
                .inc_by(lost as u64);
            self.metrics.buffered_rows.set(0);
        }
        result
    }

    async fn process_chunk(&mut self, chunk: &crate::kafka::Chunk) -> Result<(), RunError> {
        let records = chunk.records();
        if records.is_empty() {
            return Ok(());
        }
        let ctx = self.ctx();
        self.metrics.records_consumed.inc_by(records.len() as u64);
        self.refresh_epoch_keys().await;
        if let Some(handle) = &self.consent {
            let view = handle.read().ok().and_then(|v| v.clone());
            self.chain.set_consent(view);
        }
        let out = self.chain.process(&records, &ctx)?;
        self.metrics
            .records_dropped
            .with_label_values(&[drop_reason::NO_CONSENT])
            .inc_by(out.no_consent as u64);
        self.metrics
            .records_dropped
            .with_label_values(&[drop_reason::EPOCH_CLOSED])
            .inc_by(out.epoch_closed as u64);
        for (name, rows) in out.rows_in {
            self.component(name, rows);
        }
        self.metrics.count_sensitive_removed(&out.sensitive);
        let rows = out.readings.num_rows();
        let classified = self.classify(&out.readings).await?;
        self.component("versions", rows);
        let m = &self.metrics;
        m.records_dropped
            .with_label_values(&[drop_reason::DUPLICATE])
            .inc_by(classified.duplicates as u64);
        m.records_dropped
            .with_label_values(&[drop_reason::SUPERSEDED])
            .inc_by(classified.superseded as u64);
        if let Some(flags) = classified
            .accepted
            .column_by_name("flags")
            .and_then(|c| c.as_string_opt::<i32>())
        {
            for f in flags.iter().flatten() {
                for flag in f.split(',') {
                    m.flags.with_label_values(&[flag]).inc();
                }
            }
        }
        let mut dead = out.dead_letters;
        if !classified.conflicts.is_empty() {
            let by_position: HashMap<(i32, i64), &RawRecord<'_>> = records
                .iter()
                .map(|r| ((r.partition, r.offset), r))
                .collect();
            for position in &classified.conflicts {
                if let Some(rec) = by_position.get(position) {
                    dead.push(self.chain.dead_letter(
                        rec,
                        Reason::VersionConflict,
                        "same key and version as an accepted reading, with another value",
                    ));
                }
            }
        }
        let kept = classified.accepted.num_rows() + dead.len();
        self.buffer.rows += classified.accepted.num_rows();
        self.buffer.readings.push(classified.accepted);
        self.buffer.dead.extend(dead);
        for r in &records {
            let e = self.buffer.offsets.entry(r.partition).or_insert(r.offset);
            *e = (*e).max(r.offset);
        }
        // Duplicates and superseded versions are accounted as drops already.
        self.buffer.records += kept;
        self.buffer.bytes += chunk.bytes();
        self.buffer.since.get_or_insert_with(Instant::now);
        self.metrics.buffered_rows.set(self.buffer.records as i64);
        Ok(())
    }

    /// Apply the version rules, loading what the batch needs to know first.
    ///
    /// For each (tenant, local date) the batch touches, the meters stored in that
    /// partition are read once ([`MeterPresence`]); a meter with no stored row
    /// needs nothing more. Only meters already stored (corrections, re-sends,
    /// restarts) have their stored keys read, so the cost per reading does not grow
    /// with the lake.
    async fn classify(&mut self, batch: &RecordBatch) -> Result<Classified, RunError> {
        let mut missing = self.versions.missing(batch)?;
        if !missing.is_empty() && self.versions.is_full() {
            // The index only forgets what is in the lake: commit what is buffered.
            // What the lake holds per partition (presence) stays true.
            self.flush().await?;
            self.versions.clear();
            missing = self.versions.missing(batch)?;
        }
        // Per tenant: the (date, meter) combinations of the batch not loaded.
        let mut by_tenant: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
        for (tenant, date, meter) in missing {
            by_tenant.entry(tenant).or_default().push((date, meter));
        }
        for (tenant, combinations) in by_tenant {
            let dates: Vec<i32> = combinations
                .iter()
                .map(|(d, _)| *d)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let unknown = self.presence.unknown(&tenant, &dates);
            if !unknown.is_empty() {
                let stored = self
                    .scan_with_retry(&["local_date", "meter"], partitions(&tenant, &unknown))
                    .await?;
                self.count_read("meters", &stored);
                self.presence.load(&tenant, &unknown, &stored)?;
            }
            let (stored, new): (Vec<_>, Vec<_>) = combinations
                .iter()
                .map(|(d, m)| (*d, m.as_str()))
                .partition(|(d, m)| self.presence.may_contain(&tenant, *d, m));
            self.versions.mark_empty(&tenant, &new);
            if stored.is_empty() {
                continue;
            }
            let dates: BTreeSet<i32> = stored.iter().map(|(d, _)| *d).collect();
            let meters: BTreeSet<&str> = stored.iter().map(|(_, m)| *m).collect();
            let dates: Vec<i32> = dates.into_iter().collect();
            let meters: Vec<&str> = meters.into_iter().collect();
            {
                use datafusion::prelude::{col, lit};
                // The date partitions are pruned; the meters are a filter on the
                // rows read (no meter statistics in the Delta log).
                let filter = partitions(&tenant, &dates)
                    .and(col("meter").in_list(meters.iter().map(|m| lit(*m)).collect(), false));
                let rows = self.scan_with_retry(&KEY_COLUMNS, filter).await?;
                self.count_read("keys", &rows);
                self.versions.load(&tenant, &dates, &meters, &rows)?;
            }
        }
        let classified = self.versions.classify(batch)?;
        self.presence.add(&classified.accepted)?;
        Ok(classified)
    }

    fn count_read(&self, read: &str, batches: &[RecordBatch]) {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        self.metrics
            .version_rows_read
            .with_label_values(&[read])
            .inc_by(rows as u64);
    }

    async fn scan_with_retry(
        &mut self,
        columns: &[&str],
        filter: datafusion::prelude::Expr,
    ) -> Result<Vec<RecordBatch>, RunError> {
        let mut backoff = self.backoff_initial;
        loop {
            match self.readings.scan(columns, filter.clone()).await {
                Ok(batches) => return Ok(batches),
                Err(e) if e.is_transient() => {
                    self.metrics
                        .storage_errors
                        .with_label_values(&["readings"])
                        .inc();
                    if let Some(deadline) = self.stop_deadline {
                        if Instant::now() >= deadline {
                            return Err(RunError::GraceExceeded);
                        }
                    }
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "storage error; retrying (reading stored versions)");
                    self.sleep(backoff).await;
                    if self.shutdown.is_requested() && self.stop_deadline.is_none() {
                        self.stop_deadline = Some(Instant::now() + self.grace);
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn component(&self, name: &str, rows: usize) {
        self.metrics
            .component_batches
            .with_label_values(&[name])
            .inc();
        self.metrics
            .component_rows
            .with_label_values(&[name])
            .inc_by(rows as u64);
    }

    async fn assign(&mut self, partitions: &[i32]) -> OffsetsReply {
        // Other processes may have written these partitions' meters: the version
        // index is rebuilt from the lake (after committing what is buffered).
        if let Err(e) = self.flush().await {
            return Err(e.to_string());
        }
        self.versions.clear();
        self.presence.clear();
        let mut backoff = self.backoff_initial;
        loop {
            let dead = self.dead.load_offsets(partitions).await;
            let readings = match dead {
                Ok(_) => self.readings.load_offsets(partitions).await,
                Err(e) => Err(e),
            };
            match readings {
                Ok(stored) => {
                    info!(?stored, "stored offsets loaded");
                    return Ok(stored);
                }
                Err(e) if e.is_transient() && !self.shutdown.is_requested() => {
                    warn!(error = %e, "storage error; retrying (reading stored offsets)");
                    self.metrics
                        .storage_errors
                        .with_label_values(&["readings"])
                        .inc();
                    self.sleep(backoff).await;
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn revoke(&mut self, partitions: &[i32]) -> Result<(), RunError> {
        // Commit what we have so the next owner starts where we stopped.
        let flushed = self.flush().await;
        let set: BTreeSet<i32> = partitions.iter().copied().collect();
        let discarded = self.buffer.discard(&set)?;
        if discarded > 0 {
            self.metrics
                .records_dropped
                .with_label_values(&[drop_reason::REVOKED])
                .inc_by(discarded as u64);
        }
        self.readings.release(partitions);
        self.dead.release(partitions);
        // Discarded rows are in the index (and presence) but not in the lake.
        self.versions.clear();
        self.presence.clear();
        flushed
    }

    async fn sleep(&self, d: Duration) {
        let d = match self.stop_deadline {
            Some(deadline) => d.min(deadline.saturating_duration_since(Instant::now())),
            None => d,
        };
        if self.shutdown.is_requested() {
            tokio::time::sleep(d).await;
            return;
        }
        // Wake early when shutdown is requested, to start the grace period.
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.requested() => {}
        }
    }

    /// Commit everything buffered. On a fence or an exhausted grace period the
    /// buffer is dropped (counted) and the error returned.
    async fn flush(&mut self) -> Result<(), RunError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        match self.commit(&buffer).await {
            Ok(()) => {
                self.metrics.buffered_rows.set(0);
                Ok(())
            }
            Err(e) => {
                let reason = match e {
                    RunError::Fenced(_) => drop_reason::FENCED,
                    _ => drop_reason::UNCOMMITTED_AT_EXIT,
                };
                self.metrics
                    .records_dropped
                    .with_label_values(&[reason])
                    .inc_by(buffer.records as u64);
                self.metrics.buffered_rows.set(0);
                Err(e)
            }
        }
    }

    async fn commit(&mut self, buffer: &Buffer) -> Result<(), RunError> {
        let started = Instant::now();
        let now = self.clock.now_micros();
        let mut batches = Vec::with_capacity(buffer.readings.len());
        let mut already = 0;
        for b in &buffer.readings {
            let (kept, dropped) = self.readings.filter_stored(b)?;
            already += dropped;
            if kept.num_rows() > 0 {
                batches.push(kept);
            }
        }
        let dl = dead_letter_batch(&self.topic, &buffer.dead, now);
        let (dl, dl_dropped) = self.dead.filter_stored(&dl)?;
        already += dl_dropped;

        // Dead letters first (only when there are any), then readings with the
        // offsets: the readings table's offsets decide where consumption resumes.
        if dl.num_rows() > 0 {
            self.publish_with_retry(&dl).await?;
            self.append_with_retry(true, std::slice::from_ref(&dl), &buffer.offsets)
                .await?;
        }
        let outcome_rows = self
            .append_with_retry(false, &batches, &buffer.offsets)
            .await?;

        // Account only after both commits landed.
        let m = &self.metrics;
        m.records_dropped
            .with_label_values(&[drop_reason::ALREADY_STORED])
            .inc_by(already as u64);
        m.records_written
            .with_label_values(&["readings"])
            .inc_by(outcome_rows as u64);
        m.records_written
            .with_label_values(&["dead_letters"])
            .inc_by(dl.num_rows() as u64);
        let mut by_reason: HashMap<&str, u64> = HashMap::new();
        for reason in dl
            .column_by_name("reason")
            .map(|c| c.as_string::<i32>())
            .into_iter()
            .flatten()
            .flatten()
        {
            *by_reason.entry(reason).or_default() += 1;
        }
        for (reason, n) in by_reason {
            m.dead_letters.with_label_values(&[reason]).inc_by(n);
        }
        m.flush_rows.observe(outcome_rows as f64);
        m.last_commit_time
            // Wall time on purpose: dashboards compare it with Prometheus' time().
            .set(chrono::Utc::now().timestamp() as f64);
        debug!(
            rows = outcome_rows,
            dead_letters = dl.num_rows(),
            already_stored = already,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "flushed"
        );
        let _ = self
            .commits
            .send(buffer.offsets.iter().map(|(p, o)| (*p, *o)).collect());
        Ok(())
    }

    /// Publish dead letters to the dead-letter topic, if configured, and wait until
    /// the broker has them. Retried like storage errors; at least once (a crash
    /// between publishing and the lake commit publishes again: deduplicate by key,
    /// the source position).
    async fn publish_with_retry(&mut self, dl: &RecordBatch) -> Result<(), RunError> {
        let Some((producer, topic)) = &self.dlq else {
            return Ok(());
        };
        let rows = DeadLetterColumns::of(dl)?;
        // The send futures borrow these until delivery.
        let keys: Vec<String> = (0..dl.num_rows())
            .map(|i| {
                format!(
                    "{}:{}:{}",
                    rows.src_topic.value(i),
                    rows.partition.value(i),
                    rows.offset.value(i)
                )
            })
            .collect();
        let positions: Vec<(String, String)> = (0..dl.num_rows())
            .map(|i| {
                (
                    rows.partition.value(i).to_string(),
                    rows.offset.value(i).to_string(),
                )
            })
            .collect();
        let mut backoff = self.backoff_initial;
        loop {
            let mut pending = Vec::with_capacity(dl.num_rows());
            for i in 0..dl.num_rows() {
                let key = &keys[i];
                let (p, o) = &positions[i];
                let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
                    .key(key.as_str())
                    .headers(rows.headers(i, p, o));
                if rows.payload.is_valid(i) {
                    record = record.payload(rows.payload.value(i));
                }
                pending.push(producer.send(record, Duration::from_secs(30)));
            }
            let results = futures::future::join_all(pending).await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            if failed == 0 {
                self.metrics
                    .dead_letters_published
                    .inc_by(dl.num_rows() as u64);
                return Ok(());
            }
            self.metrics.kafka_errors.inc_by(failed as u64);
            if let Some(deadline) = self.stop_deadline {
                if Instant::now() >= deadline {
                    return Err(RunError::GraceExceeded);
                }
            }
            warn!(topic = %topic, failed, retry_in_ms = backoff.as_millis() as u64, "cannot publish dead letters; retrying");
            self.sleep(backoff).await;
            if self.shutdown.is_requested() && self.stop_deadline.is_none() {
                self.stop_deadline = Some(Instant::now() + self.grace);
            }
            backoff = (backoff * 2).min(self.backoff_max);
        }
    }

    async fn append_with_retry(
        &mut self,
        dead: bool,
        batches: &[RecordBatch],
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<usize, RunError> {
        let name = if dead { "dead_letters" } else { "readings" };
        let mut backoff = self.backoff_initial;
        let started = Instant::now();
        loop {
            let table = if dead {
                &mut self.dead
            } else {
                &mut self.readings
            };
            match table.append(batches, offsets).await {
                Ok(outcome) => {
                    if outcome.version.is_some() {
                        self.metrics.commits.with_label_values(&[name]).inc();
                        self.metrics
                            .commit_duration
                            .with_label_values(&[name])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    return Ok(outcome.rows);
                }
                Err(SinkError::Fenced { partitions, .. }) => {
                    error!(
                        table = name,
                        ?partitions,
                        "partitions were written by another process"
                    );
                    return Err(RunError::Fenced(partitions));
                }
                Err(e) if e.is_transient() => {
                    self.metrics.storage_errors.with_label_values(&[name]).inc();
                    if let Some(deadline) = self.stop_deadline {
                        if Instant::now() >= deadline {
                            return Err(RunError::GraceExceeded);
                        }
                    }
                    warn!(table = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "storage error; retrying");
                    self.sleep(backoff).await;
                    if self.shutdown.is_requested() && self.stop_deadline.is_none() {
                        self.stop_deadline = Some(Instant::now() + self.grace);
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Load the keys of every rotating public tenant's open epochs and today's and
/// tomorrow's dead-letter keys into `chain` (created when missing).
async fn load_keys(
    store: &crate::privacy::keys::KeyStore,
    tenants: &meterline_operators::TenantRegistry,
    now: chrono::DateTime<chrono::Utc>,
    chain: &mut Chain,
) -> Result<(), meterline_sinks::SinkError> {
    let epochs = crate::privacy::keys::open_epoch_keys(store, tenants, now).await?;
    let days = crate::privacy::keys::open_dead_letter_keys(store, now).await?;
    for (tenant, keys) in epochs {
        chain.set_epoch_keys(&tenant, &keys);
    }
    chain.set_dead_letter_keys(&days);
    Ok(())
}
