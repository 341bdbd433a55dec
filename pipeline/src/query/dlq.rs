//! `meterline dlq list` and `meterline dlq replay`: look at dead letters and
//! re-publish them after a fix.
//!
//! Replay sends each stored payload back to the readings topic, to the partition it
//! came from, with a `meterline-replay` header: a keyed hash of the payload that
//! only holders of the pseudonym key can make. A redacted payload (a public tenant's,
//! whose identifiers are pseudonyms already) is accepted only with a valid tag, so
//! its pseudonyms are kept and not hashed a second time. Replays are idempotent: a
//! record that is stored already comes back as a duplicate (same key, version and
//! value) and is dropped.

use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use chrono::{DateTime, NaiveDate, Utc};
use meterline_operators::{Pseudonymizer, Reason};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::{Config, Settings};
use crate::kafka::REPLAY_HEADER;
use crate::query::sql::{self, Format};

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<Reason>,
    pub since: Option<DateTime<Utc>>,
}

impl Filter {
    fn sql(&self) -> String {
        let mut clauses = vec!["TRUE".to_owned()];
        if let Some(r) = self.reason {
            // Reason codes are [a-z_]: safe to inline.
            clauses.push(format!("reason = '{}'", r.as_str()));
        }
        if let Some(t) = self.since {
            clauses.push(format!(
                "dead_lettered_at >= '{}'",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ));
        }
        clauses.join(" AND ")
    }
}

/// Parse `--reason`: a stable reason code.
///
/// # Errors
/// An unknown code; the message lists the known ones.
pub fn parse_reason(text: &str) -> Result<Reason, String> {
    Reason::parse(text).ok_or_else(|| {
        let all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown reason; one of: {}", all.join(", "))
    })
}

/// Parse `--since`: an RFC 3339 time, a date (`2026-11-20`, UTC midnight), or an
/// age such as `90m`, `24h` or `7d` before now (the process clock, which
/// `METERLINE_FAKE_NOW` moves).
///
/// # Errors
/// Anything else.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    let clock = crate::config::clock_from_env().map_err(|e| e.to_string())?;
    parse_since_at(text, clock.now())
}

/// [`parse_since`] with "now" given.
///
/// # Errors
/// Anything that is not a time, a date or an age.
pub fn parse_since_at(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let bad = || {
        "expected an RFC 3339 time, a date (YYYY-MM-DD) or an age such as 90m, 24h, 7d".to_owned()
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc());
    }
    let split = text.char_indices().last().map_or(0, |(i, _)| i);
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let age = match unit {
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(now - age)
}

/// `meterline dlq list`: dead letters, oldest first.
///
/// # Errors
/// Configuration, storage and SQL errors.
pub async fn list(
    config: &Config,
    filter: &Filter,
    limit: usize,
    format: Format,
) -> anyhow::Result<String> {
    let lake = config.lake_config();
    let query = format!(
        "SELECT dead_lettered_at, tenant, reason, source_topic, source_partition, source_offset, \
         payload_bytes, payload IS NOT NULL AS replayable, detail \
         FROM dead_letters WHERE {} \
         ORDER BY dead_lettered_at, source_partition, source_offset LIMIT {limit}",
        filter.sql()
    );
    let batches = sql::query(&lake, &query).await?;
    sql::render(&batches, format)
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Re-published to the readings topic.
    pub replayed: u64,
    /// Matched but without a stored payload (not UTF-8 or JSON, too large, empty):
    /// their bytes stay in Kafka only for the topic's retention.
    pub not_replayable: u64,
}

/// `meterline dlq replay`: re-publish matching dead letters of the configured
/// readings topic to that topic.
///
/// # Errors
/// Configuration, storage and Kafka errors.
pub async fn replay(
    settings: &Settings,
    filter: &Filter,
    dry_run: bool,
) -> anyhow::Result<ReplayReport> {
    let topic = &settings.kafka.readings_topic;
    // Quoted into SQL below: Kafka restricts topic names to [a-zA-Z0-9._-].
    anyhow::ensure!(
        crate::config::valid_topic_name(topic),
        "kafka.readings_topic is not a valid Kafka topic name"
    );
    let query = format!(
        "SELECT source_partition, source_offset, payload FROM dead_letters \
         WHERE source_topic = '{topic}' AND {} ORDER BY source_partition, source_offset",
        filter.sql()
    );
    let batches = sql::query(&settings.lake, &query).await?;
    let pseudonymizer = settings.key.clone().map(Pseudonymizer::new);
    let mut report = ReplayReport::default();
    let producer: Option<FutureProducer> = if dry_run {
        None
    } else {
        Some(
            crate::kafka::client::producer(&settings.kafka)
                .create()
                .context("create Kafka producer")?,
        )
    };
    let mut pending = Vec::new();
    for b in &batches {
        let partition = b.column(0).as_primitive::<Int32Type>();
        let _offset = b.column(1).as_primitive::<Int64Type>();
        let payload = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            if !payload.is_valid(i) {
                report.not_replayable += 1;
                continue;
            }
            report.replayed += 1;
            let Some(producer) = &producer else { continue };
            let body = payload.value(i);
            let tag = pseudonymizer
                .as_ref()
                .map(|p| p.replay_tag(body.as_bytes()));
            let headers = OwnedHeaders::new().insert(Header {
                key: REPLAY_HEADER,
                value: tag.as_deref(),
            });
            let record: FutureRecord<'_, (), str> = FutureRecord::to(topic)
                .partition(partition.value(i))
                .payload(body)
                .headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => anyhow::bail!("cannot publish to {topic}: {e}"),
            }
        }
    }
    for delivery in pending {
        delivery
            .await
            .context("producer stopped")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery to {topic} failed: {e}"))?;
    }
    if let Some(p) = producer {
        p.flush(rdkafka::util::Timeout::After(Duration::from_secs(30)))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_dates_and_ages() {
        assert_eq!(
            parse_since("2026-11-20T10:00:00+01:00").unwrap(),
            DateTime::parse_from_rfc3339("2026-11-20T09:00:00Z").unwrap()
        );
        assert_eq!(
            parse_since("2026-11-20").unwrap(),
            DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").unwrap()
        );
        let now = DateTime::parse_from_rfc3339("2027-03-01T00:30:00+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since_at("1d", now).unwrap(),
            DateTime::parse_from_rfc3339("2027-02-28T00:30:00+01:00").unwrap()
        );
        assert_eq!(
            parse_since_at("90m", now).unwrap(),
            DateTime::parse_from_rfc3339("2027-02-28T23:00:00+01:00").unwrap()
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("5y").is_err());
        assert!(parse_since("7ø").is_err());
        assert!(parse_since("").is_err());
    }

    #[test]
    fn reasons_are_checked_and_listed() {
        assert_eq!(parse_reason("unknown_tenant"), Ok(Reason::UnknownTenant));
        let err = parse_reason("nope").unwrap_err();
        assert!(err.contains("invalid_gsrn"), "{err}");
    }

    #[test]
    fn filters_become_sql() {
        let f = Filter {
            reason: Some(Reason::TooOld),
            since: Some(parse_since("2026-11-20").unwrap()),
        };
        assert_eq!(
            f.sql(),
            "TRUE AND reason = 'too_old' AND dead_lettered_at >= '2026-11-20T00:00:00.000000Z'"
        );
    }
}
