//! The SQL server's metrics, on its own `/metrics` endpoint
//! (`serve.metrics_listen`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::jwt::{AuthFailure, Role};

/// Query outcomes (the `outcome` label).
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "error",
    "refused",
    "timeout",
    "too_many_rows",
    "memory_limit",
    "cancelled",
];

/// The handles. Cheap to clone.
#[derive(Clone)]
pub struct SqlMetrics {
    pub registry: Registry,
    pub queries: IntCounterVec,
    pub query_duration: HistogramVec,
    pub connections: IntGauge,
    pub refused_connections: IntCounter,
    pub auth_failures: IntCounterVec,
}

impl std::fmt::Debug for SqlMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlMetrics")
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Static definitions; the unit test below renders them.
    r.expect("valid metric definition")
}

impl SqlMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let queries = must(IntCounterVec::new(
            Opts::new(
                "meterline_sql_queries_total",
                "SQL statements that ran a query, by the session's role and how they ended.",
            ),
            &["role", "outcome"],
        ));
        let query_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "meterline_sql_query_duration_seconds",
                "From planning to the last row sent, by role.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["role"],
        ));
        let connections = must(IntGauge::new(
            "meterline_sql_connections",
            "Authenticated SQL sessions open now.",
        ));
        let refused_connections = must(IntCounter::new(
            "meterline_sql_connections_refused_total",
            "Connections refused because serve.max_connections were open.",
        ));
        let auth_failures = must(IntCounterVec::new(
            Opts::new(
                "meterline_sql_auth_failures_total",
                "Refused logins by reason (the token is never logged).",
            ),
            &["reason"],
        ));
        must(registry.register(Box::new(queries.clone())));
        must(registry.register(Box::new(query_duration.clone())));
        must(registry.register(Box::new(connections.clone())));
        must(registry.register(Box::new(refused_connections.clone())));
        must(registry.register(Box::new(auth_failures.clone())));
        // Zeros rather than gaps on dashboards.
        for reason in AuthFailure::ALL {
            auth_failures.with_label_values(&[reason.as_str()]);
        }
        for role in [Role::Operator, Role::Analyst, Role::Subject] {
            for outcome in OUTCOMES {
                queries.with_label_values(&[role.as_str(), outcome]);
            }
        }
        Self {
            registry,
            queries,
            query_duration,
            connections,
            refused_connections,
            auth_failures,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &self.registry.gather(),
            &mut out,
        );
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for SqlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serve `/metrics` until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, metrics: SqlMetrics) -> std::io::Result<()> {
    crate::metrics::serve_text(listener, move || metrics.render()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_labels() {
        let m = SqlMetrics::new();
        let text = m.render();
        assert!(text.contains("meterline_sql_auth_failures_total{reason=\"expired\"} 0"));
        assert!(
            text.contains("meterline_sql_queries_total{outcome=\"timeout\",role=\"analyst\"} 0")
        );
        assert!(text.contains("meterline_sql_connections 0"));
    }
}
