//! Dead letters: records that cannot become readings, with a stable reason code.

use std::fmt;

/// Why a record became a dead letter. The string forms are stable: they are stored in
/// the `dead_letters` table, used as the `reason` metric label and accepted by
/// `meterline dlq --reason`. Extend, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The Kafka message had no value.
    EmptyPayload,
    /// The message is larger than `max_message_bytes`.
    TooLarge,
    /// The payload is not valid UTF-8.
    NotUtf8,
    /// The payload is not well-formed JSON (includes nesting beyond the depth limit).
    MalformedJson,
    /// The JSON is valid but not an object.
    NotAnObject,
    /// `schema` is not a version this build understands.
    UnsupportedSchema,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type (for example a string where a number belongs).
    WrongType,
    /// A field has the right type but a value outside its domain.
    InvalidValue,
    /// A timestamp is not RFC 3339 with `Z` or an offset.
    InvalidTimestamp,
    /// `tenant` is not configured.
    UnknownTenant,
    /// `meter_id` is not 18 digits with a valid GS1 check digit.
    InvalidGsrn,
    /// `meter_id` is a valid GSRN whose prefix the tenant does not allow.
    GsrnPrefix,
    /// `start` is not on the resolution's grid (hh:00 for PT1H; :00/:15/:30/:45 for PT15M).
    MisalignedInterval,
    /// The interval ends in the future (beyond the tenant's allowed clock skew).
    FutureInterval,
    /// The interval starts before the tenant's horizon (default 3 years).
    TooOld,
    /// The unit is not allowed for the quantity (or `Wh` without `convert_wh`).
    UnitNotAllowed,
    /// The value is negative (direction carries the sign).
    NegativeValue,
    /// The value exceeds the physical maximum for one interval.
    ValueTooHigh,
    /// Same key and version as a stored reading, different value.
    VersionConflict,
    /// `device_id` or `meter_id` held a national identity number (removed).
    SensitiveIdentifier,
    /// The message claims to be a replay of a redacted dead letter but does not carry
    /// a valid `meterline-replay` tag.
    InvalidReplay,
    /// A spot price outside -500..4000 EUR/MWh (`price/v1`).
    PriceOutOfRange,
    /// A meter profile of a public tenant: profiles are stored for private tenants only
    /// (`meter-profile/v1`).
    TenantNotPrivate,
}

impl Reason {
    /// Every reason, for metric pre-registration and documentation.
    pub const ALL: [Reason; 24] = [
        Reason::EmptyPayload,
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::UnsupportedSchema,
        Reason::MissingField,
        Reason::WrongType,
        Reason::InvalidValue,
        Reason::InvalidTimestamp,
        Reason::UnknownTenant,
        Reason::InvalidGsrn,
        Reason::GsrnPrefix,
        Reason::MisalignedInterval,
        Reason::FutureInterval,
        Reason::TooOld,
        Reason::UnitNotAllowed,
        Reason::NegativeValue,
        Reason::ValueTooHigh,
        Reason::VersionConflict,
        Reason::SensitiveIdentifier,
        Reason::InvalidReplay,
        Reason::PriceOutOfRange,
        Reason::TenantNotPrivate,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::EmptyPayload => "empty_payload",
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::UnsupportedSchema => "unsupported_schema",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::InvalidValue => "invalid_value",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::UnknownTenant => "unknown_tenant",
            Reason::InvalidGsrn => "invalid_gsrn",
            Reason::GsrnPrefix => "gsrn_prefix",
            Reason::MisalignedInterval => "misaligned_interval",
            Reason::FutureInterval => "future_interval",
            Reason::TooOld => "too_old",
            Reason::UnitNotAllowed => "unit_not_allowed",
            Reason::NegativeValue => "negative_value",
            Reason::ValueTooHigh => "value_too_high",
            Reason::VersionConflict => "version_conflict",
            Reason::SensitiveIdentifier => "sensitive_identifier",
            Reason::InvalidReplay => "invalid_replay",
            Reason::PriceOutOfRange => "price_out_of_range",
            Reason::TenantNotPrivate => "tenant_not_private",
        }
    }

    /// Parse a stable code.
    pub fn parse(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that could not become a reading.
///
/// `detail` names fields and rules, never values. `payload` is what may be stored: the
/// original JSON with personal fields removed and, for public (or unknown) tenants,
/// identifiers pseudonymized; `None` when the payload could not be parsed (its bytes
/// stay in Kafka at `partition`/`offset` for the topic's retention).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub reason: Reason,
    pub detail: String,
    pub tenant: Option<String>,
    pub payload: Option<String>,
    pub payload_bytes: u64,
}
