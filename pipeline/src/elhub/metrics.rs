//! The adapter's metrics, on its own `/metrics` (`elhub.metrics_listen`, `--watch` only).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use meterline_operators::elhub::readings::RejectReason;

/// How a file ended (the `outcome` label).
pub const FILE_OUTCOMES: [&str; 4] = ["published", "partial", "rejected", "duplicate"];

/// The handles. Cheap to clone.
#[derive(Clone)]
pub struct ElhubMetrics {
    pub registry: Registry,
    pub files: IntCounterVec,
    pub series: IntCounterVec,
    pub records: IntCounter,
    pub rejects: IntCounterVec,
    pub errors: IntCounter,
    pub rejected_deleted: IntCounter,
    pub inbox_files: IntGauge,
}

impl std::fmt::Debug for ElhubMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ElhubMetrics")
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Static definitions; the unit test below renders them.
    r.expect("valid metric definition")
}

impl ElhubMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let vec = |name: &str, help: &str, label: &str| {
            let c = must(IntCounterVec::new(Opts::new(name, help), &[label]));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let files = vec(
            "meterline_elhub_files_total",
            "Files processed, by outcome: published (every series), partial (some series refused), rejected (nothing published), duplicate (processed before).",
            "outcome",
        );
        let series = vec(
            "meterline_elhub_series_total",
            "Series of processed files: published or refused.",
            "outcome",
        );
        let rejects = vec(
            "meterline_elhub_rejects_total",
            "Files and series refused, by reason.",
            "reason",
        );
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let records = counter(
            "meterline_elhub_records_total",
            "reading/v1 records published (acknowledged by the broker): one per observation.",
        );
        let errors = counter(
            "meterline_elhub_errors_total",
            "Files left in the inbox for a later try because Kafka or the lake failed.",
        );
        let rejected_deleted = counter(
            "meterline_elhub_rejected_deleted_total",
            "Rejected files deleted at the end of their retention (dead_letters.retention_days).",
        );
        let inbox_files = must(IntGauge::new(
            "meterline_elhub_inbox_files",
            "Files waiting in the --watch directory at the last look.",
        ));
        must(registry.register(Box::new(inbox_files.clone())));
        for outcome in FILE_OUTCOMES {
            files.with_label_values(&[outcome]);
        }
        for outcome in ["published", "refused"] {
            series.with_label_values(&[outcome]);
        }
        for reason in RejectReason::ALL {
            rejects.with_label_values(&[reason.as_str()]);
        }
        Self {
            registry,
            files,
            series,
            records,
            rejects,
            errors,
            rejected_deleted,
            inbox_files,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding well-formed metrics into a String cannot fail.
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for ElhubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_from_zero() {
        let text = ElhubMetrics::new().render();
        assert!(text.contains("meterline_elhub_files_total{outcome=\"rejected\"} 0"));
        assert!(text.contains("meterline_elhub_rejects_total{reason=\"unsupported_resolution\"} 0"));
        assert!(text.contains("meterline_elhub_records_total 0"));
    }
}
