//! The Elhub adapter: `meterline elhub ingest`. EMIF XML messages (E66,
//! `NotifyValidatedDataForBillingEnergy`, and `CollectedData`) and Min side CSVs from
//! files or a directory an EDI gateway drops them into, as `reading/v1` records on the
//! readings topic, and master data (`NotifyMeteringPointCharacteristics`) as
//! `meter-profile/v1` records on the profiles topic, keyed by metering point, each
//! message once (README "Elhub adapter").
//!
//! - `ingest.rs`: one file: read, map (`meterline_operators::elhub`), publish, register;
//! - `profiles.rs`: a master data file read and mapped to `meter-profile/v1`;
//! - `reading.rs`: what reading any file shares (its hash, refusals);
//! - `inbox.rs`: the watched directory and the rejected folder with its retention;
//! - `metrics.rs`: the adapter's `/metrics`.
//!
//! Layer: like `inputs` (it produces to Kafka and reads the lake), below the service;
//! see docs/ARCHITECTURE.md.

pub mod inbox;
pub mod ingest;
pub mod metrics;
mod profiles;
mod reading;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::shutdown::Shutdown;
use ingest::{Adapter, FileReport, Outcome};
use metrics::ElhubMetrics;

/// What `meterline elhub ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub config: PathBuf,
    pub tenant: String,
    /// Files to process once (left where they are).
    pub paths: Vec<PathBuf>,
    /// A directory to watch (files leave it once processed).
    pub watch: Option<PathBuf>,
    /// Overrides `elhub.rejected_dir`.
    pub rejected: Option<PathBuf>,
    /// With `watch`: stop once the directory is empty.
    pub once: bool,
}

/// What a run did, file by file.
#[derive(Debug, Default)]
pub struct IngestSummary {
    pub files: Vec<FileReport>,
}

impl IngestSummary {
    /// Whether any file or series was refused.
    #[must_use]
    pub fn has_rejects(&self) -> bool {
        self.files.iter().any(FileReport::has_rejects)
    }
}

/// Run the adapter; each file's report is printed as it is done.
///
/// # Errors
/// Configuration; Kafka or the lake failing for a file given by path (a watched file
/// stays in the inbox and is tried again).
pub async fn ingest(opts: &IngestOptions) -> anyhow::Result<IngestSummary> {
    let config = Config::load(&opts.config)?;
    let rejected = match (&opts.rejected, &config.elhub.rejected_dir, &opts.watch) {
        (Some(dir), _, _) | (None, Some(dir), _) => dir.clone(),
        (None, None, Some(watch)) => watch.join("rejected"),
        (None, None, None) => PathBuf::from("elhub-rejected"),
    };
    let metrics = ElhubMetrics::new();
    let mut adapter = Adapter::open(&config, &opts.tenant, metrics.clone()).await?;
    let retention = config.dead_letters.retention_days;
    let mut summary = IngestSummary::default();
    for path in &opts.paths {
        let report = adapter.file(path).await?;
        keep_rejects(&rejected, &report, &adapter)?;
        println!("{report}");
        summary.files.push(report);
    }
    if let Some(dir) = &opts.watch {
        start_metrics(&config.elhub.metrics_listen, &metrics).await?;
        let shutdown = std::sync::Arc::new(Shutdown::default());
        let signal = shutdown.clone();
        tokio::spawn(async move {
            crate::shutdown::wait_for_signal().await;
            signal.request();
        });
        let poll = Duration::from_secs(config.elhub.poll_interval_secs.max(1));
        let watch = Watch {
            dir,
            rejected: &rejected,
            retention,
            poll,
        };
        watch
            .run(&mut adapter, &mut summary, opts.once, &shutdown)
            .await?;
    }
    Ok(summary)
}

/// The watched directory's loop.
struct Watch<'a> {
    dir: &'a std::path::Path,
    rejected: &'a std::path::Path,
    retention: u64,
    poll: Duration,
}

impl Watch<'_> {
    async fn run(
        &self,
        adapter: &mut Adapter,
        summary: &mut IngestSummary,
        once: bool,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        tracing::info!(dir = %self.dir.display(), "watching for Elhub files");
        loop {
            let expired = inbox::expire(self.rejected, adapter.now(), self.retention)?;
            adapter.metrics.rejected_deleted.inc_by(expired as u64);
            let files = inbox::waiting(self.dir)?;
            adapter
                .metrics
                .inbox_files
                .set(i64::try_from(files.len()).unwrap_or(i64::MAX));
            let mut failed = false;
            for path in files {
                if shutdown.is_requested() {
                    return Ok(());
                }
                match adapter.file(&path).await {
                    Ok(report) => {
                        keep_rejects(self.rejected, &report, adapter)?;
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                        log(&report);
                        println!("{report}");
                        summary.files.push(report);
                    }
                    Err(e) => {
                        // Kafka or the lake: the file stays and is tried again.
                        adapter.metrics.errors.inc();
                        tracing::warn!(error = %format!("{e:#}"), "a file stays in the inbox for the next try");
                        eprintln!("error: {}: {e:#} (kept for the next try)", path.display());
                        failed = true;
                        break;
                    }
                }
            }
            if once && !failed && inbox::waiting(self.dir)?.is_empty() {
                return Ok(());
            }
            if !crate::shutdown::pause(self.poll, shutdown).await {
                return Ok(());
            }
        }
    }
}

/// Copy a file with refusals into the rejected folder.
fn keep_rejects(
    dir: &std::path::Path,
    report: &FileReport,
    adapter: &Adapter,
) -> anyhow::Result<()> {
    if report.has_rejects() {
        let copy = inbox::reject(dir, report, adapter.now())?;
        eprintln!("  kept in {}", copy.display());
    }
    Ok(())
}

/// A structured log line of a file's outcome: no file name (a Min side file's name
/// holds the metering point), the message key and counts only.
fn log(report: &FileReport) {
    let reason = match &report.outcome {
        Outcome::Rejected { reason, .. } => reason.as_str(),
        _ => "",
    };
    tracing::info!(
        outcome = report.outcome.label(),
        message_key = report
            .message_key
            .as_deref()
            .map(|k| k.chars().take(80).collect::<String>()),
        series = report.series,
        refused_series = report.refused.len(),
        records = report.records,
        reason,
        "elhub file processed"
    );
}

async fn start_metrics(listen: &str, metrics: &ElhubMetrics) -> anyhow::Result<()> {
    if listen.trim().is_empty() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("elhub.metrics_listen: `{listen}` is not an address:port"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("elhub.metrics_listen: cannot listen on {addr}"))?;
    tracing::info!(%addr, "elhub adapter metrics at http://{addr}/metrics");
    let m = metrics.clone();
    tokio::spawn(crate::metrics::serve_text(listener, move || m.render()));
    Ok(())
}
