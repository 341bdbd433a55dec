//! The Postgres wire protocol: our accept loop around `pgwire`, our startup
//! handler (TLS required when configured, the JWT as the password, a session
//! opened only for a valid token) and thin query handlers over
//! `datafusion-postgres` that check every statement, cap every query and
//! count it.
//!
//! Every startup error is FATAL: the connection closes. A query on a
//! connection without a session is refused (defence in depth: pgwire would
//! otherwise read on after a failed startup).
//!
//! A client's cancel request (psql's Ctrl-C, psycopg's `cancel()`, JDBC's
//! `Statement.cancel`) names its session by the process id and secret key the
//! session got at startup; it ends the session's running statement with
//! SQLSTATE 57014, as a timeout does, and the session goes on.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, SinkExt, Stream};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, ServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    PgWireConnectionState, PgWireServerHandlers, Type, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::guard;
use super::jwt::{AuthFailure, Role, Verifier};
use super::metrics::SqlMetrics;
use super::pg_settings::SessionSettings;
use super::session::{self, Shared};
use crate::shutdown::Shutdown;

/// What every connection shares.
pub struct Server {
    pub shared: Shared,
    pub verifier: Verifier,
    pub clock: meterline_operators::Clock,
    pub metrics: SqlMetrics,
    /// TLS is configured: plaintext connections are refused.
    pub tls_required: bool,
    /// The sessions a cancel request can reach, by process id and secret key.
    pub cancels: Arc<ConnectionManager>,
}

impl Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("shared", &self.shared)
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
}

/// An authenticated session.
struct Session {
    ctx: Arc<SessionContext>,
    service: DfSessionService,
    hooks: Vec<Arc<dyn QueryHook>>,
    role: Role,
    /// Unix seconds after which queries are refused (the token's `exp` plus
    /// the leeway).
    expires_at: i64,
    /// Fired by a cancel request for this session.
    cancel: Arc<ConnectionHandle>,
}

type Slot = Arc<OnceLock<Arc<Session>>>;

/// Accept connections until shutdown; each is served on its own task.
///
/// # Errors
/// Accept errors that persist.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    server: Arc<Server>,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(server.shared.limits.max_connections));
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Back off on errors such as too many open files.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.requested() => return Ok(()),
        };
        let permit = slots.clone().try_acquire_owned().ok();
        let conn = Conn {
            server: server.clone(),
            slot: Arc::new(OnceLock::new()),
            permit: permit.map(Arc::new),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// One connection's handlers, sharing its session slot.
struct Conn {
    server: Arc<Server>,
    slot: Slot,
    /// `None`: over `max_connections`, refused at startup.
    permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl PgWireServerHandlers for Conn {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Queries {
            server: self.server.clone(),
            slot: self.slot.clone(),
        })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(Queries {
            server: self.server.clone(),
            slot: self.slot.clone(),
        })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup {
            server: self.server.clone(),
            slot: self.slot.clone(),
            admitted: self.permit.is_some(),
            connection: OnceLock::new(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.server.cancels.clone()))
    }
}

fn fatal(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message.to_owned(),
    )))
}

fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

struct Startup {
    server: Arc<Server>,
    slot: Slot,
    admitted: bool,
    /// While the connection lives: counted in `meterline_sql_connections`,
    /// and reachable by cancel requests.
    connection: OnceLock<(ConnectionGauge, ConnectionGuard)>,
}

struct ConnectionGauge(prometheus::IntGauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Startup {
    fn refuse(&self, reason: AuthFailure) -> PgWireError {
        self.server
            .metrics
            .auth_failures
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::info!(reason = reason.as_str(), "sql authentication failed");
        fatal("28P01", "authentication failed")
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if !self.admitted {
                    self.server.metrics.refused_connections.inc();
                    return Err(fatal(
                        "53300",
                        "too many connections (serve.max_connections); try again later",
                    ));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.server.tls_required && !client.is_secure() {
                    return Err(self.refuse(AuthFailure::NotTls));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                if !matches!(
                    client.state(),
                    PgWireConnectionState::AuthenticationInProgress
                ) {
                    return Err(fatal("08P01", "unexpected password message"));
                }
                let password = password
                    .into_password()
                    .map_err(|_| self.refuse(AuthFailure::NoToken))?;
                let now = self.server.clock.now().timestamp();
                let claims = self
                    .server
                    .verifier
                    .verify(&password.password, now, &self.server.shared.tenants)
                    .map_err(|reason| self.refuse(reason))?;
                let (parameters, settings) = startup_parameters(client);
                let ctx = match session::context(&self.server.shared, &claims, &settings).await {
                    Ok(ctx) => Arc::new(ctx),
                    Err(e) => {
                        tracing::warn!(error = %e, role = claims.role.as_str(), "sql session not opened");
                        return Err(fatal(
                            "58000",
                            "the session could not be opened (the lake is unavailable); see the server log",
                        ));
                    }
                };
                let hooks: Vec<Arc<dyn QueryHook>> = vec![
                    Arc::new(ReadOnly),
                    Arc::new(SetShowHook),
                    Arc::new(TransactionStatementHook),
                ];
                // The process id and secret key a cancel request must name.
                let (pid, key) = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
                client.set_pid_and_secret_key(pid, SecretKey::I32(key));
                let (cancel, registered) = self.server.cancels.register(pid, SecretKey::I32(key));
                let session = Session {
                    service: DfSessionService::new_with_hooks(ctx.clone(), hooks.clone()),
                    ctx,
                    hooks,
                    role: claims.role,
                    expires_at: claims.expires_at,
                    cancel,
                };
                if self.slot.set(Arc::new(session)).is_err() {
                    return Err(fatal("08P01", "already authenticated"));
                }
                let gauge = self.server.metrics.connections.clone();
                gauge.inc();
                let _ = self.connection.set((ConnectionGauge(gauge), registered));
                tracing::debug!(role = claims.role.as_str(), "sql session opened");
                finish_authentication(client, &parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The parameters a session is sent at startup (read-only, no superuser)
/// and the settings its `current_setting` answers from them.
fn startup_parameters<C: ClientInfo>(
    client: &C,
) -> (DefaultServerParameterProvider, SessionSettings) {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.is_superuser = false;
    parameters.default_transaction_read_only = true;
    let settings = SessionSettings::new(
        &parameters.server_parameters(client).unwrap_or_default(),
        client
            .metadata()
            .get(METADATA_USER)
            .map_or("meterline", String::as_str),
    );
    (parameters, settings)
}

/// The statement check as the first hook, so the extended protocol's parse
/// step refuses before anything plans.
struct ReadOnly;

fn refusal(r: guard::Refusal) -> PgWireError {
    error(r.code, r.message)
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        guard::check(statement).err().map(|r| Err(refusal(r)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        guard::check(statement).err().map(|r| Err(refusal(r)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &datafusion::common::ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        guard::check(statement).err().map(|r| Err(refusal(r)))
    }
}

/// Plans may not define, change or write anything, whatever the SQL was.
fn read_only_options() -> datafusion::execution::context::SQLOptions {
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

struct Queries {
    server: Arc<Server>,
    slot: Slot,
}

impl Queries {
    fn session(&self) -> PgWireResult<Arc<Session>> {
        let session = self
            .slot
            .get()
            .cloned()
            .ok_or_else(|| fatal("28000", "not authenticated"))?;
        if self.server.clock.now().timestamp() > session.expires_at {
            self.server
                .metrics
                .auth_failures
                .with_label_values(&[AuthFailure::Expired.as_str()])
                .inc();
            return Err(fatal(
                "28P01",
                "the token has expired: reconnect with a new one",
            ));
        }
        Ok(session)
    }

    /// The deadline of a statement starting now: the server's timeout, or the
    /// client's `statement_timeout` when that is shorter.
    fn deadline<C: ClientInfo + ?Sized>(&self, client: &C) -> tokio::time::Instant {
        let server = self.server.shared.limits.statement_timeout;
        let timeout = datafusion_postgres_timeout(client).map_or(server, |c| c.min(server));
        tokio::time::Instant::now() + timeout
    }

    fn limited(
        &self,
        session: &Session,
        response: QueryResponse,
        deadline: tokio::time::Instant,
        cancel: CancelSignal,
    ) -> Response {
        let QueryResponse {
            command_tag,
            row_schema,
            data_rows,
            ..
        } = response;
        let limited = Limited {
            inner: Some(data_rows),
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            cancel,
            rows: 0,
            max_rows: self.server.shared.limits.max_result_rows,
            outcome: Some(Outcome {
                metrics: self.server.metrics.clone(),
                role: session.role,
                started: std::time::Instant::now(),
            }),
        };
        let mut response = QueryResponse::new(row_schema, limited);
        response.set_command_tag(&command_tag);
        Response::Query(response)
    }

    fn count(&self, session: &Session, outcome: &str) {
        self.server
            .metrics
            .queries
            .with_label_values(&[session.role.as_str(), outcome])
            .inc();
    }
}

/// The client's `SET statement_timeout`, as datafusion-postgres keeps it.
fn datafusion_postgres_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

fn timed_out() -> PgWireError {
    error(
        "57014",
        "canceling statement due to statement timeout (serve.statement_timeout_secs)",
    )
}

fn cancelled_by_client() -> PgWireError {
    error("57014", "canceling statement due to user request")
}

/// Why a statement stopped before its answer.
enum Stop {
    Timeout,
    Cancelled,
}

impl Stop {
    fn outcome(&self) -> &'static str {
        match self {
            Stop::Timeout => "timeout",
            Stop::Cancelled => "cancelled",
        }
    }

    fn error(&self) -> PgWireError {
        match self {
            Stop::Timeout => timed_out(),
            Stop::Cancelled => cancelled_by_client(),
        }
    }
}

/// A cancel request for the running statement: ready when one arrived. When
/// the session starts its next statement the signal of this one is dropped
/// (the sender side is replaced), which is not a cancellation: the signal then
/// stays pending.
struct CancelSignal(Option<futures::channel::oneshot::Receiver<()>>);

impl std::future::Future for CancelSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(rx) = self.0.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(Ok(())) => {
                self.0 = None;
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) => {
                self.0 = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `work` until the deadline or a cancel request, whichever comes first.
async fn bounded<F: std::future::Future>(
    deadline: tokio::time::Instant,
    cancel: &mut CancelSignal,
    work: F,
) -> Result<F::Output, Stop> {
    tokio::select! {
        done = tokio::time::timeout_at(deadline, work) => done.map_err(|_| Stop::Timeout),
        () = cancel => Err(Stop::Cancelled),
    }
}

fn df_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session()?;
        if let Err(r) = guard::check_size(query) {
            self.count(&session, "refused");
            return Err(refusal(r));
        }
        let statements = PostgresCompatibilityParser::new()
            .parse(query)
            .map_err(|e| error("42601", e.to_string()))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut results = Vec::with_capacity(statements.len());
        'statement: for statement in statements {
            if let Err(r) = guard::check(&statement) {
                self.count(&session, "refused");
                return Err(refusal(r));
            }
            for hook in &session.hooks {
                if let Some(result) = hook
                    .handle_simple_query(&statement, &session.ctx, client)
                    .await
                {
                    results.push(result?);
                    continue 'statement;
                }
            }
            let deadline = self.deadline(client);
            let mut cancel = CancelSignal(Some(session.cancel.start_query().await));
            let sql = statement.to_string();
            let planned = bounded(
                deadline,
                &mut cancel,
                session.ctx.sql_with_options(&sql, read_only_options()),
            )
            .await;
            let df = match planned {
                Err(stop) => {
                    self.count(&session, stop.outcome());
                    return Err(stop.error());
                }
                Ok(Err(e)) => {
                    self.count(&session, "error");
                    return Err(df_error(e));
                }
                Ok(Ok(df)) => df,
            };
            let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let encoded = bounded(
                deadline,
                &mut cancel,
                encode_dataframe(df, &Format::UnifiedText, Some(format)),
            )
            .await;
            match encoded {
                Err(stop) => {
                    self.count(&session, stop.outcome());
                    return Err(stop.error());
                }
                Ok(Err(e)) => {
                    self.count(&session, "error");
                    return Err(e);
                }
                Ok(Ok(response)) => {
                    results.push(self.limited(&session, response, deadline, cancel));
                }
            }
        }
        Ok(results)
    }
}

/// Parses with the session's own parser (which plans against the session's
/// catalog), so a prepared statement is checked and planned like a simple
/// query.
struct SessionParser {
    slot: Slot,
}

impl SessionParser {
    fn parser(&self) -> PgWireResult<Arc<Parser>> {
        self.slot
            .get()
            .map(|s| s.service.query_parser())
            .ok_or_else(|| fatal("28000", "not authenticated"))
    }
}

type DfStatement = (String, Option<(Statement, LogicalPlan)>);

#[async_trait]
impl QueryParser for SessionParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parser = self.parser()?;
        guard::check_size(sql).map_err(refusal)?;
        parser.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.parser()?.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.parser()?.get_result_schema(stmt, column_format)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = DfStatement;
    type QueryParser = SessionParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(SessionParser {
            slot: self.slot.clone(),
        })
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session()?;
        if let (_, Some((statement, plan))) = &portal.statement.statement {
            if let Err(r) = guard::check(statement) {
                self.count(&session, "refused");
                return Err(refusal(r));
            }
            if matches!(statement, Statement::Query(_) | Statement::Explain { .. }) {
                if let Err(e) = read_only_options().verify_plan(plan) {
                    self.count(&session, "refused");
                    return Err(error("25006", e.to_string()));
                }
            }
        }
        let deadline = self.deadline(client);
        let mut cancel = CancelSignal(Some(session.cancel.start_query().await));
        let response = bounded(
            deadline,
            &mut cancel,
            ExtendedQueryHandler::do_query(&session.service, client, portal, max_rows),
        )
        .await;
        match response {
            Err(stop) => {
                self.count(&session, stop.outcome());
                Err(stop.error())
            }
            Ok(Err(e)) => {
                self.count(&session, "error");
                Err(e)
            }
            Ok(Ok(Response::Query(q))) => Ok(self.limited(&session, q, deadline, cancel)),
            Ok(Ok(other)) => Ok(other),
        }
    }
}

/// Records a query's outcome and duration once: when its rows end, fail, or
/// the client goes away (`cancelled`).
struct Outcome {
    metrics: SqlMetrics,
    role: Role,
    started: std::time::Instant,
}

impl Outcome {
    fn record(self, outcome: &str) {
        self.metrics
            .queries
            .with_label_values(&[self.role.as_str(), outcome])
            .inc();
        self.metrics
            .query_duration
            .with_label_values(&[self.role.as_str()])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A query's rows under the statement deadline, cancel requests and the row
/// limit. Each ends the query with an error (and drops the running plan).
struct Limited {
    inner: Option<pgwire::api::results::SendableRowStream>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    cancel: CancelSignal,
    rows: usize,
    max_rows: usize,
    outcome: Option<Outcome>,
}

impl Limited {
    fn finish(&mut self, outcome: &str) {
        self.inner = None;
        if let Some(o) = self.outcome.take() {
            o.record(outcome);
        }
    }
}

impl Stream for Limited {
    type Item = PgWireResult<pgwire::messages::data::DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if std::future::Future::poll(this.sleep.as_mut(), cx).is_ready() {
            this.finish("timeout");
            return Poll::Ready(Some(Err(timed_out())));
        }
        if std::future::Future::poll(Pin::new(&mut this.cancel), cx).is_ready() {
            this.finish("cancelled");
            return Poll::Ready(Some(Err(cancelled_by_client())));
        }
        match inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish("ok");
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let memory = e.to_string().contains("Resources exhausted");
                this.finish(if memory { "memory_limit" } else { "error" });
                Poll::Ready(Some(Err(if memory {
                    error(
                        "53200",
                        format!(
                            "the query needs more memory than serve.memory_limit_mib allows: {e}"
                        ),
                    )
                } else {
                    e
                })))
            }
            Poll::Ready(Some(Ok(row))) => {
                this.rows += 1;
                if this.rows > this.max_rows {
                    let max = this.max_rows;
                    this.finish("too_many_rows");
                    return Poll::Ready(Some(Err(error(
                        "54000",
                        format!(
                            "the result has more than {max} rows (serve.max_result_rows): add a LIMIT or aggregate"
                        ),
                    ))));
                }
                Poll::Ready(Some(Ok(row)))
            }
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if let Some(o) = self.outcome.take() {
            o.record("cancelled");
        }
    }
}
