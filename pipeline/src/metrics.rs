//! Every metric meterline exports, declared once. Names follow Prometheus
//! conventions (`meterline_<thing>_<unit>_total`, base units). Labels come from
//! small fixed sets (table, reason, component, partition): never an identifier.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use meterline_operators::Reason;

/// Why a consumed record was intentionally not stored (the third term of the
/// conservation law: consumed = written + dead-lettered + dropped).
pub mod drop_reason {
    /// Already in the lake (re-delivered after a restart or rebalance).
    pub const ALREADY_STORED: &str = "already_stored";
    /// Buffered when its partition was revoked; the new owner consumes it again.
    pub const REVOKED: &str = "revoked";
    /// Buffered when another process was found writing its partition.
    pub const FENCED: &str = "fenced";
    /// Buffered when shutdown could not commit within the grace period; consumed
    /// again on restart.
    pub const UNCOMMITTED_AT_EXIT: &str = "uncommitted_at_exit";
    /// Same key, version and value as a reading already accepted (idempotent resend).
    pub const DUPLICATE: &str = "duplicate";
    /// An older version than the reading already accepted for the key.
    pub const SUPERSEDED: &str = "superseded";
    /// A reading of a tenant whose data needs Elhub consent, for a meter without
    /// consent valid at the interval's start (or not known yet).
    pub const NO_CONSENT: &str = "no_consent";
    /// A public tenant's reading of a key epoch that is closed (its key destroyed
    /// or due to be): it can no longer be pseudonymized consistently.
    pub const EPOCH_CLOSED: &str = "epoch_closed";
    pub const ALL: [&str; 8] = [
        ALREADY_STORED,
        REVOKED,
        FENCED,
        UNCOMMITTED_AT_EXIT,
        DUPLICATE,
        SUPERSEDED,
        NO_CONSENT,
        EPOCH_CLOSED,
    ];
}

/// The energy-economics inputs, as metric labels (see `crate::inputs::Input`).
pub const INPUTS: [&str; 3] = ["prices", "profiles", "weather"];

/// What becomes of an input's record (`meterline_input_records_total{outcome}`).
pub mod input_outcome {
    pub const WRITTEN: &str = "written";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub use super::drop_reason::{ALREADY_STORED, FENCED, REVOKED, UNCOMMITTED_AT_EXIT};
    pub const ALL: [&str; 6] = [
        WRITTEN,
        DEAD_LETTERED,
        ALREADY_STORED,
        REVOKED,
        FENCED,
        UNCOMMITTED_AT_EXIT,
    ];
}

/// The metric handles. Cheap to clone (all `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub records_consumed: IntCounter,
    pub records_written: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub records_dropped: IntCounterVec,
    pub component_batches: IntCounterVec,
    pub component_rows: IntCounterVec,
    pub commits: IntCounterVec,
    pub commit_duration: HistogramVec,
    pub storage_errors: IntCounterVec,
    pub version_rows_read: IntCounterVec,
    pub kafka_errors: IntCounter,
    pub kafka_redelivered: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub consumer_paused: IntGauge,
    pub buffered_rows: IntGauge,
    pub last_commit_time: Gauge,
    pub flush_rows: Histogram,
    pub flags: IntCounterVec,
    pub sensitive_removed: IntCounterVec,
    pub retention_deleted: IntCounterVec,
    pub retention_sweeps: IntCounterVec,
    pub erased_rows: IntCounterVec,
    pub erasures: IntCounterVec,
    pub subject_events: IntCounterVec,
    pub dead_letters_published: IntCounter,
    pub aggregate_lag: Gauge,
    pub aggregate_version: IntGauge,
    pub aggregate_partitions: IntCounter,
    pub aggregate_readings: IntCounter,
    pub aggregate_suppressed: IntCounterVec,
    pub aggregate_rounds: IntCounterVec,
    pub aggregate_rows: IntCounterVec,
    pub cost_rounds: IntCounterVec,
    pub cost_days: IntCounter,
    pub cost_rows: IntCounterVec,
    pub input_consumed: IntCounterVec,
    pub input_records: IntCounterVec,
    pub input_dead_letters: IntCounterVec,
    pub input_lag: IntGaugeVec,
    pub input_paused: IntGaugeVec,
    pub input_restarts: IntCounterVec,
    pub memory_bound: IntGauge,
    pub audit_violations: IntGaugeVec,
    pub erasures_pending: IntGauge,
    pub orphan_files_removed: IntCounter,
    pub compactions: IntCounterVec,
    pub compaction_files: IntCounterVec,
    ready: Arc<AtomicBool>,
}

/// The checks of `meterline audit`, as `meterline_audit_violations{check}`.
pub mod audit_check {
    /// Data kept past its retention (plus the sweep interval), or a tenant's data
    /// that nothing deletes.
    pub const RETENTION_OVERDUE: &str = "retention_overdue";
    /// Erasures completed after their deadline (all recorded).
    pub const ERASURE_LATE: &str = "erasure_late";
    /// A request still pending past its deadline.
    pub const ERASURE_OVERDUE: &str = "erasure_overdue";
    /// A pseudonym or dead-letter key kept past its grace or retention.
    pub const KEY_PAST_GRACE: &str = "key_past_grace";
    /// A consent ledger chain that does not verify.
    pub const LEDGER_CHAIN: &str = "ledger_chain";
    pub const ALL: [&str; 5] = [
        RETENTION_OVERDUE,
        ERASURE_LATE,
        ERASURE_OVERDUE,
        KEY_PAST_GRACE,
        LEDGER_CHAIN,
    ];
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; an error here is a programming error caught by
    // the unit test below.
    r.expect("valid metric definition")
}

impl Metrics {
    #[allow(
        clippy::too_many_lines,
        reason = "the definition of every metric, name and help side by side: one table \
                  to read, in the order of the README's metrics section"
    )]
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::with_opts(Opts::new(name, help)));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let records_consumed = counter(
            "meterline_records_consumed_total",
            "Kafka records handed to the operators (re-deliveries included).",
        );
        let records_written = counter_vec(
            "meterline_records_written_total",
            "Rows committed to a lake table.",
            &["table"],
        );
        let dead_letters = counter_vec(
            "meterline_dead_letters_total",
            "Records that became dead letters, by reason code.",
            &["reason"],
        );
        let records_dropped = counter_vec(
            "meterline_records_dropped_total",
            "Consumed records intentionally not stored, by reason.",
            &["reason"],
        );
        let component_batches = counter_vec(
            "meterline_component_batches_total",
            "Batches processed by each operator.",
            &["component"],
        );
        let component_rows = counter_vec(
            "meterline_component_rows_total",
            "Rows processed by each operator.",
            &["component"],
        );
        let commits = counter_vec(
            "meterline_commits_total",
            "Delta commits made, by table.",
            &["table"],
        );
        let commit_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "meterline_commit_duration_seconds",
                "Time to write files and commit one flush to a table (retries included).",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["table"],
        ));
        must(registry.register(Box::new(commit_duration.clone())));
        let storage_errors = counter_vec(
            "meterline_storage_errors_total",
            "Failed attempts to write or commit to the lake (each is retried).",
            &["table"],
        );
        let version_rows_read = counter_vec(
            "meterline_version_rows_read_total",
            "Stored rows read back from readings to apply the version rules, by what was read: \
             `meters` (which meters a date partition holds, once per partition) or `keys` \
             (stored versions of meters already in a partition: corrections and restarts).",
            &["read"],
        );
        let kafka_errors = counter(
            "meterline_kafka_errors_total",
            "Errors reported by the Kafka client (librdkafka retries them).",
        );
        let kafka_redelivered = counter(
            "meterline_kafka_redelivered_total",
            "Records the broker delivered again at an offset already handed to the operators; skipped.",
        );
        let consumer_lag = must(IntGaugeVec::new(
            Opts::new(
                "meterline_consumer_lag_records",
                "Records between the consumer position and the partition's high watermark.",
            ),
            &["partition"],
        ));
        must(registry.register(Box::new(consumer_lag.clone())));
        let consumer_paused = must(IntGauge::new(
            "meterline_consumer_paused",
            "1 while consumption is paused because the operators are behind (backpressure).",
        ));
        must(registry.register(Box::new(consumer_paused.clone())));
        let buffered_rows = must(IntGauge::new(
            "meterline_buffered_rows",
            "Rows decoded and waiting for the next commit.",
        ));
        must(registry.register(Box::new(buffered_rows.clone())));
        let last_commit_time = must(Gauge::new(
            "meterline_last_commit_timestamp_seconds",
            "Unix time of the last successful commit to the readings table.",
        ));
        must(registry.register(Box::new(last_commit_time.clone())));
        let flush_rows = must(Histogram::with_opts(
            HistogramOpts::new("meterline_flush_rows", "Rows per flush.").buckets(vec![
                1.0,
                10.0,
                100.0,
                1_000.0,
                10_000.0,
                100_000.0,
                1_000_000.0,
            ]),
        ));
        must(registry.register(Box::new(flush_rows.clone())));

        let flags = counter_vec(
            "meterline_reading_flags_total",
            "Readings stored with a flag (passed validation with a remark), by flag.",
            &["flag"],
        );
        let sensitive_removed = counter_vec(
            "meterline_sensitive_removed_total",
            "Sensitive values removed from messages before anything was stored, by kind.",
            &["kind"],
        );
        let retention_deleted = counter_vec(
            "meterline_retention_deleted_rows_total",
            "Rows deleted by retention, by table.",
            &["table"],
        );
        let retention_sweeps = counter_vec(
            "meterline_retention_sweeps_total",
            "Retention sweeps, by outcome (ok, error: repeated at the next sweep).",
            &["outcome"],
        );
        let erased_rows = counter_vec(
            "meterline_erased_rows_total",
            "Rows removed by erasure requests, by table.",
            &["table"],
        );
        let erasures = counter_vec(
            "meterline_erasures_total",
            "Erasure requests, by outcome: completed, late (after the deadline), \
             ignored (not a tombstone or no usable key), error (an attempt failed; retried).",
            &["outcome"],
        );
        let subject_events = counter_vec(
            "meterline_subject_events_total",
            "Subject events, by outcome: recorded (in consent_ledger), dead_lettered, \
             skipped (recorded before a restart), error (an attempt failed; retried).",
            &["outcome"],
        );
        for outcome in ["recorded", "dead_lettered", "skipped", "error"] {
            subject_events.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "error"] {
            retention_sweeps.with_label_values(&[outcome]);
        }
        for outcome in ["completed", "late", "ignored", "error"] {
            erasures.with_label_values(&[outcome]);
        }
        let dead_letters_published = counter(
            "meterline_dead_letters_published_total",
            "Dead letters published to the dead-letter Kafka topic.",
        );
        let aggregate_lag = must(Gauge::new(
            "meterline_aggregate_lag_seconds",
            "Age of the oldest readings commit the aggregate tables do not reflect yet (0: current).",
        ));
        must(registry.register(Box::new(aggregate_lag.clone())));
        let aggregate_version = must(IntGauge::new(
            "meterline_aggregate_readings_version",
            "The readings table version the aggregate tables reflect.",
        ));
        must(registry.register(Box::new(aggregate_version.clone())));
        let aggregate_partitions = counter(
            "meterline_aggregate_partitions_recomputed_total",
            "Local days (tenant, local date) whose aggregates were recomputed.",
        );
        let aggregate_readings = counter(
            "meterline_aggregate_readings_folded_total",
            "Readings rows read to recompute aggregates.",
        );
        let aggregate_suppressed = counter_vec(
            "meterline_aggregate_cells_suppressed_total",
            "Area cells not written: fewer than k meters or one dominant meter, by table.",
            &["table"],
        );
        let aggregate_rounds = counter_vec(
            "meterline_aggregate_rounds_total",
            "Materialization rounds, by outcome (ok, error).",
            &["outcome"],
        );
        let aggregate_rows = counter_vec(
            "meterline_aggregate_rows_written_total",
            "Rows written to the aggregate tables (replacing the recomputed partitions), by table.",
            &["table"],
        );
        let cost_rounds = counter_vec(
            "meterline_cost_rounds_total",
            "Cost materialization rounds, by outcome (ok, error).",
            &["outcome"],
        );
        let cost_days = counter(
            "meterline_cost_days_recomputed_total",
            "Local days (tenant, local date) whose cost and temperature rows were recomputed.",
        );
        let cost_rows = counter_vec(
            "meterline_cost_rows_written_total",
            "Rows written to the cost and insight tables (replacing the recomputed partitions), by table.",
            &["table"],
        );
        let input_consumed = counter_vec(
            "meterline_input_records_consumed_total",
            "Records of an energy-economics input topic handed to its decoder (re-deliveries included), by input.",
            &["input"],
        );
        let input_records = counter_vec(
            "meterline_input_records_total",
            "What became of an input's consumed records: written, dead_lettered, or a drop reason (already_stored, revoked, fenced, uncommitted_at_exit); per input these add up to the consumed records.",
            &["input", "outcome"],
        );
        let input_dead_letters = counter_vec(
            "meterline_input_dead_letters_total",
            "An input's records that became dead letters, by input and reason code.",
            &["input", "reason"],
        );
        let input_lag = must(IntGaugeVec::new(
            Opts::new(
                "meterline_input_lag_records",
                "Records between an input's committed position and its partition's high watermark.",
            ),
            &["input", "partition"],
        ));
        must(registry.register(Box::new(input_lag.clone())));
        let input_paused = must(IntGaugeVec::new(
            Opts::new(
                "meterline_input_paused",
                "1 while an input's consumption waits for its decoder (backpressure).",
            ),
            &["input"],
        ));
        must(registry.register(Box::new(input_paused.clone())));
        let input_restarts = counter_vec(
            "meterline_input_restarts_total",
            "Times an input's consumer stopped on an error (logged) and started again from the lake's offsets.",
            &["input"],
        );
        for input in INPUTS {
            input_consumed.with_label_values(&[input]);
            input_restarts.with_label_values(&[input]);
            input_paused.with_label_values(&[input]);
            for outcome in input_outcome::ALL {
                input_records.with_label_values(&[input, outcome]);
            }
        }
        for outcome in ["ok", "error"] {
            aggregate_rounds.with_label_values(&[outcome]);
            cost_rounds.with_label_values(&[outcome]);
        }
        let memory_bound = must(IntGauge::new(
            "meterline_memory_bound_bytes",
            "The resident memory bound these settings imply (logged at start as memory_bound_mib).",
        ));
        must(registry.register(Box::new(memory_bound.clone())));
        let audit_violations = must(IntGaugeVec::new(
            Opts::new(
                "meterline_audit_violations",
                "Findings of each of `meterline audit`'s checks, refreshed after each retention sweep (0: the promise holds).",
            ),
            &["check"],
        ));
        must(registry.register(Box::new(audit_violations.clone())));
        for check in audit_check::ALL {
            audit_violations.with_label_values(&[check]);
        }
        let erasures_pending = must(IntGauge::new(
            "meterline_erasures_pending",
            "Erasure requests on the erasure topic not answered yet, as of the last audit.",
        ));
        must(registry.register(Box::new(erasures_pending.clone())));
        let orphan_files_removed = counter(
            "meterline_orphan_files_removed_total",
            "Files no commit references (uploads of a commit that never landed) deleted by \
             the full VACUUM of the retention sweep.",
        );
        let compactions = counter_vec(
            "meterline_compactions_total",
            "Partitions of readings compacted, by outcome: ok, conflict (a concurrent rewrite \
             removed a file it read; tried again next round), error (a round failed).",
            &["outcome"],
        );
        let compaction_files = counter_vec(
            "meterline_compaction_files_total",
            "Files of readings by compaction: removed (replaced), added (the rewritten ones), \
             purged (replaced files deleted from storage).",
            &["action"],
        );
        for outcome in ["ok", "conflict", "error"] {
            compactions.with_label_values(&[outcome]);
        }
        for action in ["removed", "added", "purged"] {
            compaction_files.with_label_values(&[action]);
        }
        // Resident memory, CPU time, open files and start time of this process.
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        // Pre-register fixed label values so dashboards see zeros, not gaps.
        for (_, flag) in meterline_operators::flags::ALL {
            flags.with_label_values(&[flag]);
        }
        for kind in meterline_operators::SensitiveCounts::KINDS {
            sensitive_removed.with_label_values(&[kind]);
        }
        retention_deleted.with_label_values(&["dead_letters"]);
        for reason in Reason::ALL {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        for reason in drop_reason::ALL {
            records_dropped.with_label_values(&[reason]);
        }
        for read in ["meters", "keys"] {
            version_rows_read.with_label_values(&[read]);
        }
        for table in ["readings", "dead_letters"] {
            records_written.with_label_values(&[table]);
            commits.with_label_values(&[table]);
            storage_errors.with_label_values(&[table]);
        }
        Self {
            registry,
            records_consumed,
            records_written,
            dead_letters,
            records_dropped,
            component_batches,
            component_rows,
            commits,
            commit_duration,
            storage_errors,
            version_rows_read,
            kafka_errors,
            kafka_redelivered,
            consumer_lag,
            consumer_paused,
            buffered_rows,
            last_commit_time,
            flush_rows,
            flags,
            sensitive_removed,
            retention_deleted,
            retention_sweeps,
            erased_rows,
            erasures,
            subject_events,
            dead_letters_published,
            aggregate_lag,
            aggregate_version,
            aggregate_partitions,
            aggregate_readings,
            aggregate_suppressed,
            aggregate_rounds,
            aggregate_rows,
            cost_rounds,
            cost_days,
            cost_rows,
            input_consumed,
            input_records,
            input_dead_letters,
            input_lag,
            input_paused,
            input_restarts,
            memory_bound,
            audit_violations,
            erasures_pending,
            orphan_files_removed,
            compactions,
            compaction_files,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The Prometheus text exposition of every metric.
    /// Count sensitive values removed before anything was stored (readings and
    /// subject events alike), by kind.
    pub fn count_sensitive_removed(&self, removed: &meterline_operators::SensitiveCounts) {
        for (kind, n) in removed.by_kind() {
            if n > 0 {
                self.sensitive_removed.with_label_values(&[kind]).inc_by(n);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// An input's ledger: (consumed, sum of its outcomes).
    pub fn input_conservation(&self, input: &str) -> (u64, u64) {
        let consumed = self.input_consumed.with_label_values(&[input]).get();
        let outcomes = input_outcome::ALL
            .iter()
            .map(|o| self.input_records.with_label_values(&[input, o]).get())
            .sum();
        (consumed, outcomes)
    }

    /// Totals for the conservation check: (consumed, written to readings,
    /// dead-lettered, dropped).
    pub fn conservation(&self) -> Conservation {
        let sum = |v: &IntCounterVec, labels: &[&str]| -> u64 {
            labels
                .iter()
                .map(|l| v.with_label_values(&[*l]).get())
                .sum()
        };
        let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        Conservation {
            consumed: self.records_consumed.get(),
            written: self.records_written.with_label_values(&["readings"]).get(),
            dead_lettered: sum(&self.dead_letters, &reasons),
            dropped: sum(&self.records_dropped, &drop_reason::ALL),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The terms of consumed = written + dead-lettered + dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conservation {
    pub consumed: u64,
    pub written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

impl Conservation {
    pub fn holds(&self) -> bool {
        self.consumed == self.written + self.dead_lettered + self.dropped
    }
}

/// Serve `/metrics` and `/healthz` until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let m1 = metrics.clone();
    let m2 = metrics;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = m1.render();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let ready = m2.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}

/// Serve only `/metrics`, its text from `render`, until the process exits (the SQL
/// server's and the Elhub adapter's endpoints).
pub async fn serve_text(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let body = render();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_and_follows_naming() {
        let m = Metrics::new();
        m.records_consumed.inc();
        let text = m.render();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            // The process collector's standard names are the exception.
            assert!(
                name.starts_with("meterline_") || name.starts_with("process_"),
                "{name}"
            );
            if line.ends_with("counter") {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
        assert!(text.contains("meterline_dead_letters_total{reason=\"unknown_tenant\"} 0"));
        // What the alerts and the dashboard read besides the pipeline's own counters.
        assert!(text.contains("meterline_audit_violations{check=\"ledger_chain\"} 0"));
        assert!(text.contains("meterline_memory_bound_bytes 0"));
        #[cfg(target_os = "linux")]
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing");
        }
    }

    #[test]
    fn conservation_adds_up() {
        let m = Metrics::new();
        m.records_consumed.inc_by(10);
        m.records_written.with_label_values(&["readings"]).inc_by(6);
        m.dead_letters
            .with_label_values(&["malformed_json"])
            .inc_by(3);
        assert!(!m.conservation().holds());
        m.records_dropped
            .with_label_values(&["already_stored"])
            .inc();
        assert!(m.conservation().holds());
    }
}
