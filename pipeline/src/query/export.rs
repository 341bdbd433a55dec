//! `meterline subject export`: everything stored about one subject, structured and
//! machine-readable (rights of access and portability).
//!
//! Sections (each a list of rows with the table's columns):
//! - `profile`: the `subjects` row;
//! - `consent_history`: the subject's `consent_ledger` entries, in order;
//! - `access_log`: raw IPs with city/country and time (kept 90 days);
//! - `readings`: every stored version of every reading linked to the subject;
//! - `consumption_hourly`, `consumption_daily`, `consumption_monthly`: the
//!   aggregates of the subject's meters on the days (months) they have readings.
//!
//! JSON is one document (`format = meterline-subject-export/v1`); CSV and Parquet
//! are one file per section in the output directory.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;

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

/// The sections, as (name, table it needs, query).
fn sections(tenant: &str, subject: &str, hash: &str) -> Vec<(&'static str, &'static str, String)> {
    let (t, s, h) = (quoted(tenant), quoted(subject), quoted(hash));
    let days = format!(
        "SELECT DISTINCT tenant, meter, local_date FROM readings WHERE tenant = {t} AND subject = {s}"
    );
    let aggregate = |table: &str, order: &str| {
        format!(
            "SELECT a.* FROM {table} a JOIN ({days}) d ON a.tenant = d.tenant AND a.meter = d.meter \
             AND a.local_date = d.local_date ORDER BY a.meter, a.{order}"
        )
    };
    vec![
        (
            "profile",
            "subjects",
            format!("SELECT * FROM subjects WHERE tenant = {t} AND subject = {s}"),
        ),
        (
            "consent_history",
            "consent_ledger",
            format!(
                "SELECT seq, kind, purpose, policy_version, lawful_basis, occurred_at, recorded_at, \
                 source, prev_hash, entry_hash FROM consent_ledger \
                 WHERE tenant = {t} AND subject_hash = {h} ORDER BY seq"
            ),
        ),
        (
            "access_log",
            "access_log",
            format!(
                "SELECT ip, city, country, seen_at FROM access_log \
                 WHERE tenant = {t} AND subject = {s} ORDER BY seen_at"
            ),
        ),
        (
            "readings",
            "readings",
            format!(
                "SELECT * FROM readings WHERE tenant = {t} AND subject = {s} \
                 ORDER BY meter, quantity, direction, interval_start, version NULLS FIRST"
            ),
        ),
        ("consumption_hourly", "consumption_hourly", aggregate("consumption_hourly", "hour_start")),
        ("consumption_daily", "consumption_daily", aggregate("consumption_daily", "local_date")),
        (
            "consumption_monthly",
            "consumption_monthly",
            format!(
                "SELECT a.* FROM consumption_monthly a JOIN (SELECT DISTINCT tenant, meter, \
                 date_trunc('month', local_date) AS month FROM ({days})) d \
                 ON a.tenant = d.tenant AND a.meter = d.meter AND a.month = CAST(d.month AS DATE) \
                 ORDER BY a.meter, a.month"
            ),
        ),
    ]
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
    let hash = subject_hash(key, subject);
    let lake = meterline_sinks::Lake::existing(&settings.lake)?;
    let mut out = Vec::new();
    for (name, table, sql) in sections(tenant, subject, &hash) {
        let exists = meterline_sinks::open_existing(&lake, table)
            .await?
            .is_some();
        let batches = if exists {
            crate::query::sql::query(&settings.lake, &sql).await?
        } else {
            Vec::new()
        };
        out.push((name, batches));
    }
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
