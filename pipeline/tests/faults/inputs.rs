//! The energy-economics inputs on real infrastructure (tansu + S3): spot prices,
//! meter profiles and weather observations, each from its own topic, land in their
//! tables exactly once with exact values; every refused record is a dead letter of
//! its topic with its reason; each input's ledger balances; a second process of the
//! same group, started after more records arrive, stores only the new ones.

use std::collections::BTreeMap;
use std::time::Duration;

use meterline::dev::testkit::{free_port, unique_name};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde_json::json;

use crate::rig::{eventually, eventually_async, metric, scrape, serial, Rig};
use crate::GRACE;

/// A message of an input topic, and the reason it must be refused with (None: it
/// must be stored).
struct Input {
    key: String,
    payload: String,
    refused: Option<&'static str>,
}

fn good(key: &str, payload: &serde_json::Value) -> Input {
    Input {
        key: key.to_owned(),
        payload: payload.to_string(),
        refused: None,
    }
}

fn bad(key: &str, payload: impl Into<String>, reason: &'static str) -> Input {
    Input {
        key: key.to_owned(),
        payload: payload.into(),
        refused: Some(reason),
    }
}

/// Hundredths as the decimal text a feed would send ("-12.05", "7.00").
fn hundredths(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// Tenths as decimal text ("-0.5", "1.1").
fn tenths_text(tenths: i64) -> String {
    let sign = if tenths < 0 { "-" } else { "" };
    format!("{sign}{}.{}", tenths.abs() / 10, tenths.abs() % 10)
}

/// A decimal's text (as DataFusion casts a decimal to text) in units of
/// 10^-`scale`, parsed here, independently of the code under test.
fn units(text: &str, scale: u32) -> i128 {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(
        fraction.len() <= scale as usize,
        "{text}: too many decimals"
    );
    let mut fraction = fraction.to_owned();
    while fraction.len() < scale as usize {
        fraction.push('0');
    }
    let value: i128 = format!("{whole}{fraction}").parse().unwrap();
    if negative {
        -value
    } else {
        value
    }
}

/// The prices of the autumn DST day 2026-10-25 in NO1 (100 quarter-hours) and
/// NO2 (25 hours), version `version`, with prices in cents given by `cents`; and
/// the refused records.
fn prices(version: &str, cents: impl Fn(i64) -> i64) -> Vec<Input> {
    // 2026-10-25 00:00 Oslo is 2026-10-24T22:00Z; the day has 25 hours.
    let day_start = chrono::DateTime::parse_from_rfc3339("2026-10-24T22:00:00Z").unwrap();
    let mut out = Vec::new();
    for q in 0..100 {
        let start = day_start + chrono::Duration::minutes(15 * q);
        out.push(good(
            "NO1",
            &json!({"schema": "price/v1", "area": "NO1", "start": start.to_rfc3339(),
                "resolution": "PT15M", "price": hundredths(cents(q)).parse::<serde_json::Number>().unwrap(),
                "currency": "EUR", "unit": "MWh", "source": "entsoe", "version": version}),
        ));
    }
    for h in 0..25 {
        let start = day_start + chrono::Duration::hours(h);
        out.push(good(
            "NO2",
            &json!({"schema": "price/v1", "area": "NO2", "start": start.to_rfc3339(),
                "resolution": "PT60M", "price": hundredths(cents(1000 + h)).parse::<serde_json::Number>().unwrap(),
                "currency": "EUR", "unit": "MWh", "source": "entsoe", "version": version}),
        ));
    }
    out
}

/// An ENTSO-E A44 document of NO1's 2026-10-25 (100 quarter-hours) with curve
/// type A03: a position priced as the one before it is left out.
fn a44_no1_day(cents: impl Fn(i64) -> i64) -> String {
    let mut points = String::new();
    for q in 0..100 {
        if q > 0 && cents(q) == cents(q - 1) {
            continue;
        }
        points.push_str(&format!(
            "<Point><position>{}</position><price.amount>{}</price.amount></Point>\n",
            q + 1,
            hundredths(cents(q))
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">
  <type>A44</type>
  <TimeSeries>
    <mRID>1</mRID>
    <in_Domain.mRID codingScheme="A01">10YNO-1--------2</in_Domain.mRID>
    <out_Domain.mRID codingScheme="A01">10YNO-1--------2</out_Domain.mRID>
    <currency_Unit.name>EUR</currency_Unit.name>
    <price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>A03</curveType>
    <Period>
      <timeInterval><start>2026-10-24T22:00Z</start><end>2026-10-25T23:00Z</end></timeInterval>
      <resolution>PT15M</resolution>
{points}    </Period>
  </TimeSeries>
</Publication_MarketDocument>"#
    )
}

fn refused_prices() -> Vec<Input> {
    vec![
        bad(
            "NO1",
            json!({"schema": "price/v1", "area": "NO1", "start": "2026-10-26T00:00:00Z",
                "resolution": "PT60M", "price": 4000.01, "currency": "EUR", "unit": "MWh",
                "source": "entsoe", "version": "2026-10-25T12:00:00Z"})
            .to_string(),
            "price_out_of_range",
        ),
        bad(
            "NO1",
            "{\"schema\": \"price/v1\", \"area\": ",
            "malformed_json",
        ),
        bad(
            "NO1",
            json!({"schema": "price/v9", "area": "NO1"}).to_string(),
            "unsupported_schema",
        ),
        bad(
            "NO3",
            json!({"schema": "price/v1", "area": "NO3", "start": "2026-10-26T00:07:00Z",
                "resolution": "PT15M", "price": 10, "currency": "EUR", "unit": "MWh",
                "source": "entsoe", "version": "2026-10-25T12:00:00Z"})
            .to_string(),
            "misaligned_interval",
        ),
    ]
}

fn profile(tenant: &str, meter: &str, valid_from: &str, scheme: &str) -> serde_json::Value {
    json!({"schema": "meter-profile/v1", "tenant": tenant, "meter_id": meter,
        "valid_from": valid_from, "price_area": "NO1", "grid_company_gln": "7080000000012",
        "customer_group": "household", "tax_zone": "standard", "scheme": scheme,
        "fuse_amperes": 63, "latitude": 59.91, "longitude": 10.75,
        "version": "2026-10-01T08:00:00Z"})
}

fn profiles() -> Vec<Input> {
    let meter = |n| meterline::dev::generator::gsrn(n);
    let mut bad_gsrn = meter(3);
    bad_gsrn.replace_range(17..18, if bad_gsrn.ends_with('0') { "1" } else { "0" });
    vec![
        good(
            &meter(1),
            &profile("acme-industri", &meter(1), "2026-01-01", "stromstotte"),
        ),
        // The same meter switches to Norgespris on 1 October.
        good(
            &meter(1),
            &profile("acme-industri", &meter(1), "2026-10-01", "norgespris"),
        ),
        good(
            &meter(2),
            &profile("acme-industri", &meter(2), "2026-01-01", "none"),
        ),
        bad(
            &meter(4),
            profile("oslo-utility", &meter(4), "2026-01-01", "stromstotte").to_string(),
            "tenant_not_private",
        ),
        bad(
            &meter(5),
            profile("nobody", &meter(5), "2026-01-01", "stromstotte").to_string(),
            "unknown_tenant",
        ),
        bad(
            &bad_gsrn,
            profile("acme-industri", &bad_gsrn, "2026-01-01", "stromstotte").to_string(),
            "invalid_gsrn",
        ),
    ]
}

/// Hourly air temperatures of 2026-10-25 at one station, in tenths of a degree.
fn observations() -> (Vec<Input>, i128) {
    let day_start = chrono::DateTime::parse_from_rfc3339("2026-10-24T22:00:00Z").unwrap();
    let mut out = Vec::new();
    let mut tenths = 0i128;
    for h in 0..25 {
        let t = (h * 7 % 23) - 11;
        tenths += i128::from(t);
        out.push(good(
            "SN18700",
            &json!({"schema": "observation/v1", "station": "SN18700",
                "time": (day_start + chrono::Duration::hours(h)).to_rfc3339(),
                "element": "air_temperature", "value": tenths_text(t).parse::<serde_json::Number>().unwrap(),
                "unit": "degC", "resolution": "PT1H", "source": "frost"}),
        ));
    }
    out.push(bad(
        "SN18700",
        json!({"schema": "observation/v1", "station": "SN18700", "time": "2026-10-25T12:00:00Z",
            "element": "air_temperature", "value": "warm", "unit": "degC", "resolution": "PT1H",
            "source": "frost"})
        .to_string(),
        "wrong_type",
    ));
    (out, tenths)
}

async fn produce(rig: &Rig, topic: &str, inputs: &[Input]) {
    let mut config = ClientConfig::new();
    for (k, v) in rig.broker.client_properties() {
        config.set(k, v);
    }
    let producer: FutureProducer = config
        .set("bootstrap.servers", rig.broker.bootstrap())
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    for i in inputs {
        producer
            .send(
                FutureRecord::to(topic).key(&i.key).payload(&i.payload),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    producer
        .flush(Timeout::After(Duration::from_secs(30)))
        .unwrap();
}

/// The reasons the inputs must be refused with, counted.
fn reasons(inputs: &[Input]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in inputs.iter().filter_map(|i| i.refused) {
        *out.entry(r.to_owned()).or_default() += 1;
    }
    out
}

async fn stored_reasons(rig: &Rig, topic: &str) -> Result<BTreeMap<String, u64>, String> {
    let batches = rig
        .query(&format!(
            "SELECT reason, count(*) AS n FROM dead_letters WHERE source_topic = '{topic}' GROUP BY reason"
        ))
        .await?;
    let mut out = BTreeMap::new();
    for b in batches {
        let reason = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| e.to_string())?;
        let reason = arrow::array::AsArray::as_string::<i32>(&reason);
        let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b.column(1));
        for i in 0..b.num_rows() {
            out.insert(reason.value(i).to_owned(), n.value(i) as u64);
        }
    }
    Ok(out)
}

async fn text(rig: &Rig, sql: &str) -> String {
    let batches = rig
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let column =
        arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Utf8).unwrap();
    assert!(!arrow::array::Array::is_null(&column, 0), "{sql}: null");
    let column = arrow::array::AsArray::as_string::<i32>(&column);
    column.value(0).to_owned()
}

/// Per input, the records consumed must equal the sum of their outcomes, and the
/// written ones the rows expected.
fn assert_input_ledger(metrics: &str, input: &str, written: u64, dead_lettered: u64) {
    let value = |name: &str, outcome: Option<&str>| -> f64 {
        let wanted = match outcome {
            Some(o) => format!("{name}{{input=\"{input}\",outcome=\"{o}\"}}"),
            None => format!("{name}{{input=\"{input}\"}}"),
        };
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&wanted)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{wanted} not exported"))
    };
    let consumed = value("meterline_input_records_consumed_total", None);
    let outcomes: f64 = [
        "written",
        "dead_lettered",
        "already_stored",
        "revoked",
        "fenced",
        "uncommitted_at_exit",
    ]
    .iter()
    .map(|o| value("meterline_input_records_total", Some(o)))
    .sum();
    assert_eq!(consumed, outcomes, "{input}: consumed != sum of outcomes");
    assert_eq!(
        value("meterline_input_records_total", Some("written")),
        written as f64,
        "{input}: written"
    );
    assert_eq!(
        value("meterline_input_records_total", Some("dead_lettered")),
        dead_lettered as f64,
        "{input}: dead letters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_profiles_and_weather_land_exactly_once_with_their_dead_letters() {
    let _serial = serial().await;
    let rig = Rig::new(1);
    let topics = [
        unique_name("prices"),
        unique_name("profiles"),
        unique_name("weather"),
    ];
    rig.broker.create_topic(&topics[0], 2);
    rig.broker.create_topic(&topics[1], 1);
    rig.broker.create_topic(&topics[2], 1);

    let cents = |i: i64| (i * 7919) % 20_000 - 1_000;
    let mut price_inputs = prices("2026-10-24T12:00:00Z", cents);
    price_inputs.extend(refused_prices());
    let profile_inputs = profiles();
    let (weather_inputs, tenths) = observations();
    produce(&rig, &topics[0], &price_inputs).await;
    produce(&rig, &topics[1], &profile_inputs).await;
    produce(&rig, &topics[2], &weather_inputs).await;
    let stored = |inputs: &[Input]| inputs.iter().filter(|i| i.refused.is_none()).count() as u64;
    let price_cents: i128 = (0..100)
        .map(cents)
        .chain((0..25).map(|h| cents(1000 + h)))
        .map(i128::from)
        .sum();

    let port = free_port();
    let config = rig.config("inputs", Some(port), "max_batch_rows = 1000");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[inputs]\nprices_topic = \"{}\"\nprofiles_topic = \"{}\"\nweather_topic = \"{}\"\n",
        topics[0], topics[1], topics[2]
    ));
    std::fs::write(&config, &toml).unwrap();

    let mut first = rig.spawn("first", &config);
    let expected = [
        ("spot_prices", stored(&price_inputs)),
        ("meter_profiles", stored(&profile_inputs)),
        ("weather_observations", stored(&weather_inputs)),
    ];
    for (table, rows) in expected {
        eventually_async(
            &format!("{rows} rows in {table}"),
            Duration::from_secs(120),
            || async {
                rig.try_count(&format!("SELECT count(*) FROM {table}"))
                    .await
                    .is_ok_and(|n| n == rows)
            },
        )
        .await;
    }
    let inputs = [&price_inputs, &profile_inputs, &weather_inputs];
    for (topic, inputs) in topics.iter().zip(inputs) {
        let want = reasons(inputs);
        eventually_async(
            &format!("dead letters of {topic}"),
            Duration::from_secs(60),
            || async { stored_reasons(&rig, topic).await.is_ok_and(|r| r == want) },
        )
        .await;
    }

    // Values, exactly: prices in cents, temperatures in tenths.
    let sum = text(&rig, "SELECT CAST(sum(price) AS VARCHAR) FROM spot_prices").await;
    assert_eq!(units(&sum, 6), price_cents * 10_000, "sum of prices");
    let quarters = rig
        .count("SELECT count(*) FROM spot_prices WHERE area = 'NO1' AND resolution_minutes = 15 AND local_date = DATE '2026-10-25'")
        .await;
    assert_eq!(quarters, 100, "the DST day has 100 quarter-hours");
    let sum = text(
        &rig,
        "SELECT CAST(sum(value) AS VARCHAR) FROM weather_observations",
    )
    .await;
    assert_eq!(units(&sum, 3), tenths * 100, "sum of temperatures");
    // The switch to Norgespris is a second version of the profile, from its date.
    let switched = rig
        .count(&format!(
            "SELECT count(*) FROM meter_profiles WHERE meter = '{}' AND scheme = 'norgespris' AND valid_from = DATE '2026-10-01'",
            meterline::dev::generator::gsrn(1)
        ))
        .await;
    assert_eq!(switched, 1);
    // A refused profile keeps no payload: it may hold personal data.
    let payloads = rig
        .count(&format!(
            "SELECT count(*) FROM dead_letters WHERE source_topic = '{}' AND payload IS NOT NULL",
            topics[1]
        ))
        .await;
    assert_eq!(payloads, 0, "refused profiles keep no payload");

    let mut metrics = String::new();
    eventually("the inputs' metrics", Duration::from_secs(30), || {
        scrape(port).is_some_and(|m| {
            let done = metric(&m, "meterline_input_records_consumed_total")
                == (price_inputs.len() + profile_inputs.len() + weather_inputs.len()) as f64;
            metrics = m;
            done
        })
    })
    .await;
    for (input, inputs) in ["prices", "profiles", "weather"].iter().zip(inputs) {
        let refused = inputs.len() as u64 - stored(inputs);
        assert_input_ledger(&metrics, input, stored(inputs), refused);
    }
    assert!(first.terminate(GRACE).is_some_and(|s| s.success()));

    // A newer version of the NO1 day arrives as an ENTSO-E A44 file (A03: a
    // quarter priced as the one before it is left out), imported with
    // `meterline import prices`; a second process of the group stores it and
    // nothing of the first run again.
    let newer = |q: i64| cents(q - q % 4) + 1;
    let file = rig.dir.path().join("a44.xml");
    std::fs::write(&file, a44_no1_day(newer)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(["import", "prices", "--config"])
        .arg(&config)
        .arg(&file)
        .args(["--version", "2026-10-25T12:00:00Z"])
        .output()
        .expect("run meterline import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("produced 100 records"),
        "meterline import prices: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut second = rig.spawn("second", &config);
    let total = stored(&price_inputs) + 100;
    eventually_async(
        &format!("{total} rows in spot_prices"),
        Duration::from_secs(120),
        || async {
            rig.try_count("SELECT count(*) FROM spot_prices")
                .await
                .is_ok_and(|n| n == total)
        },
    )
    .await;
    assert_eq!(
        rig.count("SELECT count(*) FROM (SELECT DISTINCT source_partition, source_offset FROM spot_prices)")
            .await,
        total,
        "each offset stored once"
    );
    // The newest version of each NO1 quarter is the imported price.
    let newest = text(
        &rig,
        "SELECT CAST(sum(p.price) AS VARCHAR) FROM spot_prices p JOIN \
         (SELECT interval_start, max(version) AS newest FROM spot_prices WHERE area = 'NO1' GROUP BY interval_start) q \
         ON p.interval_start = q.interval_start AND p.version = q.newest WHERE p.area = 'NO1'",
    )
    .await;
    let no1: i128 = (0..100).map(|q| i128::from(newer(q))).sum();
    assert_eq!(units(&newest, 6), no1 * 10_000);
    assert!(second.terminate(GRACE).is_some_and(|s| s.success()));
    // Grid tariffs have no topic: `meterline import tariffs` appends a file to
    // `grid_tariffs` on S3, once.
    let tariffs = rig.dir.path().join("fjordnett.yml");
    std::fs::write(
        &tariffs,
        "netteier: 'Fjordnett AS'\ngln: ['7080000000012']\ntariffer:\n\
         - kundegrupper: [husholdning, fritid]\n  gyldig_fra: '2026-01-01'\n\
         \x20 energiledd: {grunnpris: 29.72}\n\
         \x20 fastledd: {metode: TRE_DØGNMAX_MND, terskler: [{terskel: 0, pris: 2400}]}\n",
    )
    .unwrap();
    for attempt in ["imported into grid_tariffs", "unchanged"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meterline"))
            .args(["import", "tariffs", "--config"])
            .arg(&config)
            .arg(&tariffs)
            .output()
            .expect("run meterline import tariffs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(attempt),
            "meterline import tariffs: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        rig.count("SELECT count(*) FROM grid_tariffs WHERE company = 'Fjordnett AS' AND customer_groups = 'household,cabin'")
            .await,
        1
    );

    let refused: u64 = inputs.iter().map(|i| i.len() as u64 - stored(i)).sum();
    assert_eq!(
        rig.count(&format!(
            "SELECT count(*) FROM dead_letters WHERE source_topic IN ('{}', '{}', '{}')",
            topics[0], topics[1], topics[2]
        ))
        .await,
        refused,
        "dead letters stored once"
    );
}
