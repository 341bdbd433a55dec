//! Traffic for the scenarios: hourly `reading/v1` messages, `subject-event/v1`
//! messages, and a producer that sends them (and tombstones) to a topic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use meterline::dev::generator::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::rig::Rig;

/// `n` hours.
pub fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// RFC 3339 in UTC, whole seconds.
pub fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A `subject-event/v1` message of `kind` at `at`, with `extra` fields.
pub fn event(
    kind: &str,
    tenant: &str,
    subject: &str,
    at: DateTime<Utc>,
    extra: serde_json::Value,
) -> Message {
    let mut v = json!({
        "schema": "subject-event/v1", "kind": kind, "tenant": tenant, "subject": subject,
        "occurred_at": rfc(at), "source": "app",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    Message {
        key: subject.to_owned(),
        payload: v.to_string().into_bytes(),
        bad_reason: None,
    }
}

/// Hourly readings of one meter in area NO1: `count` hours from `from`, each
/// `value` kWh.
pub fn hourly(
    tenant: &str,
    meter: &str,
    subject: Option<&str>,
    from: DateTime<Utc>,
    count: i64,
    value: f64,
) -> Vec<Message> {
    (0..count)
        .map(|h| {
            let mut v = json!({
                "schema": "reading/v1", "tenant": tenant, "device_id": format!("dev-{meter}"),
                "meter_id": meter, "quantity": "electricity", "start": rfc(from + hours(h)),
                "resolution": "PT1H", "value": value, "unit": "kWh", "quality": "measured",
                "area": "NO1",
            });
            if let Some(s) = subject {
                v["subject"] = json!(s);
            }
            Message {
                key: meter.to_owned(),
                payload: v.to_string().into_bytes(),
                bad_reason: None,
            }
        })
        .collect()
}

/// Send `messages` to `topic`, then a tombstone with key `tombstone`.
pub async fn send(rig: &Rig, topic: &str, messages: &[Message], tombstone: Option<&str>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .create()
        .unwrap();
    for m in messages {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(topic)
                    .key(&m.key)
                    .payload(&m.payload),
                Duration::from_secs(30),
            )
            .await
            .expect("delivered");
    }
    if let Some(key) = tombstone {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(topic).key(key),
                Duration::from_secs(30),
            )
            .await
            .expect("delivered");
    }
}
