//! The Kafka side: one OS thread owns a librdkafka consumer in a consumer group and
//! hands records to the operators in chunks over a bounded channel.
//!
//! - Offsets live in the lake. On every assignment the thread asks the pipeline for
//!   the stored offsets and assigns the partitions at `stored + 1` (or the
//!   beginning); Kafka's group offsets are committed only for lag monitoring.
//! - On revocation the thread first hands over what it holds, then waits until the
//!   pipeline has committed or dropped the partitions' buffered records; only then
//!   does the group move them to another process.
//! - When the channel is full the thread waits for room without polling: librdkafka
//!   stops fetching when its prefetch queue (`queued.max.messages.kbytes`) is full
//!   and keeps the group membership alive from its own threads (up to
//!   `max.poll.interval.ms`, after which the group rebalances and the partitions
//!   resume from the lake's offsets).
//! - A record delivered again at an offset already handed over is skipped
//!   (`meterline_kafka_redelivered_total`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meterline_operators::RawRecord;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tracing::{debug, info, warn};

use crate::config::{KafkaConfig, MAX_CHUNK_BYTES};
use crate::metrics::Metrics;

/// Records handed over together; payloads share one buffer.
#[derive(Debug, Default)]
pub struct Chunk {
    data: Vec<u8>,
    entries: Vec<(i32, i64, Option<Range<usize>>)>,
    /// `meterline-replay` header values, by entry index (rare: replays only).
    replay_tags: Vec<(usize, Vec<u8>)>,
}

/// The header `meterline dlq replay` sets on re-published dead letters.
pub const REPLAY_HEADER: &str = "meterline-replay";

impl Chunk {
    /// An empty chunk with room for `records` records of `bytes` payload bytes in
    /// all (sized from the chunk before it, so a chunk's buffer does not grow by
    /// copying as it fills).
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(records),
            replay_tags: Vec::new(),
        }
    }

    pub fn push(&mut self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        let range = payload.map(|p| {
            let start = self.data.len();
            self.data.extend_from_slice(p);
            start..self.data.len()
        });
        self.entries.push((partition, offset, range));
    }

    /// Attach a `meterline-replay` tag to the record pushed last.
    pub fn tag_last(&mut self, tag: &[u8]) {
        if let Some(last) = self.entries.len().checked_sub(1) {
            self.replay_tags.push((last, tag.to_vec()));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Borrowed views for the decoder.
    pub fn records(&self) -> Vec<RawRecord<'_>> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, (partition, offset, range))| RawRecord {
                partition: *partition,
                offset: *offset,
                payload: range.as_ref().map(|r| &self.data[r.clone()]),
                // Tags are pushed in entry order: binary search.
                replay_tag: self
                    .replay_tags
                    .binary_search_by_key(&i, |(at, _)| *at)
                    .ok()
                    .map(|j| self.replay_tags[j].1.as_slice()),
            })
            .collect()
    }
}

/// Stored offsets per partition (None: nothing stored yet), or why they are unknown.
pub type OffsetsReply = Result<HashMap<i32, Option<i64>>, String>;

/// What the Kafka thread tells the pipeline, in order.
#[derive(Debug)]
pub enum Event {
    Records(Chunk),
    /// The group assigned these partitions: reply with their stored offsets.
    Assigned {
        partitions: Vec<i32>,
        reply: SyncSender<OffsetsReply>,
    },
    /// The group takes these partitions away: commit or drop their buffered
    /// records, then reply.
    Revoked {
        partitions: Vec<i32>,
        reply: SyncSender<()>,
    },
    /// Shutdown: nothing more will come; flush and reply with nothing.
    Stopped,
}

/// What a [`KafkaSource`] consumes, and which gauges it keeps.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub topic: String,
    pub group: String,
    /// The input's name (its metric label, see `crate::inputs`); None: the
    /// readings topic (`meterline_consumer_lag_records`, `meterline_consumer_paused`).
    pub input: Option<&'static str>,
}

impl Subscription {
    /// The readings topic in `kafka.group_id`.
    #[must_use]
    pub fn readings(kafka: &KafkaConfig) -> Self {
        Self {
            topic: kafka.readings_topic.clone(),
            group: kafka.group_id.clone(),
            input: None,
        }
    }

    fn lag(&self, metrics: &Metrics, partition: i32) -> prometheus::IntGauge {
        let partition = partition.to_string();
        match self.input {
            None => metrics.consumer_lag.with_label_values(&[&partition]),
            Some(input) => metrics.input_lag.with_label_values(&[input, &partition]),
        }
    }

    /// Drop a revoked partition's lag series.
    fn forget_lag(&self, metrics: &Metrics, partition: i32) {
        let partition = partition.to_string();
        // An error only says the series did not exist yet.
        let _ = match self.input {
            None => metrics.consumer_lag.remove_label_values(&[&partition]),
            Some(input) => metrics.input_lag.remove_label_values(&[input, &partition]),
        };
    }

    fn paused(&self, metrics: &Metrics) -> prometheus::IntGauge {
        match self.input {
            None => metrics.consumer_paused.clone(),
            Some(input) => metrics.input_paused.with_label_values(&[input]),
        }
    }
}

struct Ctx {
    subscription: Subscription,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
    pending: Mutex<Chunk>,
    /// Per assigned partition: the next offset to hand over (None: not known yet,
    /// the partition starts at the beginning).
    next: Mutex<HashMap<i32, Option<i64>>>,
}

impl ClientContext for Ctx {
    /// librdkafka statistics (every `statistics.interval.ms`): per-partition lag of
    /// the committed position (which follows the lake commits) behind the high
    /// watermark.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.subscription.topic) else {
            return;
        };
        for (partition, p) in &topic.partitions {
            if *partition < 0 || !p.desired || p.hi_offset < 0 {
                continue;
            }
            let position = if p.committed_offset >= 0 {
                p.committed_offset
            } else {
                p.lo_offset.max(0)
            };
            self.subscription
                .lag(&self.metrics, *partition)
                .set((p.hi_offset - position).max(0));
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        match super::client::hint(reason) {
            Some(hint) => warn!(%error, reason, hint, "kafka client error"),
            None => warn!(%error, reason, "kafka client error"),
        }
    }
}

impl Ctx {
    /// Record that `offset` of `partition` is handed over; false if it was already
    /// (the broker delivered it again), so it is skipped.
    fn advance(&self, partition: i32, offset: i64) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let slot = next.entry(partition).or_insert(None);
        if slot.is_some_and(|n| offset < n) {
            return false;
        }
        *slot = Some(offset + 1);
        true
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.subscription.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }

    /// Hand over what the thread holds (records of partitions about to be revoked
    /// must reach the pipeline before the revocation does).
    fn hand_over_pending(&self) {
        let chunk = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !chunk.is_empty() {
            let _ = self.tx.blocking_send(Event::Records(chunk));
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions = self.partitions(tpl);
                if self.stop.load(Ordering::SeqCst) {
                    let _ = consumer.assign(&TopicPartitionList::new());
                    return;
                }
                let (reply, answer) = std::sync::mpsc::sync_channel(1);
                let asked = self
                    .tx
                    .blocking_send(Event::Assigned {
                        partitions: partitions.clone(),
                        reply,
                    })
                    .is_ok();
                let stored = match answer.recv() {
                    Ok(Ok(stored)) if asked => stored,
                    other => {
                        // The pipeline is gone or could not read the lake (it retries
                        // storage errors until shutdown): take nothing.
                        warn!(?partitions, error = ?other.err(), "assignment not taken");
                        let _ = consumer.assign(&TopicPartitionList::new());
                        return;
                    }
                };
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                next.clear();
                for p in &partitions {
                    let start = stored.get(p).copied().flatten().map(|o| o + 1);
                    next.insert(*p, start);
                    let offset = match start {
                        Some(o) => Offset::Offset(o),
                        None => Offset::Beginning,
                    };
                    if let Err(e) = tpl.set_partition_offset(&self.subscription.topic, *p, offset) {
                        warn!(partition = p, error = %e, "cannot set start offset");
                    }
                }
                drop(next);
                info!(
                    ?partitions,
                    "partitions assigned; resuming from offsets stored in the lake"
                );
                if let Err(e) = consumer.assign(tpl) {
                    warn!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions = self.partitions(tpl);
                if !self.stop.load(Ordering::SeqCst) {
                    self.hand_over_pending();
                    let (reply, done) = std::sync::mpsc::sync_channel(1);
                    if self
                        .tx
                        .blocking_send(Event::Revoked {
                            partitions: partitions.clone(),
                            reply,
                        })
                        .is_ok()
                    {
                        let _ = done.recv();
                    }
                }
                info!(?partitions, "partitions revoked");
                // Another member reports their lag now: a stale series here would keep
                // the lag alerts firing after a rebalance.
                for p in &partitions {
                    self.subscription.forget_lag(&self.metrics, *p);
                }
                let _ = consumer.unassign();
            }
            other => {
                warn!(error = ?other, "rebalance error; dropping assignment");
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            debug!(error = %e, "group offset commit (monitoring only) failed");
        }
    }
}

/// Handle to the Kafka thread.
pub struct KafkaSource {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaSource {
    /// Start the consumer thread of `subscription`.
    ///
    /// # Errors
    /// librdkafka refuses the configuration (for example an unknown property).
    pub fn start(
        kafka: &KafkaConfig,
        subscription: Subscription,
        chunk_max_records: usize,
        tx: Sender<Event>,
        commits: Receiver<Vec<(i32, i64)>>,
        metrics: Metrics,
        grace: Duration,
    ) -> KafkaResult<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let topic = subscription.topic.clone();
        let cc = super::client::lake_offsets_consumer(kafka, &subscription.group);
        let ctx = Ctx {
            subscription,
            tx: tx.clone(),
            stop: stop.clone(),
            metrics: metrics.clone(),
            pending: Mutex::new(Chunk::default()),
            next: Mutex::new(HashMap::new()),
        };
        let consumer: BaseConsumer<Ctx> = cc.create_with_context(ctx)?;
        consumer.subscribe(&[&topic])?;
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(match consumer.context().subscription.input {
                None => "kafka-consumer".into(),
                Some(input) => format!("kafka-{input}"),
            })
            .spawn(move || {
                poll_loop(
                    &consumer,
                    &topic,
                    chunk_max_records,
                    &tx,
                    &commits,
                    &metrics,
                    &thread_stop,
                );
                // Final group commits for monitoring, then leave the group.
                let deadline = Instant::now() + grace;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match commits.recv_timeout(left) {
                        Ok(offsets) => commit(&consumer, &topic, &offsets, CommitMode::Sync),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
                drop(consumer);
            })
            .expect("spawn kafka thread");
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Ask the thread to stop: it hands over what it holds, sends [`Event::Stopped`],
    /// makes the final group commits and leaves the group.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// A handle that can stop the thread from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Wait for the thread to finish.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stops a [`KafkaSource`] (see [`KafkaSource::stop`]).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn commit(consumer: &BaseConsumer<Ctx>, topic: &str, offsets: &[(i32, i64)], mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(o + 1));
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            debug!(error = %e, "group offset commit (monitoring only) failed");
        }
    }
}

fn poll_loop(
    consumer: &BaseConsumer<Ctx>,
    topic: &str,
    chunk_max_records: usize,
    tx: &Sender<Event>,
    commits: &Receiver<Vec<(i32, i64)>>,
    metrics: &Metrics,
    stop: &AtomicBool,
) {
    const MAX_CHUNK_AGE: Duration = Duration::from_millis(50);
    /// Records polled between two looks at the clock while records are waiting
    /// (reading the clock per record was 3 % of the service's CPU).
    const CLOCK_EVERY: u32 = 256;
    let ctx = consumer.context();
    let paused = ctx.subscription.paused(metrics);
    let mut chunk_started = Instant::now();
    let mut since_clock = 0u32;
    let mut idle = false;
    while !stop.load(Ordering::SeqCst) {
        while let Ok(offsets) = commits.try_recv() {
            commit(consumer, topic, &offsets, CommitMode::Async);
        }
        // Hand the pending chunk over when it is full or old enough.
        let chunk = {
            let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
            let look = idle || since_clock >= CLOCK_EVERY;
            if look {
                since_clock = 0;
            }
            let due = pending.len() >= chunk_max_records
                || pending.bytes() >= MAX_CHUNK_BYTES
                || (look && !pending.is_empty() && chunk_started.elapsed() >= MAX_CHUNK_AGE);
            due.then(|| {
                let next = Chunk::with_capacity(pending.len(), pending.bytes());
                std::mem::replace(&mut *pending, next)
            })
        };
        if let Some(chunk) = chunk {
            match tx.try_send(Event::Records(chunk)) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    // Backpressure: wait without polling. librdkafka stops fetching
                    // once its prefetch queue is full and keeps heartbeating from its
                    // own threads; pausing partitions instead made librdkafka
                    // re-fetch and, against some brokers, deliver a partition's
                    // records out of order after resume.
                    debug!("operators are behind; consumption waits");
                    paused.set(1);
                    let sent = tx.blocking_send(event);
                    paused.set(0);
                    if sent.is_err() {
                        return;
                    }
                }
                Err(TrySendError::Closed(_)) => return,
            }
            chunk_started = Instant::now();
        }
        // Records waiting are taken without a wait; only when none is waiting
        // does the thread wait (up to 20 ms) and then look at the clock, so a
        // trickle of records is handed over within MAX_CHUNK_AGE.
        let mut polled = consumer.poll(Duration::ZERO);
        idle = polled.is_none();
        if idle {
            polled = consumer.poll(Duration::from_millis(20));
        }
        since_clock += 1;
        match polled {
            Some(Ok(msg)) => {
                let (partition, offset) = (msg.partition(), msg.offset());
                if !ctx.advance(partition, offset) {
                    // Delivered again at an offset already handed over.
                    metrics.kafka_redelivered.inc();
                    continue;
                }
                let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.is_empty() {
                    chunk_started = Instant::now();
                }
                let payload = msg.payload();
                pending.push(partition, offset, payload);
                // Only a possible replay needs its tag: other records skip
                // librdkafka's header parsing (3 % of the CPU).
                let may_be_replay = payload.is_some_and(meterline_operators::decode::may_be_replay);
                if let Some(headers) = may_be_replay.then(|| msg.headers()).flatten() {
                    if let Some(tag) = headers
                        .iter()
                        .find(|h| h.key == REPLAY_HEADER)
                        .and_then(|h| h.value)
                    {
                        pending.tag_last(tag);
                    }
                }
            }
            Some(Err(e)) => {
                metrics.kafka_errors.inc();
                warn!(error = %e, "kafka poll error");
            }
            None => {}
        }
    }
    ctx.hand_over_pending();
    let _ = tx.blocking_send(Event::Stopped);
}
