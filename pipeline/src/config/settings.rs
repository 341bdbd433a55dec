//! Validated settings: what `Config::build` makes of the file, and the settings
//! types of every task (aggregate, lifecycle). Tasks read these; this module reads
//! no task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use meterline_operators::aggregate::Disclosure;
use meterline_operators::pseudonym::KeyError;
use meterline_operators::sensitive::DEFAULT_SPECIAL_CATEGORY_FIELDS;
use meterline_operators::versions;
use meterline_operators::{
    Clock, DecodeConfig, Deployment, MasterKey, Rules, SensitiveScanner, Tenant, TenantRegistry,
};
use meterline_sinks::LakeConfig;

use super::file::{
    is_secret_property, CompactionConfig, Config, DeadLettersConfig, DeploymentConfig,
    EconomicsConfig, InputsConfig, KafkaConfig, MetricsConfig, PipelineConfig, PrivacyConfig,
    Scalar, TenantConfig, ValidationConfig,
};
use crate::privacy::geo::{CidrTable, GeoLookup};

/// The sections of the file; `METERLINE_<SECTION>__<KEY>` overrides their keys.
/// A section missing here has its variables ignored, so a test compares this
/// list with the sections of `deploy/meterline.toml`.
const SECTIONS: [&str; 13] = [
    "kafka",
    "lake",
    "pipeline",
    "metrics",
    "privacy",
    "tenants",
    "dead_letters",
    "aggregate",
    "serve",
    "inputs",
    "economics",
    "elhub",
    "compaction",
];

/// Environment variable holding the pseudonym master key (64 hex characters).
pub const KEY_ENV: &str = "METERLINE_PSEUDONYM_KEY";
/// Moves "now" for tests and rehearsals: an RFC 3339 instant with an offset
/// (`2026-12-01T00:30:00+01:00`). The process's clock reads that instant at start
/// and advances from there. Never set it in production.
pub const FAKE_NOW_ENV: &str = "METERLINE_FAKE_NOW";
/// Moves the clock the orphan sweep compares object modification times with
/// (same format as `METERLINE_FAKE_NOW`). Those times are stamped by the storage
/// server with the wall clock, so this clock is the wall clock unless a test
/// moves it on purpose; `METERLINE_FAKE_NOW` never moves it. Never set it in
/// production.
pub const FAKE_STORAGE_NOW_ENV: &str = "METERLINE_FAKE_STORAGE_NOW";

/// The clock `METERLINE_FAKE_NOW` asks for: the system clock when it is unset.
///
/// # Errors
/// A value that is not an RFC 3339 instant with an offset.
pub fn clock_from_env() -> Result<Clock, ConfigError> {
    clock_from(std::env::var(FAKE_NOW_ENV).ok().as_deref())
}

/// The clock `METERLINE_FAKE_STORAGE_NOW` asks for: the system clock when it is
/// unset.
///
/// # Errors
/// A value that is not an RFC 3339 instant with an offset.
pub fn storage_clock_from_env() -> Result<Clock, ConfigError> {
    clock_named(
        FAKE_STORAGE_NOW_ENV,
        std::env::var(FAKE_STORAGE_NOW_ENV).ok().as_deref(),
    )
}

fn clock_from(value: Option<&str>) -> Result<Clock, ConfigError> {
    clock_named(FAKE_NOW_ENV, value)
}

fn clock_named(name: &str, value: Option<&str>) -> Result<Clock, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Clock::system()),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|at| Clock::starting_at(at.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                invalid(
                    name,
                    "must be an RFC 3339 instant with an offset, e.g. 2026-12-01T00:30:00+01:00",
                )
            }),
    }
}

/// A configuration error: the message names the field and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub pipeline: PipelineConfig,
    pub metrics_listen: Option<SocketAddr>,
    pub tenants: TenantRegistry,
    /// Read once; shared, never copied (see [`MasterKey`]).
    pub key: Option<Arc<MasterKey>>,
    pub dead_letters: DeadLettersConfig,
    /// Special-category field names (the deny-list in effect).
    pub special_category_fields: Vec<String>,
    /// The materializer of the aggregate tables.
    pub aggregate: AggregateSettings,
    /// Erasure and retention.
    pub lifecycle: LifecycleSettings,
    /// "Now" for validation, key epochs and everything timed by the calendar.
    pub clock: Clock,
    /// `privacy.allow_versioned_bucket`: start on a bucket that keeps old versions.
    pub allow_versioned_bucket: bool,
    /// The energy-economics input topics (empty: off).
    pub inputs: InputsConfig,
    /// What costs are computed with.
    pub economics: EconomicsSettings,
    /// `[compaction]` of cold `readings` partitions.
    pub compaction: CompactionConfig,
}

/// What costs are computed with: the rate table (defaults plus
/// `[[economics.rates]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EconomicsSettings {
    pub rates: meterline_operators::economics::rates::RateTable,
}

impl Default for EconomicsSettings {
    fn default() -> Self {
        Self {
            rates: meterline_operators::economics::rates::RateTable::defaults(),
        }
    }
}

impl Settings {
    pub fn decode_config(&self) -> DecodeConfig {
        DecodeConfig {
            max_message_bytes: self.pipeline.max_message_bytes,
            sensitive: self.sensitive_scanner(),
        }
    }

    /// Finds sensitive data in the messages of every topic: the special-category
    /// deny-list in effect, and the national-id field names no list can leave out.
    pub fn sensitive_scanner(&self) -> SensitiveScanner {
        SensitiveScanner::new(self.special_category_fields.iter().cloned())
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_secs(self.pipeline.flush_interval_secs)
    }

    /// The memory bound these settings imply, in bytes: what resident memory stays
    /// under however large the backlog and however slow the lake. Sum of
    /// - [`BASE_MEMORY`] (program, runtime, Delta state, one partition's writer,
    ///   client and allocator slack, measured),
    /// - librdkafka's prefetch (`queued.max.messages.kbytes`),
    /// - the chunks in flight (`channel_capacity` + 2, each at most 8 MiB or
    ///   `chunk_max_records * max_message_bytes`),
    /// - [`BATCH_MEMORY_FACTOR`] times `max_batch_bytes` (the batch's Arrow columns,
    ///   its rows grouped by partition, the encoded file and upload buffers while a
    ///   flush is written and retried),
    /// - the version index ([`versions::capacity`] of `version_index_max_keys`
    ///   keys at [`versions::BYTES_PER_KEY`]) and the meters known per date
    ///   partition (`version_index_max_keys` entries),
    /// - with aggregates on, one materialization step
    ///   ([`AGGREGATE_BYTES_PER_READING`] x `max_readings_per_step`) and the
    ///   materializer's file indexes ([`AGGREGATE_INDEX_BYTES`]).
    pub fn memory_bound_bytes(&self) -> u64 {
        let p = &self.pipeline;
        let prefetch_kb: u64 = self
            .kafka
            .properties
            .get("queued.max.messages.kbytes")
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or_else(|| PREFETCH_KBYTES.parse().unwrap_or(16384));
        let chunk =
            (p.chunk_max_records.saturating_mul(p.max_message_bytes)).min(MAX_CHUNK_BYTES) as u64;
        BASE_MEMORY
            + prefetch_kb * 1024
            + (p.channel_capacity as u64 + 2) * chunk
            + BATCH_MEMORY_FACTOR * p.max_batch_bytes as u64
            + versions::BYTES_PER_KEY * versions::capacity(p.version_index_max_keys) as u64
            + meterline_operators::presence::BYTES_PER_ENTRY * p.version_index_max_keys as u64
            + if self.aggregate.enabled {
                AGGREGATE_BYTES_PER_READING * self.aggregate.max_readings_per_step as u64
                    + AGGREGATE_INDEX_BYTES
            } else {
                0
            }
    }
}

/// Resident memory outside the counted terms: the program, thread stacks,
/// librdkafka, the runtime, the Delta log state, one partition's Parquet writer,
/// the object-store client, and the allocator's slack. An idle `meterline run`
/// holds 40 MiB. On the 960,000-reading backfill to S3 with aggregates on,
/// heaptrack saw a heap peak of 212 MiB where jemalloc's process peaked at
/// 336 MiB (2026-12-01). Until meterline wrote one partition at a time this was
/// 512 MiB: every partition a flush spanned held a Parquet writer.
pub const BASE_MEMORY: u64 = 128 * 1024 * 1024;

/// Resident bytes per stored reading a materialization step reads (its Arrow
/// columns and the maps of current versions and sums). The `kafka_to_lake` bench
/// measured about 1.1 KB (2026-11-30).
pub const AGGREGATE_BYTES_PER_READING: u64 = 1200;

/// (file, meter) pairs the materializer's file indexes hold in all (which
/// meters each data file of `readings` and of the per-meter aggregate tables
/// holds); past it the partitions used least recently are forgotten.
pub const AGGREGATE_INDEX_ENTRIES: usize = 2_000_000;

/// Resident bytes of the file indexes when full (a hash and its share of the set).
pub const AGGREGATE_INDEX_BYTES: u64 = AGGREGATE_INDEX_ENTRIES as u64 * 24;

/// Resident bytes per buffered payload byte while a batch is built and written
/// (Arrow columns, the rows grouped by partition, the encoded file and its upload
/// buffer).
pub const BATCH_MEMORY_FACTOR: u64 = 3;

impl Config {
    /// Load a file, then apply `METERLINE_*` environment overrides.
    ///
    /// # Errors
    /// Unreadable file, TOML errors, unknown keys, missing keys, wrong types.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_sources(&text, Env::prefixed("METERLINE_"))
    }

    fn from_sources(text: &str, env: Env) -> Result<Config, ConfigError> {
        // Only `METERLINE_<SECTION>__...` variables are configuration; others with the
        // prefix (METERLINE_LOG, METERLINE_PSEUDONYM_KEY, tools' variables) are not.
        let env = env
            .filter(|key| {
                key.as_str().split_once("__").is_some_and(|(section, _)| {
                    SECTIONS.iter().any(|s| section.eq_ignore_ascii_case(s))
                })
            })
            .split("__");
        Figment::new()
            .merge(Toml::string(text))
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    /// `[kafka]` alone, checked and with its secrets read (for `meterline
    /// simulate --config`).
    ///
    /// # Errors
    /// As [`build`](Self::build) for the `[kafka]` section.
    pub fn kafka_settings(mut self) -> Result<KafkaConfig, ConfigError> {
        check_kafka(&self.kafka)?;
        read_kafka_secrets(&mut self.kafka)?;
        Ok(self.kafka)
    }

    /// The lake location alone (for read-only tools such as `meterline dlq list`).
    pub fn lake_config(&self) -> LakeConfig {
        LakeConfig {
            uri: self.lake.uri.clone(),
            storage_options: self
                .lake
                .storage_options
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        }
    }

    /// Validate and resolve into [`Settings`], reading the pseudonym key.
    ///
    /// # Errors
    /// Any unusable value, naming its field.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let key_from_env = std::env::var(KEY_ENV).ok();
        let clock = clock_from_env()?;
        let mut settings = self.build_with_key(key_from_env, clock)?;
        settings.lifecycle.storage_clock = storage_clock_from_env()?;
        Ok(settings)
    }

    fn build_with_key(
        mut self,
        key_from_env: Option<String>,
        clock: Clock,
    ) -> Result<Settings, ConfigError> {
        check_kafka(&self.kafka)?;
        read_kafka_secrets(&mut self.kafka)?;
        if self.lake.uri.trim().is_empty() {
            return Err(invalid(
                "lake.uri",
                "must be file:///path, a local path or s3://bucket/prefix",
            ));
        }
        check_pipeline(&self.pipeline)?;
        let metrics_listen = metrics_listen(&self.metrics)?;
        let tenants = tenant_registry(&self.tenants)?;
        let key = master_key(key_from_env, &self.privacy)?;
        if tenants.any_public() && key.is_none() {
            return Err(invalid(
                "privacy.key_file",
                format!("a public tenant needs a pseudonym key: set {KEY_ENV} or [privacy] key_file (generate one with `meterline keygen`)"),
            ));
        }
        check_dead_letters(&self.dead_letters, &self.kafka)?;
        check_inputs(&self.inputs, &self.kafka, &self.dead_letters)?;
        let economics = economics_settings(&self.economics)?;
        let compaction = check_compaction(self.compaction.clone())?;
        let (aggregate, telemetry_days) = self.aggregate_settings()?;
        let lifecycle = self.lifecycle_settings(key.as_deref(), telemetry_days, clock)?;
        let storage_options = self
            .lake
            .storage_options
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        Ok(Settings {
            kafka: self.kafka,
            lake: LakeConfig {
                uri: self.lake.uri,
                storage_options,
            },
            pipeline: self.pipeline,
            metrics_listen,
            tenants,
            key,
            special_category_fields: self.privacy.special_category_fields.unwrap_or_else(|| {
                DEFAULT_SPECIAL_CATEGORY_FIELDS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
            dead_letters: self.dead_letters,
            aggregate,
            lifecycle,
            clock,
            allow_versioned_bucket: self.privacy.allow_versioned_bucket,
            inputs: self.inputs,
            economics,
            compaction,
        })
    }

    /// `[aggregate]` and each tenant's disclosure rules and telemetry retention
    /// (returned for the lifecycle settings).
    fn aggregate_settings(&self) -> Result<(AggregateSettings, HashMap<String, u32>), ConfigError> {
        let a = &self.aggregate;
        if a.interval_secs == 0 {
            return Err(invalid("aggregate.interval_secs", "must be greater than 0"));
        }
        if a.max_days_per_step == 0 {
            return Err(invalid(
                "aggregate.max_days_per_step",
                "must be greater than 0",
            ));
        }
        if a.max_readings_per_step == 0 {
            return Err(invalid(
                "aggregate.max_readings_per_step",
                "must be greater than 0",
            ));
        }
        let mut disclosure = HashMap::new();
        let mut telemetry_days = HashMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if u64::from(t.telemetry_retention_days) <= t.validation.max_age_days {
                return Err(invalid(
                    format!("tenants[{i}].telemetry_retention_days"),
                    format!(
                        "must be greater than validation.max_age_days ({}): readings that old are still accepted",
                        t.validation.max_age_days
                    ),
                ));
            }
            telemetry_days.insert(t.id.clone(), t.telemetry_retention_days);
            let d = &t.aggregate;
            if d.min_meters == 0 {
                return Err(invalid(
                    format!("tenants[{i}].aggregate.min_meters"),
                    "must be at least 1 (10 is a sound default)",
                ));
            }
            if !(d.max_meter_share > 0.0 && d.max_meter_share <= 1.0) {
                return Err(invalid(
                    format!("tenants[{i}].aggregate.max_meter_share"),
                    "must be a share above 0 and at most 1 (0.5 is the default)",
                ));
            }
            disclosure.insert(
                t.id.clone(),
                Disclosure {
                    min_meters: d.min_meters,
                    max_meter_share: d.max_meter_share,
                },
            );
        }
        let aggregate = AggregateSettings {
            enabled: a.enabled,
            interval: std::time::Duration::from_secs(a.interval_secs),
            max_days_per_step: a.max_days_per_step,
            max_readings_per_step: a.max_readings_per_step,
            disclosure,
        };
        Ok((aggregate, telemetry_days))
    }

    /// `[privacy]` (topics, retention, geo) and `[dead_letters]` retention.
    fn lifecycle_settings(
        &self,
        key: Option<&MasterKey>,
        telemetry_days: HashMap<String, u32>,
        clock: Clock,
    ) -> Result<LifecycleSettings, ConfigError> {
        let d = &self.dead_letters;
        let p = &self.privacy;
        if p.erasure_deadline_secs == 0 {
            return Err(invalid(
                "privacy.erasure_deadline_secs",
                "must be greater than 0",
            ));
        }
        if !p.erasure_topic.is_empty()
            && (p.erasure_topic == self.kafka.readings_topic || p.erasure_topic == d.kafka_topic)
        {
            return Err(invalid(
                "privacy.erasure_topic",
                "must not be the readings or dead-letter topic",
            ));
        }
        let subject_events_topic = self.subject_events_topic(key)?;
        if p.orphan_file_age_secs < 600 {
            return Err(invalid(
                "privacy.orphan_file_age_secs",
                "must be at least 600 (10 minutes): a writer needs half of it between upload and commit",
            ));
        }
        if p.access_log_retention_days == 0 {
            return Err(invalid(
                "privacy.access_log_retention_days",
                "must be greater than 0",
            ));
        }
        let geo: Arc<dyn GeoLookup> = match &p.geoip_file {
            Some(path) => {
                Arc::new(CidrTable::load(path).map_err(|e| invalid("privacy.geoip_file", e))?)
            }
            None => Arc::new(CidrTable::default()),
        };
        Ok(LifecycleSettings {
            subject_events_topic,
            subject_group: format!("{}.subjects", self.kafka.group_id),
            geo,
            access_log_days: p.access_log_retention_days,
            account_days: p.account_retention_days,
            revocation_days: p.elhub_revocation_retention_days,
            orphan_age: Duration::from_secs(p.orphan_file_age_secs),
            erasure_topic: p.erasure_topic.clone(),
            erasure_group: format!("{}.erasure", self.kafka.group_id),
            erasure_deadline: Duration::from_secs(p.erasure_deadline_secs),
            retention_every: Duration::from_secs(d.retention_check_secs),
            dead_letter_days: u32::try_from(d.retention_days).unwrap_or(u32::MAX),
            telemetry_days,
            clock,
            storage_clock: Clock::system(),
        })
    }

    /// The subject-events topic: as configured, `subject.events` when there is a
    /// key, none without one; Elhub consent needs it.
    fn subject_events_topic(&self, key: Option<&MasterKey>) -> Result<String, ConfigError> {
        let p = &self.privacy;
        let topic = match (&p.subject_events_topic, key) {
            (Some(t), _) => t.clone(),
            (None, Some(_)) => "subject.events".to_owned(),
            (None, None) => String::new(),
        };
        if !topic.is_empty() {
            if key.is_none() {
                return Err(invalid(
                    "privacy.subject_events_topic",
                    format!("the consent ledger needs a pseudonym key (it stores subjects only as keyed hashes): set {KEY_ENV} or [privacy] key_file, or set subject_events_topic = \"\""),
                ));
            }
            if [
                self.kafka.readings_topic.as_str(),
                self.dead_letters.kafka_topic.as_str(),
                p.erasure_topic.as_str(),
            ]
            .contains(&topic.as_str())
            {
                return Err(invalid(
                    "privacy.subject_events_topic",
                    "must not be the readings, dead-letter or erasure topic",
                ));
            }
        }
        if topic.is_empty() {
            if let Some(i) = self.tenants.iter().position(|t| t.elhub_consent_required) {
                return Err(invalid(
                    format!("tenants[{i}].elhub_consent_required"),
                    "needs privacy.subject_events_topic: Elhub consent is known only from subject events",
                ));
            }
        }
        Ok(topic)
    }
}

fn check_kafka(k: &KafkaConfig) -> Result<(), ConfigError> {
    if k.brokers.trim().is_empty() {
        return Err(invalid("kafka.brokers", "must list at least one host:port"));
    }
    if k.group_id.trim().is_empty() {
        return Err(invalid("kafka.group_id", "must not be empty"));
    }
    if k.readings_topic.trim().is_empty() {
        return Err(invalid("kafka.readings_topic", "must not be empty"));
    }
    for reserved in [
        "group.id",
        "bootstrap.servers",
        "enable.auto.commit",
        "enable.auto.offset.store",
    ] {
        if k.properties.contains_key(reserved) || k.secret_files.contains_key(reserved) {
            return Err(invalid(
                format!("kafka.properties.\"{reserved}\""),
                "is set by meterline (offsets live in the lake); remove it",
            ));
        }
    }
    if let Some(name) = k.properties.keys().find(|name| is_secret_property(name)) {
        return Err(invalid(
            format!("kafka.properties.\"{name}\""),
            format!(
                "is a secret and does not belong in the configuration file; put it in a file \
                 readable by meterline's user only and name it under [kafka.secret_files]: \
                 \"{name}\" = \"/run/secrets/kafka-{}\"",
                name.replace('.', "-")
            ),
        ));
    }
    if let Some(name) = k
        .secret_files
        .keys()
        .find(|n| k.properties.contains_key(*n))
    {
        return Err(invalid(
            format!("kafka.secret_files.\"{name}\""),
            "is also set in [kafka.properties]; keep one",
        ));
    }
    check_plaintext(k)
}

/// Client settings for `brokers` with nothing else configured (`meterline
/// simulate --brokers`): plaintext, so only to loopback.
///
/// # Errors
/// No broker, or a broker off loopback.
pub fn plain_kafka(brokers: &str) -> Result<KafkaConfig, ConfigError> {
    let kafka = KafkaConfig {
        brokers: brokers.to_owned(),
        group_id: "meterline-simulate".to_owned(),
        readings_topic: "meter.readings".to_owned(),
        properties: Default::default(),
        secret_files: Default::default(),
        allow_plaintext: false,
    };
    check_kafka(&kafka)?;
    Ok(kafka)
}

/// An unencrypted protocol to a broker off loopback is refused unless
/// `kafka.allow_plaintext` says otherwise: subject events (names, emails,
/// addresses), raw meter ids and erasure requests would cross the network in
/// clear text.
fn check_plaintext(k: &KafkaConfig) -> Result<(), ConfigError> {
    let protocol = k.properties.get("security.protocol").map_or_else(
        || "plaintext".to_owned(),
        |p| p.to_string().to_ascii_lowercase(),
    );
    if !matches!(protocol.as_str(), "plaintext" | "sasl_plaintext") || k.allow_plaintext {
        return Ok(());
    }
    let Some(remote) = k
        .brokers
        .split(',')
        .map(str::trim)
        .find(|b| !is_loopback_broker(b))
    else {
        return Ok(());
    };
    Err(invalid(
        "kafka.allow_plaintext",
        format!(
            "broker {remote} is not on loopback and security.protocol is {protocol} (no TLS): \
             readings, subject events and erasure requests would cross the network unencrypted. \
             Set [kafka.properties] \"security.protocol\" = \"SSL\" or \"SASL_SSL\" (with \
             \"ssl.ca.location\"), or, on a network that is encrypted by other means, \
             kafka.allow_plaintext = true"
        ),
    ))
}

/// Whether `broker` (`host:port`, `[v6]:port`, optionally `proto://host:port`)
/// names a loopback address. Names are not resolved: only `localhost` counts.
fn is_loopback_broker(broker: &str) -> bool {
    let address = broker.split_once("://").map_or(broker, |(_, rest)| rest);
    let host = if let Some(rest) = address.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        address.rsplit_once(':').map_or(address, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads `[kafka.secret_files]` into the properties (each file owner-only).
fn read_kafka_secrets(k: &mut KafkaConfig) -> Result<(), ConfigError> {
    for (name, path) in &k.secret_files {
        let field = format!("kafka.secret_files.\"{name}\"");
        check_owner_only(&field, path, "a secret")?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| invalid(&field, format!("cannot read {}: {e}", path.display())))?,
        );
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(invalid(&field, format!("{} is empty", path.display())));
        }
        k.properties
            .insert(name.clone(), Scalar::Str(value.to_owned()));
    }
    Ok(())
}

fn check_pipeline(p: &PipelineConfig) -> Result<(), ConfigError> {
    for (field, value) in [
        (
            "pipeline.flush_interval_secs",
            p.flush_interval_secs as usize,
        ),
        ("pipeline.max_batch_rows", p.max_batch_rows),
        ("pipeline.max_batch_bytes", p.max_batch_bytes),
        ("pipeline.chunk_max_records", p.chunk_max_records),
        ("pipeline.channel_capacity", p.channel_capacity),
        ("pipeline.max_message_bytes", p.max_message_bytes),
        (
            "pipeline.retry_initial_backoff_ms",
            p.retry_initial_backoff_ms as usize,
        ),
        (
            "pipeline.retry_max_backoff_secs",
            p.retry_max_backoff_secs as usize,
        ),
    ] {
        if value == 0 {
            return Err(invalid(field, "must be greater than 0"));
        }
    }
    if p.max_message_bytes > 16 * 1024 * 1024 {
        return Err(invalid(
            "pipeline.max_message_bytes",
            "must be at most 16 MiB",
        ));
    }
    Ok(())
}

fn metrics_listen(m: &MetricsConfig) -> Result<Option<SocketAddr>, ConfigError> {
    let listen = m.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    SocketAddr::from_str(listen).map(Some).map_err(|_| {
        invalid(
            "metrics.listen",
            "must be an address such as 127.0.0.1:9898 (or empty to disable)",
        )
    })
}

fn tenant_registry(configs: &[TenantConfig]) -> Result<TenantRegistry, ConfigError> {
    if configs.is_empty() {
        return Err(invalid(
            "tenants",
            "configure at least one [[tenants]] entry",
        ));
    }
    let tenants = configs
        .iter()
        .enumerate()
        .map(|(i, t)| tenant(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let registry = TenantRegistry::new(tenants).map_err(|e| invalid("tenants", e.to_string()))?;
    Ok(registry.with_retired(configs.iter().filter(|t| t.retired).map(|t| t.id.as_str())))
}

fn tenant(i: usize, t: &TenantConfig) -> Result<Tenant, ConfigError> {
    let timezone = chrono_tz::Tz::from_str(&t.timezone).map_err(|_| {
        invalid(
            format!("tenants[{i}].timezone"),
            "must be an IANA time zone such as Europe/Oslo",
        )
    })?;
    Ok(Tenant {
        id: t.id.clone(),
        deployment: match t.deployment {
            DeploymentConfig::Public => Deployment::Public,
            DeploymentConfig::Private => Deployment::Private,
        },
        timezone,
        rules: Rules {
            requires_elhub_consent: t.elhub_consent_required,
            key_rotation: key_rotation(i, t)?,
            key_grace_days: t.key_grace_days,
            ..t.validation.rules(&format!("tenants[{i}].validation"))?
        },
    })
}

fn key_rotation(
    i: usize,
    t: &TenantConfig,
) -> Result<meterline_operators::epoch::Rotation, ConfigError> {
    use meterline_operators::epoch::Rotation;
    match (t.key_rotation.as_deref(), &t.deployment) {
        (None, DeploymentConfig::Public) => Ok(Rotation::Monthly),
        (Some("never"), DeploymentConfig::Public) if !t.allow_static_pseudonyms => Err(invalid(
            format!("tenants[{i}].key_rotation"),
            "`never` on a public tenant keeps one pseudonym per meter for good (linkable across \
             all time, never destroyed); set allow_static_pseudonyms = true to accept that",
        )),
        (None | Some("never"), _) => Ok(Rotation::Never),
        (Some(text), DeploymentConfig::Public) => Rotation::parse(text).ok_or_else(|| {
            invalid(
                format!("tenants[{i}].key_rotation"),
                "must be `monthly`, `yearly` or `never`",
            )
        }),
        (Some(_), _) => Err(invalid(
            format!("tenants[{i}].key_rotation"),
            "only public tenants have pseudonym keys (private tenants keep identifiers)",
        )),
    }
}

/// The master key: `METERLINE_PSEUDONYM_KEY` first, then `[privacy] key_file`.
/// A key file that group or others may read is refused, as `ssh` refuses such a
/// private key: the key links every pseudonym to its identifier.
fn master_key(
    from_env: Option<String>,
    privacy: &PrivacyConfig,
) -> Result<Option<Arc<MasterKey>>, ConfigError> {
    let from_env = from_env.map(zeroize::Zeroizing::new);
    match (from_env, &privacy.key_file) {
        (Some(text), _) => MasterKey::from_hex(&text)
            .map(|k| Some(Arc::new(k)))
            .map_err(|e: KeyError| invalid(KEY_ENV, e.to_string())),
        (None, Some(path)) => {
            check_key_file_mode(path)?;
            let text = std::fs::read_to_string(path)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| {
                    invalid(
                        "privacy.key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
            MasterKey::from_hex(&text)
                .map(|k| Some(Arc::new(k)))
                .map_err(|e| invalid("privacy.key_file", e.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Refuses a key file with any permission for group or others (mode & 0o077).
#[cfg(unix)]
fn check_key_file_mode(path: &Path) -> Result<(), ConfigError> {
    check_owner_only("privacy.key_file", path, "the pseudonym key")
}

/// Refuses a file of secrets that group or others may read (as `ssh` refuses
/// such a private key), naming `field`, the file and its mode.
#[cfg(unix)]
pub fn check_owner_only(field: &str, path: &Path, what: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(
            field,
            format!(
                "{} has mode {mode:04o}: {what} must be readable by its owner only; run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_owner_only(_field: &str, _path: &Path, _what: &str) -> Result<(), ConfigError> {
    Ok(())
}

fn check_dead_letters(d: &DeadLettersConfig, kafka: &KafkaConfig) -> Result<(), ConfigError> {
    if d.retention_days == 0 {
        return Err(invalid(
            "dead_letters.retention_days",
            "must be greater than 0",
        ));
    }
    if d.retention_check_secs == 0 {
        return Err(invalid(
            "dead_letters.retention_check_secs",
            "must be greater than 0",
        ));
    }
    if d.kafka_topic == kafka.readings_topic {
        return Err(invalid(
            "dead_letters.kafka_topic",
            "must not be the readings topic",
        ));
    }
    Ok(())
}

/// The rate table: meterline's defaults, then `[[economics.rates]]` in order.
fn economics_settings(e: &EconomicsConfig) -> Result<EconomicsSettings, ConfigError> {
    use meterline_operators::economics::rates::{Rate, RateRow, TaxZone};
    let mut rows = Vec::with_capacity(e.rates.len());
    for (i, r) in e.rates.iter().enumerate() {
        let field = |name: &str| format!("economics.rates[{i}].{name}");
        let rate = Rate::parse(&r.rate).ok_or_else(|| {
            let names: Vec<&str> = Rate::ALL.iter().map(|r| r.name()).collect();
            invalid(
                field("rate"),
                format!("must be one of {}", names.join(", ")),
            )
        })?;
        let zone = match &r.zone {
            None => None,
            Some(z) => Some(TaxZone::parse(z).ok_or_else(|| {
                invalid(
                    field("zone"),
                    "must be standard, north or finnmark (or absent: every zone)",
                )
            })?),
        };
        let date = |name: &str, text: &str| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| invalid(field(name), "must be a date, YYYY-MM-DD"))
        };
        let valid_from = date("valid_from", &r.valid_from)?;
        let valid_to = r
            .valid_to
            .as_deref()
            .map(|t| date("valid_to", t))
            .transpose()?;
        if valid_to.is_some_and(|to| to <= valid_from) {
            return Err(invalid(field("valid_to"), "must be after valid_from"));
        }
        let value: rust_decimal::Decimal = r.value.trim().parse().map_err(|_| {
            invalid(
                field("value"),
                "must be a decimal number as text, e.g. \"8.5\"",
            )
        })?;
        let in_range = match rate.unit() {
            "share" => value >= rust_decimal::Decimal::ZERO && value <= rust_decimal::Decimal::ONE,
            _ => value.abs() <= rust_decimal::Decimal::from(1000),
        };
        if !in_range || value.normalize().scale() > 6 {
            return Err(invalid(
                field("value"),
                format!(
                    "must be {} with at most 6 decimals",
                    if rate.unit() == "share" {
                        "a share from 0 to 1 (0.25 for 25 %)"
                    } else {
                        "øre/kWh between -1000 and 1000"
                    }
                ),
            ));
        }
        rows.push(RateRow {
            rate,
            zone,
            valid_from,
            valid_to,
            value,
            source: r.source.clone().unwrap_or_else(|| "config".to_owned()),
        });
    }
    let mut rates = meterline_operators::economics::rates::RateTable::defaults();
    rates.extend(rows);
    Ok(EconomicsSettings { rates })
}

/// Kafka's rule for topic names: 1 to 249 of `a-z A-Z 0-9 . _ -`, and neither
/// `.` nor `..`.
#[must_use]
pub fn valid_topic_name(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `[compaction]`: a round at least every second, at least two files to merge, a
/// partition of at least one row.
fn check_compaction(c: CompactionConfig) -> Result<CompactionConfig, ConfigError> {
    if c.every_secs == 0 {
        return Err(invalid("compaction.every_secs", "must be at least 1"));
    }
    if c.min_files < 2 {
        return Err(invalid(
            "compaction.min_files",
            "must be at least 2 (one file has nothing to merge)",
        ));
    }
    if c.max_partition_rows == 0 {
        return Err(invalid(
            "compaction.max_partition_rows",
            "must be at least 1",
        ));
    }
    Ok(c)
}

/// Each input topic, when set, is its own: not the readings or dead-letter topic,
/// and not another input's (each input's offsets are kept per topic).
fn check_inputs(
    inputs: &InputsConfig,
    kafka: &KafkaConfig,
    dead_letters: &DeadLettersConfig,
) -> Result<(), ConfigError> {
    let topics = [
        ("inputs.prices_topic", &inputs.prices_topic),
        ("inputs.profiles_topic", &inputs.profiles_topic),
        ("inputs.weather_topic", &inputs.weather_topic),
    ];
    for (i, (field, topic)) in topics.iter().enumerate() {
        if topic.is_empty() {
            continue;
        }
        if !valid_topic_name(topic) {
            return Err(invalid(
                *field,
                "must be a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -) or empty (off)",
            ));
        }
        if *topic == &kafka.readings_topic || *topic == &dead_letters.kafka_topic {
            return Err(invalid(
                *field,
                "must not be the readings or dead-letter topic",
            ));
        }
        if topics[..i].iter().any(|(_, other)| other == topic) {
            return Err(invalid(*field, "must differ from the other input topics"));
        }
    }
    Ok(())
}

impl ValidationConfig {
    fn rules(&self, field: &str) -> Result<Rules, ConfigError> {
        let thousandths = |name: &str, x: f64| {
            if x.is_finite() && x > 0.0 && x < 1e12 {
                Ok((x * 1000.0).round() as i128)
            } else {
                Err(invalid(
                    format!("{field}.{name}"),
                    "must be a positive number",
                ))
            }
        };
        for p in &self.gsrn_prefixes {
            if p.is_empty() || p.len() > 17 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    format!("{field}.gsrn_prefixes"),
                    "each prefix must be 1-17 digits",
                ));
            }
        }
        if self.max_age_days == 0 {
            return Err(invalid(
                format!("{field}.max_age_days"),
                "must be greater than 0",
            ));
        }
        Ok(Rules {
            gsrn_prefixes: self.gsrn_prefixes.clone(),
            max_kwh_per_hour: thousandths("max_kwh_per_hour", self.max_kwh_per_hour)?,
            max_m3_per_hour: thousandths("max_m3_per_hour", self.max_m3_per_hour)?,
            spike_factor: thousandths("spike_factor", self.spike_factor)?,
            future_skew_micros: i64::try_from(self.max_future_skew_secs)
                .unwrap_or(i64::MAX / 1_000_000)
                .min(i64::MAX / 1_000_000)
                * 1_000_000,
            max_age_micros: i64::try_from(self.max_age_days)
                .unwrap_or(100_000)
                .min(100_000)
                * 86_400
                * 1_000_000,
            convert_wh: self.convert_wh,
            ..Rules::default()
        })
    }
}

/// A chunk is handed over at this many payload bytes at the latest.
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Default `queued.max.messages.kbytes`: how much librdkafka prefetches.
pub const PREFETCH_KBYTES: &str = "16384";

/// Materializer settings.
#[derive(Debug, Clone)]
pub struct AggregateSettings {
    /// Run rounds inside `meterline run`.
    pub enabled: bool,
    /// Time between rounds (the freshness goal).
    pub interval: std::time::Duration,
    /// Local dates recomputed per step (bounds memory on a first build).
    pub max_days_per_step: usize,
    /// Stored readings recomputed per step (bounds memory; a larger day is
    /// recomputed in shares of its meters).
    pub max_readings_per_step: usize,
    /// Area-cell disclosure rules per public tenant.
    pub disclosure: HashMap<String, Disclosure>,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: std::time::Duration::from_secs(30),
            max_days_per_step: 31,
            max_readings_per_step: 200_000,
            disclosure: HashMap::new(),
        }
    }
}

/// Retention and erasure settings.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// Compacted topic of erasure tombstones; empty: no erasure consumer.
    pub erasure_topic: String,
    /// Consumer group of the erasure consumer.
    pub erasure_group: String,
    /// An erasure must be complete this long after it was requested.
    pub erasure_deadline: Duration,
    /// How often `meterline run` sweeps.
    pub retention_every: Duration,
    /// Dead letters are kept this many days.
    pub dead_letter_days: u32,
    /// Readings (and the aggregates made of them) are kept this many local days per
    /// tenant.
    pub telemetry_days: HashMap<String, u32>,
    /// Topic of `subject-event/v1` records; empty: no subjects consumer.
    pub subject_events_topic: String,
    /// Consumer group of the subjects consumer.
    pub subject_group: String,
    /// IP -> city/country for profiles.
    pub geo: Arc<dyn GeoLookup>,
    /// `access_log` rows are kept this many days.
    pub access_log_days: u32,
    /// A terminated account's data is erased this many days after termination.
    pub account_days: u32,
    /// A revoked meter's readings are deleted this many days after the revocation
    /// was recorded (0: at the next sweep).
    pub revocation_days: u32,
    /// Untracked files older than this are deleted by the sweep (see
    /// `meterline_sinks::orphans`).
    pub orphan_age: Duration,
    /// "Now" for sweeps, deadlines and audit timestamps. `run_pipeline` sets it to
    /// `Settings::clock`.
    pub clock: meterline_operators::Clock,
    /// "Now" for the orphan age: the wall clock, because the storage server
    /// stamps object modification times with it (see `FAKE_STORAGE_NOW_ENV`).
    pub storage_clock: meterline_operators::Clock,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            erasure_topic: String::new(),
            erasure_group: "meterline.erasure".to_owned(),
            erasure_deadline: Duration::from_secs(3600),
            retention_every: Duration::from_secs(3600),
            dead_letter_days: 14,
            telemetry_days: HashMap::new(),
            subject_events_topic: String::new(),
            subject_group: "meterline.subjects".to_owned(),
            geo: Arc::new(CidrTable::default()),
            access_log_days: 90,
            account_days: 30,
            revocation_days: 0,
            orphan_age: meterline_sinks::orphans::DEFAULT_ORPHAN_AGE,
            clock: meterline_operators::Clock::system(),
            storage_clock: meterline_operators::Clock::system(),
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn fake_now_moves_the_clock_and_a_bad_value_names_the_variable() {
        assert!(!clock_from(None).unwrap().is_shifted());
        assert!(!clock_from(Some(" ")).unwrap().is_shifted());
        let c = clock_from(Some("2028-02-29T23:30:00+01:00")).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2028-02-29T22:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let got = c.now();
        assert!(
            got >= want && got - want < chrono::Duration::seconds(5),
            "{got}"
        );
        let err = clock_from(Some("2028-02-29 23:30"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(FAKE_NOW_ENV), "{err}");
        let err = clock_named(FAKE_STORAGE_NOW_ENV, Some("tomorrow"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(FAKE_STORAGE_NOW_ENV), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        group_id = "meterline"
        [lake]
        uri = "/tmp/lake"
        [[tenants]]
        id = "acme"
        deployment = "private"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        // An environment prefix nothing uses: tests do not see the real environment.
        Config::from_sources(text, Env::prefixed("METERLINE_TEST_UNUSED_PREFIX_"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.kafka.readings_topic, "meter.readings");
        assert_eq!(c.metrics.listen, "127.0.0.1:9898");
        assert_eq!(c.pipeline.flush_interval_secs, 10);
        assert_eq!(c.tenants[0].timezone, "Europe/Oslo");
        let s = c.build_with_key(None, Clock::system()).unwrap();
        assert!(s.key.is_none());
    }

    #[test]
    fn input_topics_are_off_by_default_and_must_be_their_own() {
        let s = parse(MINIMAL)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap();
        assert_eq!(
            s.inputs,
            InputsConfig::default(),
            "inputs are off by default"
        );
        let with = |inputs: &str| {
            parse(&format!("{MINIMAL}\n[inputs]\n{inputs}\n"))
                .unwrap()
                .build_with_key(None, Clock::system())
        };
        let s = with("prices_topic = \"market.prices\"\nweather_topic = \"weather.observations\"")
            .unwrap();
        assert_eq!(s.inputs.prices_topic, "market.prices");
        assert_eq!(s.inputs.profiles_topic, "");
        for (inputs, field, why) in [
            (
                "prices_topic = \"meter.readings\"",
                "inputs.prices_topic",
                "readings",
            ),
            (
                "prices_topic = \"a\"\nweather_topic = \"a\"",
                "inputs.weather_topic",
                "other input",
            ),
            (
                "profiles_topic = \"no spaces\"",
                "inputs.profiles_topic",
                "topic name",
            ),
            (
                "profiles_topic = \"..\"",
                "inputs.profiles_topic",
                "topic name",
            ),
        ] {
            let err = with(inputs).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(why), "{inputs}: {err}");
        }
        let err = parse(&format!("{MINIMAL}\n[inputs]\nprice_topic = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("price_topic"), "{err}");
    }

    #[test]
    fn configured_rates_extend_the_defaults_and_bad_ones_are_named() {
        use meterline_operators::economics::rates::{Rate, TaxZone};
        let day = |m, d| chrono::NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        let build = |rates: &str| {
            parse(&format!("{MINIMAL}\n{rates}\n"))
                .unwrap()
                .build_with_key(None, Clock::system())
        };
        let s = build("").unwrap();
        assert_eq!(s.economics, EconomicsSettings::default());
        let std = |s: &Settings, d| {
            s.economics
                .rates
                .value(Rate::ConsumptionTax, TaxZone::Standard, d)
        };
        assert_eq!(std(&s, day(7, 1)), Some("7.13".parse().unwrap()));
        // The state cuts the tax from 1 July.
        let s = build(
            "[[economics.rates]]\nrate = \"consumption_tax\"\nvalid_from = \"2026-07-01\"\nvalue = \"5.5\"\nsource = \"vedtak 2026-06-20\"",
        )
        .unwrap();
        assert_eq!(std(&s, day(6, 30)), Some("7.13".parse().unwrap()));
        assert_eq!(std(&s, day(7, 1)), Some("5.5".parse().unwrap()));
        assert_eq!(
            s.economics
                .rates
                .value(Rate::ConsumptionTax, TaxZone::Finnmark, day(7, 1)),
            Some(rust_decimal::Decimal::ZERO),
            "Finnmark's own row still wins"
        );
        for (row, field) in [
            ("rate = \"elavgift\"\nvalid_from = \"2026-07-01\"\nvalue = \"1\"", "rates[0].rate"),
            ("rate = \"vat\"\nvalid_from = \"2026-07-01\"\nvalue = \"25\"", "rates[0].value"),
            ("rate = \"vat\"\nvalid_from = \"1 July\"\nvalue = \"0.25\"", "rates[0].valid_from"),
            ("rate = \"vat\"\nzone = \"oslo\"\nvalid_from = \"2026-07-01\"\nvalue = \"0.25\"", "rates[0].zone"),
            ("rate = \"vat\"\nvalid_from = \"2026-07-01\"\nvalid_to = \"2026-07-01\"\nvalue = \"0.25\"", "rates[0].valid_to"),
        ] {
            let err = build(&format!("[[economics.rates]]\n{row}")).unwrap_err().to_string();
            assert!(err.contains(field), "{row}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = parse(&format!(
            "{MINIMAL}\n[pipeline]\nflush_intervall_secs = 3\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("flush_intervall_secs"), "{err}");
    }

    #[test]
    fn missing_keys_are_named() {
        let err = parse(&MINIMAL.replace("group_id = \"meterline\"", "")).unwrap_err();
        assert!(err.to_string().contains("group_id"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let bad_tz = MINIMAL.replace(
            "deployment = \"private\"",
            "deployment = \"private\"\ntimezone = \"Mars/Olympus\"",
        );
        let err = parse(&bad_tz)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap_err();
        assert!(err.to_string().contains("tenants[0].timezone"), "{err}");
        let err = parse(&MINIMAL.replace("\"private\"", "\"secret\"")).unwrap_err();
        assert!(err.to_string().contains("deployment"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[metrics]\nlisten = \"nowhere\"\n"))
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap_err();
        assert!(err.to_string().contains("metrics.listen"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}\n[aggregate]\nmax_readings_per_step = 0\n"
        ))
        .unwrap()
        .build_with_key(None, Clock::system())
        .unwrap_err();
        assert!(
            err.to_string().contains("aggregate.max_readings_per_step"),
            "{err}"
        );
    }

    /// The logged bound counts one aggregation step only while aggregates run.
    #[test]
    fn the_memory_bound_counts_the_version_index_at_its_fullest() {
        let bound = |keys: usize| {
            parse(&format!(
                "{MINIMAL}\n[pipeline]\nversion_index_max_keys = {keys}\n"
            ))
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap()
            .memory_bound_bytes()
        };
        // 2,000 keys: a full table of 2,048 buckets holds 1,792; 1,000 keys: 896
        // of 1,024. 57 B per key held, 16 B per meter-presence entry.
        assert_eq!(bound(2_000) - bound(1_000), 57 * (1_792 - 896) + 16 * 1_000);
    }

    #[test]
    fn the_memory_bound_counts_the_aggregation_step_when_enabled() {
        let on = parse(&format!(
            "{MINIMAL}\n[aggregate]\nmax_readings_per_step = 1000\n"
        ))
        .unwrap()
        .build_with_key(None, Clock::system())
        .unwrap();
        let off = parse(&format!(
            "{MINIMAL}\n[aggregate]\nenabled = false\nmax_readings_per_step = 1000\n"
        ))
        .unwrap()
        .build_with_key(None, Clock::system())
        .unwrap();
        // One step of 1,000 readings at 1.2 KB, and the materializer's file
        // indexes: 2,000,000 (file, meter) pairs at 24 B (README, memory table).
        assert_eq!(
            on.memory_bound_bytes() - off.memory_bound_bytes(),
            1000 * 1200 + 2_000_000 * 24
        );
    }

    #[test]
    fn static_pseudonyms_need_saying_and_retired_tenants_accept_nothing_new() {
        let key = || Some("ab".repeat(32));
        let never = MINIMAL.replace("\"private\"", "\"public\"\nkey_rotation = \"never\"");
        let err = parse(&never)
            .unwrap()
            .build_with_key(key(), Clock::system())
            .unwrap_err();
        assert!(err.to_string().contains("allow_static_pseudonyms"), "{err}");
        let allowed = never.replace(
            "key_rotation",
            "allow_static_pseudonyms = true\nkey_rotation",
        );
        assert!(parse(&allowed)
            .unwrap()
            .build_with_key(key(), Clock::system())
            .is_ok());
        let retired = format!(
            "{MINIMAL}\n[[tenants]]\nid = \"gone\"\ndeployment = \"private\"\nretired = true\n"
        );
        let s = parse(&retired)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap();
        assert!(s.tenants.by_id("gone").is_some(), "kept for its retention");
        assert!(s.tenants.accepting("gone").is_none(), "accepts nothing new");
        assert!(s.tenants.accepting("acme").is_some());
    }

    #[test]
    fn public_tenants_need_a_key_and_the_key_is_never_echoed() {
        let public = MINIMAL.replace("\"private\"", "\"public\"");
        let err = parse(&public)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap_err();
        assert!(err.to_string().contains(KEY_ENV), "{err}");
        let err = parse(&public)
            .unwrap()
            .build_with_key(Some("deadbeef-not-a-key".into()), Clock::system())
            .unwrap_err();
        assert!(!err.to_string().contains("deadbeef"), "{err}");
        let ok = parse(&public)
            .unwrap()
            .build_with_key(Some("ab".repeat(32)), Clock::system())
            .unwrap();
        assert!(ok.key.is_some());
    }

    /// A key file that group or others may read is refused, as `ssh` refuses such
    /// a private key, with a message naming the file and its mode (and never the
    /// key); an owner-only file is read.
    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_group_or_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pseudonym.key");
        let key = "cd".repeat(32);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        let text = format!(
            "{}\n[privacy]\nkey_file = \"{}\"\n",
            MINIMAL.replace("\"private\"", "\"public\""),
            path.display()
        );
        let build = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            parse(&text).unwrap().build_with_key(None, Clock::system())
        };
        for (mode, shown) in [
            (0o644, "0644"),
            (0o640, "0640"),
            (0o604, "0604"),
            (0o660, "0660"),
        ] {
            let err = build(mode).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("privacy.key_file"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(shown), "{message}");
            assert!(message.contains("chmod 600"), "{message}");
            assert!(!message.contains(&key), "{message}");
        }
        for mode in [0o600, 0o400] {
            let settings = build(mode).unwrap();
            assert!(settings.key.is_some(), "mode {mode:o}");
        }
    }

    /// Neither `{:?}` nor `{:#?}` of the settings shows the key, as hex or as bytes.
    #[test]
    fn debug_output_of_the_settings_shows_no_key_material() {
        let public = MINIMAL.replace("\"private\"", "\"public\"");
        let hex = "9e".repeat(32);
        let settings = parse(&public)
            .unwrap()
            .build_with_key(Some(hex.clone()), Clock::system())
            .unwrap();
        for text in [format!("{settings:?}"), format!("{settings:#?}")] {
            // The key is there, redacted: the test looks at the right field.
            assert!(text.contains("MasterKey(<redacted>)"), "{text}");
            assert!(!text.to_lowercase().contains(&hex[..8]), "{text}");
            assert!(!text.contains("158, 158"), "{text}");
            assert!(!text.contains("158,\n"), "{text}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_file_values() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("METERLINE_KAFKA__BROKERS", "broker-a:9093");
            jail.set_env("METERLINE_PIPELINE__MAX_BATCH_ROWS", "123");
            jail.set_env("METERLINE_AGGREGATE__INTERVAL_SECS", "7");
            jail.set_env("METERLINE_DEAD_LETTERS__RETENTION_DAYS", "9");
            jail.set_env("METERLINE_PSEUDONYM_KEY", "ab".repeat(32));
            // Not configuration: variables of other tools that share the prefix.
            jail.set_env("METERLINE_LOG", "debug");
            jail.set_env("METERLINE_MOTO_SERVER", "/usr/bin/moto_server");
            let c = Config::from_sources(MINIMAL, Env::prefixed("METERLINE_")).unwrap();
            assert_eq!(c.kafka.brokers, "broker-a:9093");
            assert_eq!(c.pipeline.max_batch_rows, 123);
            assert_eq!(c.aggregate.interval_secs, 7);
            assert_eq!(c.dead_letters.retention_days, 9);
            Ok(())
        });
    }

    /// Every section of the documented configuration can be overridden from the
    /// environment (a section left out of [`SECTIONS`] would be ignored silently).
    #[test]
    fn every_documented_section_takes_environment_overrides() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/meterline.toml");
        let sections: figment::value::Dict = Figment::from(Toml::file(&path))
            .extract()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(sections.len() >= 8, "{sections:?}");
        for section in sections.keys() {
            assert!(
                SECTIONS.contains(&section.as_str()),
                "[{section}] of deploy/meterline.toml cannot be overridden from the environment"
            );
        }
    }

    /// Plaintext (or SASL without TLS) to a broker off loopback is refused,
    /// naming the field that allows it; TLS, loopback or the override pass.
    #[test]
    fn plaintext_to_a_broker_off_loopback_is_refused() {
        let with = |brokers: &str, extra: &str| {
            let text = MINIMAL.replace("127.0.0.1:9092", brokers).replacen(
                "[kafka]\n",
                &format!("[kafka]\n{extra}\n"),
                1,
            );
            parse(&text).unwrap().build_with_key(None, Clock::system())
        };
        for brokers in [
            "kafka-1.example.net:9092",
            "127.0.0.1:9092,10.0.0.7:9092",
            "[2001:db8::1]:9092",
            "PLAINTEXT://192.168.1.20:9092",
        ] {
            for protocol in [
                "",
                "properties = { \"security.protocol\" = \"SASL_PLAINTEXT\" }",
            ] {
                let err = with(brokers, protocol).unwrap_err().to_string();
                assert!(err.contains("kafka.allow_plaintext"), "{brokers}: {err}");
                assert!(err.contains("not on loopback"), "{brokers}: {err}");
            }
        }
        for brokers in [
            "127.0.0.1:9092",
            "localhost:9092,127.0.0.2:9093",
            "[::1]:9092",
        ] {
            with(brokers, "").unwrap_or_else(|e| panic!("{brokers}: {e}"));
        }
        for extra in [
            "properties = { \"security.protocol\" = \"SSL\" }",
            "properties = { \"security.protocol\" = \"sasl_ssl\" }",
            "allow_plaintext = true",
        ] {
            with("kafka-1.example.net:9092", extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        }
    }

    /// A secret inline in `[kafka.properties]` is refused (it would sit in a file
    /// that gets copied and committed); `[kafka.secret_files]` reads it from an
    /// owner-only file, and `Debug` never shows it.
    #[test]
    fn kafka_secrets_come_from_owner_only_files_and_never_show() {
        use std::os::unix::fs::PermissionsExt;
        let inline = format!("{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"hunter22\"\n");
        let err = parse(&inline)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sasl.password") && err.contains("secret_files"),
            "{err}"
        );
        assert!(!err.contains("hunter22"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kafka-password");
        std::fs::write(&path, "correct horse battery\n").unwrap();
        let text = format!(
            "{MINIMAL}\n[kafka.properties]\n\"sasl.username\" = \"meterline\"\n\
             [kafka.secret_files]\n\"sasl.password\" = \"{}\"\n",
            path.display()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = parse(&text)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.secret_files") && err.contains("0644"),
            "{err}"
        );
        assert!(!err.contains("horse"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let settings = parse(&text)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap();
        let client = crate::kafka::client::producer(&settings.kafka);
        assert_eq!(client.get("sasl.password"), Some("correct horse battery"));
        assert_eq!(client.get("sasl.username"), Some("meterline"));
        for text in [format!("{settings:?}"), format!("{settings:#?}")] {
            assert!(!text.contains("horse"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
            assert!(text.contains("meterline"), "{text}");
        }
    }

    #[test]
    fn reserved_kafka_properties_are_refused() {
        let text = format!("{MINIMAL}\n[kafka.properties]\n\"enable.auto.commit\" = true\n");
        // [kafka.properties] after [[tenants]] is still the kafka table in TOML.
        let err = parse(&text)
            .unwrap()
            .build_with_key(None, Clock::system())
            .unwrap_err();
        assert!(err.to_string().contains("enable.auto.commit"), "{err}");
    }
}
