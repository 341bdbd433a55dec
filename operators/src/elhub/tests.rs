//! EMIF messages written by hand from the XSD's shapes (elhub/im-emif-files), one case per
//! test; every expected value is read off the fixture, never computed by the reader.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;

use super::emif::{read_billing_energy, EmifError, Header, Kind, Series, SeriesError};

const GSRN: &str = "707057500000000018";

/// One `PayloadEnergyTimeSeries`: `observations` are (kind element with its attributes,
/// value), numbered from 1.
fn series(resolution: &str, start: &str, end: &str, observations: &[(&str, &str)]) -> String {
    let mut out = format!(
        r#"<rsm:PayloadEnergyTimeSeries>
    <abie:Identification>0d7c1a52-6a0e-4f5c-9d3e-2f8b8d9e0001</abie:Identification>
    <abie:RegistrationDateTime>2026-10-26T06:34:12+01:00</abie:RegistrationDateTime>
    <abie:InsertDateTime>2026-10-26T06:35:00+01:00</abie:InsertDateTime>
    <abie:ObservationPeriodTimeSeriesPeriod>
      <abie:ResolutionDuration>{resolution}</abie:ResolutionDuration>
      <abie:Start>{start}</abie:Start>
      <abie:End>{end}</abie:End>
    </abie:ObservationPeriodTimeSeriesPeriod>
    <abie:ProductIncludedProductCharacteristics>
      <abie:Identification schemeAgencyIdentifier="9">8716867000030</abie:Identification>
      <abie:UnitType>kWh</abie:UnitType>
    </abie:ProductIncludedProductCharacteristics>
    <abie:MPDetailMeasurementMeteringPointCharacteristic>
      <abie:Direction>Out</abie:Direction>
    </abie:MPDetailMeasurementMeteringPointCharacteristic>
    <abie:MeteringPointUsedDomainLocation>
      <abie:Identification schemeAgencyIdentifier="9">{GSRN}</abie:Identification>
    </abie:MeteringPointUsedDomainLocation>
"#
    );
    for (i, (kind, value)) in observations.iter().enumerate() {
        let name = kind.split_whitespace().next().unwrap_or(kind);
        out.push_str(&format!(
            "    <abie:Observation Sequence=\"{}\"><abie:{kind}>{value}</abie:{name}></abie:Observation>\n",
            i + 1
        ));
    }
    out.push_str("  </rsm:PayloadEnergyTimeSeries>\n");
    out
}

fn message(series: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rsm:NotifyValidatedDataForBillingEnergy xmlns:rsm="urn:no:elhub:emif:metering:NotifyValidatedDataForBillingEnergy:v2" xmlns:abie="urn:no:elhub:emif:common:AggregatedBusinessInformationEntities:v2">
  <rsm:Header>
    <abie:Identification>5b0f1a52-6a0e-4f5c-9d3e-2f8b8d9e0000</abie:Identification>
    <abie:DocumentType listAgencyIdentifier="260">E66</abie:DocumentType>
    <abie:Creation>2026-10-26T07:00:00+01:00</abie:Creation>
    <abie:PhysicalSenderEnergyParty>
      <abie:Identification schemeAgencyIdentifier="9">9876543210123</abie:Identification>
    </abie:PhysicalSenderEnergyParty>
  </rsm:Header>
  <rsm:ProcessEnergyContext>
    <abie:EnergyBusinessProcess listAgencyIdentifier="89">BRS-NO-313</abie:EnergyBusinessProcess>
  </rsm:ProcessEnergyContext>
{}</rsm:NotifyValidatedDataForBillingEnergy>
"#,
        series.concat()
    )
}

type Read = (Vec<Header>, Vec<Result<Series, SeriesError>>);

fn read(xml: &str) -> Result<Read, EmifError> {
    let mut headers = Vec::new();
    let mut out = Vec::new();
    read_billing_energy(xml.as_bytes(), |h, s| {
        headers.push(h.clone());
        out.push(s);
    })?;
    Ok((headers, out))
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[test]
fn an_hourly_series_with_all_four_kinds_reads_exactly() {
    let xml = message(&[series(
        "PT1H",
        "2026-10-26T07:00:00+01:00",
        "2026-10-26T11:00:00+01:00",
        &[
            ("Metered", "1.250"),
            (
                "Estimated Quality=\"56\" ValidationCode=\"V001\" EstimationCode=\"E002\"",
                "0.9",
            ),
            ("Temporary", "12"),
            ("Calculated ImbalanceSettlement=\"true\"", "0.001"),
        ],
    )]);
    let (headers, series) = read(&xml).unwrap();
    assert_eq!(
        headers[0],
        Header {
            identification: Some("5b0f1a52-6a0e-4f5c-9d3e-2f8b8d9e0000".into()),
            document_type: Some("E66".into()),
            creation: Some("2026-10-26T07:00:00+01:00".into()),
            business_process: Some("BRS-NO-313".into()),
        }
    );
    let s = series[0].as_ref().unwrap();
    assert_eq!(s.number, 1);
    assert_eq!(s.identification, "0d7c1a52-6a0e-4f5c-9d3e-2f8b8d9e0001");
    assert_eq!(
        s.registration,
        utc(2026, 10, 26, 5, 34) + chrono::Duration::seconds(12)
    );
    assert_eq!(
        (s.start, s.end),
        (utc(2026, 10, 26, 6, 0), utc(2026, 10, 26, 10, 0))
    );
    assert_eq!((s.unit.as_str(), s.direction.as_str()), ("kWh", "Out"));
    assert_eq!(s.metering_point, GSRN);
    let seen: Vec<(u32, Kind, Decimal, Option<&str>)> = s
        .observations
        .iter()
        .map(|o| (o.sequence, o.kind, o.value, o.quality.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Kind::Metered, dec("1.250"), None),
            (2, Kind::Estimated, dec("0.9"), Some("56")),
            (3, Kind::Temporary, dec("12"), None),
            (4, Kind::Calculated, dec("0.001"), None),
        ]
    );
    assert_eq!(s.interval_start(3), Some(utc(2026, 10, 26, 8, 0)));
}

/// The autumn DST day in Oslo: local midnight to midnight is 25 hours, 100 quarters; the
/// spring day 23 hours. Observation 3 of the autumn day starts at 02:00 +02:00 (00:00 UTC)
/// and observation 4 at 02:00 +01:00 (01:00 UTC).
#[test]
fn dst_days_hold_23_or_25_hours_and_92_or_100_quarters() {
    let metered = |n: usize| vec![("Metered", "0.5"); n];
    let xml = message(&[
        series(
            "PT1H",
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00",
            &metered(25),
        ),
        series(
            "PT15M",
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00",
            &metered(100),
        ),
        series(
            "PT1H",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
            &metered(23),
        ),
        series(
            "PT60M",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
            &metered(92 / 4),
        ),
        series(
            "PT15M",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
            &metered(92),
        ),
    ]);
    let (_, series) = read(&xml).unwrap();
    let counts: Vec<usize> = series
        .iter()
        .map(|s| s.as_ref().unwrap().observations.len())
        .collect();
    assert_eq!(counts, [25, 100, 23, 23, 92]);
    let autumn = series[0].as_ref().unwrap();
    assert_eq!(autumn.interval_start(3), Some(utc(2026, 10, 25, 0, 0)));
    assert_eq!(autumn.interval_start(4), Some(utc(2026, 10, 25, 1, 0)));
    assert_eq!(autumn.interval_start(25), Some(utc(2026, 10, 25, 22, 0)));
}

/// A bad series is refused in its place, with its number, and the next one still reads.
#[test]
fn a_bad_series_is_refused_alone_and_the_message_goes_on() {
    let day = ("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00");
    let good = series(
        "PT1H",
        "2026-10-26T00:00:00+01:00",
        "2026-10-26T01:00:00+01:00",
        &[("Metered", "1")],
    );
    let xml = message(&[
        // 24 hours on a 25-hour day.
        series("PT1H", day.0, day.1, &vec![("Metered", "1"); 24]),
        series(
            "PT1H",
            "2026-10-26T00:00:00+01:00",
            "2026-10-26T01:00:00+01:00",
            &[("Metered", "1,5")],
        ),
        good.replace(
            "<abie:RegistrationDateTime>2026-10-26T06:34:12+01:00</abie:RegistrationDateTime>",
            "",
        ),
        good.replace("Sequence=\"1\"", "Sequence=\"2\""),
        good.replace(
            "<abie:Direction>Out</abie:Direction>",
            "<abie:Direction>Up</abie:Direction>",
        ),
        good.clone(),
    ]);
    let (_, series) = read(&xml).unwrap();
    assert_eq!(series.len(), 6);
    match &series[0] {
        Err(SeriesError::Count {
            number: 1,
            got: 24,
            expected: 25,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match &series[1] {
        Err(SeriesError::Invalid {
            number: 2,
            field: "Observation value",
            text,
        }) => {
            assert_eq!(text, "1,5");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &series[2],
        Err(SeriesError::Missing {
            number: 3,
            field: "RegistrationDateTime"
        })
    ));
    assert!(matches!(
        &series[3],
        Err(SeriesError::Sequence {
            number: 4,
            sequence: 2,
            count: 1
        })
    ));
    assert!(matches!(
        &series[4],
        Err(SeriesError::Invalid {
            number: 5,
            field: "Direction",
            ..
        })
    ));
    assert_eq!(series[5].as_ref().unwrap().number, 6);
    // Errors name the series and the element, never the metering point.
    for e in series.iter().filter_map(|s| s.as_ref().err()) {
        assert!(!e.to_string().contains(GSRN), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("series {}:", e.number())),
            "{e}"
        );
    }
}

/// What makes a whole message unreadable: not XML, not this message, the wrong namespace.
#[test]
fn a_message_that_is_not_e66_in_its_namespaces_is_refused_whole() {
    let good = message(&[series(
        "PT1H",
        "2026-10-26T00:00:00+01:00",
        "2026-10-26T01:00:00+01:00",
        &[("Metered", "1")],
    )]);
    assert!(read(&good).is_ok());
    assert!(matches!(
        read(&good[..good.len() / 2]),
        Err(EmifError::Xml { .. })
    ));
    let mismatched = good.replace("</abie:Direction>", "</abie:Directio>");
    assert!(matches!(read(&mismatched), Err(EmifError::Xml { .. })));
    assert!(matches!(read("<a/>"), Err(EmifError::NotExpected { .. })));
    let other_root = good.replace(
        "NotifyValidatedDataForBillingEnergy xmlns",
        "NotifyMeteringPointCharacteristics xmlns",
    );
    let other_root = other_root.replace(
        "</rsm:NotifyValidatedDataForBillingEnergy>",
        "</rsm:NotifyMeteringPointCharacteristics>",
    );
    match read(&other_root) {
        Err(EmifError::NotExpected { root, .. }) => {
            assert_eq!(root, "NotifyMeteringPointCharacteristics");
        }
        other => panic!("{other:?}"),
    }
    let v1 = good.replace(
        "AggregatedBusinessInformationEntities:v2",
        "AggregatedBusinessInformationEntities:v1",
    );
    match read(&v1) {
        Err(EmifError::Namespace {
            element, namespace, ..
        }) => {
            assert_eq!(element, "Identification");
            assert!(namespace.ends_with(":v1"), "{namespace}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(read(&message(&[])), Err(EmifError::NoSeries)));
}

// ---- the mapping to reading/v1 ----

use super::minside;
use super::readings::{records, RejectReason};

fn payloads(xml: &str) -> Vec<Result<Vec<serde_json::Value>, RejectReason>> {
    let (_, all) = read(xml).unwrap();
    all.into_iter()
        .map(|s| {
            let s = s.unwrap();
            records(&s, "oslo")
                .map(|rs| {
                    rs.iter()
                        .map(|(key, p)| {
                            assert_eq!(key, GSRN);
                            serde_json::from_str(p).unwrap()
                        })
                        .collect()
                })
                .map_err(|r| r.reason)
        })
        .collect()
}

#[test]
fn each_kind_maps_to_its_quality_and_out_is_import() {
    let xml = message(&[series(
        "PT1H",
        "2026-10-26T00:00:00+01:00",
        "2026-10-26T05:00:00+01:00",
        &[
            ("Metered", "1.5"),
            (
                r#"Estimated Quality="56" ValidationCode="V001" EstimationCode="E002""#,
                "2",
            ),
            (
                r#"Estimated Quality="81" ValidationCode="V001" EstimationCode="E002""#,
                "0.125",
            ),
            (
                r#"Temporary ValidationCode="V003" EstimationCode="E004""#,
                "3.000",
            ),
            (r#"Calculated ImbalanceSettlement="true""#, "4.25"),
        ],
    )]);
    let got = payloads(&xml).remove(0).unwrap();
    let want = [
        ("2026-10-25T23:00:00Z", "measured", "1.5"),
        ("2026-10-26T00:00:00Z", "estimated", "2"),
        ("2026-10-26T01:00:00Z", "final_estimate", "0.125"),
        ("2026-10-26T02:00:00Z", "temporary", "3"),
        ("2026-10-26T03:00:00Z", "calculated", "4.25"),
    ];
    assert_eq!(got.len(), want.len());
    for (v, (start, quality, value)) in got.iter().zip(want) {
        assert_eq!(v["schema"], "reading/v1");
        assert_eq!(v["tenant"], "oslo");
        assert_eq!(
            (v["meter_id"].as_str(), v["device_id"].as_str()),
            (Some(GSRN), Some(GSRN))
        );
        assert_eq!(v["quantity"], "electricity");
        assert_eq!(v["unit"], "kWh");
        assert_eq!(v["direction"], "import");
        assert_eq!(v["resolution"], "PT1H");
        assert_eq!(v["start"], start);
        assert_eq!(v["quality"], quality);
        assert_eq!(v["value"].to_string(), value);
        // RegistrationDateTime 2026-10-26T06:34:12+01:00
        assert_eq!(v["version"], "2026-10-26T05:34:12.000000Z");
    }
}

#[test]
fn kvarh_is_reactive_energy_in_is_export_and_pt60m_is_an_hour() {
    let xml = message(&[series(
        "PT60M",
        "2026-10-26T00:00:00+01:00",
        "2026-10-26T01:00:00+01:00",
        &[("Metered", "7")],
    )
    .replace("<abie:UnitType>kWh", "<abie:UnitType>kvarh")
    .replace("<abie:Direction>Out", "<abie:Direction>In")]);
    let v = &payloads(&xml).remove(0).unwrap()[0];
    assert_eq!(
        (v["quantity"].as_str(), v["unit"].as_str()),
        (Some("reactive_energy"), Some("kvarh"))
    );
    assert_eq!(v["direction"], "export");
    assert_eq!(v["resolution"], "PT1H");
}

#[test]
fn other_resolutions_units_and_bad_gsrns_are_refused_with_their_reason() {
    let one = |resolution: &str, end: &str| {
        series(
            resolution,
            "2026-10-26T00:00:00+01:00",
            end,
            &[("Metered", "1")],
        )
    };
    let xml = message(&[
        one("P1D", "2026-10-27T00:00:00+01:00"),
        one("PT30M", "2026-10-26T00:30:00+01:00"),
        one("PT5M", "2026-10-26T00:05:00+01:00"),
        one("PT1H", "2026-10-26T01:00:00+01:00")
            .replace("<abie:UnitType>kWh", "<abie:UnitType>MWh"),
        one("PT1H", "2026-10-26T01:00:00+01:00").replace(GSRN, "707057500000000019"),
        one("PT1H", "2026-10-26T01:00:00+01:00").replace(GSRN, "70705750000000001"),
        one("PT1H", "2026-10-26T01:00:00+01:00"),
    ]);
    let got: Vec<Option<RejectReason>> = payloads(&xml).into_iter().map(Result::err).collect();
    use RejectReason::*;
    assert_eq!(
        got,
        [
            Some(UnsupportedResolution),
            Some(UnsupportedResolution),
            Some(UnsupportedResolution),
            Some(UnsupportedUnit),
            Some(InvalidGsrn),
            Some(InvalidGsrn),
            None
        ]
    );
}

fn oslo() -> chrono_tz::Tz {
    chrono_tz::Europe::Oslo
}

#[test]
fn a_min_side_file_reads_its_local_times_and_decimal_commas() {
    let csv = "\u{feff}Fra;Til;KWH 60 Forbruk\n\
        01.10.2026 00:00;01.10.2026 01:00;1,234\n\
        01.10.2026 01:00;01.10.2026 02:00;0,5\n";
    let m = minside::read(
        csv,
        "meteringvalues-mp-707057500000000018-202610.csv",
        oslo(),
    )
    .unwrap();
    assert_eq!(m.metering_point, GSRN);
    assert_eq!((m.direction, m.resolution), ("import", "PT1H"));
    assert_eq!(
        m.rows,
        [
            (utc(2026, 9, 30, 22, 0), dec("1.234")),
            (utc(2026, 9, 30, 23, 0), dec("0.5"))
        ]
    );
    let version = utc(2026, 11, 2, 12, 0);
    let r = m.records("oslo", version);
    let v: serde_json::Value = serde_json::from_str(&r[0].1).unwrap();
    assert_eq!(v["value"].to_string(), "1.234");
    assert_eq!(v["version"], "2026-11-02T12:00:00.000000Z");
    assert_eq!(v["quality"], "measured");
}

#[test]
fn the_autumn_day_repeats_two_oclock_first_in_summer_time() {
    // 25 hours of 25.10.2026 written as the Min side writes them: 02:00 twice.
    let mut csv = String::from("Fra;Til;KWH 60 Forbruk;Målepunkt-ID\n");
    let hours = [
        0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    ];
    for (i, h) in hours.iter().enumerate() {
        let to = if *h == 23 {
            "26.10.2026 00:00".to_owned()
        } else {
            format!("25.10.2026 {:02}:00", h + 1)
        };
        csv.push_str(&format!("25.10.2026 {h:02}:00;{to};{i},0;{GSRN}\n"));
    }
    let m = minside::read(&csv, "export.csv", oslo()).unwrap();
    assert_eq!(m.rows.len(), 25);
    // 00:00 +02:00 is 22:00Z; every row one UTC hour after the one before.
    for (i, (start, value)) in m.rows.iter().enumerate() {
        assert_eq!(
            *start,
            utc(2026, 10, 24, 22, 0) + chrono::Duration::hours(i as i64)
        );
        assert_eq!(*value, Decimal::from(i));
    }
}

#[test]
fn min_side_files_that_cannot_be_read_are_refused() {
    let good_head = "Fra;Til;KWH 60 Forbruk\n";
    let cases = [
        ("", RejectReason::MalformedCsv),
        ("a,b,c\n1,2,3\n", RejectReason::MalformedCsv),
        (
            "Fra;Til;KWH 60 Forbruk\n01.10.2026 00:00;01.10.2026 01:00;abc\n",
            RejectReason::InvalidValue,
        ),
        (
            "Fra;Til;KWH 60 Forbruk\n29.03.2026 02:00;29.03.2026 03:00;1\n",
            RejectReason::MalformedCsv,
        ),
        (
            "Fra;Til;KWH 60 Forbruk\n01.10.2026 00:00;01.10.2026 00:30;1\n",
            RejectReason::UnsupportedResolution,
        ),
    ];
    for (csv, reason) in cases {
        let got = minside::read(csv, "mp-707057500000000018.csv", oslo()).unwrap_err();
        assert_eq!(got.reason, reason, "{csv:?}: {}", got.message);
    }
    let ok = format!("{good_head}01.10.2026 00:00;01.10.2026 01:00;1\n");
    let no_mp = minside::read(&ok, "export.csv", oslo()).unwrap_err();
    assert_eq!(no_mp.reason, RejectReason::MalformedCsv);
    let bad_mp = minside::read(&ok, "mp-707057500000000019.csv", oslo()).unwrap_err();
    assert_eq!(bad_mp.reason, RejectReason::InvalidGsrn);
}

#[test]
fn a_written_message_reads_back() {
    use super::write::{billing_energy, SeriesOut};
    let s = SeriesOut {
        identification: "s-1".into(),
        registration: utc(2026, 10, 26, 5, 0),
        resolution: "PT15M".into(),
        start: utc(2026, 10, 25, 23, 0),
        end: utc(2026, 10, 25, 23, 30),
        unit: "kWh".into(),
        direction: "Out".into(),
        metering_point: GSRN.into(),
        observations: vec![
            (Kind::Metered, None, dec("0.25")),
            (Kind::Estimated, Some("81"), dec("0.5")),
        ],
    };
    let xml = billing_energy("m-1", utc(2026, 10, 26, 6, 0), &[s]);
    let (headers, all) = read(&xml).unwrap();
    assert_eq!(headers[0].identification.as_deref(), Some("m-1"));
    let got = all.into_iter().next().unwrap().unwrap();
    assert_eq!(got.start, utc(2026, 10, 25, 23, 0));
    assert_eq!(got.observations[1].quality.as_deref(), Some("81"));
    assert_eq!(got.observations[1].value, dec("0.5"));
}
