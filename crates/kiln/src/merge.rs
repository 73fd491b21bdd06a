//! Products merged by key (`incremental = 'by_unique_key'`) in the engine.
//!
//! ```sql
//! CREATE PRODUCT customers_current
//! WITH (incremental = 'by_unique_key', unique_key = 'id')
//! AS SELECT id, name, city, updated_at FROM customer_changes;
//! ```
//!
//! The product reads one file source, its *change input* (other inputs are read whole).
//! Each committed build records the input's files it has merged (path, size, modification
//! time). A build runs the product's query over the files not merged yet only, and merges
//! its rows into the committed ones: a new row replaces the committed row with the same
//! key (every column), the others are inserted; committed rows whose key is not among the
//! new ones stay. Delta's MERGE (update matched, insert not matched), computed as a plan:
//!
//! 1. the new rows are written as files of the build (the query over the new files);
//! 2. their keys are checked: no NULL in a key column, no key twice (either fails the
//!    build, naming the key: which of two rows wins would be arbitrary);
//! 3. the committed files that may hold one of those keys (all, unless the first key
//!    column's file statistics rule a file out: integer and date keys) are rewritten
//!    without the rows whose key is new (a left anti join against the new files);
//! 4. one commit removes the rewritten files and adds the new ones, with the input's
//!    files now as the merge state. A killed build commits nothing.
//!
//! delta-rs has a MERGE, but it writes the files itself with its own writer and commits its
//! own transaction: Kiln's files would lose their deterministic names, layout, statistics
//! and manifest, and its single commit point with the build record; it also needs
//! deltalake's `datafusion` feature. Hence these few plans on Kiln's writer.
//!
//! The product is computed whole instead (the first build, `--restate`) when what the
//! committed rows were computed by changed (the query, functions, settings, columns,
//! key), when another input changed, and when a merged file was replaced or removed: a
//! merge cannot take back the rows a file brought. A whole build runs the query over all
//! the files, so it equals the merges when the query keeps one row per key in a way later
//! files win (e.g. `QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated_at DESC)
//! = 1` with `updated_at` growing as files arrive): the user's promise, as a written
//! interval filter is.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::ident;
use kiln_artifact::intervals::InputFile;
use kiln_artifact::merge::{MergePlan, MergeState};
use kiln_artifact::{BuildFingerprints, FileEntry, Manifest};
use kiln_control::dag::NodeKind;
use kiln_control::incremental::MergeKey;
use kiln_control::{CompiledProduct, Substrate};
use kiln_data::{BuildIds, FileSource, ProductTable, WriteProgress};

use crate::KilnError;
use crate::events::{Event, Observer};
use crate::execute::{Stamp, execute_plan, publish_source_rejects};
use crate::record::{Built, built};
use crate::session::Session;

/// What one build of a product merged by key does.
pub(crate) struct MergeWork {
    pub(crate) plan: MergePlan,
    source: FileSource,
    /// The input's files not merged yet; `None`: the product is computed whole.
    new: Option<Vec<String>>,
    /// The input's files now (the state the build commits).
    files: Vec<InputFile>,
}

fn refuse(product: &str, message: String) -> KilnError {
    KilnError::Product { product: product.to_owned(), message }
}

impl Session {
    /// The change input of product `i` merged by `key`: its one file source.
    fn change_input(&self, i: usize, product: &str) -> Result<(String, FileSource), KilnError> {
        let mut sources = Vec::new();
        for &d in &self.graph.nodes[i].deps {
            let node = &self.graph.nodes[d];
            if matches!(node.kind, NodeKind::Source | NodeKind::Stream) {
                sources.push((node.name.clone(), self.nodes[d].files.clone()));
            }
        }
        match sources.as_slice() {
            [(name, Some(files))] => Ok((name.clone(), files.clone())),
            [(name, None)] => Err(refuse(
                product,
                format!(
                    "incremental = 'by_unique_key' merges the rows of a file source's new files; `{name}` has no files"
                ),
            )),
            [] => Err(refuse(
                product,
                "incremental = 'by_unique_key' merges the rows of one file source's new files, and it reads no source"
                    .into(),
            )),
            many => Err(refuse(
                product,
                format!(
                    "incremental = 'by_unique_key' merges the rows of one file source's new files; it reads {} (read the others through products)",
                    many.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// What a build of product `i` (merged by key) with fingerprints `fps` does over its
    /// committed build `current` (see the module docs).
    pub(crate) async fn merge_work(
        &self,
        i: usize,
        fps: &BuildFingerprints,
        current: Option<&Manifest>,
    ) -> Result<Option<MergeWork>, KilnError> {
        let Some(product) = &self.nodes[i].compiled else { return Ok(None) };
        let Some(key) = &product.merge else { return Ok(None) };
        let (input, source) = self.change_input(i, &product.name)?;
        let files: Vec<InputFile> = source
            .files()?
            .into_iter()
            .map(|f| InputFile { version: format!("{}:{}", f.size, f.mtime_ns), path: f.rel, first: None, last: None })
            .collect();
        let state = current.and_then(|m| m.merge.as_ref());
        let old = current.and_then(|m| m.fingerprints.as_ref());
        let restate = self.intervals.restate && self.selected.contains(&i);
        let rebuild = match (current, state, old) {
            (None, _, _) => Some("the first build".to_owned()),
            _ if restate => Some("--restate".to_owned()),
            (Some(_), None, _) | (_, _, None) => {
                Some("the committed build was not merged by key (it is computed whole once)".to_owned())
            }
            (_, Some(s), _) if s.unique_key != key.columns || s.input != input => {
                Some(format!("the committed build was merged by ({}) of `{}`", s.unique_key.join(", "), s.input))
            }
            (_, _, Some(o)) if o.schema_fp != fps.schema_fp => Some("the product's columns or layout changed".into()),
            (_, _, Some(o)) if o.query_fp != fps.query_fp || o.func_fp != fps.func_fp => {
                Some("the query changed".to_owned())
            }
            (_, _, Some(o)) if o.runtime_fp != fps.runtime_fp => Some("the semantic settings changed".to_owned()),
            (_, Some(s), Some(o)) => {
                let other = fps
                    .upstream
                    .iter()
                    .find(|(name, version)| name.as_str() != input && o.upstream.get(name.as_str()) != Some(*version));
                let gone = s.files.iter().find(|f| !files.iter().any(|n| n.path == f.path && n.version == f.version));
                match (other, gone) {
                    (Some((name, _)), _) => Some(format!("input `{name}` changed")),
                    (None, Some(f)) => {
                        let what = if files.iter().any(|n| n.path == f.path) { "replaced" } else { "removed" };
                        Some(format!(
                            "file {} of `{input}` was {what}: a merge cannot take back the rows it brought",
                            f.path
                        ))
                    }
                    (None, None) => None,
                }
            }
        };
        let new = match (&rebuild, state) {
            (None, Some(s)) => Some(
                files
                    .iter()
                    .filter(|f| !s.files.iter().any(|o| o.path == f.path))
                    .map(|f| f.path.clone())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        if new.is_some() {
            // Only some files are read: refused (with its reason) for sources that cannot.
            source.files_table(&[])?;
        }
        let plan = MergePlan {
            unique_key: key.columns.clone(),
            input,
            files: new.as_ref().map_or(files.len(), Vec::len) as u64,
            rebuild,
            updated: None,
            inserted: None,
            rewritten_files: None,
        };
        Ok(Some(MergeWork { plan, source, new, files }))
    }
}

/// `plan` with its scans of `input` reading `table` instead.
fn reading(
    product: &str,
    plan: &LogicalPlan,
    input: &str,
    table: Arc<dyn datafusion::datasource::TableProvider>,
) -> Result<LogicalPlan, KilnError> {
    let source = provider_as_source(table);
    let swapped = plan
        .clone()
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(mut scan) if scan.table_name.table() == input => {
                scan.source = Arc::clone(&source);
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map_err(exec(product, "reading the new files"))?;
    if !swapped.transformed {
        return Err(KilnError::Internal(format!("product `{product}`: its plan does not scan `{input}`")));
    }
    Ok(swapped.data)
}

fn exec(product: &str, what: &str) -> impl Fn(datafusion::error::DataFusionError) -> KilnError {
    let context = format!("product `{product}`: {what}");
    move |e| KilnError::Data(kiln_data::DataError::Execution { context: context.clone(), source: e })
}

/// A table over `files` of `product`'s data (not committed: the files of this build).
fn files_table(
    substrate: &Substrate,
    product: &CompiledProduct,
    template: &Manifest,
    files: Vec<FileEntry>,
) -> Result<Arc<ProductTable>, KilnError> {
    let table = Arc::new(ProductTable::new(product.name.clone(), Arc::clone(&product.schema)));
    let mut manifest = template.clone();
    manifest.files = files;
    table.bind(substrate.warehouse(), &manifest)?;
    Ok(table)
}

/// Fails when a key column of the new rows is NULL, or a key occurs twice (see the
/// module docs). Each query returns at most one row: the only results collected here.
async fn check_keys(
    substrate: &Substrate,
    product: &CompiledProduct,
    key: &MergeKey,
    rows: Arc<ProductTable>,
) -> Result<(), KilnError> {
    let ctx = substrate.context();
    let fail = exec(&product.name, "checking unique_key");
    let columns: Vec<Expr> = key.columns.iter().map(ident).collect();
    let shown = |batches: &[datafusion::arrow::array::RecordBatch]| -> Option<String> {
        let batch = batches.iter().find(|b| b.num_rows() > 0)?;
        let values: Vec<String> = key
            .columns
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let v = ScalarValue::try_from_array(batch.column(k), 0).map_or_else(|_| "?".into(), |v| v.to_string());
                format!("{c} = {v}")
            })
            .collect();
        Some(values.join(", "))
    };
    let null = columns.iter().cloned().map(Expr::is_null).reduce(Expr::or).unwrap_or(lit(false));
    let found = ctx
        .read_table(Arc::clone(&rows) as _)
        .and_then(|df| df.filter(null))
        .and_then(|df| df.select(columns.clone()))
        .and_then(|df| df.limit(0, Some(1)))
        .map_err(&fail)?
        .collect()
        .await
        .map_err(&fail)?;
    if let Some(row) = shown(&found) {
        return Err(refuse(
            &product.name,
            format!(
                "a row has a NULL in its unique_key ({row}): it cannot be merged (nothing was committed); give every row a key or filter them out"
            ),
        ));
    }
    let found = ctx
        .read_table(rows as _)
        .and_then(|df| df.aggregate(columns.clone(), vec![count(lit(1)).alias("__kiln_rows")]))
        .and_then(|df| df.filter(ident("__kiln_rows").gt(lit(1i64))))
        .and_then(|df| df.limit(0, Some(1)))
        .map_err(&fail)?
        .collect()
        .await
        .map_err(&fail)?;
    if let Some(row) = shown(&found) {
        let n = found
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| ScalarValue::try_from_array(b.column(key.columns.len()), 0).ok())
            .map_or_else(|| "several".into(), |v| v.to_string());
        return Err(refuse(
            &product.name,
            format!(
                "{n} rows have the unique_key {row}: which one to keep would be arbitrary (nothing was committed); keep one row per key in the query, e.g. QUALIFY row_number() OVER (PARTITION BY {} ORDER BY <newest first>) = 1",
                key.columns.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Whether file statistics can rule out a value of this type (exact min/max that parse
/// back: not strings, whose statistics may be truncated).
fn prunable(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Date32 | DataType::Date64)
}

/// The range `[min, max]` of `column` in `file` (its partition value, or its statistics).
fn range_of(
    file: &FileEntry,
    column: &str,
    partition: Option<usize>,
    t: &DataType,
) -> Option<(ScalarValue, ScalarValue)> {
    let parse = |s: &str| ScalarValue::try_from_string(s.to_owned(), t).ok();
    if let Some(k) = partition {
        let v = parse(file.partition.get(k)?.as_deref()?)?;
        return Some((v.clone(), v));
    }
    let stats = file.columns.get(column)?;
    Some((parse(stats.min.as_deref()?)?, parse(stats.max.as_deref()?)?))
}

/// The committed files that may hold a key of the new files `new` (see the module docs).
fn affected(product: &CompiledProduct, key: &MergeKey, previous: &Manifest, new: &[FileEntry]) -> BTreeSet<String> {
    let committed = previous.files.iter().filter(|f| f.rows > 0);
    let column = &key.columns[0];
    let partition = previous.partition_by.iter().position(|c| c == column);
    let t = product.schema.field_with_name(column).map(|f| f.data_type().clone()).ok();
    let ranges: Option<Vec<(ScalarValue, ScalarValue)>> = t
        .as_ref()
        .filter(|t| prunable(t))
        .and_then(|t| new.iter().filter(|f| f.rows > 0).map(|f| range_of(f, column, partition, t)).collect());
    let (Some(t), Some(ranges)) = (t, ranges) else { return committed.map(|f| f.path.clone()).collect() };
    committed
        .filter(|f| match range_of(f, column, partition, &t) {
            None => true,
            Some((lo, hi)) => ranges.iter().any(|(a, b)| a <= &hi && &lo <= b),
        })
        .map(|f| f.path.clone())
        .collect()
}

/// Builds product `product` merged by key: `work` (see the module docs), one commit.
pub(crate) async fn run_merge(
    substrate: &Substrate,
    product: &CompiledProduct,
    checks: &[kiln_control::CompiledCheck],
    stamp: Stamp<'_>,
    run_id: &str,
    observer: &dyn Observer,
    work: MergeWork,
) -> Result<(Built, MergePlan), KilnError> {
    let Some(key) = &product.merge else {
        return Err(KilnError::Internal(format!("product `{}` is not merged by key", product.name)));
    };
    let warehouse = substrate.warehouse();
    let previous = warehouse.current_or_convert(&product.name, Some(&product.schema)).await?;
    let progress = Arc::new(WriteProgress::default());
    observer.event(Event::ProductStarted { product: product.name.clone(), progress: Arc::clone(&progress) });
    let t = Instant::now();
    let mut report = work.plan.clone();
    let plan = match &work.new {
        Some(rels) => reading(&product.name, &product.plan, &work.plan.input, work.source.files_table(rels)?)?,
        None => product.plan.clone(),
    };
    let ids = |batch| BuildIds { build_id: stamp.build_id.to_owned(), run_id: run_id.to_owned(), batch };
    let (mut manifest, physical, mut phases) =
        execute_plan(substrate, product, &plan, ids(Some(0)), Arc::clone(&progress)).await?;
    for found in kiln_data::checked::collect_rejects(&physical) {
        publish_source_rejects(substrate, &found, run_id).await?;
        let n = found.rejects.len() as u64;
        manifest.totals.rows_rejected += n;
        manifest.totals.rows_read += n;
    }
    let new_rows = manifest.totals.rows_written;
    check_keys(substrate, product, key, files_table(substrate, product, &manifest, manifest.files.clone())?).await?;
    let mut merged = match (&work.new, &previous) {
        (Some(_), Some(previous)) => {
            let replaced =
                if new_rows == 0 { BTreeSet::new() } else { affected(product, key, previous, &manifest.files) };
            let rewritten = if replaced.is_empty() {
                None
            } else {
                let files: Vec<FileEntry> =
                    previous.files.iter().filter(|f| replaced.contains(&f.path)).cloned().collect();
                let committed = files_table(substrate, product, previous, files)?;
                let new = files_table(substrate, product, &manifest, manifest.files.clone())?;
                let aliases: Vec<String> = (0..key.columns.len()).map(|k| format!("__kiln_key_{k}")).collect();
                let fail = exec(&product.name, "merging by unique_key");
                let keys = LogicalPlanBuilder::scan("__kiln_new", provider_as_source(new as _), None)
                    .and_then(|b| b.project(key.columns.iter().zip(&aliases).map(|(c, a)| ident(c).alias(a))))
                    .and_then(|b| b.build())
                    .map_err(&fail)?;
                let kept = LogicalPlanBuilder::scan("__kiln_committed", provider_as_source(committed as _), None)
                    .and_then(|b| {
                        b.join(
                            keys,
                            JoinType::LeftAnti,
                            (
                                key.columns.iter().map(datafusion::common::Column::new_unqualified).collect(),
                                aliases.iter().map(datafusion::common::Column::new_unqualified).collect(),
                            ),
                            None,
                        )
                    })
                    .and_then(|b| b.build())
                    .map_err(&fail)?;
                let kept = substrate.optimize(&kept)?;
                let (kept, _, _) = execute_plan(substrate, product, &kept, ids(Some(1)), Arc::clone(&progress)).await?;
                Some(kept)
            };
            let before: u64 = previous.files.iter().filter(|f| replaced.contains(&f.path)).map(|f| f.rows).sum();
            let updated = before - rewritten.as_ref().map_or(before, |m| m.totals.rows_written).min(before);
            report.updated = Some(updated);
            report.inserted = Some(new_rows - updated.min(new_rows));
            report.rewritten_files = Some(replaced.len() as u64);
            kiln_data::merge_rewriting(manifest, rewritten, previous, |f| replaced.contains(&f.path))?
        }
        _ => {
            report.updated = Some(0);
            report.inserted = Some(new_rows);
            report.rewritten_files = Some(0);
            manifest
        }
    };
    merged.merge =
        Some(MergeState { unique_key: key.columns.clone(), input: work.plan.input.clone(), files: work.files });
    merged.fingerprints = Some(stamp.fps.clone());
    merged.content = stamp.content.cloned();
    phases.insert("execute_write".to_owned(), t.elapsed().as_secs_f64());
    let mut check_runs = Vec::new();
    if !checks.is_empty() {
        progress.set_phase(kiln_data::writer::PHASE_CHECKS);
        let tc = Instant::now();
        let results =
            crate::checks::run_checks(substrate, &product.name, &product.schema, checks, Some(&merged)).await?;
        crate::checks::publish_failures(substrate, &product.name, &results, ids(None), product.layout.files.max_rows)
            .await?;
        phases.insert("checks".to_owned(), tc.elapsed().as_secs_f64());
        if results.blocks() {
            return Err(KilnError::Audit { product: product.name.clone(), runs: results.runs });
        }
        check_runs = results.runs;
    }
    progress.set_phase(kiln_data::writer::PHASE_COMMIT);
    let tc = Instant::now();
    kiln_data::failpoint_step("merge_commit");
    let committed = warehouse.commit(&merged, previous.as_ref(), &product.schema).await?;
    if let Some(table) = substrate.product_table(&product.name) {
        table.bind(warehouse, &committed)?;
    }
    phases.insert("commit".to_owned(), tc.elapsed().as_secs_f64());
    let mut built = built(committed, &physical, phases, substrate.root());
    built.checks = check_runs;
    Ok((built, report))
}
