//! E66 and master data messages written, for `meterline simulate --format emif` (so that
//! the adapter can be tried without Elhub access). The shapes are the ones [`super::emif`]
//! and [`super::masterdata`] read; times are written in Norwegian local time with their
//! offset, as Elhub writes them.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Europe::Oslo;
use rust_decimal::Decimal;

use super::emif::{Kind, NS_ABIE, NS_CHARACTERISTICS, NS_MESSAGE};

/// The product code of active energy (kWh); reactive energy (kvarh) is `...047`.
pub const ACTIVE_ENERGY: &str = "8716867000030";
/// The product code of reactive energy (kvarh).
pub const REACTIVE_ENERGY: &str = "8716867000047";

/// One series to write.
#[derive(Debug, Clone)]
pub struct SeriesOut {
    pub identification: String,
    pub registration: DateTime<Utc>,
    /// `PT1H`, `PT15M`, ...
    pub resolution: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `kWh` or `kvarh`.
    pub unit: String,
    /// `Out` (consumption) or `In` (production).
    pub direction: String,
    pub metering_point: String,
    /// (kind, the `Quality` of an estimate, value), numbered from 1.
    pub observations: Vec<(Kind, Option<&'static str>, Decimal)>,
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Oslo)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A `NotifyValidatedDataForBillingEnergy` message of `series`, identified by `id`,
/// created at `created`.
#[must_use]
pub fn billing_energy(id: &str, created: DateTime<Utc>, series: &[SeriesOut]) -> String {
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rsm:NotifyValidatedDataForBillingEnergy xmlns:rsm="{NS_MESSAGE}" xmlns:abie="{NS_ABIE}">
  <rsm:Header>
    <abie:Identification>{id}</abie:Identification>
    <abie:DocumentType listAgencyIdentifier="260">E66</abie:DocumentType>
    <abie:Creation>{}</abie:Creation>
  </rsm:Header>
  <rsm:ProcessEnergyContext>
    <abie:EnergyBusinessProcess listAgencyIdentifier="89">BRS-NO-313</abie:EnergyBusinessProcess>
  </rsm:ProcessEnergyContext>
"#,
        local(created)
    );
    for s in series {
        write_series(&mut out, s);
    }
    out.push_str("</rsm:NotifyValidatedDataForBillingEnergy>\n");
    out
}

fn write_series(out: &mut String, s: &SeriesOut) {
    let product = if s.unit == "kvarh" {
        REACTIVE_ENERGY
    } else {
        ACTIVE_ENERGY
    };
    let _ = write!(
        out,
        r#"  <rsm:PayloadEnergyTimeSeries>
    <abie:Identification>{}</abie:Identification>
    <abie:RegistrationDateTime>{}</abie:RegistrationDateTime>
    <abie:InsertDateTime>{}</abie:InsertDateTime>
    <abie:ObservationPeriodTimeSeriesPeriod>
      <abie:ResolutionDuration>{}</abie:ResolutionDuration>
      <abie:Start>{}</abie:Start>
      <abie:End>{}</abie:End>
    </abie:ObservationPeriodTimeSeriesPeriod>
    <abie:ProductIncludedProductCharacteristics>
      <abie:Identification schemeAgencyIdentifier="9">{product}</abie:Identification>
      <abie:UnitType>{}</abie:UnitType>
    </abie:ProductIncludedProductCharacteristics>
    <abie:MPDetailMeasurementMeteringPointCharacteristic>
      <abie:Direction>{}</abie:Direction>
    </abie:MPDetailMeasurementMeteringPointCharacteristic>
    <abie:MeteringPointUsedDomainLocation>
      <abie:Identification schemeAgencyIdentifier="9">{}</abie:Identification>
    </abie:MeteringPointUsedDomainLocation>
"#,
        s.identification,
        local(s.registration),
        local(s.registration),
        s.resolution,
        local(s.start),
        local(s.end),
        s.unit,
        s.direction,
        s.metering_point,
    );
    for (i, (kind, quality, value)) in s.observations.iter().enumerate() {
        let element = match (kind, quality) {
            (Kind::Metered, _) => "Metered".to_owned(),
            (Kind::Estimated, q) => format!(
                r#"Estimated Quality="{}" ValidationCode="V001" EstimationCode="E002""#,
                q.unwrap_or("56")
            ),
            (Kind::Temporary, _) => "Temporary".to_owned(),
            (Kind::Calculated, _) => r#"Calculated ImbalanceSettlement="true""#.to_owned(),
        };
        let name = element.split(' ').next().unwrap_or("Metered");
        let _ = writeln!(
            out,
            r#"    <abie:Observation Sequence="{}"><abie:{element}>{value}</abie:{name}></abie:Observation>"#,
            i + 1
        );
    }
    out.push_str("  </rsm:PayloadEnergyTimeSeries>\n");
}

/// One master data payload to write (no personal data: the generator has none).
#[derive(Debug, Clone)]
pub struct ProfileOut {
    pub metering_point: String,
    pub start: DateTime<Utc>,
    /// The grid area's EIC code.
    pub grid_area: String,
    /// (latitude, longitude) as decimal text.
    pub coordinates: Option<(String, String)>,
    /// `S` or `E`.
    pub vat_code: &'static str,
    /// `ElFee`: `100`, or `0` for no consumption tax.
    pub el_fee: &'static str,
    /// Elhub's consumption code (`35` households, `36` cabins, ...).
    pub consumption_code: &'static str,
}

/// A `NotifyMeteringPointCharacteristics` message of `payloads`, identified by `id`,
/// created at `created`.
#[must_use]
pub fn characteristics(id: &str, created: DateTime<Utc>, payloads: &[ProfileOut]) -> String {
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rsm:NotifyMeteringPointCharacteristics xmlns:rsm="{NS_CHARACTERISTICS}" xmlns:abie="{NS_ABIE}">
  <rsm:Header>
    <abie:Identification>{id}</abie:Identification>
    <abie:DocumentType listAgencyIdentifier="6">21</abie:DocumentType>
    <abie:Creation>{}</abie:Creation>
  </rsm:Header>
  <rsm:ProcessEnergyContext>
    <abie:EnergyBusinessProcess listAgencyIdentifier="89">BRS-NO-303</abie:EnergyBusinessProcess>
  </rsm:ProcessEnergyContext>
"#,
        local(created)
    );
    for p in payloads {
        let position = p.coordinates.as_ref().map_or_else(String::new, |(lat, lon)| {
            format!(
                "\n    <abie:MPPositionMeteringPointGeographicalCoordinate><abie:Latitude>{lat}</abie:Latitude><abie:Longitude>{lon}</abie:Longitude></abie:MPPositionMeteringPointGeographicalCoordinate>"
            )
        });
        let _ = write!(
            out,
            r#"  <rsm:PayloadMasterdataMPEvent>
    <abie:StartOfOccurrence>{}</abie:StartOfOccurrence>
    <abie:MeteringPointUsedDomainLocation><abie:Identification schemeAgencyIdentifier="9">{}</abie:Identification></abie:MeteringPointUsedDomainLocation>{position}
    <abie:MeteringGridAreaUsedDomainLocation><abie:Identification schemeAgencyIdentifier="305">{}</abie:Identification></abie:MeteringGridAreaUsedDomainLocation>
    <abie:MPTaxationProfile><abie:VATCode>{}</abie:VATCode><abie:ElFee>{}</abie:ElFee><abie:ConsumptionCode>{}</abie:ConsumptionCode></abie:MPTaxationProfile>
  </rsm:PayloadMasterdataMPEvent>
"#,
            local(p.start),
            p.metering_point,
            p.grid_area,
            p.vat_code,
            p.el_fee,
            p.consumption_code,
        );
    }
    out.push_str("</rsm:NotifyMeteringPointCharacteristics>\n");
    out
}
