//! `decode`: Kafka payloads (`reading/v1` JSON) into an Arrow batch of the
//! [`DECODED`] schema, and dead letters for the rest.
//!
//! Each payload is parsed into borrowed field slices (no per-row allocation for
//! unescaped strings), checked, and appended to column builders. Payloads of the
//! common shape take a single-pass parser (`decode/fast.rs`); the rest go through a serde
//! visitor (`WireSeed`) that reads the same fields. A payload that fails both is
//! parsed again generically only to say precisely *why* (missing field, wrong type,
//! ...) without echoing any value.
//!
//! Contract details (see README "Message contract"):
//! - required: `schema` (= "reading/v1"), `tenant`, `device_id`, `quantity`, `start`,
//!   `resolution`, `value`, `unit`, `quality`;
//! - optional: `meter_id`, `direction` (default `import`), `version`, `area`,
//!   `status`, `subject`, `pii`; `null` counts as absent for optional fields;
//! - unknown fields are ignored; `pii` and `status` are never stored (in `readings`
//!   or dead letters);
//! - `quality` is a word or an Elhub code (127, 56, 81, 21, 58), stored as the word;
//! - before anything else the payload is scanned for sensitive data
//!   ([`crate::sensitive`]); what is found is removed and the row flagged.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use chrono::{DateTime, NaiveDate};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::dead_letter::{DeadLetter, Reason};
use crate::decimal::{self, DecimalError};
use crate::epoch::{Epoch, Rotation};
use crate::flags;
use crate::ids::{find_national_id, find_national_id_in_number};
use crate::operator::OperatorContext;
use crate::pseudonym::{pseudonym_with_key, IdKind, Pseudonymizer};
use crate::schema::{DECODED, UTC};
use crate::sensitive::{Sanitized, SensitiveCounts, SensitiveScanner};
use crate::tenant::{valid_tenant_id, Deployment, TenantRegistry};
use crate::FastMap;

/// The only schema version this build decodes.
pub const SCHEMA_V1: &str = "reading/v1";

/// True if `payload` may be a redacted dead letter being replayed: it says
/// `redacted`, spelt out or behind a backslash escape. Only such a payload needs
/// its replay tag (the decoder checks the tag only when `redacted` is true), so a
/// source can skip reading message headers for every other payload.
#[must_use]
pub fn may_be_replay(payload: &[u8]) -> bool {
    static REDACTED: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"redacted"));
    REDACTED.find(payload).is_some() || memchr::memchr(b'\\', payload).is_some()
}

/// Longest identifier accepted (device serials, GSRNs, subjects).
pub const MAX_ID_CHARS: usize = 128;
/// Longest `area` accepted.
pub const MAX_AREA_CHARS: usize = 32;

/// Quantities of the contract.
pub const QUANTITIES: [&str; 6] = [
    "electricity",
    "reactive_energy",
    "district_heating",
    "district_cooling",
    "gas",
    "water",
];
/// Quality words of the contract.
pub const QUALITIES: [&str; 6] = [
    "measured",
    "estimated",
    "final_estimate",
    "temporary",
    "withdrawn",
    "calculated",
];
/// Elhub's numeric quality codes and the words they are stored as.
pub const QUALITY_CODES: [(u32, &str); 5] = [
    (127, "measured"),
    (56, "estimated"),
    (81, "final_estimate"),
    (21, "temporary"),
    (58, "withdrawn"),
];
/// Units of the contract (`Wh` only where a tenant converts it; `kvarh` only for
/// `reactive_energy`; see `validate`).
pub const UNITS: [&str; 4] = ["kWh", "m3", "Wh", "kvarh"];

/// Decoder settings.
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// Payloads larger than this become `too_large` dead letters without being parsed.
    pub max_message_bytes: usize,
    /// Finds national ids and special-category fields.
    pub sensitive: SensitiveScanner,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            sensitive: SensitiveScanner::default(),
        }
    }
}

/// One Kafka record as the decoder sees it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    /// `None` for a message without a value.
    pub payload: Option<&'a [u8]>,
    /// The `meterline-replay` header, if present (see `meterline dlq replay`).
    pub replay_tag: Option<&'a [u8]>,
}

/// The decoded batch plus the records that could not be decoded.
#[derive(Debug)]
pub struct DecodeOutput {
    pub batch: RecordBatch,
    pub dead_letters: Vec<DeadLetter>,
    /// Sensitive values removed from this slice's payloads, by kind.
    pub sensitive: SensitiveCounts,
}

/// Decodes `reading/v1` payloads. Holds the tenant registry (unknown tenants are dead
/// letters; local dates use the tenant's time zone) and the pseudonymizer used to
/// redact dead-letter payloads.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: DecodeConfig,
    tenants: TenantRegistry,
    pseudonymizer: Option<Pseudonymizer>,
    /// (tenant index, 15-minute slot) -> local date (days since epoch). Both parts
    /// of the key come from message content: at most [`MAX_CACHED_LOCAL_DATES`]
    /// entries, cleared when full.
    local_dates: FastMap<(usize, i64), i32>,
    /// "Now" of the batch being decoded (the day of its dead letters' key).
    now_micros: i64,
}

/// Local dates cached by a [`Decoder`]: 16,384 (tenant, 15-minute slot) pairs, 170
/// days of one tenant, a few hundred KiB. Beyond it the cache is cleared and refilled,
/// so a stream spread over many slots costs time zone arithmetic, not memory.
pub const MAX_CACHED_LOCAL_DATES: usize = 16_384;

/// The fast-path view of a message: borrowed wherever the JSON has no escapes.
/// Parsed by [`fast::parse`] or [`WireSeed`], which look at every key, string and
/// number for sensitive data while they parse.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Wire<'a> {
    schema: Cow<'a, str>,
    tenant: Cow<'a, str>,
    device_id: Cow<'a, str>,
    meter_id: Option<Cow<'a, str>>,
    quantity: Cow<'a, str>,
    direction: Option<Cow<'a, str>>,
    start: Cow<'a, str>,
    resolution: Cow<'a, str>,
    /// Raw JSON text (a number, or a string with its quotes).
    value: &'a str,
    unit: Cow<'a, str>,
    /// Raw JSON text (a string with its quotes, or a number).
    quality: &'a str,
    version: Option<Cow<'a, str>>,
    area: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
    /// Set by meterline on redacted dead-letter payloads.
    redacted: Option<bool>,
    /// A national id (in any key, string or number) or a special-category field
    /// name (inside `status`, `pii` or an unknown field, at any depth) was seen.
    sensitive: bool,
}

/// True if a string holds a national identity number.
fn has_national_id(s: &str) -> bool {
    find_national_id(s.as_bytes()).is_some()
}

/// True if the text of a number holds a national identity number (11 digits, or
/// 10 that lost their leading 0).
fn number_text_has_national_id(text: &str) -> bool {
    find_national_id_in_number(text).is_some()
}

/// True if a number's digits are a national identity number. Only numbers of
/// 10^9 or more can be (10 or 11 digits), so small numbers cost nothing.
fn number_has_national_id(n: f64) -> bool {
    n.abs() >= 1e9 && number_text_has_national_id(&format!("{n}"))
}

/// True if a raw JSON number (or string) holds a national id, also in exponent form.
fn raw_has_national_id(text: &str) -> bool {
    if text.starts_with('"') {
        return has_national_id(text);
    }
    number_text_has_national_id(text)
        || (text.contains(['e', 'E']) && text.parse::<f64>().is_ok_and(number_has_national_id))
}

/// The serde path: any well-formed payload (escapes, unusual numbers, ...).
fn parse_wire<'a>(text: &'a str, scanner: &SensitiveScanner) -> serde_json::Result<Wire<'a>> {
    let mut parser = serde_json::Deserializer::from_str(text);
    let wire = WireSeed { scanner }.deserialize(&mut parser)?;
    parser.end()?;
    Ok(wire)
}

/// The contract's fields, in [`Wire`] order; the first 14 (all but `value` and
/// `quality`) are strings.
const FIELDS: [&str; 17] = [
    "schema",
    "tenant",
    "device_id",
    "meter_id",
    "quantity",
    "direction",
    "start",
    "resolution",
    "value",
    "unit",
    "quality",
    "version",
    "area",
    "subject",
    "redacted",
    "status",
    "pii",
];
const VALUE: usize = 8;
const QUALITY: usize = 10;
const REDACTED: usize = 14;
const STATUS: usize = 15;
const PII: usize = 16;

/// The position of a contract field in [`FIELDS`].
fn field_index(key: &str) -> Option<usize> {
    Some(match key {
        "schema" => 0,
        "tenant" => 1,
        "device_id" => 2,
        "meter_id" => 3,
        "quantity" => 4,
        "direction" => 5,
        "start" => 6,
        "resolution" => 7,
        "value" => VALUE,
        "unit" => 9,
        "quality" => QUALITY,
        "version" => 11,
        "area" => 12,
        "subject" => 13,
        "redacted" => REDACTED,
        "status" => STATUS,
        "pii" => PII,
        _ => return None,
    })
}

/// Parses a `reading/v1` object into a [`Wire`]: typed where the contract has a
/// field, a sensitive-data walk everywhere else. Like serde's derive it rejects
/// duplicate contract fields and missing required ones (the caller then says why).
struct WireSeed<'s> {
    scanner: &'s SensitiveScanner,
}

impl<'de, 's> DeserializeSeed<'de> for WireSeed<'s> {
    type Value = Wire<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Wire<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

/// A string, borrowed from the payload when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de, 's> Visitor<'de> for WireSeed<'s> {
    type Value = Wire<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a reading/v1 object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        use serde::de::Error;
        let mut seen = [false; FIELDS.len()];
        let mut strings: [Option<Cow<'de, str>>; 14] = Default::default();
        let (mut value, mut quality, mut redacted) = (None, None, None);
        let mut sensitive = false;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let Some(field) = field_index(&key) else {
                // An unknown field: its name and everything in it are looked at.
                sensitive |= has_national_id(&key) || self.scanner.denied(&key);
                map.next_value_seed(Walker {
                    scanner: self.scanner,
                    sensitive: &mut sensitive,
                })?;
                continue;
            };
            if std::mem::replace(&mut seen[field], true) {
                return Err(A::Error::duplicate_field(FIELDS[field]));
            }
            match field {
                VALUE => {
                    let raw: &'de RawValue = map.next_value()?;
                    sensitive |= raw_has_national_id(raw.get());
                    value = Some(raw.get());
                }
                QUALITY => {
                    let raw: &'de RawValue = map.next_value()?;
                    sensitive |= raw_has_national_id(raw.get());
                    quality = Some(raw.get());
                }
                REDACTED => redacted = map.next_value::<Option<bool>>()?,
                STATUS | PII => {
                    // Must be an object (or null); never stored.
                    map.next_value_seed(NestedObject(Walker {
                        scanner: self.scanner,
                        sensitive: &mut sensitive,
                    }))?;
                }
                _ => {
                    let text = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
                    if let Some(t) = &text {
                        sensitive |= has_national_id(t);
                    }
                    strings[field] = text;
                }
            }
        }
        let [schema, tenant, device_id, meter_id, quantity, direction, start, resolution, _, unit, _, version, area, subject] =
            strings;
        let required = |v: Option<Cow<'de, str>>, name: &'static str| {
            v.ok_or_else(|| A::Error::missing_field(name))
        };
        Ok(Wire {
            schema: required(schema, "schema")?,
            tenant: required(tenant, "tenant")?,
            device_id: required(device_id, "device_id")?,
            meter_id,
            quantity: required(quantity, "quantity")?,
            direction,
            start: required(start, "start")?,
            resolution: required(resolution, "resolution")?,
            value: value.ok_or_else(|| A::Error::missing_field("value"))?,
            unit: required(unit, "unit")?,
            quality: quality.ok_or_else(|| A::Error::missing_field("quality"))?,
            version,
            area,
            subject,
            redacted,
            sensitive,
        })
    }
}

/// `status` and `pii`: an object or null, walked like an unknown field.
struct NestedObject<'w>(Walker<'w>);

impl<'de, 'w> DeserializeSeed<'de> for NestedObject<'w> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, 'w> Visitor<'de> for NestedObject<'w> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object or null")
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self.0)
    }
}

/// Walks any JSON value and notes a national id in a key, string (unescaped) or
/// number, or an object key on the special-category deny-list. Keeps nothing.
struct Walker<'w> {
    scanner: &'w SensitiveScanner,
    sensitive: &'w mut bool,
}

impl Walker<'_> {
    fn nested(&mut self) -> Walker<'_> {
        Walker {
            scanner: self.scanner,
            sensitive: &mut *self.sensitive,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key, looked at without being kept (no allocation, escaped or not).
struct KeyCheck<'w>(Walker<'w>);

impl<'de> DeserializeSeed<'de> for KeyCheck<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyCheck<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, k: &str) -> Result<(), E> {
        *self.0.sensitive |= has_national_id(k) || self.0.scanner.denied(k);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        *self.sensitive |=
            v.unsigned_abs() >= 1_000_000_000 && number_text_has_national_id(&v.to_string());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        *self.sensitive |= v >= 1_000_000_000 && number_text_has_national_id(&v.to_string());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        *self.sensitive |= number_has_national_id(v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        *self.sensitive |= has_national_id(v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.nested())?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeyCheck(self.nested()))?.is_some() {
            map.next_value_seed(self.nested())?;
        }
        Ok(())
    }
}

/// A row that passed every check, ready to append.
struct Row<'a> {
    tenant: usize,
    device_id: Cow<'a, str>,
    meter_id: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
    quantity: &'static str,
    direction: &'static str,
    start_micros: i64,
    resolution_minutes: i32,
    local_date: i32,
    value: i128,
    unit: &'static str,
    quality: &'static str,
    version_micros: Option<i64>,
    area: Option<Cow<'a, str>>,
    flags: u32,
}

struct Builders {
    tenant: StringBuilder,
    device_id: StringBuilder,
    meter_id: StringBuilder,
    subject: StringBuilder,
    quantity: StringBuilder,
    direction: StringBuilder,
    interval_start: TimestampMicrosecondBuilder,
    resolution: Int32Builder,
    local_date: Date32Builder,
    value: Decimal128Builder,
    unit: StringBuilder,
    quality: StringBuilder,
    version: TimestampMicrosecondBuilder,
    area: StringBuilder,
    ingested_at: TimestampMicrosecondBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    flags: UInt32Builder,
}

impl Builders {
    fn new(rows: usize) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        let t = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC);
        Self {
            tenant: s(),
            device_id: s(),
            meter_id: s(),
            subject: s(),
            quantity: s(),
            direction: s(),
            interval_start: t(),
            resolution: Int32Builder::with_capacity(rows),
            local_date: Date32Builder::with_capacity(rows),
            value: Decimal128Builder::with_capacity(rows)
                .with_precision_and_scale(decimal::PRECISION, decimal::SCALE)
                .expect("valid decimal precision"),
            unit: s(),
            quality: s(),
            version: t(),
            area: s(),
            ingested_at: t(),
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            flags: UInt32Builder::with_capacity(rows),
        }
    }

    fn append(&mut self, tenant_id: &str, row: &Row<'_>, rec: &RawRecord<'_>, now: i64) {
        self.tenant.append_value(tenant_id);
        self.device_id.append_value(&row.device_id);
        self.meter_id.append_option(row.meter_id.as_deref());
        self.subject.append_option(row.subject.as_deref());
        self.quantity.append_value(row.quantity);
        self.direction.append_value(row.direction);
        self.interval_start.append_value(row.start_micros);
        self.resolution.append_value(row.resolution_minutes);
        self.local_date.append_value(row.local_date);
        self.value.append_value(row.value);
        self.unit.append_value(row.unit);
        self.quality.append_value(row.quality);
        self.version.append_option(row.version_micros);
        self.area.append_option(row.area.as_deref());
        self.ingested_at.append_value(now);
        self.partition.append_value(rec.partition);
        self.offset.append_value(rec.offset);
        self.flags.append_value(row.flags);
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.device_id.finish()),
            Arc::new(self.meter_id.finish()),
            Arc::new(self.subject.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.interval_start.finish()),
            Arc::new(self.resolution.finish()),
            Arc::new(self.local_date.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.quality.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.area.finish()),
            Arc::new(self.ingested_at.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.flags.finish()),
        ];
        // The builders produce exactly the DECODED schema's types and nullability.
        RecordBatch::try_new(DECODED.clone(), columns).expect("decoder builds DECODED schema")
    }
}

/// Why `decode_one` produced no row.
enum Failure {
    Reject(Reject),
    /// A national id or a special-category field name was found while parsing:
    /// clean the payload and decode it again.
    Sensitive,
}

impl From<Reject> for Failure {
    fn from(r: Reject) -> Self {
        Failure::Reject(r)
    }
}

/// A rejection before a row exists.
struct Reject {
    reason: Reason,
    detail: Cow<'static, str>,
}

fn reject(reason: Reason, detail: impl Into<Cow<'static, str>>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

impl Decoder {
    pub fn new(
        config: DecodeConfig,
        tenants: TenantRegistry,
        pseudonymizer: Option<Pseudonymizer>,
    ) -> Self {
        Self {
            config,
            tenants,
            pseudonymizer,
            local_dates: FastMap::default(),
            now_micros: 0,
        }
    }

    /// Keys of a tenant's open pseudonym epochs (dead letters of its readings use
    /// them, like the readings do).
    pub fn set_epoch_keys(&mut self, tenant: &str, keys: &[(crate::epoch::Epoch, [u8; 32])]) {
        if let Some(p) = self.pseudonymizer.as_mut() {
            p.set_epoch_keys(tenant, keys);
        }
    }

    /// The short-lived dead-letter keys (see [`Pseudonymizer::dead_letter_key`]).
    pub fn set_dead_letter_keys(&mut self, keys: &[(chrono::NaiveDate, [u8; 32])]) {
        if let Some(p) = self.pseudonymizer.as_mut() {
            p.set_dead_letter_keys(keys);
        }
    }

    pub fn tenants(&self) -> &TenantRegistry {
        &self.tenants
    }

    /// Decode a slice of records. Every record ends up either as a row of
    /// `batch` (in input order) or as one entry of `dead_letters`.
    pub fn decode(&mut self, records: &[RawRecord<'_>], ctx: &OperatorContext) -> DecodeOutput {
        self.now_micros = ctx.now_micros;
        let mut builders = Builders::new(records.len());
        let mut dead_letters = Vec::new();
        let mut sensitive = SensitiveCounts::default();
        for rec in records {
            // Sensitive data is found while parsing (every key, string and number is
            // looked at); nothing below (rows, dead letters) ever sees the original
            // bytes of a payload that held some. Dead-letter payloads are cleaned
            // again when they are redacted.
            let mut sanitized = Sanitized::default();
            let mut result = self.decode_sanitized(rec, &sanitized);
            if matches!(result, Err(Failure::Sensitive)) {
                // Remove what was found and parse the clean payload.
                let bytes = sanitized.bytes.clone();
                let source = bytes.as_deref().or(rec.payload).unwrap_or_default();
                let cleaned = self.config.sensitive.clean(source);
                sanitized.removed.add(&cleaned.removed);
                sanitized.identifier_removed |= cleaned.identifier_removed;
                if cleaned.bytes.is_some() {
                    sanitized.bytes = cleaned.bytes;
                }
                result = self.decode_sanitized(rec, &sanitized);
            }
            sensitive.add(&sanitized.removed);
            let view = RawRecord {
                payload: sanitized.bytes.as_deref().or(rec.payload),
                ..*rec
            };
            match result {
                Ok(mut row) => {
                    if sanitized.removed.total() > 0 {
                        row.flags |= flags::SENSITIVE_REMOVED;
                    }
                    let tenant_id = self.tenants.get(row.tenant).id.as_str();
                    builders.append(tenant_id, &row, rec, ctx.now_micros);
                }
                Err(Failure::Reject(rej)) => {
                    let (dl, removed) = self.dead_letter_counted(&view, rej);
                    sensitive.add(&removed);
                    dead_letters.push(dl);
                }
                Err(Failure::Sensitive) => {
                    // Cannot happen after `clean`; never store what could not be cleaned.
                    let rej = reject(
                        Reason::MalformedJson,
                        "special-category fields could not be removed from the payload",
                    );
                    let mut dl = self.dead_letter(
                        &RawRecord {
                            payload: None,
                            ..*rec
                        },
                        rej,
                    );
                    dl.payload_bytes = rec.payload.map_or(0, |b| b.len() as u64);
                    dead_letters.push(dl);
                }
            }
        }
        DecodeOutput {
            batch: builders.finish(),
            dead_letters,
            sensitive,
        }
    }

    /// Decode a record from its sanitized bytes.
    fn decode_sanitized<'a>(
        &mut self,
        rec: &RawRecord<'a>,
        sanitized: &'a Sanitized,
    ) -> Result<Row<'a>, Failure> {
        if sanitized.identifier_removed {
            return Err(Failure::Reject(reject(
                Reason::SensitiveIdentifier,
                "field `device_id` or `meter_id` held a national identity number; it was removed",
            )));
        }
        let view = RawRecord {
            payload: sanitized.bytes.as_deref().or(rec.payload),
            ..*rec
        };
        self.decode_one(&view)
    }

    fn decode_one<'a>(&mut self, rec: &RawRecord<'a>) -> Result<Row<'a>, Failure> {
        let Some(bytes) = rec.payload else {
            return Err(reject(Reason::EmptyPayload, "message has no value").into());
        };
        if bytes.len() > self.config.max_message_bytes {
            return Err(reject(
                Reason::TooLarge,
                format!(
                    "payload is {} bytes; the limit (max_message_bytes) is {}",
                    bytes.len(),
                    self.config.max_message_bytes
                ),
            )
            .into());
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(reject(Reason::NotUtf8, "payload is not valid UTF-8").into());
        };
        let scanner = &self.config.sensitive;
        let wire = match fast::parse(text, scanner) {
            Some(wire) => wire,
            None => match parse_wire(text, scanner) {
                Ok(wire) => wire,
                Err(_) => return Err(diagnose(text).into()),
            },
        };
        if wire.sensitive {
            return Err(Failure::Sensitive);
        }
        let replayed = match wire.redacted {
            Some(true) => {
                if !self.valid_replay(bytes, rec.replay_tag) {
                    return Err(reject(
                        Reason::InvalidReplay,
                        "field `redacted` is set but the `meterline-replay` header is missing or does not match",
                    )
                    .into());
                }
                true
            }
            _ => false,
        };
        let mut row = self.check(wire)?;
        if replayed {
            if self.tenants.get(row.tenant).deployment == Deployment::Private {
                // Its identifiers were pseudonymized when it was dead-lettered (the
                // tenant was not known then); stored as a private tenant's they would
                // not match the same meter's raw identifiers.
                return Err(reject(
                    Reason::InvalidReplay,
                    "a redacted dead letter cannot be replayed into a private tenant (its identifiers are pseudonyms)",
                )
                .into());
            }
            row.flags |= flags::REPLAYED;
        }
        Ok(row)
    }

    /// True if `tag` is the replay tag of `bytes` under this process's key.
    fn valid_replay(&self, bytes: &[u8], tag: Option<&[u8]>) -> bool {
        match (&self.pseudonymizer, tag) {
            (Some(p), Some(tag)) => p.replay_tag(bytes).as_bytes() == tag,
            _ => false,
        }
    }

    fn check<'a>(&mut self, w: Wire<'a>) -> Result<Row<'a>, Reject> {
        if w.schema != SCHEMA_V1 {
            return Err(reject(
                Reason::UnsupportedSchema,
                "field `schema`: this build decodes \"reading/v1\" only",
            ));
        }
        let Some(tenant) = self.tenants.index_of(&w.tenant) else {
            return Err(reject(
                Reason::UnknownTenant,
                "field `tenant`: not a configured tenant",
            ));
        };
        if self.tenants.is_retired(tenant) {
            return Err(reject(
                Reason::UnknownTenant,
                "field `tenant`: the tenant is retired (its stored data is kept until its retention ends; new data is not accepted)",
            ));
        }
        check_id("device_id", &w.device_id)?;
        let meter_id = w.meter_id.filter(|m| !m.is_empty());
        if let Some(m) = &meter_id {
            check_id("meter_id", m)?;
        }
        let subject = w.subject.filter(|s| !s.is_empty());
        if let Some(s) = &subject {
            check_id("subject", s)?;
        }
        let quantity = one_of("quantity", &w.quantity, &QUANTITIES)?;
        let direction = parse_direction(w.direction.as_deref())?;
        let start = parse_time("start", &w.start)?;
        let resolution_minutes = parse_resolution(&w.resolution)?;
        let value = parse_value(w.value)?;
        let unit = one_of("unit", &w.unit, &UNITS)?;
        let quality = parse_quality(w.quality)?;
        let version_micros = match w.version.as_deref() {
            None => None,
            Some(v) => Some(parse_time("version", v)?),
        };
        let area = w.area.filter(|a| !a.is_empty());
        if let Some(a) = &area {
            check_area(a)?;
        }
        let local_date = self.local_date(tenant, start);
        Ok(Row {
            tenant,
            device_id: w.device_id,
            meter_id,
            subject,
            quantity,
            direction,
            start_micros: start,
            resolution_minutes,
            local_date,
            value,
            unit,
            quality,
            version_micros,
            area,
            flags: 0,
        })
    }

    /// The local calendar date of an instant in the tenant's time zone. Every real
    /// zone offset is a multiple of 15 minutes, so the date is cached per slot (at
    /// most [`MAX_CACHED_LOCAL_DATES`] slots).
    fn local_date(&mut self, tenant: usize, micros: i64) -> i32 {
        const SLOT: i64 = 15 * 60 * 1_000_000;
        let slot = micros.div_euclid(SLOT);
        if let Some(date) = self.local_dates.get(&(tenant, slot)) {
            return *date;
        }
        let tz = self.tenants.get(tenant).timezone;
        let utc = DateTime::from_timestamp_micros(slot * SLOT).unwrap_or_default();
        let date = days_since_epoch(utc.with_timezone(&tz).date_naive());
        if self.local_dates.len() >= MAX_CACHED_LOCAL_DATES {
            self.local_dates.clear();
        }
        self.local_dates.insert((tenant, slot), date);
        date
    }

    /// Local dates cached now (never more than [`MAX_CACHED_LOCAL_DATES`]).
    pub fn cached_local_dates(&self) -> usize {
        self.local_dates.len()
    }

    /// A dead letter for a record rejected after decoding (by `validate` or the
    /// version rules), with its payload redacted like every other dead letter.
    pub fn dead_letter_for(
        &mut self,
        rec: &RawRecord<'_>,
        reason: Reason,
        detail: String,
    ) -> DeadLetter {
        // Redaction cleans sensitive data out of the payload.
        self.dead_letter(
            rec,
            Reject {
                reason,
                detail: detail.into(),
            },
        )
    }

    fn dead_letter(&mut self, rec: &RawRecord<'_>, rej: Reject) -> DeadLetter {
        self.dead_letter_counted(rec, rej).0
    }

    /// A dead letter, and the sensitive values its payload still had (removed).
    fn dead_letter_counted(
        &mut self,
        rec: &RawRecord<'_>,
        rej: Reject,
    ) -> (DeadLetter, SensitiveCounts) {
        let bytes = rec.payload.unwrap_or_default();
        let parseable = !matches!(
            rej.reason,
            Reason::EmptyPayload | Reason::TooLarge | Reason::NotUtf8 | Reason::MalformedJson
        );
        let mut removed = SensitiveCounts::default();
        let (tenant, payload) = if parseable {
            self.redact(bytes, rec.replay_tag, &mut removed)
        } else {
            (None, None)
        };
        let letter = DeadLetter {
            partition: rec.partition,
            offset: rec.offset,
            reason: rej.reason,
            detail: rej.detail.into_owned(),
            tenant,
            payload,
            payload_bytes: bytes.len() as u64,
        };
        (letter, removed)
    }

    /// The storable form of a rejected payload and its (syntactically valid) tenant.
    ///
    /// Sensitive data (national ids, special-category fields) is removed first,
    /// wherever it is, and counted in `removed`. `pii` and `status` are always
    /// removed (never stored, and replay does not need them). For private tenants
    /// the rest is kept (replay needs it).
    /// For public tenants, and for tenants this process does not know (which may
    /// become public), only contract fields are kept, `subject` is removed and
    /// `device_id`/`meter_id` are replaced by pseudonyms; `"redacted": true` marks it.
    /// A payload redacted earlier (a replay with a valid tag) keeps its pseudonyms;
    /// a `redacted` claim without one is removed (private) or its identifiers are
    /// pseudonymized like any others (public).
    fn redact(
        &mut self,
        bytes: &[u8],
        replay_tag: Option<&[u8]>,
        removed: &mut SensitiveCounts,
    ) -> (Option<String>, Option<String>) {
        let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
            return (None, None);
        };
        let _ = self.config.sensitive.clean_value(&mut value, removed);
        let Value::Object(mut map) = value else {
            return (None, None);
        };
        let tenant = match map.get("tenant") {
            Some(Value::String(t)) if valid_tenant_id(t) => Some(t.clone()),
            _ => None,
        };
        let already_redacted =
            map.get("redacted") == Some(&Value::Bool(true)) && self.valid_replay(bytes, replay_tag);
        map.remove("pii");
        map.remove("status");
        let private = tenant
            .as_deref()
            .and_then(|t| self.tenants.by_id(t))
            .is_some_and(|t| t.deployment == Deployment::Private);
        if private && !already_redacted {
            map.remove("redacted");
        }
        if !private {
            const KEEP: [&str; 12] = [
                "schema",
                "tenant",
                "device_id",
                "meter_id",
                "quantity",
                "direction",
                "start",
                "resolution",
                "value",
                "unit",
                "quality",
                "version",
            ];
            map.retain(|k, _| KEEP.contains(&k.as_str()) || k == "area");
            // A dead letter is a record that broke the contract: its fields may
            // hold anything, personal data included (a name as the unit, an
            // address as the area). Keep a value only if it is a valid value of
            // its field; an identifier is pseudonymized below.
            for (field, v) in &mut map {
                if !public_value_ok(field, v) {
                    *v = Value::Null;
                } else if field == "area" {
                    // Generalized as in `readings` (a postcode to 2 digits).
                    if let Some(general) = v.as_str().and_then(crate::anonymize::public_area) {
                        *v = Value::String(general.to_owned());
                    }
                }
            }
            let start = map
                .get("start")
                .and_then(Value::as_str)
                .and_then(crate::rfc3339::parse_micros);
            for (field, kind) in [("device_id", IdKind::Device), ("meter_id", IdKind::Meter)] {
                if already_redacted {
                    break;
                }
                let replacement = match map.get(field) {
                    Some(Value::String(id)) => self
                        .dead_letter_key(tenant.as_deref(), start, kind)
                        .map(|key| Value::String(pseudonym_with_key(&key, id))),
                    None | Some(Value::Null) => continue,
                    _ => None,
                };
                match replacement {
                    Some(v) => map.insert(field.to_owned(), v),
                    None => map.remove(field),
                };
            }
            map.insert("redacted".to_owned(), Value::Bool(true));
        }
        let payload = serde_json::to_string(&Value::Object(map)).ok();
        (tenant, payload)
    }
}

impl Decoder {
    /// The key a public (or not configured) tenant's dead-letter identifiers of
    /// `kind` are pseudonymized under:
    /// - a public tenant's key of the epoch of the reading's local date (of "now"
    ///   when `start` is not an instant), the key its readings use, so a replayed
    ///   dead letter carries the pseudonym the reading would have had;
    /// - otherwise (a tenant not configured, an epoch closed or not loaded) the
    ///   short-lived key of today's dead letters, destroyed when they leave the
    ///   dead-letter store.
    ///
    /// `None` (the identifier is removed) without a pseudonymizer or a loaded key.
    fn dead_letter_key(
        &mut self,
        tenant: Option<&str>,
        start: Option<i64>,
        kind: IdKind,
    ) -> Option<[u8; 32]> {
        let public = tenant
            .and_then(|t| self.tenants.index_of(t))
            .filter(|&i| self.tenants.get(i).deployment == Deployment::Public);
        let epoch = public.map(|i| match self.tenants.get(i).rules.key_rotation {
            Rotation::Never => Epoch::All,
            rotation => rotation.epoch_of(self.local_date(i, start.unwrap_or(self.now_micros))),
        });
        let day = DateTime::from_timestamp_micros(self.now_micros)
            .unwrap_or_default()
            .date_naive();
        let p = self.pseudonymizer.as_mut()?;
        if let (Some(t), Some(epoch)) = (tenant, epoch) {
            if let Some(key) = p.epoch_key(t, kind, epoch) {
                return Some(key);
            }
        }
        p.dead_letter_key(tenant.unwrap_or("-"), kind, day)
    }
}

/// Whether a public tenant's dead letter may keep `value` for contract `field`.
fn public_value_ok(field: &str, value: &Value) -> bool {
    let text = value.as_str();
    let one_of = |list: &[&str]| text.is_some_and(|t| list.contains(&t));
    match field {
        // Pseudonymized (or removed) afterwards.
        "device_id" | "meter_id" | "tenant" => true,
        "schema" => one_of(&["reading/v1"]),
        "quantity" => one_of(&QUANTITIES),
        "direction" => one_of(&["import", "export"]),
        "resolution" => one_of(&["PT15M", "PT1H"]),
        "unit" => one_of(&UNITS),
        "quality" => {
            one_of(&QUALITIES)
                || value
                    .as_u64()
                    .is_some_and(|c| QUALITY_CODES.iter().any(|(code, _)| u64::from(*code) == c))
        }
        "start" | "version" => text.is_some_and(|t| crate::rfc3339::parse_micros(t).is_some()),
        "value" => value.is_number(),
        "area" => text.is_some_and(|t| crate::anonymize::public_area(t).is_some()),
        "redacted" => value.is_boolean(),
        _ => false,
    }
}

fn days_since_epoch(date: NaiveDate) -> i32 {
    const EPOCH_CE_DAYS: i32 = 719_163; // 1970-01-01 as days from 0001-01-01 (CE day 1)
    chrono::Datelike::num_days_from_ce(&date) - EPOCH_CE_DAYS
}

fn parse_direction(direction: Option<&str>) -> Result<&'static str, Reject> {
    match direction {
        None | Some("import") => Ok("import"),
        Some("export") => Ok("export"),
        Some(_) => Err(reject(
            Reason::InvalidValue,
            "field `direction`: must be \"import\" or \"export\"",
        )),
    }
}

fn parse_resolution(resolution: &str) -> Result<i32, Reject> {
    match resolution {
        "PT1H" => Ok(60),
        "PT15M" => Ok(15),
        _ => Err(reject(
            Reason::InvalidValue,
            "field `resolution`: must be \"PT15M\" or \"PT1H\"",
        )),
    }
}

/// The value in thousandths. `-0` and negative values that round to zero are 0
/// (see `decimal`), stored as 0.000 rather than refused as negative.
fn parse_value(value: &str) -> Result<i128, Reject> {
    match decimal::parse_thousandths(value) {
        Ok(v) if v >= 0 => Ok(v),
        Ok(_) => Err(reject(
            Reason::NegativeValue,
            "field `value`: must be >= 0 (direction carries the sign)",
        )),
        Err(DecimalError::NotANumber) => Err(reject(
            Reason::WrongType,
            "field `value`: expected a number",
        )),
        Err(DecimalError::OutOfRange) => Err(reject(
            Reason::InvalidValue,
            "field `value`: outside decimal(18,3) (at most 15 integer digits after rounding to 3 decimals)",
        )),
    }
}

fn check_area(area: &str) -> Result<(), Reject> {
    if area.chars().count() > MAX_AREA_CHARS || area.chars().any(char::is_control) {
        return Err(reject(
            Reason::InvalidValue,
            "field `area`: at most 32 printable characters",
        ));
    }
    Ok(())
}

fn check_id(field: &'static str, id: &str) -> Result<(), Reject> {
    let bad = if id.is_ascii() {
        // The common case, one pass over the bytes.
        id.is_empty() || id.len() > MAX_ID_CHARS || id.bytes().any(|b| b.is_ascii_control())
    } else {
        id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control)
    };
    if bad {
        return Err(reject(
            Reason::InvalidValue,
            format!("field `{field}`: must be 1-{MAX_ID_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// A quality word, or an Elhub numeric code (as a number or a string), as the word.
fn parse_quality(raw: &str) -> Result<&'static str, Reject> {
    let text: Cow<'_, str> = if let Some(word) = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|w| !w.contains('\\'))
    {
        // The common case: a string without escapes.
        Cow::Borrowed(word)
    } else if raw.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(raw).map_err(|_| {
            reject(
                Reason::WrongType,
                "field `quality`: expected a string or an Elhub code",
            )
        })?
    } else if raw.bytes().all(|b| b.is_ascii_digit()) {
        Cow::Borrowed(raw)
    } else {
        return Err(reject(
            Reason::WrongType,
            "field `quality`: expected a string or an Elhub code",
        ));
    };
    if let Some(word) = QUALITIES.iter().find(|q| **q == text) {
        return Ok(word);
    }
    QUALITY_CODES
        .iter()
        .find(|(code, _)| text.parse::<u32>().ok() == Some(*code))
        .map(|(_, word)| *word)
        .ok_or_else(|| {
            reject(
                Reason::InvalidValue,
                "field `quality`: must be measured, estimated, final_estimate, temporary, withdrawn, calculated or an Elhub code (127, 56, 81, 21, 58)",
            )
        })
}

fn one_of(
    field: &'static str,
    value: &str,
    allowed: &[&'static str],
) -> Result<&'static str, Reject> {
    allowed
        .iter()
        .copied()
        .find(|a| *a == value)
        .ok_or_else(|| {
            reject(
                Reason::InvalidValue,
                format!("field `{field}`: must be one of {}", allowed.join(", ")),
            )
        })
}

/// RFC 3339 with `Z` or an offset, to microseconds since the epoch (UTC).
fn parse_time(field: &'static str, text: &str) -> Result<i64, Reject> {
    crate::rfc3339::parse_micros(text).ok_or_else(|| {
        reject(
            Reason::InvalidTimestamp,
            format!("field `{field}`: expected RFC 3339 with Z or an offset"),
        )
    })
}

/// Why the fast path failed, found by a generic parse. Never echoes values.
fn diagnose(text: &str) -> Reject {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // Syntax errors name a line and column only (no content).
            let message = e.to_string();
            let detail = format!(
                "not well-formed JSON at line {} column {}{}",
                e.line(),
                e.column(),
                if message.contains("recursion limit") {
                    " (nested too deeply)"
                } else if message.contains("number out of range") {
                    // Outside `value` numbers are read as 64-bit floats.
                    " (a number beyond the range of a 64-bit float)"
                } else {
                    ""
                }
            );
            return reject(Reason::MalformedJson, detail);
        }
    };
    let Value::Object(map) = value else {
        return reject(Reason::NotAnObject, "payload is JSON but not an object");
    };
    if let Err(r) = check_fields(&map) {
        return r;
    }
    // Everything has the right type: the only fast-path failure left is a field
    // given twice, which a generic parse silently resolves.
    reject(
        Reason::MalformedJson,
        "a field appears more than once in the object",
    )
}

/// The fields of a reading that parses as a JSON object: each present with its
/// type, or the first missing or mistyped one.
fn check_fields(map: &serde_json::Map<String, Value>) -> Result<(), Reject> {
    const REQUIRED_STRINGS: [&str; 7] = [
        "schema",
        "tenant",
        "device_id",
        "quantity",
        "start",
        "resolution",
        "unit",
    ];
    const OPTIONAL_STRINGS: [&str; 5] = ["meter_id", "direction", "version", "area", "subject"];
    for field in REQUIRED_STRINGS.iter().chain(["value", "quality"].iter()) {
        if !map.contains_key(*field) {
            return Err(reject(
                Reason::MissingField,
                format!("required field `{field}` is missing"),
            ));
        }
    }
    for field in REQUIRED_STRINGS {
        if !map[field].is_string() {
            return Err(reject(
                Reason::WrongType,
                format!("field `{field}`: expected a string"),
            ));
        }
    }
    if !map["value"].is_number() {
        return Err(reject(
            Reason::WrongType,
            "field `value`: expected a number",
        ));
    }
    if !(map["quality"].is_string() || map["quality"].is_u64()) {
        return Err(reject(
            Reason::WrongType,
            "field `quality`: expected a string or an Elhub code",
        ));
    }
    if map
        .get("redacted")
        .is_some_and(|v| !(v.is_boolean() || v.is_null()))
    {
        return Err(reject(
            Reason::WrongType,
            "field `redacted`: expected a boolean or null",
        ));
    }
    for field in OPTIONAL_STRINGS {
        if map
            .get(field)
            .is_some_and(|v| !(v.is_string() || v.is_null()))
        {
            return Err(reject(
                Reason::WrongType,
                format!("field `{field}`: expected a string or null"),
            ));
        }
    }
    for field in ["status", "pii"] {
        if map
            .get(field)
            .is_some_and(|v| !(v.is_object() || v.is_null()))
        {
            return Err(reject(
                Reason::WrongType,
                format!("field `{field}`: expected an object or null"),
            ));
        }
    }
    Ok(())
}

mod fast;
#[cfg(test)]
mod tests;
