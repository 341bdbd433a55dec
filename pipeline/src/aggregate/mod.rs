//! The aggregate tables (hourly, daily and monthly consumption per meter and per
//! area), materialized from `readings` in rounds and recomputed after late data,
//! corrections, erasures and retention sweeps.

mod index;
mod materializer;
mod step;

pub use materializer::*;
