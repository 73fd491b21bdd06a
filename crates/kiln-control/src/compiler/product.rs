//! Compiling products and materialized views.
//!
//! A product: AST -> DataFusion `LogicalPlan` (planned from our own AST, so DataFusion's
//! diagnostics carry file positions) -> verified read-only -> contract gate against the
//! declared columns -> canonical `ORDER BY` sort appended -> optimized -> canonical form
//! and lineage ([`crate::canonical`]) -> fingerprints, and its file layout
//! ([`crate::layout`]). A view is compiled like a product and checked for what
//! `kiln stream` can run; its [`ViewProgram`] says which group is its window.
//!
//! Build identity is [`kiln_artifact::identity::build_id`] over the fingerprints: `schema_fp`
//! (kiln-contracts' canonical schema, with the layout: identity::layout_fp), `query_fp`
//! (the canonical plan), `runtime_fp` (the profile's semantic settings, [`crate::profile`])
//! and `func_fp` (the Kiln functions the plan calls with keyed digests of the secrets it
//! uses, kiln-functions), and the upstream versions.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, SortExpr};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use kiln_artifact::{CanonicalPlan, ColumnLineage, ProductShape};
use kiln_contracts::compat::{CheckOptions, check};
use kiln_contracts::{Contract, EvolutionPolicy, schema_fingerprint};
use kiln_data::stream::{EventTime, LateEvents, ViewProgram, WindowProgram};
use kiln_data::{ExistingData, WriteLayout};

use super::schema::{columns_schema, planning_error};
use super::substrate::Substrate;
use crate::canonical::analyze;
use crate::dialect::{ProductDef, ViewDef};
use crate::error::{ControlError, Location};
use crate::surface::Surface;

/// What a product over a micro-batch source may not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestShape {
    #[error(
        "reads micro-batch sources `{feed}` and `{other}`; a product ingests one (land each, then join them downstream)"
    )]
    TwoFeeds { feed: String, other: String },
    #[error(
        "ingests source `{feed}` and reads product `{product}`; a product over a micro-batch source reads only sources (land the records, then join them downstream)"
    )]
    ReadsProduct { feed: String, product: String },
    #[error("ingests source `{feed}`: each micro-batch is appended (existing_data = 'append')")]
    NotAppend { feed: String },
}

/// Options a materialized view accepts.
const VIEW_OPTIONS: [&str; 3] = ["compact_after", "late_events", "max_rows_per_file"];
/// Options a product accepts.
const PRODUCT_OPTIONS: [&str; 13] = [
    "compact_after",
    "sensitive",
    "max_bytes_per_file",
    "existing_data",
    "ordering_tier",
    "max_rows_per_file",
    "basename_template",
    "compression",
    "max_rows_per_row_group",
    "bloom_filter_columns",
    "dictionary",
    "statistics",
    "metadata_sidecars",
];

/// A product ready to execute.
#[derive(Debug, Clone)]
pub struct CompiledProduct {
    pub name: String,
    pub at: Location,
    /// The logical plan as planned from the SQL, with the canonical sort (for `explain`).
    pub logical: LogicalPlan,
    /// The optimized logical plan, including the canonical sort when `ORDER BY` is given.
    pub plan: LogicalPlan,
    /// The schema of the product's files: its contract, or the plan's schema.
    pub schema: SchemaRef,
    pub contract: Option<Contract>,
    pub schema_fp: String,
    pub query_fp: String,
    /// The canonical form `query_fp` hashes, kept for semantic diffs.
    pub canonical: CanonicalPlan,
    /// Lineage of every output column, in output order.
    pub lineage: Vec<ColumnLineage>,
    /// What its data depends on, column by column (for downstream build ids).
    pub shape: ProductShape,
    /// Fingerprint of the Kiln functions the plan calls and the secrets it keys them with.
    pub func_fp: String,
    /// The project secrets its functions are keyed by (`kiln_pii_hash(x, key => 'name')`).
    pub secrets: BTreeSet<String>,
    /// How its files are laid out (ordering tier, partitioning, file sizing, Parquet
    /// options, existing-data policy, file names): the data plane's program.
    pub layout: WriteLayout,
    /// The micro-batch (HTTP) source this product ingests, if it reads one: it is built
    /// batch by batch and appends (kiln_data::ingest).
    pub ingests: Option<String>,
    /// The windows its SELECTs group by (`GROUP BY TUMBLE/HOP`), innermost first.
    pub windows: Vec<crate::windows::WindowDef>,
    /// A materialized view: how `kiln stream` runs it.
    pub view: Option<ViewProgram>,
    /// `incremental = 'by_time'`: its intervals and how a batch's scan is narrowed
    /// ([`crate::incremental`]).
    pub incremental: Option<crate::incremental::Incremental>,
    /// `incremental = 'by_unique_key'`: the key its new rows are merged by
    /// ([`crate::incremental::MergeKey`]).
    pub merge: Option<crate::incremental::MergeKey>,
    /// `sensitive = 'a, b'`: output columns the untrusted surface (`kiln query`) may not
    /// read. An access policy, not part of the build's identity.
    pub sensitive: BTreeSet<String>,
    /// The base columns (of sources and products) whose values reach `kiln_pii_hash` in
    /// this product ([`crate::canonical::Analysis::hashed`]).
    pub hashed: BTreeSet<kiln_artifact::BaseColumn>,
}

impl Substrate {
    /// Compiles a materialized view's query (like a product's: planned, verified, gated
    /// against its declared columns, fingerprinted) and registers its schema. What
    /// `kiln stream` can run is checked here: a view reads one stream (and nothing else:
    /// each micro-batch runs its query); a view that aggregates groups by one window
    /// (TUMBLE or HOP with literal intervals) over the stream's event-time column, so a
    /// group closes when the watermark passes its end.
    pub async fn compile_view(&mut self, def: &ViewDef) -> Result<CompiledProduct, ControlError> {
        def.options.check_known("a materialized view", &VIEW_OPTIONS)?;
        let late_events = match def.options.get("late_events") {
            None | Some(("drop", _)) => LateEvents::Drop,
            Some(("table", _)) => LateEvents::Table,
            Some((v, at)) => {
                return Err(ControlError::Option {
                    at: at.clone(),
                    message: format!(
                        "late_events = '{v}' (valid: 'drop', 'table': write them to `{}__late`)",
                        def.name
                    ),
                });
            }
        };
        let mut options = crate::dialect::Options::default();
        options
            .0
            .extend(def.options.0.iter().filter(|(k, _, _)| k == "max_rows_per_file" || k == "compact_after").cloned());
        let as_product = ProductDef {
            name: def.name.clone(),
            at: def.at.clone(),
            columns: def.columns.clone(),
            partition_by: Vec::new(),
            order_by: Vec::new(),
            options,
            query: def.query.clone(),
            constraints: Vec::new(),
        };
        let mut product = self.compile_product(&as_product).await?;
        let fail = |at: Location, message: String| ControlError::Compile { at, product: def.name.clone(), message };
        let Some(stream) = product.ingests.as_ref().and_then(|feed| self.streams.get(feed)).cloned() else {
            return Err(fail(def.at.clone(), "a materialized view reads a stream (CREATE STREAM)".into()));
        };
        if late_events == LateEvents::Table
            && let Some((source, _)) = self.micro_batch_source(&stream.name)
        {
            let late = kiln_data::stream::late_schema(source.schema());
            kiln_contracts::storage_schema(&late)
                .map_err(|e| fail(def.at.clone(), format!("late_events = 'table' (`{}__late`): {e}", def.name)))?;
        }
        let mut aggregates = 0;
        let _ = product.plan.apply_with_subqueries(|node| {
            aggregates += usize::from(matches!(node, LogicalPlan::Aggregate(_)));
            Ok(TreeNodeRecursion::Continue)
        });
        if aggregates == 0 {
            product.view = Some(ViewProgram { stream, window: None, late_events });
            return Ok(product);
        }
        let at_window = |w: &crate::windows::WindowDef| Location {
            file: def.at.file.clone(),
            line: w.span.start.line,
            column: w.span.start.column,
        };
        let window = match product.windows.as_slice() {
            [w] if aggregates == 1 => w,
            [] => {
                return Err(fail(
                    def.at.clone(),
                    format!(
                        "a materialized view that aggregates groups by a window, GROUP BY TUMBLE({0}, ...) or HOP({0}, ...): a group over an unbounded stream never closes",
                        stream.event_time.as_ref().map_or("ts", |e| e.column.as_str())
                    ),
                ));
            }
            _ => return Err(fail(def.at.clone(), "a materialized view aggregates once, by one window".into())),
        };
        let Some(EventTime { column, .. }) = &stream.event_time else {
            return Err(fail(
                at_window(window),
                format!("stream `{}` has no WATERMARK FOR its event time, so its windows never close", stream.name),
            ));
        };
        let time = match &window.time {
            datafusion::sql::sqlparser::ast::Expr::Identifier(i) => Some(crate::dialect::normalize(i)),
            datafusion::sql::sqlparser::ast::Expr::CompoundIdentifier(parts) => {
                parts.last().map(crate::dialect::normalize)
            }
            _ => None,
        };
        if time.as_deref() != Some(column.as_str()) {
            return Err(fail(
                at_window(window),
                format!(
                    "the window is over `{}`; a stream's windows are over its event-time column `{column}` (WATERMARK FOR)",
                    window.time
                ),
            ));
        }
        let (Some(size_ms), Some(slide_ms)) = (window.size_ms, window.slide_ms) else {
            return Err(fail(
                at_window(window),
                "a stream window's intervals are literals (INTERVAL '10' SECOND)".into(),
            ));
        };
        let group_index = crate::windows::window_group_index(&product.plan).ok_or_else(|| {
            fail(at_window(window), "the window is not one of the aggregate's groups (GROUP BY TUMBLE/HOP)".into())
        })?;
        product.view =
            Some(ViewProgram { stream, window: Some(WindowProgram { group_index, size_ms, slide_ms }), late_events });
        Ok(product)
    }

    /// Compiles a product and registers its table for downstream products.
    pub async fn compile_product(&mut self, def: &ProductDef) -> Result<CompiledProduct, ControlError> {
        let valid: Vec<&str> = PRODUCT_OPTIONS.iter().chain(&crate::incremental::OPTIONS).copied().collect();
        def.options.check_known("a product", &valid)?;
        let mut incremental = crate::incremental::parse(def)?;
        if let (Some((mode, _)), Some((v, at))) = (def.options.get("incremental"), def.options.get("existing_data")) {
            let does = if mode == "by_unique_key" {
                "a product merged by key replaces the rows whose key it computes again"
            } else {
                "an incremental product replaces the intervals it computes"
            };
            return Err(ControlError::Option {
                at: at.clone(),
                message: format!("existing_data = '{v}' with incremental = '{mode}': {does}"),
            });
        }
        let at = def.at.clone();
        let fail = |message: String| ControlError::Compile { at: at.clone(), product: def.name.clone(), message };
        // The options that do not depend on the output schema, before planning.
        let base = crate::layout::base_layout(def)?;
        let state = self.ctx.state();
        let mut query = def.query.clone();
        let windows = crate::windows::rewrite_windows(&mut query).map_err(|e| planning_error(e, &def.at, &def.name))?;
        crate::unnest::nest_unnest_joins_in_query(&mut query);
        let statement = DfStatement::Statement(Box::new(SqlStatement::Query(query)));
        let plan = state.statement_to_plan(statement).await.map_err(|e| planning_error(e, &def.at, &def.name))?;
        let plan = self.vars.bind(plan).map_err(|e| fail(e.to_string()))?;
        Surface::Internal.verify(&plan, &self.tables()).map_err(|e| fail(e.to_string()))?;
        let ingests = self.ingested_source(&plan, base.existing).map_err(|e| fail(e.to_string()))?;
        if let (Some(feed), Some((mode, _))) = (&ingests, def.options.get("incremental")) {
            return Err(fail(format!(
                "incremental = '{mode}' over micro-batch source `{feed}`: a product over a micro-batch source appends each batch already"
            )));
        }

        let planned: Schema = plan.schema().as_arrow().clone();
        let contract = match &def.columns {
            None => None,
            Some(columns) => {
                let declared = primary_keys_not_null(columns_schema(columns, &def.at)?, def)?;
                let contract = Contract::try_new(
                    def.name.clone(),
                    declared,
                    def.partition_by.clone(),
                    def.order_by.iter().map(|(c, _)| c.clone()).collect(),
                    EvolutionPolicy::Strict,
                )
                .map_err(|e| fail(e.to_string()))?;
                let verdict = check(
                    &planned,
                    &contract.schema,
                    CheckOptions { policy: contract.evolution, nullability_is_proven: false },
                );
                if !verdict.is_ok() {
                    return Err(ControlError::Contract {
                        at: def.at.clone(),
                        product: def.name.clone(),
                        violations: verdict.violations.iter().map(ToString::to_string).collect(),
                    });
                }
                Some(contract)
            }
        };
        let schema: SchemaRef = match &contract {
            Some(c) => Arc::clone(&c.schema),
            None => Arc::new(Schema::new(planned.fields().iter().map(|f| Field::clone(f)).collect::<Vec<_>>())),
        };
        for (k, column) in def.partition_by.iter().enumerate() {
            let field = schema
                .field_with_name(column)
                .map_err(|_| fail(format!("PARTITIONED BY column `{column}` is not an output column")))?;
            if def.partition_by[..k].contains(column) {
                return Err(fail(format!("PARTITIONED BY names `{column}` twice")));
            }
            if !partitionable(field.data_type()) {
                return Err(fail(format!(
                    "PARTITIONED BY column `{column}` has type {}; partition by an integer, string, boolean or date column",
                    field.data_type()
                )));
            }
        }
        if !def.partition_by.is_empty() && def.partition_by.len() >= schema.fields().len() {
            return Err(fail("PARTITIONED BY must leave at least one column inside the files".into()));
        }
        if let Some(spec) = &incremental {
            crate::incremental::check_schema(spec, &schema, def)?;
        }
        let merge = crate::incremental::parse_key(def, &schema)?;
        // Every dataset is a Delta table: each column needs a type one holds exactly.
        kiln_contracts::storage_schema(&schema).map_err(|e| fail(e.to_string()))?;
        for (column, _) in &def.order_by {
            if schema.field_with_name(column).is_err() {
                return Err(fail(format!("ORDER BY column `{column}` is not an output column")));
            }
        }
        let plan = if def.order_by.is_empty() {
            plan
        } else {
            let keys: Vec<SortExpr> = def
                .order_by
                .iter()
                .map(|(c, asc)| Expr::Column(Column::from_name(c.clone())).sort(*asc, !*asc))
                .collect();
            LogicalPlanBuilder::from(plan).sort(keys).and_then(|b| b.build()).map_err(|e| fail(e.strip_backtrace()))?
        };
        let logical = plan.clone();
        // A view's aggregate runs as one windowed aggregation (kiln_data::stream): the
        // rewrite of DISTINCT aggregates into two nested GROUP BYs is left out for views
        // (DataFusion's distinct accumulators keep their values as partial state).
        let streaming = ingests.as_ref().is_some_and(|feed| self.streams.contains_key(feed));
        let plan = if streaming {
            let rules: Vec<_> = state
                .optimizers()
                .iter()
                .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
                .cloned()
                .collect();
            let view_state = SessionStateBuilder::new_from_existing(state.clone()).with_optimizer_rules(rules).build();
            view_state.optimize(&plan)
        } else {
            state.optimize(&plan)
        };
        let plan = plan.map_err(|e| fail(e.strip_backtrace()))?;
        let analysis = analyze(&plan);
        let sensitive = sensitive_columns(def, &schema)?;
        let query_fp = analysis.query_fp();
        let shape = analysis.shape(&schema);
        let layout = crate::layout::with_parquet(base, def, &schema)?;
        if let Some(spec) = &mut incremental {
            spec.filter = crate::incremental::derive(&plan, &spec.column);
        }
        // The dataset's shape is its columns, its partitioning and how its files are
        // written: changing any of them changes schema_fp (and rebuilds). An incremental
        // product's column, grain and start say which rows it holds.
        let layout_lines: String = layout
            .partition_by
            .iter()
            .map(|c| format!("partition {c}\n"))
            .chain(layout.recorded.iter().map(|(k, v)| format!("write {k}={v}\n")))
            .chain((layout.ordering == kiln_data::Ordering::Producer).then(|| "tier 2\n".to_owned()))
            .chain(incremental.as_ref().map(crate::incremental::Incremental::identity_line))
            .chain(merge.as_ref().map(crate::incremental::MergeKey::identity_line))
            .collect();
        let schema_fp = kiln_artifact::identity::layout_fp(&schema_fingerprint(&schema), &layout_lines);
        let (used, secrets) = functions_used(&plan);
        let func_fp = self.functions.fingerprint(&used, &secrets).map_err(|e| fail(e.to_string()))?;

        self.product_table_for(&def.name, Arc::clone(&schema))?;
        Ok(CompiledProduct {
            name: def.name.clone(),
            at: def.at.clone(),
            logical,
            plan,
            schema,
            contract,
            schema_fp,
            query_fp,
            canonical: analysis.plan,
            lineage: analysis.lineage,
            shape,
            func_fp,
            secrets,
            layout,
            ingests,
            windows,
            view: None,
            incremental,
            merge,
            sensitive,
            hashed: analysis.hashed,
        })
    }

    /// The micro-batch source a product's plan reads, checked against what ingest can do:
    /// one such source, besides which only sources (each batch runs the whole query, so
    /// a product read alongside would be joined against its version at each batch), and
    /// output that appends.
    fn ingested_source(&self, plan: &LogicalPlan, existing_data: ExistingData) -> Result<Option<String>, IngestShape> {
        let mut tables = BTreeSet::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.insert(scan.table_name.table().to_owned());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let feeds: Vec<&String> = tables.iter().filter(|t| self.micro_batch.contains_key(*t)).collect();
        let Some(feed) = feeds.first() else { return Ok(None) };
        if let Some(other) = feeds.get(1) {
            return Err(IngestShape::TwoFeeds { feed: (*feed).clone(), other: (*other).clone() });
        }
        if let Some(product) = tables.iter().find(|t| self.products.contains_key(*t)) {
            return Err(IngestShape::ReadsProduct { feed: (*feed).clone(), product: product.clone() });
        }
        if !matches!(existing_data, ExistingData::Replace | ExistingData::Append) {
            return Err(IngestShape::NotAppend { feed: (*feed).clone() });
        }
        Ok(Some((*feed).clone()))
    }
}

/// The declared schema with PRIMARY KEY columns NOT NULL (a primary key is NOT NULL and
/// UNIQUE); every column a key or a reference names must be declared.
fn primary_keys_not_null(schema: SchemaRef, def: &ProductDef) -> Result<SchemaRef, ControlError> {
    use crate::dialect::ConstraintKind;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for c in &def.constraints {
        let (columns, primary) = match &c.kind {
            ConstraintKind::Unique { columns, primary } => (columns, *primary),
            ConstraintKind::References { columns, .. } => (columns, false),
            ConstraintKind::Check(_) => continue,
        };
        for column in columns {
            let Some(field) = fields.iter_mut().find(|f| f.name() == column) else {
                return Err(ControlError::Compile {
                    at: c.at.clone(),
                    product: def.name.clone(),
                    message: format!("{} names `{column}`, which is not a declared column", c.kind),
                });
            };
            if primary {
                *field = field.clone().with_nullable(false);
            }
        }
    }
    Ok(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// Types whose values make readable, reversible Hive directory names.
fn partitionable(t: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    t.is_integer()
        || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean | DataType::Date32)
}

/// Every function name a plan calls, and the secret names passed to `kiln_pii_hash`.
fn functions_used(plan: &LogicalPlan) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    names.insert(f.name().to_owned());
                    if f.name() == "kiln_pii_hash"
                        && let Some(Expr::Literal(value, _)) = f.args.get(1)
                        && let Some(name) = value.try_as_str().flatten()
                    {
                        secrets.insert(name.to_owned());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    (names, secrets)
}

/// A product's `sensitive` option: output columns, each named once.
fn sensitive_columns(def: &ProductDef, schema: &SchemaRef) -> Result<BTreeSet<String>, ControlError> {
    let Some((text, at)) = def.options.get("sensitive") else { return Ok(BTreeSet::new()) };
    let mut columns = BTreeSet::new();
    for column in text.split(',').map(str::trim) {
        let message = if column.is_empty() {
            format!("sensitive = '{text}': expected a comma-separated list of output columns")
        } else if schema.field_with_name(column).is_err() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!("sensitive: `{column}` is not a column of `{}` (columns: {})", def.name, names.join(", "))
        } else if !columns.insert(column.to_owned()) {
            format!("sensitive: `{column}` is named twice")
        } else {
            continue;
        };
        return Err(ControlError::Option { at: at.clone(), message });
    }
    Ok(columns)
}
