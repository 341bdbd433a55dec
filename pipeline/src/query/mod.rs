//! Reading the lake: SQL over its tables (`sql`), the privacy audit (`audit`), a
//! subject's data export (`export`) and the dead-letter tools (`dlq`).

pub mod audit;
pub mod dlq;
pub mod export;
pub mod sql;
