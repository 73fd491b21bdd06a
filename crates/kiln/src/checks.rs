//! Write–audit–publish: a product's checks (its constraints and the audits `ON` it,
//! compiled by kiln_control::compiler::checks) run on its staged build after its files
//! are written and before its commit; an error-level failure leaves the build
//! uncommitted. The failing rows (up to [`FAILURES_KEPT`] per check, as JSON objects)
//! are committed to `<product>__failures`, replaced each time the product's checks run.
//!
//! A fresh product's checks run on its committed build when their definitions changed
//! since they last passed on it ([`ChecksRecord`] in the artifact store), so editing an
//! audit re-runs it without changing the product's build id.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::TableProvider;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use kiln_artifact::plan::sha256_hex;
use kiln_artifact::{CheckRun, CheckStatus, Manifest};
use kiln_control::compiler::checks::{FAILURES_KEPT, rebind_scans};
use kiln_control::dialect::Statement;
use kiln_control::{CompiledCheck, NodeKind, Substrate};
use kiln_data::{BuildIds, ProductTable, WriteSpec, write_dataset};

use crate::KilnError;
use crate::session::{Session, failures_name, failures_schema};

/// What running a product's checks found.
#[derive(Debug, Default)]
pub(crate) struct CheckResults {
    pub(crate) runs: Vec<CheckRun>,
    /// The kept failing rows: (check, kind, severity, status, row as JSON).
    kept: Vec<[String; 5]>,
}

impl CheckResults {
    /// Whether an error-level check failed (the build must not commit).
    pub(crate) fn blocks(&self) -> bool {
        self.runs.iter().any(|r| r.status == CheckStatus::Error)
    }
}

impl Session {
    /// The compiled checks of product `i`: its constraints, then its audits by name. A
    /// check that does not compile is an error (a build that cannot be audited is not
    /// published).
    pub(crate) async fn product_checks(&mut self, i: usize) -> Result<Vec<CompiledCheck>, KilnError> {
        let graph = Arc::clone(&self.graph);
        let node = &graph.nodes[i];
        let audits: Vec<usize> = graph.checks_of(i).filter(|&a| graph.nodes[a].kind == NodeKind::Audit).collect();
        let (fi, si) = node.def;
        let def = match self.project.files[fi].statement(si)? {
            Statement::Product(def) => def.clone(),
            _ => return Ok(Vec::new()),
        };
        if def.constraints.is_empty() && audits.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_registered(i).await?;
        // Referenced tables must be registered to plan against (cached products are not).
        let mut needed: BTreeSet<usize> = BTreeSet::new();
        for c in &def.constraints {
            if let kiln_control::dialect::ConstraintKind::References { table, .. } = &c.kind
                && let Some(t) = graph.get(table)
            {
                needed.insert(t);
            }
        }
        for &a in &audits {
            needed.extend(graph.nodes[a].deps.iter().copied());
        }
        for d in needed {
            self.ensure_registered(d).await?;
        }
        let mut checks = self.substrate.compile_constraints(&def).await?;
        let mut audits: Vec<usize> = audits;
        audits.sort_by(|a, b| graph.nodes[*a].name.cmp(&graph.nodes[*b].name));
        for a in audits {
            if let Some(broken) = &graph.nodes[a].broken {
                return Err(KilnError::Product { product: node.name.clone(), message: broken.clone() });
            }
            let (fi, si) = graph.nodes[a].def;
            let Statement::Audit(audit) = self.project.files[fi].statement(si)? else { continue };
            let audit = audit.clone();
            checks.push(self.substrate.compile_audit(&audit).await?);
        }
        Ok(checks)
    }

    /// A fingerprint of every check definition of product `i` (its constraints and its
    /// audits), from the statements' summaries; empty when it has none.
    pub(crate) fn checks_fp(&self, i: usize) -> String {
        let graph = &self.graph;
        let summary = |n: usize| {
            let (fi, si) = graph.nodes[n].def;
            self.project.files[fi].summaries.get(si).map(|s| s.checks_fp.clone()).unwrap_or_default()
        };
        let mut parts: Vec<String> = graph
            .checks_of(i)
            .filter(|&a| graph.nodes[a].kind == NodeKind::Audit)
            .map(|a| format!("{}={}", graph.nodes[a].name, summary(a)))
            .collect();
        let own = summary(i);
        if parts.is_empty() && own.is_empty() {
            return String::new();
        }
        parts.sort();
        parts.insert(0, own);
        sha256_hex(parts.join("\n").as_bytes())
    }

    /// The graph nodes product `i`'s checks read besides itself.
    pub(crate) fn check_reads(&self, checks: &[CompiledCheck]) -> BTreeSet<usize> {
        checks.iter().flat_map(|c| c.reads.iter()).filter_map(|t| self.graph.get(t)).collect()
    }
}

/// Runs `checks` of `product` on its `staged` build (or, with `None`, on the build its
/// table is bound to). A check that cannot run counts as an error-level failure.
pub(crate) async fn run_checks(
    substrate: &Substrate,
    product: &str,
    schema: &SchemaRef,
    checks: &[CompiledCheck],
    staged: Option<&Manifest>,
) -> Result<CheckResults, KilnError> {
    let mut tables: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    if let Some(manifest) = staged {
        let table = ProductTable::new(product, Arc::clone(schema));
        table.bind(substrate.warehouse(), manifest)?;
        tables.insert(product.to_owned(), Arc::new(table));
    }
    let mut results = CheckResults::default();
    for (k, check) in checks.iter().enumerate() {
        if k == 1 {
            kiln_data::failpoint("during_checks");
        }
        let t = Instant::now();
        let (status, failing_rows, error) = match run_one(substrate, check, &tables).await {
            Ok((n, rows)) => {
                let status = check.thresholds.status(n);
                let status_text = status.as_str().to_owned();
                for row in rows {
                    results.kept.push([
                        check.name.clone(),
                        check.kind.as_str().to_owned(),
                        check.thresholds.severity().to_owned(),
                        status_text.clone(),
                        row,
                    ]);
                }
                (status, n, None)
            }
            Err(e) => (CheckStatus::Error, 0, Some(e.to_string())),
        };
        results.runs.push(CheckRun {
            name: check.name.clone(),
            product: product.to_owned(),
            kind: check.kind.as_str().to_owned(),
            severity: check.thresholds.severity().to_owned(),
            status,
            failing_rows,
            seconds: t.elapsed().as_secs_f64(),
            error,
        });
    }
    Ok(results)
}

/// Executes one check: its failing-row count and [`FAILURES_KEPT`] of its rows as JSON
/// objects (the only rows held in memory): the first in text order, so the same rows
/// whatever the partitioning or batch sizes that delivered them.
async fn run_one(
    substrate: &Substrate,
    check: &CompiledCheck,
    tables: &HashMap<String, Arc<dyn TableProvider>>,
) -> Result<(u64, Vec<String>), KilnError> {
    let exec = |e: datafusion::error::DataFusionError| {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("check `{}`", check.name), source: e })
    };
    let plan = rebind_scans(check.plan.clone(), tables)?;
    let state = substrate.context().state();
    let plan = state.optimize(&plan).map_err(exec)?;
    let physical = substrate.physical_plan(&plan).await?;
    let mut stream = datafusion::physical_plan::execute_stream(physical, state.task_ctx()).map_err(exec)?;
    let mut failing = 0u64;
    let mut kept = std::collections::BinaryHeap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(exec)?;
        failing += batch.num_rows() as u64;
        for row in json_rows(&batch).map_err(exec)? {
            if kept.len() < FAILURES_KEPT {
                kept.push(row);
            } else if kept.peek().is_some_and(|largest| row < *largest) {
                kept.pop();
                kept.push(row);
            }
        }
    }
    Ok((failing, kept.into_sorted_vec()))
}

/// Each row of `batch` as a JSON object (NULLs written as null).
fn json_rows(batch: &RecordBatch) -> Result<Vec<String>, datafusion::error::DataFusionError> {
    use datafusion::arrow::json::WriterBuilder;
    use datafusion::arrow::json::writer::LineDelimited;
    let mut out = Vec::new();
    {
        let mut writer = WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(&mut out);
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(String::from_utf8_lossy(&out).lines().map(str::to_owned).collect())
}

/// Commits the kept failing rows to `<product>__failures` as its new version: when there
/// are any, or when the committed version still holds an earlier run's.
pub(crate) async fn publish_failures(
    substrate: &Substrate,
    product: &str,
    results: &CheckResults,
    ids: BuildIds,
    max_rows: usize,
) -> Result<(), KilnError> {
    let name = failures_name(product);
    let warehouse = substrate.warehouse();
    let base = warehouse.current_or_convert(&name, None).await?;
    if results.kept.is_empty() && base.as_ref().is_none_or(|m| m.totals.rows_written == 0) {
        return Ok(());
    }
    let schema = failures_schema();
    let columns = (0..5)
        .map(|c| Arc::new(StringArray::from_iter_values(results.kept.iter().map(|r| r[c].as_str()))) as _)
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| KilnError::Internal(format!("the failures of `{product}`: {e}")))?;
    let parquet = substrate.parquet_options();
    let spec = Arc::new(WriteSpec::derived(&name, ids, &schema, max_rows, &parquet)?);
    let stream: SendableRecordBatchStream =
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), futures::stream::iter([Ok(batch)])));
    let manifest = write_dataset(warehouse, vec![stream], spec, Arc::default()).await?;
    let manifest = warehouse.commit(&manifest, base.as_ref(), &schema).await?;
    if let Some(table) = substrate.product_table(&name) {
        table.bind(warehouse, &manifest)?;
    }
    Ok(())
}
