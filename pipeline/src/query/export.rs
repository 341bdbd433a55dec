//! `meterline subject export`: everything stored about one subject, structured and
//! machine-readable (rights of access and portability).
//!
//! Sections (each a list of rows with the table's columns):
//! - `profile`: the `subjects` row;
//! - `consent_history`: the subject's `consent_ledger` entries, in order (meters
//!   as the ledger holds them: keyed hashes);
//! - `meters`: the meters that were the subject's and when (from the ledger),
//!   with the meter id where the lake holds readings of it;
//! - `access_log`: raw IPs with city/country and time (kept 90 days);
//! - `readings`: every stored version of every reading of the subject: those
//!   naming it, and those without a `subject` of its meters while they were its;
//! - `meter_profiles`: the profiles (`meter-profile/v1`) of its meters from the
//!   first up to the day each stopped being its (what an erasure removes);
//! - `dead_letters`: dead letters whose payload names the subject, or one of its
//!   meters at a time it was its;
//! - `consumption_hourly`, `consumption_daily`, `consumption_monthly`: the
//!   aggregates of those meters on the days (months) of those readings;
//! - `cost_hourly`, `cost_daily`, `cost_monthly`, `capacity_peaks`,
//!   `duration_curve`, `temperature_daily`: the costs and insights of those meters on
//!   the same days (months); `temperature_sensitivity`: their heating seasons;
//! - `erasure_audit`: the subject's erasures.
//!
//! Every export carries a `manifest`: each table meterline keeps ([`MANIFEST`]),
//! the section it went into and the rows found (0 included), or why the table
//! holds nothing of a subject. A table added without a line there fails a test.
//!
//! JSON is one document (`format = meterline-subject-export/v1`); CSV and Parquet
//! are one file per section in the output directory, and `manifest.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, TimeUnit, TimestampMicrosecondType};
use chrono::Datelike;
use meterline_operators::consent::SubjectMeters;
use meterline_operators::pseudonym::LedgerHasher;

use crate::config::Settings;
use crate::privacy::tables::subject_hash;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Json,
    Csv,
    Parquet,
}

/// The document's format id.
pub const FORMAT_ID: &str = "meterline-subject-export/v1";

/// A string literal for SQL (quotes doubled).
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Where each table meterline keeps goes in an export: `Ok(section)`, or
/// `Err(why it holds nothing of a subject)`. Every table `meterline sql` knows,
/// and the key store, must be here (a test checks).
pub const MANIFEST: [(&str, Result<&str, &str>); 28] = [
    ("subjects", Ok("profile")),
    ("consent_ledger", Ok("consent_history")),
    ("access_log", Ok("access_log")),
    ("readings", Ok("readings")),
    ("dead_letters", Ok("dead_letters")),
    ("consumption_hourly", Ok("consumption_hourly")),
    ("consumption_daily", Ok("consumption_daily")),
    ("consumption_monthly", Ok("consumption_monthly")),
    ("erasure_audit", Ok("erasure_audit")),
    ("meter_profiles", Ok("meter_profiles")),
    ("cost_hourly", Ok("cost_hourly")),
    ("cost_daily", Ok("cost_daily")),
    ("cost_monthly", Ok("cost_monthly")),
    ("capacity_peaks", Ok("capacity_peaks")),
    ("duration_curve", Ok("duration_curve")),
    ("temperature_daily", Ok("temperature_daily")),
    ("temperature_sensitivity", Ok("temperature_sensitivity")),
    (
        "spot_prices",
        Err("market prices per area: no data about a subject"),
    ),
    (
        "tax_rates",
        Err("the state's tax and support rates: no data about a subject"),
    ),
    (
        "weather_stations",
        Err("weather stations' positions: no data about a subject"),
    ),
    (
        "exchange_rates",
        Err("the central bank's exchange rates: no data about a subject"),
    ),
    (
        "elhub_messages",
        Err("the Elhub adapter's registry of processed messages: message ids, file hashes and counts, no data about a subject"),
    ),
    (
        "grid_tariffs",
        Err("grid companies' published tariffs: no data about a subject"),
    ),
    (
        "weather_observations",
        Err("station observations: no data about a subject (a subject's station is in their meter profile)"),
    ),
    (
        "area_consumption_hourly",
        Err(
            "area totals over at least k meters, no meter above its share: no row is one subject's",
        ),
    ),
    (
        "area_consumption_daily",
        Err(
            "area totals over at least k meters, no meter above its share: no row is one subject's",
        ),
    ),
    (
        "area_consumption_monthly",
        Err(
            "area totals over at least k meters, no meter above its share: no row is one subject's",
        ),
    ),
    (
        crate::privacy::keys::KEYS_DIR,
        Err("pseudonym epoch keys of public tenants: no data about a subject"),
    ),
];

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestEntry {
    pub table: &'static str,
    /// The section the table's rows went into.
    pub section: Option<&'static str>,
    pub rows: usize,
    /// Why nothing is exported from the table.
    pub note: Option<&'static str>,
}

/// The manifest of `sections`: every table of [`MANIFEST`] with its rows.
pub fn manifest(sections: &[(&'static str, Vec<RecordBatch>)]) -> Vec<ManifestEntry> {
    MANIFEST
        .iter()
        .map(|(table, cover)| match cover {
            Ok(section) => ManifestEntry {
                table,
                section: Some(section),
                rows: sections
                    .iter()
                    .filter(|(name, _)| name == section)
                    .flat_map(|(_, b)| b.iter().map(RecordBatch::num_rows))
                    .sum(),
                note: None,
            },
            Err(why) => ManifestEntry {
                table,
                section: None,
                rows: 0,
                note: Some(why),
            },
        })
        .collect()
}

/// A SQL list of string literals: `('a', 'b')`.
fn list(items: &[String]) -> String {
    format!(
        "({})",
        items
            .iter()
            .map(|i| quoted(i))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Keep the rows for which `keep` is true.
fn keep_rows(
    batches: Vec<RecordBatch>,
    keep: impl Fn(&RecordBatch, usize) -> bool,
) -> anyhow::Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let mask: BooleanArray = (0..b.num_rows()).map(|i| Some(keep(&b, i))).collect();
            Ok(arrow::compute::filter_record_batch(&b, &mask)?)
        })
        .collect()
}

fn strings<'b>(b: &'b RecordBatch, name: &str) -> anyhow::Result<&'b StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| anyhow::anyhow!("no string column `{name}`"))
}

fn micros<'b>(b: &'b RecordBatch, name: &str) -> anyhow::Result<&'b TimestampMicrosecondArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| anyhow::anyhow!("no timestamp column `{name}`"))
}

/// What one export reads the lake with.
struct Reader<'a> {
    settings: &'a Settings,
    lake: meterline_sinks::Lake,
    tenant: String,
    subject: String,
    hash: String,
    hasher: LedgerHasher,
    /// The subject's meters (ledger hashes) and when they were its.
    meters: SubjectMeters,
    /// Meter ids of the tenant's readings without a subject whose hash is one of
    /// the subject's meters: hash -> id.
    ids: BTreeMap<String, String>,
}

impl Reader<'_> {
    async fn query(&self, table: &'static str, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
        if meterline_sinks::open_existing(&self.lake, table)
            .await?
            .is_none()
        {
            return Ok(Vec::new());
        }
        crate::query::sql::query(&self.settings.lake, sql).await
    }

    fn covers(&self, meter: &str, at: i64) -> bool {
        !self.meters.is_empty() && self.meters.covers(&self.hasher.hash(meter), at)
    }

    /// Find the ids of the subject's meters among the tenant's readings.
    async fn resolve_meters(&mut self) -> anyhow::Result<()> {
        if self.meters.is_empty() {
            return Ok(());
        }
        let batches = self
            .query(
                "readings",
                &format!(
                    "SELECT DISTINCT meter FROM readings WHERE tenant = {} AND subject IS NULL",
                    quoted(&self.tenant)
                ),
            )
            .await?;
        let wanted: BTreeSet<&str> = self.meters.meters().into_iter().map(|(h, _)| h).collect();
        for b in &batches {
            let m = strings(b, "meter")?;
            for i in 0..b.num_rows() {
                let hash = self.hasher.hash(m.value(i));
                if wanted.contains(hash.as_str()) {
                    self.ids.insert(hash, m.value(i).to_owned());
                }
            }
        }
        Ok(())
    }

    fn meter_ids(&self) -> Vec<String> {
        self.ids.values().cloned().collect()
    }

    /// The `meters` section.
    fn meters_section(&self) -> anyhow::Result<Vec<RecordBatch>> {
        let mut id = Vec::new();
        let mut hash = Vec::new();
        let mut from = Vec::new();
        let mut to = Vec::new();
        for (h, periods) in self.meters.meters() {
            for (f, t) in periods {
                id.push(self.ids.get(h).cloned());
                hash.push(h.to_owned());
                from.push(*f);
                to.push(*t);
            }
        }
        if hash.is_empty() {
            return Ok(Vec::new());
        }
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("meter", DataType::Utf8, true),
            Field::new("meter_hash", DataType::Utf8, false),
            Field::new("from", ts(), false),
            Field::new("to", ts(), true),
        ]));
        Ok(vec![RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(id)),
                Arc::new(StringArray::from(hash)),
                Arc::new(TimestampMicrosecondArray::from(from).with_timezone("UTC")),
                Arc::new(TimestampMicrosecondArray::from(to).with_timezone("UTC")),
            ],
        )?])
    }

    /// Readings naming the subject, and those without a subject of its meters
    /// while they were its.
    async fn readings(&self) -> anyhow::Result<Vec<RecordBatch>> {
        let (t, s) = (quoted(&self.tenant), quoted(&self.subject));
        let ids = self.meter_ids();
        let by_meter = if ids.is_empty() {
            String::new()
        } else {
            format!(" OR (subject IS NULL AND meter IN {})", list(&ids))
        };
        let batches = self
            .query(
                "readings",
                &format!(
                    "SELECT * FROM readings WHERE tenant = {t} AND (subject = {s}{by_meter}) \
                     ORDER BY meter, quantity, direction, interval_start, version NULLS FIRST"
                ),
            )
            .await?;
        for b in &batches {
            strings(b, "meter")?;
            micros(b, "interval_start")?;
        }
        keep_rows(batches, |b, i| {
            let (Ok(subject), Ok(meter), Ok(start)) = (
                strings(b, "subject"),
                strings(b, "meter"),
                micros(b, "interval_start"),
            ) else {
                return false;
            };
            if subject.is_valid(i) {
                return subject.value(i) == self.subject;
            }
            self.covers(meter.value(i), start.value(i))
        })
    }

    /// Dead letters of the tenant whose payload names the subject, or one of its
    /// meters at a time it was its.
    async fn dead_letters(&self) -> anyhow::Result<Vec<RecordBatch>> {
        #[derive(serde::Deserialize)]
        struct Named {
            subject: Option<serde_json::Value>,
            meter_id: Option<serde_json::Value>,
            start: Option<serde_json::Value>,
        }
        let batches = self
            .query(
                "dead_letters",
                &format!(
                    "SELECT * FROM dead_letters WHERE tenant = {} AND payload IS NOT NULL \
                     ORDER BY dead_lettered_at, source_topic, source_partition, source_offset",
                    quoted(&self.tenant)
                ),
            )
            .await?;
        for b in &batches {
            strings(b, "payload")?;
        }
        keep_rows(batches, |b, i| {
            let Ok(payload) = strings(b, "payload") else {
                return false;
            };
            let Ok(named) = serde_json::from_str::<Named>(payload.value(i)) else {
                return false;
            };
            let text = |v: &Option<serde_json::Value>| {
                v.as_ref().and_then(|v| v.as_str().map(str::to_owned))
            };
            if text(&named.subject).as_deref() == Some(self.subject.as_str()) {
                return true;
            }
            let start = text(&named.start)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                .map(|d| d.timestamp_micros());
            matches!((text(&named.meter_id), start), (Some(m), Some(at)) if self.covers(&m, at))
        })
    }

    /// The profiles of the subject's meters that are the subject's
    /// ([`SubjectMeters::covers_profile`]: what an erasure removes).
    async fn meter_profiles(&self) -> anyhow::Result<Vec<RecordBatch>> {
        if self.meters.is_empty() {
            return Ok(Vec::new());
        }
        let batches = self
            .query(
                "meter_profiles",
                &format!(
                    "SELECT * FROM meter_profiles WHERE tenant = {} ORDER BY meter, valid_from, version",
                    quoted(&self.tenant)
                ),
            )
            .await?;
        let valid_from = |b: &RecordBatch| {
            b.column_by_name("valid_from")
                .and_then(|c| c.as_primitive_opt::<Date32Type>())
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("meter_profiles: no date column `valid_from`"))
        };
        for b in &batches {
            strings(b, "meter")?;
            valid_from(b)?;
        }
        keep_rows(batches, |b, i| {
            let (Ok(meter), Ok(from)) = (strings(b, "meter"), valid_from(b)) else {
                return false;
            };
            self.meters
                .covers_profile(&self.hasher.hash(meter.value(i)), from.value(i))
        })
    }

    /// The aggregates of the readings' meters on the readings' days (months).
    async fn aggregates(
        &self,
        readings: &[RecordBatch],
    ) -> anyhow::Result<Vec<(&'static str, Vec<RecordBatch>)>> {
        let mut days: BTreeSet<(String, i32)> = BTreeSet::new();
        for b in readings {
            let meter = strings(b, "meter")?;
            let date = b
                .column_by_name("local_date")
                .and_then(|c| c.as_primitive_opt::<Date32Type>())
                .ok_or_else(|| anyhow::anyhow!("no date column `local_date`"))?;
            for i in 0..b.num_rows() {
                days.insert((meter.value(i).to_owned(), date.value(i)));
            }
        }
        let months: BTreeSet<(String, i32)> = days
            .iter()
            .map(|(m, d)| (m.clone(), month_of(*d)))
            .collect();
        let meters: Vec<String> = days
            .iter()
            .map(|(m, _)| m.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for (table, column, order, wanted) in [
            ("consumption_hourly", "local_date", "hour_start", &days),
            ("consumption_daily", "local_date", "local_date", &days),
            ("consumption_monthly", "month", "month", &months),
            ("cost_hourly", "local_date", "hour_start, direction", &days),
            ("cost_daily", "local_date", "local_date, direction", &days),
            ("cost_monthly", "month", "month, direction", &months),
            ("capacity_peaks", "month", "month, rank", &months),
            ("duration_curve", "month", "month, direction, rank", &months),
            ("temperature_daily", "local_date", "local_date", &days),
        ] {
            let batches = if meters.is_empty() {
                Vec::new()
            } else {
                self.query(
                    table,
                    &format!(
                        "SELECT * FROM {table} WHERE tenant = {} AND meter IN {} ORDER BY meter, {order}",
                        quoted(&self.tenant),
                        list(&meters)
                    ),
                )
                .await?
            };
            for b in &batches {
                strings(b, "meter")?;
                b.column_by_name(column)
                    .and_then(|c| c.as_primitive_opt::<Date32Type>())
                    .ok_or_else(|| anyhow::anyhow!("{table}: no date column `{column}`"))?;
            }
            let kept = keep_rows(batches, |b, i| {
                let meter = strings(b, "meter").map(|m| m.value(i).to_owned());
                let date = b
                    .column_by_name(column)
                    .and_then(|c| c.as_primitive_opt::<Date32Type>())
                    .map(|d| d.value(i));
                match (meter, date) {
                    (Ok(m), Some(d)) => wanted.contains(&(m, d)),
                    _ => false,
                }
            })?;
            out.push((table, kept));
        }
        out.push((
            "temperature_sensitivity",
            self.seasons_of(&meters, &days).await?,
        ));
        Ok(out)
    }

    /// The `temperature_sensitivity` rows of `meters` in the heating seasons of `days`.
    async fn seasons_of(
        &self,
        meters: &[String],
        days: &BTreeSet<(String, i32)>,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        use meterline_operators::economics::insights::heating_season;
        let table = "temperature_sensitivity";
        if meters.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: BTreeSet<(String, i32)> = days
            .iter()
            .filter_map(|(m, d)| {
                heating_season(meterline_operators::aggregate::date_of(*d)).map(|s| (m.clone(), s))
            })
            .collect();
        let batches = self
            .query(
                table,
                &format!(
                    "SELECT * FROM {table} WHERE tenant = {} AND meter IN {} ORDER BY meter, season",
                    quoted(&self.tenant),
                    list(meters)
                ),
            )
            .await?;
        keep_rows(batches, |b, i| {
            let meter = strings(b, "meter").map(|m| m.value(i).to_owned());
            let season = b
                .column_by_name("season")
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int32Type>())
                .map(|s| s.value(i));
            match (meter, season) {
                (Ok(m), Some(s)) => wanted.contains(&(m, s)),
                _ => false,
            }
        })
    }
}

/// The first day of the month of a Date32 day (as Date32).
fn month_of(day: i32) -> i32 {
    let date = meterline_operators::aggregate::date_of(day);
    let first = date.with_day(1).unwrap_or(date);
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((first - epoch).num_days()).unwrap_or(day)
}

/// Every section's rows.
///
/// # Errors
/// The lake cannot be read; the tenant is not configured; no pseudonym key.
pub async fn collect(
    settings: &Settings,
    tenant: &str,
    subject: &str,
) -> anyhow::Result<Vec<(&'static str, Vec<RecordBatch>)>> {
    if settings.tenants.by_id(tenant).is_none() {
        anyhow::bail!("tenant `{tenant}` is not in the configuration");
    }
    if subject.is_empty() {
        anyhow::bail!("--subject must not be empty");
    }
    let key = settings.key.as_ref().ok_or_else(|| {
        anyhow::anyhow!("the export needs the pseudonym key to find the consent history (set {} or [privacy] key_file)", crate::config::KEY_ENV)
    })?;
    let lake = meterline_sinks::Lake::existing(&settings.lake)?;
    let meters = crate::privacy::consent::subject_meters(&lake, key, tenant, subject).await?;
    let mut reader = Reader {
        settings,
        lake,
        tenant: tenant.to_owned(),
        subject: subject.to_owned(),
        hash: subject_hash(key, subject),
        hasher: LedgerHasher::new(key),
        meters,
        ids: BTreeMap::new(),
    };
    reader.resolve_meters().await?;
    let (t, s, h) = (quoted(tenant), quoted(subject), quoted(&reader.hash));
    let mut out: Vec<(&'static str, Vec<RecordBatch>)> = Vec::new();
    out.push((
        "profile",
        reader
            .query(
                "subjects",
                &format!("SELECT * FROM subjects WHERE tenant = {t} AND subject = {s}"),
            )
            .await?,
    ));
    out.push((
        "consent_history",
        reader
            .query(
                "consent_ledger",
                &format!(
                    "SELECT seq, kind, purpose, meters, policy_version, lawful_basis, occurred_at, \
                     recorded_at, source, prev_hash, entry_hash FROM consent_ledger \
                     WHERE tenant = {t} AND subject_hash = {h} ORDER BY seq"
                ),
            )
            .await?,
    ));
    out.push(("meters", reader.meters_section()?));
    out.push((
        "access_log",
        reader
            .query(
                "access_log",
                &format!(
                    "SELECT ip, city, country, seen_at FROM access_log \
                     WHERE tenant = {t} AND subject = {s} ORDER BY seen_at"
                ),
            )
            .await?,
    ));
    let readings = reader.readings().await?;
    let aggregates = reader.aggregates(&readings).await?;
    out.push(("readings", readings));
    out.push(("meter_profiles", reader.meter_profiles().await?));
    out.push(("dead_letters", reader.dead_letters().await?));
    out.extend(aggregates);
    out.push((
        "erasure_audit",
        reader
            .query(
                "erasure_audit",
                &format!(
                    "SELECT * FROM erasure_audit WHERE tenant = {t} AND subject_hash = {h} \
                     ORDER BY requested_at"
                ),
            )
            .await?,
    ));
    Ok(out)
}

fn json_rows(batches: &[RecordBatch]) -> anyhow::Result<serde_json::Value> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    Ok(serde_json::from_slice(&buf)?)
}

/// The JSON document.
///
/// # Errors
/// Arrow or JSON encoding errors.
pub fn to_json(
    tenant: &str,
    subject: &str,
    sections: &[(&'static str, Vec<RecordBatch>)],
    exported_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<String> {
    let mut doc = serde_json::Map::new();
    doc.insert("format".into(), FORMAT_ID.into());
    doc.insert("tenant".into(), tenant.into());
    doc.insert("subject".into(), subject.into());
    doc.insert(
        "exported_at".into(),
        exported_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into(),
    );
    for (name, batches) in sections {
        doc.insert((*name).into(), json_rows(batches)?);
    }
    doc.insert("manifest".into(), serde_json::to_value(manifest(sections))?);
    Ok(serde_json::to_string_pretty(&serde_json::Value::Object(
        doc,
    ))?)
}

/// Write the export; returns the files written (JSON without `out`: none, the
/// document goes to stdout).
///
/// # Errors
/// Encoding or file errors.
pub fn write(
    tenant: &str,
    subject: &str,
    sections: &[(&'static str, Vec<RecordBatch>)],
    format: ExportFormat,
    out: Option<&Path>,
    exported_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<PathBuf>> {
    if format == ExportFormat::Json {
        let doc = to_json(tenant, subject, sections, exported_at)?;
        return match out {
            None => {
                println!("{doc}");
                Ok(Vec::new())
            }
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join("subject.json");
                std::fs::write(&path, doc)?;
                Ok(vec![path])
            }
        };
    }
    let dir = out.ok_or_else(|| {
        anyhow::anyhow!("--format csv and parquet write one file per section: give --out DIR")
    })?;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest(sections))?)?;
    written.push(path);
    for (name, batches) in sections {
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            continue;
        };
        match format {
            ExportFormat::Csv => {
                let path = dir.join(format!("{name}.csv"));
                let file = std::fs::File::create(&path)?;
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(file);
                for b in batches {
                    w.write(b)?;
                }
                written.push(path);
            }
            ExportFormat::Parquet => {
                let path = dir.join(format!("{name}.parquet"));
                let file = std::fs::File::create(&path)?;
                let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
                for b in batches {
                    w.write(b)?;
                }
                w.close()?;
                written.push(path);
            }
            ExportFormat::Json => {}
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_meterline_keeps_is_in_the_manifest() {
        for table in crate::query::sql::TABLES {
            assert!(
                MANIFEST.iter().any(|(t, _)| *t == table),
                "`{table}` has no line in the export manifest: export it, or say why it holds nothing of a subject"
            );
        }
        let m = manifest(&[("readings", Vec::new())]);
        assert_eq!(m.len(), MANIFEST.len());
        assert!(m.iter().all(|e| e.rows == 0));
    }

    #[test]
    fn a_month_starts_on_its_first_day() {
        let day = |y, m, d| {
            i32::try_from(
                (chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
                    - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days(),
            )
            .unwrap()
        };
        assert_eq!(month_of(day(2026, 10, 25)), day(2026, 10, 1));
        assert_eq!(month_of(day(2028, 2, 29)), day(2028, 2, 1));
        assert_eq!(month_of(day(2027, 1, 1)), day(2027, 1, 1));
    }
}
