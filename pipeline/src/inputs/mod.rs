//! The energy-economics inputs of `meterline run`: spot prices, meter profiles and
//! weather observations, each consumed from its own topic (`[inputs]`) into its own
//! table, exactly once.
//!
//! ```text
//!  [inputs] prices_topic   ─▶ KafkaSource ─▶ InputRunner(price/v1)         ─▶ spot_prices          + dead_letters
//!  [inputs] profiles_topic ─▶ KafkaSource ─▶ InputRunner(meter-profile/v1) ─▶ meter_profiles       + dead_letters
//!  [inputs] weather_topic  ─▶ KafkaSource ─▶ InputRunner(observation/v1)   ─▶ weather_observations + dead_letters
//! ```
//!
//! Each input is a consumer group of its own (`<kafka.group_id>.<input>`), so the
//! processes of one deployment share its partitions as they share the readings'.
//! Offsets are kept in the lake as for readings: a flush commits its dead letters
//! (when there are any) and then its rows together with the offsets they cover; a
//! restart resumes from the data table's offsets, and what the lake already holds is
//! counted `already_stored`, never stored twice.
//!
//! Each input keeps its own ledger, apart from the readings': per input,
//! `meterline_input_records_consumed_total` equals the sum of
//! `meterline_input_records_total` over its outcomes (written, dead_lettered and the
//! drop reasons). An input that stops on an error (a fence, storage that stays down
//! past the grace period) is restarted from the lake's offsets after a backoff; the
//! readings never wait for it.
//!
//! - `runner.rs`: one input's loop (decode, buffer, flush, rebalance);
//! - `import.rs`: `meterline import prices|weather|tariffs`, files to the topics
//!   (and tariff files into `grid_tariffs`);
//! - `rates.rs`: `tax_rates`, written at start when the configured rates change.

pub mod import;
pub mod rates;
mod runner;

use std::sync::Arc;

use meterline_operators::inputs::{observation, price, profile, InputContext, InputOutput};
use meterline_operators::{RawRecord, TenantRegistry};
use meterline_sinks::{
    meter_profiles_spec, spot_prices_spec, weather_observations_spec, TableSpec,
};
use tracing::{error, info};

use crate::config::{InputsConfig, Settings};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

pub use runner::InputRunner;

/// One energy-economics input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Prices,
    Profiles,
    Weather,
}

impl Input {
    pub const ALL: [Self; 3] = [Self::Prices, Self::Profiles, Self::Weather];

    /// The input's name: its metric label and consumer-group suffix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Prices => "prices",
            Self::Profiles => "profiles",
            Self::Weather => "weather",
        }
    }

    /// Its topic in `[inputs]` (empty: off).
    #[must_use]
    pub fn topic(self, inputs: &InputsConfig) -> &str {
        match self {
            Self::Prices => &inputs.prices_topic,
            Self::Profiles => &inputs.profiles_topic,
            Self::Weather => &inputs.weather_topic,
        }
    }

    /// The table its records land in.
    #[must_use]
    pub fn spec(self) -> TableSpec {
        match self {
            Self::Prices => spot_prices_spec(),
            Self::Profiles => meter_profiles_spec(),
            Self::Weather => weather_observations_spec(),
        }
    }

    /// Decode records of its contract.
    #[must_use]
    pub fn decode(
        self,
        records: &[RawRecord<'_>],
        ctx: &InputContext,
        tenants: &TenantRegistry,
    ) -> InputOutput {
        match self {
            Self::Prices => price::decode(records, ctx),
            Self::Profiles => profile::decode(records, ctx, tenants),
            Self::Weather => observation::decode(records, ctx),
        }
    }

    /// The inputs `[inputs]` turns on.
    #[must_use]
    pub fn enabled(inputs: &InputsConfig) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|i| !i.topic(inputs).is_empty())
            .collect()
    }
}

/// Consume `input` until shutdown; after an error, start again from the lake's
/// offsets (capped exponential backoff, `meterline_input_restarts_total`).
pub async fn run_loop(settings: Settings, input: Input, metrics: Metrics, shutdown: Arc<Shutdown>) {
    let p = &settings.pipeline;
    let initial = std::time::Duration::from_millis(p.retry_initial_backoff_ms);
    let max = std::time::Duration::from_secs(p.retry_max_backoff_secs);
    let mut backoff = initial;
    info!(
        input = input.name(),
        topic = input.topic(&settings.inputs),
        table = input.spec().name,
        "input started"
    );
    while !shutdown.is_requested() {
        match runner::run_once(&settings, input, &metrics, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                metrics
                    .input_restarts
                    .with_label_values(&[input.name()])
                    .inc();
                error!(input = input.name(), error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "input stopped; starting again from the offsets in the lake");
                if !crate::shutdown::pause(backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(max);
            }
        }
    }
}
