//! Running one product: plan it physically, execute it into a new build through the
//! dataset writer (data plane), publish the records its sources rejected into
//! `<source>__rejected` (once per version of the files), merge with the committed data per its `existing_data`, run its
//! checks on the staged build (crate::checks: an error-level failure stops here, nothing
//! committed), commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use kiln_artifact::{Action, BuildFingerprints, ContentVersions, Manifest, ProductRun};
use kiln_control::{CompiledProduct, ControlError, Substrate};
use kiln_data::{BuildIds, ExistingData, WriteProgress, WriteSpec, merge_existing, write_dataset};

use crate::KilnError;
use crate::events::{Event, Observer};
use crate::record::{Built, built};

/// The identity a build is committed with.
pub(crate) struct Stamp<'a> {
    pub(crate) build_id: &'a str,
    pub(crate) fps: &'a BuildFingerprints,
    pub(crate) content: Option<&'a ContentVersions>,
}

/// A product's line in the run summary with nothing built (yet).
pub(crate) fn product_run(name: &str, action: Action, error: Option<String>, t: Instant) -> ProductRun {
    ProductRun {
        product: name.to_owned(),
        action,
        build_id: None,
        rows: 0,
        files: 0,
        bytes: 0,
        seconds: t.elapsed().as_secs_f64(),
        error,
        internal: false,
        phases: Default::default(),
        reasons: Vec::new(),
        checks: Vec::new(),
        intervals: None,
        merge: None,
    }
}

/// Executes one compiled product into a new build, runs its `checks` on the staged build,
/// and commits it if none failed at error level (else `KilnError::Audit`).
pub(crate) async fn run_product(
    substrate: &Substrate,
    product: &CompiledProduct,
    checks: &[kiln_control::CompiledCheck],
    stamp: Stamp<'_>,
    run_id: &str,
    observer: &dyn Observer,
) -> Result<Built, KilnError> {
    let warehouse = substrate.warehouse();
    let previous = warehouse.current_or_convert(&product.name, Some(&product.schema)).await?;
    if product.layout.existing == ExistingData::Error && previous.is_some() {
        return Err(ControlError::Compile {
            at: product.at.clone(),
            product: product.name.clone(),
            message: "existing_data = 'error' and a committed build exists".into(),
        }
        .into());
    }
    let progress = Arc::new(WriteProgress::default());
    observer.event(Event::ProductStarted { product: product.name.clone(), progress: Arc::clone(&progress) });
    kiln_data::failpoint_panic(&format!("execute:{}", product.name));
    let t = Instant::now();
    let ids = BuildIds { build_id: stamp.build_id.to_owned(), run_id: run_id.to_owned(), batch: None };
    let (mut manifest, physical, mut phases) =
        execute_into(substrate, product, ids.clone(), Arc::clone(&progress)).await?;
    // Records the sources set aside (on_error = 'reject') are the sources': each is in
    // `<source>__rejected` once per version of its files, committed before the product so
    // the product's accounting never points at rejects that are not there.
    for found in kiln_data::checked::collect_rejects(&physical) {
        publish_source_rejects(substrate, &found, run_id).await?;
        let n = found.rejects.len() as u64;
        manifest.totals.rows_rejected += n;
        manifest.totals.rows_read += n;
    }
    let mut manifest = merge_existing(manifest, previous.as_ref(), product.layout.existing)?;
    phases.insert("execute_write".to_owned(), t.elapsed().as_secs_f64() - phases.get("plan").copied().unwrap_or(0.0));
    manifest.fingerprints = Some(stamp.fps.clone());
    manifest.content = stamp.content.cloned();
    let mut check_runs = Vec::new();
    if !checks.is_empty() {
        progress.set_phase(kiln_data::writer::PHASE_CHECKS);
        let t = Instant::now();
        let results =
            crate::checks::run_checks(substrate, &product.name, &product.schema, checks, Some(&manifest)).await?;
        crate::checks::publish_failures(substrate, &product.name, &results, ids.clone(), product.layout.files.max_rows)
            .await?;
        phases.insert("checks".to_owned(), t.elapsed().as_secs_f64());
        if results.blocks() {
            return Err(KilnError::Audit { product: product.name.clone(), runs: results.runs });
        }
        check_runs = results.runs;
    }
    progress.set_phase(kiln_data::writer::PHASE_COMMIT);
    let t = Instant::now();
    let mut manifest = warehouse.commit(&manifest, previous.as_ref(), &product.schema).await?;
    if kiln_data::compact::due(&manifest, &product.layout)
        && let Some(done) = compact_product(substrate, product, &manifest, run_id, None).await?
    {
        manifest = done.manifest;
    }
    if let Some(table) = substrate.product_table(&product.name) {
        table.bind(warehouse, &manifest)?;
    }
    phases.insert("commit".to_owned(), t.elapsed().as_secs_f64());
    let mut built = built(manifest, &physical, phases, substrate.root());
    built.checks = check_runs;
    Ok(built)
}

/// Plans and executes `product` and writes its output into the new build `ids` (nothing
/// is visible yet): the manifest to commit, the drained physical plan, and the `plan`
/// phase's seconds.
pub(crate) async fn execute_into(
    substrate: &Substrate,
    product: &CompiledProduct,
    ids: BuildIds,
    progress: Arc<WriteProgress>,
) -> Result<(Manifest, Arc<dyn ExecutionPlan>, BTreeMap<String, f64>), KilnError> {
    execute_plan(substrate, product, &product.plan, ids, progress).await
}

/// [`execute_into`] with `plan` for the product's (an incremental product's batch).
pub(crate) async fn execute_plan(
    substrate: &Substrate,
    product: &CompiledProduct,
    plan: &datafusion::logical_expr::LogicalPlan,
    ids: BuildIds,
    progress: Arc<WriteProgress>,
) -> Result<(Manifest, Arc<dyn ExecutionPlan>, BTreeMap<String, f64>), KilnError> {
    let exec_err = |e: datafusion::error::DataFusionError| {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("product `{}`", product.name), source: e })
    };
    let t = Instant::now();
    let physical = substrate.physical_plan(plan).await?;
    let mut phases = BTreeMap::new();
    phases.insert("plan".to_owned(), t.elapsed().as_secs_f64());
    // What the plan expects to produce, from its inputs' statistics (for progress only).
    let stats = datafusion::physical_plan::StatisticsContext::new()
        .compute(physical.as_ref(), &datafusion::physical_plan::StatisticsArgs::new());
    if let Ok(stats) = stats
        && let Some(&rows) = stats.num_rows.get_value()
    {
        progress.estimated_rows.store(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }
    progress.set_phase(WriteProgress::executing_phase(physical.as_ref()));
    let task = substrate.context().task_ctx();
    let partitions = physical.properties().output_partitioning().partition_count();
    let streams = (0..partitions)
        .map(|p| physical.execute(p, Arc::clone(&task)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(exec_err)?;
    let spec = Arc::new(write_spec(substrate, product, ids)?);
    let manifest = match write_dataset(substrate.warehouse(), streams, spec, progress).await {
        Ok(manifest) => manifest,
        Err(kiln_data::DataError::Execution { context, source }) if source.to_string().contains("Parquet error") => {
            // Name the file DataFusion's error leaves out.
            let context = match kiln_data::source::unreadable_parquet_file(&physical).await {
                Some((file, _)) => {
                    let root = std::fs::canonicalize(substrate.root()).unwrap_or_else(|_| substrate.root().to_owned());
                    let shown = file.strip_prefix(&root).unwrap_or(&file);
                    format!("{context}: reading {}", shown.display())
                }
                None => context,
            };
            return Err(kiln_data::DataError::Execution { context, source }.into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok((manifest, physical, phases))
}

/// How `product`'s rows are written into build `ids`: its layout, compiled by the
/// control plane, over the session's Parquet options.
pub(crate) fn write_spec(
    substrate: &Substrate,
    product: &CompiledProduct,
    ids: BuildIds,
) -> Result<WriteSpec, KilnError> {
    Ok(WriteSpec::new(
        &product.name,
        ids,
        (Arc::clone(&product.schema), product.schema_fp.clone()),
        product.layout.clone(),
        &substrate.parquet_options(),
    )?)
}

/// Serializes the check-then-commit of `<source>__rejected` between the products of a
/// build that run at once (one command at a time writes a project: the writer lock).
static SOURCE_REJECTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes `<source>__rejected` hold what the source's files set aside now: nothing to do
/// when it is at their version already (another product of this build read them, or an
/// earlier build); else that version's build where one exists (another environment
/// built it), else the records, written and committed. When the product's scan stopped
/// early, the source is read again to find them all ([`kiln_data::checked::SourceRejects::all`]).
pub(crate) async fn publish_source_rejects(
    substrate: &Substrate,
    found: &kiln_data::checked::SourceRejects,
    run_id: &str,
) -> Result<(), KilnError> {
    let _turn = SOURCE_REJECTS.lock().await;
    let warehouse = substrate.warehouse();
    let name = format!("{}__rejected", found.source);
    let current = warehouse.current_or_convert(&name, None).await?;
    if current.as_ref().is_some_and(|m| m.build_id == found.version) {
        return Ok(());
    }
    let manifest = match warehouse.find_build(&name, &found.version).await? {
        Some((build, _)) => warehouse.adopt(&build, current.as_ref()).await?,
        None => {
            let rejects = found.all().map_err(|e| {
                KilnError::Data(kiln_data::DataError::Execution {
                    context: format!("source `{}`", found.source),
                    source: e,
                })
            })?;
            let ids = BuildIds { build_id: found.version.clone(), run_id: run_id.to_owned(), batch: None };
            let max_rows = kiln_control::layout::DEFAULT_MAX_ROWS_PER_FILE;
            let written = write_rejects(substrate, &name, max_rows, &rejects, ids).await?;
            warehouse.commit(&written, current.as_ref(), &kiln_data::checked::rejects_schema()).await?
        }
    };
    if let Some(table) = substrate.product_table(&name) {
        table.bind(warehouse, &manifest)?;
    }
    Ok(())
}

/// Writes records set aside into a new (uncommitted) build of side dataset `name`
/// (`<source>__rejected`, or a micro-batch product's `<product>__rejected`): source,
/// file, line, raw text and reason.
pub(crate) async fn write_rejects(
    substrate: &Substrate,
    name: &str,
    max_rows_per_file: usize,
    rejects: &[kiln_data::checked::Rejected],
    ids: BuildIds,
) -> Result<Manifest, KilnError> {
    let batch = kiln_data::checked::rejects_batch(rejects).map_err(|e| {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("dataset `{name}`"), source: e })
    })?;
    let schema = batch.schema();
    let parquet = substrate.parquet_options();
    let spec = Arc::new(WriteSpec::derived(name, ids, &schema, max_rows_per_file, &parquet)?);
    let stream: SendableRecordBatchStream =
        Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter([Ok(batch)])));
    Ok(write_dataset(substrate.warehouse(), vec![stream], spec, Arc::default()).await?)
}

/// Compacts `product`'s committed `current` (kiln_data::compact).
pub(crate) async fn compact_product(
    substrate: &kiln_control::Substrate,
    product: &CompiledProduct,
    current: &Manifest,
    run_id: &str,
    batch: Option<u64>,
) -> Result<Option<kiln_data::compact::Compacted>, KilnError> {
    let task = substrate.context().task_ctx();
    let parquet = substrate.parquet_options();
    let schema = Arc::clone(&product.schema);
    Ok(kiln_data::compact::compact(
        substrate.warehouse(),
        &task,
        current,
        schema,
        &product.layout,
        &parquet,
        run_id,
        batch,
    )
    .await?)
}
