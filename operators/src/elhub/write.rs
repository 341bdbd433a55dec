//! E66 messages written, for `meterline simulate --format emif` (so that the adapter can
//! be tried without Elhub access). The shape is the one [`super::emif`] reads; times are
//! written in Norwegian local time with their offset, as Elhub writes them.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Europe::Oslo;
use rust_decimal::Decimal;

use super::emif::{Kind, NS_ABIE, NS_MESSAGE};

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
