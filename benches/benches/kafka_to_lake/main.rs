//! Kafka to lake, end to end: what a reading costs from the broker to the lake,
//! measured against a bare consumer that only drains the same topic.
//!
//! One run: a tansu broker on loopback, a topic of 4 partitions preloaded with
//! `reading/v1` messages of one public tenant (hourly values, keyed by device, the
//! meter pseudonymized), then
//! 1. **drain**: a bare rdkafka consumer that counts the messages (the ceiling: no
//!    decode, no lake), this binary re-executed with `--drain`;
//! 2. **meterline**: a real `meterline run` (this binary re-executed with
//!    `--meterline-run`) with the default configuration into a local lake, once
//!    with aggregates off and once with them on (the difference is the aggregate
//!    materializer's cost).
//!
//! Each process's CPU time (user + system, `/proc/<pid>/stat`) is sampled with
//! the records it has finished (written, dead-lettered or dropped: every record
//! is one of those). Printed per run: wall rate, CPU-µs per reading, the ratio of
//! rates to the drain, peak RSS (VmHWM), and the CPU per reading of the first and
//! the last tenth of the readings: equal when the cost does not grow with what
//! the lake already holds.
//!
//! Shapes (`KAFKA_TO_LAKE_SHAPE`, default `backfill`):
//! - `backfill`: each meter's history in turn (an adapter fetching history meter
//!   by meter): `KAFKA_TO_LAKE_METERS` (2,000) x `KAFKA_TO_LAKE_HOURS` (480);
//! - `morning`: Elhub's morning delivery, yesterday's 24 values of every meter,
//!   day after day: `KAFKA_TO_LAKE_METERS` x `KAFKA_TO_LAKE_DAYS` (7);
//! - `live`: every meter's value of an hour, then the next hour;
//! - `daily`: the morning delivery as it happens: meterline runs on an empty
//!   topic, each day is produced while it runs, and the next day only once the
//!   day is written and aggregated. The CPU between those points is the day's
//!   cost (the materializer's included, wherever its rounds fall); printed per
//!   day, with the last day / first day ratio. One meterline run, no drain.
//!
//! `cargo bench --bench kafka_to_lake -- throughput` measures (about 10 minutes
//! at the default size). Without `--bench`, as `cargo test --all-targets` (and so
//! `scripts/test.sh`) runs it, one test guards flatness ([`TEST`]): a
//! 300,000-reading backfill with flushes of 10,000 rows; it fails when the last
//! tenth of the readings costs more than 1.5 times the CPU per reading of the
//! first tenth (a ratio of two stretches of the same run, never an absolute time).
//!
//! The same binary holds [`backlog_memory`]: memory with a large backlog and a
//! stalled S3 (`-- backlog_memory` under `cargo bench`, and a test). One binary
//! for the benches that run `meterline` as a process: each bench binary links all
//! of meterline, minutes of a cold CI build.
//!
//! Every meterline run prints its peak RSS beside the `memory_bound_mib` it logged
//! at start, and the bench exits non-zero when the peak is above the bound.
//!
//! Knobs (environment):
//! - `KAFKA_TO_LAKE_AGGREGATES=off` (or `on`) runs meterline once instead of twice;
//! - `KAFKA_TO_LAKE_LAKE=s3`: the lake in a bucket on moto instead of a directory;
//! - `KAFKA_TO_LAKE_PARTITIONS` (4): partitions of the readings topic;
//! - `KAFKA_TO_LAKE_BROKER=memory`: tansu's in-memory engine, for backlogs of
//!   millions (its SQLite engine slows down with the records a partition holds
//!   past the fetch offset); `METERLINE_TANSU` must be a tansu built with its
//!   `dynostore` feature;
//! - `KAFKA_TO_LAKE_LOG`: meterline's log filter;
//! - `KAFKA_TO_LAKE_PERF=<dir>`: a CPU profile of each meterline run there
//!   (`perf record --call-graph dwarf`);
//! - `KAFKA_TO_LAKE_HEAPTRACK=<dir>`: each meterline run under heaptrack (build
//!   with `--features meterline/system-allocator`; CPU figures of such a run mean
//!   nothing).
//!
//! All need the tools of `scripts/test.sh` (tansu, moto).

#![allow(clippy::too_many_lines)] // test code: a scenario reads best whole

mod backlog_memory;
#[path = "../support/mod.rs"]
mod support;

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use meterline::dev::generator::gsrn;
use meterline::dev::testkit::{free_port, unique_name, Broker, Process, S3Server, Tools};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use rdkafka::Message;
use support::{metric, proc_cpu_secs, proc_status, selected, send_all};

const KEY_HEX: &str = "5f2a9c0e4b7d1836a0c9e2f4b6d8a1c3e5f7091b2d4f6a8c0e1b3d5f7a9c2e4d";
const TENANT: &str = "oslo-utility";
const PARTITIONS: usize = 4;
const MIB: u64 = 1024 * 1024;

/// The test run without `--bench`.
const TEST: &str = "cost_per_reading_does_not_grow_with_the_lake";
/// The measurement run with `--bench`.
const BENCH: &str = "throughput";
/// The guard's bound on last-tenth / first-tenth CPU per reading.
const GUARD_RATIO: f64 = 1.5;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("--meterline-run") => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_env("METERLINE_LOG"))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let path = std::path::PathBuf::from(&args[2]);
            return runtime.block_on(meterline::service::run_from_file(&path));
        }
        Some("--drain") => return drain(&args[2], &args[3], args[4].parse().expect("count")),
        _ => {}
    }
    if args.iter().any(|a| a == "--list") {
        println!("{TEST}: test");
        println!("{}: test", backlog_memory::TEST);
        return ExitCode::SUCCESS;
    }
    let bench = args.iter().any(|a| a == "--bench");
    // Under `cargo bench` filters pick the measurements, else the tests.
    let (flat, memory) = if bench {
        (BENCH, backlog_memory::BENCH)
    } else {
        (TEST, backlog_memory::TEST)
    };
    let run_flat = selected(flat, &args[1..]);
    let run_memory = selected(memory, &args[1..]);
    if !bench {
        let count = usize::from(run_flat) + usize::from(run_memory);
        println!("running {count} test{}", if count == 1 { "" } else { "s" });
    }
    if !run_flat && !run_memory {
        return ExitCode::SUCCESS;
    }
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kafka_to_lake: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    if run_flat {
        let code = if bench {
            runtime.block_on(measure(&tools))
        } else {
            runtime.block_on(guard(&tools))
        };
        failed |= code != ExitCode::SUCCESS;
    }
    if run_memory {
        let code = if bench {
            runtime.block_on(backlog_memory::compare_backlogs(&tools))
        } else {
            runtime.block_on(backlog_memory::check_bound(&tools))
        };
        failed |= code != ExitCode::SUCCESS;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `meterline run --config <config>`: this binary re-executed with
/// `--meterline-run` (see `main`), with the bench key and `log` as `METERLINE_LOG`.
///
/// `KAFKA_TO_LAKE_HEAPTRACK=<dir>` runs it under `heaptrack` (which hooks
/// `malloc`, so build with `--features meterline/system-allocator`), writing
/// `heaptrack.meterline.zst` there.
fn spawn_meterline(config: &std::path::Path, log: &str) -> Process {
    let exe = std::env::current_exe().expect("own path");
    let mut command = match std::env::var_os("KAFKA_TO_LAKE_HEAPTRACK") {
        Some(dir) => {
            let mut c = Command::new("heaptrack");
            c.arg("-o")
                .arg(std::path::Path::new(&dir).join("heaptrack.meterline"))
                .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command
        .arg("--meterline-run")
        .arg(config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .env("METERLINE_LOG", log);
    Process::spawn("meterline", command)
}

/// The pid of the meterline process: `process`, or under heaptrack its child
/// running this binary.
fn meterline_pid(process: &Process) -> u32 {
    let pid = process.pid();
    if std::env::var_os("KAFKA_TO_LAKE_HEAPTRACK").is_none() {
        return pid;
    }
    let exe = std::env::current_exe().expect("own path");
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("heaptrack's children");
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|c| std::fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|e| e == exe))
        .unwrap_or_else(|| panic!("no meterline child of heaptrack ({pid}): {children}"))
}

/// The order readings arrive in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    /// Each meter's hours in turn.
    Backfill,
    /// Per day, each meter's 24 values of that day.
    Morning,
    /// Per hour, every meter's value.
    Live,
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    order: Order,
    meters: usize,
    hours: usize,
}

impl Shape {
    fn readings(&self) -> usize {
        self.meters * self.hours
    }

    fn describe(&self) -> String {
        let order = match self.order {
            Order::Backfill => "backfill (meter by meter)",
            Order::Morning => "morning delivery (day by day, 24 values per meter)",
            Order::Live => "live (hour by hour)",
        };
        format!(
            "{order}: {} meters x {} hours = {} readings",
            self.meters,
            self.hours,
            self.readings()
        )
    }

    /// The (meter, hour) of the i-th message.
    fn at(&self, i: usize) -> (usize, usize) {
        match self.order {
            Order::Backfill => (i / self.hours, i % self.hours),
            Order::Live => (i % self.meters, i / self.meters),
            Order::Morning => {
                let per_day = self.meters * 24;
                let (day, rest) = (i / per_day, i % per_day);
                (rest / 24, day * 24 + rest % 24)
            }
        }
    }
}

/// The first hour of the data: midnight in Oslo (UTC+1 in January).
fn first_hour() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("time")
        .and_utc()
        - Days::hours(1)
}

/// One `reading/v1` message: (key, payload). Written with `format!` rather than a
/// JSON value: millions of them are produced per run.
fn message(meter: usize, hour: usize) -> (String, String) {
    let start = first_hour() + Days::hours(hour as i64);
    let version = start + Days::hours(30);
    let device = format!("dev-{meter:06}");
    let value = 0.4 + ((meter * 7919 + hour * 104_729) % 2_000) as f64 / 1_000.0;
    let payload = format!(
        concat!(
            r#"{{"schema":"reading/v1","tenant":"{tenant}","device_id":"{device}","#,
            r#""meter_id":"{meter_id}","quantity":"electricity","direction":"import","#,
            r#""start":"{start}","resolution":"PT1H","value":{value:.3},"unit":"kWh","#,
            r#""quality":"measured","version":"{version}","area":"NO1","#,
            r#""status":{{"battery":0.87,"rssi":-71,"firmware":"3.2.1"}}}}"#
        ),
        tenant = TENANT,
        device = device,
        meter_id = gsrn(meter as u32 + 1),
        start = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        value = value,
        version = version.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    (device, payload)
}

/// Produces the messages `range` of `shape` (in its order) to `topic`.
async fn produce(broker: &Broker, topic: &str, shape: &Shape, range: std::ops::Range<usize>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "600000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let (mut next, total) = (range.start, range.end);
    while next < total {
        let end = (next + 100_000).min(total);
        send_all(
            &producer,
            topic,
            (next..end).map(|i| {
                let (meter, hour) = shape.at(i);
                message(meter, hour)
            }),
        )
        .await;
        next = end;
    }
    producer
        .flush(Timeout::After(Duration::from_secs(60)))
        .expect("flush");
    eprintln!(
        "kafka_to_lake: produced {} readings in {:.0} s",
        range.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The readings topic, and the privacy topics a default configuration consumes
/// (empty here; without them librdkafka reports them missing all run long).
fn create_topics(broker: &Broker, readings: &str) {
    // KAFKA_TO_LAKE_PARTITIONS: partitions of the readings topic.
    let partitions = env_usize("KAFKA_TO_LAKE_PARTITIONS", PARTITIONS);
    broker.create_topic(readings, i32::try_from(partitions).expect("partitions"));
    broker.create_topic("subject.erasure", 1);
    broker.create_topic("subject.events", 1);
}

/// The drain child: consume `count` messages of `topic` and print its own CPU.
fn drain(bootstrap: &str, topic: &str, count: usize) -> ExitCode {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("drain"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let started = Instant::now();
    let (mut seen, mut bytes) = (0usize, 0usize);
    while seen < count {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                seen += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => eprintln!("drain: {e}"),
            None => {
                assert!(
                    started.elapsed() < Duration::from_secs(1800),
                    "drain: {seen} of {count} messages after 30 minutes"
                );
            }
        }
    }
    let cpu = proc_cpu_secs(std::process::id()).expect("own /proc stat");
    let hwm = proc_status(std::process::id(), "VmHWM:").unwrap_or(0);
    println!(
        "drained {seen} {bytes} {:.6} {cpu:.6} {hwm}",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// One process's run over the whole topic.
#[derive(Debug, Clone)]
struct Run {
    name: String,
    readings: usize,
    wall_secs: f64,
    cpu_secs: f64,
    peak_rss: u64,
    /// The memory bound meterline logged at start (meterline runs only).
    bound: Option<u64>,
    /// CPU-µs per reading of the first and the last tenth (meterline runs only).
    tenths: Option<(f64, f64)>,
    /// CPU seconds spent before consumption began (meterline runs only).
    startup_cpu: f64,
    /// CPU-µs per reading between successive samples, one figure per tenth of
    /// the readings (meterline runs only): where the cost goes over the run.
    deciles: Vec<f64>,
}

impl Run {
    fn cpu_us_per_reading(&self) -> f64 {
        self.cpu_secs * 1e6 / self.readings as f64
    }

    fn rate(&self) -> f64 {
        self.readings as f64 / self.wall_secs
    }
}

fn run_drain(broker: &Broker, topic: &str, count: usize) -> Run {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .args(["--drain", &broker.bootstrap(), topic, &count.to_string()])
        .output()
        .expect("drain child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "drain failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fields: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("drained "))
        .unwrap_or_else(|| panic!("no result line from the drain: {stdout}"))
        .split_whitespace()
        .collect();
    let number = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unreadable drain result: {stdout}"))
    };
    Run {
        name: "drain (bare rdkafka consumer)".into(),
        readings: number(0) as usize,
        wall_secs: number(2),
        cpu_secs: number(3),
        peak_rss: number(4) as u64,
        bound: None,
        tenths: None,
        startup_cpu: 0.0,
        deciles: Vec::new(),
    }
}

/// A sample of a meterline run: CPU seconds, records finished.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu: f64,
    done: f64,
}

/// CPU-µs per reading over the readings `from..to` of a run (in records finished).
///
/// Records are finished in flushes, after the CPU that processed them was spent,
/// so a stretch runs between flushes: from the first sample that showed the last
/// flush at or before `from` (the CPU for what follows is spent after it) to the
/// first sample at or past `to`. It holds at least one whole flush, whatever the
/// sampling.
fn stretch(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let before = samples
        .iter()
        .map(|s| s.done)
        .filter(|d| *d <= from)
        .fold(f64::NAN, f64::max);
    let a = samples.iter().find(|s| s.done == before)?;
    let b = samples.iter().find(|s| s.done >= to)?;
    (b.done > a.done).then(|| (b.cpu - a.cpu) * 1e6 / (b.done - a.done))
}

/// CPU-µs per reading of the first and the last tenth of a run's readings.
fn tenths(samples: &[Sample], total: f64) -> (f64, f64) {
    let tenth = total / 10.0;
    (
        stretch(samples, 0.0, tenth).expect("a stretch over the first tenth"),
        stretch(samples, total - tenth, total).expect("a stretch over the last tenth"),
    )
}

struct Knobs<'a> {
    aggregates: bool,
    max_batch_rows: Option<usize>,
    /// The lake: a local directory, or a bucket on this S3 server.
    s3: Option<&'a S3Server>,
}

/// A meterline process started on a topic, its metrics on `port`.
struct Started {
    /// Held while meterline runs: its config and lake.
    _dir: tempfile::TempDir,
    process: Process,
    /// meterline's pid (under heaptrack, not `process`'s).
    pid: u32,
    port: u16,
    /// The memory bound it logged at start.
    bound: u64,
    started: Instant,
    /// `perf record` attached to it (`KAFKA_TO_LAKE_PERF`).
    perf: Option<std::process::Child>,
}

impl Started {
    /// Records finished: written, dead-lettered or dropped (not a number until the
    /// first scrape answers).
    fn finished(&self) -> f64 {
        metric(self.port, "meterline_records_written_total")
            + metric(self.port, "meterline_records_dropped_total")
    }

    fn cpu(&self) -> f64 {
        proc_cpu_secs(self.pid).expect("meterline exited during the run")
    }

    /// Waits until the aggregates are current: a round that began after the last
    /// commit has finished (two rounds after the call) and nothing is left to
    /// aggregate.
    fn wait_aggregates_current(&self, deadline: Instant) {
        let rounds = "meterline_aggregate_rounds_total{outcome=\"ok\"}";
        let before = metric(self.port, rounds);
        loop {
            let now = metric(self.port, rounds);
            let lag = metric(self.port, "meterline_aggregate_lag_seconds");
            if now >= before + 2.0 && lag == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "aggregates not current in an hour"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops perf (which writes its profile on SIGINT) and meterline; returns the
    /// peak RSS.
    fn stop(self) -> u64 {
        let peak_rss = proc_status(self.pid, "VmHWM:").expect("meterline's VmHWM");
        if let Some(mut perf) = self.perf {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        let mut process = self.process;
        if self.pid == process.pid() {
            let _ = process.terminate(Duration::from_secs(60));
        } else {
            // heaptrack writes its profile once meterline has exited.
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let _ = process.wait_exit(Duration::from_secs(600));
        }
        peak_rss
    }
}

/// Starts `meterline run` with the default configuration (and `knobs`) on `topic`
/// and waits until its pipeline has started.
fn start_meterline(broker: &Broker, topic: &str, knobs: &Knobs) -> Started {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("meterline.toml");
    let pipeline = knobs
        .max_batch_rows
        .map(|rows| format!("[pipeline]\nmax_batch_rows = {rows}\n"))
        .unwrap_or_default();
    let lake = match knobs.s3 {
        Some(s3) => {
            let bucket = unique_name("lake");
            s3.create_bucket(&bucket);
            let options: String = s3
                .storage_options()
                .into_iter()
                .map(|(k, v)| format!("{k} = \"{v}\"\n"))
                .collect();
            format!("uri = \"s3://{bucket}/lake\"\n[lake.storage_options]\n{options}")
        }
        None => format!("uri = \"{}\"\n", dir.path().join("lake").display()),
    };
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
readings_topic = "{topic}"
[lake]
{lake}
[metrics]
listen = "127.0.0.1:{port}"
[aggregate]
enabled = {aggregates}
{pipeline}
[[tenants]]
id = "{TENANT}"
deployment = "public"
# Fixed-date data: one key for all of it, readings of any age accepted.
key_rotation = "never"
allow_static_pseudonyms = true
telemetry_retention_days = 36600
validation = {{ max_age_days = 36500 }}
"#,
            brokers = broker.bootstrap(),
            group = unique_name("bench"),
            aggregates = knobs.aggregates,
        ),
    )
    .expect("config");
    let started = Instant::now();
    // KAFKA_TO_LAKE_LOG: meterline's log filter (`METERLINE_LOG`), e.g.
    // `info,meterline::aggregate=debug` for the materializer's steps.
    let log = std::env::var("KAFKA_TO_LAKE_LOG")
        .unwrap_or_else(|_| "warn,meterline::service=info".to_owned());
    let process = spawn_meterline(&config, &log);
    process.wait_line(0, Duration::from_secs(120), |l| {
        l.contains("pipeline started")
    });
    let bound =
        support::logged_bound(&process.lines_matching(|l| l.contains("pipeline started"))[0]);
    // Under heaptrack the process spawned is heaptrack's script; meterline is its
    // child.
    let pid = meterline_pid(&process);
    // KAFKA_TO_LAKE_PERF=<dir>: record a CPU profile of each meterline run there.
    let perf = std::env::var_os("KAFKA_TO_LAKE_PERF").map(|dir| {
        let out = std::path::Path::new(&dir).join(format!(
            "perf-aggregates-{}.data",
            if knobs.aggregates { "on" } else { "off" }
        ));
        Command::new("perf")
            // DWARF unwinding: release builds have no frame pointers.
            .args(["record", "-F", "199", "--call-graph", "dwarf,32768"])
            .args(["-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("perf record")
    });
    Started {
        _dir: dir,
        process,
        pid,
        port,
        bound,
        started,
        perf,
    }
}

fn run_meterline(broker: &Broker, topic: &str, total: usize, knobs: &Knobs) -> Run {
    let meterline = start_meterline(broker, topic, knobs);
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let done = meterline.finished();
        let cpu = meterline.cpu();
        if done.is_finite() {
            samples.push(Sample { cpu, done });
            if done >= total as f64 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "meterline finished {done} of {total} records in an hour"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if knobs.aggregates {
        // The aggregates are part of the job.
        meterline.wait_aggregates_current(deadline);
    }
    let wall_secs = meterline.started.elapsed().as_secs_f64();
    // The aggregates' catch-up after the last commit counts in the total, not in
    // the last tenth (the first tenth had no aggregation round to pay for).
    let cpu_secs = meterline.cpu();
    let bound = meterline.bound;
    let peak_rss = meterline.stop();
    let tenths = tenths(&samples, total as f64);
    let tenth = total as f64 / 10.0;
    let deciles = (0..10)
        .filter_map(|k| stretch(&samples, tenth * f64::from(k), tenth * f64::from(k + 1)))
        .collect();
    Run {
        name: format!(
            "meterline run, aggregates {}",
            if knobs.aggregates { "on" } else { "off" }
        ),
        readings: total,
        wall_secs,
        cpu_secs,
        peak_rss,
        bound: Some(bound),
        tenths: Some(tenths),
        startup_cpu: samples[0].cpu,
        deciles,
    }
}

/// One delivered day of the `daily` shape: what meterline spent on it, from the
/// moment the day began to be produced until it was written and aggregated.
#[derive(Debug, Clone, Copy)]
struct Day {
    cpu_secs: f64,
    wall_secs: f64,
}

/// The `daily` shape: meterline runs on an empty topic; each day's delivery
/// (every meter's 24 values) is produced while it runs, and the next day only
/// once the day is written and its aggregates are current. The CPU meterline
/// spent from one such point to the next is that day's cost, the
/// materializer's included, whatever the timing of its rounds.
async fn run_by_day(broker: &Broker, topic: &str, shape: &Shape, knobs: &Knobs<'_>) -> ExitCode {
    let per_day = shape.meters * 24;
    let days = shape.hours / 24;
    let meterline = start_meterline(broker, topic, knobs);
    let deadline = Instant::now() + Duration::from_secs(3600 * 4);
    let startup_cpu = meterline.cpu();
    let mut before = startup_cpu;
    let mut measured = Vec::new();
    for day in 0..days {
        let began = Instant::now();
        produce(broker, topic, shape, day * per_day..(day + 1) * per_day).await;
        let end = ((day + 1) * per_day) as f64;
        loop {
            let done = meterline.finished();
            if done >= end {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "meterline finished {done} of {end} records in four hours"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if knobs.aggregates {
            meterline.wait_aggregates_current(deadline);
        }
        let cpu = meterline.cpu();
        measured.push(Day {
            cpu_secs: cpu - before,
            wall_secs: began.elapsed().as_secs_f64(),
        });
        eprintln!(
            "kafka_to_lake: day {}: {:.2} CPU-µs per reading",
            day + 1,
            (cpu - before) * 1e6 / per_day as f64
        );
        before = cpu;
    }
    let bound = meterline.bound;
    let peak_rss = meterline.stop();
    println!();
    println!(
        "kafka_to_lake: {}, each day produced while meterline runs and measured until it is \
         written{}, into a {}",
        shape.describe(),
        if knobs.aggregates {
            " and aggregated"
        } else {
            ""
        },
        if knobs.s3.is_some() {
            "lake on S3 (moto)"
        } else {
            "local lake"
        }
    );
    println!("| day | CPU-µs per reading | wall s (produce to done) |");
    println!("|---|---|---|");
    for (i, d) in measured.iter().enumerate() {
        println!(
            "| {} | {:.2} | {:.0} |",
            i + 1,
            d.cpu_secs * 1e6 / per_day as f64,
            d.wall_secs
        );
    }
    let total: f64 = measured.iter().map(|d| d.cpu_secs).sum();
    println!(
        "| all | {:.2} | {:.0} |",
        total * 1e6 / (per_day * days) as f64,
        measured.iter().map(|d| d.wall_secs).sum::<f64>()
    );
    if let (Some(first), Some(last)) = (measured.first(), measured.last()) {
        println!(
            "last day / first day: {:.2}; CPU before consuming {startup_cpu:.2} s; peak RSS {} MiB \
             (bound {} MiB)",
            last.cpu_secs / first.cpu_secs,
            peak_rss / MIB,
            bound / MIB
        );
    }
    if peak_rss > bound {
        eprintln!(
            "kafka_to_lake: peak RSS {} MiB is above the memory bound meterline logged ({} MiB)",
            peak_rss / MIB,
            bound / MIB
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn print_table(shape: &Shape, runs: &[Run], s3: bool) {
    let drain = &runs[0];
    println!();
    println!(
        "kafka_to_lake: {}, into a {}",
        shape.describe(),
        if s3 {
            "lake on S3 (moto)"
        } else {
            "local lake"
        }
    );
    println!(
        "| run | wall readings/s | CPU-µs per reading | rate / drain | peak RSS MiB | bound MiB | first 10 % µs | last 10 % µs | last / first |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let (first, last, ratio) = match r.tenths {
            Some((f, l)) => (
                format!("{f:.1}"),
                format!("{l:.1}"),
                format!("{:.2}", l / f),
            ),
            None => ("".into(), "".into(), "".into()),
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {first} | {last} | {ratio} |",
            r.name,
            r.rate(),
            r.cpu_us_per_reading(),
            r.rate() / drain.rate(),
            r.peak_rss / MIB,
            r.bound.map(|b| (b / MIB).to_string()).unwrap_or_default(),
        );
    }
    if let [_, off, on] = runs {
        println!(
            "| aggregate materializer (on - off) | | {:.2} | | | | | | |",
            on.cpu_us_per_reading() - off.cpu_us_per_reading()
        );
    }
    println!();
    for r in runs.iter().filter(|r| r.tenths.is_some()) {
        let deciles: Vec<String> = r.deciles.iter().map(|d| format!("{d:.1}")).collect();
        println!(
            "{}: CPU before consuming {:.2} s; CPU-µs per reading by tenth: {}",
            r.name,
            r.startup_cpu,
            deciles.join(" ")
        );
    }
}

/// The benchmark: drain, meterline without and with aggregates, one topic.
async fn measure(tools: &Tools) -> ExitCode {
    let shape_name = std::env::var("KAFKA_TO_LAKE_SHAPE");
    let order = match shape_name.as_deref() {
        Ok("morning" | "daily") => Order::Morning,
        Ok("live") => Order::Live,
        Ok("backfill") | Err(_) => Order::Backfill,
        Ok(other) => {
            eprintln!("KAFKA_TO_LAKE_SHAPE={other}: expected backfill, morning, daily or live");
            return ExitCode::FAILURE;
        }
    };
    let daily = shape_name.as_deref() == Ok("daily");
    let meters = env_usize("KAFKA_TO_LAKE_METERS", 2_000);
    let hours = match order {
        Order::Morning => 24 * env_usize("KAFKA_TO_LAKE_DAYS", 7),
        _ => env_usize("KAFKA_TO_LAKE_HOURS", 480),
    };
    let shape = Shape {
        order,
        meters,
        hours,
    };
    // KAFKA_TO_LAKE_BROKER=memory: tansu keeps the records in memory, for
    // backlogs of millions (METERLINE_TANSU must then be a tansu built with its
    // `dynostore` feature; see the README's Performance).
    let broker = match std::env::var("KAFKA_TO_LAKE_BROKER").as_deref() {
        Ok("memory") => Broker::start_in_memory(tools),
        Ok("sqlite") | Err(_) => Broker::start(tools),
        Ok(other) => {
            eprintln!("KAFKA_TO_LAKE_BROKER={other}: expected sqlite or memory");
            return ExitCode::FAILURE;
        }
    };
    let topic = unique_name("readings");
    create_topics(&broker, &topic);
    // KAFKA_TO_LAKE_AGGREGATES=off|on runs meterline once (default: both; the
    // daily shape runs once, with aggregates on unless `off`).
    let which = std::env::var("KAFKA_TO_LAKE_AGGREGATES").unwrap_or_default();
    // KAFKA_TO_LAKE_LAKE=s3: the lake on an S3 server (moto) instead of a directory.
    let s3 = match std::env::var("KAFKA_TO_LAKE_LAKE").as_deref() {
        Ok("s3") => Some(S3Server::start(tools)),
        Ok("local") | Err(_) => None,
        Ok(other) => {
            eprintln!("KAFKA_TO_LAKE_LAKE={other}: expected local or s3");
            return ExitCode::FAILURE;
        }
    };
    if daily {
        // Produced day by day while meterline runs: no preloaded topic to drain.
        let knobs = Knobs {
            aggregates: which != "off",
            max_batch_rows: None,
            s3: s3.as_ref(),
        };
        return run_by_day(&broker, &topic, &shape, &knobs).await;
    }
    eprintln!("kafka_to_lake: producing {}", shape.describe());
    produce(&broker, &topic, &shape, 0..shape.readings()).await;
    let total = shape.readings();
    let mut runs = vec![run_drain(&broker, &topic, total)];
    for aggregates in [false, true] {
        if which == "on" && !aggregates || which == "off" && aggregates {
            continue;
        }
        runs.push(run_meterline(
            &broker,
            &topic,
            total,
            &Knobs {
                aggregates,
                max_batch_rows: None,
                s3: s3.as_ref(),
            },
        ));
    }
    print_table(&shape, &runs, s3.is_some());
    // The bound meterline logs is what a pod is sized from: a peak above it fails.
    let over: Vec<&Run> = runs
        .iter()
        .filter(|r| r.bound.is_some_and(|b| r.peak_rss > b))
        .collect();
    for r in &over {
        eprintln!(
            "kafka_to_lake: {}: peak RSS {} MiB is above the memory bound meterline logged ({} MiB)",
            r.name,
            r.peak_rss / MIB,
            r.bound.unwrap_or(0) / MIB
        );
    }
    if over.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The test: a backfill whose last tenth costs no more than 1.5 times its first.
async fn guard(tools: &Tools) -> ExitCode {
    let shape = Shape {
        order: Order::Backfill,
        meters: 1_000,
        hours: 300,
    };
    let broker = Broker::start(tools);
    let topic = unique_name("readings");
    create_topics(&broker, &topic);
    produce(&broker, &topic, &shape, 0..shape.readings()).await;
    let run = run_meterline(
        &broker,
        &topic,
        shape.readings(),
        // Aggregates off: the guard is about the path of a reading to `readings`
        // (the bench measures the materializer on top).
        &Knobs {
            aggregates: false,
            max_batch_rows: Some(10_000),
            s3: None,
        },
    );
    let (first, last) = run.tenths.expect("tenths");
    println!(
        "{TEST}: {}: CPU-µs per reading {:.1} over the first tenth, {:.1} over the last ({:.2}x)",
        shape.describe(),
        first,
        last,
        last / first
    );
    if last / first > GUARD_RATIO {
        eprintln!(
            "{TEST}: the last tenth of the readings cost {:.2} times the first (bound \
             {GUARD_RATIO}): the cost per reading grows with what the lake holds",
            last / first
        );
        println!("test {TEST} ... FAILED");
        ExitCode::FAILURE
    } else {
        println!("test {TEST} ... ok");
        ExitCode::SUCCESS
    }
}
