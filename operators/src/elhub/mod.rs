//! Elhub's messages, read for the readings contract.
//!
//! Elhub, the Norwegian metering hub, sends every metering value as an EMIF XML message;
//! households can download their values as a CSV from Elhub's "Min side". This room reads
//! them and maps them to `reading/v1` records (pure: text in, records or refusals out);
//! producing them is the Elhub adapter's (`meterline elhub ingest`).
//!
//! - `emif.rs`: the streaming reader; `NotifyValidatedDataForBillingEnergy` (E66) and
//!   `CollectedData`, one series at a time;
//! - `masterdata.rs`: `NotifyMeteringPointCharacteristics` as `meter-profile/v1` records;
//! - `readings.rs`: a series as `reading/v1` records (the mapping table), reject reasons;
//! - `minside.rs`: the Min side CSV;
//! - `write.rs`: E66 messages written (the demo generator's `--format emif`).

pub mod emif;
pub mod masterdata;
pub mod minside;
pub mod readings;
pub mod write;

#[cfg(test)]
mod masterdata_tests;
#[cfg(test)]
mod tests;
