//! `meterline run`: wire the Kafka thread, the pipeline task and the metrics
//! endpoint together, and stop them in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::info;

use crate::config::Settings;
use crate::consumer::KafkaSource;
use crate::metrics::Metrics;
use crate::runner::{RunError, Runner, Shutdown};

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
    let (tx, rx) = mpsc::channel(settings.pipeline.channel_capacity);
    let (commits_tx, commits_rx) = std::sync::mpsc::channel();
    let runner = Runner::new(&settings, metrics.clone(), commits_tx, shutdown.clone()).await?;
    let grace = Duration::from_secs(settings.pipeline.shutdown_grace_secs);
    let source = KafkaSource::start(
        &settings.kafka,
        settings.pipeline.chunk_max_records,
        tx,
        commits_rx,
        metrics,
        grace,
    )
    .map_err(|e| RunError::Config(format!("kafka: {e}")))?;
    info!(
        topic = %settings.kafka.readings_topic,
        group = %settings.kafka.group_id,
        lake = %settings.lake.uri,
        "pipeline started"
    );
    let stopper = {
        let handle = source.stop_handle();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.requested().await;
            info!("shutdown requested; flushing");
            handle.stop();
        })
    };
    let result = runner.run(rx).await;
    // However the runner ended, stop the Kafka thread and wait for it.
    source.stop();
    stopper.abort();
    let _ = tokio::task::spawn_blocking(move || source.join()).await;
    result
}
