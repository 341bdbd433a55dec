//! The worked examples of the domain notes, and hand-built documents. Every expected value is
//! written out from the rules (worked by hand in the comments), never computed by the code
//! under test.

use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;

use super::capacity::{self, DemandInput, HourKwh, Step, Steps};
use super::entsoe::{parse_a44, EntsoeError};
use super::hour::{cost_of_hour, ore_per_kwh, HourInput, Scheme};
use super::rates::{Rate, RateRow, RateTable, TaxZone};
use super::PriceArea;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn day(y: i32, m: u32, dd: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, dd).unwrap()
}

// ---- rates ----

#[test]
fn the_rates_of_a_day_are_the_ones_enacted_for_it() {
    let t = RateTable::defaults();
    let tax = |zone, date| t.value(Rate::ConsumptionTax, zone, date);
    assert_eq!(tax(TaxZone::Standard, day(2024, 3, 31)), Some(d("9.51")));
    assert_eq!(tax(TaxZone::Standard, day(2024, 4, 1)), Some(d("16.44")));
    assert_eq!(tax(TaxZone::Standard, day(2025, 9, 30)), Some(d("16.93")));
    // The mid-year cut of 1 October 2025.
    assert_eq!(tax(TaxZone::Standard, day(2025, 10, 1)), Some(d("12.53")));
    assert_eq!(tax(TaxZone::Standard, day(2026, 6, 1)), Some(d("7.13")));
    assert_eq!(tax(TaxZone::North, day(2026, 6, 1)), Some(d("7.13")));
    assert_eq!(tax(TaxZone::Finnmark, day(2026, 6, 1)), Some(d("0")));
    // Nothing is known for 2027 yet: missing, not zero.
    assert_eq!(tax(TaxZone::Standard, day(2027, 1, 1)), None);

    let on = t.on(TaxZone::North, day(2026, 2, 1));
    assert_eq!(on.vat_share, Some(d("0")));
    assert_eq!(on.enova_ore, Some(d("1.0")));
    assert_eq!(on.support_threshold_ore, Some(d("77")));
    assert_eq!(on.support_share, Some(d("0.9")));
    assert_eq!(on.norgespris_ore, Some(d("40")));
    assert_eq!(
        t.on(TaxZone::Standard, day(2025, 9, 30)).norgespris_ore,
        None
    );
    assert_eq!(
        t.on(TaxZone::Standard, day(2025, 12, 31))
            .support_threshold_ore,
        Some(d("75"))
    );
    assert_eq!(
        t.on(TaxZone::Standard, day(2026, 12, 31)).norgespris_ore,
        Some(d("40"))
    );
    assert_eq!(
        t.on(TaxZone::Standard, day(2027, 1, 1)).norgespris_ore,
        None
    );
}

#[test]
fn a_rate_added_later_replaces_the_default_from_its_start() {
    let mut t = RateTable::defaults();
    t.extend([RateRow {
        rate: Rate::ConsumptionTax,
        zone: None,
        valid_from: day(2026, 7, 1),
        valid_to: None,
        value: d("5.00"),
        source: "a change mid-year".into(),
    }]);
    assert_eq!(
        t.value(Rate::ConsumptionTax, TaxZone::Standard, day(2026, 6, 30)),
        Some(d("7.13"))
    );
    assert_eq!(
        t.value(Rate::ConsumptionTax, TaxZone::Standard, day(2026, 7, 1)),
        Some(d("5.00"))
    );
    // A zone's own row still wins over a row for every zone.
    assert_eq!(
        t.value(Rate::ConsumptionTax, TaxZone::Finnmark, day(2026, 7, 1)),
        Some(d("0"))
    );
}

// ---- one hour ----

fn rates_2026(zone: TaxZone) -> super::rates::RatesOnDay {
    RateTable::defaults().on(zone, day(2026, 1, 15))
}

/// DOMAIN.md's worked hour: NO1, 2026, 2.5 kWh, spot 100 EUR/MWh at 11.70 NOK/EUR = 117.00
/// øre, energy charge 28.99 øre, strømstøtte. 117.00 - 0.9 × (117 - 77) = 36.00 + 28.99 +
/// 7.13 + 1.00 = 118.12 øre/kWh; × 2.5 = 295.30 øre; × 1.25 = 369.125 øre.
#[test]
fn the_worked_hour_costs_exactly_3_69125_nok() {
    let spot = ore_per_kwh(d("100"), d("11.70"));
    assert_eq!(spot, d("117.00"));
    let kwh = [d("2.5")];
    let prices = [spot];
    let input = HourInput {
        kwh: &kwh,
        spot_ore: Some(&prices),
        scheme: Scheme::Stromstotte,
        export: false,
        grid_energy_ore: Some(d("28.99")),
        rates: rates_2026(TaxZone::Standard),
    };
    let cost = cost_of_hour(&input).unwrap();
    assert_eq!(cost.kwh, d("2.5"));
    assert_eq!(cost.spot_nok, Some(d("2.925")));
    assert_eq!(cost.support_nok, Some(d("-0.9")));
    assert_eq!(cost.grid_energy_nok, Some(d("0.72475")));
    assert_eq!(cost.consumption_tax_nok, Some(d("0.17825")));
    assert_eq!(cost.enova_nok, Some(d("0.025")));
    assert_eq!(cost.vat_nok, Some(d("0.73825")));
    assert_eq!(cost.total_nok, Some(d("3.69125")));
    assert!(cost.complete());

    let exempt = cost_of_hour(&HourInput {
        rates: rates_2026(TaxZone::North),
        ..input
    })
    .unwrap();
    assert_eq!(exempt.vat_nok, Some(d("0")));
    assert_eq!(exempt.total_nok, Some(d("2.9530")));
}

/// Quarter prices 110, 120, 118, 120 (mean 117). An hourly meter pays the mean: the same
/// 3.69125 NOK. A 15-minute meter with 0.5, 0.5, 0.75, 0.75 kWh pays each quarter: 55 + 60 +
/// 88.5 + 90 = 293.5 øre; support stays hourly (-36 × 2.5 = -90); grid 72.475, tax 17.825,
/// Enova 2.5: 296.3 øre ex VAT, × 1.25 = 370.375 øre.
#[test]
fn quarter_prices_are_averaged_for_hourly_meters_and_paired_for_quarter_meters() {
    let prices = [d("110"), d("120"), d("118"), d("120")];
    let base = HourInput {
        kwh: &[],
        spot_ore: Some(&prices),
        scheme: Scheme::Stromstotte,
        export: false,
        grid_energy_ore: Some(d("28.99")),
        rates: rates_2026(TaxZone::Standard),
    };
    let hourly = [d("2.5")];
    let cost = cost_of_hour(&HourInput {
        kwh: &hourly,
        ..base
    })
    .unwrap();
    assert_eq!(cost.total_nok, Some(d("3.69125")));

    let quarters = [d("0.5"), d("0.5"), d("0.75"), d("0.75")];
    let cost = cost_of_hour(&HourInput {
        kwh: &quarters,
        ..base
    })
    .unwrap();
    assert_eq!(cost.spot_nok, Some(d("2.935")));
    assert_eq!(cost.support_nok, Some(d("-0.9")));
    assert_eq!(cost.total_nok, Some(d("3.70375")));
}

/// Norgespris: 40 øre × 2.5 = 100 øre for energy; the difference to spot (292.5) is -192.5
/// øre. 100 + 72.475 + 17.825 + 2.5 = 192.8 øre ex VAT; × 1.25 = 241 øre.
#[test]
fn norgespris_replaces_spot_and_support_with_its_fixed_price() {
    let kwh = [d("2.5")];
    let prices = [d("117")];
    let cost = cost_of_hour(&HourInput {
        kwh: &kwh,
        spot_ore: Some(&prices),
        scheme: Scheme::Norgespris,
        export: false,
        grid_energy_ore: Some(d("28.99")),
        rates: rates_2026(TaxZone::Standard),
    })
    .unwrap();
    assert_eq!(cost.spot_nok, Some(d("2.925")));
    assert_eq!(cost.support_nok, Some(d("-1.925")));
    assert_eq!(cost.total_nok, Some(d("2.41")));

    // Before 1 October 2025 there is no Norgespris: the hour is not complete.
    let cost = cost_of_hour(&HourInput {
        kwh: &kwh,
        spot_ore: Some(&prices),
        scheme: Scheme::Norgespris,
        export: false,
        grid_energy_ore: Some(d("28.99")),
        rates: RateTable::defaults().on(TaxZone::Standard, day(2025, 9, 1)),
    })
    .unwrap();
    assert_eq!(cost.support_nok, None);
    assert!(!cost.complete());
}

#[test]
fn spot_below_the_threshold_gets_no_support_and_businesses_none_at_all() {
    let kwh = [d("2")];
    let prices = [d("50")];
    let base = HourInput {
        kwh: &kwh,
        spot_ore: Some(&prices),
        scheme: Scheme::Stromstotte,
        export: false,
        grid_energy_ore: Some(d("10")),
        rates: rates_2026(TaxZone::Standard),
    };
    assert_eq!(cost_of_hour(&base).unwrap().support_nok, Some(d("0")));
    let high = [d("300")];
    let business = cost_of_hour(&HourInput {
        spot_ore: Some(&high),
        scheme: Scheme::None,
        ..base
    })
    .unwrap();
    assert_eq!(business.support_nok, Some(d("0")));
    // 600 + 20 + 14.26 + 2 = 636.26 øre; × 1.25 = 795.325 øre.
    assert_eq!(business.total_nok, Some(d("7.95325")));
}

#[test]
fn a_missing_price_leaves_the_hour_incomplete_never_zero() {
    let kwh = [d("2.5")];
    let cost = cost_of_hour(&HourInput {
        kwh: &kwh,
        spot_ore: None,
        scheme: Scheme::Stromstotte,
        export: false,
        grid_energy_ore: Some(d("28.99")),
        rates: rates_2026(TaxZone::Standard),
    })
    .unwrap();
    assert_eq!(cost.spot_nok, None);
    assert_eq!(cost.support_nok, None);
    assert_eq!(cost.vat_nok, None);
    assert_eq!(cost.total_nok, None);
    assert_eq!(cost.grid_energy_nok, Some(d("0.72475")));
    assert!(!cost.complete());
}

#[test]
fn amounts_are_rounded_once_half_to_even_at_nine_decimals() {
    // 1/3 kWh does not come from a meter, but 0.001 kWh × 33.3333 øre does not end at nine
    // decimals of a krone: 0.0333333 øre = 0.000333333 NOK (exact); × 1.25 VAT on a sum
    // with more decimals rounds. 0.001 × 0.5 øre = 0.0005 øre = 0.000005 NOK.
    let kwh = [d("0.001")];
    let prices = [d("0.0000005")];
    let cost = cost_of_hour(&HourInput {
        kwh: &kwh,
        spot_ore: Some(&prices),
        scheme: Scheme::None,
        export: false,
        grid_energy_ore: Some(d("0")),
        rates: super::rates::RatesOnDay {
            consumption_tax_ore: Some(d("0")),
            enova_ore: Some(d("0")),
            vat_share: Some(d("0")),
            support_threshold_ore: None,
            support_share: None,
            norgespris_ore: None,
        },
    })
    .unwrap();
    // 0.001 × 0.0000005 øre = 5e-10 øre = 5e-12 NOK: rounds to 0 at nine decimals.
    assert_eq!(cost.spot_nok, Some(d("0")));
    let prices = [d("0.15")];
    let cost = cost_of_hour(&HourInput {
        kwh: &[d("0.0035")],
        spot_ore: Some(&prices),
        scheme: Scheme::None,
        export: false,
        grid_energy_ore: Some(d("0")),
        rates: super::rates::RatesOnDay {
            consumption_tax_ore: Some(d("0")),
            enova_ore: Some(d("0")),
            vat_share: Some(d("0.25")),
            support_threshold_ore: None,
            support_share: None,
            norgespris_ore: None,
        },
    })
    .unwrap();
    // 0.0035 × 0.15 = 0.000525 øre = 0.00000525 NOK; VAT 0.0000013125 NOK -> 0.000001312
    // (the 5 in the tenth decimal rounds to the even 2).
    assert_eq!(cost.spot_nok, Some(d("0.00000525")));
    assert_eq!(cost.vat_nok, Some(d("0.000001312")));
    assert_eq!(cost.total_nok, Some(d("0.000006562")));
}

// ---- capacity ----

/// Seven days; each day's hours are its peak and two lower hours. The DOMAIN.md example:
/// daily maxima 4.2, 3.8, 5.1, 6.3, 2.0, 5.9, 4.8 -> mean(6.3, 5.9, 5.1) = 17.3 / 3 =
/// 5.7667 kW -> the 5-10 kW step.
#[test]
fn the_capacity_step_is_the_mean_of_three_peaks_on_three_days() {
    let maxima = ["4.2", "3.8", "5.1", "6.3", "2.0", "5.9", "4.8"];
    let mut hours = Vec::new();
    for (i, max) in maxima.iter().enumerate() {
        let date = day(2026, 3, 1 + u32::try_from(i).unwrap());
        for (hour, kwh) in [(7, d(max)), (8, d(max) - d("0.1")), (18, d("1.0"))] {
            hours.push(HourKwh {
                local_date: date,
                local_hour: hour,
                kwh,
            });
        }
    }
    let rule = capacity::rule("TRE_DØGNMAX_MND").unwrap();
    assert_eq!(rule.name(), "top3_days");
    let demand = rule
        .demand(&DemandInput {
            month: &hours,
            history: &hours,
            fuse_amperes: None,
        })
        .unwrap();
    assert_eq!((demand.sum, demand.count), (d("17.3"), 3));
    assert_eq!(demand.rounded(4), d("5.7667"));
    let peak_days: Vec<u32> = demand
        .peaks
        .iter()
        .flatten()
        .map(|h| chrono::Datelike::day(&h.local_date))
        .collect();
    assert_eq!(peak_days, vec![4, 6, 3]);

    let steps = Steps {
        steps: [0, 2, 5, 10, 15, 20, 25]
            .iter()
            .zip([2400, 3000, 3600, 5400, 7200, 9000, 10800])
            .map(|(&from, price)| Step {
                from: Decimal::from(from),
                nok_per_year: Decimal::from(price),
            })
            .collect(),
        threshold_included: true,
    };
    let step = steps.step_for(&demand).unwrap();
    assert_eq!(step.from, d("5"));
    assert_eq!(capacity::monthly(step.nok_per_year), d("300"));
}

#[test]
fn a_demand_on_a_threshold_is_in_the_step_the_tariff_says() {
    // Peaks 5.0, 5.0, 5.0: exactly 5 kW.
    let hours: Vec<HourKwh> = (1..=3)
        .map(|dd| HourKwh {
            local_date: day(2026, 3, dd),
            local_hour: 12,
            kwh: d("5.0"),
        })
        .collect();
    let demand = capacity::rule("top3_days")
        .unwrap()
        .demand(&DemandInput {
            month: &hours,
            history: &hours,
            fuse_amperes: None,
        })
        .unwrap();
    let mut steps = Steps {
        steps: vec![
            Step {
                from: d("0"),
                nok_per_year: d("1200"),
            },
            Step {
                from: d("2"),
                nok_per_year: d("2400"),
            },
            Step {
                from: d("5"),
                nok_per_year: d("5000"),
            },
        ],
        threshold_included: true,
    };
    assert_eq!(steps.step_for(&demand).unwrap().from, d("5"));
    steps.threshold_included = false;
    assert_eq!(steps.step_for(&demand).unwrap().from, d("2"));
    // 5000 / 12 = 416.666666666... -> nine decimals, half to even.
    assert_eq!(capacity::monthly(d("5000")), d("416.666666667"));
}

#[test]
fn two_peaks_on_one_day_count_once_and_fuse_and_max_rules_apply() {
    let h = |dd, hour, kwh: &str| HourKwh {
        local_date: day(2026, 1, dd),
        local_hour: hour,
        kwh: d(kwh),
    };
    let hours = [
        h(1, 8, "9.0"),
        h(1, 9, "8.5"),
        h(2, 8, "3.0"),
        h(3, 8, "2.0"),
    ];
    let input = DemandInput {
        month: &hours,
        history: &hours,
        fuse_amperes: Some(63),
    };
    let top3 = capacity::rule("top3_days").unwrap().demand(&input).unwrap();
    assert_eq!((top3.sum, top3.count), (d("14.0"), 3));
    let max = capacity::rule("MND_MAX").unwrap().demand(&input).unwrap();
    assert_eq!((max.sum, max.count), (d("9.0"), 1));
    let fuse = capacity::rule("OV_TREFASE")
        .unwrap()
        .demand(&input)
        .unwrap();
    assert_eq!((fuse.sum, fuse.count), (d("63"), 1));
    assert!(capacity::rule("FEM_VEKTET_ÅR").is_none());
    assert!(capacity::rule("UKJENT").is_none());
    let none = capacity::rule("top3_days").unwrap().demand(&DemandInput {
        month: &[],
        history: &[],
        fuse_amperes: None,
    });
    assert_eq!(none, None);
}

// ---- ENTSO-E ----

fn a44(curve: &str, start: &str, end: &str, resolution: &str, points: &[(u32, &str)]) -> String {
    let points: String = points
        .iter()
        .map(|(p, price)| {
            format!("<Point><position>{p}</position><price.amount>{price}</price.amount></Point>")
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">
  <mRID>doc-1</mRID><revisionNumber>1</revisionNumber><type>A44</type>
  <period.timeInterval><start>{start}</start><end>{end}</end></period.timeInterval>
  <TimeSeries>
    <mRID>1</mRID><auction.type>A01</auction.type><businessType>A62</businessType>
    <in_Domain.mRID codingScheme="A01">10YNO-1--------2</in_Domain.mRID>
    <out_Domain.mRID codingScheme="A01">10YNO-1--------2</out_Domain.mRID>
    <currency_Unit.name>EUR</currency_Unit.name>
    <price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>{curve}</curveType>
    <Period>
      <timeInterval><start>{start}</start><end>{end}</end></timeInterval>
      <resolution>{resolution}</resolution>
      {points}
    </Period>
  </TimeSeries>
</Publication_MarketDocument>"#
    )
}

#[test]
fn a03_omitted_points_repeat_the_price_before_them() {
    let xml = a44(
        "A03",
        "2026-03-09T23:00Z",
        "2026-03-10T23:00Z",
        "PT60M",
        &[(1, "50.00"), (2, "48.10"), (5, "60"), (24, "-1.5")],
    );
    let points = parse_a44(&xml).unwrap();
    assert_eq!(points.len(), 24);
    let prices: Vec<Decimal> = points.iter().map(|p| p.eur_per_mwh).collect();
    let mut expected = vec![d("50.00"), d("48.10"), d("48.10"), d("48.10")];
    expected.extend(std::iter::repeat_n(d("60"), 19));
    expected.push(d("-1.5"));
    assert_eq!(prices, expected);
    assert!(points
        .iter()
        .all(|p| p.area == PriceArea::No1 && p.resolution_minutes == 60));
    assert_eq!(
        points[0].start,
        Utc.with_ymd_and_hms(2026, 3, 9, 23, 0, 0).unwrap()
    );
    assert_eq!(
        points[23].start,
        Utc.with_ymd_and_hms(2026, 3, 10, 22, 0, 0).unwrap()
    );
}

/// 25 October 2026 in Oslo has 25 hours: 22:00Z on the 24th to 23:00Z on the 25th is 100
/// quarters. Points given every fourth quarter only (A03): each holds for its hour.
#[test]
fn the_autumn_dst_day_has_100_quarter_prices() {
    let given: Vec<(u32, String)> = (0..25).map(|h| (h * 4 + 1, format!("{h}.25"))).collect();
    let given: Vec<(u32, &str)> = given.iter().map(|(p, s)| (*p, s.as_str())).collect();
    let xml = a44(
        "A03",
        "2026-10-24T22:00Z",
        "2026-10-25T23:00Z",
        "PT15M",
        &given,
    );
    let points = parse_a44(&xml).unwrap();
    assert_eq!(points.len(), 100);
    for (i, p) in points.iter().enumerate() {
        let hour = i / 4;
        assert_eq!(p.eur_per_mwh, d(&format!("{hour}.25")), "quarter {i}");
        assert_eq!(p.resolution_minutes, 15);
    }
    assert_eq!(
        points[99].start,
        Utc.with_ymd_and_hms(2026, 10, 25, 22, 45, 0).unwrap()
    );
    // The spring day: 23 hours, 92 quarters, all given (A01).
    let all: Vec<(u32, String)> = (1..=92).map(|p| (p, "10".to_owned())).collect();
    let all: Vec<(u32, &str)> = all.iter().map(|(p, s)| (*p, s.as_str())).collect();
    let xml = a44(
        "A01",
        "2026-03-28T23:00Z",
        "2026-03-29T22:00Z",
        "PT15M",
        &all,
    );
    assert_eq!(parse_a44(&xml).unwrap().len(), 92);
}

#[test]
fn broken_documents_are_refused_with_the_reason() {
    let gap = a44(
        "A01",
        "2026-03-09T23:00Z",
        "2026-03-10T01:00Z",
        "PT60M",
        &[(1, "1")],
    );
    assert!(matches!(
        parse_a44(&gap),
        Err(EntsoeError::Gap { position: 2, .. })
    ));
    let first_missing = a44(
        "A03",
        "2026-03-09T23:00Z",
        "2026-03-10T01:00Z",
        "PT60M",
        &[(2, "1")],
    );
    assert!(matches!(
        parse_a44(&first_missing),
        Err(EntsoeError::Gap { position: 1, .. })
    ));
    let beyond = a44(
        "A03",
        "2026-03-09T23:00Z",
        "2026-03-10T01:00Z",
        "PT60M",
        &[(1, "1"), (3, "1")],
    );
    assert!(matches!(
        parse_a44(&beyond),
        Err(EntsoeError::Position {
            position: 3,
            length: 2,
            ..
        })
    ));
    let twice = a44(
        "A03",
        "2026-03-09T23:00Z",
        "2026-03-10T01:00Z",
        "PT60M",
        &[(1, "1"), (1, "2")],
    );
    assert!(matches!(
        parse_a44(&twice),
        Err(EntsoeError::Duplicate { position: 1, .. })
    ));
    let float = a44(
        "A03",
        "2026-03-09T23:00Z",
        "2026-03-10T01:00Z",
        "PT60M",
        &[(1, "1e3")],
    );
    assert!(matches!(
        parse_a44(&float),
        Err(EntsoeError::Invalid { .. })
    ));
    let swedish = a44(
        "A01",
        "2026-03-09T23:00Z",
        "2026-03-10T00:00Z",
        "PT60M",
        &[(1, "1")],
    )
    .replace("10YNO-1--------2", "10Y1001A1001A46L");
    assert!(matches!(parse_a44(&swedish), Err(EntsoeError::Area { .. })));
    let ack = r#"<Acknowledgement_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0">
        <mRID>x</mRID><Reason><code>999</code><text>No matching data found</text></Reason>
        </Acknowledgement_MarketDocument>"#;
    assert_eq!(
        parse_a44(ack),
        Err(EntsoeError::Acknowledgement(
            "No matching data found".into()
        ))
    );
    assert!(matches!(
        parse_a44("<html><body/></html>"),
        Err(EntsoeError::NotPrices(_))
    ));
    assert!(matches!(
        parse_a44("<Publication_MarketDocument><TimeSeries>"),
        Err(EntsoeError::Xml { .. })
    ));
}

// ---- holidays and tariffs ----

#[test]
fn easter_and_the_holidays_that_follow_it_fall_on_their_dates() {
    use super::holidays::{easter_sunday, is_holiday};
    // Published Easter Sundays.
    for (year, month, dd) in [(2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28)] {
        assert_eq!(easter_sunday(year), Some(day(year, month, dd)));
    }
    // 2026: Maundy Thursday 2 April, Good Friday 3 April, Easter Monday 6 April, Ascension
    // 14 May, Whit Monday 25 May; and the fixed ones.
    for (m, dd) in [
        (1, 1),
        (4, 2),
        (4, 3),
        (4, 5),
        (4, 6),
        (5, 1),
        (5, 14),
        (5, 17),
        (5, 24),
        (5, 25),
        (12, 25),
        (12, 26),
    ] {
        assert!(is_holiday(day(2026, m, dd)), "2026-{m}-{dd}");
    }
    for (m, dd) in [(4, 1), (4, 4), (4, 7), (5, 13), (12, 24), (12, 31)] {
        assert!(!is_holiday(day(2026, m, dd)), "2026-{m}-{dd}");
    }
}

pub(crate) const TARIFF_FILE: &str = r"---
netteier: 'Fjordnett AS'
gln:
  - '7080000000012'
sist_oppdatert: '2026-01-10'
kilder:
  - 'https://example.invalid/nettleie'
tariffer:
  - kundegrupper: [husholdning, fritid]
    gyldig_fra: '2025-01-01'
    gyldig_til: '2026-01-01'
    energiledd:
      grunnpris: 30
    fastledd:
      metode: TRE_DØGNMAX_MND
      terskel_inkludert: true
      terskler:
        - {terskel: 0, pris: 1800}
  - kundegrupper:
      - husholdning
    gyldig_fra: '2026-01-01'
    energiledd:
      grunnpris: 29.72
      unntak:
        - navn: Høylast vinter
          timer: 6-21
          dager: [virkedag]
          måneder: [januar, februar, mars, november, desember]
          pris: 40.5
        - navn: Natt
          timer: 22-5
          pris: 20.125
        - navn: Helligdag
          dager: helligdager
          pris: 15
    fastledd:
      metode: TRE_DØGNMAX_MND
      terskel_inkludert: false
      terskler:
        - terskel: 5
          pris: 5404.8
        - terskel: 0
          pris: 2400
        - terskel: 10
          pris: 7564.8
";

#[test]
fn a_fri_nettleie_file_prices_each_hour_by_its_exceptions() {
    use super::frinettleie::parse_tariff_file;
    use super::tariff::{tariff_for, CustomerGroup};
    let tariffs = parse_tariff_file(TARIFF_FILE).unwrap();
    assert_eq!(tariffs.len(), 2);
    let gln = "7080000000012";
    let on = |date| tariff_for(&tariffs, gln, CustomerGroup::Household, date).unwrap();
    assert_eq!(on(day(2025, 12, 31)).energy.base_ore, d("30"));
    let t = on(day(2026, 1, 1));
    assert_eq!(t.energy.base_ore, d("29.72"));
    assert_eq!(
        t.sources,
        vec!["https://example.invalid/nettleie".to_owned()]
    );
    // Cabins have no 2026 tariff in this file: none, not last year's.
    assert!(tariff_for(&tariffs, gln, CustomerGroup::Cabin, day(2026, 1, 5)).is_none());
    assert!(tariff_for(&tariffs, gln, CustomerGroup::Cabin, day(2025, 6, 5)).is_some());
    assert!(tariff_for(
        &tariffs,
        "7080000000024",
        CustomerGroup::Household,
        day(2026, 1, 5)
    )
    .is_none());

    let price = |date, hour| t.energy.price_ore(date, hour);
    // Monday 12 January 2026: a working day in winter.
    let monday = day(2026, 1, 12);
    assert_eq!(price(monday, 6), d("40.5"));
    assert_eq!(price(monday, 21), d("40.5"));
    assert_eq!(price(monday, 22), d("20.125"));
    assert_eq!(price(monday, 5), d("20.125"));
    assert_eq!(price(monday, 0), d("20.125"));
    // Saturday 17 January: not a working day, and not night.
    assert_eq!(price(day(2026, 1, 17), 12), d("29.72"));
    // A June weekday: not a winter month.
    assert_eq!(price(day(2026, 6, 10), 12), d("29.72"));
    // Maundy Thursday 2 April and Ascension Day 14 May 2026: holidays by day.
    assert_eq!(price(day(2026, 4, 2), 12), d("15"));
    assert_eq!(price(day(2026, 5, 14), 12), d("15"));
    // A holiday night hour: the night exception comes first.
    assert_eq!(price(day(2026, 5, 14), 23), d("20.125"));
    // 1 January 2026 is a holiday on a Thursday in winter: not a working day.
    assert_eq!(price(day(2026, 1, 1), 12), d("15"));

    let steps = &t.capacity.steps;
    assert_eq!(t.capacity.method, "TRE_DØGNMAX_MND");
    assert!(!steps.threshold_included);
    let froms: Vec<Decimal> = steps.steps.iter().map(|s| s.from).collect();
    assert_eq!(froms, vec![d("0"), d("5"), d("10")]);
    assert_eq!(steps.steps[1].nok_per_year, d("5404.8"));
    assert_eq!(
        super::capacity::monthly(steps.steps[1].nok_per_year),
        d("450.4")
    );
}

#[test]
fn a_tariff_file_with_a_mistake_is_refused_whole_naming_it() {
    use super::frinettleie::{parse_tariff_file, TariffFileError};
    let broken = |from: &str, to: &str| parse_tariff_file(&TARIFF_FILE.replace(from, to));
    // A misspelt key would otherwise make an exception apply all year.
    let e = broken("måneder:", "maaneder:").unwrap_err();
    assert!(
        matches!(&e, TariffFileError::Yaml(m) if m.contains("maaneder")),
        "{e}"
    );
    let e = broken("dager: [virkedag]", "dager: [arbeidsdag]").unwrap_err();
    assert!(
        matches!(
            &e,
            TariffFileError::Invalid {
                tariff: 2,
                field: "unntak.dager",
                ..
            }
        ),
        "{e}"
    );
    let e = broken("timer: 6-21", "timer: 6-24").unwrap_err();
    assert!(
        matches!(
            &e,
            TariffFileError::Invalid {
                field: "unntak.timer",
                ..
            }
        ),
        "{e}"
    );
    let e = broken("pris: 20.125", "pris: 20.125\n          tillegg: 3").unwrap_err();
    assert!(
        matches!(
            &e,
            TariffFileError::Invalid {
                field: "unntak",
                ..
            }
        ),
        "{e}"
    );
    let e = broken("gyldig_til: '2026-01-01'", "gyldig_til: '2024-01-01'").unwrap_err();
    assert!(
        matches!(
            &e,
            TariffFileError::Invalid {
                tariff: 1,
                field: "gyldig_til",
                ..
            }
        ),
        "{e}"
    );
    let e = broken(
        "kundegrupper: [husholdning, fritid]",
        "kundegrupper: [industri]",
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            TariffFileError::Invalid {
                field: "kundegrupper",
                ..
            }
        ),
        "{e}"
    );
    let e = broken("'7080000000012'", "'7080000000017'").unwrap_err();
    assert!(
        matches!(&e, TariffFileError::Invalid { field: "gln", .. }),
        "{e}"
    );
    let e = parse_tariff_file("netteier: [").unwrap_err();
    assert!(matches!(e, TariffFileError::Yaml(_)));
    // A surcharge (older files) adds to the base.
    let t = &broken("pris: 20.125", "tillegg: 3").unwrap()[1];
    assert_eq!(t.energy.price_ore(day(2026, 6, 10), 23), d("32.72"));
}

// ---- Frost and price feeds ----

/// Station SN18700 answers with two sensors for 00:00 (quality 0 and 2) and one for 01:00;
/// SN4780 with one. Sensor 0's 00:00 value has the better quality; at 01:00 only sensor 1
/// speaks. A daily mean of SN18700 is another resolution: kept too.
#[test]
fn frost_keeps_one_value_per_station_element_and_time() {
    use super::frost::parse_frost;
    let json = r#"{
      "@type": "ObservationResponse", "apiVersion": "v0", "totalItemCount": 5,
      "data": [
        {"sourceId": "SN18700:1", "referenceTime": "2026-01-15T00:00:00.000Z",
         "observations": [{"elementId": "air_temperature", "value": -3.5, "unit": "degC",
                           "timeResolution": "PT1H", "timeSeriesId": 0, "qualityCode": 2}]},
        {"sourceId": "SN18700:0", "referenceTime": "2026-01-15T00:00:00.000Z",
         "observations": [{"elementId": "air_temperature", "value": -3.4, "unit": "degC",
                           "timeResolution": "PT1H", "timeSeriesId": 0, "qualityCode": 0},
                          {"elementId": "mean(air_temperature P1D)", "value": -1.05e0,
                           "unit": "degC", "timeResolution": "P1D", "qualityCode": 0}]},
        {"sourceId": "SN18700:1", "referenceTime": "2026-01-15T01:00:00.000Z",
         "observations": [{"elementId": "air_temperature", "value": -4, "unit": "degC",
                           "timeResolution": "PT1H", "qualityCode": 2}]},
        {"sourceId": "SN4780:0", "referenceTime": "2026-01-15T00:00:00Z",
         "observations": [{"elementId": "air_temperature", "value": 0.1, "unit": "degC",
                           "timeResolution": "PT1H"}]}
      ]}"#;
    let parsed = parse_frost(json).unwrap();
    assert_eq!(parsed.duplicates, 1);
    let got: Vec<(String, String, String, Decimal)> = parsed
        .observations
        .iter()
        .map(|o| {
            (
                o.station.clone(),
                o.time.to_rfc3339(),
                o.resolution.clone(),
                o.value,
            )
        })
        .collect();
    let t0 = "2026-01-15T00:00:00+00:00".to_owned();
    let t1 = "2026-01-15T01:00:00+00:00".to_owned();
    let mut expected = vec![
        (
            "SN18700".to_owned(),
            t0.clone(),
            "PT1H".to_owned(),
            d("-3.4"),
        ),
        (
            "SN18700".to_owned(),
            t0.clone(),
            "P1D".to_owned(),
            d("-1.05"),
        ),
        ("SN18700".to_owned(), t1, "PT1H".to_owned(), d("-4")),
        ("SN4780".to_owned(), t0, "PT1H".to_owned(), d("0.1")),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    expected.sort();
    assert_eq!(got_sorted, expected);
    assert!(matches!(
        parse_frost(
            r#"{"data": [{"sourceId": "SN1:0", "referenceTime": "yesterday", "observations": []}]}"#
        ),
        Err(super::frost::FrostError::Invalid {
            field: "referenceTime",
            ..
        })
    ));
    assert!(parse_frost("[]").is_err());
}

#[test]
fn a_json_price_feed_reads_quarters_and_hours_exactly() {
    use super::pricefeed::parse_feed;
    let json = r#"[
      {"NOK_per_kWh": 1.09505, "EUR_per_kWh": 0.09412, "EXR": 11.6346,
       "time_start": "2025-10-01T00:00:00+02:00", "time_end": "2025-10-01T00:15:00+02:00"},
      {"NOK_per_kWh": -0.00012, "EUR_per_kWh": null, "EXR": null,
       "time_start": "2025-09-30T01:00:00+02:00", "time_end": "2025-09-30T02:00:00+02:00"}
    ]"#;
    let prices = parse_feed(json).unwrap();
    assert_eq!(prices.len(), 2);
    assert_eq!(
        prices[0].start,
        Utc.with_ymd_and_hms(2025, 9, 30, 22, 0, 0).unwrap()
    );
    assert_eq!(prices[0].resolution_minutes, 15);
    assert_eq!(prices[0].nok_per_kwh, d("1.09505"));
    assert_eq!(prices[0].nok_per_eur, Some(d("11.6346")));
    assert_eq!(prices[1].resolution_minutes, 60);
    assert_eq!(prices[1].nok_per_kwh, d("-0.00012"));
    assert_eq!(prices[1].eur_per_kwh, None);
    let half = json.replace("00:15:00+02:00", "00:30:00+02:00");
    assert!(matches!(
        parse_feed(&half),
        Err(super::pricefeed::FeedError::Invalid {
            item: 1,
            field: "time_end",
            ..
        })
    ));
}

/// 3 kWh exported at 117 øre: paid 351 øre; a production charge of 1.5 øre costs 4.5 øre.
#[test]
fn export_is_paid_spot_less_the_production_charge_without_taxes() {
    let kwh = [d("3")];
    let prices = [d("117")];
    let cost = cost_of_hour(&HourInput {
        kwh: &kwh,
        spot_ore: Some(&prices),
        scheme: Scheme::Stromstotte,
        export: true,
        grid_energy_ore: Some(d("1.5")),
        rates: rates_2026(TaxZone::Standard),
    })
    .unwrap();
    assert_eq!(cost.spot_nok, Some(d("-3.51")));
    assert_eq!(cost.support_nok, Some(d("0")));
    assert_eq!(cost.vat_nok, Some(d("0")));
    assert_eq!(cost.total_nok, Some(d("-3.465")));
}

// ---- a day ----

/// 25 October 2026 in Oslo: 25 hours, the clock hour 2 twice. Every quarter costs 100 øre
/// except that the quarter at 10:15Z is missing. An hourly meter uses 1 kWh each hour; a
/// quarter meter uses 0.25 each quarter but its 05:30Z quarter is missing.
/// Each full hour: spot 100; support -0.9 × (100 - 77) = -20.7; grid 30; tax 7.13; Enova
/// 1: 117.43 øre; × 1.25 = 146.7875 øre = 1.467875 NOK.
#[test]
fn a_dst_day_is_priced_in_25_hours_and_says_which_are_incomplete() {
    use super::day::{cost_of_day, MeterDay, Prices, Reading};
    use super::frinettleie::parse_tariff_file;
    let tz = chrono_tz::Europe::Oslo;
    let first = Utc.with_ymd_and_hms(2026, 10, 24, 22, 0, 0).unwrap();
    let mut prices = Prices::new();
    for q in 0..100 {
        let t = first + chrono::Duration::minutes(15 * q);
        if t != Utc.with_ymd_and_hms(2026, 10, 25, 10, 15, 0).unwrap() {
            prices.insert(t, (15, d("100")));
        }
    }
    let hourly: Vec<Reading> = (0..25)
        .map(|h| Reading {
            start: first + chrono::Duration::hours(h),
            minutes: 60,
            kwh: d("1"),
        })
        .collect();
    let quarterly: Vec<Reading> = (0..100)
        .map(|q| Reading {
            start: first + chrono::Duration::minutes(15 * q),
            minutes: 15,
            kwh: d("0.25"),
        })
        .filter(|r| r.start != Utc.with_ymd_and_hms(2026, 10, 25, 5, 30, 0).unwrap())
        .collect();
    let tariffs = parse_tariff_file(
        &TARIFF_FILE
            .replace("grunnpris: 29.72", "grunnpris: 30")
            .replace("pris: 20.125", "pris: 30")
            .replace("pris: 15\n", "pris: 30\n"),
    )
    .unwrap();
    let rates = RateTable::defaults();
    let base = MeterDay {
        local_date: day(2026, 10, 25),
        tz,
        readings: &hourly,
        export: false,
        prices: &prices,
        scheme: Scheme::Stromstotte,
        zone: TaxZone::Standard,
        tariff: Some(&tariffs[1]),
        rates: &rates,
    };
    let hours = cost_of_day(&base).unwrap();
    assert_eq!(hours.len(), 25);
    let local: Vec<u32> = hours.iter().map(|h| h.local_hour).collect();
    let mut expected_local = vec![0, 1, 2, 2];
    expected_local.extend(3..24);
    assert_eq!(local, expected_local);
    for h in &hours {
        if h.hour_start == Utc.with_ymd_and_hms(2026, 10, 25, 10, 0, 0).unwrap() {
            assert!(!h.complete);
            assert_eq!(h.cost.spot_nok, None);
            assert_eq!(h.cost.total_nok, None);
        } else {
            assert!(h.complete, "{}", h.hour_start);
            assert_eq!(h.cost.total_nok, Some(d("1.467875")), "{}", h.hour_start);
        }
    }
    let quarter_hours = cost_of_day(&MeterDay {
        readings: &quarterly,
        ..base
    })
    .unwrap();
    assert_eq!(quarter_hours.len(), 25);
    let short = quarter_hours
        .iter()
        .find(|h| h.hour_start == Utc.with_ymd_and_hms(2026, 10, 25, 5, 0, 0).unwrap())
        .unwrap();
    assert!(!short.complete);
    assert_eq!(short.cost.kwh, d("0.75"));
    // Priced on what is there: 0.75 × 117.43 = 88.0725 øre; × 1.25 = 110.090625 øre.
    assert_eq!(short.cost.total_nok, Some(d("1.10090625")));
    let full = quarter_hours
        .iter()
        .find(|h| h.hour_start == Utc.with_ymd_and_hms(2026, 10, 25, 6, 0, 0).unwrap())
        .unwrap();
    assert!(full.complete);
    assert_eq!(full.cost.total_nok, Some(d("1.467875")));
    // Without a tariff nothing is complete.
    let untariffed = cost_of_day(&MeterDay {
        tariff: None,
        ..base
    })
    .unwrap();
    assert!(untariffed
        .iter()
        .all(|h| !h.complete && h.cost.grid_energy_nok.is_none()));
}

// ---- insights ----

#[test]
fn temperature_sensitivity_is_the_least_squares_line() {
    use super::insights::least_squares;
    // x = 0, 1, 2; y = 1, 3, 2. n = 3, Σx = 3, Σy = 6, Σxy = 7, Σx² = 5, Σy² = 14:
    // n·Σxy - Σx·Σy = 3, n·Σx² - (Σx)² = 6, n·Σy² - (Σy)² = 6. Slope 3/6 = 0.5; intercept
    // (6 - 0.5·3)/3 = 1.5; r² = 3²/(6·6) = 0.25.
    let fit = least_squares(&[(d("0"), d("1")), (d("1"), d("3")), (d("2"), d("2"))]).unwrap();
    assert_eq!(
        (fit.slope, fit.intercept, fit.r2, fit.days),
        (d("0.5"), d("1.5"), d("0.25"), 3)
    );
    // Colder days use more: kWh = 40 - 1.5 × °C on every day is an exact line.
    let line: Vec<(Decimal, Decimal)> = ["-10.2", "-3", "0.5", "4", "9.9"]
        .iter()
        .map(|t| (d(t), d("40") - d("1.5") * d(t)))
        .collect();
    let fit = least_squares(&line).unwrap();
    assert_eq!(
        (fit.slope, fit.intercept, fit.r2),
        (d("-1.5"), d("40"), d("1"))
    );
    // 1/3 is rounded to six decimals: x = 0, 1, 2, y = 0, 0, 1 -> slope 0.5, intercept
    // -1/6, r² = 0.75.
    let fit = least_squares(&[(d("0"), d("0")), (d("1"), d("0")), (d("2"), d("1"))]).unwrap();
    assert_eq!(
        (fit.slope, fit.intercept, fit.r2),
        (d("0.5"), d("-0.166667"), d("0.75"))
    );
    assert_eq!(
        least_squares(&[(d("1"), d("1")), (d("1"), d("2")), (d("1"), d("3"))]),
        None
    );
    assert_eq!(least_squares(&[(d("1"), d("1")), (d("2"), d("2"))]), None);
}

#[test]
fn duration_curves_degree_days_and_seasons() {
    use super::insights::{duration_curve, heating_degree_days, heating_season};
    let curve = duration_curve(&[d("1"), d("3"), d("2"), d("3")]);
    assert_eq!(
        curve,
        vec![
            (1, 1, d("3")),
            (2, 3, d("3")),
            (3, 2, d("2")),
            (4, 0, d("1"))
        ]
    );
    assert_eq!(heating_degree_days(d("-3.4")), d("20.4"));
    assert_eq!(heating_degree_days(d("18")), d("0"));
    assert_eq!(heating_season(day(2026, 10, 1)), Some(2026));
    assert_eq!(heating_season(day(2027, 4, 30)), Some(2026));
    assert_eq!(heating_season(day(2027, 5, 1)), None);
}

// ---- a month ----

/// Three priced hours of 1.467875 NOK (4.403625 in all). Daily peaks 2, 3 and 4 kWh: demand
/// 3 kW, the 2-5 kW step at 2400 NOK a year: 200 NOK, VAT 50. Total 254.403625 NOK.
#[test]
fn a_month_sums_its_hours_and_adds_the_capacity_step() {
    use super::day::CostHour;
    use super::hour::HourCost;
    use super::month::{cost_of_month, MonthInput};
    use super::tariff::CapacityCharge;
    let hour = |h: u32, complete: bool| CostHour {
        hour_start: Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).unwrap(),
        local_hour: h + 1,
        complete,
        cost: HourCost {
            kwh: d("1"),
            spot_nok: Some(d("1")),
            support_nok: Some(d("-0.207")),
            grid_energy_nok: Some(d("0.3")),
            consumption_tax_nok: Some(d("0.0713")),
            enova_nok: Some(d("0.01")),
            vat_nok: Some(d("0.293575")),
            total_nok: complete.then(|| d("1.467875")),
        },
    };
    let hours = [hour(0, true), hour(1, true), hour(2, true)];
    let demand: Vec<HourKwh> = [(2, "2"), (3, "3"), (4, "4")]
        .iter()
        .map(|(dd, kwh)| HourKwh {
            local_date: day(2026, 3, *dd),
            local_hour: 18,
            kwh: d(kwh),
        })
        .collect();
    let charge = CapacityCharge {
        method: "TRE_DØGNMAX_MND".into(),
        steps: Steps {
            steps: vec![
                Step {
                    from: d("0"),
                    nok_per_year: d("1200"),
                },
                Step {
                    from: d("2"),
                    nok_per_year: d("2400"),
                },
                Step {
                    from: d("5"),
                    nok_per_year: d("6000"),
                },
            ],
            threshold_included: true,
        },
    };
    let input = MonthInput {
        hours: &hours,
        demand_hours: &demand,
        history: &demand,
        fuse_amperes: None,
        capacity: Some(&charge),
        vat_share: Some(d("0.25")),
    };
    let month = cost_of_month(&input);
    assert_eq!(month.kwh, d("3"));
    assert_eq!(month.spot_nok, Some(d("3")));
    assert_eq!(month.support_nok, Some(d("-0.621")));
    assert_eq!(month.capacity_demand, Some(d("3")));
    assert_eq!(month.capacity_step_from, Some(d("2")));
    assert_eq!(month.capacity_nok, Some(d("200")));
    assert_eq!(month.capacity_vat_nok, Some(d("50")));
    assert_eq!(month.total_nok, Some(d("254.403625")));
    assert!(month.complete);

    let gap = [hour(0, true), hour(1, false), hour(2, true)];
    let month = cost_of_month(&MonthInput {
        hours: &gap,
        ..input
    });
    assert_eq!(month.total_nok, None);
    assert_eq!(month.spot_nok, Some(d("3")));
    assert!(!month.complete);

    let unknown = CapacityCharge {
        method: "FEM_VEKTET_ÅR".into(),
        ..charge.clone()
    };
    let month = cost_of_month(&MonthInput {
        capacity: Some(&unknown),
        ..input
    });
    assert_eq!(
        (month.capacity_nok, month.total_nok, month.complete),
        (None, None, false)
    );
}

// ---- a month against an independent oracle ----

/// The oracle: the domain rules in integer arithmetic, written from DOMAIN.md and the module
/// docs, not from the production code. Amounts are in units of 10⁻¹⁴ NOK (exact for every
/// input below); a component is rounded half to even to 10⁻⁹ NOK (10⁵ units).
mod oracle {
    pub const UNIT: i128 = 100_000; // 10⁻¹⁴ NOK per 10⁻⁹ NOK

    pub fn round(units: i128) -> i128 {
        let (q, r) = (units.div_euclid(UNIT), units.rem_euclid(UNIT));
        let half = UNIT / 2;
        let up = r > half || (r == half && q % 2 != 0);
        (q + i128::from(up)) * UNIT
    }

    /// kWh in thousandths × price in hundredths of an øre -> 10⁻¹⁴ NOK.
    pub fn energy(kwh_milli: i128, centi_ore: i128) -> i128 {
        kwh_milli * centi_ore * 10_000_000
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Hour {
        pub spot: Option<i128>,
        pub support: Option<i128>,
        pub grid: i128,
        pub tax: i128,
        pub enova: i128,
        pub vat: Option<i128>,
        pub total: Option<i128>,
    }

    /// `kwh_milli`: 1 or 4 parts; `prices`: the four quarter prices in hundredths of an øre
    /// (`None` if any is missing); `norgespris`; `vat_percent` 25 or 0; `tax_centi` 713 or 0.
    pub fn hour(
        kwh_milli: &[i128],
        prices: Option<[i128; 4]>,
        norgespris: bool,
        grid_centi: i128,
        tax_centi: i128,
        vat_percent: i128,
    ) -> Hour {
        let kwh: i128 = kwh_milli.iter().sum();
        let spot_exact = prices.map(|p| {
            if kwh_milli.len() == 1 {
                // kWh × (Σp / 4): 10⁻³ kWh × 10⁻² øre / 4 = 10⁻⁷ NOK / 4 -> × 10⁷ / 4.
                kwh * p.iter().sum::<i128>() * 10_000_000 / 4
            } else {
                kwh_milli.iter().zip(p).map(|(k, q)| energy(*k, q)).sum()
            }
        });
        let support_exact = match (prices, spot_exact) {
            (Some(p), Some(spot)) => Some(if norgespris {
                energy(kwh, 4000) - spot
            } else {
                // -0.9 × max(0, Σp/4 - 77 øre) × kWh.
                let excess4 = (p.iter().sum::<i128>() - 4 * 7700).max(0);
                -(9 * excess4 * kwh * 10_000_000) / 40
            }),
            _ => None,
        };
        let grid = round(energy(kwh, grid_centi));
        let tax = round(energy(kwh, tax_centi));
        let enova = round(energy(kwh, 100));
        let spot = spot_exact.map(round);
        let support = support_exact.map(round);
        let ex_vat = spot.zip(support).map(|(s, u)| s + u + grid + tax + enova);
        let vat = ex_vat.map(|e| round(e * vat_percent / 100));
        Hour {
            spot,
            support,
            grid,
            tax,
            enova,
            vat,
            total: ex_vat.zip(vat).map(|(e, v)| e + v),
        }
    }
}

/// October 2026 in NO1, three meters, every hour and the month, against the oracle:
/// - A: hourly, strømstøtte, standard zone;
/// - B: 15-minute, strømstøtte until 14 October, Norgespris from the 15th;
/// - C: hourly, in the north (no VAT).
///
/// The month holds the autumn DST day (25 October: 25 hours, 100 quarter prices), and one
/// quarter price is missing (10 October 12:15 UTC), so that hour is incomplete for all.
#[test]
fn a_month_of_three_meters_equals_the_oracle() {
    use super::day::{cost_of_day, MeterDay, Prices, Reading};
    use super::month::{cost_of_month, MonthInput};
    use super::tariff::{
        Adjustment, CapacityCharge, CustomerGroup, EnergyCharge, Exception, GridTariff, HourRange,
    };
    use chrono::{Duration, Timelike};
    use std::collections::BTreeMap;
    let tz = chrono_tz::Europe::Oslo;
    let first = Utc.with_ymd_and_hms(2026, 9, 30, 22, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap();
    let hours: Vec<chrono::DateTime<Utc>> = (0..)
        .map(|h| first + Duration::hours(h))
        .take_while(|t| *t < end)
        .collect();
    assert_eq!(hours.len(), 31 * 24 + 1);
    let missing = Utc.with_ymd_and_hms(2026, 10, 10, 12, 15, 0).unwrap();
    // Quarter prices in hundredths of an øre: 60.00 to 106.00 in steps of 5.75.
    let price_centi = |q: i64| 6000 + i128::from(q.rem_euclid(9)) * 575;
    let mut prices = Prices::new();
    for (i, t) in (0..hours.len() as i64 * 4).map(|q| (q, first + Duration::minutes(15 * q))) {
        if t != missing {
            prices.insert(
                t,
                (15, Decimal::new(i64::try_from(price_centi(i)).unwrap(), 2)),
            );
        }
    }
    // Consumption in thousandths of a kWh: 0.500 + (n mod 11) × 0.125 per part.
    let kwh_milli = |n: i64| 500 + i128::from(n.rem_euclid(11)) * 125;
    // The tariff: 25.50 øre, 15.25 from 22 to 05; steps 0 / 2 / 5 / 10 kW at 3000 / 4200 /
    // 6600 / 9600 NOK a year.
    let tariff = GridTariff {
        company: "Fjordnett AS".into(),
        gln: vec!["7080000000012".into()],
        name: None,
        customer_groups: vec![CustomerGroup::Household],
        valid_from: day(2026, 1, 1),
        valid_to: None,
        energy: EnergyCharge {
            base_ore: d("25.50"),
            exceptions: vec![Exception {
                name: "natt".into(),
                hours: Some(HourRange { from: 22, to: 5 }),
                days: vec![],
                months: vec![],
                adjustment: Adjustment::Price(d("15.25")),
            }],
        },
        capacity: CapacityCharge {
            method: "TRE_DØGNMAX_MND".into(),
            steps: Steps {
                steps: [(0, 3000), (2, 4200), (5, 6600), (10, 9600)]
                    .iter()
                    .map(|(f, p)| Step {
                        from: Decimal::from(*f),
                        nok_per_year: Decimal::from(*p),
                    })
                    .collect(),
                threshold_included: true,
            },
        },
        grid_areas: vec![],
        sources: vec![],
    };
    let rates = RateTable::defaults();
    struct Meter {
        quarterly: bool,
        zone: TaxZone,
        norgespris_from: Option<NaiveDate>,
        seed: i64,
    }
    let meters = [
        Meter {
            quarterly: false,
            zone: TaxZone::Standard,
            norgespris_from: None,
            seed: 0,
        },
        Meter {
            quarterly: true,
            zone: TaxZone::Standard,
            norgespris_from: Some(day(2026, 10, 15)),
            seed: 3,
        },
        Meter {
            quarterly: false,
            zone: TaxZone::North,
            norgespris_from: None,
            seed: 7,
        },
    ];
    let to_units = |d: Option<Decimal>| -> Option<i128> {
        d.map(|v| {
            let mut v = v;
            v.rescale(14);
            v.mantissa()
        })
    };
    for (m, meter) in meters.iter().enumerate() {
        // Readings and the oracle's hours.
        let mut readings: BTreeMap<NaiveDate, Vec<Reading>> = BTreeMap::new();
        let mut expected = Vec::new();
        let mut day_peaks: BTreeMap<NaiveDate, i128> = BTreeMap::new();
        for (h, start) in hours.iter().enumerate() {
            let h = i64::try_from(h).unwrap();
            let local = start.with_timezone(&tz);
            let date = local.date_naive();
            let parts: Vec<i128> = if meter.quarterly {
                (0..4).map(|q| kwh_milli(h * 4 + q + meter.seed)).collect()
            } else {
                vec![kwh_milli(h + meter.seed)]
            };
            let minutes = if meter.quarterly { 15 } else { 60 };
            for (q, k) in parts.iter().enumerate() {
                readings.entry(date).or_default().push(Reading {
                    start: *start
                        + Duration::minutes(i64::from(minutes) * i64::try_from(q).unwrap()),
                    minutes,
                    kwh: Decimal::new(i64::try_from(*k).unwrap(), 3),
                });
            }
            let quarter_prices: Option<[i128; 4]> = (0..4)
                .map(|q| {
                    let t = *start + Duration::minutes(15 * q);
                    (t != missing).then(|| price_centi(h * 4 + q))
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| [v[0], v[1], v[2], v[3]]);
            let hour_of_day = local.hour();
            let grid_centi = if hour_of_day >= 22 || hour_of_day <= 5 {
                1525
            } else {
                2550
            };
            let norgespris = meter.norgespris_from.is_some_and(|from| date >= from);
            let (tax_centi, vat) = match meter.zone {
                TaxZone::Standard => (713, 25),
                TaxZone::North => (713, 0),
                TaxZone::Finnmark => (0, 0),
            };
            expected.push(oracle::hour(
                &parts,
                quarter_prices,
                norgespris,
                grid_centi,
                tax_centi,
                vat,
            ));
            let hour_kwh: i128 = parts.iter().sum();
            let peak = day_peaks.entry(date).or_insert(0);
            *peak = (*peak).max(hour_kwh);
        }
        // The production functions, day by day.
        let mut got = Vec::new();
        for (date, day_readings) in &readings {
            let scheme = if meter.norgespris_from.is_some_and(|from| *date >= from) {
                Scheme::Norgespris
            } else {
                Scheme::Stromstotte
            };
            got.extend(
                cost_of_day(&MeterDay {
                    local_date: *date,
                    tz,
                    readings: day_readings,
                    export: false,
                    prices: &prices,
                    scheme,
                    zone: meter.zone,
                    tariff: Some(&tariff),
                    rates: &rates,
                })
                .unwrap(),
            );
        }
        assert_eq!(got.len(), expected.len(), "meter {m}");
        let mut incomplete = 0;
        for (g, e) in got.iter().zip(&expected) {
            let c = g.cost;
            let at = format!("meter {m} at {}", g.hour_start);
            assert_eq!(to_units(c.spot_nok), e.spot, "spot, {at}");
            assert_eq!(to_units(c.support_nok), e.support, "support, {at}");
            assert_eq!(to_units(c.grid_energy_nok), Some(e.grid), "grid, {at}");
            assert_eq!(to_units(c.consumption_tax_nok), Some(e.tax), "tax, {at}");
            assert_eq!(to_units(c.enova_nok), Some(e.enova), "enova, {at}");
            assert_eq!(to_units(c.vat_nok), e.vat, "vat, {at}");
            assert_eq!(to_units(c.total_nok), e.total, "total, {at}");
            assert_eq!(g.complete, e.total.is_some(), "complete, {at}");
            incomplete += usize::from(!g.complete);
        }
        assert_eq!(incomplete, 1, "meter {m}: the hour without a price");

        // The month: its capacity step from the three highest daily peaks.
        let mut peaks: Vec<i128> = day_peaks.values().copied().collect();
        peaks.sort_unstable_by(|a, b| b.cmp(a));
        let top3: i128 = peaks[..3].iter().sum();
        // Steps in kW: 3 × threshold × 1000 against the sum of thousandths.
        let yearly = [(10, 9600), (5, 6600), (2, 4200), (0, 3000)]
            .iter()
            .find(|(from, _)| top3 >= 3 * from * 1000)
            .map(|(_, p)| *p)
            .unwrap();
        let capacity = oracle::round(yearly * 100_000_000_000_000 / 12);
        let capacity_vat = oracle::round(
            capacity
                * if meter.zone == TaxZone::Standard {
                    25
                } else {
                    0
                }
                / 100,
        );
        let demand_hours: Vec<HourKwh> = got
            .iter()
            .map(|h| HourKwh {
                local_date: h.hour_start.with_timezone(&tz).date_naive(),
                local_hour: h.local_hour,
                kwh: h.cost.kwh,
            })
            .collect();
        let month = cost_of_month(&MonthInput {
            hours: &got,
            demand_hours: &demand_hours,
            history: &demand_hours,
            fuse_amperes: None,
            capacity: Some(&tariff.capacity),
            vat_share: rates.on(meter.zone, day(2026, 10, 1)).vat_share,
        });
        assert_eq!(to_units(month.capacity_nok), Some(capacity), "meter {m}");
        assert_eq!(
            to_units(month.capacity_vat_nok),
            Some(capacity_vat),
            "meter {m}"
        );
        let spot: i128 = expected.iter().filter_map(|e| e.spot).sum();
        assert_eq!(
            to_units(month.spot_nok),
            None,
            "meter {m}: a missing hour leaves the month's spot unknown"
        );
        assert!(spot > 0);
        assert_eq!(
            to_units(month.grid_energy_nok),
            Some(expected.iter().map(|e| e.grid).sum()),
            "meter {m}"
        );
        assert_eq!(month.total_nok, None, "meter {m}");
        assert!(!month.complete);
        // With the missing hour left out, the month's total is the oracle's.
        let priced: Vec<_> = got.iter().filter(|h| h.complete).copied().collect();
        let month = cost_of_month(&MonthInput {
            hours: &priced,
            demand_hours: &demand_hours,
            history: &demand_hours,
            fuse_amperes: None,
            capacity: Some(&tariff.capacity),
            vat_share: rates.on(meter.zone, day(2026, 10, 1)).vat_share,
        });
        let total: i128 =
            expected.iter().filter_map(|e| e.total).sum::<i128>() + capacity + capacity_vat;
        assert_eq!(to_units(month.total_nok), Some(total), "meter {m}");
        assert!(month.complete);
    }
}

// ---- weather ----

#[test]
fn a_meter_gets_its_named_or_nearest_station_and_days_their_mean() {
    use super::weather::{daily_mean, distance_km, station_for, Station};
    // Oslo (Blindern) to Bergen (Florida): about 305 km.
    let km = distance_km(59.94, 10.72, 60.38, 5.33);
    assert!((300.0..310.0).contains(&km), "{km}");
    let stations = [
        Station {
            id: "SN50540".into(),
            latitude: 60.38,
            longitude: 5.33,
        },
        Station {
            id: "SN18700".into(),
            latitude: 59.94,
            longitude: 10.72,
        },
    ];
    assert_eq!(
        station_for(None, Some((59.91, 10.75)), &stations),
        Some("SN18700")
    );
    assert_eq!(
        station_for(None, Some((60.39, 5.32)), &stations),
        Some("SN50540")
    );
    assert_eq!(
        station_for(Some("SN4780"), Some((60.39, 5.32)), &stations),
        Some("SN4780")
    );
    assert_eq!(station_for(None, None, &stations), None);
    // 24 hours: -1, 0, 1, ... 22 -> mean 10.5; 23 values of 1 and one of 2 -> 25/24 =
    // 1.041666... -> 1.042; 17 values -> none.
    let hours: Vec<Decimal> = (-1..23).map(Decimal::from).collect();
    assert_eq!(daily_mean(&hours), Some(d("10.5")));
    let mut ones = vec![d("1"); 23];
    ones.push(d("2"));
    assert_eq!(daily_mean(&ones), Some(d("1.042")));
    assert_eq!(daily_mean(&hours[..17]), None);
}

/// Peaks 6.3, 5.9, 5.1 (5.7667 kW, step 5): the 10 kW step needs a new day whose hour
/// replaces 5.1 with 3 × 10 - (6.3 + 5.9) = 17.8 kWh. With two days of 6 and 4 kWh (5 kW,
/// step 5) it needs 3 × 10 - 10 = 20 kWh. At the top step there is no next one.
#[test]
fn an_app_can_warn_how_much_one_hour_moves_the_month_up_a_step() {
    let steps = Steps {
        steps: [0, 2, 5, 10]
            .iter()
            .map(|f| Step {
                from: Decimal::from(*f),
                nok_per_year: Decimal::from(1200 * (f + 1)),
            })
            .collect(),
        threshold_included: true,
    };
    let days = |kwh: &[&str]| -> Vec<HourKwh> {
        kwh.iter()
            .enumerate()
            .map(|(i, k)| HourKwh {
                local_date: day(2026, 3, 1 + u32::try_from(i).unwrap()),
                local_hour: 8,
                kwh: d(k),
            })
            .collect()
    };
    let rule = capacity::rule("top3_days").unwrap();
    let demand_of = |hours: &[HourKwh]| {
        rule.demand(&DemandInput {
            month: hours,
            history: hours,
            fuse_amperes: None,
        })
        .unwrap()
    };
    let full = days(&["4.2", "3.8", "5.1", "6.3", "2.0", "5.9", "4.8"]);
    let (next, needed) = capacity::next_step(&steps, &demand_of(&full), 3).unwrap();
    assert_eq!((next.from, needed), (d("10"), d("17.8")));
    let two = days(&["6", "4"]);
    let (next, needed) = capacity::next_step(&steps, &demand_of(&two), 3).unwrap();
    assert_eq!((next.from, needed), (d("10"), d("20")));
    let top = days(&["12", "11", "10"]);
    assert_eq!(capacity::next_step(&steps, &demand_of(&top), 3), None);
}

// ---- exchange rates ----

/// An EUR price without a rate of its own is converted with the rate published before its
/// delivery day (Oslo's date), one with its own rate keeps it, and one with neither is
/// left out; the rates come back from the `exchange_rates` batch an import writes.
#[test]
fn eur_prices_take_their_own_rate_or_the_one_published_before_their_delivery_day() {
    use super::exchange::ExchangeRate;
    use super::tables::{exchange_rates_from, prices_from};
    use crate::inputs::{exchange, price, InputContext};
    let ctx = InputContext {
        ingested_at_micros: 1_768_435_200_000_000,
        max_message_bytes: 4096,
    };
    let rate = |date: NaiveDate, nok: &str| ExchangeRate {
        currency: "EUR".into(),
        date,
        nok_per_unit: d(nok),
    };
    // Two imports: the second publishes the 23rd again, corrected.
    let first = exchange::batch(
        &[
            rate(day(2026, 10, 22), "11.6890"),
            rate(day(2026, 10, 23), "11.7025"),
        ],
        "norges-bank",
        "h1",
        1_000,
    )
    .unwrap();
    let second = exchange::batch(
        &[rate(day(2026, 10, 23), "11.7030")],
        "norges-bank",
        "h2",
        2_000,
    )
    .unwrap();
    let rates = exchange_rates_from(&[second, first]).unwrap();
    assert_eq!(rates.len(), 2);

    let payload = |start: &str, rate: &str| {
        format!(
            r#"{{"schema":"price/v1","area":"NO1","start":"{start}","resolution":"PT60M","price":100,"currency":"EUR","unit":"MWh","source":"t","version":"2026-10-22T12:00:00Z"{rate}}}"#
        )
    };
    let payloads = [
        // 00:00 in Oslo on Saturday the 24th (summer time): Friday the 23rd's rate.
        payload("2026-10-23T22:00:00Z", ""),
        // 23:00 in Oslo on Friday the 23rd: Thursday the 22nd's rate.
        payload("2026-10-23T21:00:00Z", ""),
        // Its own rate wins over the table's.
        payload("2026-10-23T23:00:00Z", r#","exchange_rate":11.5"#),
        // Thursday the 22nd: no rate before it in the table.
        payload("2026-10-22T10:00:00Z", ""),
    ];
    let records: Vec<crate::RawRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| crate::RawRecord {
            partition: 0,
            offset: i64::try_from(i).unwrap(),
            payload: Some(p.as_bytes()),
            replay_tag: None,
        })
        .collect();
    let decoded = price::decode(&records, &ctx);
    assert_eq!(decoded.batch.num_rows(), 4);
    let prices = prices_from(&[decoded.batch], &rates).unwrap();
    let no1 = &prices.prices[&PriceArea::No1];
    let at = |text: &str| {
        no1.get(&text.parse::<chrono::DateTime<Utc>>().unwrap())
            .map(|p| p.1)
    };
    // 100 EUR/MWh x 11.7030 NOK/EUR = 1170.30 NOK/MWh = 117.030 øre/kWh.
    assert_eq!(at("2026-10-23T22:00:00Z"), Some(d("117.030")));
    // 100 x 11.6890 / 10.
    assert_eq!(at("2026-10-23T21:00:00Z"), Some(d("116.890")));
    // 100 x 11.5 / 10.
    assert_eq!(at("2026-10-23T23:00:00Z"), Some(d("115.0")));
    assert_eq!(at("2026-10-22T10:00:00Z"), None);
    // Without the table, only the price with its own rate is known.
    let alone = prices_from(
        &[price::decode(&records, &ctx).batch],
        &super::exchange::ExchangeRates::default(),
    )
    .unwrap();
    assert_eq!(alone.prices[&PriceArea::No1].len(), 1);
}

// ---- weather stations ----

/// A Frost sources document: stations with positions (longitude first), a source that is
/// not a station and one without a position (skipped), a closed station.
const SOURCES: &str = r#"{
  "@context": "https://frost.met.no/schema", "@type": "SourceResponse",
  "data": [
    {"@type": "SensorSystem", "id": "SN18700", "name": "OSLO - BLINDERN",
     "geometry": {"@type": "Point", "coordinates": [10.72, 59.9423], "nearest": false},
     "masl": 94, "validFrom": "1931-01-01T00:00:00.000Z"},
    {"@type": "SensorSystem", "id": "SN50540", "name": "BERGEN - FLORIDA",
     "geometry": {"@type": "Point", "coordinates": [5.3327, 60.383]},
     "validFrom": "1949-11-01T00:00:00.000Z"},
    {"@type": "SensorSystem", "id": "SN18701", "name": "OSLO - GAMLE MÅLER",
     "geometry": {"@type": "Point", "coordinates": [10.75, 59.91]},
     "validFrom": "1960-01-01T00:00:00.000Z", "validTo": "2019-12-31T00:00:00.000Z"},
    {"@type": "InterpolatedDataSource", "id": "idw", "name": "interpolated"},
    {"@type": "SensorSystem", "id": "SN99999", "name": "NO POSITION"}
  ]
}"#;

#[test]
fn frost_sources_give_each_station_its_position_longitude_first() {
    use super::frost::{parse_sources, FrostError};
    let parsed = parse_sources(SOURCES).unwrap();
    assert_eq!(parsed.skipped, 2);
    let ids: Vec<&str> = parsed.stations.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["SN18700", "SN50540", "SN18701"]);
    let blindern = &parsed.stations[0];
    assert_eq!(
        (blindern.latitude, blindern.longitude),
        (59.9423, 10.72),
        "GeoJSON order: [longitude, latitude]"
    );
    assert_eq!(blindern.name.as_deref(), Some("OSLO - BLINDERN"));
    assert_eq!(blindern.valid_to, None);
    assert_eq!(
        parsed.stations[2].valid_to,
        Some(Utc.with_ymd_and_hms(2019, 12, 31, 0, 0, 0).unwrap())
    );
    let bad = |doc: &str| parse_sources(doc).unwrap_err();
    assert!(matches!(bad("[]"), FrostError::Json(_)));
    let station = |id: &str, coordinates: &str| {
        format!(r#"{{"data": [{{"id": "{id}", "geometry": {{"coordinates": {coordinates}}}}}]}}"#)
    };
    for (doc, field) in [
        (station("18700", "[10.72, 59.94]"), "id"),
        (station("SN18700", "[10.72]"), "geometry.coordinates"),
        // Latitude first by mistake: 59.94 is no longitude problem, 100 is no latitude.
        (station("SN18700", "[10.72, 100.0]"), "geometry.coordinates"),
    ] {
        match bad(&doc) {
            FrostError::Invalid { item, field: f, .. } => {
                assert_eq!((item, f), (1, field), "{doc}")
            }
            other => panic!("{doc}: {other:?}"),
        }
    }
    let twice = r#"{"data": [
        {"id": "SN1", "geometry": {"coordinates": [10.0, 60.0]}},
        {"id": "SN1", "geometry": {"coordinates": [10.0, 60.0]}}]}"#;
    assert!(matches!(
        bad(twice),
        FrostError::Invalid {
            item: 2,
            field: "id",
            ..
        }
    ));
}

/// The stations a meter can be near: the newest import of each, closed ones left out; a
/// profile's coordinates take the nearest (worked by hand: Blindern is about 3.7 km from
/// (59.91, 10.75), Florida about 305 km).
#[test]
fn a_meter_with_coordinates_takes_the_nearest_open_station_of_the_newest_import() {
    use super::frost::parse_sources;
    use super::tables::stations_from;
    use super::weather::station_for;
    let parsed = parse_sources(SOURCES).unwrap();
    let first = crate::inputs::stations::batch(&parsed.stations, "frost", "h1", 1_000).unwrap();
    // A later import moves Blindern far north (a correction, say).
    let mut moved = parsed.stations[0].clone();
    moved.latitude = 69.65;
    moved.longitude = 18.96;
    let second = crate::inputs::stations::batch(&[moved], "frost", "h2", 2_000).unwrap();
    let stations = stations_from(&[second.clone(), first.clone()]).unwrap();
    let ids: Vec<&str> = stations.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["SN18700", "SN50540"],
        "the closed SN18701 is left out"
    );
    assert_eq!(stations[0].latitude, 69.65);
    // With the moved Blindern, Bergen is nearer to Oslo than Tromsø.
    assert_eq!(
        station_for(None, Some((59.91, 10.75)), &stations),
        Some("SN50540")
    );
    let original = stations_from(&[first]).unwrap();
    assert_eq!(
        station_for(None, Some((59.91, 10.75)), &original),
        Some("SN18700")
    );
    // A named station wins; neither: none.
    assert_eq!(
        station_for(Some("SN50540"), Some((59.91, 10.75)), &original),
        Some("SN50540")
    );
    assert_eq!(station_for(None, None, &original), None);
}
