//! The cost and insight tables of private tenants (`cost_hourly`, `cost_daily`,
//! `cost_monthly`, `capacity_peaks`, `duration_curve`, `temperature_daily`,
//! `temperature_sensitivity`), kept equal to a computation over `readings_current`,
//! `spot_prices`, `meter_profiles`, `weather_observations`, `grid_tariffs` and the rate
//! table. The computation is `meterline_operators::economics::tables`; this module decides
//! what to recompute and writes it (see `materializer.rs`).

mod materializer;
pub mod simulation;

pub use materializer::{
    read_inputs, run_loop, specs, CostError, CostMaterializer, CostRound, Inputs, PROGRESS_APP_IDS,
};

#[cfg(test)]
mod tests;
