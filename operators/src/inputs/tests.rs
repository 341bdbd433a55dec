//! Each contract: a good record becomes the row the contract describes, each kind of bad one
//! a dead letter with its reason, and every record comes out once.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type, TimestampMicrosecondType};
use serde_json::{json, Value};

use super::{observation, price, profile, InputContext};
use crate::dead_letter::Reason;
use crate::tenant::{Deployment, Rules, Tenant};
use crate::{RawRecord, TenantRegistry};

const CTX: InputContext = InputContext {
    ingested_at_micros: 1_768_435_200_000_000,
    max_message_bytes: 4096,
};

fn records(payloads: &[Vec<u8>]) -> Vec<RawRecord<'_>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            partition: 0,
            offset: i64::try_from(i).unwrap(),
            payload: Some(p.as_slice()),
            replay_tag: None,
        })
        .collect()
}

fn with(base: &Value, changes: &[(&str, Value)]) -> Vec<u8> {
    let mut v = base.clone();
    for (k, change) in changes {
        if change.is_null() {
            v.as_object_mut().unwrap().remove(*k);
        } else {
            v[*k] = change.clone();
        }
    }
    serde_json::to_vec(&v).unwrap()
}

/// The reasons of the dead letters, by offset.
fn reasons(out: &super::InputOutput) -> Vec<(i64, Reason)> {
    out.dead_letters
        .iter()
        .map(|d| (d.offset, d.reason))
        .collect()
}

#[test]
fn prices_become_rows_or_dead_letters_with_their_reason() {
    let good = json!({"schema": "price/v1", "area": "NO1", "start": "2026-01-15T00:15:00Z",
        "resolution": "PT15M", "price": 45.12, "currency": "EUR", "unit": "MWh",
        "source": "entsoe", "version": "2026-01-14T12:42:00Z"});
    let payloads = vec![
        with(&good, &[]),
        with(
            &good,
            &[
                ("currency", json!("NOK")),
                ("unit", json!("kWh")),
                ("price", json!(1.09505)),
                ("exchange_rate", json!(11.6346)),
                ("resolution", json!("PT60M")),
                ("start", json!("2026-01-15T01:00:00+01:00")),
            ],
        ),
        with(&good, &[("area", json!("SE3"))]),
        with(&good, &[("start", json!("2026-01-15T00:10:00Z"))]),
        with(&good, &[("price", json!(4000.01))]),
        with(&good, &[("price", json!(-500.01))]),
        with(&good, &[("price", json!("45.12"))]),
        with(&good, &[("currency", json!("USD"))]),
        with(&good, &[("version", Value::Null)]),
        with(&good, &[("schema", json!("price/v2"))]),
        with(&good, &[("price", json!(45.1234567))]),
        b"[1,2]".to_vec(),
        b"{\"schema\": ".to_vec(),
        // 60 NOK/kWh without a rate: in range at 15 NOK/EUR; 61 is not.
        with(
            &good,
            &[
                ("currency", json!("NOK")),
                ("unit", json!("kWh")),
                ("price", json!(60)),
            ],
        ),
        with(
            &good,
            &[
                ("currency", json!("NOK")),
                ("unit", json!("kWh")),
                ("price", json!(61)),
            ],
        ),
        with(&good, &[("source", json!("a contact: 01017010170"))]),
    ];
    let out = price::decode(&records(&payloads), &CTX);
    assert_eq!(
        out.batch.num_rows() + out.dead_letters.len(),
        payloads.len()
    );
    assert_eq!(
        reasons(&out),
        vec![
            (2, Reason::InvalidValue),
            (3, Reason::MisalignedInterval),
            (4, Reason::PriceOutOfRange),
            (5, Reason::PriceOutOfRange),
            (6, Reason::WrongType),
            (7, Reason::UnitNotAllowed),
            (8, Reason::MissingField),
            (9, Reason::UnsupportedSchema),
            (10, Reason::InvalidValue),
            (11, Reason::NotAnObject),
            (12, Reason::MalformedJson),
            (14, Reason::PriceOutOfRange),
            (15, Reason::SensitiveIdentifier),
        ]
    );
    // Reference data keeps its payload, except one holding a national identity number.
    assert!(out.dead_letters[0].payload.is_some());
    assert!(out.dead_letters.last().unwrap().payload.is_none());
    assert!(!out
        .dead_letters
        .last()
        .unwrap()
        .detail
        .contains("01017010170"));

    let b = &out.batch;
    assert_eq!(b.num_rows(), 3);
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    let price = col("price");
    let price = price.as_primitive::<Decimal128Type>();
    // 45.12 and 1.09505 at six decimals.
    assert_eq!(price.value(0), 45_120_000);
    assert_eq!(price.value(1), 1_095_050);
    let rate = col("exchange_rate");
    let rate = rate.as_primitive::<Decimal128Type>();
    assert!(rate.is_null(0));
    assert_eq!(rate.value(1), 11_634_600);
    let start = col("interval_start");
    let start = start.as_primitive::<TimestampMicrosecondType>();
    // 2026-01-15T00:15:00Z and 2026-01-15T00:00:00Z (01:00+01:00).
    assert_eq!(start.value(0), 1_768_436_100_000_000);
    assert_eq!(start.value(1), 1_768_435_200_000_000);
    let minutes = col("resolution_minutes");
    assert_eq!(
        minutes.as_primitive::<Int32Type>().values().to_vec(),
        vec![15, 60, 15]
    );
    // 20468 is 2026-01-15 (days since 1970-01-01), the Oslo date of both.
    let date = col("local_date");
    assert_eq!(date.as_primitive::<Date32Type>().value(0), 20468);
    assert_eq!(date.as_primitive::<Date32Type>().value(1), 20468);
    assert_eq!(col("currency").as_string::<i32>().value(1), "NOK");
}

fn tenants() -> TenantRegistry {
    let tenant = |id: &str, deployment| Tenant {
        id: id.into(),
        deployment,
        timezone: chrono_tz::Europe::Oslo,
        rules: Rules {
            gsrn_prefixes: vec!["707057500".into()],
            ..Rules::default()
        },
    };
    TenantRegistry::new([
        tenant("acme", Deployment::Private),
        tenant("oslo", Deployment::Public),
    ])
    .unwrap()
}

#[test]
fn profiles_are_kept_for_private_tenants_with_coarse_coordinates() {
    let good = json!({"schema": "meter-profile/v1", "tenant": "acme",
        "meter_id": "707057500000000018", "valid_from": "2026-01-15", "price_area": "NO1",
        "grid_company_gln": "7080000000012", "customer_group": "household",
        "tax_zone": "standard", "scheme": "norgespris", "fuse_amperes": 25,
        "latitude": 59.915, "longitude": 10.7549, "version": "2026-01-14T08:00:00Z"});
    let payloads = vec![
        with(&good, &[]),
        with(&good, &[("tenant", json!("oslo"))]),
        with(&good, &[("tenant", json!("nobody"))]),
        with(&good, &[("meter_id", json!("707057500000000019"))]),
        with(&good, &[("meter_id", json!("123456789012345675"))]),
        with(&good, &[("grid_company_gln", json!("7080000000017"))]),
        with(&good, &[("scheme", json!("fastpris"))]),
        with(&good, &[("longitude", Value::Null)]),
        with(&good, &[("fuse_amperes", json!(25.5))]),
        with(&good, &[("valid_from", json!("15.01.2026"))]),
        with(
            &good,
            &[
                ("latitude", Value::Null),
                ("longitude", Value::Null),
                ("fuse_amperes", Value::Null),
                ("customer_group", json!("liten_næring")),
                ("scheme", json!("none")),
                ("tax_zone", json!("finnmark")),
                ("meter_id", json!("707057500000000025")),
            ],
        ),
        with(&good, &[("owner", json!("01017010170"))]),
    ];
    let tenants = tenants();
    let out = profile::decode(&records(&payloads), &CTX, &tenants);
    assert_eq!(
        out.batch.num_rows() + out.dead_letters.len(),
        payloads.len()
    );
    assert_eq!(
        reasons(&out),
        vec![
            (1, Reason::TenantNotPrivate),
            (2, Reason::UnknownTenant),
            (3, Reason::InvalidGsrn),
            (4, Reason::GsrnPrefix),
            (5, Reason::InvalidValue),
            (6, Reason::InvalidValue),
            (7, Reason::MissingField),
            (8, Reason::InvalidValue),
            (9, Reason::InvalidValue),
            (11, Reason::SensitiveIdentifier),
        ]
    );
    // A profile is personal data: no dead letter keeps its payload.
    assert!(out.dead_letters.iter().all(|d| d.payload.is_none()));
    assert_eq!(out.dead_letters[0].tenant.as_deref(), Some("oslo"));

    let b = &out.batch;
    assert_eq!(b.num_rows(), 2);
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    // 59.915 -> 59.92 (half to even: 1 is odd), 10.7549 -> 10.75.
    let lat = col("latitude");
    assert_eq!(lat.as_primitive::<Decimal128Type>().value(0), 5992);
    let lon = col("longitude");
    assert_eq!(lon.as_primitive::<Decimal128Type>().value(0), 1075);
    assert!(lat.is_null(1));
    assert_eq!(col("scheme").as_string::<i32>().value(0), "norgespris");
    assert_eq!(
        col("customer_group").as_string::<i32>().value(1),
        "small_business"
    );
    assert_eq!(col("tax_zone").as_string::<i32>().value(1), "finnmark");
    assert_eq!(
        col("valid_from").as_primitive::<Date32Type>().value(0),
        20468
    );
    assert_eq!(col("fuse_amperes").as_primitive::<Int32Type>().value(0), 25);
}

#[test]
fn observations_keep_their_value_exactly() {
    let good = json!({"schema": "observation/v1", "station": "SN18700",
        "time": "2026-01-15T00:00:00Z", "element": "air_temperature", "value": -3.4,
        "unit": "degC", "resolution": "PT1H", "source": "frost"});
    let payloads = vec![
        with(&good, &[]),
        with(&good, &[("value", json!(-120))]),
        with(&good, &[("value", json!(1.2345))]),
        with(&good, &[("station", json!(""))]),
        with(&good, &[("time", json!("yesterday"))]),
        Vec::new(),
    ];
    let mut recs = records(&payloads);
    recs[5].payload = None;
    let out = observation::decode(&recs, &CTX);
    assert_eq!(
        reasons(&out),
        vec![
            (1, Reason::InvalidValue),
            (2, Reason::InvalidValue),
            (3, Reason::InvalidValue),
            (4, Reason::InvalidTimestamp),
            (5, Reason::EmptyPayload),
        ]
    );
    let b = &out.batch;
    assert_eq!(b.num_rows(), 1);
    let value = b.column_by_name("value").unwrap();
    assert_eq!(value.as_primitive::<Decimal128Type>().value(0), -3400);
}

#[test]
fn an_oversized_payload_is_refused_before_it_is_read() {
    let big = vec![b' '; CTX.max_message_bytes + 1];
    let out = price::decode(&records(&[big]), &CTX);
    assert_eq!(reasons(&out), vec![(0, Reason::TooLarge)]);
    assert!(out.dead_letters[0].payload.is_none());
}

#[test]
fn a_price_record_written_for_the_topic_reads_back_the_same() {
    let payload = [
        serde_json::to_vec(&json!({"schema": "price/v1", "area": "NO5",
        "start": "2026-10-25T01:45:00+01:00", "resolution": "PT15M", "price": -0.5,
        "currency": "NOK", "unit": "kWh", "exchange_rate": 11.70, "source": "feed",
        "version": "2026-10-24T13:00:00.123456Z"}))
        .unwrap(),
    ];
    let f = super::fields::open(Some(&payload[0]), 4096, price::SCHEMA).unwrap();
    let parsed = price::parse(&f).unwrap();
    let (key, text) = price::record(&parsed);
    assert_eq!(key, "NO5");
    let again = super::fields::open(Some(text.as_bytes()), 4096, price::SCHEMA).unwrap();
    assert_eq!(price::parse(&again).unwrap(), parsed);
    assert!(
        text.contains("\"price\":-0.5") && text.contains("\"exchange_rate\":11.7"),
        "{text}"
    );
}

#[test]
fn an_observation_record_written_for_the_topic_reads_back_the_same() {
    let payload = serde_json::to_vec(&json!({"schema": "observation/v1", "station": "SN18700",
        "time": "2026-03-29T01:00:00+01:00", "element": "air_temperature", "value": -0.125,
        "unit": "degC", "resolution": "PT1H", "source": "frost"}))
    .unwrap();
    let f = super::fields::open(Some(&payload), 4096, observation::SCHEMA).unwrap();
    let parsed = observation::parse(&f).unwrap();
    let (key, text) = observation::record(&parsed);
    assert_eq!(key, "SN18700");
    assert!(text.contains("\"value\":-0.125"), "{text}");
    let again = super::fields::open(Some(text.as_bytes()), 4096, observation::SCHEMA).unwrap();
    assert_eq!(observation::parse(&again).unwrap(), parsed);
}

#[test]
fn an_imported_tariff_file_is_one_row_per_tariff_with_the_file() {
    use crate::economics::frinettleie::parse_tariff_file;
    use crate::economics::tests::TARIFF_FILE;
    let tariffs = parse_tariff_file(TARIFF_FILE).unwrap();
    let b = super::tariffs::batch(&tariffs, TARIFF_FILE, "h1", 1_768_435_200_000_000).unwrap();
    assert_eq!(b.num_rows(), 2);
    let text = |name: &str, i: usize| {
        let c = b.column_by_name(name).unwrap().as_string::<i32>();
        c.is_valid(i).then(|| c.value(i).to_owned())
    };
    assert_eq!(text("company", 0).as_deref(), Some("Fjordnett AS"));
    assert_eq!(text("gln", 1).as_deref(), Some("7080000000012"));
    assert_eq!(
        text("customer_groups", 0).as_deref(),
        Some("household,cabin")
    );
    assert_eq!(text("customer_groups", 1).as_deref(), Some("household"));
    assert_eq!(text("capacity_rule", 1).as_deref(), Some("top3_days"));
    assert_eq!(
        text("capacity_steps", 1).as_deref(),
        Some("0:2400;5:5404.8;10:7564.8")
    );
    assert_eq!(text("document", 1).as_deref(), Some(TARIFF_FILE));
    let from = b
        .column_by_name("valid_from")
        .unwrap()
        .as_primitive::<Date32Type>();
    let to = b
        .column_by_name("valid_to")
        .unwrap()
        .as_primitive::<Date32Type>();
    // 2025-01-01 and 2026-01-01 as days since 1970-01-01.
    assert_eq!((from.value(0), to.value(0)), (20_089, 20_454));
    assert!(to.is_null(1), "open-ended");
    let base = b
        .column_by_name("energy_base_ore_per_kwh")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    assert_eq!((base.value(0), base.value(1)), (30_000_000, 29_720_000));
    let exceptions = b
        .column_by_name("energy_exceptions")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!((exceptions.value(0), exceptions.value(1)), (0, 3));
    let version = b
        .column_by_name("version")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(version.value(1), 1_768_435_200_000_000);
}

#[test]
fn the_default_rates_become_the_tax_rates_table_in_order() {
    use crate::economics::rates::RateTable;
    let table = RateTable::defaults();
    let b = super::rates::batch(table.rows()).unwrap();
    assert_eq!(b.num_rows(), table.rows().len());
    let rate = b.column_by_name("rate").unwrap().as_string::<i32>();
    let zone = b.column_by_name("zone").unwrap().as_string::<i32>();
    let from = b
        .column_by_name("valid_from")
        .unwrap()
        .as_primitive::<Date32Type>();
    let value = b
        .column_by_name("value")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    // 2026's consumption tax in every zone (Finnmark's own row says 0): 7.13 øre
    // from 1 January 2026 (20454 days after 1970-01-01).
    let found = (0..b.num_rows()).any(|i| {
        rate.value(i) == "consumption_tax"
            && zone.is_null(i)
            && from.value(i) == 20_454
            && value.value(i) == 7_130_000
    });
    assert!(found, "2026's consumption tax is in the table");
    let position = b
        .column_by_name("position")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert!((0..b.num_rows()).all(|i| position.value(i) == i as i32));
}
