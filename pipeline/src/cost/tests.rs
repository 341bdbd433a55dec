//! The cost tables against an independent oracle over a whole month, and what a change
//! recomputes.
//!
//! The inputs go in as producers send them (JSON through the real decoders, into the real
//! tables of a lake in a temporary directory); the tables are read back with SQL. The oracle
//! prices every hour in integer arithmetic from the rules (DOMAIN.md section 4), never with
//! the production functions.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, TimestampMicrosecondType};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use meterline_operators::economics::rates::RateTable;
use meterline_operators::inputs::{price, profile, InputContext};
use meterline_operators::{
    Chain, DecodeConfig, MasterKey, OperatorContext, Pseudonymizer, RawRecord,
};
use meterline_sinks::{
    meter_profiles_spec, readings_spec, spot_prices_spec, DerivedTable, Lake, LakeConfig,
    OffsetTable,
};

use super::*;
use crate::config::AggregateSettings;
use crate::dev::generator::{gsrn, tenants, PRIVATE_TENANT};
use crate::metrics::Metrics;

const T: &str = PRIVATE_TENANT;
const GLN: &str = "7080000000012";

/// The tariff: 25.50 øre, 15.25 from 22 to 05; capacity steps 0 / 2 / 5 / 10 kW at
/// 3000 / 4200 / 6600 / 9600 NOK a year, the mean of the 3 highest days.
const TARIFF: &str = r"---
netteier: 'Fjordnett AS'
gln:
  - '7080000000012'
tariffer:
  - kundegrupper: [husholdning]
    gyldig_fra: '2026-01-01'
    energiledd:
      grunnpris: 25.50
      unntak:
        - navn: Natt
          timer: 22-5
          pris: 15.25
    fastledd:
      metode: TRE_DØGNMAX_MND
      terskel_inkludert: true
      terskler:
        - {terskel: 0, pris: 3000}
        - {terskel: 2, pris: 4200}
        - {terskel: 5, pris: 6600}
        - {terskel: 10, pris: 9600}
";

/// The oracle: amounts in 10⁻¹⁴ NOK, each component rounded half to even to 10⁻⁹ NOK.
mod oracle {
    const UNIT: i128 = 100_000;

    pub fn round(units: i128) -> i128 {
        let (q, r) = (units.div_euclid(UNIT), units.rem_euclid(UNIT));
        let up = r > UNIT / 2 || (r == UNIT / 2 && q % 2 != 0);
        (q + i128::from(up)) * UNIT
    }

    /// kWh in thousandths × a price in hundredths of an øre, in 10⁻¹⁴ NOK.
    fn energy(milli: i128, centi_ore: i128) -> i128 {
        milli * centi_ore * 10_000_000
    }

    /// [spot, support, grid, tax, enova, vat, total]; `None` where unknown.
    pub fn hour(
        parts: &[i128],
        quarters: Option<[i128; 4]>,
        norgespris: bool,
        grid_centi: i128,
        vat_percent: i128,
    ) -> [Option<i128>; 7] {
        let kwh: i128 = parts.iter().sum();
        let spot = quarters.map(|q| {
            if parts.len() == 1 {
                kwh * q.iter().sum::<i128>() * 10_000_000 / 4
            } else {
                parts.iter().zip(q).map(|(k, p)| energy(*k, p)).sum()
            }
        });
        let support = quarters.zip(spot).map(|(q, s)| {
            if norgespris {
                energy(kwh, 4000) - s
            } else {
                -(9 * (q.iter().sum::<i128>() - 4 * 7700).max(0) * kwh * 10_000_000) / 40
            }
        });
        // 2026: consumption tax 7.13 øre, Enova 1.00 øre.
        let (grid, tax, enova) = (
            round(energy(kwh, grid_centi)),
            round(energy(kwh, 713)),
            round(energy(kwh, 100)),
        );
        let (spot, support) = (spot.map(round), support.map(round));
        let ex_vat = spot.zip(support).map(|(s, u)| s + u + grid + tax + enova);
        let vat = ex_vat.map(|e| round(e * vat_percent / 100));
        [
            spot,
            support,
            Some(grid),
            Some(tax),
            Some(enova),
            vat,
            ex_vat.zip(vat).map(|(e, v)| e + v),
        ]
    }
}

struct Meter {
    id: String,
    quarterly: bool,
    north: bool,
    /// Norgespris from this date (strømstøtte before).
    norgespris_from: Option<NaiveDate>,
    seed: i64,
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, d).unwrap()
}

/// The days with readings: all of October 2026, with the Norgespris switch (15) and the
/// autumn DST day (25, 25 hours).
fn days() -> Vec<NaiveDate> {
    (1..=31).map(day).collect()
}

fn hours_of(date: NaiveDate) -> Vec<DateTime<Utc>> {
    let tz = chrono_tz::Europe::Oslo;
    let start = tz
        .from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let end = tz
        .from_local_datetime(&date.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    (0..)
        .map(|h| start + Duration::hours(h))
        .take_while(|t| *t < end)
        .collect()
}

/// Thousandths of a kWh: 0.500 + (n mod 11) × 0.125.
fn kwh_milli(n: i64) -> i128 {
    500 + i128::from(n.rem_euclid(11)) * 125
}

/// Hundredths of an øre: 60.00 + (q mod 9) × 5.75 for the quarter starting at `t`.
fn price_centi(t: DateTime<Utc>) -> i128 {
    6000 + i128::from((t.timestamp() / 900).rem_euclid(9)) * 575
}

/// The quarter without a price.
fn missing() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 14, 12, 15, 0).unwrap()
}

fn meters() -> Vec<Meter> {
    vec![
        Meter {
            id: gsrn(1),
            quarterly: false,
            north: false,
            norgespris_from: None,
            seed: 0,
        },
        Meter {
            id: gsrn(2),
            quarterly: true,
            north: false,
            norgespris_from: Some(day(15)),
            seed: 3,
        },
        Meter {
            id: gsrn(3),
            quarterly: false,
            north: true,
            norgespris_from: None,
            seed: 7,
        },
    ]
}

fn parts(m: &Meter, start: DateTime<Utc>) -> Vec<i128> {
    let n = start.timestamp() / 3600 + m.seed;
    if m.quarterly {
        (0..4).map(|q| kwh_milli(n * 4 + q)).collect()
    } else {
        vec![kwh_milli(n)]
    }
}

/// The oracle's hours: (meter, hour start) -> components.
fn expected(
    meters: &[Meter],
    prices: &BTreeMap<DateTime<Utc>, i128>,
) -> BTreeMap<(String, i64), [Option<i128>; 7]> {
    let tz = chrono_tz::Europe::Oslo;
    let mut out = BTreeMap::new();
    for m in meters {
        for date in days() {
            for start in hours_of(date) {
                let quarters: Option<Vec<i128>> = (0..4)
                    .map(|q| prices.get(&(start + Duration::minutes(15 * q))).copied())
                    .collect();
                let local_hour = start.with_timezone(&tz).hour();
                let grid = if local_hour >= 22 || local_hour <= 5 {
                    1525
                } else {
                    2550
                };
                let norgespris = m.norgespris_from.is_some_and(|f| date >= f);
                out.insert(
                    (m.id.clone(), start.timestamp_micros()),
                    oracle::hour(
                        &parts(m, start),
                        quarters.map(|q| [q[0], q[1], q[2], q[3]]),
                        norgespris,
                        grid,
                        if m.north { 0 } else { 25 },
                    ),
                );
            }
        }
    }
    out
}

fn ctx() -> InputContext {
    InputContext {
        ingested_at_micros: Utc
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .timestamp_micros(),
        max_message_bytes: 1 << 20,
    }
}

fn records(payloads: &[String], first: i64) -> Vec<RawRecord<'_>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            partition: 0,
            offset: first + i as i64,
            payload: Some(p.as_bytes()),
            replay_tag: None,
        })
        .collect()
}

fn reading_payloads(meters: &[Meter]) -> Vec<String> {
    let mut out = Vec::new();
    for m in meters {
        for date in days() {
            for start in hours_of(date) {
                let (minutes, resolution) = if m.quarterly {
                    (15, "PT15M")
                } else {
                    (60, "PT1H")
                };
                for (q, milli) in parts(m, start).iter().enumerate() {
                    let at = start + Duration::minutes(minutes * q as i64);
                    out.push(format!(
                        r#"{{"schema":"reading/v1","tenant":"{T}","device_id":"dev-{id}","meter_id":"{id}","quantity":"electricity","direction":"import","start":"{at}","resolution":"{resolution}","value":{kwh},"unit":"kWh","quality":"measured","version":"2026-10-30T06:00:00Z"}}"#,
                        id = m.id,
                        at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        kwh = format_args!("{}.{:03}", milli / 1000, milli % 1000),
                    ));
                }
            }
        }
    }
    out
}

/// Price messages (NOK/kWh) of every quarter of October but the missing one.
fn price_payloads(version: &str, only: Option<(DateTime<Utc>, i128)>) -> Vec<String> {
    let first = Utc.with_ymd_and_hms(2026, 9, 30, 22, 0, 0).unwrap();
    let quarters: Vec<(DateTime<Utc>, i128)> = match only {
        Some(one) => vec![one],
        None => (0..31 * 96 + 4)
            .map(|q| first + Duration::minutes(15 * q))
            .filter(|t| *t != missing())
            .map(|t| (t, price_centi(t)))
            .collect(),
    };
    quarters
        .into_iter()
        .map(|(t, centi)| {
            format!(
                r#"{{"schema":"price/v1","area":"NO1","start":"{}","resolution":"PT15M","price":{}.{:04},"currency":"NOK","unit":"kWh","source":"test","version":"{version}"}}"#,
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                centi / 10_000,
                centi % 10_000
            )
        })
        .collect()
}

fn profile_payload(m: &Meter, from: NaiveDate, scheme: &str, version: &str) -> String {
    format!(
        r#"{{"schema":"meter-profile/v1","tenant":"{T}","meter_id":"{}","valid_from":"{from}","price_area":"NO1","grid_company_gln":"{GLN}","customer_group":"household","tax_zone":"{}","scheme":"{scheme}","version":"{version}"}}"#,
        m.id,
        if m.north { "north" } else { "standard" },
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: LakeConfig,
    lake: Lake,
    prices: OffsetTable,
    profiles: OffsetTable,
    next_offset: i64,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = LakeConfig {
            uri: dir.path().to_string_lossy().into_owned(),
            storage_options: Default::default(),
        };
        let lake = Lake::new(&config).unwrap();
        let open = |spec| {
            let lake = lake.clone();
            async move {
                let mut t = OffsetTable::open_or_create(&lake, spec, "t").await.unwrap();
                t.load_offsets(&[0]).await.unwrap();
                t
            }
        };
        let prices = open(spot_prices_spec()).await;
        let profiles = open(meter_profiles_spec()).await;
        Self {
            _dir: dir,
            config,
            lake,
            prices,
            profiles,
            next_offset: 0,
        }
    }

    fn offsets(&mut self, n: usize) -> (i64, BTreeMap<i32, i64>) {
        let first = self.next_offset;
        self.next_offset += n as i64;
        (first, BTreeMap::from([(0, self.next_offset - 1)]))
    }

    async fn readings(&mut self, payloads: &[String]) {
        let mut table = OffsetTable::open_or_create(&self.lake, readings_spec(), "t")
            .await
            .unwrap();
        table.load_offsets(&[0]).await.unwrap();
        let mut chain = Chain::new(
            DecodeConfig::default(),
            tenants(),
            Some(Pseudonymizer::new(MasterKey::from_bytes([7; 32]))),
        )
        .unwrap();
        let (first, offsets) = self.offsets(payloads.len());
        let now = OperatorContext {
            now_micros: ctx().ingested_at_micros,
        };
        let out = chain.process(&records(payloads, first), &now).unwrap();
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        table.append(&[out.readings], &offsets).await.unwrap();
    }

    async fn prices(&mut self, payloads: &[String]) {
        let (first, offsets) = self.offsets(payloads.len());
        let out = price::decode(&records(payloads, first), &ctx());
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        self.prices.append(&[out.batch], &offsets).await.unwrap();
    }

    async fn profiles(&mut self, payloads: &[String]) {
        let (first, offsets) = self.offsets(payloads.len());
        let out = profile::decode(&records(payloads, first), &ctx(), &tenants());
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        self.profiles.append(&[out.batch], &offsets).await.unwrap();
    }

    async fn tariff(&mut self) {
        let tariffs =
            meterline_operators::economics::frinettleie::parse_tariff_file(TARIFF).unwrap();
        let batch = meterline_operators::inputs::tariffs::batch(&tariffs, TARIFF, "h", 1).unwrap();
        let mut table =
            DerivedTable::open_or_create(&self.lake, meterline_sinks::grid_tariffs_spec())
                .await
                .unwrap();
        table.append(&[batch], &[]).await.unwrap();
    }

    async fn sql(&self, sql: &str) -> Vec<RecordBatch> {
        crate::query::sql::query(&self.config, sql).await.unwrap()
    }

    /// cost_hourly: (meter, hour start) -> the seven amounts in 10⁻¹⁴ NOK, and complete.
    async fn hourly(&self) -> Hours {
        let batches = self
            .sql(
                "SELECT meter, hour_start, spot_nok, support_nok, grid_energy_nok, \
                 consumption_tax_nok, enova_nok, vat_nok, total_nok, complete FROM cost_hourly",
            )
            .await;
        let mut out = BTreeMap::new();
        for b in &batches {
            let meter = b.column(0).as_string::<i32>();
            let start = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let complete = b.column(9).as_boolean();
            for row in 0..b.num_rows() {
                let amounts: [Option<i128>; 7] = std::array::from_fn(|i| {
                    let c = b.column(2 + i).as_primitive::<Decimal128Type>();
                    assert_eq!(c.scale(), 9);
                    c.is_valid(row).then(|| c.value(row) * 100_000)
                });
                out.insert(
                    (meter.value(row).to_owned(), start.value(row)),
                    (amounts, complete.value(row)),
                );
            }
        }
        out
    }
}

fn settings() -> AggregateSettings {
    AggregateSettings {
        max_days_per_step: 2,
        ..AggregateSettings::default()
    }
}

/// (meter, hour start µs) -> the seven amounts and `complete`.
type Hours = BTreeMap<(String, i64), ([Option<i128>; 7], bool)>;

fn with_complete(expected: BTreeMap<(String, i64), [Option<i128>; 7]>) -> Hours {
    expected
        .into_iter()
        .map(|(k, v)| {
            let complete = v[6].is_some();
            (k, (v, complete))
        })
        .collect()
}

fn partitions(round: &CostRound, table: &str) -> Vec<String> {
    round
        .rewritten
        .get(table)
        .map(|p| p.iter().map(|p| p.join("/")).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_cost_tables_equal_the_oracle_and_a_change_recomputes_only_its_days() {
    let mut f = Fixture::new().await;
    let meters = meters();
    f.readings(&reading_payloads(&meters)).await;
    f.prices(&price_payloads("2026-10-12T12:00:00Z", None))
        .await;
    let mut profiles = Vec::new();
    for m in &meters {
        profiles.push(profile_payload(
            m,
            day(1),
            "stromstotte",
            "2026-10-01T00:00:00Z",
        ));
        if let Some(from) = m.norgespris_from {
            profiles.push(profile_payload(
                m,
                from,
                "norgespris",
                "2026-10-01T00:00:00Z",
            ));
        }
    }
    f.profiles(&profiles).await;
    f.tariff().await;

    let mut m = CostMaterializer::open(
        &f.lake,
        tenants(),
        &settings(),
        RateTable::defaults(),
        Metrics::new(),
    )
    .await
    .unwrap();
    let first = m.round().await.unwrap();
    let every_day: Vec<String> = days().iter().map(|d| format!("{T}/{d}")).collect();
    assert_eq!(partitions(&first, "cost_hourly"), every_day);

    // Every hour of every meter, exactly.
    let mut prices: BTreeMap<DateTime<Utc>, i128> = BTreeMap::new();
    let first_quarter = Utc.with_ymd_and_hms(2026, 9, 30, 22, 0, 0).unwrap();
    for q in 0..31 * 96 + 4 {
        let t = first_quarter + Duration::minutes(15 * q);
        if t != missing() {
            prices.insert(t, price_centi(t));
        }
    }
    let want = with_complete(expected(&meters, &prices));
    assert_eq!(want.len(), 3 * (31 * 24 + 1));
    let got = f.hourly().await;
    assert_eq!(got.len(), want.len());
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "cost_hourly of {key:?}");
    }
    // Only the hour without a full set of prices is incomplete, for each meter.
    assert_eq!(got.values().filter(|(_, c)| !c).count(), 3);

    // Days: sums of their hours; 25 hours on the DST day.
    let batches = f
        .sql(
            "SELECT meter, local_date, total_nok, hours, expected_hours, complete FROM cost_daily \
             ORDER BY meter, local_date",
        )
        .await;
    let mut daily = Vec::new();
    for b in &batches {
        let total = b.column(2).as_primitive::<Decimal128Type>();
        let hours = b.column(3).as_primitive::<arrow::datatypes::Int32Type>();
        let expected_hours = b.column(4).as_primitive::<arrow::datatypes::Int32Type>();
        let complete = b.column(5).as_boolean();
        for row in 0..b.num_rows() {
            daily.push((
                total.is_valid(row).then(|| total.value(row) * 100_000),
                hours.value(row),
                expected_hours.value(row),
                complete.value(row),
            ));
        }
    }
    let mut oracle_daily = Vec::new();
    for meter in &meters {
        for date in days() {
            let total: Option<i128> = hours_of(date)
                .iter()
                .map(|h| want[&(meter.id.clone(), h.timestamp_micros())].0[6])
                .sum();
            let n = i32::try_from(hours_of(date).len()).unwrap();
            oracle_daily.push((total, n, n, total.is_some()));
        }
    }
    assert_eq!(daily, oracle_daily);

    // The month: capacity step from the 3 highest daily peaks (kW), a twelfth of its
    // yearly price; every hour is there, but the month is not complete (one hour has no
    // price).
    let batches = f
        .sql(
            "SELECT meter, capacity_step_from, capacity_nok, hours, expected_hours, complete, \
             grid_energy_nok FROM cost_monthly ORDER BY meter",
        )
        .await;
    let mut monthly = Vec::new();
    for b in &batches {
        let step = b.column(1).as_primitive::<Decimal128Type>();
        let capacity = b.column(2).as_primitive::<Decimal128Type>();
        let hours = b.column(3).as_primitive::<arrow::datatypes::Int32Type>();
        let expected_hours = b.column(4).as_primitive::<arrow::datatypes::Int32Type>();
        let complete = b.column(5).as_boolean();
        let grid = b.column(6).as_primitive::<Decimal128Type>();
        for row in 0..b.num_rows() {
            monthly.push((
                step.value(row) / 10_000,
                capacity.value(row) * 100_000,
                hours.value(row),
                expected_hours.value(row),
                complete.value(row),
                grid.value(row) * 100_000,
            ));
        }
    }
    let mut oracle_monthly = Vec::new();
    for meter in &meters {
        let mut peaks: Vec<i128> = days()
            .iter()
            .map(|d| {
                hours_of(*d)
                    .iter()
                    .map(|h| parts(meter, *h).iter().sum::<i128>())
                    .max()
                    .unwrap()
            })
            .collect();
        peaks.sort_unstable_by(|a, b| b.cmp(a));
        let top3: i128 = peaks.iter().take(3).sum();
        let (from, yearly) = [(10, 9600), (5, 6600), (2, 4200), (0, 3000)]
            .into_iter()
            .find(|(from, _)| top3 >= 3 * from * 1000)
            .unwrap();
        let grid: i128 = want
            .iter()
            .filter(|((id, _), _)| *id == meter.id)
            .map(|(_, (v, _))| v[2].unwrap())
            .sum();
        oracle_monthly.push((
            from,
            oracle::round(yearly * 100_000_000_000_000 / 12),
            31 * 24 + 1,
            31 * 24 + 1,
            false,
            grid,
        ));
    }
    assert_eq!(monthly, oracle_monthly);

    // Cost simulation: the first meter's 15th and 25th under Norgespris instead of
    // strømstøtte. Everything but the support line stays; the totals differ by exactly what
    // the oracle's hours differ by (the capacity charge is the same on both sides).
    let inputs = read_inputs(&f.lake, T, day(15), day(25), Some(&meters[0].id))
        .await
        .unwrap();
    let rates = RateTable::defaults();
    let no_temperatures = meterline_operators::economics::tables::Temperatures::new();
    let actual_ctx = meterline_operators::economics::tables::Context {
        tenant: T,
        tz: chrono_tz::Europe::Oslo,
        prices: &inputs.prices,
        profiles: &inputs.profiles,
        tariffs: &inputs.tariffs,
        rates: &rates,
        rates_version: "test",
        temperatures: &no_temperatures,
        stations: &[],
    };
    let simulated_days = std::collections::BTreeSet::from([day(15), day(25)]);
    let (actual, simulated) = super::simulation::compare(
        &actual_ctx,
        &meters[0].id,
        Some(meterline_operators::economics::hour::Scheme::Norgespris),
        None,
        &simulated_days,
        &inputs.readings,
    )
    .unwrap();
    let mut as_norgespris = self::meters();
    as_norgespris[0].norgespris_from = Some(day(1));
    let norgespris = expected(&as_norgespris[..1], &prices);
    let stromstotte = expected(&meters[..1], &prices);
    let over_days = |hours: &BTreeMap<(String, i64), [Option<i128>; 7]>, line: usize| -> i128 {
        [day(15), day(25)]
            .iter()
            .flat_map(|d| hours_of(*d))
            .map(|h| hours[&(meters[0].id.clone(), h.timestamp_micros())][line].unwrap())
            .sum()
    };
    let units = |d: Option<rust_decimal::Decimal>| -> i128 {
        let mut d = d.expect("known");
        d.rescale(14);
        d.mantissa()
    };
    // LINES: kWh, spot, support, grid, tax, Enova, VAT, capacity, capacity VAT, total.
    assert_eq!(actual.values[0], simulated.values[0]);
    assert_eq!(units(actual.values[2]), over_days(&stromstotte, 1));
    assert_eq!(units(simulated.values[2]), over_days(&norgespris, 1));
    assert_eq!(units(actual.values[3]), units(simulated.values[3]));
    assert_eq!(units(actual.values[7]), units(simulated.values[7]));
    assert_eq!(
        units(simulated.values[9]) - units(actual.values[9]),
        over_days(&norgespris, 6) - over_days(&stromstotte, 6)
    );
    assert_eq!(actual.hours, 24 + 25);
    assert_eq!(actual.complete_hours, 24 + 25);

    // Nothing changed: nothing recomputed.
    let idle = m.round().await.unwrap();
    assert!(idle.rewritten.is_empty(), "{:?}", idle.rewritten);

    // A late price correction on the DST day: that day and its month, nothing else.
    let corrected_at = Utc.with_ymd_and_hms(2026, 10, 25, 10, 30, 0).unwrap();
    f.prices(&price_payloads(
        "2026-10-26T08:00:00Z",
        Some((corrected_at, 25_000)),
    ))
    .await;
    let correction = m.round().await.unwrap();
    assert_eq!(
        partitions(&correction, "cost_hourly"),
        [format!("{T}/2026-10-25")]
    );
    assert_eq!(
        partitions(&correction, "cost_monthly"),
        [format!("{T}/2026-10-01")]
    );
    prices.insert(corrected_at, 25_000);
    let want = with_complete(expected(&meters, &prices));
    let got = f.hourly().await;
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "after the correction, {key:?}");
    }

    // The first meter moves to Norgespris from the 25th: the 25th to the 31st are
    // recomputed, nothing before.
    let mut switched = meters;
    switched[0].norgespris_from = Some(day(25));
    f.profiles(&[profile_payload(
        &switched[0],
        day(25),
        "norgespris",
        "2026-10-24T00:00:00Z",
    )])
    .await;
    let change = m.round().await.unwrap();
    assert_eq!(partitions(&change, "cost_hourly"), every_day[24..]);
    let want = with_complete(expected(&switched, &prices));
    let got = f.hourly().await;
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "after the switch, {key:?}");
    }
}

/// `reading/v1` payloads of an hourly meter: `kwh` in each of `hours`.
fn hourly_readings(meter: &Meter, hours: &[DateTime<Utc>], kwh: &str) -> Vec<String> {
    hours
        .iter()
        .map(|t| {
            format!(
                r#"{{"schema":"reading/v1","tenant":"{T}","device_id":"dev-{id}","meter_id":"{id}","quantity":"electricity","direction":"import","start":"{at}","resolution":"PT1H","value":{kwh},"unit":"kWh","quality":"measured","version":"2026-10-31T06:00:00Z"}}"#,
                id = meter.id,
                at = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        })
        .collect()
}

/// EUR prices that carry no exchange rate leave their hours incomplete until rates arrive
/// in `exchange_rates`; then the next round recomputes the days from the earliest rate's
/// date on (and no other), converting each delivery day with the latest rate published
/// before it.
#[tokio::test]
async fn eur_prices_are_converted_once_exchange_rates_arrive_and_only_their_days_recomputed() {
    let mut f = Fixture::new().await;
    let meter = &meters()[0];
    // Saturday 3 to Wednesday 7 October: 1.250 kWh every hour, 100.00 EUR/MWh.
    let dates: Vec<NaiveDate> = (3..=7).map(day).collect();
    let hours: Vec<DateTime<Utc>> = dates.iter().flat_map(|d| hours_of(*d)).collect();
    let stamp = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    f.readings(&hourly_readings(meter, &hours, "1.250")).await;
    let prices: Vec<String> = hours
        .iter()
        .map(|t| {
            format!(
                r#"{{"schema":"price/v1","area":"NO1","start":"{}","resolution":"PT60M","price":100.00,"currency":"EUR","unit":"MWh","source":"entsoe","version":"2026-10-02T12:00:00Z"}}"#,
                stamp(t)
            )
        })
        .collect();
    f.prices(&prices).await;
    f.profiles(&[profile_payload(
        meter,
        day(1),
        "stromstotte",
        "2026-10-01T00:00:00Z",
    )])
    .await;
    f.tariff().await;
    let mut m = CostMaterializer::open(
        &f.lake,
        tenants(),
        &settings(),
        RateTable::defaults(),
        Metrics::new(),
    )
    .await
    .unwrap();
    m.round().await.unwrap();
    let before = f.hourly().await;
    assert_eq!(before.len(), hours.len());
    assert!(
        before
            .values()
            .all(|(a, complete)| a[0].is_none() && !complete),
        "no rate: no spot price, nothing complete"
    );

    // Monday 5 October's rate: it converts Tuesday's and Wednesday's prices (and would
    // convert up to seven days on); Monday's own prices need a rate from before Monday.
    let rate = meterline_operators::economics::exchange::ExchangeRate {
        currency: "EUR".into(),
        date: day(5),
        nok_per_unit: "11.7025".parse().unwrap(),
    };
    let batch =
        meterline_operators::inputs::exchange::batch(&[rate], "norges-bank", "h", 1).unwrap();
    let mut table = DerivedTable::open_or_create(&f.lake, meterline_sinks::exchange_rates_spec())
        .await
        .unwrap();
    table.append(&[batch], &[]).await.unwrap();

    let round = m.round().await.unwrap();
    let from_the_rate_on: Vec<String> = (5..=7).map(|d| format!("{T}/{}", day(d))).collect();
    assert_eq!(partitions(&round, "cost_hourly"), from_the_rate_on);
    // 1.25 kWh x 100 EUR/MWh x 11.7025 NOK/EUR / 1000 kWh/MWh = 1.4628125 NOK, in
    // 10⁻¹⁴ NOK as `hourly` reads it.
    let spot = 14_628_125 * 10_000_000;
    let after = f.hourly().await;
    for t in &hours {
        let (amounts, _) = &after[&(meter.id.clone(), t.timestamp_micros())];
        let local = t.with_timezone(&chrono_tz::Europe::Oslo).date_naive();
        if local >= day(6) {
            assert_eq!(amounts[0], Some(spot), "{t}");
        } else {
            assert_eq!(amounts[0], None, "{t}: no rate before {local}");
        }
    }
    let idle = m.round().await.unwrap();
    assert!(idle.rewritten.is_empty(), "{:?}", idle.rewritten);
}

/// `temperature_daily`: (station, mean temperature, heating degree days) as text.
async fn temperature_rows(f: &Fixture) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    let batches = f
        .sql(
            "SELECT station, CAST(mean_temperature_c AS VARCHAR), \
             CAST(heating_degree_days AS VARCHAR) FROM temperature_daily",
        )
        .await;
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let cell = |c: usize| {
                let a = b.column(c).as_string::<i32>();
                a.is_valid(r).then(|| a.value(r).to_owned())
            };
            rows.push((cell(0), cell(1), cell(2)));
        }
    }
    rows
}

/// A meter whose profile has coordinates but names no station has no temperature until
/// stations arrive in `weather_stations`; then the next round gives its days the nearest
/// open station's mean temperature (worked by hand: Blindern, about 3.7 km away, not
/// Florida in Bergen nor the closed station at the meter's own position).
#[tokio::test]
async fn a_meter_with_coordinates_gets_the_nearest_station_once_stations_arrive() {
    use meterline_operators::economics::frost::FrostStation;
    let mut f = Fixture::new().await;
    let meter = &meters()[0];
    let date = day(5);
    let hours = hours_of(date);
    let stamp = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    f.readings(&hourly_readings(meter, &hours, "1.000")).await;
    f.profiles(&[format!(
        r#"{{"schema":"meter-profile/v1","tenant":"{T}","meter_id":"{}","valid_from":"{}","price_area":"NO1","grid_company_gln":"{GLN}","customer_group":"household","tax_zone":"standard","scheme":"stromstotte","latitude":59.91,"longitude":10.75,"version":"2026-10-01T00:00:00Z"}}"#,
        meter.id,
        day(1)
    )])
    .await;
    // Blindern at -2.5 °C and Florida at 8.0 °C every hour of the day.
    let mut weather =
        OffsetTable::open_or_create(&f.lake, meterline_sinks::weather_observations_spec(), "t")
            .await
            .unwrap();
    weather.load_offsets(&[0]).await.unwrap();
    let observations: Vec<String> = hours
        .iter()
        .flat_map(|t| {
            [("SN18700", "-2.5"), ("SN50540", "8.0")].map(|(station, value)| {
                format!(
                    r#"{{"schema":"observation/v1","station":"{station}","time":"{}","element":"air_temperature","value":{value},"unit":"degC","resolution":"PT1H","source":"frost"}}"#,
                    stamp(t)
                )
            })
        })
        .collect();
    let (first, offsets) = f.offsets(observations.len());
    let out =
        meterline_operators::inputs::observation::decode(&records(&observations, first), &ctx());
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    weather.append(&[out.batch], &offsets).await.unwrap();

    let mut m = CostMaterializer::open(
        &f.lake,
        tenants(),
        &settings(),
        RateTable::defaults(),
        Metrics::new(),
    )
    .await
    .unwrap();
    m.round().await.unwrap();
    assert_eq!(
        temperature_rows(&f).await,
        [(None, None, None)],
        "coordinates and no stations: no station"
    );

    let station = |id: &str, latitude: f64, longitude: f64, closed: bool| FrostStation {
        id: id.into(),
        name: None,
        latitude,
        longitude,
        valid_to: closed.then(|| Utc.with_ymd_and_hms(2019, 12, 31, 0, 0, 0).unwrap()),
    };
    let batch = meterline_operators::inputs::stations::batch(
        &[
            station("SN50540", 60.383, 5.3327, false),
            station("SN18700", 59.9423, 10.72, false),
            station("SN18701", 59.91, 10.75, true),
        ],
        "frost",
        "h",
        1,
    )
    .unwrap();
    DerivedTable::open_or_create(&f.lake, meterline_sinks::weather_stations_spec())
        .await
        .unwrap()
        .append(&[batch], &[])
        .await
        .unwrap();
    let round = m.round().await.unwrap();
    assert_eq!(
        partitions(&round, "temperature_daily"),
        [format!("{T}/{date}")]
    );
    // The mean of 24 values of -2.5 is -2.500; 17 - (-2.5) = 19.5 degree days.
    let (station, mean, hdd) = temperature_rows(&f).await.remove(0);
    assert_eq!(station.as_deref(), Some("SN18700"));
    let dec = |s: Option<String>| s.unwrap().parse::<rust_decimal::Decimal>().unwrap();
    assert_eq!(dec(mean), "-2.5".parse().unwrap());
    assert_eq!(dec(hdd), "19.5".parse().unwrap());
}
