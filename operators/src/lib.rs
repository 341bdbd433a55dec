//! # meterline-operators
//!
//! The pure half of meterline: Arrow in, Arrow out, no I/O, no Kafka, no tokio.
//! Everything here is deterministic given its inputs (clock and keys are passed in),
//! so it is tested without infrastructure and benchmarked in isolation.
//!
//! ```text
//!  Kafka payloads ──decode──▶ RecordBatch ──validate──▶ RecordBatch ──anonymize──▶ readings batch
//!   (sensitive data removed)        │                   │                          │
//!        └──────────────────────────┴───────────────────┴─▶ DeadLetter          versions (keep newest)
//!                                     { reason, detail, redacted payload }         └─▶ sinks
//! ```
//!
//! Guarantees:
//! - every input record comes out exactly once: as a row of the output batch or as a
//!   [`DeadLetter`] with a stable [`Reason`] code;
//! - no personal value is ever copied into a dead letter's `detail`, an error message
//!   or a log line; public tenants' dead-letter payloads are redacted and pseudonymized;
//! - per-row work happens inside the batch functions; nothing awaits.

// Unit tests: a scenario reads best whole (the lint applies to everything else).
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod aggregate;
pub mod anonymize;
pub mod chain;
pub mod clock;
pub mod consent;
pub mod dead_letter;
pub mod decimal;
pub mod decode;
pub mod economics;
pub mod elhub;
pub mod epoch;
pub mod flags;
pub mod ids;
pub mod inputs;
pub mod operator;
pub mod presence;
pub mod pseudonym;
pub mod retain;
pub mod rfc3339;
pub mod schema;
pub mod sensitive;
pub mod tenant;
pub mod validate;
pub mod versions;

/// Hash maps of the hot paths: foldhash (fast, randomly seeded per map) instead of
/// SipHash; keys include producer-controlled strings, so a seeded hasher.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub use anonymize::Anonymize;
pub use chain::{Chain, ChainOutput};
pub use clock::Clock;
pub use dead_letter::{DeadLetter, Reason};
pub use decode::{DecodeConfig, DecodeOutput, Decoder, RawRecord};
pub use operator::{Operator, OperatorContext, OperatorError, OperatorOutput};
pub use presence::MeterPresence;
pub use pseudonym::{MasterKey, Pseudonymizer};
pub use sensitive::{SensitiveCounts, SensitiveScanner};
pub use tenant::{Deployment, Rules, Tenant, TenantRegistry};
pub use validate::Validate;
pub use versions::{Classified, VersionIndex};
