//! One input's loop: chunks from its Kafka thread are decoded by its contract,
//! buffered, and committed to its table and `dead_letters` with their offsets.
//!
//! ```text
//!  Event::Records  ─▶ decode (price/v1 | meter-profile/v1 | observation/v1) ─▶ buffer ──(size or timer)──▶ flush
//!  Event::Assigned ─▶ read stored offsets from the lake ─▶ reply (consumer seeks)
//!  Event::Revoked  ─▶ flush ─▶ forget partitions ─▶ reply
//!  Event::Stopped  ─▶ final flush ─▶ done
//! ```
//!
//! Storage errors are retried with capped exponential backoff while nothing more is
//! consumed (the channel fills and the Kafka thread waits), as for readings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use meterline_operators::inputs::InputContext;
use meterline_operators::{DeadLetter, TenantRegistry};
use meterline_sinks::{dead_letter_batch, dead_letters_spec, Lake, OffsetTable, SinkError};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::Input;
use crate::config::Settings;
use crate::ingest::{without_partitions, RunError};
use crate::kafka::{Event, KafkaSource, OffsetsReply, Subscription};
use crate::metrics::{input_outcome, Metrics};
use crate::shutdown::Shutdown;

/// Start `input`'s Kafka thread and runner; return when shutdown has been handled
/// (Ok) or the runner stopped on an error.
pub(super) async fn run_once(
    settings: &Settings,
    input: Input,
    metrics: &Metrics,
    shutdown: &Arc<Shutdown>,
) -> Result<(), RunError> {
    let topic = input.topic(&settings.inputs).to_owned();
    let (commits_tx, commits_rx) = std::sync::mpsc::channel();
    let runner = InputRunner::new(
        settings,
        input,
        metrics.clone(),
        commits_tx,
        shutdown.clone(),
    )
    .await?;
    let (tx, rx) = mpsc::channel(settings.pipeline.channel_capacity);
    let grace = Duration::from_secs(settings.pipeline.shutdown_grace_secs);
    let subscription = Subscription {
        topic,
        group: format!("{}.{}", settings.kafka.group_id, input.name()),
        input: Some(input.name()),
    };
    let source = KafkaSource::start(
        &settings.kafka,
        subscription,
        settings.pipeline.chunk_max_records,
        tx,
        commits_rx,
        metrics.clone(),
        grace,
    )
    .map_err(|e| RunError::Config(format!("kafka: {e}")))?;
    let stopper = {
        let handle = source.stop_handle();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.requested().await;
            handle.stop();
        })
    };
    let result = runner.run(rx).await;
    source.stop();
    stopper.abort();
    let _ = tokio::task::spawn_blocking(move || source.join()).await;
    result
}

#[derive(Default)]
struct Buffer {
    batches: Vec<RecordBatch>,
    dead: Vec<DeadLetter>,
    /// Highest offset consumed per partition since the last flush.
    offsets: BTreeMap<i32, i64>,
    records: usize,
    since: Option<Instant>,
}

impl Buffer {
    /// Remove everything buffered for `partitions`; returns how many records that was.
    fn discard(&mut self, partitions: &BTreeSet<i32>) -> Result<usize, RunError> {
        let before: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        self.batches = self
            .batches
            .iter()
            .map(|b| without_partitions(b, partitions))
            .collect::<Result<_, _>>()?;
        let after: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        let dead = self.dead.len();
        self.dead.retain(|d| !partitions.contains(&d.partition));
        let removed = before - after + dead - self.dead.len();
        self.offsets.retain(|p, _| !partitions.contains(p));
        self.records -= removed;
        Ok(removed)
    }
}

/// One input's pipeline: its decoder and its two offset tables.
pub struct InputRunner {
    input: Input,
    topic: String,
    tenants: TenantRegistry,
    data: OffsetTable,
    dead: OffsetTable,
    buffer: Buffer,
    metrics: Metrics,
    commits: std::sync::mpsc::Sender<Vec<(i32, i64)>>,
    shutdown: Arc<Shutdown>,
    flush_interval: Duration,
    max_batch_rows: usize,
    max_message_bytes: usize,
    grace: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    stop_deadline: Option<Instant>,
    clock: meterline_operators::Clock,
}

impl InputRunner {
    /// Open (or create) the input's table and `dead_letters`.
    ///
    /// # Errors
    /// Lake configuration and storage errors.
    pub async fn new(
        settings: &Settings,
        input: Input,
        metrics: Metrics,
        commits: std::sync::mpsc::Sender<Vec<(i32, i64)>>,
        shutdown: Arc<Shutdown>,
    ) -> Result<Self, RunError> {
        let lake = Lake::new(&settings.lake)?;
        let topic = input.topic(&settings.inputs).to_owned();
        let data = OffsetTable::open_or_create(&lake, input.spec(), &topic).await?;
        let dead = OffsetTable::open_or_create(&lake, dead_letters_spec(), &topic).await?;
        let p = &settings.pipeline;
        Ok(Self {
            input,
            topic,
            tenants: settings.tenants.clone(),
            data,
            dead,
            buffer: Buffer::default(),
            metrics,
            commits,
            shutdown,
            flush_interval: settings.flush_interval(),
            max_batch_rows: p.max_batch_rows,
            max_message_bytes: p.max_message_bytes,
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
    /// [`RunError::Fenced`], [`RunError::GraceExceeded`], storage errors that are
    /// not transient.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) -> Result<(), RunError> {
        let tick = (self.flush_interval / 4).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.shutdown.is_requested() && self.stop_deadline.is_none() {
                self.stop_deadline = Some(Instant::now() + self.grace);
            }
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Records(chunk)) => {
                        self.process(&chunk);
                        if self.buffer.records >= self.max_batch_rows {
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
                        return self.flush().await;
                    }
                },
                _ = ticker.tick() => {
                    if self.buffer.since.is_some_and(|t| t.elapsed() >= self.flush_interval) {
                        self.flush().await?;
                    }
                }
            }
        }
    }

    fn count(&self, outcome: &str, n: usize) {
        if n > 0 {
            self.metrics
                .input_records
                .with_label_values(&[self.input.name(), outcome])
                .inc_by(n as u64);
        }
    }

    /// Decode one chunk and buffer its rows, dead letters and offsets.
    fn process(&mut self, chunk: &crate::kafka::Chunk) {
        let records = chunk.records();
        if records.is_empty() {
            return;
        }
        self.metrics
            .input_consumed
            .with_label_values(&[self.input.name()])
            .inc_by(records.len() as u64);
        let ctx = InputContext {
            ingested_at_micros: self.clock.now_micros(),
            max_message_bytes: self.max_message_bytes,
        };
        let out = self.input.decode(&records, &ctx, &self.tenants);
        if out.batch.num_rows() > 0 {
            self.buffer.batches.push(out.batch);
        }
        self.buffer.dead.extend(out.dead_letters);
        for r in &records {
            let slot = self.buffer.offsets.entry(r.partition).or_insert(r.offset);
            *slot = (*slot).max(r.offset);
        }
        self.buffer.records += records.len();
        self.buffer.since.get_or_insert_with(Instant::now);
    }

    async fn assign(&mut self, partitions: &[i32]) -> OffsetsReply {
        if let Err(e) = self.flush().await {
            return Err(e.to_string());
        }
        let mut backoff = self.backoff_initial;
        loop {
            let stored = match self.dead.load_offsets(partitions).await {
                Ok(_) => self.data.load_offsets(partitions).await,
                Err(e) => Err(e),
            };
            match stored {
                Ok(stored) => {
                    info!(input = self.input.name(), ?stored, "stored offsets loaded");
                    return Ok(stored);
                }
                Err(e) if e.is_transient() && !self.shutdown.is_requested() => {
                    self.storage_error(self.data.name(), &e, backoff);
                    crate::shutdown::pause(backoff, &self.shutdown).await;
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn revoke(&mut self, partitions: &[i32]) -> Result<(), RunError> {
        let flushed = self.flush().await;
        let set: BTreeSet<i32> = partitions.iter().copied().collect();
        let discarded = self.buffer.discard(&set)?;
        self.count(input_outcome::REVOKED, discarded);
        self.data.release(partitions);
        self.dead.release(partitions);
        flushed
    }

    /// Commit everything buffered. On a fence or an exhausted grace period the
    /// buffer is dropped (counted) and the error returned.
    async fn flush(&mut self) -> Result<(), RunError> {
        if self.buffer.offsets.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.commit(&buffer).await;
        if let Err(e) = &result {
            let outcome = match e {
                RunError::Fenced(_) => input_outcome::FENCED,
                _ => input_outcome::UNCOMMITTED_AT_EXIT,
            };
            self.count(outcome, buffer.records);
        }
        result
    }

    async fn commit(&mut self, buffer: &Buffer) -> Result<(), RunError> {
        let mut batches = Vec::with_capacity(buffer.batches.len());
        let mut already = 0;
        for b in &buffer.batches {
            let (kept, dropped) = self.data.filter_stored(b)?;
            already += dropped;
            if kept.num_rows() > 0 {
                batches.push(kept);
            }
        }
        let dl = dead_letter_batch(&self.topic, &buffer.dead, self.clock.now_micros());
        let (dl, dl_dropped) = self.dead.filter_stored(&dl)?;
        already += dl_dropped;
        // Dead letters first (only when there are any), then the rows with the
        // offsets: the data table's offsets decide where consumption resumes.
        if dl.num_rows() > 0 {
            self.append(true, std::slice::from_ref(&dl), &buffer.offsets)
                .await?;
        }
        let written = self.append(false, &batches, &buffer.offsets).await?;

        // Account only after both commits landed.
        self.count(input_outcome::ALREADY_STORED, already);
        self.count(input_outcome::WRITTEN, written);
        self.count(input_outcome::DEAD_LETTERED, dl.num_rows());
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
            self.metrics
                .input_dead_letters
                .with_label_values(&[self.input.name(), reason])
                .inc_by(n);
        }
        debug!(
            input = self.input.name(),
            rows = written,
            dead_letters = dl.num_rows(),
            already_stored = already,
            "flushed"
        );
        let _ = self
            .commits
            .send(buffer.offsets.iter().map(|(p, o)| (*p, *o)).collect());
        Ok(())
    }

    /// Wait `backoff` before a retry, at most until the grace period ends; a
    /// shutdown requested meanwhile starts the grace period.
    async fn wait(&mut self, backoff: Duration) {
        let wait = match self.stop_deadline {
            Some(deadline) => backoff.min(deadline.saturating_duration_since(Instant::now())),
            None => backoff,
        };
        if self.shutdown.is_requested() {
            tokio::time::sleep(wait).await;
        } else if !crate::shutdown::pause(wait, &self.shutdown).await {
            self.stop_deadline = Some(Instant::now() + self.grace);
        }
    }

    fn storage_error(&self, table: &str, e: &SinkError, backoff: Duration) {
        self.metrics
            .storage_errors
            .with_label_values(&[table])
            .inc();
        warn!(input = self.input.name(), table, error = %e,
            retry_in_ms = backoff.as_millis() as u64, "storage error; retrying");
    }

    /// Append to the data table (or `dead_letters`) with the offsets, retrying
    /// storage errors until the grace period after shutdown ends.
    async fn append(
        &mut self,
        dead: bool,
        batches: &[RecordBatch],
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<usize, RunError> {
        let mut backoff = self.backoff_initial;
        let started = Instant::now();
        loop {
            let table = if dead { &mut self.dead } else { &mut self.data };
            let name = table.name();
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
                        input = self.input.name(),
                        table = name,
                        ?partitions,
                        "partitions were written by another process"
                    );
                    return Err(RunError::Fenced(partitions));
                }
                Err(e) if e.is_transient() => {
                    if self
                        .stop_deadline
                        .is_some_and(|deadline| Instant::now() >= deadline)
                    {
                        return Err(RunError::GraceExceeded);
                    }
                    self.storage_error(name, &e, backoff);
                    self.wait(backoff).await;
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
