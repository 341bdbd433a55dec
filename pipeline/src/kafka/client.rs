//! The one place a librdkafka client's configuration is built. Every client
//! meterline creates (the readings consumer, the subject-events and erasure
//! consumers, the audit's reader, the dead-letter producer, `dlq replay`,
//! `simulate`) gets its configuration here, so `[kafka.properties]` (TLS, SASL,
//! timeouts) and the secrets of `[kafka.secret_files]` reach all of them.
//!
//! Precedence, lowest first: meterline's defaults for the role (which
//! `[kafka.properties]` may change), `[kafka.properties]`, then what meterline
//! must decide itself (brokers, group, offset handling; the configuration
//! refuses those in `[kafka.properties]`).

use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, PREFETCH_KBYTES};

fn build(kafka: &KafkaConfig, defaults: &[(&str, &str)], fixed: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in &kafka.properties {
        config.set(k, v.to_string());
    }
    config.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in fixed {
        config.set(*k, *v);
    }
    config
}

/// A consumer in `group` that stores and commits its positions itself, and
/// starts a partition it has no position for at its earliest record (never
/// `latest`: records produced before the group's first start are data too).
pub fn consumer(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    build(
        kafka,
        &[],
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    )
}

/// The readings consumer: [`consumer`] in `kafka.group_id`, offsets stored only
/// by meterline (the lake holds them), eager assignors, statistics every 5 s,
/// and a bounded prefetch.
pub fn readings_consumer(kafka: &KafkaConfig) -> ClientConfig {
    lake_offsets_consumer(kafka, &kafka.group_id)
}

/// A consumer like the readings consumer in another `group` (the inputs of
/// `[inputs]`, each in `<group_id>.<input>`).
pub fn lake_offsets_consumer(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    build(
        kafka,
        &[
            // Eager assignors: a revocation completes before the partitions move.
            ("partition.assignment.strategy", "range,roundrobin"),
            ("statistics.interval.ms", "5000"),
            ("queued.max.messages.kbytes", PREFETCH_KBYTES),
        ],
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ],
    )
}

/// A producer (dead letters, replays, `simulate`): a 30 s delivery timeout by
/// default, and only librdkafka's errors logged (it warns about the consumer
/// properties of `[kafka.properties]` that a producer ignores).
pub fn producer(kafka: &KafkaConfig) -> ClientConfig {
    build(
        kafka,
        &[("message.timeout.ms", "30000"), ("log_level", "3")],
        &[],
    )
}

/// What to check when librdkafka reports `reason`, for the errors a security
/// setting causes (librdkafka retries them; the hint says what will not change
/// by itself).
pub fn hint(reason: &str) -> Option<&'static str> {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("certificate verify failed") || reason.contains("unable to get local issuer")
    {
        Some(
            "the broker's TLS certificate is not trusted: set [kafka.properties] \
             \"ssl.ca.location\" to the CA file that signed it",
        )
    } else if reason.contains("ssl handshake failed") || reason.contains("wrong version number") {
        Some(
            "TLS handshake failed: check that security.protocol (SSL, SASL_SSL) matches \
             the broker's listener and that ssl.ca.location names its CA",
        )
    } else if reason.contains("sasl authentication") || reason.contains("authentication failed") {
        Some(
            "the broker refused the credentials: check sasl.mechanism, sasl.username and \
             the file named by [kafka.secret_files] \"sasl.password\"",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scalar;

    fn kafka(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "broker-a:9093,broker-b:9093".into(),
            group_id: "meterline".into(),
            readings_topic: "meter.readings".into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Scalar::Str((*v).to_owned())))
                .collect(),
            secret_files: Default::default(),
            allow_plaintext: false,
        }
    }

    /// What a user sets for TLS and SASL reaches every kind of client.
    #[test]
    fn security_properties_reach_every_client() {
        let k = kafka(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "meterline"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", "/etc/meterline/kafka-ca.pem"),
        ]);
        for (role, config) in [
            ("readings consumer", readings_consumer(&k)),
            ("group consumer", consumer(&k, "meterline.subjects")),
            ("producer", producer(&k)),
        ] {
            for (name, value) in [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "meterline"),
                ("sasl.password", "s3cret"),
                ("ssl.ca.location", "/etc/meterline/kafka-ca.pem"),
                ("bootstrap.servers", "broker-a:9093,broker-b:9093"),
            ] {
                assert_eq!(config.get(name), Some(value), "{role}: {name}");
            }
        }
    }

    #[test]
    fn properties_override_defaults_but_not_what_meterline_decides() {
        let k = kafka(&[
            ("queued.max.messages.kbytes", "4096"),
            ("message.timeout.ms", "120000"),
            ("auto.offset.reset", "latest"),
        ]);
        let readings = readings_consumer(&k);
        assert_eq!(readings.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(readings.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(readings.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(readings.get("group.id"), Some("meterline"));
        assert_eq!(consumer(&k, "g").get("auto.offset.reset"), Some("earliest"));
        assert_eq!(producer(&k).get("message.timeout.ms"), Some("120000"));
        assert_eq!(
            readings_consumer(&kafka(&[])).get("queued.max.messages.kbytes"),
            Some(PREFETCH_KBYTES)
        );
    }
}
