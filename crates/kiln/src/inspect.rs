//! Looking at a project without building it: `kiln lineage`, `kiln diff`,
//! `kiln explain`, `kiln query`, `kiln functions`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::{ExplainReport, FunctionArg, FunctionCatalog, FunctionEntry, Lineage, ProductDiff};
use kiln_control::diff::diff as plan_diff;
use kiln_control::query_limits::{QueryLimits, QueryOverrides};
use kiln_control::surface::Surface;

use crate::KilnError;
use crate::events::{BuildOptions, Quiet};
use crate::session::{Need, Session};

fn exec_error(context: &str) -> impl Fn(datafusion::error::DataFusionError) -> KilnError + '_ {
    move |e| KilnError::Data(kiln_data::DataError::Execution { context: context.to_owned(), source: e })
}

/// `kiln diff PRODUCT`: the semantic diff of the product's query now against the query of
/// its committed build (from the canonical plan the build stored in `.kiln/plans/`).
pub async fn diff(dir: &Path, product: &str, options: &BuildOptions) -> Result<ProductDiff, KilnError> {
    let mut session = Session::open(dir, options, Need::Plans, &Quiet).await?;
    let i = session.product_index(product)?;
    let current = session.warehouse.current(product).await?;
    let compiled = session.compiled_product(i).await?;
    let (new_query_fp, canonical) = (compiled.query_fp.clone(), compiled.canonical.clone());
    let Some(current) = current else {
        return Err(KilnError::Product {
            product: product.to_owned(),
            message: "no committed build to compare with (build it first)".into(),
        });
    };
    let old_query_fp = current.fingerprints.map(|f| f.query_fp);
    let old_plan = match &old_query_fp {
        Some(fp) => session.store.plan(fp).await?,
        None => None,
    };
    Ok(ProductDiff {
        format_version: REPORT_FORMAT_VERSION,
        product: product.to_owned(),
        old_query_fp,
        new_query_fp,
        diff: old_plan.map(|old| plan_diff(&old, &canonical)),
    })
}

/// `kiln explain PRODUCT [--analyze]`: the product's logical, optimized, canonical and
/// physical plans; with `analyze`, the plan is executed over the committed builds of its
/// inputs (nothing is written) and annotated with per-operator metrics.
pub async fn explain(
    dir: &Path,
    product: &str,
    analyze: bool,
    options: &BuildOptions,
) -> Result<ExplainReport, KilnError> {
    let mut session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    let i = session.product_index(product)?;
    session.compiled_product(i).await?;
    // The physical plan scans the upstream products' committed files.
    session.bind_all_committed().await?;
    let compiled = session.compiled_product(i).await?;
    let (logical, optimized) = (compiled.logical.clone(), compiled.plan.clone());
    let canonical = compiled.canonical.encode();
    let state = session.substrate.context().state();
    let planned = state.create_physical_plan(&optimized).await;
    let physical = match (planned, analyze) {
        (Ok(p), _) => p,
        (Err(e), true) => return Err(exec_error(product)(e)),
        // Without --analyze, an upstream never built leaves the physical plan unknown (it
        // depends on the upstream's files); the other plans are still shown.
        (Err(e), false) => {
            return Ok(ExplainReport {
                format_version: REPORT_FORMAT_VERSION,
                product: product.to_owned(),
                logical: logical.display_indent().to_string(),
                optimized: optimized.display_indent().to_string(),
                physical: format!("(not planned: {})", e.strip_backtrace()),
                canonical,
                analyzed: None,
                operators: Vec::new(),
            });
        }
    };
    let mut report = ExplainReport {
        format_version: REPORT_FORMAT_VERSION,
        product: product.to_owned(),
        logical: logical.display_indent().to_string(),
        optimized: optimized.display_indent().to_string(),
        physical: crate::record::plan_text(physical.as_ref(), false, &session.project.root),
        canonical,
        analyzed: None,
        operators: Vec::new(),
    };
    if analyze {
        // Drain every partition; the rows are counted by the operators' metrics and dropped.
        let task = session.substrate.context().task_ctx();
        let partitions = physical.properties().output_partitioning().partition_count();
        for p in 0..partitions {
            let mut stream = physical.execute(p, Arc::clone(&task)).map_err(exec_error(product))?;
            while let Some(batch) = stream.next().await {
                batch.map_err(exec_error(product))?;
            }
        }
        report.analyzed = Some(crate::record::plan_text(physical.as_ref(), true, &session.project.root));
        crate::record::operator_metrics(&physical, 0, &mut report.operators);
    }
    Ok(report)
}

/// How `kiln query` writes its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFormat {
    /// An aligned table (collects the result: the one materialization point, for display).
    Table,
    /// CSV with a header, streamed batch by batch.
    Csv,
    /// JSON lines, streamed batch by batch.
    Json,
}

/// The limits of `kiln query` in the project at `dir`: kiln.toml's `[query]` with
/// `overrides` (the command line's) applied (kiln_control::query_limits).
pub fn query_limits(dir: &Path, overrides: &QueryOverrides) -> Result<QueryLimits, KilnError> {
    Ok(kiln_control::project::load_config(dir)?.query.with(overrides))
}

/// `kiln query "SQL"`: one read-only query over the committed builds of the project's
/// products and views (and its sources), checked by the untrusted surface before anything
/// runs. Streams read as unbounded tables from their beginning (`LIMIT n` returns once n
/// records are there; without a limit the query follows the stream).
///
/// Of `limits`, this applies the memory pool (a fair spill pool of
/// [`QueryLimits::pool_bytes`], in place of the profile's); the caller, which owns the
/// process and the output, applies the others ([`row_capped`], [`write_result`]'s byte
/// cap, the timeout and the resident-memory bound).
pub async fn query(
    dir: &Path,
    sql: &str,
    options: &BuildOptions,
    limits: &QueryLimits,
) -> Result<(SchemaRef, SendableRecordBatchStream), KilnError> {
    let mut options = options.clone();
    if let Some(pool) = limits.pool_bytes() {
        options.settings.push(("kiln.memory_pool".into(), "fair".into()));
        options.settings.push(("kiln.memory_limit".into(), pool.to_string()));
    }
    let mut session = Session::open(dir, &options, Need::Versions, &Quiet).await?;
    if let Some(memory) = limits.memory {
        bound_amplifying_functions(session.substrate.context(), memory / 4);
    }
    session.bind_all_committed().await?;
    session.substrate.follow_streams()?;
    let readable = readable_tables(&session, limits)?;
    let plan = session.substrate.plan_sql_reading(Surface::Untrusted, sql, &readable).await?;
    let optimized = session.substrate.context().state().optimize(&plan).map_err(exec_error("query"))?;
    refuse_protected_columns(&session, &optimized)?;
    if let Some(memory) = limits.memory {
        let batch_size = session.substrate.context().state().config().batch_size();
        refuse_broadcast_constants(&optimized, memory / 4, batch_size)?;
    }
    // A query that follows a stream passes rows on one by one (operators otherwise hold
    // rows back until a batch fills, which a slow stream may never do).
    let ctx = if session.substrate.reads_stream(&plan) {
        let state = session.substrate.context().state();
        let config = state.config().clone().with_batch_size(1);
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(state).with_config(config).build();
        datafusion::prelude::SessionContext::new_with_state(state)
    } else {
        session.substrate.context().clone()
    };
    let follows = session.substrate.reads_stream(&plan);
    let frame = ctx.execute_logical_plan(plan.clone()).await.map_err(exec_error("query"))?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let stream = match frame.execute_stream().await {
        Ok(stream) => stream,
        Err(e) => {
            let breaker = if follows { session.substrate.unbounded_breaker(&plan).await } else { None };
            return Err(match breaker {
                Some(operator) => KilnError::Query(format!(
                    "this query would never finish: it reads a stream (unbounded) through an operator that needs all of \
                     its input ({operator}: an aggregate, a sort, a join build side); aggregate streams with a \
                     materialized view (GROUP BY TUMBLE/HOP, run by `kiln stream`) and query the view, or read the \
                     stream with filters, projections and LIMIT"
                )),
                None => exec_error("query")(e),
            });
        }
    };
    Ok((schema, stream))
}

/// Replaces the functions whose output outgrows their input (`repeat`, `lpad`, scalar
/// `generate_series`, ...: kiln_functions::bounded) with versions that refuse a call
/// producing more than `max_bytes` in one batch: DataFusion's pool does not see what they
/// allocate, and constant folding runs them while planning.
fn bound_amplifying_functions(ctx: &datafusion::prelude::SessionContext, max_bytes: u64) {
    use datafusion::execution::FunctionRegistry;
    for name in kiln_functions::bounded::BOUNDED_FUNCTIONS {
        let Ok(udf) = ctx.state().udf(name) else { continue };
        if let Some(wrapped) = kiln_functions::bounded::bounded(&udf, max_bytes) {
            ctx.register_udf(wrapped);
        }
    }
}

/// Refuses a constant that execution would copy into every row of a batch past
/// `max_bytes`: constant folding turns `repeat('x', 100000000)` into a 100 MB literal,
/// which a projection over a table repeats `batch_size` times (no function runs then, so
/// [`bound_amplifying_functions`] cannot see it). A query without FROM (one row) may hold
/// a constant up to `max_bytes` itself.
fn refuse_broadcast_constants(
    optimized: &datafusion::logical_expr::LogicalPlan,
    max_bytes: u64,
    batch_size: usize,
) -> Result<(), KilnError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, LogicalPlan};
    let rows = batch_size.max(1) as u64;
    let mut refused = None;
    let _ = optimized.apply_with_subqueries(|node| {
        let one_row = matches!(node.inputs().as_slice(), [LogicalPlan::EmptyRelation(e)] if e.produce_one_row);
        let copies = if one_row { 1 } else { rows };
        let _ = node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Literal(value, _) = e {
                    let bytes = value.size() as u64;
                    if bytes.saturating_mul(copies) > max_bytes {
                        let size = |b: u64| kiln_functions::bounded::size_text(u128::from(b));
                        refused = Some(format!(
                            "a constant of {} would be copied into every row of a batch (up to {copies} rows), more than the {} a value may take here (--memory, [query] memory)",
                            size(bytes),
                            size(max_bytes)
                        ));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if refused.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    refused.map_or(Ok(()), |m| Err(KilnError::Query(m)))
}

/// Refuses a query (its optimized `plan`) that reads a protected column: one a product marks `sensitive`, or a
/// column of a source (opted in by `[query] sources`) or product whose values some product
/// hashes with `kiln_pii_hash` (its raw values are what the hash hides), and where those
/// values come from, through the products' lineage. "Reads" is what
/// the optimized plan's scans take from the table, for output or filters: `count(*)`
/// reads no column, `WHERE c_phone = '…'` reads `c_phone`. A view's `__late` rows carry
/// its streams' protected columns, and a `__rejected` dataset's `raw` text those of its
/// source.
fn refuse_protected_columns(session: &Session, plan: &datafusion::logical_expr::LogicalPlan) -> Result<(), KilnError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use std::collections::{BTreeMap, BTreeSet};
    let mut protected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut lineage: BTreeMap<&str, &[kiln_artifact::ColumnLineage]> = BTreeMap::new();
    let mut hashed_by = Vec::new();
    for node in &session.nodes {
        let (name, sensitive, hashed, columns) = match (&node.compiled, &node.cached) {
            (Some(c), _) => (&c.name, &c.sensitive, &c.hashed, &c.lineage),
            (None, Some(c)) => (&c.product, &c.sensitive, &c.hashed, &c.lineage),
            (None, None) => continue,
        };
        lineage.insert(name.as_str(), columns.as_slice());
        for column in sensitive {
            let why = format!("`{name}` marks it sensitive");
            protected.entry(name.clone()).or_default().insert(column.clone(), why);
        }
        hashed_by.extend(hashed.iter().map(|base| (base.clone(), name.clone())));
    }
    // What a product hashes is protected where it comes from too: a product column's
    // values come from its lineage's value columns, down to the sources.
    let mut work: Vec<(kiln_artifact::BaseColumn, String)> = hashed_by;
    while let Some((base, by)) = work.pop() {
        let columns = protected.entry(base.table.clone()).or_default();
        if columns.contains_key(&base.column) {
            continue;
        }
        columns.insert(base.column.clone(), format!("`{by}` publishes it only through kiln_pii_hash"));
        if let Some(lineage) = lineage.get(base.table.as_str())
            && let Some(column) = lineage.iter().find(|l| l.column == base.column)
        {
            work.extend(column.value.iter().map(|b| (b.clone(), by.clone())));
        }
    }
    // A view's late events are its streams' records, with their columns' protection.
    for (view, streams) in late_of(session) {
        let inherited: BTreeMap<String, String> =
            streams.iter().filter_map(|s| protected.get(*s)).flat_map(|c| c.clone()).collect();
        if !inherited.is_empty() {
            protected.entry(format!("{view}__late")).or_default().extend(inherited);
        }
    }
    // A source's rejected records keep its raw text (`raw`), protected values and all.
    let raw: Vec<(String, String)> = protected
        .iter()
        .filter_map(|(table, columns)| columns.keys().next().map(|c| (table.clone(), c.clone())))
        .collect();
    for (table, column) in raw {
        let why = format!("it holds `{table}`'s records as read, with the protected column `{column}`");
        protected.entry(format!("{table}__rejected")).or_default().insert("raw".into(), why);
    }
    if protected.is_empty() {
        return Ok(());
    }
    let mut refused = None;
    let _ = plan.apply_with_subqueries(|node| {
        let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node else { return Ok(TreeNodeRecursion::Continue) };
        let table = scan.table_name.table();
        let Some(columns) = protected.get(table) else { return Ok(TreeNodeRecursion::Continue) };
        let schema = scan.source.schema();
        let mut read: BTreeSet<String> = match &scan.projection {
            Some(indices) => indices.iter().filter_map(|&i| schema.fields().get(i)).map(|f| f.name().clone()).collect(),
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        read.extend(scan.filters.iter().flat_map(|f| f.column_refs()).map(|c| c.name.clone()));
        if let Some((column, why)) = columns.iter().find(|(c, _)| read.contains(*c)) {
            refused = Some(format!(
                "column `{column}` of `{table}` is not readable by kiln query: {why} (select other columns, or query the published product)"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match refused {
        Some(message) => Err(KilnError::Query(message)),
        None => Ok(()),
    }
}

/// What `kiln query` may read: every registered table but the sources and streams that
/// `[query] sources` does not list, and their `__rejected` datasets (raw input too).
fn readable_tables(session: &Session, limits: &QueryLimits) -> Result<std::collections::BTreeSet<String>, KilnError> {
    use kiln_control::dag::NodeKind;
    let sources: std::collections::BTreeSet<&str> = session
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Source | NodeKind::Stream))
        .map(|n| n.name.as_str())
        .collect();
    if let Some(unknown) = limits.sources.iter().find(|s| !sources.contains(s.as_str())) {
        return Err(KilnError::Query(format!(
            "kiln.toml [query] sources: `{unknown}` is not a source or stream of this project"
        )));
    }
    let denied: Vec<&str> = sources.into_iter().filter(|s| !limits.sources.iter().any(|l| l == s)).collect();
    // A view's late events (`<view>__late`) are raw records of the streams it reads.
    let late: Vec<String> = late_of(session)
        .filter(|(_, streams)| streams.iter().any(|s| denied.contains(s)))
        .map(|(view, _)| format!("{view}__late"))
        .collect();
    let raw = |table: &str| {
        late.iter().any(|l| l == table)
            || denied.iter().any(|d| table == *d || table.strip_suffix("__rejected") == Some(*d))
    };
    Ok(session.substrate.tables().into_iter().filter(|t| !raw(t)).collect())
}

/// Each materialized view with the streams it reads: its `<view>__late` dataset holds
/// their raw records.
fn late_of(session: &Session) -> impl Iterator<Item = (&str, Vec<&str>)> {
    use kiln_control::dag::NodeKind;
    let nodes = &session.graph.nodes;
    nodes.iter().filter(|n| n.kind == NodeKind::View).map(move |view| {
        let streams = view.deps.iter().filter_map(|&d| nodes.get(d)).filter(|d| d.kind == NodeKind::Stream);
        (view.name.as_str(), streams.map(|s| s.name.as_str()).collect())
    })
}

/// `batch` with its nested columns (lists, structs, maps), which CSV has no cells for, as
/// their display text: `[1, 2]`, `{a: 1}`, as the table format shows them.
fn nested_as_text(batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if !batch.schema().fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
            continue;
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        let mut text = StringBuilder::new();
        for row in 0..column.len() {
            if column.is_null(row) {
                text.append_null();
            } else {
                text.append_value(formatter.value(row).to_string());
            }
        }
        fields.push(Field::new(field.name(), datafusion::arrow::datatypes::DataType::Utf8, true));
        columns.push(Arc::new(text.finish()));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// `stream`, failing once it has yielded more than `max` rows (`kiln query --max-rows`):
/// the query stops there instead of reading, or holding, a result without bound.
pub fn row_capped(stream: SendableRecordBatchStream, max: u64) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let mut seen = 0u64;
    let capped = stream.map(move |batch| {
        let batch = batch?;
        seen += batch.num_rows() as u64;
        if seen > max {
            return Err(datafusion::error::DataFusionError::ResourcesExhausted(format!(
                "the result has more than {max} rows (--max-rows {max})"
            )));
        }
        Ok(batch)
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, capped))
}

/// A writer that remembers the kind of its first I/O error, and refuses to write past
/// `max` bytes in all.
struct Tracked<'a> {
    inner: &'a mut dyn Write,
    failed: Option<std::io::ErrorKind>,
    written: u64,
    max: Option<u64>,
    /// Whether a write was refused for passing `max`.
    over: bool,
}

impl Write for Tracked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.max.is_some_and(|max| self.written + buf.len() as u64 > max) {
            self.over = true;
            self.failed.get_or_insert(std::io::ErrorKind::FileTooLarge);
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "the result is over its byte limit"));
        }
        let n = self.inner.write(buf).inspect_err(|e| {
            self.failed.get_or_insert(e.kind());
        })?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            self.failed.get_or_insert(e.kind());
        })
    }
}

/// Writes a query result to `out` in `format`, failing (nothing written past it) before
/// the output would pass `max_bytes`.
pub async fn write_result(
    schema: &SchemaRef,
    mut stream: SendableRecordBatchStream,
    format: QueryFormat,
    out: &mut dyn Write,
    max_bytes: Option<u64>,
) -> Result<u64, KilnError> {
    let out = &mut Tracked { inner: out, failed: None, written: 0, max: max_bytes, over: false };
    let over = |max: Option<u64>| {
        KilnError::Query(format!(
            "the result is larger than {} bytes (--max-bytes, [query] max_bytes in kiln.toml); stopped",
            max.unwrap_or(0)
        ))
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::FileTooLarge if max_bytes.is_some() => over(max_bytes),
        _ => KilnError::Io { context: "cannot write the result".into(), source: e },
    };
    // Arrow's writers turn an I/O error into text; the writer remembers its kind, so a
    // closed pipe stays an I/O error (which the CLI ends quietly on), not a rendering bug.
    let arrow = |e: datafusion::arrow::error::ArrowError, failed: Option<std::io::ErrorKind>| match failed {
        Some(std::io::ErrorKind::FileTooLarge) if max_bytes.is_some() => over(max_bytes),
        Some(kind) => KilnError::Io {
            context: "cannot write the result".into(),
            source: std::io::Error::new(kind, e.to_string()),
        },
        None => KilnError::Internal(format!("cannot render the result: {e}")),
    };
    let mut rows = 0u64;
    match format {
        QueryFormat::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(exec_error("query"))?;
                rows += batch.num_rows() as u64;
                batches.push(batch);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(Arc::clone(schema)));
            }
            let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| arrow(e, None))?;
            writeln!(out, "{table}").map_err(io)?;
        }
        // Row formats write each batch as it comes (and flush it): a query that follows a
        // stream shows its rows as they arrive.
        QueryFormat::Csv => {
            let mut header = true;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(exec_error("query"))?;
                if batch.num_rows() == 0 {
                    continue;
                }
                let batch =
                    nested_as_text(&batch).map_err(|e| KilnError::Query(format!("cannot render the result: {e}")))?;
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(header).build(&mut *out);
                header = false;
                rows += batch.num_rows() as u64;
                let written = writer.write(&batch);
                drop(writer);
                written.map_err(|e| arrow(e, out.failed))?;
                out.flush().map_err(io)?;
            }
        }
        QueryFormat::Json => {
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(exec_error("query"))?;
                rows += batch.num_rows() as u64;
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
                let written = writer.write(&batch).and_then(|()| writer.finish());
                drop(writer);
                written.map_err(|e| arrow(e, out.failed))?;
                out.flush().map_err(io)?;
            }
        }
    }
    Ok(rows)
}

/// Collects a query result (tests and library users; the CLI streams), under the
/// project's memory pool limit.
pub async fn query_batches(dir: &Path, sql: &str) -> Result<Vec<RecordBatch>, KilnError> {
    let limits = query_limits(dir, &QueryOverrides::default())?;
    let (_, stream) = query(dir, sql, &BuildOptions::default(), &limits).await?;
    datafusion::physical_plan::common::collect(stream).await.map_err(exec_error("query"))
}

/// `kiln lineage PRODUCT[.COLUMN]`: the column lineage of a product (one column of it when
/// `target` names one). Compiles the project; reads no data.
pub async fn lineage(dir: &Path, target: &str, options: &BuildOptions) -> Result<Lineage, KilnError> {
    let mut session = Session::open(dir, options, Need::Plans, &Quiet).await?;
    // `a.b` is product a, column b (product names contain no dots).
    let (name, column) = match target.split_once('.') {
        Some((p, c)) => (p, Some(c)),
        None => (target, None),
    };
    let i = session.product_index(name)?;
    let product = session.compiled_product(i).await?;
    let mut columns = product.lineage.clone();
    if let Some(column) = column {
        columns.retain(|c| c.column == column);
        if columns.is_empty() {
            let known: Vec<&str> = product.lineage.iter().map(|c| c.column.as_str()).collect();
            return Err(KilnError::Usage(format!(
                "product `{name}` has no column `{column}` (columns: {})",
                known.join(", ")
            )));
        }
    }
    Ok(Lineage { format_version: REPORT_FORMAT_VERSION, product: name.to_owned(), columns })
}

/// `kiln functions --json`: every builtin function with its documentation.
pub fn catalog() -> FunctionCatalog {
    let registry = kiln_functions::Registry::builtin(kiln_functions::Secrets::default());
    let functions = registry
        .specs()
        .map(|s| FunctionEntry {
            id: s.id.to_owned(),
            name: s.name.to_owned(),
            kind: s.kind.name().to_owned(),
            args: s
                .args
                .iter()
                .map(|a| FunctionArg { name: a.name.to_owned(), types: a.types.to_owned(), literal: a.literal })
                .collect(),
            variadic: s.variadic,
            returns: s.returns.to_owned(),
            volatility: s.volatility.to_owned(),
            deterministic: s.deterministic,
            null_semantics: s.null_semantics.to_owned(),
            optimizer_transparent: s.optimizer_transparent,
            implementation_version: s.implementation_version,
            doc: s.doc.to_owned(),
            example: s.example.to_owned(),
        })
        .collect();
    FunctionCatalog { format_version: kiln_artifact::catalog::CATALOG_FORMAT_VERSION, functions }
}

/// `kiln ls`: every definition of the project (the selected ones with `options.select`
/// / `exclude`) with its kind, place, tags and, for products and views, its committed
/// build. Parses (or reads the parse cache) and reads each table's latest commit; compiles
/// nothing.
pub async fn ls(dir: &Path, options: &BuildOptions) -> Result<kiln_artifact::ListReport, KilnError> {
    use futures::TryStreamExt;
    use kiln_control::NodeKind;
    let project = kiln_control::Project::load(dir)?;
    let warehouse = kiln_data::Warehouse::open(&project.config.storage.warehouse, &project.root)?
        .open_env(options.env(), false)
        .await?;
    let graph = &project.graph;
    let selected = graph.select_excluding(options.select.as_deref(), options.exclude.as_deref())?;
    let reads = selected.iter().map(|&i| {
        let (warehouse, node) = (warehouse.clone(), &graph.nodes[i]);
        async move {
            let tabled = matches!(node.kind, NodeKind::Product | NodeKind::View);
            let current = if tabled { warehouse.current(&node.name).await? } else { None };
            Ok::<_, KilnError>((i, tabled, current))
        }
    });
    let found: Vec<_> = futures::stream::iter(reads).buffered(32).try_collect().await?;
    let nodes = found
        .into_iter()
        .map(|(i, tabled, current)| {
            let node = &graph.nodes[i];
            let status = match (&node.broken, tabled, &current) {
                (Some(_), _, _) => "broken",
                (None, true, Some(_)) => "committed",
                (None, true, None) => "never_built",
                (None, false, _) => "defined",
            };
            kiln_artifact::ListedNode {
                name: node.name.clone(),
                kind: node.kind.as_str().to_owned(),
                at: format!("{}:{}", node.path, node.at.line),
                tags: node.tags.clone(),
                target: node.target.map(|t| graph.nodes[t].name.clone()),
                status: status.to_owned(),
                build_id: current.as_ref().map(|m| m.build_id.clone()),
                version: current.as_ref().and_then(|m| m.version),
                rows: current.as_ref().map(|m| m.totals.rows_written),
                error: node.broken.clone(),
            }
        })
        .collect();
    Ok(kiln_artifact::ListReport {
        format_version: REPORT_FORMAT_VERSION,
        project: project.config.project.name.clone(),
        nodes,
    })
}
