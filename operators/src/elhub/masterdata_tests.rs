//! Master data and `CollectedData` messages written by hand from the XSD's shapes and
//! Elhub's published examples (elhub/im-emif-files); every expected value is read off
//! the fixture and the code lists, never computed by the mapping.

use std::collections::BTreeMap;

use super::emif::{read_billing_energy, EmifError, SeriesError};
use super::masterdata::{profile, read_characteristics, Characteristics, GridArea, ProfileRules};
use super::readings::{Refusal, RejectReason};
use crate::economics::hour::Scheme;
use crate::economics::PriceArea;

const AREA: &str = "50Y0000000000123";
const GLN: &str = "7080000000012";

/// The personal data Elhub's example puts in a payload: none of it may come out.
const PERSONAL: [&str; 7] = [
    "Kirkegt.",
    "Trondheim",
    "01018035871",
    "Nordmann",
    "ola.nordmann@norge.no",
    "0087345763",
    "Vaktmester",
];

/// One `PayloadMasterdataMPEvent` with the example's personal data; `taxation` is the
/// inside of `MPTaxationProfile`, `extra` goes after the grid area.
fn payload(
    meter: &str,
    start: &str,
    coordinates: Option<(&str, &str)>,
    taxation: &str,
    extra: &str,
) -> String {
    let position = coordinates.map_or_else(String::new, |(lat, lon)| {
        format!(
            "<abie:MPPositionMeteringPointGeographicalCoordinate><abie:Latitude>{lat}</abie:Latitude><abie:Longitude>{lon}</abie:Longitude></abie:MPPositionMeteringPointGeographicalCoordinate>"
        )
    });
    format!(
        r#"<rsm:PayloadMasterdataMPEvent>
    <abie:StartOfOccurrence>{start}</abie:StartOfOccurrence>
    <abie:MeteringPointUsedDomainLocation><abie:Identification schemeAgencyIdentifier="9">{meter}</abie:Identification></abie:MeteringPointUsedDomainLocation>
    <abie:MPAddressMeteringPointAddress><abie:StreetName>Kirkegt.</abie:StreetName><abie:BuildingNumber>45</abie:BuildingNumber><abie:Postcode>7010</abie:Postcode><abie:CityName>Trondheim</abie:CityName></abie:MPAddressMeteringPointAddress>
    {position}
    <abie:ConsumerInvolvedCustomerParty>
      <abie:Identification schemeAgencyIdentifier="Z01">01018035871</abie:Identification>
      <abie:GivenName>Ola</abie:GivenName><abie:FamilyName>Nordmann</abie:FamilyName>
      <abie:Communication><abie:CommunicationChannel>Email</abie:CommunicationChannel><abie:CompleteNumber>ola.nordmann@norge.no</abie:CompleteNumber><abie:Description>Vaktmester</abie:Description></abie:Communication>
    </abie:ConsumerInvolvedCustomerParty>
    <abie:MeteringGridAreaUsedDomainLocation><abie:Identification schemeAgencyIdentifier="305">{AREA}</abie:Identification></abie:MeteringGridAreaUsedDomainLocation>
    {extra}
    <abie:MeteringInstallationMeterFacility><abie:MeterIdentification>0087345763</abie:MeterIdentification></abie:MeteringInstallationMeterFacility>
    <abie:MPTaxationProfile>{taxation}</abie:MPTaxationProfile>
  </rsm:PayloadMasterdataMPEvent>
"#
    )
}

fn characteristics(payloads: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rsm:NotifyMeteringPointCharacteristics xmlns:rsm="urn:no:elhub:emif:masterdata:NotifyMeteringPointCharacteristics:v2" xmlns:abie="urn:no:elhub:emif:common:AggregatedBusinessInformationEntities:v2">
  <rsm:Header>
    <abie:Identification>9c3e4567-e89b-12d3-a456-426675643591</abie:Identification>
    <abie:DocumentType listAgencyIdentifier="6">21</abie:DocumentType>
    <abie:Creation>2026-03-02T09:30:47+01:00</abie:Creation>
  </rsm:Header>
  <rsm:ProcessEnergyContext><abie:EnergyBusinessProcess listAgencyIdentifier="89">BRS-NO-303</abie:EnergyBusinessProcess></rsm:ProcessEnergyContext>
{}</rsm:NotifyMeteringPointCharacteristics>
"#,
        payloads.concat()
    )
}

fn read(xml: &str) -> Result<Vec<Characteristics>, EmifError> {
    let mut out = Vec::new();
    read_characteristics(xml.as_bytes(), |_, p| out.push(p))?;
    Ok(out)
}

fn areas() -> BTreeMap<String, GridArea> {
    BTreeMap::from([(
        AREA.to_owned(),
        GridArea {
            price_area: PriceArea::No3,
            grid_company_gln: GLN.to_owned(),
        },
    )])
}

/// Each payload's profile as JSON, or its refusal's reason.
fn profiles(xml: &str, scheme: Scheme) -> Vec<Result<serde_json::Value, RejectReason>> {
    let areas = areas();
    let rules = ProfileRules {
        tenant: "acme",
        timezone: chrono_tz::Europe::Oslo,
        grid_areas: &areas,
        household_scheme: scheme,
    };
    let version = "2026-03-02T08:30:47Z".parse().unwrap();
    read(xml)
        .unwrap()
        .iter()
        .map(|p| {
            profile(p, version, &rules)
                .map(|(key, text)| {
                    for word in PERSONAL {
                        assert!(!text.contains(word), "{word} in {text}");
                    }
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["meter_id"].as_str(), Some(key.as_str()));
                    v
                })
                .map_err(|Refusal { reason, message }| {
                    for word in PERSONAL {
                        assert!(!message.contains(word), "{word} in {message}");
                    }
                    reason
                })
        })
        .collect()
}

const HOUSEHOLD: &str = "<abie:VATCode>S</abie:VATCode><abie:ElFee>100</abie:ElFee><abie:ConsumptionCode>35</abie:ConsumptionCode>";

#[test]
fn a_household_payload_becomes_a_profile_without_its_personal_data() {
    let xml = characteristics(&[payload(
        "707057500000000018",
        "2026-03-01T00:00:00+01:00",
        Some(("61.87654", "11.98763")),
        HOUSEHOLD,
        "",
    )]);
    let got = profiles(&xml, Scheme::Norgespris);
    let expected = serde_json::json!({
        "schema": "meter-profile/v1",
        "tenant": "acme",
        "meter_id": "707057500000000018",
        "valid_from": "2026-03-01",
        "price_area": "NO3",
        "grid_company_gln": GLN,
        "customer_group": "household",
        "tax_zone": "standard",
        "scheme": "norgespris",
        "latitude": 61.88,
        "longitude": 11.99,
        "version": "2026-03-02T08:30:47.000000Z",
    });
    assert_eq!(got, vec![Ok(expected)]);
}

#[test]
fn valid_from_is_the_local_date_and_coordinates_round_half_to_even() {
    // 23:00Z on the last day of February is 1 March in Oslo; 59.125 rounds to 59.12.
    let xml = characteristics(&[payload(
        "707057500000000018",
        "2026-02-28T23:00:00Z",
        Some(("59.125", "10.755")),
        HOUSEHOLD,
        "",
    )]);
    let got = profiles(&xml, Scheme::Stromstotte);
    let v = got[0].as_ref().unwrap();
    assert_eq!(v["valid_from"], "2026-03-01");
    assert_eq!(v["latitude"].to_string(), "59.12");
    assert_eq!(v["longitude"].to_string(), "10.76");
    assert_eq!(v["scheme"], "stromstotte");
    let without = characteristics(&[payload(
        "707057500000000018",
        "2026-03-01T00:00:00+01:00",
        None,
        HOUSEHOLD,
        "",
    )]);
    let v = profiles(&without, Scheme::Stromstotte).remove(0).unwrap();
    assert!(
        v.get("latitude").is_none() && v.get("longitude").is_none(),
        "{v}"
    );
}

#[test]
fn the_taxation_profile_gives_the_tax_zone() {
    let tax = |vat: &str, fee: &str| {
        format!("<abie:VATCode>{vat}</abie:VATCode>{fee}<abie:ConsumptionCode>35</abie:ConsumptionCode>")
    };
    let cases = [
        (tax("S", "<abie:ElFee>100</abie:ElFee>"), Ok("standard")),
        (tax("S", ""), Ok("standard")),
        (tax("E", "<abie:ElFee>100</abie:ElFee>"), Ok("north")),
        (tax("E", "<abie:ElFee>0</abie:ElFee>"), Ok("finnmark")),
        (tax("E", "<abie:ElFee>0.00</abie:ElFee>"), Ok("finnmark")),
        (
            tax("S", "<abie:ElFee>0</abie:ElFee>"),
            Err(RejectReason::UnsupportedCustomer),
        ),
        (tax("X", ""), Err(RejectReason::InvalidValue)),
        (
            tax("E", "<abie:ElFee>lots</abie:ElFee>"),
            Err(RejectReason::InvalidValue),
        ),
        (
            "<abie:ConsumptionCode>35</abie:ConsumptionCode>".to_owned(),
            Err(RejectReason::MissingElement),
        ),
    ];
    for (taxation, expected) in cases {
        let xml = characteristics(&[payload(
            "707057500000000018",
            "2026-03-01T00:00:00+01:00",
            None,
            &taxation,
            "",
        )]);
        let got = profiles(&xml, Scheme::Stromstotte).remove(0);
        let zone = got.map(|v| v["tax_zone"].as_str().unwrap().to_owned());
        assert_eq!(zone.as_deref().map_err(|r| *r), expected, "{taxation}");
    }
}

#[test]
fn the_consumption_code_gives_the_customer_group_and_only_homes_get_support() {
    let code = |c: &str| {
        format!("<abie:VATCode>S</abie:VATCode><abie:ConsumptionCode>{c}</abie:ConsumptionCode>")
    };
    let yearly = |kwh: &str| {
        format!("<abie:AnnualPeriodEstimatedMetrics><abie:Total>{kwh}</abie:Total></abie:AnnualPeriodEstimatedMetrics>")
    };
    let cases = [
        (code("35"), String::new(), Ok(("household", "stromstotte"))),
        (code("36"), String::new(), Ok(("cabin", "none"))),
        (code("19"), yearly("27000"), Ok(("small_business", "none"))),
        (code("1a"), String::new(), Ok(("small_business", "none"))),
        (code("29a"), String::new(), Ok(("small_business", "none"))),
        (
            code("19"),
            yearly("99999.9"),
            Ok(("small_business", "none")),
        ),
        (
            code("19"),
            yearly("100000"),
            Err(RejectReason::UnsupportedCustomer),
        ),
        (
            code("35"),
            yearly("150000"),
            Ok(("household", "stromstotte")),
        ),
        (code("37"), String::new(), Err(RejectReason::InvalidValue)),
        (code("0"), String::new(), Err(RejectReason::InvalidValue)),
        (code("35a"), String::new(), Err(RejectReason::InvalidValue)),
        (
            "<abie:VATCode>S</abie:VATCode>".to_owned(),
            String::new(),
            Err(RejectReason::MissingElement),
        ),
    ];
    for (taxation, extra, expected) in cases {
        let xml = characteristics(&[payload(
            "707057500000000018",
            "2026-03-01T00:00:00+01:00",
            None,
            &taxation,
            &extra,
        )]);
        let got = profiles(&xml, Scheme::Stromstotte).remove(0);
        let pair = got.map(|v| {
            (
                v["customer_group"].as_str().unwrap().to_owned(),
                v["scheme"].as_str().unwrap().to_owned(),
            )
        });
        let pair = pair
            .as_ref()
            .map(|(g, s)| (g.as_str(), s.as_str()))
            .map_err(|r| *r);
        assert_eq!(pair, expected, "{taxation} {extra}");
    }
}

#[test]
fn a_bad_payload_is_refused_alone() {
    let good = payload(
        "707057500000000018",
        "2026-03-01T00:00:00+01:00",
        None,
        HOUSEHOLD,
        "",
    );
    let bad_check_digit = payload(
        "707057500000000019",
        "2026-03-01T00:00:00+01:00",
        None,
        HOUSEHOLD,
        "",
    );
    let other_area = good.replace(AREA, "50Y0000000000999");
    let no_time = good.replace("2026-03-01T00:00:00+01:00", "1 March");
    let half_position = payload(
        "707057500000000018",
        "2026-03-01T00:00:00+01:00",
        Some(("61.5", "11.5")),
        HOUSEHOLD,
        "",
    )
    .replace("<abie:Longitude>11.5</abie:Longitude>", "");
    let xml = characteristics(&[good, bad_check_digit, other_area, no_time, half_position]);
    let reasons: Vec<_> = profiles(&xml, Scheme::Stromstotte)
        .into_iter()
        .map(|r| r.map(|v| v["meter_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            Ok("707057500000000018".to_owned()),
            Err(RejectReason::InvalidGsrn),
            Err(RejectReason::UnknownGridArea),
            Err(RejectReason::InvalidValue),
            Err(RejectReason::InvalidValue),
        ]
    );
}

#[test]
fn each_reader_refuses_the_other_messages() {
    let master = characteristics(&[payload(
        "707057500000000018",
        "2026-03-01T00:00:00+01:00",
        None,
        HOUSEHOLD,
        "",
    )]);
    match read_billing_energy(master.as_bytes(), |_, _| {}) {
        Err(EmifError::NotExpected { root, .. }) => {
            assert_eq!(root, "NotifyMeteringPointCharacteristics")
        }
        other => panic!("{other:?}"),
    }
    let values = collected(&[interval_series()]);
    match read(&values) {
        Err(EmifError::NotExpected { root, .. }) => assert_eq!(root, "CollectedData"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        read(&characteristics(&[])),
        Err(EmifError::NoSeries)
    ));
}

fn collected(series: &[String]) -> String {
    format!(
        r#"<rsm:CollectedData xmlns:rsm="urn:no:elhub:emif:metering:CollectedData:v2" xmlns:abie="urn:no:elhub:emif:common:AggregatedBusinessInformationEntities:v2">
  <rsm:Header><abie:Identification>1a3e4567-e89b-12d3-a456-426655440000</abie:Identification><abie:DocumentType listAgencyIdentifier="260">E13</abie:DocumentType></rsm:Header>
  <rsm:ProcessEnergyContext><abie:EnergyBusinessProcess listAgencyIdentifier="89">BRS-NO-313</abie:EnergyBusinessProcess></rsm:ProcessEnergyContext>
{}</rsm:CollectedData>"#,
        series.concat()
    )
}

fn interval_series() -> String {
    r#"<rsm:PayloadEnergyTimeSeries>
    <abie:Identification>2b6d08b8-1ad7-4e90-9391-d2043592d5ff</abie:Identification>
    <abie:RegistrationDateTime>2026-05-03T04:34:16+02:00</abie:RegistrationDateTime>
    <abie:ObservationPeriodTimeSeriesPeriod><abie:ResolutionDuration>PT15M</abie:ResolutionDuration><abie:Start>2026-05-02T00:00:00+02:00</abie:Start><abie:End>2026-05-02T00:30:00+02:00</abie:End></abie:ObservationPeriodTimeSeriesPeriod>
    <abie:ProductIncludedProductCharacteristics><abie:Identification schemeAgencyIdentifier="9">8716867000030</abie:Identification><abie:UnitType>kWh</abie:UnitType></abie:ProductIncludedProductCharacteristics>
    <abie:MPDetailMeasurementMeteringPointCharacteristic><abie:Direction>In</abie:Direction></abie:MPDetailMeasurementMeteringPointCharacteristic>
    <abie:MeteringPointUsedDomainLocation><abie:Identification schemeAgencyIdentifier="9">707057500000000018</abie:Identification></abie:MeteringPointUsedDomainLocation>
    <abie:Observation Sequence="1"><abie:Metered>10000.456</abie:Metered></abie:Observation>
    <abie:Observation Sequence="2"><abie:Estimated Quality="56" EstimationCode="E006" ValidationCode="V002">10005</abie:Estimated></abie:Observation>
  </rsm:PayloadEnergyTimeSeries>
"#
    .to_owned()
}

#[test]
fn collected_data_reads_its_interval_series_and_refuses_meter_reads() {
    let meter_index = r#"<rsm:PayloadEnergyTimeSeries>
    <abie:Identification>3c3e4567-e89b-12d3-a456-426655440001</abie:Identification>
    <abie:RegistrationDateTime>2026-05-02T09:23:15+02:00</abie:RegistrationDateTime>
    <abie:ObservationPeriodTimeSeriesPeriod><abie:Start>2026-05-02T00:00:00+02:00</abie:Start></abie:ObservationPeriodTimeSeriesPeriod>
    <abie:MeteringPointUsedDomainLocation><abie:Identification schemeAgencyIdentifier="9">707057500000000018</abie:Identification></abie:MeteringPointUsedDomainLocation>
    <abie:ProfiledObservation><abie:MeterIndex MeterReadReasonCode="1">100</abie:MeterIndex></abie:ProfiledObservation>
  </rsm:PayloadEnergyTimeSeries>
"#;
    let yearly = meter_index.replace(
        r#"<abie:ProfiledObservation><abie:MeterIndex MeterReadReasonCode="1">100</abie:MeterIndex></abie:ProfiledObservation>"#,
        "<abie:AnnualPeriodEstimatedMetrics><abie:Total>27000</abie:Total></abie:AnnualPeriodEstimatedMetrics>",
    );
    let xml = collected(&[interval_series(), meter_index.to_owned(), yearly]);
    let mut got = Vec::new();
    let summary = read_billing_energy(xml.as_bytes(), |_, s| got.push(s)).unwrap();
    assert_eq!(summary.document.kind(), "collected_data");
    assert_eq!(summary.series, 3);
    let first = got[0].as_ref().unwrap();
    assert_eq!(first.resolution, "PT15M");
    assert_eq!(first.direction, "In");
    assert_eq!(
        first
            .observations
            .iter()
            .map(|o| o.value.to_string())
            .collect::<Vec<_>>(),
        ["10000.456", "10005"]
    );
    assert_eq!(got[1], Err(SeriesError::NotInterval { number: 2 }));
    assert_eq!(got[2], Err(SeriesError::NotInterval { number: 3 }));
    assert_eq!(
        RejectReason::from(&SeriesError::NotInterval { number: 2 }).as_str(),
        "not_interval_data"
    );
}
