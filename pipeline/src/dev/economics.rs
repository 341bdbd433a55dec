//! The demo's energy economics: spot prices, meter profiles, a grid tariff and temperatures
//! for the generator's private meters, written into the lake through the input contracts'
//! decoders (as the `[inputs]` topics would), the cost tables materialized, and one
//! customer's month printed. The bench `cost` loads the same inputs.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int32Type};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use meterline_operators::economics::rates::RateTable;
use meterline_operators::inputs::{observation, price, profile, InputContext, InputOutput};
use meterline_operators::{RawRecord, TenantRegistry};
use meterline_sinks::{Lake, LakeConfig, OffsetTable, TableSpec};

use crate::config::AggregateSettings;
use crate::cost::{CostMaterializer, CostRound};
use crate::dev::generator::{GeneratorSpec, PRIVATE_TENANT};
use crate::metrics::Metrics;

/// The demo's grid company: Fri nettleie format, prices excluding VAT.
pub const DEMO_TARIFF: &str = r"---
netteier: 'Demo Nett AS'
gln:
  - '7080000000012'
tariffer:
  - kundegrupper: [husholdning, fritid]
    gyldig_fra: '2026-01-01'
    energiledd:
      grunnpris: 35.75
      unntak:
        - navn: Natt og helg
          timer: 22-5
          pris: 27.25
        - navn: Helg
          dager: [helg, helligdager]
          pris: 27.25
    fastledd:
      metode: TRE_DØGNMAX_MND
      terskel_inkludert: false
      terskler:
        - {terskel: 0, pris: 2100}
        - {terskel: 2, pris: 3600}
        - {terskel: 5, pris: 5760}
        - {terskel: 10, pris: 9360}
        - {terskel: 15, pris: 12960}
";

/// The weather station every demo profile names (Oslo - Blindern).
pub const DEMO_STATION: &str = "SN18700";

/// What [`write_inputs`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputCounts {
    pub prices: usize,
    pub profiles: usize,
    pub observations: usize,
    pub tariffs: usize,
}

/// The first instant of a local date in Oslo.
fn oslo_midnight(date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    chrono_tz::Europe::Oslo
        .from_local_datetime(&midnight)
        .earliest()
        .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Quarter prices (EUR/MWh at 11.70 NOK/EUR, ENTSO-E's shape) of the Oslo days around
/// `spec`'s: higher in the morning and evening, lower at night.
fn price_payloads(spec: &GeneratorSpec) -> Vec<String> {
    let from = oslo_midnight(spec.first_day - Duration::days(1));
    let to = oslo_midnight(spec.first_day + Duration::days(i64::from(spec.days) + 1));
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let hour = i64::from(t.with_timezone(&chrono_tz::Europe::Oslo).hour());
        let quarter = i64::from(t.minute() / 15);
        let peak = match hour {
            7..=9 | 16..=19 => 4000,
            22..=23 | 0..=5 => 0,
            _ => 2000,
        };
        let cents = 5500 + peak + quarter * 125 + (t.timestamp() / 86_400 % 3) * 300;
        out.push(format!(
            r#"{{"schema":"price/v1","area":"NO1","start":"{}","resolution":"PT15M","price":{}.{:02},"currency":"EUR","unit":"MWh","exchange_rate":11.70,"source":"demo","version":"{}"}}"#,
            rfc3339(t),
            cents / 100,
            cents % 100,
            rfc3339(from - Duration::hours(12)),
        ));
        t += Duration::minutes(15);
    }
    out
}

/// A profile for every private meter of `spec`, from the first of its first month: every
/// fifth in the north (no VAT), every third switching to Norgespris on the second day.
fn profile_payloads(spec: &GeneratorSpec) -> Vec<String> {
    use chrono::Datelike;
    let month = spec.first_day.with_day(1).unwrap_or(spec.first_day);
    let mut out = Vec::new();
    let mut k = 0usize;
    for i in 0..spec.meters {
        let (tenant, _, meter, _) = spec.meter(i);
        if tenant != PRIVATE_TENANT {
            continue;
        }
        let zone = if k % 5 == 4 { "north" } else { "standard" };
        let profile = |from: NaiveDate, scheme: &str| {
            format!(
                r#"{{"schema":"meter-profile/v1","tenant":"{tenant}","meter_id":"{meter}","valid_from":"{from}","price_area":"NO1","grid_company_gln":"7080000000012","customer_group":"household","tax_zone":"{zone}","scheme":"{scheme}","fuse_amperes":25,"station":"{DEMO_STATION}","version":"{}T00:00:00Z"}}"#,
                month
            )
        };
        out.push(profile(month, "stromstotte"));
        if k % 3 == 2 {
            out.push(profile(spec.first_day + Duration::days(1), "norgespris"));
        }
        k += 1;
    }
    out
}

/// Hourly air temperatures at [`DEMO_STATION`]: cold spells of a week, each day colder.
fn observation_payloads(spec: &GeneratorSpec) -> Vec<String> {
    let from = oslo_midnight(spec.first_day - Duration::days(1));
    let to = oslo_midnight(spec.first_day + Duration::days(i64::from(spec.days) + 1));
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        let hour = i64::from(t.with_timezone(&chrono_tz::Europe::Oslo).hour());
        let day = (t - from).num_days();
        // Tenths of a degree: 6 °C at 14:00 on the first day, 0.5 less per hour away
        // from it, 2.5 colder each day of a week, then again.
        let tenths = 60 - (hour - 14).abs() * 5 - (day % 7) * 25;
        out.push(format!(
            r#"{{"schema":"observation/v1","station":"{DEMO_STATION}","time":"{}","element":"air_temperature","value":{}{}.{},"unit":"degC","resolution":"PT1H","source":"demo"}}"#,
            rfc3339(t),
            if tenths < 0 { "-" } else { "" },
            tenths.abs() / 10,
            tenths.abs() % 10,
        ));
        t += Duration::hours(1);
    }
    out
}

/// Decode `payloads` with `decode` and append them to the input table of `spec`, at
/// offsets 0.. of partition 0 (exactly once, like the input tasks).
async fn load(
    lake: &Lake,
    spec: TableSpec,
    topic: &str,
    payloads: &[String],
    decode: impl Fn(&[RawRecord<'_>], &InputContext) -> InputOutput,
) -> anyhow::Result<usize> {
    let mut table = OffsetTable::open_or_create(lake, spec, topic).await?;
    table.load_offsets(&[0]).await?;
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            partition: 0,
            offset: i as i64,
            payload: Some(p.as_bytes()),
            replay_tag: None,
        })
        .collect();
    let ctx = InputContext {
        ingested_at_micros: Utc::now().timestamp_micros(),
        max_message_bytes: 1 << 20,
    };
    let out = decode(&records, &ctx);
    if let Some(d) = out.dead_letters.first() {
        bail!(
            "{topic}: the demo's own record was refused: {}",
            d.reason.as_str()
        );
    }
    let n = out.batch.num_rows();
    let last = i64::try_from(payloads.len()).unwrap_or(1) - 1;
    table
        .append(&[out.batch], &BTreeMap::from([(0, last)]))
        .await?;
    Ok(n)
}

/// Prices, profiles, temperatures and the tariff for `spec`'s private meters.
///
/// # Errors
/// Storage errors; a record of the demo's refused (a bug).
pub async fn write_inputs(
    lake: &Lake,
    spec: &GeneratorSpec,
    tenants: &TenantRegistry,
) -> anyhow::Result<InputCounts> {
    let prices = load(
        lake,
        meterline_sinks::spot_prices_spec(),
        "market.prices",
        &price_payloads(spec),
        price::decode,
    )
    .await?;
    let profiles = load(
        lake,
        meterline_sinks::meter_profiles_spec(),
        "meter.profiles",
        &profile_payloads(spec),
        |r, c| profile::decode(r, c, tenants),
    )
    .await?;
    let observations = load(
        lake,
        meterline_sinks::weather_observations_spec(),
        "weather.observations",
        &observation_payloads(spec),
        observation::decode,
    )
    .await?;
    let tariffs = meterline_operators::economics::frinettleie::parse_tariff_file(DEMO_TARIFF)
        .context("the demo tariff")?;
    let hash = blake3::hash(DEMO_TARIFF.as_bytes()).to_hex().to_string();
    let batch = meterline_operators::inputs::tariffs::batch(
        &tariffs,
        DEMO_TARIFF,
        &hash,
        Utc::now().timestamp_micros(),
    )?;
    let mut table =
        meterline_sinks::DerivedTable::open_or_create(lake, meterline_sinks::grid_tariffs_spec())
            .await?;
    table.append(&[batch], &[]).await?;
    Ok(InputCounts {
        prices,
        profiles,
        observations,
        tariffs: tariffs.len(),
    })
}

/// One round of the cost materializer with the default rates.
///
/// # Errors
/// Storage errors.
pub async fn materialize(lake: &Lake, tenants: TenantRegistry) -> anyhow::Result<CostRound> {
    let mut m = CostMaterializer::open(
        lake,
        tenants,
        &AggregateSettings::default(),
        RateTable::defaults(),
        Metrics::new(),
    )
    .await?;
    Ok(m.round().await?)
}

/// A `decimal(38, 9)` NOK cell to øre precision, or `-` when null.
fn nok(b: &RecordBatch, column: &str, row: usize) -> String {
    let Some(c) = b
        .column_by_name(column)
        .and_then(|c| c.as_primitive_opt::<Decimal128Type>())
    else {
        return "?".to_owned();
    };
    if c.is_null(row) {
        return "-".to_owned();
    }
    let scale = u32::try_from(c.scale()).unwrap_or(0);
    rust_decimal::Decimal::from_i128_with_scale(c.value(row), scale)
        .round_dp(2)
        .to_string()
}

fn decimal(b: &RecordBatch, column: &str, row: usize) -> String {
    b.column_by_name(column)
        .and_then(|c| c.as_primitive_opt::<Decimal128Type>())
        .filter(|c| c.is_valid(row))
        .map_or("-".to_owned(), |c| {
            rust_decimal::Decimal::from_i128_with_scale(
                c.value(row),
                u32::try_from(c.scale()).unwrap_or(0),
            )
            .normalize()
            .to_string()
        })
}

/// Print `meter`'s month (the month of `spec`'s first day) from the lake's tables.
///
/// # Errors
/// The lake cannot be read; the meter has no month row.
pub async fn print_month(lake: &LakeConfig, meter: &str) -> anyhow::Result<()> {
    let query = |sql: String| async move { crate::query::sql::query(lake, &sql).await };
    let months = query(format!(
        "SELECT * FROM cost_monthly WHERE tenant = '{PRIVATE_TENANT}' AND meter = '{meter}' \
         AND direction = 'import' ORDER BY month"
    ))
    .await?;
    let Some((b, row)) = months
        .iter()
        .find_map(|b| (b.num_rows() > 0).then_some((b, 0)))
    else {
        bail!("no cost_monthly row of meter {meter}");
    };
    let month = b
        .column_by_name("month")
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .map(|c| meterline_operators::aggregate::date_of(c.value(row)));
    let int = |name: &str| {
        b.column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .map_or(0, |c| c.value(row))
    };
    println!();
    println!(
        "one customer's month, from cost_monthly (meter {meter}, private tenant, month {}):",
        month.map_or_else(|| "?".to_owned(), |m| m.format("%B %Y").to_string())
    );
    println!("  {:<34} {:>12} kWh", "consumption", decimal(b, "kwh", row));
    for (label, column) in [
        ("spot", "spot_nok"),
        ("strømstøtte / Norgespris difference", "support_nok"),
        ("grid energy charge (energiledd)", "grid_energy_nok"),
        ("consumption tax (elavgift)", "consumption_tax_nok"),
        ("Enova fee", "enova_nok"),
        ("VAT on energy", "vat_nok"),
    ] {
        println!("  {label:<34} {:>12} NOK", nok(b, column, row));
    }
    println!(
        "  {:<34} {:>12} NOK  (step from {} kW; demand {} kW, the mean of the 3 highest days)",
        "capacity charge (fastledd), 1/12",
        nok(b, "capacity_nok", row),
        decimal(b, "capacity_step_from", row),
        decimal(b, "capacity_demand", row),
    );
    println!(
        "  {:<34} {:>12} NOK",
        "VAT on the capacity charge",
        nok(b, "capacity_vat_nok", row)
    );
    println!(
        "  {:<34} {:>12} NOK  ({} of {} hours of the month metered: {})",
        "total",
        nok(b, "total_nok", row),
        int("hours"),
        int("expected_hours"),
        if int("hours") == int("expected_hours") {
            "complete"
        } else {
            "the month is not complete yet"
        }
    );
    let fit = query(format!(
        "SELECT season, days, slope_kwh_per_c, intercept_kwh, r2 FROM temperature_sensitivity \
         WHERE tenant = '{PRIVATE_TENANT}' AND meter = '{meter}'"
    ))
    .await?;
    match fit.iter().find(|b| b.num_rows() > 0) {
        Some(f) => println!(
            "  temperature sensitivity (heating season {}, {} days): {} kWh per °C, {} kWh at 0 °C, R² {}",
            f.column(0).as_primitive::<Int32Type>().value(0),
            f.column(1).as_primitive::<Int32Type>().value(0),
            decimal(f, "slope_kwh_per_c", 0),
            decimal(f, "intercept_kwh", 0),
            decimal(f, "r2", 0),
        ),
        None => println!("  temperature sensitivity: fewer than 3 days with a mean temperature"),
    }
    Ok(())
}
