//! The erasure consumer: tombstones on the erasure topic (key =
//! `<tenant>/<subject>`, null value) erase that tenant's subject from the lake
//! (see [`crate::privacy::lifecycle`]). Subject ids are unique only within a
//! tenant, so a key without a tenant (no `/`, or a tenant that is not a valid
//! tenant id) is refused as `ignored`: it could name someone else. The topic can
//! stay compacted: the key of a request is its target, and a tombstone is what
//! compaction keeps last.
//!
//! Exactly once per request: the audit row of an erasure is committed together
//! with the Kafka position it answers (a `txn` action, app id
//! `meterline:<topic>:<partition>`), and positions at or below it are skipped.
//! Kafka group offsets are committed afterwards (where a restart begins reading);
//! a crash in between repeats at most the last request, which finds nothing left
//! to remove and is then skipped by its position.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use meterline_operators::Clock;
use rdkafka::message::Message;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::kafka::group::{commit_position, group_consumer};
use crate::metrics::Metrics;
use crate::privacy::lifecycle::{Lifecycle, Work};
use crate::shutdown::{pause, Shutdown};

/// Longest subject id accepted in an erasure key (bytes).
pub const MAX_SUBJECT_BYTES: usize = 256;

/// The (tenant, subject) an erasure key names: `<tenant>/<subject>`. Tenant ids
/// hold no `/`, so the first one separates them; the subject may contain more.
pub fn parse_key(key: &[u8]) -> Option<(String, String)> {
    let key = std::str::from_utf8(key).ok()?;
    let (tenant, subject) = key.split_once('/')?;
    (meterline_operators::tenant::valid_tenant_id(tenant)
        && !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_BYTES)
        .then(|| (tenant.to_owned(), subject.to_owned()))
}

/// One request read from the topic (the message itself is not held while the
/// erasure runs).
#[derive(Debug)]
struct Request {
    partition: i32,
    offset: i64,
    /// `None`: not a usable erasure request (a value, or no usable key).
    target: Option<(String, String)>,
    requested_at: DateTime<Utc>,
}

/// `clock` reads the record's create time (wall time) as "our" time, so that the
/// deadline is measured on the clock that completes the erasure.
fn request(message: &rdkafka::message::BorrowedMessage<'_>, clock: Clock) -> Request {
    let target = match (message.key(), message.payload()) {
        (Some(key), None) => parse_key(key),
        _ => None,
    };
    let requested_at = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(|| clock.now(), |wall| clock.from_wall(wall));
    Request {
        partition: message.partition(),
        offset: message.offset(),
        target,
        requested_at,
    }
}

/// Consume the erasure topic and erase until shutdown. Errors are logged, counted
/// and retried with backoff; a request is never skipped because storage failed.
pub async fn run_loop(settings: Settings, metrics: Metrics, shutdown: Arc<Shutdown>) {
    let lifecycle_settings = settings.lifecycle.clone();
    let topic = lifecycle_settings.erasure_topic.clone();
    let Some(consumer) = group_consumer(&settings, &lifecycle_settings.erasure_group, &topic)
    else {
        return;
    };
    let lake = match meterline_sinks::Lake::new(&settings.lake) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "erasure consumer: lake configuration");
            return;
        }
    };
    info!(%topic, group = %lifecycle_settings.erasure_group, "erasure consumer started");
    let max_backoff = Duration::from_secs(settings.pipeline.retry_max_backoff_secs.max(1));
    let first_backoff = Duration::from_millis(settings.pipeline.retry_initial_backoff_ms.max(1));
    let mut lifecycle: Option<Lifecycle> = None;
    let mut backoff = first_backoff;
    while lifecycle.is_none() {
        match Lifecycle::open(
            &lake,
            settings.tenants.clone(),
            settings.key.clone(),
            lifecycle_settings.clone(),
            settings.aggregate.clone(),
            metrics.clone(),
        )
        .await
        {
            Ok(l) => lifecycle = Some(l.with_rates(settings.economics.rates.clone())),
            Err(e) => {
                warn!(error = %e, "erasure consumer: cannot open the audit table; retrying");
                if !pause(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    let Some(mut lifecycle) = lifecycle else {
        return;
    };
    loop {
        let received = tokio::select! {
            r = consumer.recv() => r.map(|m| request(&m, settings.clock)),
            () = shutdown.requested() => break,
        };
        let req = match received {
            Ok(r) => r,
            Err(e) => {
                // Also "topic not available" until someone creates it.
                metrics.kafka_errors.inc();
                warn!(error = %e, %topic, "erasure consumer: kafka error");
                if !pause(Duration::from_secs(1), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        if !handle(
            &mut lifecycle,
            &topic,
            &req,
            &metrics,
            &shutdown,
            first_backoff,
            max_backoff,
        )
        .await
        {
            break;
        }
        commit_position(&consumer, &topic, req.partition, req.offset);
    }
    info!("erasure consumer stopped");
}

/// Erase for one request, retrying until it is recorded. False when shutdown
/// interrupted it (the request is read again on restart).
async fn handle(
    lifecycle: &mut Lifecycle,
    topic: &str,
    req: &Request,
    metrics: &Metrics,
    shutdown: &Shutdown,
    first_backoff: Duration,
    max_backoff: Duration,
) -> bool {
    let app_id = format!("meterline:{topic}:{}", req.partition);
    let mut backoff = first_backoff;
    let mut work = Work::default();
    loop {
        let attempt = async {
            if lifecycle
                .answered(&app_id)
                .await?
                .is_some_and(|done| req.offset <= done)
            {
                return Ok(());
            }
            let Some((tenant, subject)) = &req.target else {
                // Never echo the key or value: they may be personal data.
                metrics.erasures.with_label_values(&["ignored"]).inc();
                warn!(
                    partition = req.partition,
                    offset = req.offset,
                    "erasure topic: record is not a tombstone keyed `<tenant>/<subject>` (a tenant id, `/`, then 1-{MAX_SUBJECT_BYTES} bytes of UTF-8); ignored"
                );
                return lifecycle.answer(&[(app_id.clone(), req.offset)]).await;
            };
            let request_id = format!("{topic}:{}:{}", req.partition, req.offset);
            lifecycle
                .erase(
                    &request_id,
                    tenant,
                    subject,
                    req.requested_at,
                    &[(app_id.clone(), req.offset)],
                    &mut work,
                )
                .await
                .map(|_| ())
        };
        match attempt.await {
            Ok(()) => return true,
            Err(e) => {
                metrics.erasures.with_label_values(&["error"]).inc();
                warn!(
                    error = %e,
                    partition = req.partition,
                    offset = req.offset,
                    retry_in_ms = backoff.as_millis() as u64,
                    "erasure failed; retrying"
                );
                if !pause(backoff, shutdown).await {
                    return false;
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn erasure_keys_name_a_tenant_and_a_subject() {
        let pair = |t: &str, s: &str| Some((t.to_owned(), s.to_owned()));
        assert_eq!(
            parse_key(b"acme-industri/acct-1"),
            pair("acme-industri", "acct-1")
        );
        assert_eq!(parse_key(b"acme/a/b"), pair("acme", "a/b"));
        for bad in [
            &b"acct-1"[..],
            b"/acct-1",
            b"acme/",
            b"Acme/acct-1",
            b"ac me/x",
            b"\xff/x",
        ] {
            assert_eq!(parse_key(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_key(format!("t/{}", "x".repeat(257)).as_bytes()), None);
        assert!(parse_key(format!("t/{}", "x".repeat(256)).as_bytes()).is_some());
    }
}
