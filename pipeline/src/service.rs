//! `meterline run`: wire the Kafka thread, the pipeline task and the metrics
//! endpoint together, and stop them in order.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use meterline_sinks::Lake;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::config::{Config, Settings};
use crate::ingest::{RunError, Runner};
use crate::kafka::{KafkaSource, Subscription};
use crate::metrics::Metrics;
use crate::privacy::consent::{consent_loop, load_view, ConsentHandle};
use crate::shutdown::Shutdown;

/// Run the pipeline until `shutdown` is requested (then flush, commit and return)
/// or an unrecoverable error occurs.
///
/// # Errors
/// See [`RunError`].
pub async fn run_pipeline(
    settings: Settings,
    metrics: Metrics,
    shutdown: Arc<Shutdown>,
) -> Result<(), RunError> {
    // One clock for every task: the sweeps and erasures read `settings.clock` too.
    let mut settings = settings;
    settings.lifecycle.clock = settings.clock;
    // Every writer of this process and the orphan sweep agree on the age.
    meterline_sinks::set_orphan_age(settings.lifecycle.orphan_age);
    let (tx, rx) = mpsc::channel(settings.pipeline.channel_capacity);
    let (commits_tx, commits_rx) = std::sync::mpsc::channel();
    let mut runner = Runner::new(&settings, metrics.clone(), commits_tx, shutdown.clone()).await?;
    let consent = match start_consent(&settings, &shutdown).await? {
        Some((handle, task)) => {
            runner = runner.with_consent(handle);
            Some(task)
        }
        None => None,
    };
    let grace = Duration::from_secs(settings.pipeline.shutdown_grace_secs);
    let source = KafkaSource::start(
        &settings.kafka,
        Subscription::readings(&settings.kafka),
        settings.pipeline.chunk_max_records,
        tx,
        commits_rx,
        metrics.clone(),
        grace,
    )
    .map_err(|e| RunError::Config(format!("kafka: {e}")))?;
    info!(
        topic = %settings.kafka.readings_topic,
        group = %settings.kafka.group_id,
        lake = %settings.lake.uri,
        memory_bound_mib = settings.memory_bound_bytes() / (1024 * 1024),
        "pipeline started"
    );
    metrics
        .memory_bound
        .set(i64::try_from(settings.memory_bound_bytes()).unwrap_or(i64::MAX));
    let stopper = {
        let handle = source.stop_handle();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.requested().await;
            info!("shutdown requested; flushing");
            handle.stop();
        })
    };
    // The rates costs are computed with, for SQL: a failure here stops nothing.
    match crate::inputs::rates::publish(&Lake::new(&settings.lake)?, &settings.economics.rates)
        .await
    {
        Ok(true) => info!("tax_rates written (the configured rates changed)"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "tax_rates not written; the next start tries again"),
    }
    let tasks = Tasks::spawn(&settings, &metrics, &shutdown, consent)?;
    let result = runner.run(rx).await;
    shutdown.request();
    tasks.stop(grace).await;
    // However the runner ended, stop the Kafka thread and wait for it.
    source.stop();
    stopper.abort();
    let _ = tokio::task::spawn_blocking(move || source.join()).await;
    log_ledger(&metrics);
    result
}

/// The consent state (Elhub consent, upgrades) from the ledger, when subject events
/// are consumed: loaded once before the first record, then kept current by its own
/// task.
async fn start_consent(
    settings: &Settings,
    shutdown: &Arc<Shutdown>,
) -> Result<Option<(ConsentHandle, JoinHandle<()>)>, RunError> {
    let Some(key) = settings.key.as_ref() else {
        return Ok(None);
    };
    if settings.lifecycle.subject_events_topic.is_empty() {
        return Ok(None);
    }
    let lake = Lake::new(&settings.lake)?;
    let handle: ConsentHandle = Arc::default();
    match load_view(&lake, key).await {
        Ok(view) => {
            if let Ok(mut slot) = handle.write() {
                *slot = view.map(Arc::new);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "consent state not loaded yet; readings that need consent are dropped until it is")
        }
    }
    let task = tokio::spawn(consent_loop(
        lake,
        key.clone(),
        handle.clone(),
        shutdown.clone(),
    ));
    Ok(Some((handle, task)))
}

/// The tasks beside the readings runner, each with its own table handles, so a
/// slow one never holds up consumption.
struct Tasks {
    aggregates: Option<JoinHandle<()>>,
    /// Name and task of the others (stopped in this order).
    others: Vec<(&'static str, JoinHandle<()>)>,
}

/// After each retention sweep: `meterline audit`'s checks as gauges
/// (`meterline_audit_violations{check}`, `meterline_erasures_pending`). An audit that
/// cannot read the lake leaves the gauges as they were, and says so.
fn audit_gauges(settings: &Settings, metrics: &Metrics) -> crate::privacy::lifecycle::AfterSweep {
    let (settings, metrics) = (Arc::new(settings.clone()), metrics.clone());
    Arc::new(move || {
        let (settings, metrics) = (settings.clone(), metrics.clone());
        Box::pin(async move {
            let now = settings.clock.now();
            match crate::query::audit::report(&settings, None, now).await {
                Ok(report) => report.set_gauges(&metrics),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "audit after the sweep failed; its gauges keep their values")
                }
            }
        })
    })
}

impl Tasks {
    fn spawn(
        settings: &Settings,
        metrics: &Metrics,
        shutdown: &Arc<Shutdown>,
        consent: Option<JoinHandle<()>>,
    ) -> Result<Self, RunError> {
        // The aggregate tables follow `readings`.
        let aggregates = if settings.aggregate.enabled {
            Some(tokio::spawn(crate::aggregate::run_loop(
                Lake::new(&settings.lake)?,
                settings.tenants.clone(),
                settings.aggregate.clone(),
                metrics.clone(),
                shutdown.clone(),
            )))
        } else {
            None
        };
        let mut others = Vec::new();
        // The cost tables follow their inputs (private tenants only).
        if settings.aggregate.enabled {
            others.push((
                "costs",
                tokio::spawn(crate::cost::run_loop(
                    Lake::new(&settings.lake)?,
                    settings.tenants.clone(),
                    settings.aggregate.clone(),
                    settings.economics.rates.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        others.push((
            "retention",
            tokio::spawn(crate::privacy::lifecycle::retention_loop(
                Lake::new(&settings.lake)?,
                settings.clone(),
                metrics.clone(),
                shutdown.clone(),
                Some(audit_gauges(settings, metrics)),
            )),
        ));
        if settings.compaction.enabled {
            others.push((
                "compaction",
                tokio::spawn(crate::compact::run_loop(
                    settings.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        if !settings.lifecycle.erasure_topic.is_empty() {
            others.push((
                "erasure",
                tokio::spawn(crate::privacy::erasure::run_loop(
                    settings.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        if !settings.lifecycle.subject_events_topic.is_empty() {
            others.push((
                "subjects",
                tokio::spawn(crate::privacy::subjects::run_loop(
                    settings.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        others.extend(consent.map(|task| ("consent", task)));
        for input in crate::inputs::Input::enabled(&settings.inputs) {
            others.push((
                input.name(),
                tokio::spawn(crate::inputs::run_loop(
                    settings.clone(),
                    input,
                    metrics.clone(),
                    shutdown.clone(),
                )),
            ));
        }
        Ok(Self { aggregates, others })
    }

    /// Wait for each task (shutdown has been requested), at most `grace` each: a
    /// round in progress finishes its current commit.
    async fn stop(self, grace: Duration) {
        if let Some(task) = self.aggregates {
            if tokio::time::timeout(grace, task).await.is_err() {
                info!("aggregates: round still running at shutdown; the next start continues it");
            }
        }
        for (name, task) in self.others {
            if tokio::time::timeout(grace, task).await.is_err() {
                info!(
                    task = name,
                    "still running at shutdown; the next start repeats it"
                );
            }
        }
    }
}

/// The process's ledger: every record it consumed is accounted for (records still
/// in flight at a crash are consumed again by the next owner).
fn log_ledger(metrics: &Metrics) {
    let c = metrics.conservation();
    info!(
        consumed = c.consumed,
        written = c.written,
        dead_lettered = c.dead_lettered,
        dropped = c.dropped,
        balanced = c.consumed == c.written + c.dead_lettered + c.dropped,
        "ledger: consumed = written + dead_lettered + dropped"
    );
}

/// An S3 lake's bucket must not keep old versions of objects: an erased
/// subject's files and a destroyed epoch key would survive as noncurrent
/// versions. Refused (with why, and the option that overrides it) when
/// versioning is enabled or suspended, or cannot be read; with
/// `privacy.allow_versioned_bucket` a warning instead.
async fn check_bucket(settings: &Settings) -> Result<(), String> {
    use meterline_sinks::bucket::{versioning, Versioning};
    const OVERRIDE: &str = "set privacy.allow_versioned_bucket = true only if the bucket's \
        lifecycle rules expire noncurrent versions (and delete markers) within the erasure \
        deadline";
    let lake = meterline_sinks::Lake::new(&settings.lake).map_err(|e| e.to_string())?;
    let problem = match versioning(&lake).await {
        Ok(None | Some(Versioning::Off)) => return Ok(()),
        Ok(Some(state @ (Versioning::Enabled | Versioning::Suspended))) => format!(
            "the lake's bucket has versioning {}: objects meterline deletes (an erased \
             subject's Parquet files, destroyed pseudonym key epochs) would survive as old \
             versions",
            if state == Versioning::Enabled {
                "enabled"
            } else {
                "suspended (versions kept while it was enabled remain)"
            }
        ),
        Err(e) => format!(
            "{e}; meterline refuses to start without knowing that deleted objects are gone \
             (grant s3:GetBucketVersioning)"
        ),
    };
    if settings.allow_versioned_bucket {
        tracing::warn!(
            problem,
            "privacy.allow_versioned_bucket is set: starting anyway (a standing exception in \
             `meterline audit`)"
        );
        Ok(())
    } else {
        Err(format!(
            "config field `privacy.allow_versioned_bucket`: {problem}; {OVERRIDE}"
        ))
    }
}

/// `meterline run --config PATH`: load and validate the configuration, serve
/// metrics, run the pipeline until SIGTERM/Ctrl-C, and map the outcome to the
/// documented exit codes (0 clean stop, 1 failure, 2 configuration, 75 fenced).
pub async fn run_from_file(path: &Path) -> ExitCode {
    let settings = match Config::load(path).and_then(Config::build) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = check_bucket(&settings).await {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    if settings.clock.is_shifted() {
        tracing::warn!(
            now = %settings.clock.now().to_rfc3339(),
            "METERLINE_FAKE_NOW is set: the clock is moved (tests and rehearsals only)"
        );
    }
    if settings.lifecycle.storage_clock.is_shifted() {
        tracing::warn!(
            now = %settings.lifecycle.storage_clock.now().to_rfc3339(),
            "METERLINE_FAKE_STORAGE_NOW is set: the orphan age is measured from a moved clock (tests only)"
        );
    }
    let metrics = Metrics::new();
    if let Some(addr) = settings.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                info!(%addr, "metrics at http://{addr}/metrics");
                tokio::spawn(crate::metrics::serve(listener, metrics.clone()));
            }
            Err(e) => {
                eprintln!("error: config field `metrics.listen`: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let shutdown = Arc::new(Shutdown::default());
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            crate::shutdown::wait_for_signal().await;
            shutdown.request();
        });
    }
    match crate::service::run_pipeline(settings, metrics, shutdown).await {
        Ok(()) => {
            info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e @ RunError::Fenced(_)) => {
            error!(error = %e, "stopping");
            ExitCode::from(75)
        }
        Err(e @ RunError::Config(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            error!(error = %e, "stopping");
            ExitCode::FAILURE
        }
    }
}
