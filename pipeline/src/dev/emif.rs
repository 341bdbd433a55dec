//! `meterline simulate --format emif --out DIR`: the generator's readings as EMIF E66
//! messages, one file per local day with one series per meter, and the meters' master
//! data (`masterdata.xml`, one `NotifyMeteringPointCharacteristics`), so that the Elhub
//! adapter (`meterline elhub ingest`) can be tried without Elhub access.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;

use meterline_operators::elhub::emif::Kind;
use meterline_operators::elhub::write::{billing_energy, characteristics, ProfileOut, SeriesOut};

use super::generator::{local_midnight, GeneratorSpec};

/// The grid area (EIC) of the generated meters' master data; `deploy/meterline.toml`
/// names it in `elhub.grid_areas`.
pub const SIMULATED_GRID_AREA: &str = "50YMETERLINEDEMO";

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The E66 messages, one per day.
    pub files: Vec<PathBuf>,
    /// The meters' master data.
    pub masterdata: Option<PathBuf>,
    pub series: usize,
    pub observations: usize,
}

/// A stable UUID-shaped id of `parts`.
fn uuid(parts: &str) -> String {
    let h = blake3::hash(parts.as_bytes()).to_hex();
    let h = h.as_str();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A meter's intervals of one day: resolution minutes, then (start, value) in order.
type MeterDay = (i64, Vec<(DateTime<Utc>, Decimal)>);

fn by_day_and_meter(
    spec: &GeneratorSpec,
) -> anyhow::Result<BTreeMap<(NaiveDate, String), MeterDay>> {
    let mut days: BTreeMap<(NaiveDate, String), MeterDay> = BTreeMap::new();
    for m in spec.generate().iter().filter(|m| m.bad_reason.is_none()) {
        let v: serde_json::Value = serde_json::from_slice(&m.payload)?;
        let field = |name: &str| {
            v[name]
                .as_str()
                .map(str::to_owned)
                .context("generator field")
        };
        let start: DateTime<Utc> =
            DateTime::parse_from_rfc3339(&field("start")?)?.with_timezone(&Utc);
        let minutes = if field("resolution")? == "PT15M" {
            15
        } else {
            60
        };
        let value = Decimal::from_str_exact(&format!("{:.3}", v["value"].as_f64().unwrap_or(0.0)))?;
        let day = start.with_timezone(&spec.timezone).date_naive();
        let entry = days
            .entry((day, field("meter_id")?))
            .or_insert((minutes, Vec::new()));
        entry.1.push((start, value.normalize()));
    }
    Ok(days)
}

/// Write the messages of `spec` into `out` (created if missing): `e66-<day>.xml`.
///
/// # Errors
/// The directory or a file cannot be written.
pub fn write(spec: &GeneratorSpec, out: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut per_day: BTreeMap<NaiveDate, Vec<SeriesOut>> = BTreeMap::new();
    for ((day, meter), (minutes, mut values)) in by_day_and_meter(spec)? {
        values.sort_by_key(|(t, _)| *t);
        let start = local_midnight(spec.timezone, day);
        let end = local_midnight(spec.timezone, day + Duration::days(1));
        per_day.entry(day).or_default().push(SeriesOut {
            identification: uuid(&format!("series {day} {meter}")),
            // Values of day D arrive by 07:00 on D+1.
            registration: end + Duration::hours(5),
            resolution: if minutes == 15 { "PT15M" } else { "PT1H" }.to_owned(),
            start,
            end,
            unit: "kWh".to_owned(),
            direction: "Out".to_owned(),
            metering_point: meter,
            observations: values
                .into_iter()
                .map(|(_, v)| (Kind::Metered, None, v))
                .collect(),
        });
    }
    let mut written = Written {
        files: Vec::new(),
        masterdata: None,
        series: 0,
        observations: 0,
    };
    let first = per_day.keys().next().copied();
    let mut meters: Vec<String> = per_day
        .values()
        .flatten()
        .map(|s| s.metering_point.clone())
        .collect();
    meters.sort_unstable();
    meters.dedup();
    for (day, series) in per_day {
        let created = local_midnight(spec.timezone, day + Duration::days(1)) + Duration::hours(6);
        let xml = billing_energy(
            &uuid(&format!("message {day} {}", spec.seed)),
            created,
            &series,
        );
        let path = out.join(format!("e66-{day}.xml"));
        std::fs::write(&path, xml).with_context(|| format!("cannot write {}", path.display()))?;
        written.series += series.len();
        written.observations += series.iter().map(|s| s.observations.len()).sum::<usize>();
        written.files.push(path);
    }
    if let Some(first) = first {
        let path = out.join("masterdata.xml");
        std::fs::write(&path, masterdata(spec, first, &meters))
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.masterdata = Some(path);
    }
    Ok(written)
}

/// The master data of `meters` from `first`: households around Oslo, one in five a cabin
/// in Finnmark's tax zone.
fn masterdata(spec: &GeneratorSpec, first: NaiveDate, meters: &[String]) -> String {
    let payloads: Vec<ProfileOut> = meters
        .iter()
        .enumerate()
        .map(|(i, meter)| {
            let cabin = i % 5 == 4;
            let offset = i32::try_from(i % 50).unwrap_or(0);
            ProfileOut {
                metering_point: meter.clone(),
                start: local_midnight(spec.timezone, first),
                grid_area: SIMULATED_GRID_AREA.to_owned(),
                coordinates: Some((
                    format!("{:.4}", 59.9 + f64::from(offset) * 0.013),
                    format!("{:.4}", 10.7 + f64::from(offset) * 0.011),
                )),
                vat_code: if cabin { "E" } else { "S" },
                el_fee: if cabin { "0" } else { "100" },
                consumption_code: if cabin { "36" } else { "35" },
            }
        })
        .collect();
    let created = local_midnight(spec.timezone, first) + Duration::hours(6);
    characteristics(
        &uuid(&format!("masterdata {first} {}", spec.seed)),
        created,
        &payloads,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use meterline_operators::economics::hour::Scheme;
    use meterline_operators::economics::PriceArea;
    use meterline_operators::elhub::emif::read_billing_energy;
    use meterline_operators::elhub::masterdata::{
        profile, read_characteristics, GridArea, ProfileRules,
    };

    #[test]
    fn every_generated_reading_is_an_observation_of_a_full_day_series() {
        let spec = GeneratorSpec {
            meters: 4,
            first_day: NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
            days: 1,
            timezone: chrono_tz::Europe::Oslo,
            bad: 3,
            seed: 7,
        };
        let dir = tempfile::tempdir().unwrap();
        let w = write(&spec, dir.path()).unwrap();
        assert_eq!(w.files.len(), 1);
        assert_eq!(w.series, 4);
        // 25 hours; meter 3 is PT15M: 3 × 25 + 100.
        assert_eq!(w.observations, 3 * 25 + 100);
        assert_eq!(w.observations, spec.good_count());
        let file = std::fs::File::open(&w.files[0]).unwrap();
        let mut counts = Vec::new();
        let mut series_meters = Vec::new();
        read_billing_energy(std::io::BufReader::new(file), |_, s| {
            let s = s.unwrap();
            counts.push(s.observations.len());
            series_meters.push(s.metering_point);
        })
        .unwrap();
        counts.sort_unstable();
        assert_eq!(counts, [25, 25, 25, 100]);

        // The master data: a profile for each meter, from the first day.
        let file = std::fs::File::open(w.masterdata.unwrap()).unwrap();
        let mut payloads = Vec::new();
        read_characteristics(std::io::BufReader::new(file), |_, p| payloads.push(p)).unwrap();
        let areas = std::collections::BTreeMap::from([(
            SIMULATED_GRID_AREA.to_owned(),
            GridArea {
                price_area: PriceArea::No1,
                grid_company_gln: "7080000000012".to_owned(),
            },
        )]);
        let rules = ProfileRules {
            tenant: "acme-industri",
            timezone: spec.timezone,
            grid_areas: &areas,
            household_scheme: Scheme::Stromstotte,
        };
        let version = "2026-10-26T05:00:00Z".parse().unwrap();
        let mut meters = Vec::new();
        for p in &payloads {
            let (meter, text) = profile(p, version, &rules).unwrap();
            assert!(text.contains(r#""valid_from":"2026-10-25""#), "{text}");
            meters.push(meter);
        }
        meters.sort_unstable();
        series_meters.sort_unstable();
        assert_eq!(
            meters, series_meters,
            "a profile for each meter of the series"
        );
    }
}
