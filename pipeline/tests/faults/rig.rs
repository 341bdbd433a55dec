//! One test's private infrastructure: a tansu broker, an S3 server (moto), a topic,
//! a bucket, and `meterline run` child processes configured for them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use chrono::NaiveDate;
use meterline::dev::generator::GeneratorSpec;
use meterline::dev::testkit::{unique_name, Broker, Process, S3Server, Tools};
use meterline_operators::decimal::{format_thousandths, parse_thousandths};
use meterline_sinks::LakeConfig;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

pub const KEY_HEX: &str = "5f2a9c0e4b7d1836a0c9e2f4b6d8a1c3e5f7091b2d4f6a8c0e1b3d5f7a9c2e4d";

/// Scenarios run one at a time: each starts its own broker, storage and up to two
/// pipelines, which is what two cores can carry without starving heartbeats.
/// (An async mutex: a failed scenario does not poison the others.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a scenario may take from its turn to its last check, unless it asks
/// for another cap ([`serial_capped`]). Every wait of the rig (log lines, rows,
/// conditions) ends at the cap whatever timeout it asks for, so a failing
/// scenario reports within minutes instead of adding up its waits.
pub const SCENARIO_CAP: Duration = Duration::from_secs(5 * 60);

/// The running scenario's deadline (one scenario runs at a time).
static DEADLINE: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Wait for this scenario's turn; its [`SCENARIO_CAP`] starts now.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    serial_capped(SCENARIO_CAP).await
}

/// [`serial`] with another overall cap (for the longest scenarios).
pub async fn serial_capped(cap: Duration) -> tokio::sync::MutexGuard<'static, ()> {
    let turn = SERIAL.lock().await;
    *DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + cap);
    turn
}

/// The running scenario's deadline (an hour from now outside a scenario).
pub fn scenario_deadline() -> Instant {
    DEADLINE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
}

/// When a wait of `timeout` must end, and a note for its failure message when
/// the scenario's cap ends it first.
fn wait_deadline(timeout: Duration) -> (Instant, &'static str) {
    let wanted = Instant::now() + timeout;
    let cap = scenario_deadline();
    if cap < wanted {
        (cap, " (the scenario's overall time cap)")
    } else {
        (wanted, "")
    }
}

/// The consumer session timeout of [`Rig::config`]: the broker drops a member
/// that has not heartbeated for this long.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// When the next run of a killed process's consumer groups may start: once the broker
/// has given up on the dead member (its session timed out; tansu notes a heartbeat when
/// it gets to it, up to a second or two late under load), as after a supervisor's restart
/// delay. Joined sooner, the next run finds a group that still counts the dead member,
/// usually as its leader, and tansu 0.6 now and then completes that group from the new
/// member's SyncGroup as a follower: no partitions, and no rebalance ever.
pub fn restart_after_kill() -> tokio::time::Instant {
    tokio::time::Instant::now() + SESSION_TIMEOUT + Duration::from_secs(2)
}

/// What was produced, to compare the lake against.
#[derive(Debug, Default)]
pub struct Produced {
    /// Every (partition, offset) the broker acknowledged.
    pub positions: BTreeSet<(i32, i64)>,
    pub good: u64,
    pub bad: u64,
    /// Exact sum of the good readings' values, in thousandths.
    pub sum: i128,
}

impl Produced {
    pub fn total(&self) -> u64 {
        self.good + self.bad
    }
}

pub struct Rig {
    pub broker: Broker,
    pub s3: S3Server,
    pub topic: String,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    pub produced: Produced,
}

/// `count` generated messages (good first, then `bad` bad ones spread through).
pub fn messages(good: usize, bad: usize, seed: u64) -> Vec<meterline::dev::generator::Message> {
    // 42 readings per meter-day on average (a quarter of the meters are PT15M).
    let days = 12;
    let meters = good.div_ceil(days * 40);
    let spec = GeneratorSpec {
        meters,
        first_day: NaiveDate::from_ymd_opt(2026, 10, 20).unwrap(),
        days: days as u32,
        timezone: chrono_tz::Europe::Oslo,
        bad,
        seed,
    };
    let all = spec.generate();
    let mut good_left = good;
    let out: Vec<_> = all
        .into_iter()
        .filter(|m| {
            if m.bad_reason.is_some() {
                return true;
            }
            if good_left == 0 {
                return false;
            }
            good_left -= 1;
            true
        })
        .collect();
    assert_eq!(good_left, 0, "generator made too few readings");
    out
}

impl Rig {
    pub fn new(partitions: i32) -> Self {
        let tools = Tools::find().unwrap_or_else(|e| panic!("{e}"));
        Self::with_broker(&tools, Broker::start(&tools), partitions)
    }

    /// A rig around `broker` (e.g. one behind TLS); clients of the rig use its
    /// [`client_properties`](Broker::client_properties).
    pub fn with_broker(tools: &Tools, broker: Broker, partitions: i32) -> Self {
        let topic = unique_name("readings");
        broker.create_topic(&topic, partitions);
        Self::with_topic(tools, broker, topic)
    }

    /// A rig around `broker` and its existing readings topic `topic`.
    pub fn with_topic(tools: &Tools, broker: Broker, topic: String) -> Self {
        let s3 = S3Server::start(tools);
        let bucket = unique_name("lake");
        s3.create_bucket(&bucket);
        Self {
            broker,
            s3,
            topic,
            bucket,
            dir: tempfile::tempdir().unwrap(),
            produced: Produced::default(),
        }
    }

    pub fn lake(&self) -> LakeConfig {
        LakeConfig {
            uri: format!("s3://{}/lake", self.bucket),
            storage_options: self
                .s3
                .storage_options()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    /// A config file for `meterline run`; `pipeline` is appended to `[pipeline]`
    /// (it sets at least `max_batch_rows`).
    /// The consumer group is `group` with a random suffix; processes started
    /// from one config file share it.
    pub fn config(&self, group: &str, metrics_port: Option<u16>, pipeline: &str) -> PathBuf {
        self.config_with(group, metrics_port, pipeline, &[])
    }

    /// [`config`](Self::config) with librdkafka properties added or replaced,
    /// as TOML values: `&[("session.timeout.ms", "45000")]`.
    pub fn config_with(
        &self,
        group: &str,
        metrics_port: Option<u16>,
        pipeline: &str,
        kafka_properties: &[(&str, &str)],
    ) -> PathBuf {
        let group = unique_name(group);
        let options: String = self
            .s3
            .storage_options()
            .into_iter()
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect();
        let listen = metrics_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_default();
        // A crashed member must leave the group within seconds in tests. A
        // rebalance waits up to max.poll.interval.ms for the previous generation's
        // members: after the broker outage the consumer rejoins under a new member
        // id, and tansu waits for the old one that long (librdkafka's default is 5
        // minutes).
        let session_ms = SESSION_TIMEOUT.as_millis().to_string();
        let mut properties: BTreeMap<&str, &str> = BTreeMap::from([
            ("session.timeout.ms", session_ms.as_str()),
            ("heartbeat.interval.ms", "500"),
            ("max.poll.interval.ms", "60000"),
        ]);
        properties.extend(kafka_properties.iter().copied());
        let properties: String = properties
            .into_iter()
            .map(|(k, v)| format!("\"{k}\" = {v}\n"))
            .collect();
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
readings_topic = "{topic}"

[kafka.properties]
{properties}
[lake]
uri = "s3://{bucket}/lake"

[lake.storage_options]
{options}
[pipeline]
flush_interval_secs = 1
chunk_max_records = 1000
shutdown_grace_secs = 20
retry_initial_backoff_ms = 200
retry_max_backoff_secs = 4
{pipeline}

[metrics]
listen = "{listen}"

# Test data has fixed dates: accept them however long ago they are.
[[tenants]]
id = "oslo-utility"
deployment = "public"
timezone = "Europe/Oslo"
key_rotation = "never"
allow_static_pseudonyms = true
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}

[[tenants]]
id = "acme-industri"
deployment = "private"
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}
"#,
            brokers = self.broker.bootstrap(),
            topic = self.topic,
            bucket = self.bucket,
        );
        let path = self.dir.path().join(format!("{group}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Start `meterline run` with the phase markers of the sink logged.
    pub fn spawn(&self, name: &str, config: &std::path::Path) -> Process {
        self.spawn_with_env(name, config, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables (test hooks).
    pub fn spawn_with_env(
        &self,
        name: &str,
        config: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_meterline"));
        command.envs(env.iter().copied());
        command
            .args(["run", "--config"])
            .arg(config)
            .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
            .env(
                "METERLINE_LOG",
                "warn,meterline=info,meterline_sinks=debug,buoyant_kernel=off,librdkafka=info",
            );
        let mut process = Process::spawn(name, command);
        process.cap_waits_at(scenario_deadline());
        process
    }

    /// Produce messages and remember what the broker acknowledged.
    pub async fn produce(&mut self, messages: &[meterline::dev::generator::Message]) {
        let mut config = ClientConfig::new();
        for (k, v) in self.broker.client_properties() {
            config.set(k, v);
        }
        let producer: FutureProducer = config
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "120000")
            .create()
            .expect("producer");
        for chunk in messages.chunks(20_000) {
            let mut pending = Vec::with_capacity(chunk.len());
            for m in chunk {
                let record = FutureRecord::to(&self.topic)
                    .key(&m.key)
                    .payload(&m.payload);
                pending.push(
                    producer
                        .send_result(record)
                        .map_err(|(e, _)| e)
                        .expect("enqueue"),
                );
            }
            for (m, delivery) in chunk.iter().zip(pending) {
                let delivered = delivery
                    .await
                    .expect("delivery report")
                    .map_err(|(e, _)| e)
                    .expect("delivered");
                assert!(
                    self.produced
                        .positions
                        .insert((delivered.partition, delivered.offset)),
                    "broker acknowledged one position twice"
                );
                if m.bad_reason.is_some() {
                    self.produced.bad += 1;
                } else {
                    self.produced.good += 1;
                    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                    self.produced.sum += parse_thousandths(&v["value"].to_string()).unwrap();
                }
            }
        }
        producer
            .flush(Timeout::After(Duration::from_secs(30)))
            .unwrap();
    }

    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, String> {
        meterline::query::sql::query(&self.lake(), sql)
            .await
            .map_err(|e| e.to_string())
    }

    /// `SELECT count(*) ...`, or why the query failed (for polls that wait until
    /// a table can be read).
    pub async fn try_count(&self, sql: &str) -> Result<u64, String> {
        let batches = self.query(sql).await?;
        let first = batches.first().ok_or("the count query returned no batch")?;
        Ok(first.column(0).as_primitive::<Int64Type>().value(0) as u64)
    }

    /// `SELECT count(*) ...`.
    ///
    /// # Panics
    /// The query fails (a table that cannot be read fails the test; it is not an
    /// empty table).
    pub async fn count(&self, sql: &str) -> u64 {
        self.try_count(sql)
            .await
            .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"))
    }

    /// (tenant, meter, quantity, direction, local date) keys where
    /// `consumption_daily` and a sum over `readings_current` disagree (or only
    /// one has the day).
    pub async fn daily_differences(&self) -> u64 {
        let batches = self
            .query(
            "SELECT count(*) FROM (SELECT tenant, meter, quantity, direction, local_date, \
             sum(CASE WHEN quality = 'withdrawn' THEN 0 ELSE value END) AS v \
             FROM readings_current GROUP BY tenant, meter, quantity, direction, local_date) c \
             FULL OUTER JOIN consumption_daily d ON c.tenant = d.tenant AND c.meter = d.meter \
             AND c.quantity = d.quantity AND c.direction = d.direction AND c.local_date = d.local_date \
             WHERE c.v IS NULL OR d.value IS NULL OR c.v <> d.value",
            )
            .await
            .expect("comparison query");
        batches[0].column(0).as_primitive::<Int64Type>().value(0) as u64
    }

    /// Rows in `readings` (panics when it cannot be read).
    pub async fn rows(&self) -> u64 {
        self.count("SELECT count(*) FROM readings").await
    }

    /// Poll the lake until `readings` holds `n` rows (capped by the scenario's
    /// deadline). Until the table exists, a failed read counts as not there yet.
    pub async fn await_rows(&self, n: u64, timeout: Duration) {
        let (deadline, cap) = wait_deadline(timeout);
        loop {
            let rows = self.try_count("SELECT count(*) FROM readings").await;
            if let Ok(rows) = rows {
                assert!(rows <= n, "more rows ({rows}) than produced ({n})");
                if rows == n {
                    return;
                }
            }
            if Instant::now() >= deadline {
                let rows = rows.unwrap_or_else(|e| panic!("timed out{cap}: readings: {e}"));
                let (missing, twice) = self.positions_diff().await;
                panic!(
                    "timed out{cap} with {rows} of {n} rows; positions missing from the lake \
                     (partition: count, first, last): {missing:?}; stored twice: {twice}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Produced positions not in the lake, per partition `(count, first, last)`,
    /// and the number of positions stored more than once.
    pub async fn positions_diff(&self) -> (BTreeMap<i32, (usize, i64, i64)>, usize) {
        let mut stored: BTreeMap<(i32, i64), u32> = BTreeMap::new();
        for sql in [
            "SELECT source_partition, source_offset FROM readings",
            "SELECT source_partition, source_offset FROM dead_letters",
        ] {
            let batches = self
                .query(sql)
                .await
                .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"));
            for b in batches {
                let parts = b.column(0).as_primitive::<Int32Type>();
                let offs = b.column(1).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    *stored.entry((parts.value(i), offs.value(i))).or_default() += 1;
                }
            }
        }
        let twice = stored.values().filter(|n| **n > 1).count();
        let mut missing: BTreeMap<i32, (usize, i64, i64)> = BTreeMap::new();
        for &(p, o) in &self.produced.positions {
            if !stored.contains_key(&(p, o)) {
                let e = missing.entry(p).or_insert((0, o, o));
                e.0 += 1;
                e.2 = o;
            }
        }
        (missing, twice)
    }

    /// No Kafka position stored twice so far.
    pub async fn assert_no_duplicates(&self) {
        let rows = self.rows().await;
        let distinct = self
            .count(
                "SELECT count(*) FROM (SELECT DISTINCT source_partition, source_offset FROM readings)",
            )
            .await;
        assert_eq!(rows, distinct, "a Kafka position is stored twice");
    }

    /// The end state is exact, and the lake side of conservation holds: every
    /// produced position is in `readings` or `dead_letters` exactly once, and
    /// nothing else is.
    pub async fn assert_exact(&self) {
        let p = &self.produced;
        assert_eq!(self.rows().await, p.good, "rows in readings");
        self.assert_no_duplicates().await;
        let batches = self
            .query("SELECT CAST(sum(value) AS VARCHAR) FROM readings")
            .await
            .unwrap();
        let sum = batches[0].column(0).as_string::<i32>().value(0).to_owned();
        assert_eq!(sum, format_thousandths(p.sum), "exact decimal sum");
        assert_eq!(
            self.count("SELECT count(*) FROM dead_letters").await,
            p.bad,
            "dead letters"
        );
        let (missing, twice) = self.positions_diff().await;
        assert_eq!(twice, 0, "positions stored more than once");
        assert!(
            missing.is_empty(),
            "produced positions missing from the lake: {missing:?}"
        );
        let extra = self.rows().await + self.count("SELECT count(*) FROM dead_letters").await
            - p.positions.len() as u64;
        assert_eq!(extra, 0, "positions in the lake that were never produced");
    }
}

/// A process's ledger after a clean stop must balance.
pub fn assert_ledger(process: &Process) -> meterline::dev::testkit::Ledger {
    let ledger = process.ledger().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ledger.balanced(),
        "{}: consumed != written + dead_lettered + dropped: {ledger:?}",
        process.name
    );
    ledger
}

/// A metric's value from a Prometheus text exposition (sum over label sets).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrape `/metrics` of a process (None while it does not answer).
pub fn scrape(port: u16) -> Option<String> {
    match meterline::dev::testkit::http(port, "GET", "/metrics") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Poll `cond` every 200 ms until it holds (panics after `timeout` or at the
/// scenario's cap, whichever comes first).
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let (deadline, cap) = wait_deadline(timeout);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out{cap} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`eventually`] with an async condition.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (deadline, cap) = wait_deadline(timeout);
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out{cap} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every object in the bucket: its bytes, and each Parquet file's values as JSON
/// text (compressed pages need not show a value's bytes).
pub async fn bucket_views(rig: &Rig) -> Vec<(String, Vec<u8>)> {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(&rig.bucket);
    // Only the S3 keys (the lake's options also hold delta-rs' own, e.g. retries).
    for (k, v) in rig.s3.storage_options() {
        if let Ok(key) = k.parse::<object_store::aws::AmazonS3ConfigKey>() {
            builder = builder.with_config(key, v);
        }
    }
    let store = builder.build().unwrap();
    let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut views = Vec::new();
    for o in objects {
        let Ok(got) = store.get(&o.location).await else {
            continue; // vacuumed while listing
        };
        let bytes = got.bytes().await.unwrap();
        if o.location.as_ref().ends_with(".parquet") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes.clone(),
            )
            .unwrap()
            .build()
            .unwrap();
            let mut text = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut text);
                for batch in reader {
                    w.write(&batch.unwrap()).unwrap();
                }
                w.finish().unwrap();
            }
            views.push((format!("{} (values)", o.location), text));
        }
        views.push((o.location.to_string(), bytes.to_vec()));
    }
    assert!(!views.is_empty(), "the bucket could not be listed");
    views
}

pub fn holding(views: &[(String, Vec<u8>)], needle: &str) -> Vec<String> {
    views
        .iter()
        .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(k, _)| k.clone())
        .collect()
}
