//! `meterline sql`: DataFusion over the lake's Delta tables, registered by name.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use meterline_sinks::{Lake, LakeConfig};

/// Tables registered when present under the lake root.
pub const TABLES: [&str; 27] = [
    "readings",
    "dead_letters",
    "erasure_audit",
    "consent_ledger",
    "subjects",
    "access_log",
    "consumption_hourly",
    "consumption_daily",
    "consumption_monthly",
    "area_consumption_hourly",
    "area_consumption_daily",
    "area_consumption_monthly",
    "spot_prices",
    "weather_observations",
    "meter_profiles",
    "grid_tariffs",
    "tax_rates",
    "exchange_rates",
    "weather_stations",
    "cost_hourly",
    "cost_daily",
    "cost_monthly",
    "capacity_peaks",
    "duration_curve",
    "temperature_daily",
    "temperature_sensitivity",
    "elhub_messages",
];

/// The `readings_current` view: exactly one row per key (tenant, meter, quantity,
/// direction, interval_start), the one with the highest `version` (a missing
/// version is older than any). `readings` keeps every accepted version, the audit
/// trail of corrections.
pub fn readings_current_sql() -> String {
    let columns: Vec<String> = meterline_operators::schema::READINGS
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    format!(
        "SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER (\
         PARTITION BY tenant, meter, quantity, direction, interval_start \
         ORDER BY version DESC NULLS LAST, ingested_at DESC) AS version_rank FROM readings) \
         WHERE version_rank = 1",
        cols = columns.join(", ")
    )
}

/// Output formats of `meterline sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A session with every lake table that exists registered under its name.
///
/// # Errors
/// Unusable lake URI, storage errors, or a lake without any meterline table.
pub async fn session(lake: &LakeConfig) -> anyhow::Result<SessionContext> {
    let lake = Lake::existing(lake)?;
    let ctx = SessionContext::new();
    let mut found = 0;
    for name in TABLES {
        let url = lake.table_url(name);
        if let Ok(path) = url.to_file_path() {
            if !path.is_dir() {
                continue;
            }
        }
        let table =
            DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
                .await?;
        if table.version().is_none() {
            continue;
        }
        table.update_datafusion_session(&ctx.state())?;
        let provider = table.table_provider().await?;
        ctx.register_table(name, provider)?;
        if name == "readings" {
            let view = ctx.sql(&readings_current_sql()).await?.into_view();
            ctx.register_table("readings_current", view)?;
        }
        found += 1;
    }
    if found == 0 {
        anyhow::bail!(
            "no meterline tables under {} (expected {}): is this the lake of a `meterline run` or `meterline demo`?",
            lake.root(),
            TABLES.join(", ")
        );
    }
    Ok(ctx)
}

/// Run one query and collect its result.
///
/// # Errors
/// SQL errors (with DataFusion's message) and storage errors.
pub async fn query(lake: &LakeConfig, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let ctx = session(lake).await?;
    let df = ctx.sql(sql).await?;
    // Plain `Utf8` strings and no dictionaries (partition columns), what Arrow
    // writers and most consumers expect.
    Ok(df
        .collect()
        .await?
        .iter()
        .map(meterline_sinks::plain_strings)
        .collect::<Result<_, _>>()?)
}

/// Render batches in a format.
///
/// # Errors
/// Arrow formatting errors.
pub fn render(batches: &[RecordBatch], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => arrow::util::pretty::pretty_format_batches(batches)?.to_string(),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(out)?
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut out);
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                w.write_batches(&refs)?;
                w.finish()?;
            }
            let text = String::from_utf8(out)?;
            if text.is_empty() {
                "[]".to_owned()
            } else {
                text
            }
        }
    })
}

/// Parse `key=value` storage options from the command line.
///
/// # Errors
/// An option without `=`.
pub fn parse_options(options: &[String]) -> anyhow::Result<HashMap<String, String>> {
    options
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--storage-option `{o}` must be key=value"))
        })
        .collect()
}
