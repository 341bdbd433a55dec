use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use meterline::config::{KafkaConfig, PipelineConfig, Settings};
use meterline::metrics::Metrics;
use meterline::shutdown::Shutdown;
use meterline_operators::{MasterKey, TenantRegistry};
use meterline_sinks::LakeConfig;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

pub const KEY_HEX: &str = "5f2a9c0e4b7d1836a0c9e2f4b6d8a1c3e5f7091b2d4f6a8c0e1b3d5f7a9c2e4d";

/// An in-process Kafka-protocol cluster with one topic, and a fresh lake directory.
pub struct Harness {
    /// Kept alive for the test: dropping it stops the broker.
    pub _cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub brokers: String,
    pub topic: String,
    pub lake: tempfile::TempDir,
}

impl Harness {
    pub fn new(partitions: i32) -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let topic = format!("readings-{}", rand::random::<u32>());
        cluster.create_topic(&topic, partitions, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        Self {
            _cluster: cluster,
            brokers,
            topic,
            lake: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn lake_config(&self) -> LakeConfig {
        LakeConfig {
            uri: self.lake.path().to_string_lossy().into_owned(),
            storage_options: HashMap::new(),
        }
    }

    pub fn settings(&self, group: &str) -> Settings {
        Settings {
            kafka: KafkaConfig {
                brokers: self.brokers.clone(),
                group_id: group.to_owned(),
                readings_topic: self.topic.clone(),
                properties: Default::default(),
                secret_files: Default::default(),
                allow_plaintext: false,
            },
            lake: self.lake_config(),
            pipeline: PipelineConfig {
                flush_interval_secs: 1,
                max_batch_rows: 5_000,
                chunk_max_records: 1_000,
                ..PipelineConfig::default()
            },
            metrics_listen: None,
            tenants: tenants(),
            key: Some(MasterKey::from_hex(KEY_HEX).unwrap().into()),
            dead_letters: Default::default(),
            special_category_fields:
                meterline_operators::sensitive::DEFAULT_SPECIAL_CATEGORY_FIELDS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            // Tests that need the aggregate tables turn them on.
            aggregate: meterline::config::AggregateSettings {
                enabled: false,
                ..Default::default()
            },
            // Tests that need erasure set a topic.
            lifecycle: meterline::config::LifecycleSettings {
                clock: meterline::dev::testkit::clock(),
                ..Default::default()
            },
            // `run_pipeline` hands the same clock to the sweeps and erasures.
            clock: meterline::dev::testkit::clock(),
            allow_versioned_bucket: false,
            inputs: Default::default(),
            economics: Default::default(),
            compaction: Default::default(),
        }
    }

    /// A TOML config for `meterline run` against this harness.
    pub fn config_file(&self, group: &str) -> std::path::PathBuf {
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
readings_topic = "{topic}"

# A crashed member must leave the group quickly in tests.
[kafka.properties]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[lake]
uri = "{lake}"

[pipeline]
flush_interval_secs = 1
max_batch_rows = 3000
chunk_max_records = 500
shutdown_grace_secs = 20

[metrics]
listen = ""

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
            brokers = self.brokers,
            topic = self.topic,
            lake = self.lake.path().display()
        );
        let path = self.lake.path().join(format!("{group}.toml"));
        // The config lives outside the lake tables' directories.
        std::fs::write(&path, text).unwrap();
        path
    }

    pub async fn produce(&self, messages: &[(String, Option<Vec<u8>>)]) {
        self.produce_to(&self.topic, messages, None).await;
    }

    /// A topic of its own on this cluster (e.g. the erasure topic).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        self._cluster
            .create_topic(name, partitions, 1)
            .expect("create topic");
    }

    /// Produce to `topic`; `timestamp_ms` sets the records' create time.
    pub async fn produce_to(
        &self,
        topic: &str,
        messages: &[(String, Option<Vec<u8>>)],
        timestamp_ms: Option<i64>,
    ) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let mut pending = Vec::new();
        for (key, payload) in messages {
            let mut record = FutureRecord::<String, Vec<u8>>::to(topic).key(key);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            if let Some(ts) = timestamp_ms {
                record = record.timestamp(ts);
            }
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for f in pending {
            f.await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
        producer
            .flush(Timeout::After(Duration::from_secs(10)))
            .unwrap();
    }

    pub async fn count(&self, sql: &str) -> u64 {
        count(&self.lake_config(), sql).await
    }
}

pub fn tenants() -> TenantRegistry {
    meterline::dev::generator::tenants()
}

pub async fn query(lake: &LakeConfig, sql: &str) -> Vec<RecordBatch> {
    meterline::query::sql::query(lake, sql)
        .await
        .expect("query")
}

pub async fn count(lake: &LakeConfig, sql: &str) -> u64 {
    let batches = query(lake, sql).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0) as u64
}

/// Poll `cond` until it holds or the deadline passes (then panic with `what`).
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pipeline running in-process (see [`start`]).
pub struct Running {
    pub metrics: Metrics,
    shutdown: Arc<Shutdown>,
    task: tokio::task::JoinHandle<Result<(), meterline::ingest::RunError>>,
}

/// Start the pipeline in-process.
pub fn start(settings: Settings) -> Running {
    let metrics = Metrics::new();
    let shutdown = Arc::new(Shutdown::default());
    let task = tokio::spawn(meterline::service::run_pipeline(
        settings,
        metrics.clone(),
        shutdown.clone(),
    ));
    Running {
        metrics,
        shutdown,
        task,
    }
}

impl Running {
    /// Stop gracefully; panics unless the pipeline ends cleanly.
    pub async fn stop(self) {
        self.shutdown.request();
        self.task
            .await
            .expect("join")
            .expect("pipeline ends cleanly");
    }
}

/// Run the pipeline in-process until `expected` records are accounted for
/// (written + dead-lettered + dropped), then stop it gracefully.
pub async fn run_until_accounted(settings: Settings, expected: u64) -> Metrics {
    let metrics = Metrics::new();
    let shutdown = Arc::new(Shutdown::default());
    let task = tokio::spawn(meterline::service::run_pipeline(
        settings,
        metrics.clone(),
        shutdown.clone(),
    ));
    let m = metrics.clone();
    wait_for("all records accounted for", Duration::from_secs(90), || {
        let c = m.conservation();
        async move { c.written + c.dead_lettered + c.dropped >= expected }
    })
    .await;
    shutdown.request();
    task.await.expect("join").expect("pipeline ends cleanly");
    metrics
}

/// Every file under `dir`, recursively.
pub fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every stored byte under `dir`: each file as it is, and each Parquet file's
/// values as JSON text too (compressed pages need not show a value's bytes).
///
/// meterline may still be writing while this reads: a file that was listed and is
/// gone when read (a staged upload renamed into place, a vacuumed file) means the
/// lake moved under the scan, and the scan starts over. It fails when no scan of
/// many gets through.
pub fn stored_views(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    const SCANS: usize = 50;
    for _ in 0..SCANS {
        if let Some(views) = scan_stored(dir) {
            return views;
        }
    }
    panic!(
        "{}: a listed file vanished during each of {SCANS} scans",
        dir.display()
    );
}

/// One pass of [`stored_views`]; `None` when a listed file vanished.
fn scan_stored(dir: &std::path::Path) -> Option<Vec<(std::path::PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    let mut views = Vec::new();
    for path in files {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        if path.extension().is_some_and(|e| e == "parquet") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes::Bytes::from(bytes.clone()),
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
            views.push((path.clone(), text));
        }
        views.push((path, bytes));
    }
    Some(views)
}

/// True if `needle` occurs in `haystack` as bytes.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The bytes (payload, key, header names and values) of the first `expected`
/// messages of `topic`, read from the beginning.
pub fn topic_bytes(brokers: &str, topic: &str, expected: usize) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", rand::random::<u32>()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < expected {
        assert!(Instant::now() < deadline, "{topic}: {} messages", out.len());
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut bytes = m.payload().unwrap_or_default().to_vec();
            bytes.extend(m.key().unwrap_or_default());
            if let Some(headers) = m.headers() {
                for h in headers.iter() {
                    bytes.extend(h.key.as_bytes());
                    bytes.extend(h.value.unwrap_or_default());
                }
            }
            out.push(bytes);
        }
    }
    out
}

/// Panic naming the view if any planted value occurs in any view.
pub fn assert_none_planted(views: &[(String, Vec<u8>)], planted: &[String]) {
    for (what, bytes) in views {
        for secret in planted {
            if let Some(at) = bytes
                .windows(secret.len())
                .position(|w| w == secret.as_bytes())
            {
                // The planted values are synthetic: show where, to fix the leak.
                let from = at.saturating_sub(160);
                let to = (at + secret.len() + 80).min(bytes.len());
                panic!(
                    "{what} contains the planted value {secret:?}: ...{}...",
                    String::from_utf8_lossy(&bytes[from..to])
                );
            }
        }
    }
}
