//! The consent state the readings runner filters by: which subjects upgraded to
//! private treatment and which meters have an Elhub consent, built from
//! `consent_ledger` and reloaded whenever the ledger has a new version.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::{col, lit};
use meterline_operators::consent::ConsentView;
use meterline_operators::pseudonym::LedgerHasher;
use meterline_operators::MasterKey;
use meterline_sinks::{DerivedTable, Lake, SinkError};

use crate::privacy::tables::{subject_specs, Kind, LEDGER_TABLE};
use crate::shutdown::Shutdown;

/// The latest consent state, shared with the readings runner.
pub type ConsentHandle = Arc<std::sync::RwLock<Option<Arc<ConsentView>>>>;

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
        Kind::ElhubConsentGranted,
        Kind::ElhubConsentRevoked,
    ];
    let batches = ledger
        .scan(
            &[
                "tenant",
                "subject_hash",
                "seq",
                "kind",
                "meters",
                "occurred_at",
            ],
            col("kind").in_list(kinds.iter().map(|k| lit(k.as_str())).collect(), false),
        )
        .await?;
    let mut rows: Vec<(String, String, i64, Kind, Option<String>, i64)> = Vec::new();
    for b in &batches {
        let s = |i: usize| b.column(i).as_string::<i32>();
        for r in 0..b.num_rows() {
            let Some(kind) = Kind::parse(s(3).value(r)) else {
                continue;
            };
            let meters = s(4);
            rows.push((
                s(0).value(r).to_owned(),
                s(1).value(r).to_owned(),
                b.column(2).as_primitive::<Int64Type>().value(r),
                kind,
                arrow::array::Array::is_valid(meters, r).then(|| meters.value(r).to_owned()),
                b.column(5)
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(r),
            ));
        }
    }
    // In time order (a meter's consent may pass between subjects), then ledger order.
    rows.sort_by(|a, b| (a.5, &a.0, &a.1, a.2).cmp(&(b.5, &b.0, &b.1, b.2)));
    let mut view = ConsentView::new(LedgerHasher::new(key));
    for (tenant, subject, _, kind, meters, at) in rows {
        match kind {
            Kind::UpgradedToPrivate => view.upgrade(&tenant, &subject, at),
            Kind::ElhubConsentGranted | Kind::ElhubConsentRevoked => {
                for m in meters.iter().flat_map(|m| m.split(',')) {
                    view.elhub_event(&tenant, m, at, kind == Kind::ElhubConsentGranted);
                }
            }
            _ => {}
        }
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
