//! `meterline import prices|weather FILE`: the files this data usually arrives as,
//! produced to the input's topic as `price/v1` / `observation/v1` records, so they
//! reach the lake the one way every record does (exactly once, dead letters with
//! reasons, the input's ledger).
//!
//! - prices: an ENTSO-E A44 document (`Publication_MarketDocument`, EUR/MWh, curve
//!   type A03 gaps filled, PT15M and PT60M, DST days), or a JSON price feed
//!   (`[{NOK_per_kWh, EUR_per_kWh, EXR, time_start, time_end}]`, NOK/kWh with the
//!   feed's exchange rate; the feed names no area, so `--area` does);
//! - weather: a MET Norway Frost observations document;
//! - tariffs: Fri nettleie YAML files, which have no topic: each file is appended to
//!   `grid_tariffs` as a new version of its company's tariffs (see [`import_tariffs`]);
//! - exchange rates: Norges Bank CSV files, and weather stations: Frost sources
//!   documents, which have no topic either: each file is appended to `exchange_rates` /
//!   `weather_stations` (see [`import_exchange_rates`], [`import_stations`]).
//!
//! Before producing, the importer decodes its records as the pipeline will and says
//! how many will be refused, and why; they are produced all the same, so the
//! pipeline's counts add up and the dead letters say what was wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use meterline_operators::economics::{entsoe, frost, pricefeed, PriceArea};
use meterline_operators::inputs::observation::{self, ObservationRow};
use meterline_operators::inputs::price::{self, Price};
use meterline_operators::inputs::{InputContext, InputOutput};
use meterline_operators::RawRecord;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::Input;
use crate::config::{Config, KafkaConfig};

/// Files larger than this are refused before they are read (a year of quarter-hour
/// prices of all five areas is about 60 MB of A44 XML).
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// A record for an input topic: key and JSON payload.
pub type Record = (String, String);

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportRequest<'a> {
    pub input: Input,
    pub file: &'a Path,
    /// The price area of a JSON feed (an A44 document names its own).
    pub area: Option<PriceArea>,
    /// The version of the prices (default: now). A later import of the same
    /// hours with a later version replaces them.
    pub version: Option<DateTime<Utc>>,
    /// The `source` label (default: `entsoe`, `feed`, `frost`).
    pub source: Option<String>,
    /// Decode and report, produce nothing.
    pub dry_run: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub topic: String,
    pub records: usize,
    /// Records the pipeline will refuse, by reason (produced all the same).
    pub refused: BTreeMap<&'static str, usize>,
    /// Frost values left out because a better series had the same station,
    /// element and time.
    pub duplicates: usize,
    pub produced: bool,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.produced {
            "produced"
        } else {
            "would produce (dry run)"
        };
        write!(f, "{verb} {} records to {}", self.records, self.topic)?;
        if self.duplicates > 0 {
            write!(f, "; {} duplicate values left out", self.duplicates)?;
        }
        if !self.refused.is_empty() {
            let reasons: Vec<String> = self
                .refused
                .iter()
                .map(|(reason, n)| format!("{reason}: {n}"))
                .collect();
            write!(
                f,
                "; the pipeline will make dead letters of {} ({})",
                self.refused.values().sum::<usize>(),
                reasons.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The `price/v1` records of a price file: A44 XML (starts with `<`) or a JSON feed.
///
/// # Errors
/// The file is neither, or not valid (the parsers' errors name the series, position
/// or item); `--area` missing for a feed or given for an A44 document.
pub fn price_records(
    text: &str,
    area: Option<PriceArea>,
    version: DateTime<Utc>,
    source: Option<&str>,
) -> anyhow::Result<Vec<Record>> {
    let version_micros = version.timestamp_micros();
    let prices: Vec<Price> = if text.trim_start().starts_with('<') {
        anyhow::ensure!(
            area.is_none(),
            "an ENTSO-E A44 document names its own areas: leave out --area"
        );
        entsoe::parse_a44(text)?
            .into_iter()
            .map(|p| Price {
                area: p.area,
                start_micros: p.start.timestamp_micros(),
                resolution_minutes: p.resolution_minutes as i32,
                price: p.eur_per_mwh,
                currency: "EUR",
                unit: "MWh",
                exchange_rate: None,
                source: source.unwrap_or("entsoe").to_owned(),
                version_micros,
            })
            .collect()
    } else {
        let area = area.context(
            "a JSON price feed names no area: give it with --area (NO1, NO2, NO3, NO4 or NO5)",
        )?;
        pricefeed::parse_feed(text)?
            .into_iter()
            .map(|p| Price {
                area,
                start_micros: p.start.timestamp_micros(),
                resolution_minutes: p.resolution_minutes as i32,
                price: p.nok_per_kwh,
                currency: "NOK",
                unit: "kWh",
                exchange_rate: p.nok_per_eur,
                source: source.unwrap_or("feed").to_owned(),
                version_micros,
            })
            .collect()
    };
    Ok(prices.iter().map(price::record).collect())
}

/// The `observation/v1` records of a Frost document, and how many duplicate values
/// were left out.
///
/// # Errors
/// Not a Frost observations document.
pub fn weather_records(text: &str, source: Option<&str>) -> anyhow::Result<(Vec<Record>, usize)> {
    let parsed = frost::parse_frost(text)?;
    let records = parsed
        .observations
        .iter()
        .map(|o| {
            observation::record(&ObservationRow {
                station: o.station.clone(),
                time_micros: o.time.timestamp_micros(),
                element: o.element.clone(),
                value: o.value,
                unit: o.unit.clone(),
                resolution: o.resolution.clone(),
                source: source.unwrap_or("frost").to_owned(),
            })
        })
        .collect();
    Ok((records, parsed.duplicates))
}

/// What the pipeline will refuse of `records`, by reason: they are decoded as
/// `meterline run` decodes them.
#[must_use]
pub fn refusals(
    input: Input,
    records: &[Record],
    max_message_bytes: usize,
) -> BTreeMap<&'static str, usize> {
    let raw: Vec<RawRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, (_, payload))| RawRecord {
            partition: 0,
            offset: i as i64,
            payload: Some(payload.as_bytes()),
            replay_tag: None,
        })
        .collect();
    let ctx = InputContext {
        ingested_at_micros: 0,
        max_message_bytes,
    };
    let out: InputOutput = match input {
        Input::Prices => price::decode(&raw, &ctx),
        Input::Weather => observation::decode(&raw, &ctx),
        // Profiles are not imported from files here (the Elhub adapter makes them).
        Input::Profiles => return BTreeMap::new(),
    };
    let mut refused = BTreeMap::new();
    for d in out.dead_letters {
        *refused.entry(d.reason.as_str()).or_default() += 1;
    }
    refused
}

/// Produce `records` to `topic` and wait until the broker has every one
/// (idempotent producer: a retried send is not written twice).
///
/// # Errors
/// The producer cannot be created, or a record was not delivered.
pub async fn produce(kafka: &KafkaConfig, topic: &str, records: &[Record]) -> anyhow::Result<()> {
    let producer: FutureProducer = crate::kafka::client::producer(kafka)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .context("create producer")?;
    for chunk in records.chunks(10_000) {
        let mut inflight = Vec::with_capacity(chunk.len());
        for (key, payload) in chunk {
            let record = FutureRecord::to(topic).key(key).payload(payload);
            match producer.send_result(record) {
                Ok(f) => inflight.push(f),
                Err((e, _)) => anyhow::bail!("produce to {topic} failed: {e}"),
            }
        }
        for f in inflight {
            f.await?
                .map_err(|(e, _)| anyhow::anyhow!("delivery to {topic} failed: {e}"))?;
        }
    }
    producer.flush(rdkafka::util::Timeout::After(Duration::from_secs(30)))?;
    Ok(())
}

/// `meterline import prices|weather`: read the file, report, produce.
///
/// # Errors
/// Configuration (the input's topic not set), the file (missing, too large, not
/// UTF-8, not of the format), Kafka.
pub async fn import(config: &Path, request: &ImportRequest<'_>) -> anyhow::Result<ImportReport> {
    let config = Config::load(config)?;
    let input = request.input;
    let topic = input.topic(&config.inputs).to_owned();
    let field = match input {
        Input::Prices => "prices_topic",
        Input::Profiles => "profiles_topic",
        Input::Weather => "weather_topic",
    };
    anyhow::ensure!(
        !topic.is_empty(),
        "[inputs] {field} is not set: name the topic `meterline run` consumes {} from",
        input.name()
    );
    let max_message_bytes = config.pipeline.max_message_bytes;
    let text = read_file(request.file)?;
    let source = request.source.as_deref();
    let (records, duplicates) = match input {
        Input::Prices => {
            let version = match request.version {
                Some(v) => v,
                None => crate::config::clock_from_env()?.now(),
            };
            (price_records(&text, request.area, version, source)?, 0)
        }
        Input::Weather => weather_records(&text, source)?,
        Input::Profiles => anyhow::bail!("profiles are not imported from files"),
    };
    let refused = refusals(input, &records, max_message_bytes);
    if !request.dry_run {
        let kafka = config.kafka_settings()?;
        produce(&kafka, &topic, &records).await?;
    }
    Ok(ImportReport {
        topic,
        records: records.len(),
        refused,
        duplicates,
        produced: !request.dry_run,
    })
}

/// What importing one tariff file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffImport {
    pub file: String,
    pub company: String,
    pub tariffs: usize,
    /// The version written; `None`: the same file was imported before (nothing
    /// written) or a dry run.
    pub version: Option<DateTime<Utc>>,
}

impl std::fmt::Display for TariffImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(
                f,
                "{}: {} tariffs of {} imported into grid_tariffs (version {})",
                self.file,
                self.tariffs,
                self.company,
                v.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => write!(
                f,
                "{}: {} tariffs of {}, unchanged (this file is in grid_tariffs already, or --dry-run)",
                self.file, self.tariffs, self.company
            ),
        }
    }
}

/// `meterline import tariffs FILE...`: each Fri nettleie file is read whole (nothing
/// of a file with an error is imported; the error names the file and the tariff),
/// then appended to `grid_tariffs` with the file itself, as a new version of the
/// company's tariffs, unless that very file (by its BLAKE3 hash) is there already.
///
/// # Errors
/// Configuration, a file that is not a valid tariff file, storage.
pub async fn import_tariffs(
    config: &Path,
    files: &[std::path::PathBuf],
    dry_run: bool,
) -> anyhow::Result<Vec<TariffImport>> {
    use meterline_operators::economics::frinettleie::parse_tariff_file;
    let spec = meterline_sinks::grid_tariffs_spec();
    let read = |file: &Path, text: &str, hash: &str, version: i64| {
        let tariffs = parse_tariff_file(text)?;
        anyhow::ensure!(!tariffs.is_empty(), "no tariffs (`tariffer` is empty)");
        let batch = meterline_operators::inputs::tariffs::batch(&tariffs, text, hash, version)?;
        let report = TariffImport {
            file: file.display().to_string(),
            company: tariffs[0].company.clone(),
            tariffs: tariffs.len(),
            version: None,
        };
        Ok((batch, report))
    };
    let imported = import_documents(config, files, spec, dry_run, read).await?;
    Ok(imported
        .into_iter()
        .map(|(report, version)| TariffImport { version, ..report })
        .collect())
}

/// Whether a document of this BLAKE3 `hash` is in `table` (its `document_hash` column).
async fn imported_before(
    table: &meterline_sinks::DerivedTable,
    hash: &str,
) -> anyhow::Result<bool> {
    use datafusion::prelude::{col, lit};
    Ok(table
        .scan(&["document_hash"], col("document_hash").eq(lit(hash)))
        .await?
        .iter()
        .any(|b| b.num_rows() > 0))
}

/// What importing one exchange rate file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatesImport {
    pub file: String,
    pub rates: usize,
    /// The first and last day of the file's rates.
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    /// The version written; `None`: the same file was imported before, or a dry run.
    pub version: Option<DateTime<Utc>>,
}

impl std::fmt::Display for RatesImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(
                f,
                "{}: {} rates from {} to {} imported into exchange_rates (version {})",
                self.file,
                self.rates,
                self.from,
                self.to,
                v.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => write!(
                f,
                "{}: {} rates from {} to {}, unchanged (this file is in exchange_rates already, or --dry-run)",
                self.file, self.rates, self.from, self.to
            ),
        }
    }
}

/// `meterline import exchange-rates FILE...`: each Norges Bank CSV file is read whole
/// (nothing is written unless every file is valid), then appended to `exchange_rates`
/// with `source` as a new version of its rates, unless that very file (by its BLAKE3
/// hash) is there already. The cost tables pick the new rates up in their next round.
///
/// # Errors
/// Configuration, a file that is not a rate file, storage.
pub async fn import_exchange_rates(
    config: &Path,
    files: &[std::path::PathBuf],
    source: &str,
    dry_run: bool,
) -> anyhow::Result<Vec<RatesImport>> {
    use meterline_operators::economics::exchange::parse_norges_bank_csv;
    let spec = meterline_sinks::exchange_rates_spec();
    let read = |file: &Path, text: &str, hash: &str, version: i64| {
        let rates = parse_norges_bank_csv(text)?;
        let batch = meterline_operators::inputs::exchange::batch(&rates, source, hash, version)?;
        let days = rates.iter().map(|r| r.date);
        let report = RatesImport {
            file: file.display().to_string(),
            rates: rates.len(),
            from: days.clone().min().unwrap_or_default(),
            to: days.max().unwrap_or_default(),
            version: None,
        };
        Ok((batch, report))
    };
    let imported = import_documents(config, files, spec, dry_run, read).await?;
    Ok(imported
        .into_iter()
        .map(|(report, version)| RatesImport { version, ..report })
        .collect())
}

/// What importing one stations document did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationsImport {
    pub file: String,
    pub stations: usize,
    /// Sources that are not stations with a position.
    pub skipped: usize,
    /// The version written; `None`: the same file was imported before, or a dry run.
    pub version: Option<DateTime<Utc>>,
}

impl std::fmt::Display for StationsImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} stations", self.file, self.stations)?;
        if self.skipped > 0 {
            write!(f, " ({} sources without a position skipped)", self.skipped)?;
        }
        match self.version {
            Some(v) => write!(
                f,
                " imported into weather_stations (version {})",
                v.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => write!(
                f,
                ", unchanged (this file is in weather_stations already, or --dry-run)"
            ),
        }
    }
}

/// `meterline import stations FILE...`: each Frost sources document is read whole
/// (nothing is written unless every file is valid), then appended to `weather_stations`
/// with `source` as a new version of its stations, unless that very file (by its BLAKE3
/// hash) is there already. The cost tables recompute every day in their next round (a
/// meter's nearest station may have changed).
///
/// # Errors
/// Configuration, a file that is not a Frost sources document, storage.
pub async fn import_stations(
    config: &Path,
    files: &[std::path::PathBuf],
    source: &str,
    dry_run: bool,
) -> anyhow::Result<Vec<StationsImport>> {
    let spec = meterline_sinks::weather_stations_spec();
    let read = |file: &Path, text: &str, hash: &str, version: i64| {
        let parsed = frost::parse_sources(text)?;
        anyhow::ensure!(
            !parsed.stations.is_empty(),
            "no stations with a position (`data` has none)"
        );
        let batch =
            meterline_operators::inputs::stations::batch(&parsed.stations, source, hash, version)?;
        let report = StationsImport {
            file: file.display().to_string(),
            stations: parsed.stations.len(),
            skipped: parsed.skipped,
            version: None,
        };
        Ok((batch, report))
    };
    let imported = import_documents(config, files, spec, dry_run, read).await?;
    Ok(imported
        .into_iter()
        .map(|(report, version)| StationsImport { version, ..report })
        .collect())
}

/// Read every file and turn it into its rows and report with `read` (given the file, its
/// text, its BLAKE3 hash and the import's version in µs) before anything is written, then
/// append each to the table of `spec` (see [`append_documents`]): each report with the
/// version written, `None` when it was not.
async fn import_documents<T>(
    config: &Path,
    files: &[std::path::PathBuf],
    spec: meterline_sinks::DerivedSpec,
    dry_run: bool,
    read: impl Fn(&Path, &str, &str, i64) -> anyhow::Result<(arrow::array::RecordBatch, T)>,
) -> anyhow::Result<Vec<(T, Option<DateTime<Utc>>)>> {
    let config = Config::load(config)?;
    let now = crate::config::clock_from_env()?.now();
    let mut documents = Vec::with_capacity(files.len());
    let mut reports = Vec::with_capacity(files.len());
    for file in files {
        let text = read_file(file)?;
        let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
        let (batch, report) = read(file, &text, &hash, now.timestamp_micros())
            .with_context(|| format!("{}: not imported", file.display()))?;
        documents.push((hash, batch));
        reports.push(report);
    }
    let written = append_documents(&config, spec, documents, dry_run).await?;
    Ok(reports
        .into_iter()
        .zip(written)
        .map(|(report, written)| (report, written.then_some(now)))
        .collect())
}

/// Append each (hash, rows) document to the table of `spec` unless a document of that
/// hash is there already (or `dry_run`); whether each was written.
async fn append_documents(
    config: &Config,
    spec: meterline_sinks::DerivedSpec,
    documents: Vec<(String, arrow::array::RecordBatch)>,
    dry_run: bool,
) -> anyhow::Result<Vec<bool>> {
    if dry_run {
        return Ok(vec![false; documents.len()]);
    }
    let lake = meterline_sinks::Lake::new(&config.lake_config())?;
    let mut table = meterline_sinks::DerivedTable::open_or_create(&lake, spec).await?;
    let mut written = Vec::with_capacity(documents.len());
    for (hash, batch) in documents {
        let new = !imported_before(&table, &hash).await?;
        if new {
            table.append(&[batch], &[]).await?;
        }
        written.push(new);
    }
    Ok(written)
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_FILE_BYTES,
        "{} is {size} bytes, more than the {MAX_FILE_BYTES} an import reads",
        path.display()
    );
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> DateTime<Utc> {
        "2026-10-24T12:00:00Z".parse().unwrap()
    }

    /// An A44 document of one NO1 day in hours, with curve type A03: positions 3-4
    /// are left out and repeat position 2's price.
    const A44: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
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
      <timeInterval><start>2026-01-14T23:00Z</start><end>2026-01-15T03:00Z</end></timeInterval>
      <resolution>PT60M</resolution>
      <Point><position>1</position><price.amount>45.12</price.amount></Point>
      <Point><position>2</position><price.amount>-1.5</price.amount></Point>
    </Period>
  </TimeSeries>
</Publication_MarketDocument>"#;

    fn fields(record: &Record) -> serde_json::Value {
        serde_json::from_str(&record.1).unwrap()
    }

    #[test]
    fn an_a44_document_becomes_price_records_with_its_gaps_filled() {
        let records = price_records(A44, None, version(), None).unwrap();
        let got: Vec<(String, String, String)> = records
            .iter()
            .map(|r| {
                let v = fields(r);
                (
                    r.0.clone(),
                    v["start"].as_str().unwrap().to_owned(),
                    v["price"].to_string(),
                )
            })
            .collect();
        let want = [
            ("2026-01-14T23:00:00Z", "45.12"),
            ("2026-01-15T00:00:00Z", "-1.5"),
            ("2026-01-15T01:00:00Z", "-1.5"),
            ("2026-01-15T02:00:00Z", "-1.5"),
        ];
        assert_eq!(got.len(), want.len());
        for ((key, start, price), (want_start, want_price)) in got.iter().zip(want) {
            assert_eq!(key, "NO1");
            assert_eq!(start, want_start);
            assert_eq!(price, want_price);
        }
        let v = fields(&records[0]);
        assert_eq!(v["currency"], "EUR");
        assert_eq!(v["source"], "entsoe");
        assert_eq!(v["version"], "2026-10-24T12:00:00.000000Z");
        assert!(refusals(Input::Prices, &records, 4096).is_empty());
        let err = price_records(A44, Some(PriceArea::No2), version(), None).unwrap_err();
        assert!(err.to_string().contains("--area"), "{err}");
    }

    #[test]
    fn a_json_feed_needs_its_area_and_keeps_its_exchange_rate() {
        let feed = r#"[{"NOK_per_kWh": 0.52781, "EUR_per_kWh": 0.04512, "EXR": 11.698,
            "time_start": "2026-01-15T00:00:00+01:00", "time_end": "2026-01-15T01:00:00+01:00"},
            {"NOK_per_kWh": 60.1, "EUR_per_kWh": 5.137, "EXR": 11.698,
            "time_start": "2026-01-15T01:00:00+01:00", "time_end": "2026-01-15T02:00:00+01:00"}]"#;
        let err = price_records(feed, None, version(), None).unwrap_err();
        assert!(err.to_string().contains("--area"), "{err}");
        let records = price_records(
            feed,
            Some(PriceArea::No5),
            version(),
            Some("hvakosterstrommen"),
        )
        .unwrap();
        assert_eq!(records.len(), 2);
        let v = fields(&records[0]);
        assert_eq!(records[0].0, "NO5");
        assert_eq!(v["start"], "2026-01-14T23:00:00Z");
        assert_eq!(v["price"].to_string(), "0.52781");
        assert_eq!(v["exchange_rate"].to_string(), "11.698");
        assert_eq!(
            (v["currency"].as_str(), v["unit"].as_str()),
            (Some("NOK"), Some("kWh"))
        );
        assert_eq!(v["source"], "hvakosterstrommen");
        // 60.1 NOK/kWh at 11.698 is about 5138 EUR/MWh: the pipeline will refuse it.
        let refused = refusals(Input::Prices, &records, 4096);
        assert_eq!(refused, BTreeMap::from([("price_out_of_range", 1)]));
    }

    #[test]
    fn a_frost_document_becomes_observation_records() {
        let doc = r#"{"data": [{"sourceId": "SN18700:0", "referenceTime": "2026-01-15T00:00:00.000Z",
            "observations": [{"elementId": "air_temperature", "value": -3.4, "unit": "degC",
            "timeResolution": "PT1H", "qualityCode": 0}]}]}"#;
        let (records, duplicates) = weather_records(doc, None).unwrap();
        assert_eq!(duplicates, 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, "SN18700");
        let v = fields(&records[0]);
        assert_eq!(v["value"].to_string(), "-3.4");
        assert_eq!(v["time"], "2026-01-15T00:00:00Z");
        assert_eq!(v["source"], "frost");
        assert!(refusals(Input::Weather, &records, 4096).is_empty());
        assert!(weather_records("[]", None).is_err());
    }

    const TARIFFS: &str = "netteier: 'Fjordnett AS'
gln: ['7080000000012']
tariffer:
  - kundegrupper: [husholdning]
    gyldig_fra: '2026-01-01'
    energiledd: {grunnpris: 29.72}
    fastledd:
      metode: TRE_DØGNMAX_MND
      terskler: [{terskel: 0, pris: 2400}, {terskel: 5, pris: 5404.8}]
";

    /// A configuration whose lake is a directory of a new temporary directory.
    fn lake_config_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("meterline.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:9092\"\ngroup_id = \"g\"\n[lake]\nuri = \"{}\"\n\
                 [[tenants]]\nid = \"acme\"\ndeployment = \"private\"\n",
                dir.path().join("lake").display()
            ),
        )
        .unwrap();
        (dir, config)
    }

    /// Norges Bank files go into `exchange_rates` once each (SQL reads them); a file
    /// with an error imports nothing, and names itself and its line.
    #[tokio::test]
    async fn an_exchange_rate_file_is_imported_once_and_a_bad_one_not_at_all() {
        let (dir, config) = lake_config_file();
        let good = dir.path().join("eurnok.csv");
        std::fs::write(
            &good,
            "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nEUR;NOK;2026-10-22;11,6890\n\
             EUR;NOK;2026-10-23;11,7025\n",
        )
        .unwrap();
        let bad = dir.path().join("monthly.csv");
        std::fs::write(
            &bad,
            "BASE_CUR;QUOTE_CUR;TIME_PERIOD;OBS_VALUE\nEUR;NOK;2026-10;11,7\n",
        )
        .unwrap();
        let lake_config = crate::config::Config::load(&config).unwrap().lake_config();

        let err = import_exchange_rates(&config, &[good.clone(), bad], "norges-bank", false)
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("monthly.csv") && err.contains("line 2"),
            "{err}"
        );
        let lake = meterline_sinks::Lake::new(&lake_config).unwrap();
        assert!(
            meterline_sinks::open_existing(&lake, "exchange_rates")
                .await
                .unwrap()
                .is_none(),
            "nothing written when one file is bad"
        );

        let first =
            import_exchange_rates(&config, std::slice::from_ref(&good), "norges-bank", false)
                .await
                .unwrap();
        assert_eq!(first[0].rates, 2);
        assert!(first[0].version.is_some());
        assert!(first[0]
            .to_string()
            .contains("2 rates from 2026-10-22 to 2026-10-23"));
        let again =
            import_exchange_rates(&config, std::slice::from_ref(&good), "norges-bank", false)
                .await
                .unwrap();
        assert_eq!(
            again[0].version, None,
            "the same file is not imported twice"
        );
        let rows = crate::query::sql::query(
            &lake_config,
            "SELECT CAST(date AS VARCHAR) AS day, CAST(nok_per_unit AS VARCHAR) AS nok, source \
             FROM exchange_rates ORDER BY day",
        )
        .await
        .unwrap();
        let mut seen = Vec::new();
        for b in &rows {
            for row in 0..b.num_rows() {
                let cell = |c: usize| {
                    arrow::array::AsArray::as_string::<i32>(b.column(c))
                        .value(row)
                        .to_owned()
                };
                seen.push((cell(0), cell(1), cell(2)));
            }
        }
        let row = |d: &str, v: &str| (d.to_owned(), v.to_owned(), "norges-bank".to_owned());
        assert_eq!(
            seen,
            [
                row("2026-10-22", "11.68900000"),
                row("2026-10-23", "11.70250000")
            ]
        );
    }

    /// A Frost sources document goes into `weather_stations` once (a dry run writes
    /// nothing, not even the table); one with an error imports nothing.
    #[tokio::test]
    async fn a_stations_document_is_imported_once_and_a_bad_one_not_at_all() {
        let (dir, config) = lake_config_file();
        let good = dir.path().join("sources.json");
        std::fs::write(
            &good,
            r#"{"data": [
              {"@type": "SensorSystem", "id": "SN18700", "name": "OSLO - BLINDERN",
               "geometry": {"@type": "Point", "coordinates": [10.72, 59.9423]}},
              {"@type": "InterpolatedDataSource", "id": "idw"}]}"#,
        )
        .unwrap();
        let bad = dir.path().join("swapped.json");
        std::fs::write(
            &bad,
            r#"{"data": [{"id": "SN18700", "geometry": {"coordinates": [59.9423, 190.72]}}]}"#,
        )
        .unwrap();
        let lake_config = crate::config::Config::load(&config).unwrap().lake_config();
        let lake = meterline_sinks::Lake::new(&lake_config).unwrap();
        let exists = || async {
            meterline_sinks::open_existing(&lake, "weather_stations")
                .await
                .unwrap()
                .is_some()
        };

        let err = import_stations(&config, &[good.clone(), bad], "frost", false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("swapped.json"), "{err:#}");
        assert!(!exists().await, "nothing written when one file is bad");
        let dry = import_stations(&config, std::slice::from_ref(&good), "frost", true)
            .await
            .unwrap();
        assert_eq!(
            (dry[0].stations, dry[0].skipped, dry[0].version),
            (1, 1, None)
        );
        assert!(!exists().await, "a dry run writes nothing");

        let first = import_stations(&config, std::slice::from_ref(&good), "frost", false)
            .await
            .unwrap();
        assert!(first[0].version.is_some());
        let again = import_stations(&config, std::slice::from_ref(&good), "frost", false)
            .await
            .unwrap();
        assert_eq!(
            again[0].version, None,
            "the same file is not imported twice"
        );
        let rows = crate::query::sql::query(
            &lake_config,
            "SELECT station, name, latitude, longitude FROM weather_stations",
        )
        .await
        .unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let b = &rows[0];
        let text = |c: usize| arrow::array::AsArray::as_string::<i32>(b.column(c)).value(0);
        let float = |c: usize| {
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(b.column(c))
                .value(0)
        };
        assert_eq!((text(0), text(1)), ("SN18700", "OSLO - BLINDERN"));
        assert_eq!((float(2), float(3)), (59.9423, 10.72));
    }

    /// Tariff files go into `grid_tariffs` once each; a file with an error
    /// imports nothing, and names itself.
    #[tokio::test]
    async fn a_tariff_file_is_imported_once_and_a_bad_one_not_at_all() {
        let (dir, config) = lake_config_file();
        let good = dir.path().join("fjordnett.yml");
        std::fs::write(&good, TARIFFS).unwrap();
        let bad = dir.path().join("broken.yml");
        std::fs::write(&bad, TARIFFS.replace("grunnpris: 29.72", "grunnpris: mye")).unwrap();

        let err = import_tariffs(&config, &[good.clone(), bad.clone()], false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("broken.yml"), "{err:#}");
        let lake = meterline_sinks::Lake::new(
            &crate::config::Config::load(&config).unwrap().lake_config(),
        )
        .unwrap();
        assert!(
            meterline_sinks::open_existing(&lake, "grid_tariffs")
                .await
                .unwrap()
                .is_none(),
            "nothing written when one file is bad"
        );

        let first = import_tariffs(&config, std::slice::from_ref(&good), false)
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].company.as_str(), first[0].tariffs),
            ("Fjordnett AS", 1)
        );
        assert!(first[0].version.is_some());
        let again = import_tariffs(&config, std::slice::from_ref(&good), false)
            .await
            .unwrap();
        assert_eq!(
            again[0].version, None,
            "the same file is not imported twice"
        );
        let rows = crate::query::sql::query(
            &crate::config::Config::load(&config).unwrap().lake_config(),
            "SELECT company, capacity_steps, CAST(energy_base_ore_per_kwh AS VARCHAR) FROM grid_tariffs",
        )
        .await
        .unwrap();
        let n: usize = rows.iter().map(arrow::array::RecordBatch::num_rows).sum();
        assert_eq!(n, 1);
        let text = |c: usize| {
            let col =
                arrow::compute::cast(rows[0].column(c), &arrow::datatypes::DataType::Utf8).unwrap();
            arrow::array::AsArray::as_string::<i32>(&col)
                .value(0)
                .to_owned()
        };
        assert_eq!(text(0), "Fjordnett AS");
        assert_eq!(text(1), "0:2400;5:5404.8");
        assert_eq!(text(2), "29.720000");
    }
}
