//! Elhub's series as `reading/v1` records: the adapter's mapping (README "Elhub adapter").
//!
//! | Elhub | `reading/v1` |
//! |---|---|
//! | `MeteringPointUsedDomainLocation/Identification` (GSRN, check digit checked) | `meter_id` and `device_id`; the record key |
//! | `UnitType` `kWh` / `kvarh` | `quantity` `electricity` / `reactive_energy`, `unit` the same |
//! | `Direction` `Out` / `In` | `direction` `import` (energy out of the grid to the customer) / `export` |
//! | `ResolutionDuration` `PT1H`, `PT60M` / `PT15M` | `resolution` `PT1H` / `PT15M`; other resolutions refused (`unsupported_resolution`) |
//! | `Start + (Sequence - 1) × resolution` | `start`, in UTC |
//! | `Metered` / `Estimated` `Quality="56"` / `Quality="81"` / `Temporary` / `Calculated` | `quality` `measured` / `estimated` / `final_estimate` / `temporary` / `calculated` |
//! | the observation's value, decimal(15,3) | `value`, the same text |
//! | `RegistrationDateTime` | `version` |
//!
//! A series maps whole or not at all: one refused observation refuses its series.

use chrono::{DateTime, SecondsFormat, Utc};

use super::emif::{Kind, Observation, Series, SeriesError};
use crate::ids::{check_gsrn, GsrnError};

/// Why the adapter refuses a file or a series: a stable code (metric label, the
/// reason file next to a rejected file) for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not well-formed XML, or not text of the expected encoding.
    MalformedXml,
    /// Well-formed, but not a message the adapter reads (another root element).
    NotEmif,
    /// An EMIF element in the wrong namespace.
    WrongNamespace,
    /// More series than a message may hold, or none.
    SeriesCount,
    /// Larger than `elhub.max_file_bytes`.
    TooLarge,
    /// A required element of a series is missing.
    MissingElement,
    /// A value, time or code that is not what the element holds.
    InvalidValue,
    /// The observations do not fill the period (`(End - Start) / resolution`), or a
    /// sequence number is repeated or out of range.
    ObservationCount,
    /// The metering point is not a GSRN (shape or check digit).
    InvalidGsrn,
    /// P1D, P1M, P1Y, PT30M, PT5M: not interval readings of `reading/v1`.
    UnsupportedResolution,
    /// A unit other than kWh and kvarh.
    UnsupportedUnit,
    /// A Min side file with a row that is not `from;to;value`, or a time that does not
    /// exist in Norway, or no metering point.
    MalformedCsv,
    /// A `CollectedData` series of a meter index, a profiled meter read or a yearly
    /// estimate: not interval readings.
    NotIntervalData,
    /// Master data for a public tenant: profiles are kept for private tenants only.
    TenantNotPrivate,
    /// Master data, and `inputs.profiles_topic` is not set.
    ProfilesOff,
    /// A grid area (EIC) that `elhub.grid_areas` does not name.
    UnknownGridArea,
    /// A customer meterline's prices do not cover: a business of 100 MWh a year or
    /// more, or VAT without consumption tax.
    UnsupportedCustomer,
}

impl RejectReason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [RejectReason; 17] = [
        Self::MalformedXml,
        Self::NotEmif,
        Self::WrongNamespace,
        Self::SeriesCount,
        Self::TooLarge,
        Self::MissingElement,
        Self::InvalidValue,
        Self::ObservationCount,
        Self::InvalidGsrn,
        Self::UnsupportedResolution,
        Self::UnsupportedUnit,
        Self::MalformedCsv,
        Self::NotIntervalData,
        Self::TenantNotPrivate,
        Self::ProfilesOff,
        Self::UnknownGridArea,
        Self::UnsupportedCustomer,
    ];

    /// The code.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedXml => "malformed_xml",
            Self::NotEmif => "not_emif",
            Self::WrongNamespace => "wrong_namespace",
            Self::SeriesCount => "series_count",
            Self::TooLarge => "too_large",
            Self::MissingElement => "missing_element",
            Self::InvalidValue => "invalid_value",
            Self::ObservationCount => "observation_count",
            Self::InvalidGsrn => "invalid_gsrn",
            Self::UnsupportedResolution => "unsupported_resolution",
            Self::UnsupportedUnit => "unsupported_unit",
            Self::MalformedCsv => "malformed_csv",
            Self::NotIntervalData => "not_interval_data",
            Self::TenantNotPrivate => "tenant_not_private",
            Self::ProfilesOff => "profiles_off",
            Self::UnknownGridArea => "unknown_grid_area",
            Self::UnsupportedCustomer => "unsupported_customer",
        }
    }
}

impl From<&SeriesError> for RejectReason {
    fn from(e: &SeriesError) -> Self {
        match e {
            SeriesError::Missing { .. } => Self::MissingElement,
            SeriesError::Invalid { .. } => Self::InvalidValue,
            SeriesError::Count { .. }
            | SeriesError::Sequence { .. }
            | SeriesError::TooManyObservations { .. } => Self::ObservationCount,
            SeriesError::NotInterval { .. } => Self::NotIntervalData,
        }
    }
}

/// A refused series: its reason and a message that names the series by its place
/// and its `Identification` (never a value or the metering point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub message: String,
}

/// One `reading/v1` record: (key, JSON payload).
pub type Record = (String, String);

/// The `reading/v1` records of `series` for `tenant`, in sequence order.
///
/// # Errors
/// The series cannot be a reading (see the module's table); nothing of it is mapped.
pub fn records(series: &Series, tenant: &str) -> Result<Vec<Record>, Refusal> {
    let refuse = |reason: RejectReason, what: String| Refusal {
        reason,
        message: format!(
            "series {} ({}): {what}",
            series.number,
            clip(&series.identification)
        ),
    };
    let resolution = match series.resolution.as_str() {
        "PT1H" | "PT60M" => "PT1H",
        "PT15M" => "PT15M",
        other => {
            return Err(refuse(
                RejectReason::UnsupportedResolution,
                format!("resolution `{}` is not PT15M or PT1H", clip(other)),
            ))
        }
    };
    let (quantity, unit) = match series.unit.as_str() {
        "kWh" => ("electricity", "kWh"),
        "kvarh" => ("reactive_energy", "kvarh"),
        other => {
            return Err(refuse(
                RejectReason::UnsupportedUnit,
                format!("unit `{}` is not kWh or kvarh", clip(other)),
            ))
        }
    };
    let direction = if series.direction == "Out" {
        "import"
    } else {
        "export"
    };
    if let Err(e) = check_gsrn(&series.metering_point) {
        let what = match e {
            GsrnError::Shape => "the metering point is not 18 digits",
            GsrnError::CheckDigit => "the metering point's check digit is wrong",
        };
        return Err(refuse(RejectReason::InvalidGsrn, what.to_owned()));
    }
    let fixed = Fixed {
        tenant,
        meter: &series.metering_point,
        quantity,
        direction,
        resolution,
        unit,
        version: series.registration,
    };
    let mut out = Vec::with_capacity(series.observations.len());
    for o in &series.observations {
        let start = series.interval_start(o.sequence).ok_or_else(|| {
            refuse(
                RejectReason::InvalidValue,
                format!("observation {} has no interval", o.sequence),
            )
        })?;
        let quality = quality(o).ok_or_else(|| {
            refuse(
                RejectReason::InvalidValue,
                format!(
                    "observation {}: Estimated needs Quality 56 or 81, not `{}`",
                    o.sequence,
                    clip(o.quality.as_deref().unwrap_or(""))
                ),
            )
        })?;
        out.push(fixed.record(start, &o.value.normalize().to_string(), quality));
    }
    Ok(out)
}

/// The quality word of an observation (`None`: an estimate without a known code).
fn quality(o: &Observation) -> Option<&'static str> {
    match o.kind {
        Kind::Metered => Some("measured"),
        Kind::Estimated => match o.quality.as_deref().map(str::trim) {
            Some("56") => Some("estimated"),
            Some("81") => Some("final_estimate"),
            _ => None,
        },
        Kind::Temporary => Some("temporary"),
        Kind::Calculated => Some("calculated"),
    }
}

/// The fields a series' records share.
pub(crate) struct Fixed<'a> {
    pub tenant: &'a str,
    pub meter: &'a str,
    pub quantity: &'static str,
    pub direction: &'static str,
    pub resolution: &'static str,
    pub unit: &'static str,
    pub version: DateTime<Utc>,
}

impl Fixed<'_> {
    /// One record; `value` is exact decimal text.
    pub(crate) fn record(&self, start: DateTime<Utc>, value: &str, quality: &str) -> Record {
        let v = serde_json::json!({
            "schema": crate::decode::SCHEMA_V1,
            "tenant": self.tenant,
            "device_id": self.meter,
            "meter_id": self.meter,
            "quantity": self.quantity,
            "direction": self.direction,
            "start": start.to_rfc3339_opts(SecondsFormat::Secs, true),
            "resolution": self.resolution,
            "unit": self.unit,
            "quality": quality,
            "version": self.version.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let mut text = v.to_string();
        text.insert_str(text.len() - 1, &format!(",\"value\":{value}"));
        (self.meter.to_owned(), text)
    }
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}
