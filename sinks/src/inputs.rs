//! The tables of the energy-economics inputs, written exactly once per Kafka offset like
//! `readings` (see `delta.rs`).
//!
//! | table | from | partitioned by |
//! |---|---|---|
//! | `spot_prices` | `price/v1` | `local_date` (Oslo) |
//! | `meter_profiles` | `meter-profile/v1` (private tenants) | `tenant` |
//! | `weather_observations` | `observation/v1` | `local_date` (Oslo) |
//! | `grid_tariffs` | `meterline import tariffs` (no topic) | none (a few rows per company) |
//! | `tax_rates` | defaults and `[[economics.rates]]`, at `meterline run`'s start | none |
//! | `exchange_rates` | `meterline import exchange-rates` (no topic) | none (a row per currency and day) |
//! | `weather_stations` | `meterline import stations` (no topic) | none (a row per station) |
//!
//! Prices and weather are reference data: no person is in them. A meter profile is
//! personal data: its `meter` never goes into the Delta log's statistics (the log outlives
//! DELETE and VACUUM).

use meterline_operators::inputs::{
    exchange, observation, price, profile, rates, stations, tariffs,
};

use crate::{DerivedSpec, TableSpec};

/// The table spec of `spot_prices`.
#[must_use]
pub fn spot_prices_spec() -> TableSpec {
    TableSpec {
        name: "spot_prices",
        schema: price::SPOT_PRICES.clone(),
        partition_columns: &["local_date"],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
        partition_column: "source_partition",
        offset_column: "source_offset",
    }
}

/// The table spec of `meter_profiles`.
#[must_use]
pub fn meter_profiles_spec() -> TableSpec {
    TableSpec {
        name: "meter_profiles",
        schema: profile::METER_PROFILES.clone(),
        partition_columns: &["tenant"],
        properties: &[
            (
                "delta.dataSkippingStatsColumns",
                "valid_from,version,ingested_at,source_partition,source_offset",
            ),
            ("delta.deletedFileRetentionDuration", "interval 1 days"),
        ],
        partition_column: "source_partition",
        offset_column: "source_offset",
    }
}

/// The table spec of `weather_observations`.
#[must_use]
pub fn weather_observations_spec() -> TableSpec {
    TableSpec {
        name: "weather_observations",
        schema: observation::WEATHER_OBSERVATIONS.clone(),
        partition_columns: &["local_date"],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
        partition_column: "source_partition",
        offset_column: "source_offset",
    }
}

/// The table spec of `grid_tariffs` (appended by imports, not from Kafka).
#[must_use]
pub fn grid_tariffs_spec() -> DerivedSpec {
    DerivedSpec {
        name: "grid_tariffs",
        schema: tariffs::GRID_TARIFFS.clone(),
        partition_columns: &[],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
    }
}

/// The table spec of `tax_rates` (replaced whole when the rates change).
#[must_use]
pub fn tax_rates_spec() -> DerivedSpec {
    DerivedSpec {
        name: "tax_rates",
        schema: rates::TAX_RATES.clone(),
        partition_columns: &[],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
    }
}

/// The table spec of `exchange_rates` (appended by imports, not from Kafka).
#[must_use]
pub fn exchange_rates_spec() -> DerivedSpec {
    DerivedSpec {
        name: "exchange_rates",
        schema: exchange::EXCHANGE_RATES.clone(),
        partition_columns: &[],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
    }
}

/// The table spec of `weather_stations` (appended by imports, not from Kafka).
#[must_use]
pub fn weather_stations_spec() -> DerivedSpec {
    DerivedSpec {
        name: "weather_stations",
        schema: stations::WEATHER_STATIONS.clone(),
        partition_columns: &[],
        properties: &[("delta.deletedFileRetentionDuration", "interval 1 days")],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use meterline_operators::inputs::InputContext;
    use meterline_operators::tenant::{Deployment, Rules, Tenant};
    use meterline_operators::{RawRecord, TenantRegistry};

    use super::*;
    use crate::OffsetTable;

    const CTX: InputContext = InputContext {
        ingested_at_micros: 1_768_435_200_000_000,
        max_message_bytes: 4096,
    };

    fn record(offset: i64, payload: &str) -> RawRecord<'_> {
        RawRecord {
            partition: 0,
            offset,
            payload: Some(payload.as_bytes()),
            replay_tag: None,
        }
    }

    /// `query` names the table `t`.
    async fn count(table: &mut OffsetTable) -> i64 {
        let batches = table.query("SELECT count(*) FROM t").await.unwrap();
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    /// Each input's decoded batch lands in its table with its offsets, and a profile's
    /// meter stays out of the Delta log.
    #[tokio::test]
    async fn each_input_lands_in_its_table_with_its_offsets() {
        let (dir, lake) = crate::lake::temporary_lake();
        let price = r#"{"schema": "price/v1", "area": "NO1", "start": "2026-01-15T00:00:00Z",
            "resolution": "PT60M", "price": 45.12, "currency": "EUR", "unit": "MWh",
            "source": "entsoe", "version": "2026-01-14T12:00:00Z"}"#;
        let observation = r#"{"schema": "observation/v1", "station": "SN18700",
            "time": "2026-01-15T00:00:00Z", "element": "air_temperature", "value": -3.4,
            "unit": "degC", "resolution": "PT1H", "source": "frost"}"#;
        let meter = "707057500000000018";
        let profile = format!(
            r#"{{"schema": "meter-profile/v1", "tenant": "acme", "meter_id": "{meter}",
            "valid_from": "2026-01-01", "price_area": "NO1", "grid_company_gln": "7080000000012",
            "customer_group": "household", "tax_zone": "standard", "scheme": "stromstotte",
            "version": "2026-01-02T08:00:00Z"}}"#
        );
        let tenants = TenantRegistry::new([Tenant {
            id: "acme".into(),
            deployment: Deployment::Private,
            timezone: chrono_tz::Europe::Oslo,
            rules: Rules::default(),
        }])
        .unwrap();
        let cases = [
            (
                spot_prices_spec(),
                price::decode(&[record(7, price)], &CTX).batch,
            ),
            (
                weather_observations_spec(),
                observation::decode(&[record(7, observation)], &CTX).batch,
            ),
            (
                meter_profiles_spec(),
                profile::decode(&[record(7, &profile)], &CTX, &tenants).batch,
            ),
        ];
        for (spec, batch) in cases {
            let name = spec.name;
            assert_eq!(batch.num_rows(), 1, "{name}");
            let mut table = OffsetTable::open_or_create(&lake, spec, "topic")
                .await
                .unwrap();
            table.load_offsets(&[0]).await.unwrap();
            table
                .append(&[batch], &BTreeMap::from([(0, 7)]))
                .await
                .unwrap();
            assert_eq!(count(&mut table).await, 1, "{name}");
            assert_eq!(
                table.load_offsets(&[0]).await.unwrap().get(&0),
                Some(&Some(7)),
                "{name}"
            );
        }
        let log = dir.path().join("meter_profiles/_delta_log");
        let mut seen = 0;
        for entry in std::fs::read_dir(&log).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!text.contains(meter), "the meter is in the Delta log");
            seen += 1;
        }
        assert!(seen >= 2, "the log has commits to look at");
    }
}
