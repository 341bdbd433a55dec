//! The privacy tables: their names, schemas and Delta specs, and the keyed
//! subject hash they identify subjects by. Shared by the tasks that write them
//! (subjects, lifecycle, erasure) and the commands that read them (audit,
//! export), so none of those needs another.
//!
//! | table | written by | holds |
//! |---|---|---|
//! | `consent_ledger` | subject events | append-only, hash-chained consent history; subjects as keyed hashes |
//! | `subjects` | subject events | current profiles of privately treated subjects |
//! | `access_log` | subject events | raw IPs with their time (kept 90 days) |
//! | `erasure_audit` | erasures, retention sweeps, key destruction | what was removed, when and why; no personal data |

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use meterline_operators::MasterKey;
use meterline_sinks::DerivedSpec;

pub const LEDGER_TABLE: &str = "consent_ledger";
pub const SUBJECTS_TABLE: &str = "subjects";
pub const ACCESS_LOG_TABLE: &str = "access_log";

/// The audit table.
pub const AUDIT_TABLE: &str = "erasure_audit";

/// What happened to a subject: the `kind` of a `consent_ledger` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConsentGranted,
    ConsentWithdrawn,
    UpgradedToPrivate,
    AccountTerminated,
    ElhubConsentGranted,
    ElhubConsentRevoked,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ConsentGranted,
        Kind::ConsentWithdrawn,
        Kind::UpgradedToPrivate,
        Kind::AccountTerminated,
        Kind::ElhubConsentGranted,
        Kind::ElhubConsentRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConsentGranted => "consent_granted",
            Kind::ConsentWithdrawn => "consent_withdrawn",
            Kind::UpgradedToPrivate => "upgraded_to_private",
            Kind::AccountTerminated => "account_terminated",
            Kind::ElhubConsentGranted => "elhub_consent_granted",
            Kind::ElhubConsentRevoked => "elhub_consent_revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What the entry changes in the consent view (`purpose` as recorded).
    pub fn change(self, purpose: Option<&str>) -> meterline_operators::consent::ChangeKind<'_> {
        use meterline_operators::consent::{ChangeKind, DEFAULT_UPGRADE_PURPOSE};
        match self {
            Kind::ElhubConsentGranted => ChangeKind::ElhubGranted,
            Kind::ElhubConsentRevoked => ChangeKind::ElhubRevoked,
            Kind::UpgradedToPrivate => {
                ChangeKind::Upgraded(purpose.unwrap_or(DEFAULT_UPGRADE_PURPOSE))
            }
            Kind::AccountTerminated => ChangeKind::Terminated,
            Kind::ConsentWithdrawn => purpose.map_or(ChangeKind::Other, ChangeKind::Withdrawn),
            Kind::ConsentGranted => ChangeKind::Other,
        }
    }

    /// The lawful basis the ledger records for the event.
    pub fn lawful_basis(self) -> &'static str {
        match self {
            Kind::AccountTerminated => "contract",
            _ => "consent",
        }
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub static LEDGER: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("subject_hash", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("purpose", DataType::Utf8, true),
        Field::new("meters", DataType::Utf8, true),
        Field::new("policy_version", DataType::Utf8, true),
        Field::new("lawful_basis", DataType::Utf8, false),
        Field::new("occurred_at", ts(), false),
        Field::new("recorded_at", ts(), false),
        Field::new("source", DataType::Utf8, true),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("prev_hash", DataType::Utf8, false),
        Field::new("entry_hash", DataType::Utf8, false),
    ]))
});

pub static SUBJECTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new("address", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("consents", DataType::Utf8, false),
        Field::new("upgraded_at", ts(), true),
        Field::new("terminated_at", ts(), true),
        Field::new("updated_at", ts(), false),
    ]))
});

pub static ACCESS_LOG: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("tenant", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("ip", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("seen_at", ts(), false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
    ]))
});

/// The three tables written from subject events. Statistics never on personal
/// columns.
pub fn subject_specs() -> [DerivedSpec; 3] {
    [
        DerivedSpec {
            name: LEDGER_TABLE,
            schema: LEDGER.clone(),
            partition_columns: &[],
            properties: &[
                (
                    "delta.dataSkippingStatsColumns",
                    "subject_hash,seq,kind,occurred_at,recorded_at,source_partition,source_offset",
                ),
                ("delta.deletedFileRetentionDuration", "interval 1 days"),
            ],
        },
        DerivedSpec {
            name: SUBJECTS_TABLE,
            schema: SUBJECTS.clone(),
            partition_columns: &[],
            properties: &[
                ("delta.dataSkippingStatsColumns", "updated_at,terminated_at"),
                ("delta.deletedFileRetentionDuration", "interval 1 days"),
            ],
        },
        DerivedSpec {
            name: ACCESS_LOG_TABLE,
            schema: ACCESS_LOG.clone(),
            partition_columns: &[],
            properties: &[
                (
                    "delta.dataSkippingStatsColumns",
                    "seen_at,source_partition,source_offset",
                ),
                ("delta.deletedFileRetentionDuration", "interval 1 days"),
            ],
        },
    ]
}

/// `kind` of an audit row.
pub mod kind {
    /// A subject's data removed on request (`subject.erasure`) or account end.
    pub const ERASURE: &str = "erasure";
    /// Data past its retention period removed.
    pub const RETENTION: &str = "retention";
    /// A pseudonym epoch key destroyed (its epoch ended longer ago than the grace).
    pub const KEY_DESTROYED: &str = "key_destroyed";
}

/// Schema of `erasure_audit`: what was removed, when, why, and how much. It holds
/// no personal data: a subject appears only as a keyed hash.
pub static AUDIT: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, true),
        Field::new("subject_hash", DataType::Utf8, true),
        Field::new("requested_at", ts(), false),
        Field::new("deadline_at", ts(), true),
        Field::new("completed_at", ts(), false),
        Field::new("tables", DataType::Utf8, false),
        Field::new("rows_removed", DataType::Int64, false),
        Field::new("files_rewritten", DataType::Int64, false),
        Field::new("files_vacuumed", DataType::Int64, false),
        Field::new("detail", DataType::Utf8, true),
    ]))
});

/// The audit table's spec (append-only, kept for good: it holds no personal data).
pub fn audit_spec() -> DerivedSpec {
    DerivedSpec {
        name: AUDIT_TABLE,
        schema: AUDIT.clone(),
        partition_columns: &[],
        properties: &[(
            "delta.dataSkippingStatsColumns",
            "kind,requested_at,completed_at",
        )],
    }
}

/// The keyed hash of a subject in the audit trail (32 hex characters): whoever
/// holds the key and a subject id can find its erasure; the table alone reveals
/// nothing, and a plain hash of an account number could be reversed by trying them.
pub fn subject_hash(key: &MasterKey, subject: &str) -> String {
    meterline_operators::pseudonym::LedgerHasher::new(key).hash(subject)
}

/// The key of the consent ledger's chain: each entry's `entry_hash` is a MAC under
/// it, so whoever can write the table but does not hold the master key cannot
/// recompute the chain after an edit.
pub struct ChainKey([u8; 32]);

impl ChainKey {
    pub fn new(master: &MasterKey) -> Self {
        Self(blake3::derive_key(
            "meterline 2026-12 consent ledger chain MAC v1",
            master.to_hex().as_bytes(),
        ))
    }

    /// A keyed blake3 hasher for one entry.
    pub fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(<redacted>)")
    }
}

impl Drop for ChainKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}
