//! Elhub's messages, read for the readings contract.
//!
//! Elhub, the Norwegian metering hub, sends every metering value as an EMIF XML message.
//! This room reads them (pure: text in, checked values out); turning them into
//! `reading/v1` records and producing them is the Elhub adapter's (`meterline elhub`).
//!
//! - `emif.rs`: `NotifyValidatedDataForBillingEnergy` (E66), streamed one series at a time.

pub mod emif;

#[cfg(test)]
mod tests;
