//! `meterline demo`: the whole path on one machine, nothing to install.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster), a generator
//! producing a public and a private tenant's readings over days that include a DST
//! change (plus a few bad records), the real pipeline into a local Delta lake, and a
//! summary computed from the lake itself with SQL. Exits non-zero when the counts do
//! not add up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::{KafkaConfig, PipelineConfig, Settings};
use crate::dev::generator::{GeneratorSpec, PRIVATE_TENANT, PUBLIC_TENANT};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use meterline_operators::MasterKey;
use meterline_sinks::LakeConfig;

/// Marker file that makes a directory a demo lake the demo may wipe.
const MARKER: &str = ".meterline-demo";

/// Options of `meterline demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub lake: PathBuf,
    pub meters: usize,
    pub days: u32,
    pub first_day: NaiveDate,
    pub partitions: i32,
    pub bad: usize,
}

/// Corrections of the first readings of `device`: a newer version of three of
/// them (stored; `readings_current` shows the new value), that newer version again
/// (a duplicate, dropped) and one original again (an older version, ignored).
fn corrections(
    messages: &[crate::dev::generator::Message],
    device: &str,
) -> Vec<crate::dev::generator::Message> {
    let originals: Vec<serde_json::Value> = messages
        .iter()
        .filter(|m| m.key == device && m.bad_reason.is_none())
        .take(3)
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect();
    let mut out = Vec::new();
    let message = |v: &serde_json::Value| crate::dev::generator::Message {
        key: device.to_owned(),
        payload: v.to_string().into_bytes(),
        bad_reason: None,
    };
    let mut newer = Vec::new();
    for v in &originals {
        let mut n = v.clone();
        let version = v["version"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t + chrono::Duration::days(2))
            .unwrap_or_default();
        n["version"] = serde_json::json!(version.to_rfc3339());
        n["value"] = serde_json::json!(
            ((v["value"].as_f64().unwrap_or(0.0) + 0.5) * 1000.0).round() / 1000.0
        );
        newer.push(n);
    }
    out.extend(newer.iter().map(message));
    if let (Some(first), Some(original)) = (newer.first(), originals.get(1)) {
        out.push(message(first));
        out.push(message(original));
    }
    out
}

/// What the demo found in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    pub produced: u64,
    pub stored: u64,
    pub dead_lettered: BTreeMap<String, u64>,
    pub dropped: u64,
}

impl DemoReport {
    pub fn dead_total(&self) -> u64 {
        self.dead_lettered.values().sum()
    }

    pub fn adds_up(&self) -> bool {
        self.produced == self.stored + self.dead_total() + self.dropped
    }
}

/// Prepare the demo directory: create it, or wipe it when it is a previous demo's.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a meterline demo lake; choose another --lake",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "created by `meterline demo`; safe to delete\n",
    )?;
    Ok(())
}

/// The demo's pseudonym key: kept next to the lake (never inside it), created once.
fn demo_key(lake: &Path) -> anyhow::Result<std::sync::Arc<MasterKey>> {
    let path = lake
        .parent()
        .map(|p| p.join("demo-pseudonym.key"))
        .unwrap_or_else(|| PathBuf::from("demo-pseudonym.key"));
    if let Ok(text) = std::fs::read_to_string(&path).map(zeroize::Zeroizing::new) {
        if let Ok(key) = MasterKey::from_hex(&text) {
            return Ok(key.into());
        }
    }
    let key = MasterKey::from_bytes(rand::random());
    write_private(&path, &key.to_hex())?;
    Ok(key.into())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)?;
    Ok(())
}

/// Run the demo and print its summary.
///
/// # Errors
/// Any failure, including counts that do not add up.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let lake_dir = std::path::absolute(&opts.lake)?;
    prepare(&lake_dir)?;
    let key = demo_key(&lake_dir)?;
    let topic = "meter.readings";

    let cluster = MockCluster::new(3).context("start the in-process Kafka mock cluster")?;
    cluster
        .create_topic(topic, opts.partitions, 1)
        .context("create topic")?;
    let brokers = cluster.bootstrap_servers();
    let lake = LakeConfig {
        uri: lake_dir.to_string_lossy().into_owned(),
        storage_options: Default::default(),
    };
    let settings = demo_settings(&brokers, topic, &lake, key)?;
    let aggregate_tenants = settings.tenants.clone();
    let cost_tenants = settings.tenants.clone();
    let messages = demo_messages(&opts);
    let produced = messages.len() as u64;

    // Pipeline first (it consumes while the generator produces).
    let metrics = Metrics::new();
    let shutdown = Arc::new(Shutdown::default());
    let pipeline = tokio::spawn(crate::service::run_pipeline(
        settings,
        metrics.clone(),
        shutdown.clone(),
    ));
    produce(&brokers, topic, &messages).await?;
    println!(
        "produced {produced} records to {topic} ({} partitions)",
        opts.partitions
    );
    // Wait (with a deadline) until every produced record is accounted for.
    let deadline = Instant::now() + Duration::from_secs(110);
    loop {
        let c = metrics.conservation();
        if c.written + c.dead_lettered + c.dropped >= produced || pipeline.is_finished() {
            break;
        }
        if Instant::now() > deadline {
            shutdown.request();
            bail!(
                "timed out: {} of {produced} records accounted for",
                c.written + c.dead_lettered + c.dropped
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.request();
    pipeline.await??;
    drop(cluster);

    // The report comes from the lake, not from counters.
    let mut materializer = crate::aggregate::Materializer::open(
        &meterline_sinks::Lake::new(&lake)?,
        aggregate_tenants,
        crate::config::AggregateSettings::default(),
        metrics.clone(),
    )
    .await?;
    let folded = materializer.round().await?;
    let economics = economics(&opts, &lake, cost_tenants).await?;
    let report = DemoReport {
        produced,
        stored: count(&lake, "SELECT count(*) FROM readings").await?,
        dead_lettered: dead_letters_by_reason(&lake).await?,
        dropped: metrics.conservation().dropped,
    };
    print_summary(&opts, &lake, &lake_dir, &report, &folded, started.elapsed()).await?;
    let _ = economics;
    if !report.adds_up() {
        bail!(
            "counts do not add up: produced {} != stored {} + dead-lettered {} + dropped {}",
            report.produced,
            report.stored,
            report.dead_total(),
            report.dropped
        );
    }
    Ok(report)
}

/// Prices, profiles, temperatures and a tariff for the private customer's meters, the cost
/// tables, and one customer's month printed (`dev/economics.rs`).
async fn economics(
    opts: &DemoOptions,
    lake: &LakeConfig,
    tenants: meterline_operators::TenantRegistry,
) -> anyhow::Result<crate::cost::CostRound> {
    let spec = GeneratorSpec {
        meters: opts.meters,
        first_day: opts.first_day,
        days: opts.days,
        timezone: chrono_tz::Europe::Oslo,
        bad: opts.bad,
        seed: 20261025,
    };
    let handle = meterline_sinks::Lake::new(lake)?;
    let inputs = crate::dev::economics::write_inputs(&handle, &spec, &tenants).await?;
    let round = crate::dev::economics::materialize(&handle, tenants).await?;
    println!(
        "energy economics: {} quarter prices (NO1), {} meter profiles, {} temperatures and {} grid tariff(s) through the input decoders; {} meter-hours priced into cost_hourly",
        inputs.prices, inputs.profiles, inputs.observations, inputs.tariffs, round.hours
    );
    crate::dev::economics::print_month(lake, &spec.meter(1).2).await?;
    println!();
    Ok(round)
}

/// The demo's service: the mock cluster, the local lake, the generator's tenants.
fn demo_settings(
    brokers: &str,
    topic: &str,
    lake: &LakeConfig,
    key: std::sync::Arc<MasterKey>,
) -> anyhow::Result<Settings> {
    let clock = crate::config::clock_from_env()?;
    Ok(Settings {
        compaction: crate::config::CompactionConfig::default(),
        kafka: KafkaConfig {
            brokers: brokers.to_owned(),
            group_id: "meterline-demo".into(),
            readings_topic: topic.into(),
            properties: Default::default(),
            secret_files: Default::default(),
            allow_plaintext: false,
        },
        lake: lake.clone(),
        pipeline: PipelineConfig {
            flush_interval_secs: 1,
            ..PipelineConfig::default()
        },
        metrics_listen: None,
        tenants: crate::dev::generator::tenants(),
        key: Some(key),
        dead_letters: Default::default(),
        special_category_fields: meterline_operators::sensitive::DEFAULT_SPECIAL_CATEGORY_FIELDS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        // One explicit round after the pipeline stops (see `run`), so the demo's
        // output does not depend on when a timed round happens to run.
        aggregate: crate::config::AggregateSettings {
            enabled: false,
            ..Default::default()
        },
        // No erasure topic in the demo; retention defaults (dead letters 14 days).
        lifecycle: crate::config::LifecycleSettings {
            clock,
            ..Default::default()
        },
        clock,
        allow_versioned_bucket: false,
        inputs: Default::default(),
        economics: Default::default(),
    })
}

/// The generator's readings and bad records, then Elhub-style corrections of the
/// showcased meter (sent after its readings); prints what they are.
fn demo_messages(opts: &DemoOptions) -> Vec<crate::dev::generator::Message> {
    let spec = GeneratorSpec {
        meters: opts.meters,
        first_day: opts.first_day,
        days: opts.days,
        timezone: chrono_tz::Europe::Oslo,
        bad: opts.bad,
        seed: 20261025,
    };
    let mut messages = spec.generate();
    let corrections = corrections(&messages, &spec.meter(1).1);
    let n_corrections = corrections.len();
    messages.extend(corrections);
    println!(
        "meterline demo: {} meters ({} public, {} private), {} day(s) from {}, {} readings + {} bad records + {} corrections",
        opts.meters,
        opts.meters.div_ceil(2),
        opts.meters / 2,
        opts.days,
        opts.first_day,
        spec.good_count(),
        opts.bad,
        n_corrections
    );
    messages
}

/// Produce every message and wait for each delivery.
async fn produce(
    brokers: &str,
    topic: &str,
    messages: &[crate::dev::generator::Message],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("create producer")?;
    let mut pending = Vec::with_capacity(messages.len());
    for m in messages {
        let record = FutureRecord::to(topic).key(&m.key).payload(&m.payload);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    }
    for f in pending {
        f.await
            .context("delivery future dropped")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    Ok(())
}

async fn dead_letters_by_reason(lake: &LakeConfig) -> anyhow::Result<BTreeMap<String, u64>> {
    let by_reason = crate::query::sql::query(
        lake,
        "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason",
    )
    .await?;
    let mut dead_lettered = BTreeMap::new();
    for b in &by_reason {
        let reasons = b.column(0).as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            dead_lettered.insert(reasons.value(i).to_owned(), counts.value(i) as u64);
        }
    }
    Ok(dead_lettered)
}

async fn count(lake: &LakeConfig, sql: &str) -> anyhow::Result<u64> {
    let batches = crate::query::sql::query(lake, sql).await?;
    let b = batches.first().context("count query returned nothing")?;
    Ok(b.column(0).as_primitive::<Int64Type>().value(0) as u64)
}

/// The hourly consumption of one private meter on the DST day (the first day
/// when there is none in range).
async fn print_dst_day(opts: &DemoOptions, lake: &LakeConfig, meter: &str) -> anyhow::Result<()> {
    let dst_day = opts
        .first_day
        .iter_days()
        .take(opts.days as usize)
        .find(|d| {
            let tz = chrono_tz::Europe::Oslo;
            let start = crate::dev::generator::local_midnight(tz, *d);
            let end = crate::dev::generator::local_midnight(tz, *d + chrono::Duration::days(1));
            (end - start).num_hours() != 24
        })
        .unwrap_or(opts.first_day);
    let hourly = crate::query::sql::query(
        lake,
        &format!(
            "SELECT interval_start, sum(value) AS kwh FROM readings_current \
             WHERE tenant = '{PRIVATE_TENANT}' AND meter = '{meter}' AND local_date = DATE '{dst_day}' \
             GROUP BY interval_start ORDER BY interval_start"
        ),
    )
    .await?;
    println!();
    println!(
        "hourly consumption, meter {meter} ({PRIVATE_TENANT}), local date {dst_day} (Europe/Oslo):"
    );
    println!("  {:<27} {:>9}", "local hour", "kWh");
    let mut hours = 0;
    for b in &hourly {
        let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
        let kwh = b.column(1);
        let kwh = arrow::util::display::ArrayFormatter::try_new(kwh.as_ref(), &Default::default())?;
        for i in 0..b.num_rows() {
            let utc = DateTime::from_timestamp_micros(ts.value(i)).unwrap_or_default();
            let local = utc.with_timezone(&chrono_tz::Europe::Oslo);
            println!(
                "  {:<27} {:>9}",
                local.format("%Y-%m-%d %H:%M %:z"),
                kwh.value(i)
            );
            hours += 1;
        }
    }
    println!("  ({hours} hours on this local day)");
    Ok(())
}

/// The showcased meter's daily consumption and the public tenant's area cells,
/// from the aggregate tables.
async fn print_aggregates(
    lake: &LakeConfig,
    meter: &str,
    folded: &crate::aggregate::Round,
) -> anyhow::Result<()> {
    let daily = crate::query::sql::query(
        lake,
        &format!(
            "SELECT local_date, intervals AS hours, expected_intervals AS expected, complete, value AS kwh \
             FROM consumption_daily \
             WHERE tenant = '{PRIVATE_TENANT}' AND meter = '{meter}' AND direction = 'import' \
             ORDER BY local_date"
        ),
    )
    .await?;
    println!();
    println!(
        "daily consumption, same meter, from consumption_daily ({} local days folded from readings version {}):",
        folded.partitions,
        folded.folded.map_or_else(|| "-".into(), |v| v.to_string())
    );
    println!(
        "{}",
        crate::query::sql::render(&daily, crate::query::sql::Format::Table)?
    );
    let area = crate::query::sql::query(
        lake,
        &format!(
            "SELECT area, local_date, meters, value AS kwh FROM area_consumption_daily \
             WHERE tenant = '{PUBLIC_TENANT}' AND direction = 'import' ORDER BY area, local_date"
        ),
    )
    .await?;
    println!();
    println!(
        "area consumption of the public tenant, from area_consumption_daily (cells of fewer than 10 meters are not written):"
    );
    println!(
        "{}",
        crate::query::sql::render(&area, crate::query::sql::Format::Table)?
    );
    Ok(())
}

async fn print_summary(
    opts: &DemoOptions,
    lake: &LakeConfig,
    lake_dir: &Path,
    r: &DemoReport,
    folded: &crate::aggregate::Round,
    elapsed: Duration,
) -> anyhow::Result<()> {
    println!();
    println!("== summary (from the lake) ==");
    println!("records produced      {:>10}", r.produced);
    println!("readings stored       {:>10}", r.stored);
    println!("dead-lettered         {:>10}", r.dead_total());
    for (reason, n) in &r.dead_lettered {
        println!("  {reason:<20}{n:>10}");
    }
    println!(
        "intentionally dropped {:>10}  (a duplicate and an older version)",
        r.dropped
    );
    println!(
        "check: {} = {} + {} + {}  -> {}",
        r.produced,
        r.stored,
        r.dead_total(),
        r.dropped,
        if r.adds_up() { "OK" } else { "MISMATCH" }
    );
    let current = count(lake, "SELECT count(*) FROM readings_current").await?;
    println!(
        "readings_current      {current:>10}  (one row per meter and interval; {} superseded by a correction stay in readings)",
        r.stored.saturating_sub(current)
    );
    let flagged = count(
        lake,
        "SELECT count(*) FROM readings WHERE flags IS NOT NULL",
    )
    .await?;
    println!("flagged readings      {flagged:>10}  (passed validation with a remark, see readings.flags)");

    // One private meter (identifiers readable) on the DST day, if it is in range.
    let meter = crate::dev::generator::gsrn(2); // meter index 1: private, hourly
    print_dst_day(opts, lake, &meter).await?;
    print_aggregates(lake, &meter, folded).await?;
    let public_meters = count(
        lake,
        &format!("SELECT count(DISTINCT meter) FROM readings WHERE tenant = '{PUBLIC_TENANT}'"),
    )
    .await?;
    println!(
        "{PUBLIC_TENANT} is public: its {public_meters} meters are stored only as keyed pseudonyms, without subject or pii."
    );
    println!();
    println!("lake: {}", lake_dir.display());
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "meterline".into());
    println!("query it:");
    println!(
        "  {exe} sql --lake {} \"SELECT tenant, local_date, count(*) AS readings, sum(value) AS kwh FROM readings GROUP BY tenant, local_date ORDER BY tenant, local_date\"",
        lake_dir.display()
    );
    println!("finished in {:.1}s", elapsed.as_secs_f64());
    Ok(())
}
