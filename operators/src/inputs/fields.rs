//! The envelope of an input record and its typed fields.
//!
//! A payload is opened once: size, UTF-8, a JSON object, the contract's `schema`. Each field
//! is kept as its raw JSON text, so a number is read exactly (never through `f64`) and a
//! field of the wrong JSON type is `wrong_type`. A `null` field is an absent one.

use std::collections::HashMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::InputContext;
use crate::dead_letter::Reason;
use crate::ids::find_national_id;
use crate::{DeadLetter, RawRecord};

/// Why a record is refused: a stable reason and a detail naming fields, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The fields of one opened record.
#[derive(Debug)]
pub struct Fields<'a> {
    map: HashMap<String, &'a RawValue>,
}

/// Open `payload` as a `schema` record.
///
/// # Errors
/// `empty_payload`, `too_large`, `not_utf8`, `malformed_json`, `not_an_object`,
/// `missing_field` (`schema`), `unsupported_schema`; `sensitive_identifier` when the payload
/// holds a national identity number anywhere.
pub fn open<'a>(
    payload: Option<&'a [u8]>,
    max_bytes: usize,
    schema: &str,
) -> Result<Fields<'a>, Refusal> {
    let bytes = payload.ok_or_else(|| Refusal::new(Reason::EmptyPayload, "no value"))?;
    if bytes.is_empty() {
        return Err(Refusal::new(Reason::EmptyPayload, "empty value"));
    }
    if bytes.len() > max_bytes {
        return Err(Refusal::new(
            Reason::TooLarge,
            format!("{} bytes, more than {max_bytes}", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Refusal::new(Reason::NotUtf8, "payload"))?;
    if find_national_id(bytes).is_some() {
        return Err(Refusal::new(
            Reason::SensitiveIdentifier,
            "a national identity number in the payload",
        ));
    }
    let value: &RawValue = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            Reason::MalformedJson,
            format!("line {} column {}", e.line(), e.column()),
        )
    })?;
    if !value.get().trim_start().starts_with('{') {
        return Err(Refusal::new(Reason::NotAnObject, "payload"));
    }
    let map: HashMap<String, &RawValue> = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            Reason::MalformedJson,
            format!("line {} column {}", e.line(), e.column()),
        )
    })?;
    let fields = Fields { map };
    match fields.opt_text("schema")? {
        None => Err(Refusal::new(Reason::MissingField, "schema")),
        Some(s) if s == schema => Ok(fields),
        Some(_) => Err(Refusal::new(
            Reason::UnsupportedSchema,
            format!("schema (this input reads {schema})"),
        )),
    }
}

impl<'a> Fields<'a> {
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.map.get(name).copied().filter(|r| r.get() != "null")
    }

    fn missing(name: &str) -> Refusal {
        Refusal::new(Reason::MissingField, name)
    }

    fn wrong(name: &str, expected: &str) -> Refusal {
        Refusal::new(Reason::WrongType, format!("{name} must be {expected}"))
    }

    /// A string field, if present.
    ///
    /// # Errors
    /// `wrong_type` when it is not a string.
    pub fn opt_text(&self, name: &str) -> Result<Option<String>, Refusal> {
        self.raw(name)
            .map(|r| {
                serde_json::from_str::<String>(r.get()).map_err(|_| Self::wrong(name, "a string"))
            })
            .transpose()
    }

    /// A required string field.
    ///
    /// # Errors
    /// `missing_field`, `wrong_type`.
    pub fn text(&self, name: &str) -> Result<String, Refusal> {
        self.opt_text(name)?.ok_or_else(|| Self::missing(name))
    }

    /// A number field, exactly, if present.
    ///
    /// # Errors
    /// `wrong_type` when it is not a JSON number; `invalid_value` when it has no exact
    /// decimal form (more than 28 significant digits).
    pub fn opt_decimal(&self, name: &str) -> Result<Option<Decimal>, Refusal> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        let text = raw.get();
        let first = text.as_bytes().first().copied().unwrap_or(b' ');
        if !(first == b'-' || first.is_ascii_digit()) {
            return Err(Self::wrong(name, "a number"));
        }
        Decimal::from_str_exact(text)
            .or_else(|_| Decimal::from_scientific(text))
            .map(Some)
            .map_err(|_| {
                Refusal::new(
                    Reason::InvalidValue,
                    format!("{name} has no exact decimal form"),
                )
            })
    }

    /// A required number field.
    ///
    /// # Errors
    /// As [`Fields::opt_decimal`], and `missing_field`.
    pub fn decimal(&self, name: &str) -> Result<Decimal, Refusal> {
        self.opt_decimal(name)?.ok_or_else(|| Self::missing(name))
    }

    /// A required RFC 3339 instant, microseconds since the epoch.
    ///
    /// # Errors
    /// `missing_field`, `wrong_type`, `invalid_timestamp`.
    pub fn instant(&self, name: &str) -> Result<i64, Refusal> {
        let text = self.text(name)?;
        crate::rfc3339::parse_micros(&text)
            .ok_or_else(|| Refusal::new(Reason::InvalidTimestamp, name))
    }

    /// A required `YYYY-MM-DD` date.
    ///
    /// # Errors
    /// `missing_field`, `wrong_type`, `invalid_value`.
    pub fn date(&self, name: &str) -> Result<NaiveDate, Refusal> {
        let text = self.text(name)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|_| Refusal::new(Reason::InvalidValue, format!("{name} must be YYYY-MM-DD")))
    }

    /// A short printable text (an id, a source name): 1 to `max` characters, no control
    /// characters.
    ///
    /// # Errors
    /// `missing_field`, `wrong_type`, `invalid_value`.
    pub fn label(&self, name: &str, max: usize) -> Result<String, Refusal> {
        let text = self.text(name)?;
        check_label(name, &text, max)?;
        Ok(text)
    }

    /// An optional [`Fields::label`].
    ///
    /// # Errors
    /// `wrong_type`, `invalid_value`.
    pub fn opt_label(&self, name: &str, max: usize) -> Result<Option<String>, Refusal> {
        let text = self.opt_text(name)?;
        if let Some(t) = &text {
            check_label(name, t, max)?;
        }
        Ok(text)
    }
}

fn check_label(name: &str, text: &str, max: usize) -> Result<(), Refusal> {
    let count = text.chars().count();
    if count == 0 || count > max || text.chars().any(char::is_control) {
        return Err(Refusal::new(
            Reason::InvalidValue,
            format!("{name} must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

/// Open each of `records` as a `schema` record and `parse` it: the rows with their Kafka
/// partition and offset, and a dead letter (payload kept when `keep_payload`) for each record
/// refused.
pub fn decode_each<T>(
    records: &[RawRecord<'_>],
    ctx: &InputContext,
    schema: &str,
    keep_payload: bool,
    parse: impl Fn(&Fields<'_>) -> Result<T, Refusal>,
) -> (Vec<(i32, i64, T)>, Vec<DeadLetter>) {
    let mut rows = Vec::with_capacity(records.len());
    let mut dead_letters = Vec::new();
    for r in records {
        match open(r.payload, ctx.max_message_bytes, schema).and_then(|f| parse(&f)) {
            Ok(row) => rows.push((r.partition, r.offset, row)),
            Err(refusal) => dead_letters.push(dead_letter(r, refusal, None, keep_payload)),
        }
    }
    (rows, dead_letters)
}

/// A dead letter for `record`, refused for `refusal`. `keep_payload`: the payload may be
/// stored (reference data); profiles keep none.
#[must_use]
pub fn dead_letter(
    record: &RawRecord<'_>,
    refusal: Refusal,
    tenant: Option<String>,
    keep_payload: bool,
) -> DeadLetter {
    let bytes = record.payload.unwrap_or_default();
    let storable = keep_payload
        && refusal.reason != Reason::SensitiveIdentifier
        && refusal.reason != Reason::TooLarge;
    DeadLetter {
        partition: record.partition,
        offset: record.offset,
        reason: refusal.reason,
        detail: refusal.detail,
        tenant,
        payload: storable
            .then(|| std::str::from_utf8(bytes).ok().map(str::to_owned))
            .flatten(),
        payload_bytes: bytes.len() as u64,
    }
}
