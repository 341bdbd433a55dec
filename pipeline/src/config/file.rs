//! The configuration file's sections, as serde reads them. Defaults live here;
//! validation is in `settings.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub lake: LakeSection,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    #[serde(default)]
    pub dead_letters: DeadLettersConfig,
    #[serde(default)]
    pub aggregate: AggregateConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub inputs: InputsConfig,
    #[serde(default)]
    pub economics: EconomicsConfig,
    #[serde(default)]
    pub elhub: ElhubConfig,
    #[serde(default)]
    pub compaction: CompactionConfig,
    pub tenants: Vec<TenantConfig>,
}

/// `[compaction]`: `meterline run` rewrites the small files of cold `readings`
/// partitions (a tenant's days before yesterday) as one file sorted by meter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Off: files stay as the flushes wrote them (`meterline run` only).
    pub enabled: bool,
    /// How often a round runs (the first one this long after start).
    pub every_secs: u64,
    /// A cold partition is rewritten when it has at least this many files.
    pub min_files: usize,
    /// Partitions with more rows are left as they are: a rewrite holds its
    /// partition in memory (about 200 bytes a row).
    pub max_partition_rows: u64,
    /// Files a compaction replaced are deleted from storage this long after
    /// (a query reading the version before the compaction has that long).
    pub keep_replaced_secs: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every_secs: 3600,
            min_files: 8,
            max_partition_rows: 1_000_000,
            keep_replaced_secs: 3600,
        }
    }
}

/// `[elhub]`: `meterline elhub ingest`, the Elhub adapter (EMIF XML and Min side CSV
/// files into `reading/v1` records on the readings topic).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElhubConfig {
    /// Where files that could not be published whole go, each beside a
    /// `.reason.json`; they are deleted after `dead_letters.retention_days`.
    /// Default: `rejected/` inside the `--watch` directory, else `./elhub-rejected`.
    pub rejected_dir: Option<PathBuf>,
    /// Files larger than this are rejected unread (`too_large`).
    pub max_file_bytes: u64,
    /// How often `--watch` looks for new files.
    pub poll_interval_secs: u64,
    /// `/metrics` of `meterline elhub ingest --watch`; empty: none.
    pub metrics_listen: String,
    /// Master data (`NotifyMeteringPointCharacteristics`): the price area and grid
    /// company of each grid area, by its EIC code (`[elhub.grid_areas."50Y..."]`).
    pub grid_areas: BTreeMap<String, GridAreaConfig>,
    /// Master data: the support scheme of a household's profile (`stromstotte`,
    /// `norgespris`, `none`); cabins and businesses get `none`.
    pub household_scheme: String,
}

/// `[elhub.grid_areas."EIC"]`: what a grid area's profiles are priced with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GridAreaConfig {
    /// `NO1`..`NO5`.
    pub price_area: String,
    /// The grid company's GLN (13 digits, GS1 check digit).
    pub grid_company_gln: String,
}

impl Default for ElhubConfig {
    fn default() -> Self {
        Self {
            rejected_dir: None,
            max_file_bytes: 1 << 30,
            poll_interval_secs: 5,
            metrics_listen: "127.0.0.1:9900".to_owned(),
            grid_areas: BTreeMap::new(),
            household_scheme: "stromstotte".to_owned(),
        }
    }
}

/// `[economics]`: what costs are computed with.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EconomicsConfig {
    /// Rates added to meterline's defaults for 2024-2026 (`[[economics.rates]]`),
    /// for when the state changes one: a row wins over the defaults from its
    /// `valid_from`.
    pub rates: Vec<RateConfig>,
}

/// `[[economics.rates]]`: one dated value of a rate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// `consumption_tax`, `enova`, `vat`, `support_threshold`, `support_share`,
    /// `norgespris`.
    pub rate: String,
    /// `standard`, `north` or `finnmark`; absent: every zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// The first day it applies, `YYYY-MM-DD`.
    pub valid_from: String,
    /// The first day it no longer applies; absent: until replaced.
    #[serde(default)]
    pub valid_to: Option<String>,
    /// øre/kWh, or a share (`vat`, `support_share`: 0.25 for 25 %), as exact
    /// decimal text: `"8.5"`.
    pub value: String,
    /// Where it comes from (a decision, a regulation); default `config`.
    #[serde(default)]
    pub source: Option<String>,
}

/// `[inputs]`: the energy-economics topics `meterline run` also consumes, each
/// into its own table, exactly once (see docs/ARCHITECTURE.md). An empty topic
/// (the default) leaves that input off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputsConfig {
    /// Topic of `price/v1` messages (spot prices) into `spot_prices`, e.g.
    /// `market.prices`.
    pub prices_topic: String,
    /// Topic of `meter-profile/v1` messages (private tenants' meter profiles)
    /// into `meter_profiles`, e.g. `meter.profiles`.
    pub profiles_topic: String,
    /// Topic of `observation/v1` messages (weather observations) into
    /// `weather_observations`, e.g. `weather.observations`.
    pub weather_topic: String,
}

/// `[serve]`: `meterline serve`, the lake over the Postgres wire protocol.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on. Off loopback, TLS is required.
    pub listen: String,
    /// PEM certificate chain. With `tls_key_file`, clients must use TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (owner-only, like every secret file).
    pub tls_key_file: Option<PathBuf>,
    /// Connections served at once; more are refused with "too many
    /// connections" (SQLSTATE 53300).
    pub max_connections: usize,
    /// A statement running longer is cancelled (a client's `SET
    /// statement_timeout` can only lower it).
    pub statement_timeout_secs: u64,
    /// A result with more rows fails ("add a LIMIT or aggregate").
    pub max_result_rows: usize,
    /// Memory one query may use for joins, sorts and aggregations (MiB).
    pub memory_limit_mib: usize,
    /// How old a session's view of a table may be: a query starting later than
    /// this after the last look reads the newest Delta version.
    pub refresh_secs: u64,
    /// Address of this process's `/metrics` endpoint; empty disables it.
    pub metrics_listen: String,
    /// Token verification.
    pub jwt: JwtConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5433".to_owned(),
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: 64,
            statement_timeout_secs: 60,
            max_result_rows: 1_000_000,
            memory_limit_mib: 512,
            refresh_secs: 2,
            metrics_listen: "127.0.0.1:9899".to_owned(),
            jwt: JwtConfig::default(),
        }
    }
}

/// `[serve.jwt]`: which tokens open a session. Exactly one of the key files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// A file holding the HS256 shared secret (at least 32 bytes; owner-only).
    pub hs256_secret_file: Option<PathBuf>,
    /// A JWKS file with the RS256/ES256 public keys of the token issuer.
    pub jwks_file: Option<PathBuf>,
    /// The required `iss` claim.
    pub issuer: String,
    /// The required `aud` claim.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret_file: None,
            jwks_file: None,
            issuer: String::new(),
            audience: "meterline".to_owned(),
            leeway_secs: 60,
        }
    }
}

/// `[dead_letters]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLettersConfig {
    /// Also publish each dead letter to this Kafka topic (in the same flush as the
    /// lake commit), e.g. `meterline.dead-letters`; empty: the lake table only.
    pub kafka_topic: String,
    /// Dead letters older than this are deleted from the lake (and their files
    /// vacuumed) automatically.
    pub retention_days: u64,
    /// How often `meterline run` applies the retention.
    pub retention_check_secs: u64,
}

impl Default for DeadLettersConfig {
    fn default() -> Self {
        Self {
            kafka_topic: String::new(),
            retention_days: 14,
            retention_check_secs: 3600,
        }
    }
}

/// `[kafka]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Consumer group: processes with the same group share the topic's partitions.
    pub group_id: String,
    /// Topic of `reading/v1` messages.
    #[serde(default = "default_readings_topic")]
    pub readings_topic: String,
    /// Extra librdkafka properties (`security.protocol`, `ssl.*`, `sasl.*`, ...),
    /// passed to every client meterline creates. Secrets (`sasl.password`, ...) are
    /// refused here: they come from `secret_files`.
    #[serde(default)]
    pub properties: BTreeMap<String, Scalar>,
    /// librdkafka properties whose values are secrets, each read from a file
    /// (owner-only, like the pseudonym key): `"sasl.password" = "/run/secrets/kafka"`.
    /// Once read, their values are in `properties` (shown redacted by `Debug`).
    #[serde(default)]
    pub secret_files: BTreeMap<String, PathBuf>,
    /// Allow an unencrypted connection (`security.protocol` PLAINTEXT or
    /// SASL_PLAINTEXT, the librdkafka default being PLAINTEXT) to a broker that is
    /// not on loopback. Off: such a configuration is refused at start.
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// Whether a librdkafka property holds a secret (its value is never shown, and
/// never accepted inline in `[kafka.properties]`).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || name.ends_with(".pem") && name.contains("key")
        || name == "sasl.oauthbearer.config"
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, String> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>".to_owned()
                } else {
                    v.to_string()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("readings_topic", &self.readings_topic)
            .field("properties", &properties)
            .field("secret_files", &self.secret_files)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish()
    }
}

fn default_readings_topic() -> String {
    "meter.readings".to_owned()
}

/// A TOML scalar used as a librdkafka property value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// `[lake]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSection {
    /// `file:///path`, a local path, or `s3://bucket/prefix`.
    pub uri: String,
    /// Object store options (S3: `endpoint`, `region`, `allow_http`, `access_key_id`,
    /// ...). Prefer environment variables (`AWS_ACCESS_KEY_ID`, ...) for credentials.
    #[serde(default)]
    pub storage_options: BTreeMap<String, Scalar>,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Commit at least this often while records are buffered (and move offsets even
    /// when every record was a dead letter).
    pub flush_interval_secs: u64,
    /// Commit when this many rows (readings + dead letters) are buffered.
    pub max_batch_rows: usize,
    /// Commit when the buffered records' payloads reach this many bytes. With the
    /// channel and the Kafka prefetch this bounds memory (see the README).
    pub max_batch_bytes: usize,
    /// Records per chunk handed from the Kafka thread to the operators.
    pub chunk_max_records: usize,
    /// Chunks that may wait between the Kafka thread and the operators; when full,
    /// consumption pauses (backpressure) instead of buffering more.
    pub channel_capacity: usize,
    /// Payloads above this size are dead letters (`too_large`), never parsed.
    pub max_message_bytes: usize,
    /// On SIGTERM: time allowed to flush and commit before giving up (exit 1,
    /// nothing lost: uncommitted records are consumed again on restart).
    pub shutdown_grace_secs: u64,
    /// First retry delay after a storage error; doubles up to `retry_max_backoff_secs`.
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_secs: u64,
    /// Keys (meter x interval) whose current version is kept in memory to apply the
    /// version rules; beyond this the index is cleared and reloaded from the lake.
    pub version_index_max_keys: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            flush_interval_secs: 10,
            max_batch_rows: 200_000,
            max_batch_bytes: 32 * 1024 * 1024,
            chunk_max_records: 5_000,
            channel_capacity: 4,
            max_message_bytes: 64 * 1024,
            shutdown_grace_secs: 30,
            retry_initial_backoff_ms: 200,
            retry_max_backoff_secs: 30,
            version_index_max_keys: 2_000_000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the `/metrics` and `/healthz` endpoint; empty disables it.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".to_owned(),
        }
    }
}

/// `[privacy]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// File holding the 64-hex-character pseudonym master key. Used when
    /// `METERLINE_PSEUDONYM_KEY` is not set.
    pub key_file: Option<PathBuf>,
    /// Field names that carry special categories of personal data (health,
    /// biometrics, religion, politics, ethnicity, children ...). Such fields are
    /// removed wherever they appear in a message. Unset: the built-in list (see the
    /// README); set: this list replaces it. Fields named for a national identity
    /// number (`fødselsnummer`, `fnr`, `personnummer`, `d_nummer`, ...) are removed
    /// either way.
    pub special_category_fields: Option<Vec<String>>,
    /// Compacted topic of erasure requests: a record with key =
    /// `<tenant>/<subject>` and no value (a tombstone) erases that tenant's
    /// subject. Empty: no erasure consumer.
    pub erasure_topic: String,
    /// An erasure must be complete (rows removed, aggregates recomputed, old files
    /// deleted) within this many seconds of the request; `meterline audit` reports
    /// any that took longer.
    pub erasure_deadline_secs: u64,
    /// Topic of `subject-event/v1` records (consent, upgrade, termination, Elhub
    /// consent, profile data). Empty: no subjects consumer. Unset:
    /// `subject.events` when a pseudonym key is configured (the ledger stores
    /// subjects only as keyed hashes), else none.
    pub subject_events_topic: Option<String>,
    /// Offline IP -> city/country table (`cidr,city,country` lines) for profiles;
    /// unset: city and country stay empty.
    pub geoip_file: Option<PathBuf>,
    /// Raw IPs (`access_log`) are deleted after this many days.
    pub access_log_retention_days: u32,
    /// A terminated account's data is erased this many days after termination.
    pub account_retention_days: u32,
    /// A meter's stored readings (and everything derived from them) are deleted
    /// this many days after its Elhub consent revocation was recorded; 0: at the
    /// next retention sweep.
    pub elhub_revocation_retention_days: u32,
    /// Files under a table that its Delta log does not reference (uploads whose
    /// commit never landed) are deleted by the sweep once they are this old; a
    /// writer never commits files it uploaded longer ago than half of it.
    pub orphan_file_age_secs: u64,
    /// Start on an S3 bucket that keeps old versions of objects (versioning
    /// enabled or suspended), or whose versioning cannot be read. Off: refused,
    /// because erased data and destroyed keys would survive as noncurrent
    /// versions. For buckets whose lifecycle rules expire noncurrent versions
    /// quickly; `meterline audit` lists it as a standing exception.
    pub allow_versioned_bucket: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            special_category_fields: None,
            erasure_topic: "subject.erasure".to_owned(),
            erasure_deadline_secs: 3600,
            subject_events_topic: None,
            geoip_file: None,
            access_log_retention_days: 90,
            account_retention_days: 30,
            elhub_revocation_retention_days: 0,
            orphan_file_age_secs: 6 * 3600,
            allow_versioned_bucket: false,
        }
    }
}

/// `[aggregate]`: the aggregate tables (consumption per hour, day, month).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    /// Keep the aggregate tables current inside `meterline run`.
    pub enabled: bool,
    /// Seconds between materialization rounds: aggregates reflect a `readings`
    /// commit within about this long (`meterline_aggregate_lag_seconds`).
    pub interval_secs: u64,
    /// Local days recomputed per step (bounds memory when a lake is aggregated for
    /// the first time).
    pub max_days_per_step: usize,
    /// Stored readings recomputed per step, at most (from the Delta log's row
    /// counts): a step's memory is about 1.2 KB per reading it reads. A day above
    /// this is recomputed in shares of its meters, a step each.
    pub max_readings_per_step: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 30,
            max_days_per_step: 31,
            max_readings_per_step: 200_000,
        }
    }
}

/// `[tenants.aggregate]`: when an area cell of a public tenant may be published.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantAggregateConfig {
    /// At least this many distinct meters per area cell (k).
    pub min_meters: usize,
    /// No meter may contribute more than this share (0-1) of a cell's value.
    pub max_meter_share: f64,
}

impl Default for TenantAggregateConfig {
    fn default() -> Self {
        let d = meterline_operators::aggregate::Disclosure::default();
        Self {
            min_meters: d.min_meters,
            max_meter_share: d.max_meter_share,
        }
    }
}

/// `[[tenants]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// `public` (pseudonymized, no personal data) or `private` (identifiers kept).
    pub deployment: DeploymentConfig,
    /// IANA time zone of the tenant's calendar.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Validation thresholds (`[tenants.validation]`).
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Area-cell disclosure (`[tenants.aggregate]`, public tenants).
    #[serde(default)]
    pub aggregate: TenantAggregateConfig,
    /// Readings (and the aggregates computed from them) are deleted this many
    /// local days after their date. Must exceed `validation.max_age_days`.
    #[serde(default = "default_telemetry_retention_days")]
    pub telemetry_retention_days: u32,
    /// The tenant's readings are Elhub data: each is stored only if its meter has
    /// valid Elhub consent (`elhub_consent_granted` on the subject-events topic) at
    /// the interval's start; others are dropped and counted (`no_consent`).
    #[serde(default)]
    pub elhub_consent_required: bool,
    /// Public tenants: `monthly` (default), `yearly` or `never`: how often the
    /// pseudonym key changes. Private tenants keep identifiers: `never`.
    #[serde(default)]
    pub key_rotation: Option<String>,
    /// An epoch's key is destroyed this many days after the epoch ends; later
    /// readings (corrections) of that epoch are not stored.
    #[serde(default = "default_key_grace_days")]
    pub key_grace_days: u32,
    /// A public tenant with `key_rotation = "never"`: its pseudonyms link a meter
    /// across all time and are never destroyed. Refused unless this is true
    /// (`meterline audit` lists it as a standing exception).
    #[serde(default)]
    pub allow_static_pseudonyms: bool,
    /// The tenant no longer sends data: what is stored is kept until its
    /// retention ends (sweeps, key destruction, erasure and audit go on), new
    /// readings and subject events are refused (`unknown_tenant`). A tenant
    /// with data in the lake must stay listed (retired) until it is gone.
    #[serde(default)]
    pub retired: bool,
}

fn default_key_grace_days() -> u32 {
    60
}

fn default_telemetry_retention_days() -> u32 {
    // Five years: longer than Elhub's three years of corrections.
    1826
}

/// `[tenants.validation]`: the tenant's meter-data rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Allowed GSRN prefixes, e.g. `["707057500"]` for Norwegian metering points;
    /// empty allows any (the GS1 check digit is always verified).
    pub gsrn_prefixes: Vec<String>,
    /// Physical maximum energy per hour (scaled for PT15M). Default: a 3x63 A fuse.
    pub max_kwh_per_hour: f64,
    /// Physical maximum volume per hour (gas, water in m3).
    pub max_m3_per_hour: f64,
    /// Flag a day's highest interval above this many times its third-highest.
    pub spike_factor: f64,
    /// Allowed clock skew for intervals that end in the future.
    pub max_future_skew_secs: u64,
    /// Readings older than this are rejected (`too_old`).
    pub max_age_days: u64,
    /// Accept `Wh` and convert to `kWh`.
    pub convert_wh: bool,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            gsrn_prefixes: Vec::new(),
            max_kwh_per_hour: 25.0,
            max_m3_per_hour: 10.0,
            spike_factor: 5.0,
            max_future_skew_secs: 900,
            max_age_days: 1096,
            convert_wh: false,
        }
    }
}

fn default_timezone() -> String {
    "Europe/Oslo".to_owned()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentConfig {
    Public,
    Private,
}
