//! One authenticated connection's DataFusion session: its own catalog (see
//! `catalog.rs`), its own memory pool, no table factories (`CREATE EXTERNAL
//! TABLE` has nothing to build with) and the Postgres catalog tables over
//! what the session may see.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use meterline_operators::{MasterKey, TenantRegistry};

use super::catalog::{LakeTables, SessionSchema};
use super::jwt::{Claims, TenantScope};
use super::pg_settings::SessionSettings;
use super::policy;
use super::settings::Limits;

/// Joins yield to the runtime. A join can turn a few input batches into
/// output without end, polling nothing that yields (a cross join of a few
/// tables): a task that never yields holds its worker thread, and the
/// statement timeout, cancel requests and every other session wait for the
/// same few threads. Each join's output is wrapped in DataFusion's
/// `CooperativeExec`, which spends tokio's task budget per batch and yields
/// when it is spent, so a deadline is seen and a dropped query stops. One
/// budget check per batch of a join; nothing per row.
#[derive(Debug)]
struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|p| {
            Ok(if p.children().len() >= 2 {
                Transformed::yes(Arc::new(CooperativeExec::new(p)) as Arc<dyn ExecutionPlan>)
            } else {
                Transformed::no(p)
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &'static str {
        "yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The database name clients see (`current_database()`).
pub const DATABASE: &str = "meterline";

/// What a session is opened from, shared by all sessions.
pub struct Shared {
    pub tables: Arc<LakeTables>,
    pub tenants: TenantRegistry,
    pub key: Option<Arc<MasterKey>>,
    pub limits: Limits,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The DataFusion context of a session with `claims`.
///
/// # Errors
/// Storage errors while looking at the tables, DataFusion setup errors.
pub async fn context(
    shared: &Shared,
    claims: &Claims,
    settings: &SessionSettings,
) -> anyhow::Result<SessionContext> {
    let (public, timezone) = match &claims.tenant {
        TenantScope::One(t) => {
            let tenant = shared
                .tenants
                .by_id(t)
                .ok_or_else(|| anyhow::anyhow!("tenant vanished from the configuration"))?;
            (
                tenant.deployment == meterline_operators::Deployment::Public,
                tenant.timezone,
            )
        }
        TenantScope::All => (false, chrono_tz::Europe::Oslo),
    };
    let visible: Vec<&'static str> = policy::TABLES
        .iter()
        .filter(|t| policy::visible(claims, t, public))
        .map(|t| t.name)
        .collect();
    let mut warm = visible.clone();
    warm.push(crate::privacy::tables::LEDGER_TABLE);
    shared.tables.warm(warm).await?;

    let pool = TrackConsumersPool::new(
        GreedyMemoryPool::new(shared.limits.memory_limit_bytes),
        NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    );
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        // No spilling: a query over its memory fails, it does not fill a disk.
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .with_object_store_registry(shared.tables.object_stores())
        .with_cache_manager(
            CacheManagerConfig::default()
                .with_file_metadata_cache(Some(shared.tables.file_metadata_cache())),
        )
        .build_arc()?;
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(DATABASE, "public")
        .with_create_default_catalog_and_schema(false);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        // `CREATE EXTERNAL TABLE` would read any path the server can.
        .with_table_factories(std::collections::HashMap::new())
        .with_physical_optimizer_rule(Arc::new(YieldingJoins))
        .with_analyzer_rule(Arc::new(super::pg_types::PostgresTypeNames))
        .build();
    let ctx = SessionContext::new_with_state(state);
    super::functions::register(&ctx);
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(
        "public",
        Arc::new(SessionSchema::new(
            shared.tables.clone(),
            claims.clone(),
            public,
            timezone,
            shared.key.clone(),
        )),
    )?;
    ctx.register_catalog(DATABASE, Arc::new(catalog));
    setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider).map_err(|e| anyhow::anyhow!("{e}"))?;
    super::pg_settings::register(&ctx, settings);
    Ok(ctx)
}
