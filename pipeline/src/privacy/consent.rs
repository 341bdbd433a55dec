//! The consent state the readings runner filters by: which subjects upgraded to
//! private treatment and which meters have an Elhub consent, built from
//! `consent_ledger` and reloaded whenever the ledger has a new version.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::{col, lit};
use meterline_operators::consent::{Change, ConsentView, SubjectMeters};
use meterline_operators::pseudonym::LedgerHasher;
use meterline_operators::MasterKey;
use meterline_sinks::{DerivedTable, Lake, SinkError};

use crate::privacy::tables::{subject_specs, Kind, LEDGER_TABLE};
use crate::shutdown::Shutdown;

/// The latest consent state, shared with the readings runner.
pub type ConsentHandle = Arc<std::sync::RwLock<Option<Arc<ConsentView>>>>;

/// A ledger row as the view reads it.
struct Row {
    tenant: String,
    subject_hash: String,
    seq: i64,
    kind: Kind,
    meters: Vec<String>,
    occurred: i64,
    recorded: i64,
    purpose: Option<String>,
}

impl Row {
    fn change(&self) -> Change<'_> {
        Change {
            tenant: &self.tenant,
            subject_hash: &self.subject_hash,
            kind: self.kind.change(self.purpose.as_deref()),
            meters: &self.meters,
            occurred: self.occurred,
            recorded: self.recorded,
        }
    }
}

/// The ledger columns [`rows_of`] reads, in its order.
const ROW_COLUMNS: [&str; 8] = [
    "tenant",
    "subject_hash",
    "seq",
    "kind",
    "meters",
    "occurred_at",
    "recorded_at",
    "purpose",
];

/// The ledger rows of `batches` (the [`ROW_COLUMNS`]).
fn rows_of(batches: &[arrow::array::RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in batches {
        let s = |i: usize| b.column(i).as_string::<i32>();
        let t = |i: usize, r: usize| {
            b.column(i)
                .as_primitive::<TimestampMicrosecondType>()
                .value(r)
        };
        let o = |i: usize, r: usize| {
            arrow::array::Array::is_valid(s(i), r).then(|| s(i).value(r).to_owned())
        };
        for r in 0..b.num_rows() {
            let Some(kind) = Kind::parse(s(3).value(r)) else {
                continue;
            };
            rows.push(Row {
                tenant: s(0).value(r).to_owned(),
                subject_hash: s(1).value(r).to_owned(),
                seq: b.column(2).as_primitive::<Int64Type>().value(r),
                kind,
                meters: o(4, r)
                    .map(|m| m.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                occurred: t(5, r),
                recorded: t(6, r),
                purpose: o(7, r),
            });
        }
    }
    rows
}

/// Build the consent state from the ledger (`None` while there is no ledger).
///
/// # Errors
/// Storage errors (transient).
pub async fn load_view(lake: &Lake, key: &MasterKey) -> Result<Option<ConsentView>, SinkError> {
    let Some(mut table) = meterline_sinks::open_existing(lake, LEDGER_TABLE).await? else {
        return Ok(None);
    };
    table
        .update_state()
        .await
        .map_err(|e| SinkError::Transient {
            table: LEDGER_TABLE,
            error: Box::new(e),
        })?;
    let [spec, _, _] = subject_specs();
    let ledger = DerivedTable::open_or_create(lake, spec).await?;
    let kinds = [
        Kind::UpgradedToPrivate,
        Kind::AccountTerminated,
        Kind::ConsentWithdrawn,
        Kind::ElhubConsentGranted,
        Kind::ElhubConsentRevoked,
    ];
    let batches = ledger
        .scan(
            &ROW_COLUMNS,
            col("kind").in_list(kinds.iter().map(|k| lit(k.as_str())).collect(), false),
        )
        .await?;
    let mut rows = rows_of(&batches);
    // In the order meterline recorded them (a meter's consent may pass between
    // subjects), then ledger order.
    rows.sort_by(|a, b| {
        (a.recorded, &a.tenant, &a.subject_hash, a.seq).cmp(&(
            b.recorded,
            &b.tenant,
            &b.subject_hash,
            b.seq,
        ))
    });
    let mut view = ConsentView::new(LedgerHasher::new(key));
    for row in &rows {
        view.apply(&row.change());
    }
    Ok(Some(view))
}

/// Reload the consent state whenever the ledger has a new version, until
/// shutdown. The first load happens before the pipeline starts (see
/// `service::run_pipeline`); errors keep the last state and are retried.
pub async fn consent_loop(
    lake: Lake,
    key: std::sync::Arc<MasterKey>,
    handle: ConsentHandle,
    shutdown: Arc<Shutdown>,
) {
    let mut seen: Option<u64> = None;
    while !shutdown.is_requested() {
        let version = match meterline_sinks::open_existing(&lake, LEDGER_TABLE).await {
            Ok(t) => t.and_then(|t| t.version()),
            Err(_) => None,
        };
        if version.is_some() && version != seen {
            match load_view(&lake, &key).await {
                Ok(view) => {
                    if let Ok(mut slot) = handle.write() {
                        *slot = view.map(Arc::new);
                    }
                    seen = version;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consent state not reloaded; keeping the last one")
                }
            }
        }
        // The refresh schedule (consent changes reach the readings within about
        // this long), not a synchronization.
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            () = shutdown.requested() => {}
        }
    }
}

/// The meters that were `subject`'s in `tenant`, and when (from its ledger
/// entries): what an erasure removes of readings that carry no `subject`.
///
/// # Errors
/// Storage errors (transient).
pub async fn subject_meters(
    lake: &Lake,
    key: &MasterKey,
    tenant: &str,
    subject: &str,
) -> Result<SubjectMeters, SinkError> {
    let mut out = SubjectMeters::default();
    if meterline_sinks::open_existing(lake, LEDGER_TABLE)
        .await?
        .is_none()
    {
        return Ok(out);
    }
    let [spec, _, _] = subject_specs();
    let ledger = DerivedTable::open_or_create(lake, spec).await?;
    let hash = crate::privacy::tables::subject_hash(key, subject);
    let batches = ledger
        .scan(
            &ROW_COLUMNS,
            col("tenant")
                .eq(lit(tenant))
                .and(col("subject_hash").eq(lit(hash))),
        )
        .await?;
    let mut rows = rows_of(&batches);
    rows.sort_by_key(|r| r.seq);
    for row in &rows {
        out.apply(&row.change());
    }
    Ok(out)
}

/// One recorded Elhub consent revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub tenant: String,
    pub subject_hash: String,
    pub seq: i64,
    /// Ledger hashes of the revoked meters.
    pub meters: Vec<String>,
    /// When it was recorded (µs).
    pub recorded: i64,
}

/// Every Elhub consent revocation in the ledger.
///
/// # Errors
/// Storage errors (transient).
pub async fn revocations(lake: &Lake) -> Result<Vec<Revocation>, SinkError> {
    if meterline_sinks::open_existing(lake, LEDGER_TABLE)
        .await?
        .is_none()
    {
        return Ok(Vec::new());
    }
    let [spec, _, _] = subject_specs();
    let ledger = DerivedTable::open_or_create(lake, spec).await?;
    let batches = ledger
        .scan(
            &ROW_COLUMNS,
            col("kind").eq(lit(Kind::ElhubConsentRevoked.as_str())),
        )
        .await?;
    Ok(rows_of(&batches)
        .into_iter()
        .map(|r| Revocation {
            tenant: r.tenant,
            subject_hash: r.subject_hash,
            seq: r.seq,
            meters: r.meters,
            recorded: r.recorded,
        })
        .collect())
}
