//! Compaction in `meterline run`: every `compaction.every_secs`, each cold
//! partition of `readings` (a tenant's local date before yesterday, in the
//! tenant's zone) that has `compaction.min_files` files or more is rewritten as
//! one file sorted by meter ([`meterline_sinks::compact`] says why that keeps
//! exactly-once, concurrent appends and erasures intact). A partition of more
//! than `compaction.max_partition_rows` rows is left as it is: the rewrite holds
//! it in memory.
//!
//! Yesterday and today are left alone: late readings and corrections still
//! arrive for them, and each would add a small file to a compacted partition
//! again. Files replaced by an earlier round are deleted at the start of the next
//! one older than `compaction.keep_replaced_secs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use meterline_operators::TenantRegistry;
use meterline_sinks::compact::{compact_partition, partition_files, purge_replaced, Compacted};
use meterline_sinks::{open_existing, Lake, Partition, SinkError};
use tracing::{info, warn};

use crate::config::{CompactionConfig, Settings};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The table compacted, and its partition columns.
const TABLE: &str = "readings";
const PARTITION_COLUMNS: [&str; 2] = ["tenant", "local_date"];

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Partitions rewritten.
    pub partitions: u64,
    /// Partitions whose commit conflicted with a rewrite (tried again next round).
    pub conflicts: u64,
    pub files: Compacted,
    /// Replaced files of earlier rounds deleted from storage.
    pub purged: usize,
    /// Cold partitions with enough files left as they are: more rows than
    /// `compaction.max_partition_rows` (or files without a row count).
    pub too_large: u64,
}

/// Run a round every `settings.compaction.every_secs` (the first one interval
/// after start) until shutdown. A failed round is logged and counted; the next
/// one repeats it.
pub async fn run_loop(settings: Settings, metrics: Metrics, shutdown: Arc<Shutdown>) {
    let config = settings.compaction.clone();
    if !config.enabled {
        return;
    }
    let lake = match Lake::new(&settings.lake) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "compaction: the lake is not usable; compaction is off");
            return;
        }
    };
    let every = Duration::from_secs(config.every_secs.max(1));
    loop {
        // The schedule, not a synchronization.
        if !crate::shutdown::pause(every, &shutdown).await {
            return;
        }
        let now = settings.clock.now();
        match round(&lake, &settings.tenants, &config, now, &shutdown).await {
            Ok(r) => {
                record(&metrics, &r);
                if r.partitions + r.conflicts + r.too_large > 0 || r.purged > 0 {
                    info!(
                        partitions = r.partitions,
                        files_removed = r.files.files_removed,
                        files_added = r.files.files_added,
                        bytes_removed = r.files.bytes_removed,
                        bytes_added = r.files.bytes_added,
                        conflicts = r.conflicts,
                        replaced_files_deleted = r.purged,
                        too_large = r.too_large,
                        "compaction: round done"
                    );
                }
            }
            Err(e) => {
                metrics.compactions.with_label_values(&["error"]).inc();
                warn!(error = %e, "compaction: round failed; the next round repeats it");
            }
        }
    }
}

fn record(metrics: &Metrics, r: &Round) {
    metrics
        .compactions
        .with_label_values(&["ok"])
        .inc_by(r.partitions);
    metrics
        .compactions
        .with_label_values(&["conflict"])
        .inc_by(r.conflicts);
    metrics
        .compaction_files
        .with_label_values(&["removed"])
        .inc_by(r.files.files_removed);
    metrics
        .compaction_files
        .with_label_values(&["added"])
        .inc_by(r.files.files_added);
    metrics
        .compaction_files
        .with_label_values(&["purged"])
        .inc_by(r.purged as u64);
}

/// One round as of `now`: delete what earlier rounds replaced, then compact
/// every cold partition with enough files. Stops between partitions at shutdown.
///
/// # Errors
/// Storage errors (transient: the next round repeats the work).
pub async fn round(
    lake: &Lake,
    tenants: &TenantRegistry,
    config: &CompactionConfig,
    now: DateTime<Utc>,
    shutdown: &Shutdown,
) -> Result<Round, SinkError> {
    let mut out = Round::default();
    let Some(mut table) = open_existing(lake, TABLE).await? else {
        return Ok(out);
    };
    let keep = Duration::from_secs(config.keep_replaced_secs);
    out.purged = purge_replaced(&mut table, TABLE, keep).await?;
    let files = partition_files(&mut table, TABLE, &PARTITION_COLUMNS).await?;
    for (partition, found) in files {
        if shutdown.is_requested() {
            break;
        }
        if found.files < config.min_files || !cold(tenants, &partition, now) {
            continue;
        }
        // The rewrite holds the partition in memory.
        if found
            .rows
            .is_none_or(|rows| rows > config.max_partition_rows)
        {
            out.too_large += 1;
            continue;
        }
        match compact_partition(&table, TABLE, &PARTITION_COLUMNS, &partition).await? {
            Some((compacted, done)) => {
                table = compacted;
                out.partitions += 1;
                out.files.files_removed += done.files_removed;
                out.files.files_added += done.files_added;
                out.files.bytes_removed += done.bytes_removed;
                out.files.bytes_added += done.bytes_added;
            }
            None => {
                out.conflicts += 1;
                info!(
                    tenant = partition[0].as_str(),
                    "compaction: a concurrent rewrite removed a file of the partition; \
                     the next round tries again"
                );
                table
                    .update_state()
                    .await
                    .map_err(|e| SinkError::Transient {
                        table: TABLE,
                        error: Box::new(e),
                    })?;
            }
        }
    }
    Ok(out)
}

/// True for a partition `[tenant, local_date]` of a configured tenant whose date
/// is before yesterday in the tenant's zone as of `now`.
pub fn cold(tenants: &TenantRegistry, partition: &Partition, now: DateTime<Utc>) -> bool {
    let [tenant, date] = partition.as_slice() else {
        return false;
    };
    let Some(index) = tenants.index_of(tenant) else {
        return false;
    };
    let Ok(date) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
        return false;
    };
    let today = now.with_timezone(&tenants.get(index).timezone).date_naive();
    today
        .checked_sub_days(chrono::Days::new(1))
        .is_some_and(|yesterday| date < yesterday)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meterline_operators::{Deployment, Rules, Tenant};

    fn registry() -> TenantRegistry {
        TenantRegistry::new([Tenant {
            id: "oslo".into(),
            deployment: Deployment::Public,
            timezone: chrono_tz::Europe::Oslo,
            rules: Rules::default(),
        }])
        .unwrap()
    }

    fn p(tenant: &str, date: &str) -> Partition {
        vec![tenant.to_owned(), date.to_owned()]
    }

    #[test]
    fn cold_is_before_yesterday_in_the_tenants_zone() {
        let tenants = registry();
        // 2026-11-01 00:30 in Oslo is still 2026-10-31 in UTC: the local date
        // decides (today 1 November, yesterday 31 October).
        let now: DateTime<Utc> = "2026-10-31T23:30:00Z".parse().unwrap();
        assert!(cold(&tenants, &p("oslo", "2026-10-30"), now));
        assert!(cold(&tenants, &p("oslo", "2025-02-28"), now));
        assert!(!cold(&tenants, &p("oslo", "2026-10-31"), now));
        assert!(!cold(&tenants, &p("oslo", "2026-11-01"), now));
        // Measured in UTC the 30th would be yesterday, and not cold.
        let earlier: DateTime<Utc> = "2026-10-31T22:59:59Z".parse().unwrap();
        assert!(!cold(&tenants, &p("oslo", "2026-10-30"), earlier));
    }

    #[test]
    fn unknown_tenants_and_unreadable_dates_are_left_alone() {
        let tenants = registry();
        let now: DateTime<Utc> = "2026-12-03T12:00:00Z".parse().unwrap();
        assert!(!cold(&tenants, &p("gone", "2026-01-01"), now));
        assert!(!cold(
            &tenants,
            &p("oslo", "__HIVE_DEFAULT_PARTITION__"),
            now
        ));
        assert!(!cold(&tenants, &vec!["oslo".to_owned()], now));
    }
}
