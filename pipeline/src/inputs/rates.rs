//! `tax_rates`: the rate table meterline prices with (its defaults and
//! `[[economics.rates]]`), written by `meterline run` at start when it differs from
//! what the lake holds, so SQL shows the rates in effect.
//!
//! Whether it differs is known without reading the rows: each write records the
//! content's BLAKE3 hash as a Delta transaction id in the same commit.

use std::collections::BTreeSet;

use meterline_operators::economics::rates::RateTable;
use meterline_sinks::{DerivedTable, Lake};

/// The transaction id naming a rate table's content.
fn content_id(rates: &RateTable) -> String {
    format!("meterline:tax_rates:{}", rates.fingerprint())
}

/// Replace `tax_rates` with `rates` unless it holds them already. Returns whether
/// it wrote.
///
/// # Errors
/// Storage errors; a rate with more decimals than the table keeps.
pub async fn publish(lake: &Lake, rates: &RateTable) -> anyhow::Result<bool> {
    let mut table = DerivedTable::open_or_create(lake, meterline_sinks::tax_rates_spec()).await?;
    let id = content_id(rates);
    if table.progress(&id).await?.is_some() {
        return Ok(false);
    }
    let batch = meterline_operators::inputs::rates::batch(rates.rows())?;
    let whole: BTreeSet<meterline_sinks::Partition> = BTreeSet::from([Vec::new()]);
    table.replace(&[batch], &whole, Some((&id, 1))).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written once per content: the same rates again write nothing; changed
    /// rates replace the rows.
    #[tokio::test]
    async fn the_rates_are_written_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let config = meterline_sinks::LakeConfig {
            uri: dir.path().to_string_lossy().into_owned(),
            storage_options: Default::default(),
        };
        let lake = Lake::new(&config).unwrap();
        let defaults = RateTable::defaults();
        assert!(publish(&lake, &defaults).await.unwrap());
        assert!(!publish(&lake, &defaults).await.unwrap(), "unchanged");
        let count = |sql: &'static str| {
            let config = config.clone();
            async move {
                let rows = crate::query::sql::query(&config, sql).await.unwrap();
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
                    rows[0].column(0),
                )
                .value(0)
            }
        };
        let n = i64::try_from(defaults.rows().len()).unwrap();
        assert_eq!(count("SELECT count(*) FROM tax_rates").await, n);
        let mut changed = defaults.clone();
        changed.extend([meterline_operators::economics::rates::RateRow {
            rate: meterline_operators::economics::rates::Rate::Enova,
            zone: None,
            valid_from: chrono::NaiveDate::from_ymd_opt(2026, 7, 1).unwrap(),
            valid_to: None,
            value: "1.5".parse().unwrap(),
            source: "test".into(),
        }]);
        assert!(publish(&lake, &changed).await.unwrap());
        assert_eq!(count("SELECT count(*) FROM tax_rates").await, n + 1);
        assert_eq!(
            count("SELECT count(*) FROM tax_rates WHERE rate = 'enova' AND source = 'test'").await,
            1
        );
    }
}
