//! Bounded memory with a large backlog and a stalled lake.
//!
//! For each backlog size, a fresh tansu broker and S3 server (moto) are started,
//! the backlog is produced, and a real `meterline run` (this binary re-executed
//! with `--meterline-run`) starts with the default pipeline knobs. After its first
//! commit the S3 server is frozen (SIGSTOP), so the pipeline fills its buffers,
//! stops consuming, and retries; resident memory is sampled from `/proc` for
//! `HOLD` and the peak (VmHWM) is reported against the bound meterline logs at
//! start (`memory_bound_mib`, from `Settings::memory_bound_bytes`).
//!
//! - `cargo bench --bench kafka_to_lake -- backlog_memory` (about 8 minutes)
//!   measures a baseline backlog of twice the batch size (400,000) and a large
//!   one (2,000,000): the buffers are full in both runs, so a ratio near 1 means
//!   memory does not grow with the backlog.
//! - Without `--bench`, as `cargo test --all-targets` (and so `scripts/test.sh`)
//!   runs it, one test ([`TEST`]): a backlog of 200,000 readings, more than the
//!   buffers take once S3 is frozen; it fails unless consumption waited and the
//!   peak resident memory (VmHWM) stayed under the logged bound (a few minutes).
//!
//! Both need the tools of `scripts/test.sh`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::support::{metric, proc_status, send_all};
use crate::MIB;
use chrono::NaiveDate;
use meterline::dev::generator::GeneratorSpec;
use meterline::dev::testkit::{unique_name, Broker, S3Server, Tools};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;

const HOLD: Duration = Duration::from_secs(30);

/// The test run without `--bench`.
pub const TEST: &str = "backlog_memory_stays_under_the_logged_bound";
/// The measurement run with `--bench`.
pub const BENCH: &str = "backlog_memory";
/// Its backlog: the default knobs buffer about 77,000 readings once S3 is frozen
/// (batch and channel full), so 200,000 leave the pipeline waiting with full
/// buffers.
const TEST_BACKLOG: usize = 200_000;

/// The test: peak resident memory under the bound meterline logs at start, with a
/// backlog that fills the buffers while S3 is frozen.
pub async fn check_bound(tools: &Tools) -> ExitCode {
    let m = measure(tools, TEST_BACKLOG).await;
    println!(
        "{TEST}: backlog {} readings, S3 frozen: peak RSS (VmHWM) {} MiB, logged bound {} MiB, \
         consumed while stalled {}, consumption waiting {}",
        m.backlog,
        m.peak_rss / MIB,
        m.bound / MIB,
        m.consumed,
        m.paused
    );
    let mut failures = Vec::new();
    if !m.paused {
        failures.push(
            "consumption did not wait while S3 was frozen: the buffers never filled, so the \
             bound was not put to the test"
                .to_owned(),
        );
    }
    if m.peak_rss > m.bound {
        failures.push(format!(
            "peak resident memory {} MiB is above the bound meterline logged ({} MiB)",
            m.peak_rss / MIB,
            m.bound / MIB
        ));
    }
    if failures.is_empty() {
        println!("test {TEST} ... ok");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("{TEST}: {f}");
        }
        println!("test {TEST} ... FAILED");
        ExitCode::FAILURE
    }
}

/// The benchmark: a baseline and a large backlog (`BACKLOG_MEMORY_SIZES`
/// overrides them).
pub async fn compare_backlogs(tools: &Tools) -> ExitCode {
    // BACKLOG_MEMORY_SIZES=small,large overrides the backlogs (for quick experiments).
    let sizes: Vec<usize> = std::env::var("BACKLOG_MEMORY_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| v.len() == 2)
        .unwrap_or_else(|| vec![400_000, 2_000_000]);
    let baseline = measure(tools, sizes[0]).await;
    let large = measure(tools, sizes[1]).await;
    println!();
    println!("backlog_memory (S3 frozen after the first commit, default pipeline knobs)");
    for m in [&baseline, &large] {
        println!(
            "  backlog {:>9} readings: peak RSS {:>5} MiB, bound {:>5} MiB, consumed while stalled {:>8}, paused {}",
            m.backlog,
            m.peak_rss / MIB,
            m.bound / MIB,
            m.consumed,
            m.paused
        );
    }
    println!(
        "  ratio peak({}) / peak({}): {:.2}",
        large.backlog,
        baseline.backlog,
        large.peak_rss as f64 / baseline.peak_rss as f64
    );
    let within = [&baseline, &large].iter().all(|m| m.peak_rss <= m.bound);
    println!(
        "  {}",
        if within {
            "within the configured bound"
        } else {
            "ABOVE the configured bound"
        }
    );
    if within {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Measurement {
    backlog: usize,
    peak_rss: u64,
    bound: u64,
    consumed: u64,
    paused: bool,
}

async fn produce(broker: &Broker, topic: &str, backlog: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer");
    let mut left = backlog;
    let mut day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    while left > 0 {
        // One local day of 4,000 meters at a time (about 170,000 readings).
        let spec = GeneratorSpec {
            meters: 4_000,
            first_day: day,
            days: 1,
            timezone: chrono_tz::Europe::Oslo,
            bad: 0,
            seed: left as u64,
        };
        let messages = spec.generate();
        let take = messages.len().min(left);
        send_all(
            &producer,
            topic,
            messages[..take].iter().map(|m| (&m.key, &m.payload)),
        )
        .await;
        left -= take;
        day = day.succ_opt().unwrap();
    }
    producer
        .flush(Timeout::After(Duration::from_secs(60)))
        .unwrap();
}

async fn measure(tools: &Tools, backlog: usize) -> Measurement {
    let broker = Broker::start(tools);
    let s3 = S3Server::start(tools);
    let topic = unique_name("backlog");
    let bucket = unique_name("lake");
    broker.create_topic(&topic, 4);
    s3.create_bucket(&bucket);
    eprintln!("backlog_memory: producing {backlog} readings");
    produce(&broker, &topic, backlog).await;

    let port = meterline::dev::testkit::free_port();
    let options: String = s3
        .storage_options()
        .into_iter()
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meterline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
readings_topic = "{topic}"
[lake]
uri = "s3://{bucket}/lake"
[lake.storage_options]
{options}
[metrics]
listen = "127.0.0.1:{port}"
[[tenants]]
id = "oslo-utility"
deployment = "public"
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
            brokers = broker.bootstrap(),
            group = unique_name("bench"),
        ),
    )
    .unwrap();
    let mut process = crate::spawn_meterline(
        &config,
        "warn,meterline::service=info,meterline_sinks=debug,buoyant_kernel=off",
    );
    let start_line = process.wait_line(0, Duration::from_secs(120), |l| {
        l.contains("pipeline started")
    });
    let bound = crate::support::logged_bound(
        &process.lines_matching(|l| l.contains("pipeline started"))[0],
    );
    process.wait_line(start_line, Duration::from_secs(300), |l| {
        l.contains("committed") && l.contains("version=")
    });
    s3.server.pause();
    let started = Instant::now();
    let consumed_at_stall = loop {
        // The stall begins when the next flush blocks; from then on nothing more
        // may be consumed once the channel is full.
        let v = metric(port, "meterline_records_consumed_total");
        if v.is_finite() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut peak = 0;
    while started.elapsed() < HOLD {
        if let Some(rss) = proc_status(process.pid(), "VmRSS:") {
            peak = peak.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consumed_end = metric(port, "meterline_records_consumed_total");
    let paused = metric(port, "meterline_consumer_paused") == 1.0;
    let hwm = proc_status(process.pid(), "VmHWM:").unwrap_or_else(|| {
        panic!(
            "no VmHWM in /proc/{}/status: meterline exited",
            process.pid()
        )
    });
    s3.server.resume();
    let _ = process.terminate(Duration::from_secs(60));
    Measurement {
        backlog,
        peak_rss: peak.max(hwm),
        bound,
        consumed: (consumed_end - consumed_at_stall).max(0.0) as u64,
        paused,
    }
}
