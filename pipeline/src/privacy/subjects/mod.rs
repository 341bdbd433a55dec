//! Subjects: `subject-event/v1` records (consent, upgrade, termination, Elhub
//! consent, profile data) become
//! - `consent_ledger`: append-only, hash-chained per subject, the subject only as
//!   a keyed hash (so an erasure leaves the ledger as it is);
//! - `subjects`: the current profile of subjects treated privately (private
//!   tenants, and public-tenant subjects from their upgrade on): email, and name,
//!   phone and address only while their purpose is consented; city and country
//!   from the IP, never the IP;
//! - `access_log`: the raw IP with its time, kept 90 days.
//!
//! Before anything reads an event, national identity numbers (in any field, in any
//! form the readings' scanner knows) and deny-listed fields are removed and counted
//! in `meterline_sensitive_removed_total`, as for readings; an event whose `subject`
//! is one becomes a `sensitive_identifier` dead letter.
//!
//! Events of one subject come in order (key = subject: one partition). Every event
//! ends with a `consent_ledger` commit carrying its Kafka position (a `txn`
//! action), so a restart skips what is recorded and repeats at most the event in
//! flight, whose profile write is idempotent (replace) and whose access-log row
//! carries the same position.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use deltalake::datafusion::prelude::{col, lit};
use meterline_operators::{
    DeadLetter, Deployment, MasterKey, Reason, SensitiveCounts, SensitiveScanner, TenantRegistry,
};
use meterline_sinks::{upsert, DerivedSpec, DerivedTable, Lake, SinkError};
use rdkafka::message::Message;
use serde::Deserialize;
use tracing::{info, warn};

use crate::config::Settings;
use crate::kafka::group::{commit_position, group_consumer};
use crate::metrics::Metrics;
use crate::privacy::geo::GeoLookup;
use crate::privacy::tables::{
    subject_hash, subject_specs, ChainKey, Kind, ACCESS_LOG, LEDGER, SUBJECTS, SUBJECTS_TABLE,
};
use crate::shutdown::{pause, Shutdown};

/// The event schema id.
pub const SCHEMA: &str = "subject-event/v1";
/// Longest accepted subject id, text field or meter list.
const MAX_TEXT: usize = 256;
const MAX_METERS: usize = 1000;

/// Profile fields kept only while their purpose (same name) is consented.
pub const OPTIONAL_FIELDS: [&str; 3] = ["name", "phone", "address"];

/// Why recording a subject event did not complete (it is retried from the
/// event's Kafka position; the profile write is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum SubjectsError {
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Personal data an event may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
}

impl Profile {
    fn optional_mut(&mut self, field: &str) -> Option<&mut Option<String>> {
        match field {
            "name" => Some(&mut self.name),
            "phone" => Some(&mut self.phone),
            "address" => Some(&mut self.address),
            _ => None,
        }
    }
}

/// A parsed, valid event.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    pub tenant: String,
    pub subject: String,
    pub purpose: Option<String>,
    pub meters: Vec<String>,
    pub policy_version: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub source: Option<String>,
    pub profile: Profile,
    pub ip: Option<IpAddr>,
    /// Sensitive values removed from the record before it was read.
    pub sensitive_removed: SensitiveCounts,
}

/// Why an event is refused (it becomes a dead letter without its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    /// Which field and rule; never a value.
    pub detail: String,
    pub tenant: Option<String>,
    /// Sensitive values removed from the record before it was read.
    pub sensitive_removed: SensitiveCounts,
}

fn refused(reason: Reason, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
        tenant: None,
        sensitive_removed: SensitiveCounts::default(),
    }
}

#[derive(Deserialize)]
struct Wire {
    schema: Option<serde_json::Value>,
    kind: Option<serde_json::Value>,
    tenant: Option<serde_json::Value>,
    subject: Option<serde_json::Value>,
    purpose: Option<serde_json::Value>,
    meters: Option<serde_json::Value>,
    policy_version: Option<serde_json::Value>,
    occurred_at: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    email: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
    phone: Option<serde_json::Value>,
    address: Option<serde_json::Value>,
    ip: Option<serde_json::Value>,
}

/// An optional string field: absent or null is `None`; another type is refused.
fn text(value: Option<serde_json::Value>, field: &str) -> Result<Option<String>, Refused> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s)),
        Some(serde_json::Value::String(_)) => Err(refused(
            Reason::InvalidValue,
            format!("`{field}` is longer than {MAX_TEXT} bytes"),
        )),
        Some(_) => Err(refused(
            Reason::WrongType,
            format!("`{field}` must be a string"),
        )),
    }
}

/// A ledger label (`purpose`, `policy_version`, `source`): the ledger is kept for
/// good, so it takes only short tokens, never free text that could carry
/// personal data (spaces, `@`, runs of 6 or more digits).
fn label(value: Option<serde_json::Value>, field: &str) -> Result<Option<String>, Refused> {
    let Some(text) = text(value, field)? else {
        return Ok(None);
    };
    let mut digits = 0;
    let ok = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| {
            digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
            digits < 6 && (b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
        });
    if ok {
        Ok(Some(text))
    } else {
        Err(refused(
            Reason::InvalidValue,
            format!("`{field}` must be a short label (1-64 of a-z A-Z 0-9 . _ : / -, no long digit runs)"),
        ))
    }
}

fn required(value: Option<serde_json::Value>, field: &str) -> Result<String, Refused> {
    text(value, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refused(Reason::MissingField, format!("`{field}` is required")))
}

/// Parse and check one record. National identity numbers and deny-listed fields
/// are removed first, wherever they are, and counted (`sensitive_removed`).
///
/// # Errors
/// The reason and rule it breaks (no value is echoed).
pub fn parse(
    payload: Option<&[u8]>,
    max_bytes: usize,
    tenants: &TenantRegistry,
    sensitive: &SensitiveScanner,
) -> Result<Event, Refused> {
    let payload = payload.ok_or_else(|| refused(Reason::EmptyPayload, "no value"))?;
    if payload.len() > max_bytes {
        return Err(refused(
            Reason::TooLarge,
            format!("larger than {max_bytes} bytes"),
        ));
    }
    let text_payload = std::str::from_utf8(payload)
        .map_err(|_| refused(Reason::NotUtf8, "payload is not UTF-8"))?;
    let value: serde_json::Value = serde_json::from_str(text_payload)
        .map_err(|_| refused(Reason::MalformedJson, "not well-formed JSON"))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(refused(Reason::NotAnObject, "payload is not a JSON object"));
    };
    // The subject keys everything the event touches: one that holds a national id
    // cannot be recorded (and is not kept either).
    let mut removed = SensitiveCounts::default();
    let subject_removed = map
        .get_mut("subject")
        .is_some_and(|s| sensitive.clean_value(s, &mut removed));
    if subject_removed {
        map.remove("subject");
    }
    let mut value = serde_json::Value::Object(map);
    sensitive.clean_value(&mut value, &mut removed);
    match check(value, tenants, subject_removed) {
        Ok(event) => Ok(Event {
            sensitive_removed: removed,
            ..event
        }),
        Err(r) => Err(Refused {
            sensitive_removed: removed,
            ..r
        }),
    }
}

/// Check an event with its sensitive data removed.
fn check(
    value: serde_json::Value,
    tenants: &TenantRegistry,
    subject_removed: bool,
) -> Result<Event, Refused> {
    let w: Wire = serde_json::from_value(value)
        .map_err(|_| refused(Reason::MalformedJson, "not a subject event"))?;
    let schema = required(w.schema, "schema")?;
    if schema != SCHEMA {
        return Err(refused(
            Reason::UnsupportedSchema,
            format!("schema must be `{SCHEMA}`"),
        ));
    }
    let tenant = required(w.tenant, "tenant")?;
    let with_tenant = |mut r: Refused| {
        if meterline_operators::tenant::valid_tenant_id(&tenant) {
            r.tenant = Some(tenant.clone());
        }
        r
    };
    if tenants.accepting(&tenant).is_none() {
        return Err(with_tenant(refused(
            Reason::UnknownTenant,
            "`tenant` is not configured, or is retired",
        )));
    }
    let kind_text = required(w.kind, "kind").map_err(with_tenant)?;
    let kind = Kind::parse(&kind_text).ok_or_else(|| {
        with_tenant(refused(
            Reason::InvalidValue,
            "`kind` must be one of consent_granted, consent_withdrawn, upgraded_to_private, \
             account_terminated, elhub_consent_granted, elhub_consent_revoked",
        ))
    })?;
    if subject_removed {
        return Err(with_tenant(refused(
            Reason::SensitiveIdentifier,
            "`subject` held a national identity number; it was removed",
        )));
    }
    let subject = required(w.subject, "subject").map_err(with_tenant)?;
    let purpose = label(w.purpose, "purpose").map_err(with_tenant)?;
    if matches!(kind, Kind::ConsentGranted | Kind::ConsentWithdrawn) && purpose.is_none() {
        return Err(with_tenant(refused(
            Reason::MissingField,
            "`purpose` is required for consent_granted and consent_withdrawn",
        )));
    }
    let (meters, purpose) = meters_of(kind, w.meters, purpose).map_err(with_tenant)?;
    let occurred_at = occurred_at(w.occurred_at).map_err(with_tenant)?;
    let ip = ip(w.ip).map_err(with_tenant)?;
    Ok(Event {
        kind,
        subject,
        purpose,
        meters,
        policy_version: label(w.policy_version, "policy_version").map_err(with_tenant)?,
        occurred_at,
        source: label(w.source, "source").map_err(with_tenant)?,
        profile: Profile {
            email: text(w.email, "email").map_err(with_tenant)?,
            name: text(w.name, "name").map_err(with_tenant)?,
            phone: text(w.phone, "phone").map_err(with_tenant)?,
            address: text(w.address, "address").map_err(with_tenant)?,
            city: None,
            country: None,
        },
        ip,
        tenant,
        sensitive_removed: SensitiveCounts::default(),
    })
}

/// The meters an event names (required by Elhub consent events and upgrades)
/// and its purpose (an upgrade's defaults to
/// [`meterline_operators::consent::DEFAULT_UPGRADE_PURPOSE`]: withdrawing it ends
/// the upgrade).
fn meters_of(
    kind: Kind,
    value: Option<serde_json::Value>,
    purpose: Option<String>,
) -> Result<(Vec<String>, Option<String>), Refused> {
    let meters = meters(value, kind == Kind::UpgradedToPrivate)?;
    if matches!(kind, Kind::ElhubConsentGranted | Kind::ElhubConsentRevoked) && meters.is_empty() {
        return Err(refused(
            Reason::MissingField,
            "`meters` is required for Elhub consent events",
        ));
    }
    if kind != Kind::UpgradedToPrivate {
        return Ok((meters, purpose));
    }
    if meters.is_empty() {
        return Err(refused(
            Reason::MissingField,
            "`meters` is required for upgraded_to_private: the meters (GSRNs) or devices the upgrade covers",
        ));
    }
    let purpose =
        purpose.or_else(|| Some(meterline_operators::consent::DEFAULT_UPGRADE_PURPOSE.to_owned()));
    Ok((meters, purpose))
}

/// `meters`: absent, null, or an array of at most `MAX_METERS` valid GSRNs (or,
/// with `devices`, device ids as well: an upgrade may cover devices without a
/// GSRN; an 18-digit id must still be a valid GSRN).
fn meters(value: Option<serde_json::Value>, devices: bool) -> Result<Vec<String>, Refused> {
    let gsrn_like = |s: &str| s.len() == 18 && s.bytes().all(|b| b.is_ascii_digit());
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) if items.len() <= MAX_METERS => items
            .into_iter()
            .map(|m| match m {
                serde_json::Value::String(s)
                    if meterline_operators::ids::check_gsrn(&s).is_ok() =>
                {
                    Ok(s)
                }
                serde_json::Value::String(s)
                    if devices && !s.is_empty() && s.len() <= MAX_TEXT && !gsrn_like(&s) =>
                {
                    Ok(s)
                }
                serde_json::Value::String(_) if devices => Err(refused(
                    Reason::InvalidGsrn,
                    "`meters` holds an 18-digit id that is not a GSRN with a valid check digit, or an empty or over-long device id",
                )),
                serde_json::Value::String(_) => Err(refused(
                    Reason::InvalidGsrn,
                    "`meters` holds an id that is not a GSRN with a valid check digit",
                )),
                _ => Err(refused(Reason::WrongType, "`meters` must be strings")),
            })
            .collect(),
        Some(_) => Err(refused(
            Reason::WrongType,
            format!("`meters` must be an array of at most {MAX_METERS} ids"),
        )),
    }
}

fn occurred_at(value: Option<serde_json::Value>) -> Result<DateTime<Utc>, Refused> {
    let occurred = required(value, "occurred_at")?;
    DateTime::parse_from_rfc3339(&occurred)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            refused(
                Reason::InvalidTimestamp,
                "`occurred_at` must be RFC 3339 with an offset",
            )
        })
}

fn ip(value: Option<serde_json::Value>) -> Result<Option<IpAddr>, Refused> {
    text(value, "ip")?
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| refused(Reason::InvalidValue, "`ip` is not an IP address"))
        })
        .transpose()
}

/// What the ledger says about one subject now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectState {
    /// Entries so far (the next entry's `seq`).
    pub seq: i64,
    /// Hash of the last entry ("" before the first).
    pub last_hash: String,
    /// Purposes consented now.
    pub purposes: BTreeSet<String>,
    /// When the upgrade to private treatment took effect: the later of its
    /// `occurred_at` and the moment it was recorded (an upgrade never reaches back).
    pub upgraded_at: Option<DateTime<Utc>>,
    /// The purpose the upgrade is consented under (withdrawing it ends the upgrade).
    pub upgrade_purpose: Option<String>,
    /// When the upgrade ended (account terminated, its consent withdrawn).
    pub upgrade_ended_at: Option<DateTime<Utc>>,
    /// When the account ended: the earlier of `occurred_at` and the moment it was
    /// recorded (a producer cannot postpone the account's retention).
    pub terminated_at: Option<DateTime<Utc>>,
    /// The stored profile (private treatment only).
    pub profile: Option<Profile>,
}

impl SubjectState {
    /// Apply an event's consent effects (not its profile data); `recorded` is
    /// when meterline recorded it.
    fn apply(&mut self, event: &Event, recorded: DateTime<Utc>) {
        let earliest = event.occurred_at.min(recorded);
        match event.kind {
            Kind::ConsentGranted => {
                if let Some(p) = &event.purpose {
                    self.purposes.insert(p.clone());
                }
            }
            Kind::ConsentWithdrawn => {
                if let Some(p) = &event.purpose {
                    self.purposes.remove(p);
                    if self.upgrade_active() && self.upgrade_purpose.as_ref() == Some(p) {
                        self.upgrade_ended_at = Some(earliest);
                    }
                }
            }
            Kind::UpgradedToPrivate => {
                if !self.upgrade_active() {
                    self.upgraded_at = Some(event.occurred_at.max(recorded));
                    self.upgrade_ended_at = None;
                }
                self.upgrade_purpose.clone_from(&event.purpose);
            }
            Kind::AccountTerminated => {
                self.terminated_at.get_or_insert(earliest);
                if self.upgrade_active() {
                    self.upgrade_ended_at = Some(earliest);
                }
            }
            Kind::ElhubConsentGranted | Kind::ElhubConsentRevoked => {}
        }
    }

    /// True while an upgrade to private treatment is in effect.
    pub fn upgrade_active(&self) -> bool {
        self.upgraded_at.is_some() && self.upgrade_ended_at.is_none()
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub tenant: String,
    pub subject_hash: String,
    pub seq: i64,
    pub kind: Kind,
    pub purpose: Option<String>,
    /// Keyed hashes of the meters (Elhub events), comma-separated.
    pub meters: Option<String>,
    pub policy_version: Option<String>,
    pub lawful_basis: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: Option<String>,
    pub source_partition: i32,
    pub source_offset: i64,
    pub prev_hash: String,
    pub entry_hash: String,
}

/// The MAC of an entry: keyed blake3 (the [`ChainKey`], derived from the master
/// key) over its fields and the previous entry's MAC, length-prefixed so no two
/// field lists share an encoding. Without the key an edited entry cannot be given
/// a matching MAC.
pub fn entry_hash(key: &ChainKey, e: &LedgerEntry) -> String {
    let mut h = key.hasher();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(e.prev_hash.as_bytes());
    field(e.tenant.as_bytes());
    field(e.subject_hash.as_bytes());
    field(&e.seq.to_le_bytes());
    field(e.kind.as_str().as_bytes());
    field(e.purpose.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.meters.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.policy_version.as_deref().unwrap_or("\u{0}").as_bytes());
    field(e.lawful_basis.as_bytes());
    field(&e.occurred_at.timestamp_micros().to_le_bytes());
    field(&e.recorded_at.timestamp_micros().to_le_bytes());
    field(e.source.as_deref().unwrap_or("\u{0}").as_bytes());
    h.finalize().to_hex().to_string()
}

/// Check a subject's entries (in `seq` order): sequence and chain unbroken.
/// Returns the `seq` of the first bad entry.
pub fn verify_chain(key: &ChainKey, entries: &[LedgerEntry]) -> Result<(), i64> {
    let mut prev = String::new();
    for (i, e) in entries.iter().enumerate() {
        if e.seq != i as i64 || e.prev_hash != prev || entry_hash(key, e) != e.entry_hash {
            return Err(e.seq);
        }
        prev.clone_from(&e.entry_hash);
    }
    Ok(())
}

fn ledger_batch(e: &LedgerEntry) -> RecordBatch {
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as _;
    let o = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as _;
    let t = |v: DateTime<Utc>| {
        Arc::new(TimestampMicrosecondArray::from(vec![v.timestamp_micros()]).with_timezone("UTC"))
            as _
    };
    RecordBatch::try_new(
        LEDGER.clone(),
        vec![
            s(&e.tenant),
            s(&e.subject_hash),
            Arc::new(Int64Array::from(vec![e.seq])),
            s(e.kind.as_str()),
            o(e.purpose.as_deref()),
            o(e.meters.as_deref()),
            o(e.policy_version.as_deref()),
            s(e.lawful_basis),
            t(e.occurred_at),
            t(e.recorded_at),
            o(e.source.as_deref()),
            Arc::new(arrow::array::Int32Array::from(vec![e.source_partition])),
            Arc::new(Int64Array::from(vec![e.source_offset])),
            s(&e.prev_hash),
            s(&e.entry_hash),
        ],
    )
    .expect("columns match LEDGER")
}

fn profile_batch(
    tenant: &str,
    subject: &str,
    state: &SubjectState,
    profile: &Profile,
    now: DateTime<Utc>,
) -> RecordBatch {
    let o = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as _;
    let t = |v: Option<DateTime<Utc>>| {
        Arc::new(
            TimestampMicrosecondArray::from(vec![v.map(|d| d.timestamp_micros())])
                .with_timezone("UTC"),
        ) as _
    };
    let consents = state.purposes.iter().cloned().collect::<Vec<_>>().join(",");
    RecordBatch::try_new(
        SUBJECTS.clone(),
        vec![
            o(Some(tenant)),
            o(Some(subject)),
            o(profile.email.as_deref()),
            o(profile.name.as_deref()),
            o(profile.phone.as_deref()),
            o(profile.address.as_deref()),
            o(profile.city.as_deref()),
            o(profile.country.as_deref()),
            o(Some(&consents)),
            t(state.upgraded_at),
            t(state.terminated_at),
            t(Some(now)),
        ],
    )
    .expect("columns match SUBJECTS")
}

fn access_batch(
    tenant: &str,
    subject: &str,
    ip: IpAddr,
    profile: &Profile,
    seen_at: DateTime<Utc>,
    partition: i32,
    offset: i64,
) -> RecordBatch {
    let o = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as _;
    RecordBatch::try_new(
        ACCESS_LOG.clone(),
        vec![
            o(Some(tenant)),
            o(Some(subject)),
            o(Some(&ip.to_string())),
            o(profile.city.as_deref()),
            o(profile.country.as_deref()),
            Arc::new(
                TimestampMicrosecondArray::from(vec![seen_at.timestamp_micros()])
                    .with_timezone("UTC"),
            ),
            Arc::new(arrow::array::Int32Array::from(vec![partition])),
            Arc::new(Int64Array::from(vec![offset])),
        ],
    )
    .expect("columns match ACCESS_LOG")
}

/// Rows whose `tenant` and `subject` columns (in that order) are the pair.
pub fn tenant_subject_is<'a>(
    tenant: &'a str,
    subject: &'a str,
) -> impl Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Sync + 'a {
    move |b| {
        let t = b.column(0).as_string::<i32>();
        let s = b.column(1).as_string::<i32>();
        Ok((0..b.num_rows())
            .map(|i| Some(t.value(i) == tenant && s.value(i) == subject))
            .collect())
    }
}

/// Turns events into ledger entries, profiles and access-log rows.
pub struct Subjects {
    key: std::sync::Arc<MasterKey>,
    /// The ledger chain's MAC key.
    chain: ChainKey,
    tenants: TenantRegistry,
    geo: Arc<dyn GeoLookup>,
    /// Finds national ids and deny-listed fields in events.
    sensitive: SensitiveScanner,
    ledger: DerivedTable,
    subjects: DerivedTable,
    access: DerivedTable,
    dead: DerivedTable,
    topic: String,
    clock: meterline_operators::Clock,
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subjects")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already recorded (a redelivery after a restart).
    Skipped,
    Recorded {
        profile_stored: bool,
        sensitive_removed: SensitiveCounts,
    },
    DeadLettered {
        reason: Reason,
        sensitive_removed: SensitiveCounts,
    },
}

impl Outcome {
    /// Sensitive values removed from the record (none when skipped: counted when
    /// it was recorded).
    pub fn sensitive_removed(&self) -> SensitiveCounts {
        match self {
            Outcome::Skipped => SensitiveCounts::default(),
            Outcome::Recorded {
                sensitive_removed, ..
            }
            | Outcome::DeadLettered {
                sensitive_removed, ..
            } => *sensitive_removed,
        }
    }
}

impl Subjects {
    /// Open (creating when needed) the tables.
    ///
    /// # Errors
    /// Storage errors (transient); tables of another shape (internal).
    pub async fn open(
        lake: &Lake,
        key: std::sync::Arc<MasterKey>,
        tenants: TenantRegistry,
        geo: Arc<dyn GeoLookup>,
        topic: &str,
    ) -> Result<Self, SubjectsError> {
        let [ledger, subjects, access] = subject_specs();
        let dl = meterline_sinks::dead_letters_spec();
        Ok(Self {
            chain: ChainKey::new(&key),
            key,
            tenants,
            geo,
            sensitive: SensitiveScanner::default(),
            ledger: DerivedTable::open_or_create(lake, ledger).await?,
            subjects: DerivedTable::open_or_create(lake, subjects).await?,
            access: DerivedTable::open_or_create(lake, access).await?,
            dead: DerivedTable::open_or_create(
                lake,
                DerivedSpec {
                    name: dl.name,
                    schema: dl.schema,
                    partition_columns: dl.partition_columns,
                    properties: dl.properties,
                },
            )
            .await?,
            topic: topic.to_owned(),
            clock: meterline_operators::Clock::system(),
        })
    }

    /// Read "now" (`recorded_at`, access-log times) from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: meterline_operators::Clock) -> Self {
        self.clock = clock;
        self
    }

    fn app_id(&self, partition: i32) -> String {
        format!("meterline:{}:{partition}", self.topic)
    }

    /// Find sensitive data with `scanner` (the built-in deny-list otherwise).
    #[must_use]
    pub fn with_sensitive(mut self, scanner: SensitiveScanner) -> Self {
        self.sensitive = scanner;
        self
    }

    /// The subject's state from the lake: its ledger entries and stored profile.
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn state(
        &mut self,
        tenant: &str,
        subject: &str,
    ) -> Result<SubjectState, SubjectsError> {
        let hash = subject_hash(&self.key, subject);
        let entries = self.entries(tenant, &hash).await?;
        let mut state = SubjectState::default();
        for e in &entries {
            let event = Event {
                kind: e.kind,
                tenant: e.tenant.clone(),
                subject: String::new(),
                purpose: e.purpose.clone(),
                meters: Vec::new(),
                policy_version: None,
                occurred_at: e.occurred_at,
                source: None,
                profile: Profile::default(),
                ip: None,
                sensitive_removed: SensitiveCounts::default(),
            };
            state.apply(&event, e.recorded_at);
        }
        state.seq = entries.len() as i64;
        state.last_hash = entries
            .last()
            .map(|e| e.entry_hash.clone())
            .unwrap_or_default();
        self.subjects.reload().await?;
        let rows = self
            .subjects
            .scan(
                &["email", "name", "phone", "address", "city", "country"],
                col("tenant")
                    .eq(lit(tenant))
                    .and(col("subject").eq(lit(subject))),
            )
            .await?;
        state.profile = rows.iter().find(|b| b.num_rows() > 0).map(|b| {
            let v = |i: usize| {
                let c = b.column(i).as_string::<i32>();
                arrow::array::Array::is_valid(c, 0).then(|| c.value(0).to_owned())
            };
            Profile {
                email: v(0),
                name: v(1),
                phone: v(2),
                address: v(3),
                city: v(4),
                country: v(5),
            }
        });
        Ok(state)
    }

    /// A subject's ledger entries in `seq` order (by the keyed hash).
    ///
    /// # Errors
    /// Storage errors (transient).
    pub async fn entries(
        &mut self,
        tenant: &str,
        hash: &str,
    ) -> Result<Vec<LedgerEntry>, SubjectsError> {
        self.ledger.reload().await?;
        let batches = self
            .ledger
            .scan(
                &[
                    "tenant",
                    "subject_hash",
                    "seq",
                    "kind",
                    "purpose",
                    "meters",
                    "policy_version",
                    "lawful_basis",
                    "occurred_at",
                    "recorded_at",
                    "source",
                    "source_partition",
                    "source_offset",
                    "prev_hash",
                    "entry_hash",
                ],
                col("tenant")
                    .eq(lit(tenant))
                    .and(col("subject_hash").eq(lit(hash))),
            )
            .await?;
        let mut out = ledger_entries(&batches);
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    /// Handle one record of the topic.
    ///
    /// # Errors
    /// Storage errors (transient: call again with the same record).
    pub async fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<Outcome, SubjectsError> {
        let app_id = self.app_id(partition);
        let answered = self.ledger.progress(&app_id).await?;
        let dead_answered = self.dead.progress(&app_id).await?;
        if answered.max(dead_answered).is_some_and(|a| offset <= a) {
            return Ok(Outcome::Skipped);
        }
        let progress = [(app_id, offset)];
        let event = match parse(payload, max_bytes, &self.tenants, &self.sensitive) {
            Ok(e) => e,
            Err(r) => {
                let outcome = Outcome::DeadLettered {
                    reason: r.reason,
                    sensitive_removed: r.sensitive_removed,
                };
                self.dead_letter(partition, offset, payload, r, &progress)
                    .await?;
                return Ok(outcome);
            }
        };
        let now = self.clock.now();
        if let Some(r) = self.future_dated(&event, now) {
            let outcome = Outcome::DeadLettered {
                reason: r.reason,
                sensitive_removed: event.sensitive_removed,
            };
            self.dead_letter(partition, offset, payload, r, &progress)
                .await?;
            return Ok(outcome);
        }
        let mut state = self.state(&event.tenant, &event.subject).await?;
        state.apply(&event, now);
        let private = self
            .tenants
            .by_id(&event.tenant)
            .is_some_and(|t| t.deployment == Deployment::Private)
            || state.upgrade_active();
        let mut profile_stored = false;
        if private {
            let profile = self.merged_profile(&event, &state);
            profile_stored = self.store_profile(&event, &state, &profile, now).await?;
            if let Some(ip) = event.ip {
                self.log_access(&event, ip, &profile, partition, offset, &progress[0].0)
                    .await?;
            }
            state.profile = Some(profile);
        }
        self.record(&event, &state, partition, offset, now, &progress)
            .await?;
        Ok(Outcome::Recorded {
            profile_stored,
            sensitive_removed: event.sensitive_removed,
        })
    }

    /// An event dated further in the future than its tenant's clock skew allows
    /// (`validation.max_future_skew_secs`): it could postpone a retention clock or
    /// an account's erasure, so it is refused.
    fn future_dated(&self, event: &Event, now: DateTime<Utc>) -> Option<Refused> {
        let skew = self
            .tenants
            .by_id(&event.tenant)
            .map_or(0, |t| t.rules.future_skew_micros);
        (event.occurred_at.timestamp_micros() > now.timestamp_micros().saturating_add(skew))
            .then(|| Refused {
                reason: Reason::InvalidTimestamp,
                detail: "`occurred_at` is further in the future than validation.max_future_skew_secs allows".to_owned(),
                tenant: Some(event.tenant.clone()),
                sensitive_removed: event.sensitive_removed,
            })
    }

    /// An event that cannot be read: a dead letter with its reason, never its
    /// payload (subject events carry personal data).
    async fn dead_letter(
        &mut self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        refused: Refused,
        progress: &[(String, i64)],
    ) -> Result<(), SubjectsError> {
        let letter = DeadLetter {
            partition,
            offset,
            reason: refused.reason,
            detail: refused.detail,
            tenant: refused.tenant,
            payload: None,
            payload_bytes: payload.map_or(0, |p| p.len() as u64),
        };
        let batch =
            meterline_sinks::dead_letter_batch(&self.topic, &[letter], self.clock.now_micros());
        self.dead.append(&[batch], progress).await?;
        Ok(())
    }

    /// The subject's profile after `event`: its email, the optional fields only
    /// while their purpose is consented, and the city and country of its IP.
    fn merged_profile(&self, event: &Event, state: &SubjectState) -> Profile {
        let mut profile = state.profile.clone().unwrap_or_default();
        if event.profile.email.is_some() {
            profile.email.clone_from(&event.profile.email);
        }
        for field in OPTIONAL_FIELDS {
            let consented = state.purposes.contains(field);
            let offered = match field {
                "name" => event.profile.name.clone(),
                "phone" => event.profile.phone.clone(),
                _ => event.profile.address.clone(),
            };
            if let Some(slot) = profile.optional_mut(field) {
                if !consented {
                    *slot = None;
                } else if offered.is_some() {
                    *slot = offered;
                }
            }
        }
        if let Some(place) = event.ip.and_then(|ip| self.geo.locate(ip)) {
            profile.city = place.city;
            profile.country = Some(place.country);
        }
        profile
    }

    /// Replace the subject's row in `subjects` (email is required: without one,
    /// no profile is kept). Returns whether a profile was stored.
    async fn store_profile(
        &mut self,
        event: &Event,
        state: &SubjectState,
        profile: &Profile,
        now: DateTime<Utc>,
    ) -> Result<bool, SubjectsError> {
        if profile.email.is_none() {
            return Ok(false);
        }
        let batch = profile_batch(&event.tenant, &event.subject, state, profile, now);
        let matcher = tenant_subject_is(&event.tenant, &event.subject);
        upsert(
            self.subjects.table_mut(),
            SUBJECTS_TABLE,
            &SUBJECTS,
            &["tenant", "subject"],
            &|_| true,
            &matcher,
            &[batch],
            &[],
            "profile",
        )
        .await?;
        if event.kind == Kind::ConsentWithdrawn {
            // The withdrawn field is gone from the table; delete the replaced file
            // from storage now too.
            meterline_sinks::purge(self.subjects.table_mut(), SUBJECTS_TABLE).await?;
        }
        Ok(true)
    }

    /// The event's IP in `access_log`, once per Kafka position.
    async fn log_access(
        &mut self,
        event: &Event,
        ip: IpAddr,
        profile: &Profile,
        partition: i32,
        offset: i64,
        app_id: &str,
    ) -> Result<(), SubjectsError> {
        if self
            .access
            .progress(app_id)
            .await?
            .is_some_and(|a| offset <= a)
        {
            return Ok(());
        }
        // The 90 days start no later than now: a future-dated event cannot keep an
        // IP longer.
        let seen_at = event.occurred_at.min(self.clock.now());
        let batch = access_batch(
            &event.tenant,
            &event.subject,
            ip,
            profile,
            seen_at,
            partition,
            offset,
        );
        self.access
            .append(&[batch], &[(app_id.to_owned(), offset)])
            .await?;
        Ok(())
    }

    /// Append the event to the hash-chained ledger, with its Kafka position.
    async fn record(
        &mut self,
        event: &Event,
        state: &SubjectState,
        partition: i32,
        offset: i64,
        now: DateTime<Utc>,
        progress: &[(String, i64)],
    ) -> Result<(), SubjectsError> {
        let meters = (!event.meters.is_empty()).then(|| {
            event
                .meters
                .iter()
                .map(|m| subject_hash(&self.key, m))
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut entry = LedgerEntry {
            tenant: event.tenant.clone(),
            subject_hash: subject_hash(&self.key, &event.subject),
            seq: state.seq,
            kind: event.kind,
            purpose: event.purpose.clone(),
            meters,
            policy_version: event.policy_version.clone(),
            lawful_basis: event.kind.lawful_basis(),
            occurred_at: event.occurred_at,
            recorded_at: now,
            source: event.source.clone(),
            source_partition: partition,
            source_offset: offset,
            prev_hash: state.last_hash.clone(),
            entry_hash: String::new(),
        };
        entry.entry_hash = entry_hash(&self.chain, &entry);
        self.ledger
            .append(&[ledger_batch(&entry)], progress)
            .await?;
        Ok(())
    }
}

/// Ledger rows as entries.
pub fn ledger_entries(batches: &[RecordBatch]) -> Vec<LedgerEntry> {
    let mut out = Vec::new();
    for b in batches {
        let s = |i: usize| b.column(i).as_string::<i32>();
        let o = |i: usize, r: usize| {
            let c = s(i);
            arrow::array::Array::is_valid(c, r).then(|| c.value(r).to_owned())
        };
        let t = |i: usize, r: usize| {
            DateTime::from_timestamp_micros(
                b.column(i)
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(r),
            )
            .unwrap_or_default()
        };
        for r in 0..b.num_rows() {
            let Some(kind) = Kind::parse(s(3).value(r)) else {
                continue;
            };
            out.push(LedgerEntry {
                tenant: s(0).value(r).to_owned(),
                subject_hash: s(1).value(r).to_owned(),
                seq: b.column(2).as_primitive::<Int64Type>().value(r),
                kind,
                purpose: o(4, r),
                meters: o(5, r),
                policy_version: o(6, r),
                lawful_basis: kind.lawful_basis(),
                occurred_at: t(8, r),
                recorded_at: t(9, r),
                source: o(10, r),
                source_partition: b
                    .column(11)
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .value(r),
                source_offset: b.column(12).as_primitive::<Int64Type>().value(r),
                prev_hash: s(13).value(r).to_owned(),
                entry_hash: s(14).value(r).to_owned(),
            });
        }
    }
    out
}

/// Consume the subject-events topic until shutdown. Storage errors are retried
/// with backoff (an event is never skipped because the lake failed).
pub async fn run_loop(settings: Settings, metrics: Metrics, shutdown: Arc<Shutdown>) {
    let lifecycle = &settings.lifecycle;
    let topic = lifecycle.subject_events_topic.clone();
    let Some(key) = settings.key.clone() else {
        warn!("subject events need a pseudonym key; not consuming them");
        return;
    };
    let Some(consumer) = group_consumer(&settings, &lifecycle.subject_group, &topic) else {
        return;
    };
    let Some(subjects) = open_with_retry(&settings, key, &topic, &shutdown).await else {
        return;
    };
    let mut subjects = subjects.with_sensitive(settings.sensitive_scanner());
    info!(%topic, group = %lifecycle.subject_group, "subjects consumer started");
    loop {
        let received = tokio::select! {
            r = consumer.recv() => r.map(|m| (m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec))),
            () = shutdown.requested() => break,
        };
        let (partition, offset, payload) = match received {
            Ok(r) => r,
            Err(e) => {
                metrics.kafka_errors.inc();
                warn!(error = %e, %topic, "subjects consumer: kafka error");
                if !pause(Duration::from_secs(1), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let event = (partition, offset, payload.as_deref());
        if !handle_with_retry(&mut subjects, event, &settings, &metrics, &shutdown).await {
            info!("subjects consumer stopped");
            return;
        }
        commit_position(&consumer, &topic, partition, offset);
    }
    info!("subjects consumer stopped");
}

/// The first retry delay and the longest, from `[pipeline]`.
fn backoffs(settings: &Settings) -> (Duration, Duration) {
    (
        Duration::from_millis(settings.pipeline.retry_initial_backoff_ms.max(1)),
        Duration::from_secs(settings.pipeline.retry_max_backoff_secs.max(1)),
    )
}

/// Open the tables, retrying with backoff; `None` when shutdown came first.
async fn open_with_retry(
    settings: &Settings,
    key: std::sync::Arc<MasterKey>,
    topic: &str,
    shutdown: &Shutdown,
) -> Option<Subjects> {
    let (mut backoff, max_backoff) = backoffs(settings);
    loop {
        let opened = match Lake::new(&settings.lake) {
            Ok(lake) => Subjects::open(
                &lake,
                key.clone(),
                settings.tenants.clone(),
                settings.lifecycle.geo.clone(),
                topic,
            )
            .await
            .map(|s| s.with_clock(settings.clock)),
            Err(e) => Err(e.into()),
        };
        match opened {
            Ok(s) => return Some(s),
            Err(e) => {
                warn!(error = %e, "subjects: cannot open the tables; retrying");
                if !pause(backoff, shutdown).await {
                    return None;
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Record one event, retrying storage errors with backoff (an event is never
/// skipped because the lake failed). False when shutdown came first.
async fn handle_with_retry(
    subjects: &mut Subjects,
    (partition, offset, payload): (i32, i64, Option<&[u8]>),
    settings: &Settings,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> bool {
    let (mut backoff, max_backoff) = backoffs(settings);
    loop {
        match subjects
            .handle(
                partition,
                offset,
                payload,
                settings.pipeline.max_message_bytes,
            )
            .await
        {
            Ok(outcome) => {
                let label = match outcome {
                    Outcome::Skipped => "skipped",
                    Outcome::Recorded { .. } => "recorded",
                    // Not in meterline_dead_letters_total: that counter is part of
                    // the readings topic's ledger (consumed = written +
                    // dead-lettered + dropped).
                    Outcome::DeadLettered { .. } => "dead_lettered",
                };
                metrics.subject_events.with_label_values(&[label]).inc();
                metrics.count_sensitive_removed(&outcome.sensitive_removed());
                return true;
            }
            Err(e) => {
                metrics.subject_events.with_label_values(&["error"]).inc();
                warn!(error = %e, partition, offset, retry_in_ms = backoff.as_millis() as u64, "subject event not recorded; retrying");
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
    use super::*;

    fn tenants() -> TenantRegistry {
        crate::dev::generator::tenants()
    }

    fn event(extra: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({
            "schema": SCHEMA, "kind": "consent_granted", "tenant": "acme-industri",
            "subject": "acct-1", "purpose": "phone", "occurred_at": "2026-11-01T10:00:00+01:00",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn parse(
        payload: Option<&[u8]>,
        max_bytes: usize,
        tenants: &TenantRegistry,
    ) -> Result<Event, Refused> {
        super::parse(payload, max_bytes, tenants, &SensitiveScanner::default())
    }

    fn reason(v: serde_json::Value) -> Reason {
        parse(Some(v.to_string().as_bytes()), 65536, &tenants())
            .unwrap_err()
            .reason
    }

    #[test]
    fn events_parse_and_bad_ones_have_a_reason_without_values() {
        let e = parse(
            Some(
                event(serde_json::json!({"ip": "192.0.2.1"}))
                    .to_string()
                    .as_bytes(),
            ),
            65536,
            &tenants(),
        )
        .unwrap();
        assert_eq!(e.kind, Kind::ConsentGranted);
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-01T09:00:00+00:00");
        assert_eq!(
            reason(event(serde_json::json!({"kind": "bogus"}))),
            Reason::InvalidValue
        );
        assert_eq!(
            reason(event(serde_json::json!({"purpose": null}))),
            Reason::MissingField
        );
        assert_eq!(
            reason(event(serde_json::json!({"tenant": "nope"}))),
            Reason::UnknownTenant
        );
        assert_eq!(
            reason(event(serde_json::json!({"schema": "reading/v1"}))),
            Reason::UnsupportedSchema
        );
        assert_eq!(
            reason(event(
                serde_json::json!({"occurred_at": "2026-11-01 10:00"})
            )),
            Reason::InvalidTimestamp
        );
        assert_eq!(
            reason(event(serde_json::json!({"phone": 4740000000_u64}))),
            Reason::WrongType
        );
        assert_eq!(
            reason(event(
                serde_json::json!({"kind": "elhub_consent_granted", "meters": ["123"]})
            )),
            Reason::InvalidGsrn
        );
        assert_eq!(
            reason(event(serde_json::json!({"kind": "elhub_consent_revoked"}))),
            Reason::MissingField
        );
        let r = parse(
            Some(
                event(serde_json::json!({"ip": "secret-host"}))
                    .to_string()
                    .as_bytes(),
            ),
            65536,
            &tenants(),
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::InvalidValue);
        assert!(!r.detail.contains("secret"));
        assert_eq!(r.tenant.as_deref(), Some("acme-industri"));
        assert_eq!(
            parse(Some(b"{"), 65536, &tenants()).unwrap_err().reason,
            Reason::MalformedJson
        );
        assert_eq!(
            parse(None, 65536, &tenants()).unwrap_err().reason,
            Reason::EmptyPayload
        );
        assert_eq!(
            parse(Some(&[b' '; 100]), 10, &tenants())
                .unwrap_err()
                .reason,
            Reason::TooLarge
        );
    }

    #[test]
    fn an_upgrade_names_the_meters_it_covers_and_its_purpose() {
        let upgrade = |extra: serde_json::Value| {
            let mut v =
                event(serde_json::json!({"kind": "upgraded_to_private", "tenant": "oslo-utility"}));
            v.as_object_mut().unwrap().remove("purpose");
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            parse(Some(v.to_string().as_bytes()), 65536, &tenants())
        };
        assert_eq!(
            upgrade(serde_json::json!({})).unwrap_err().reason,
            Reason::MissingField
        );
        assert_eq!(
            upgrade(serde_json::json!({"meters": []}))
                .unwrap_err()
                .reason,
            Reason::MissingField
        );
        let e =
            upgrade(serde_json::json!({"meters": ["707057500000000018", "heat-pump-7"]})).unwrap();
        assert_eq!(e.meters, ["707057500000000018", "heat-pump-7"]);
        assert_eq!(e.purpose.as_deref(), Some("private_treatment"));
        let e =
            upgrade(serde_json::json!({"meters": ["dev-1"], "purpose": "app_linking"})).unwrap();
        assert_eq!(e.purpose.as_deref(), Some("app_linking"));
        // 18 digits must be a GSRN (a typo'd meter is not a device id).
        assert_eq!(
            upgrade(serde_json::json!({"meters": ["707057500000000019"]}))
                .unwrap_err()
                .reason,
            Reason::InvalidGsrn
        );
        // Elhub events take GSRNs only.
        assert_eq!(
            reason(event(
                serde_json::json!({"kind": "elhub_consent_granted", "meters": ["dev-1"]})
            )),
            Reason::InvalidGsrn
        );
    }

    #[test]
    fn an_upgrade_takes_effect_when_recorded_and_ends_with_the_account() {
        let at = |h: i64| DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap();
        let ev = |kind: Kind, purpose: Option<&str>, occurred: i64| Event {
            kind,
            tenant: "oslo-utility".into(),
            subject: "s".into(),
            purpose: purpose.map(str::to_owned),
            meters: vec!["dev-1".into()],
            policy_version: None,
            occurred_at: at(occurred),
            source: None,
            profile: Profile::default(),
            ip: None,
            sensitive_removed: SensitiveCounts::default(),
        };
        let mut s = SubjectState::default();
        // Backdated by 10 hours: in effect from when it was recorded.
        s.apply(
            &ev(Kind::UpgradedToPrivate, Some("private_treatment"), 0),
            at(10),
        );
        assert_eq!(s.upgraded_at, Some(at(10)));
        assert!(s.upgrade_active());
        s.apply(&ev(Kind::ConsentWithdrawn, Some("name"), 11), at(11));
        assert!(s.upgrade_active());
        // Future-dated termination: the account ends when it was recorded.
        s.apply(&ev(Kind::AccountTerminated, None, 100), at(12));
        assert_eq!(s.terminated_at, Some(at(12)));
        assert!(!s.upgrade_active());
        let mut w = SubjectState::default();
        w.apply(
            &ev(Kind::UpgradedToPrivate, Some("private_treatment"), 20),
            at(20),
        );
        w.apply(
            &ev(Kind::ConsentWithdrawn, Some("private_treatment"), 21),
            at(21),
        );
        assert!(!w.upgrade_active());
    }

    #[test]
    fn national_ids_in_any_field_are_removed_before_the_event_is_read() {
        // Worked out by hand (DOMAIN.md section 1: k1 weights 3 7 6 1 8 9 4 5 2,
        // k2 weights 5 4 3 2 7 6 5 4 3 2):
        // 01017012343: sum1 = 0+7+0+1+56+0+4+10+6 = 84, k1 = 4 (88 = 8*11);
        //   sum2 = 0+4+0+2+49+0+5+8+9+8 = 85, k2 = 3 (88).
        // 41017056733 (D-number): sum1 = 12+7+0+1+56+0+20+30+14 = 140, k1 = 3 (143);
        //   sum2 = 20+4+0+2+49+0+25+24+21+6 = 151, k2 = 3 (154 = 14*11).
        // 12528567892 (H-number): sum1 = 3+14+30+2+64+45+24+35+16 = 233, k1 = 9 (242);
        //   sum2 = 5+8+15+4+56+30+30+28+24+18 = 218, k2 = 2 (220 = 20*11).
        let e = parse(
            Some(
                event(serde_json::json!({
                    "purpose": "name", "name": "Kari 010170 12343",
                    "address": "Storgata 1, 41.01.70-56733", "email": "12528567892@example.no",
                    "phone": "+47 41 00 77 31", "source": "01.01.70-12343",
                    "fnr": "x", "note": 1017012343_u64,
                }))
                .to_string()
                .as_bytes(),
            ),
            65536,
            &tenants(),
        )
        .unwrap();
        assert_eq!(e.profile.name, None);
        assert_eq!(e.profile.address, None);
        assert_eq!(e.profile.email, None);
        assert_eq!(e.source, None);
        assert_eq!(e.profile.phone.as_deref(), Some("+47 41 00 77 31"));
        let n = e.sensitive_removed;
        assert_eq!(
            (n.fodselsnummer, n.d_number, n.h_number, n.special_category),
            (4, 1, 1, 0)
        );
        let r = parse(
            Some(
                event(serde_json::json!({"subject": "01017012343"}))
                    .to_string()
                    .as_bytes(),
            ),
            65536,
            &tenants(),
        )
        .unwrap_err();
        assert_eq!(r.reason, Reason::SensitiveIdentifier);
        assert_eq!(r.tenant.as_deref(), Some("acme-industri"));
        assert_eq!(r.sensitive_removed.fodselsnummer, 1);
        assert!(!r.detail.contains("0101"));
        let clean = parse(
            Some(event(serde_json::json!({})).to_string().as_bytes()),
            65536,
            &tenants(),
        )
        .unwrap();
        assert_eq!(clean.sensitive_removed, SensitiveCounts::default());
    }

    fn chain_key() -> ChainKey {
        ChainKey::new(&MasterKey::from_bytes([5; 32]))
    }

    fn chain(n: usize) -> Vec<LedgerEntry> {
        let mut out: Vec<LedgerEntry> = Vec::new();
        for i in 0..n {
            let mut e = LedgerEntry {
                tenant: "t".into(),
                subject_hash: "h".into(),
                seq: i as i64,
                kind: Kind::ALL[i % 6],
                purpose: Some("phone".into()),
                meters: None,
                policy_version: Some("v1".into()),
                lawful_basis: "consent",
                occurred_at: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
                recorded_at: DateTime::from_timestamp(1_700_000_100 + i as i64, 0).unwrap(),
                source: None,
                source_partition: 0,
                source_offset: i as i64,
                prev_hash: out.last().map(|p| p.entry_hash.clone()).unwrap_or_default(),
                entry_hash: String::new(),
            };
            e.entry_hash = entry_hash(&chain_key(), &e);
            out.push(e);
        }
        out
    }

    #[test]
    fn the_chain_detects_edits_removals_and_reordering() {
        let good = chain(5);
        assert_eq!(verify_chain(&chain_key(), &good), Ok(()));
        let mut edited = good.clone();
        edited[2].purpose = Some("name".into());
        assert_eq!(verify_chain(&chain_key(), &edited), Err(2));
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&chain_key(), &removed), Err(2));
        let mut swapped = good.clone();
        swapped.swap(3, 4);
        assert_eq!(verify_chain(&chain_key(), &swapped), Err(4));
        // The whole chain recomputed without the key (the unkeyed hash an editor
        // could compute): every entry fails.
        let other = ChainKey::new(&MasterKey::from_bytes([6; 32]));
        let mut forged = good.clone();
        for i in 0..forged.len() {
            forged[i].prev_hash = if i == 0 {
                String::new()
            } else {
                forged[i - 1].entry_hash.clone()
            };
            forged[i].entry_hash = entry_hash(&other, &forged[i]);
        }
        assert_eq!(verify_chain(&chain_key(), &forged), Err(0));
        // An edit with a recomputed hash breaks the next link.
        let mut rehashed = good;
        rehashed[1].kind = Kind::AccountTerminated;
        rehashed[1].entry_hash = entry_hash(&chain_key(), &rehashed[1]);
        assert_eq!(verify_chain(&chain_key(), &rehashed), Err(2));
    }
}
