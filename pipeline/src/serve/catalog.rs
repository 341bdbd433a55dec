//! Each session's catalog: only the tables its role may see, each a view whose
//! plan is the Delta scan with the session's predicate on top. A query names a
//! table; the planner inlines that view, so every way SQL can reach a table
//! (joins, CTEs, subqueries, `UNION`, quoted or qualified names,
//! `information_schema`, `pg_catalog`) reaches it filtered. The unfiltered
//! providers live in [`LakeTables`], which no session can name.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::{TableType, ViewTable};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use deltalake::DeltaTable;
use meterline_operators::pseudonym::LedgerHasher;
use meterline_operators::MasterKey;
use meterline_sinks::Lake;

use super::jwt::{Claims, Role, TenantScope};
use super::policy::{self, MeterPeriod};
use super::scan::LakeScan;
use crate::privacy::tables::LEDGER_TABLE;

/// The lake's tables, opened once and shared by every session: each the
/// newest Delta version at most `refresh` old when a query plans.
pub struct LakeTables {
    lake: Lake,
    refresh: Duration,
    slots: tokio::sync::Mutex<HashMap<&'static str, Slot>>,
    /// The tables that existed at the last look (for `table_names`, which
    /// cannot wait for storage).
    present: Mutex<BTreeSet<&'static str>>,
    /// The object stores of the opened tables, shared with every session's
    /// runtime (sessions differ in their memory pools only).
    base: datafusion::prelude::SessionContext,
}

struct Slot {
    table: Option<DeltaTable>,
    provider: Option<Arc<dyn TableProvider>>,
    checked: Instant,
}

impl std::fmt::Debug for LakeTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeTables")
            .field("lake", &self.lake.root().as_str())
            .finish_non_exhaustive()
    }
}

impl LakeTables {
    pub fn new(lake: Lake, refresh: Duration) -> Self {
        Self {
            lake,
            refresh,
            slots: tokio::sync::Mutex::new(HashMap::new()),
            present: Mutex::new(BTreeSet::new()),
            base: datafusion::prelude::SessionContext::new(),
        }
    }

    /// The object store registry every session's runtime uses.
    pub fn object_stores(
        &self,
    ) -> Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry> {
        self.base.runtime_env().object_store_registry.clone()
    }

    /// The Parquet footer and page-index cache every session's runtime uses.
    /// Data files never change once written (Delta replaces files, it does not
    /// rewrite them), so a footer read by one session serves every other: a new
    /// connection does not read the footers of a year of files again. The cache
    /// holds file metadata only, never rows; its size is DataFusion's default
    /// bound (`datafusion.runtime.metadata_cache_limit`, 50 MiB).
    pub fn file_metadata_cache(
        &self,
    ) -> Arc<datafusion::execution::cache::cache_manager::FileMetadataCache> {
        self.base
            .runtime_env()
            .cache_manager
            .get_file_metadata_cache()
    }

    /// The newest provider of `name` (`None` while the table does not exist),
    /// at most `refresh` old, and its Delta version.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn provider(
        &self,
        name: &'static str,
    ) -> DfResult<Option<(Arc<dyn TableProvider>, u64)>> {
        let mut slots = self.slots.lock().await;
        let fresh = slots
            .get(name)
            .is_some_and(|s| s.checked.elapsed() < self.refresh);
        if !fresh {
            let slot = slots.remove(name);
            let slot = self.refreshed(name, slot).await?;
            if let Ok(mut present) = self.present.lock() {
                if slot.provider.is_some() {
                    present.insert(name);
                } else {
                    present.remove(name);
                }
            }
            slots.insert(name, slot);
        }
        let slot = slots.get(name).ok_or_else(|| internal("slot vanished"))?;
        Ok(match (&slot.table, &slot.provider) {
            (Some(t), Some(p)) => Some((p.clone(), t.version().unwrap_or(0))),
            _ => None,
        })
    }

    async fn refreshed(&self, name: &'static str, slot: Option<Slot>) -> DfResult<Slot> {
        let table = match slot {
            Some(Slot {
                table: Some(mut t),
                provider,
                ..
            }) => {
                let before = t.version();
                t.update_state().await.map_err(external)?;
                if t.version() == before && provider.is_some() {
                    // Same version: the provider (and its cached state) still holds.
                    return Ok(Slot {
                        table: Some(t),
                        provider,
                        checked: Instant::now(),
                    });
                }
                Some(t)
            }
            // Never opened, or absent at the last look.
            _ => meterline_sinks::open_existing(&self.lake, name)
                .await
                .map_err(external)?,
        };
        let provider = match &table {
            Some(t) if t.version().is_some() => {
                t.update_datafusion_session(&self.base.state())
                    .map_err(external)?;
                let delta = t.table_provider().await.map_err(external)?;
                match LakeScan::new(t, delta.schema())? {
                    Some(scan) => Some(Arc::new(scan) as Arc<dyn TableProvider>),
                    None => {
                        tracing::info!(
                            table = name,
                            "the table uses a Delta feature the server's own scan does not handle; reading it through delta-rs"
                        );
                        Some(delta)
                    }
                }
            }
            _ => None,
        };
        Ok(Slot {
            table,
            provider,
            checked: Instant::now(),
        })
    }

    /// The tables that existed at the last look.
    pub fn existing(&self) -> BTreeSet<&'static str> {
        self.present.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Look at every table once (at session start, so `table_names` and the
    /// catalog tables list them).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn warm(&self, names: impl IntoIterator<Item = &'static str>) -> DfResult<()> {
        for name in names {
            self.provider(name).await?;
        }
        Ok(())
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn internal(what: &str) -> DataFusionError {
    DataFusionError::Internal(what.to_owned())
}

/// What one session may see: the tables of its role with their predicates.
pub struct SessionSchema {
    tables: Arc<LakeTables>,
    claims: Claims,
    public: bool,
    timezone: chrono_tz::Tz,
    key: Option<Arc<MasterKey>>,
    /// A subject's meter periods and the ledger version they were read at.
    periods: tokio::sync::Mutex<(Option<u64>, Vec<MeterPeriod>)>,
}

impl std::fmt::Debug for SessionSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSchema")
            .field("role", &self.claims.role)
            .finish_non_exhaustive()
    }
}

/// `readings_current` is planned over the session's own `readings` view.
const READINGS_CURRENT: &str = "readings_current";

impl SessionSchema {
    pub fn new(
        tables: Arc<LakeTables>,
        claims: Claims,
        public: bool,
        timezone: chrono_tz::Tz,
        key: Option<Arc<MasterKey>>,
    ) -> Self {
        Self {
            tables,
            claims,
            public,
            timezone,
            key,
            periods: tokio::sync::Mutex::new((None, Vec::new())),
        }
    }

    /// The lake tables this session may name, with their predicates.
    fn visible(&self) -> impl Iterator<Item = &'static policy::Table> + '_ {
        policy::TABLES
            .iter()
            .filter(|t| policy::visible(&self.claims, t, self.public))
    }

    /// The subject's meter periods, read again when the ledger has changed.
    async fn periods(&self) -> DfResult<Vec<MeterPeriod>> {
        if self.claims.role != Role::Subject {
            return Ok(Vec::new());
        }
        let (Some(key), TenantScope::One(tenant), Some(subject)) =
            (&self.key, &self.claims.tenant, &self.claims.subject)
        else {
            return Ok(Vec::new());
        };
        let version = self.tables.provider(LEDGER_TABLE).await?.map(|(_, v)| v);
        let mut cached = self.periods.lock().await;
        if version.is_some() && cached.0 != version {
            let meters =
                crate::privacy::consent::subject_meters(self.tables.lake(), key, tenant, subject)
                    .await
                    .map_err(external)?;
            let periods = meters
                .meters()
                .into_iter()
                .flat_map(|(hash, ps)| {
                    ps.iter().map(move |(from, to)| MeterPeriod {
                        meter_hash: hash.to_owned(),
                        from: *from,
                        to: *to,
                    })
                })
                .collect();
            *cached = (version, periods);
        }
        Ok(cached.1.clone())
    }

    /// `name` as this session sees it: its rows that pass the predicate.
    async fn filtered(
        &self,
        table: &'static policy::Table,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some((provider, _)) = self.tables.provider(table.name).await? else {
            return Ok(None);
        };
        let periods = self.periods().await?;
        let hash = self.key.as_ref().map(|k| ledger_hash_udf(k));
        let meter_hash = |e: Expr| match &hash {
            Some(udf) => udf.call(vec![e]),
            // Without a key there is no ledger, hence no periods to match.
            None => datafusion::prelude::lit(datafusion::scalar::ScalarValue::Utf8(None)),
        };
        let cx = policy::Context {
            public: self.public,
            timezone: self.timezone,
            periods: &periods,
            meter_hash: &meter_hash,
        };
        let Some(predicate) = policy::predicate(&self.claims, table, &cx) else {
            return Ok(None);
        };
        let scan = LogicalPlanBuilder::scan(table.name, provider_as_source(provider), None)?;
        let plan = match predicate {
            Some(p) => scan.filter(p)?,
            None => scan,
        }
        .build()?;
        Ok(Some(Arc::new(Filtered {
            view: ViewTable::new(plan, None),
            kind: TableType::Base,
        })))
    }

    async fn readings_current(&self) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(readings) = policy::TABLES.iter().find(|t| t.name == "readings") else {
            return Ok(None);
        };
        if !policy::visible(&self.claims, readings, self.public) {
            return Ok(None);
        }
        let Some(view) = self.filtered(readings).await? else {
            return Ok(None);
        };
        // Planned in a scratch context that knows only this session's view.
        let scratch = datafusion::prelude::SessionContext::new();
        scratch.register_table("readings", view)?;
        let df = scratch
            .sql(&crate::query::sql::readings_current_sql())
            .await?;
        let plan = df.into_optimized_plan()?;
        Ok(Some(Arc::new(Filtered {
            view: ViewTable::new(plan, None),
            kind: TableType::View,
        })))
    }
}

/// A session's table: a view (its plan is inlined where the query names it,
/// so the predicate sits right on the Delta scan), listed by the catalogs as
/// what it stands for (`\dt` lists lake tables, `\dv` `readings_current`).
#[derive(Debug)]
struct Filtered {
    view: ViewTable,
    kind: TableType,
}

#[async_trait]
impl TableProvider for Filtered {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        self.kind
    }

    fn get_logical_plan(
        &'_ self,
    ) -> Option<std::borrow::Cow<'_, datafusion::logical_expr::LogicalPlan>> {
        self.view.get_logical_plan()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        self.view.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        self.view.scan(state, projection, filters, limit).await
    }
}

#[async_trait]
impl SchemaProvider for SessionSchema {
    fn table_names(&self) -> Vec<String> {
        let existing = self.tables.existing();
        let mut names: Vec<String> = self
            .visible()
            .filter(|t| existing.contains(&t.name))
            .map(|t| t.name.to_owned())
            .collect();
        if names.iter().any(|n| n == "readings") {
            names.push(READINGS_CURRENT.to_owned());
        }
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == READINGS_CURRENT {
            return self.readings_current().await;
        }
        match self.visible().find(|t| t.name == name) {
            Some(t) => self.filtered(t).await,
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|n| n == name)
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot create `{name}`: this server is read-only"
        )))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot drop `{name}`: this server is read-only"
        )))
    }
}

/// `meter` -> its consent-ledger hash, for matching a subject's meter periods
/// (the ledger holds only keyed hashes). Never registered by name: a session
/// cannot call it to hash identifiers of its choosing.
fn ledger_hash_udf(key: &MasterKey) -> ScalarUDF {
    ScalarUDF::new_from_impl(LedgerHash {
        hasher: Arc::new(LedgerHasher::new(key)),
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
}

#[derive(Debug)]
struct LedgerHash {
    hasher: Arc<LedgerHasher>,
    signature: Signature,
}

impl PartialEq for LedgerHash {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.hasher, &other.hasher)
    }
}

impl Eq for LedgerHash {}

impl std::hash::Hash for LedgerHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.hasher).hash(state);
    }
}

impl ScalarUDFImpl for LedgerHash {
    fn name(&self) -> &'static str {
        "meterline_ledger_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return Err(internal("meterline_ledger_hash takes one argument"));
        };
        let array: ArrayRef = arg.to_array(args.number_rows)?;
        let strings = array
            .as_string_opt::<i32>()
            .ok_or_else(|| internal("meterline_ledger_hash takes a Utf8 column"))?;
        let mut out = StringBuilder::with_capacity(strings.len(), strings.len() * 32);
        for v in strings {
            match v {
                Some(id) => out.append_value(self.hasher.hash(id)),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
