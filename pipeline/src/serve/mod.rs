//! `meterline serve`: the lake over the Postgres wire protocol, read-only,
//! with JWT authentication and row-level security in the query plan.
//!
//! - `settings.rs`: `[serve]` validated (listener, TLS, keys, limits);
//! - `jwt.rs`: token verification, claims, refusal reasons;
//! - `policy.rs`: the role matrix as predicates (pure);
//! - `catalog.rs`: the shared lake tables and each session's filtered catalog;
//! - `functions.rs`: date functions that compute a constant input once;
//! - `pg_types.rs`: Postgres type names in `information_schema.columns`;
//! - `pg_settings.rs`: `current_setting`, `session_user` (what clients ask on connect);
//! - `session.rs`: one session's DataFusion context;
//! - `guard.rs`: the read-only statement rule;
//! - `server.rs`: the wire protocol (accept loop, startup, query handlers, limits);
//! - `metrics.rs`: `meterline_sql_*`;
//! - `token.rs`: `meterline token`, development tokens.
//!
//! Imports point down: server -> session -> catalog -> policy -> jwt.

pub mod catalog;
pub mod functions;
pub mod guard;
pub mod jwt;
pub mod metrics;
pub mod pg_settings;
pub mod pg_types;
pub mod policy;
pub mod scan;
pub mod server;
pub mod session;
pub mod settings;
pub mod token;

/// The stack of each of `meterline serve`'s runtime threads (see
/// [`guard::MAX_QUERY_TOKENS`]).
pub const THREAD_STACK_BYTES: usize = 256 * 1024 * 1024;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// `meterline serve --config FILE`: exit 0 after SIGTERM/Ctrl-C, 2 on a bad
/// configuration (including a listen address off loopback without TLS), 1 on
/// other errors.
pub async fn run_from_file(path: &Path) -> ExitCode {
    let (serve, settings, lake, metrics_listen) = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.clock.is_shifted() {
        tracing::warn!(
            now = %settings.clock.now().to_rfc3339(),
            "METERLINE_FAKE_NOW is set: token expiry is checked against a moved clock (tests only)"
        );
    }
    let metrics = metrics::SqlMetrics::new();
    if let Err(e) = start_metrics(&metrics_listen, &metrics).await {
        eprintln!("error: config field `serve.metrics_listen`: {e}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(serve.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: config field `serve.listen`: cannot listen on {}: {e}",
                serve.listen
            );
            return ExitCode::from(2);
        }
    };
    let tls = serve
        .tls
        .clone()
        .map(pgwire::tokio::tokio_rustls::TlsAcceptor::from);
    let server = Arc::new(server::Server {
        shared: session::Shared {
            tables: Arc::new(catalog::LakeTables::new(lake, serve.limits.refresh)),
            tenants: settings.tenants.clone(),
            key: settings.key.clone(),
            limits: serve.limits,
        },
        verifier: serve.verifier,
        clock: settings.clock,
        metrics,
        tls_required: tls.is_some(),
        cancels: Arc::new(pgwire::api::ConnectionManager::new()),
    });
    let shutdown = Arc::new(Shutdown::default());
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            crate::shutdown::wait_for_signal().await;
            shutdown.request();
        });
    }
    tracing::info!(
        listen = %serve.listen,
        tls = tls.is_some(),
        "serving the lake over the Postgres protocol (read-only)"
    );
    match server::accept_loop(listener, tls, server, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "stopping");
            ExitCode::FAILURE
        }
    }
}

/// The configuration, validated: `[serve]`, the rest of the file (tenants,
/// key, clock), the lake, and the metrics address.
fn load(
    path: &Path,
) -> Result<
    (
        settings::ServeSettings,
        crate::config::Settings,
        meterline_sinks::Lake,
        String,
    ),
    String,
> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let serve = settings::ServeSettings::from_config(&config.serve).map_err(|e| e.to_string())?;
    let metrics_listen = config.serve.metrics_listen.clone();
    let settings = config.build().map_err(|e| e.to_string())?;
    let lake = meterline_sinks::Lake::existing(&settings.lake)
        .map_err(|e| format!("config field `lake.uri`: {e}"))?;
    Ok((serve, settings, lake, metrics_listen))
}

/// Serve `/metrics` on `listen` (nothing when it is empty).
async fn start_metrics(listen: &str, metrics: &metrics::SqlMetrics) -> Result<(), String> {
    if listen.trim().is_empty() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| format!("`{listen}` is not an address:port ({e})"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "sql metrics at http://{addr}/metrics");
    tokio::spawn(metrics::serve(listener, metrics.clone()));
    Ok(())
}
