//! Configuration: a TOML file, then `METERLINE_...` environment variables on top.
//!
//! Every key can be overridden from the environment: the path is upper-cased with
//! sections joined by a double underscore, e.g. `METERLINE_KAFKA__BROKERS`,
//! `METERLINE_PIPELINE__FLUSH_INTERVAL_SECS`, `METERLINE_LAKE__STORAGE_OPTIONS__ENDPOINT`.
//! The pseudonym key is never part of the file: `[privacy] key_file` names a file,
//! or `METERLINE_PSEUDONYM_KEY` holds it (64 hex characters).
//!
//! `Config::build` validates everything at start; errors name the field.
//!
//! - `file.rs`: the sections of the file, as serde reads them, with their defaults;
//! - `settings.rs`: `Config::load` and `Config::build`, and the validated
//!   `Settings` with the settings type of every task.
//!
//! Layer rule: config imports no task module (kafka, ingest, aggregate, privacy
//! tasks, query, service); tasks import config. See docs/ARCHITECTURE.md.

mod file;
mod settings;

pub use file::*;
pub use settings::*;
