//! The [`Substrate`]: the one `SessionContext` of a run, configured by the runtime
//! profile, with every source registered as a file table (or a micro-batch table), every
//! product as a [`ProductTable`] (schema known at compile time, files bound at commit
//! time), the installed function registry, and the SQL surfaces ([`crate::surface`]).
//! Sources and streams are compiled in [`super::sources`], products and views in
//! [`super::product`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::tokenizer::Tokenizer;
use kiln_contracts::dialect::KilnDialect;
use kiln_contracts::schema_fingerprint;
use kiln_data::stream::StreamProgram;
use kiln_data::{MicroBatchSource, MicroBatchTable, ProductTable, Warehouse};
use kiln_functions::Registry;

use super::schema::columns_schema;
use crate::dialect::SourceDef;
use crate::error::ControlError;
use crate::profile::RuntimeProfile;
use crate::surface::{Refused, Surface};

/// One SessionContext with a project's tables.
pub struct Substrate {
    pub(super) ctx: SessionContext,
    pub(super) functions: Registry,
    pub(super) warehouse: Warehouse,
    pub(super) root: PathBuf,
    pub(super) products: HashMap<String, Arc<ProductTable>>,
    pub(super) sources: BTreeSet<String>,
    /// Micro-batch sources and the tables their batches are bound to.
    pub(super) micro_batch: HashMap<String, (MicroBatchSource, Arc<MicroBatchTable>)>,
    pub(super) streams: HashMap<String, StreamProgram>,
    pub(super) runtime_fp: String,
    /// Hash of every explicit setting (semantic or not: optimizer switches change plans).
    pub(super) settings_fp: String,
    pub(super) functions_fp: String,
    /// The project's variables (`$name` in SQL).
    pub(super) vars: crate::vars::Vars,
}

impl std::fmt::Debug for Substrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substrate")
            .field("session_id", &self.ctx.session_id())
            .field("warehouse", &self.warehouse)
            .field("products", &self.products.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Substrate {
    /// A session configured by `profile`, with `functions` installed and the warehouse's
    /// object store registered.
    pub fn new(
        profile: &RuntimeProfile,
        warehouse: Warehouse,
        root: &Path,
        functions: Registry,
    ) -> Result<Self, ControlError> {
        let state = SessionStateBuilder::new()
            .with_config(profile.session_config()?)
            .with_runtime_env(profile.runtime_env()?)
            .with_default_features()
            .with_relation_planners(vec![Arc::new(crate::unnest::UnnestPlanner)])
            .with_query_planner(Arc::new(crate::unnest::KilnQueryPlanner))
            // After DataFusion's rules: array_agg in one phase, compacted aggregate output.
            .with_physical_optimizer_rule(Arc::new(kiln_functions::nest_plan::NestPlan))
            .build();
        let ctx = SessionContext::new_with_state(state);
        warehouse.register(ctx.runtime_env().as_ref())?;
        functions.install(&ctx)?;
        let runtime_fp = profile.runtime_fp()?;
        let settings_fp = kiln_artifact::identity::settings_fp(&profile.settings);
        let functions_fp = functions.fingerprint_all();
        Ok(Self {
            ctx,
            functions,
            warehouse,
            root: root.to_path_buf(),
            products: HashMap::new(),
            sources: BTreeSet::new(),
            micro_batch: HashMap::new(),
            streams: HashMap::new(),
            runtime_fp,
            settings_fp,
            functions_fp,
            vars: crate::vars::Vars::default(),
        })
    }

    /// The secrets resolved from their kiln.toml fallback rather than the environment.
    pub fn secret_fallbacks(&self) -> &[String] {
        self.functions.secrets().fallbacks()
    }

    /// Sets the variables `$name` in SQL reads (crate::vars); before compiling.
    pub fn set_vars(&mut self, vars: crate::vars::Vars) {
        self.vars = vars;
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The semantic settings' fingerprint of this session's profile.
    pub fn runtime_fp(&self) -> &str {
        &self.runtime_fp
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// The project directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn product_table(&self, name: &str) -> Option<&Arc<ProductTable>> {
        self.products.get(name)
    }

    /// The key of a product's compile result in the compile cache
    /// ([`kiln_artifact::identity::compile_key`]).
    ///
    /// `statement_fp` identifies the statement's text (the caller hashes its file and
    /// position), `settings_fp` every explicit setting of the profile, `functions_fp` every
    /// installed function and secret digest, and the inputs are the schemas of the tables
    /// the statement reads. Compiling is a function of exactly these, so a hit can stand in
    /// for planning, optimizing and fingerprinting.
    pub fn compile_key(&self, statement_fp: &str, inputs: &[(String, String)]) -> String {
        // Variables are part of what a statement compiles to (crate::vars).
        let settings = format!("{}:{}", self.settings_fp, self.vars.fingerprint());
        kiln_artifact::identity::compile_key(
            env!("CARGO_PKG_VERSION"),
            &settings,
            &self.functions_fp,
            statement_fp,
            inputs,
        )
    }

    /// Registers a product's table from a cached compile result, so downstream products
    /// compile against it without compiling it.
    pub fn register_product_schema(&mut self, name: &str, schema: SchemaRef) -> Result<(), ControlError> {
        self.product_table_for(name, schema).map(|_| ())
    }

    /// The registered table of product `name`, reused when its schema is unchanged (plans
    /// compiled against it keep seeing the same table, which the engine binds at commit),
    /// or a new one.
    pub(super) fn product_table_for(
        &mut self,
        name: &str,
        schema: SchemaRef,
    ) -> Result<Arc<ProductTable>, ControlError> {
        if let Some(existing) = self.products.get(name)
            && existing.schema_ref() == &schema
        {
            return Ok(Arc::clone(existing));
        }
        let table = Arc::new(ProductTable::new(name.to_owned(), schema));
        self.ctx
            .register_table(name, Arc::clone(&table) as _)
            .map_err(|e| ControlError::Internal(format!("register product `{name}`: {e}")))?;
        self.products.insert(name.to_owned(), Arc::clone(&table));
        Ok(table)
    }

    /// The schema fingerprint a source declares.
    pub fn source_schema_fp(def: &SourceDef) -> Result<String, ControlError> {
        Ok(schema_fingerprint(columns_schema(&def.columns, &def.at)?.as_ref()))
    }

    /// The names of every registered source and product.
    pub fn tables(&self) -> BTreeSet<String> {
        self.sources.iter().cloned().chain(self.products.keys().cloned()).collect()
    }

    /// Plans one SQL query from outside the project files and verifies it against `surface`
    /// before anything runs ([`crate::surface`]).
    pub async fn plan_sql(&self, surface: Surface, sql: &str) -> Result<LogicalPlan, ControlError> {
        self.plan_sql_reading(surface, sql, &self.tables()).await
    }

    /// [`Substrate::plan_sql`] where only the registered tables in `readable` may be read:
    /// reading another (a source the untrusted surface may not read) is refused as such.
    pub async fn plan_sql_reading(
        &self,
        surface: Surface,
        sql: &str,
        readable: &BTreeSet<String>,
    ) -> Result<LogicalPlan, ControlError> {
        let tables = self.tables();
        let err =
            |message: String| ControlError::Query { surface: surface.name(), message: user_message(&message, &tables) };
        let state = self.ctx.state();
        let dialect = KilnDialect::default();
        let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| err(e.to_string()))?;
        if let Some((at, message)) = crate::statement_limits::too_complex(&tokens) {
            return Err(err(format!("{}:{}: {message}", at.line, at.column)));
        }
        let mut statements = DFParserBuilder::new(crate::windows::window_tvfs(crate::unnest::normalize_tokens(tokens)))
            .with_dialect(&dialect)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| err(e.strip_backtrace()))?;
        if statements.len() != 1 {
            return Err(err(format!("expected exactly one statement, found {}", statements.len())));
        }
        let mut statement = statements.pop_front().ok_or_else(|| err("no statement".into()))?;
        if let DfStatement::Statement(s) = &mut statement {
            crate::unnest::nest_unnest_joins(s);
            // `DESCRIBE t` plans to t's schema alone, no scan the surface could check.
            if surface != Surface::Admin
                && let datafusion::sql::sqlparser::ast::Statement::ExplainTable { table_name, .. } = s.as_ref()
            {
                let name = table_name.0.last().and_then(|p| p.as_ident()).map(crate::dialect::normalize);
                if let Some(name) = name.filter(|n| !readable.contains(n)) {
                    let refused = if tables.contains(&name) { Refused::Source(name) } else { Refused::Table(name) };
                    return Err(err(refused.to_string()));
                }
            }
        }
        let plan = state.statement_to_plan(statement).await.map_err(|e| err(e.strip_backtrace()))?;
        let plan = self.vars.bind(plan).map_err(|e| err(e.to_string()))?;
        surface
            .verify(&plan, readable)
            .map_err(|e| match e {
                Refused::Table(name) if tables.contains(&name) => Refused::Source(name),
                other => other,
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(plan)
    }

    /// The micro-batch source `name` and the table its batches are bound to.
    pub fn micro_batch_source(&self, name: &str) -> Option<(&MicroBatchSource, &Arc<MicroBatchTable>)> {
        self.micro_batch.get(name).map(|(s, t)| (s, t))
    }

    /// Makes every stream an unbounded table (kiln_data::StreamTable) for ad-hoc queries
    /// (`kiln query`), in place of the micro-batch table views are planned over.
    pub fn follow_streams(&mut self) -> Result<(), ControlError> {
        for (name, stream) in &self.streams {
            let Some((source, _)) = self.micro_batch.get(name) else { continue };
            let table = kiln_data::StreamTable::new(source.clone(), stream.poll_interval);
            let failed =
                |e: datafusion::error::DataFusionError| ControlError::Internal(format!("stream `{name}`: {e}"));
            self.ctx.deregister_table(name.as_str()).map_err(failed)?;
            self.ctx.register_table(name.as_str(), Arc::new(table)).map_err(failed)?;
        }
        Ok(())
    }

    /// Whether `plan` reads a stream.
    pub fn reads_stream(&self, plan: &LogicalPlan) -> bool {
        let mut found = false;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && self.streams.contains_key(scan.table_name.table())
            {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    }

    /// A compiled stream.
    pub fn stream(&self, name: &str) -> Option<&StreamProgram> {
        self.streams.get(name)
    }

    /// `plan` optimized in this session (an incremental product's batch plan: its interval
    /// filters move into the scans).
    pub fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan, ControlError> {
        self.ctx.state().optimize(plan).map_err(|e| ControlError::Plan { message: e.strip_backtrace() })
    }

    /// The physical plan of `plan` in this session (Kiln's planner maps its extension
    /// nodes to kiln-data's operators), single-distinct aggregates as two groupings
    /// (crate::distinct).
    pub async fn physical_plan(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>, ControlError> {
        let state = self.ctx.state();
        let plan = crate::distinct::two_phase_distinct(plan, &state);
        state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await
            .map_err(|e| ControlError::Plan { message: e.strip_backtrace() })
    }

    /// The physical plan of a materialized view (one partition: a micro-batch is small,
    /// and a view's throughput per core is what matters, as several views run side by
    /// side), the task context it executes in, and the batch size records are parsed in.
    pub async fn view_plan(
        &self,
        plan: &LogicalPlan,
    ) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>, usize), ControlError> {
        let state = self.ctx.state();
        let batch_size = state.config().batch_size();
        let config = state.config().clone().with_target_partitions(1);
        let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
        let physical = state
            .query_planner()
            .create_physical_plan(plan, &state)
            .await
            .map_err(|e| ControlError::Plan { message: e.strip_backtrace() })?;
        Ok((physical, Arc::new(TaskContext::from(&state)), batch_size))
    }

    /// The operator of `plan` that needs all of an unbounded input before it emits (an
    /// aggregate, a sort, a join's build side), when there is one: a query reading a
    /// stream through it would never finish. Read from the physical plan's own properties
    /// (emission type and boundedness), planned without DataFusion's sanity check, which
    /// refuses such plans with a message and not a type.
    pub async fn unbounded_breaker(&self, plan: &LogicalPlan) -> Option<String> {
        use datafusion::physical_plan::ExecutionPlanProperties;
        use datafusion::physical_plan::execution_plan::EmissionType;
        let state = self.ctx.state();
        let rules: Vec<_> =
            state.physical_optimizers().iter().filter(|r| r.name() != "SanityCheckPlan").cloned().collect();
        let state = SessionStateBuilder::new_from_existing(state).with_physical_optimizer_rules(rules).build();
        let physical = state.create_physical_plan(plan).await.ok()?;
        fn find(node: &Arc<dyn ExecutionPlan>) -> Option<String> {
            let unbounded_input = node.children().iter().any(|c| c.boundedness().is_unbounded());
            if unbounded_input && node.pipeline_behavior() == EmissionType::Final {
                return Some(node.name().to_owned());
            }
            node.children().into_iter().find_map(find)
        }
        find(&physical)
    }

    /// The session's Parquet write options (`datafusion.execution.parquet.*`), under every
    /// product's own.
    pub fn parquet_options(&self) -> datafusion::common::config::TableParquetOptions {
        let global = self.ctx.state().config().options().execution.parquet.clone();
        datafusion::common::config::TableParquetOptions { global, ..Default::default() }
    }
}

/// A DataFusion message in the terms of a Kiln user: no error-kind prefixes, no
/// `datafusion.public.` catalog names, an unknown table named as such (with the closest
/// table when one is near).
fn user_message(message: &str, tables: &BTreeSet<String>) -> String {
    let mut m = message.trim();
    for prefix in ["Error during planning: ", "SQL error: ", "Schema error: ", "sql parser error: ", "ParserError(\""] {
        while let Some(rest) = m.strip_prefix(prefix) {
            m = rest;
        }
    }
    let m = if message.contains("ParserError(\"") { m.strip_suffix("\")").unwrap_or(m) } else { m };
    let m = m.replace("datafusion.public.", "");
    if let Some(rest) = m.strip_prefix("table '")
        && let Some((name, tail)) = rest.split_once('\'')
        && tail.trim() == "not found"
    {
        let hint = tables
            .iter()
            .map(|t| (crate::dag::edit_distance(t, name), t))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, t)| format!(" (did you mean `{t}`?)"))
            .unwrap_or_default();
        return format!("unknown table `{name}`{hint}");
    }
    m
}
