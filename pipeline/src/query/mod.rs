//! Reading the lake: SQL over its tables (`sql`), the privacy audit (`audit`), a
//! subject's data export (`export`), the dead-letter tools (`dlq`) and cost simulations
//! (`simulate`).

pub mod audit;
pub mod dlq;
pub mod export;
pub mod simulate;
pub mod sql;
