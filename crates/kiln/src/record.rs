//! What a run leaves in the artifact store: a build record per committed build (with its
//! plans and the metrics of the operators that produced it), the run's telemetry events
//! as they happen, and per-operator metrics from a drained physical plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::metrics::{MetricValue, MetricsSet};
use kiln_artifact::plan::BUILD_RECORD_VERSION;
use kiln_artifact::{
    ArtifactError, ArtifactStore, BuildFingerprints, BuildPlans, BuildRecord, Manifest, OperatorMetrics, TelemetryEvent,
};
use kiln_control::CompiledProduct;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::KilnError;
use crate::events::{Event, Observer};
use crate::session::Session;

/// What executing a product produced besides its data.
pub(crate) struct Built {
    pub(crate) manifest: Manifest,
    pub(crate) physical: String,
    pub(crate) operators: Vec<OperatorMetrics>,
    pub(crate) phases: BTreeMap<String, f64>,
    /// The checks run on the staged build before its commit.
    pub(crate) checks: Vec<kiln_artifact::CheckRun>,
}

/// The record of a committed build: its manifest, the drained physical plan (whose
/// metrics are final) and phase timings.
pub(crate) fn built(
    manifest: Manifest,
    physical: &Arc<dyn ExecutionPlan>,
    phases: BTreeMap<String, f64>,
    root: &Path,
) -> Built {
    let mut operators = Vec::new();
    operator_metrics(physical, 0, &mut operators);
    let physical = plan_text(physical.as_ref(), false, root);
    Built { manifest, physical, operators, phases, checks: Vec::new() }
}

/// `plan` as text (with its metrics when `metrics`), its file paths relative to the
/// project at `root`: DataFusion prints each file by its object-store path
/// (`home/me/shop/data/t.csv`), which would tie build records and `kiln explain --json`
/// to one machine's checkout.
pub(crate) fn plan_text(plan: &dyn ExecutionPlan, metrics: bool, root: &Path) -> String {
    let shown =
        if metrics { DisplayableExecutionPlan::with_metrics(plan) } else { DisplayableExecutionPlan::new(plan) };
    relative_paths(&shown.indent(true).to_string(), root)
}

/// `text` with every path below `root` written relative to it.
fn relative_paths(text: &str, root: &Path) -> String {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let Some(root) = root.to_str().map(|r| r.trim_matches('/')).filter(|r| !r.is_empty()) else {
        return text.to_owned();
    };
    text.replace(&format!("/{root}/"), "").replace(&format!("{root}/"), "")
}

/// The build a record is written for.
pub(crate) struct Recorded<'a> {
    pub(crate) id: &'a str,
    pub(crate) fps: &'a BuildFingerprints,
    /// Seconds spent compiling the product in this run.
    pub(crate) compile_seconds: f64,
}

/// Writes the build record of a committed build; returns its manifest and phase timings.
pub(crate) async fn record_build(
    session: &Session,
    product: &CompiledProduct,
    build: Recorded<'_>,
    run_id: &str,
    built: Built,
) -> Result<(Manifest, BTreeMap<String, f64>), KilnError> {
    let mut phases = built.phases;
    phases.insert("compile".into(), build.compile_seconds);
    let record = BuildRecord {
        format_version: BUILD_RECORD_VERSION,
        product: product.name.clone(),
        build_id: build.id.to_owned(),
        run_id: run_id.to_owned(),
        status: "committed".into(),
        fingerprints: build.fps.clone(),
        content: built.manifest.content.clone(),
        lineage: product.lineage.clone(),
        manifest: format!("{}/_delta_log/{:020}.json", product.name, built.manifest.version.unwrap_or_default()),
        ordering_tier: built.manifest.ordering_tier,
        plans: BuildPlans {
            logical: product.logical.display_indent().to_string(),
            optimized: product.plan.display_indent().to_string(),
            physical: built.physical,
            optimized_sql: unparsed(&product.plan),
            query_fp: product.query_fp.clone(),
        },
        operators: built.operators,
        substrait: substrait_blob(session, product).await?,
        phases: phases.clone(),
    };
    session.store.put_build_record(&record).await?;
    Ok((built.manifest, phases))
}

/// `plan` as SQL (`None`: the unparser cannot say it), unparsed on a thread of its own
/// with a 64 MiB stack (reserved, touched only as deep as it goes): DataFusion's unparser
/// recurses per plan node and expression level, and under the frames of a whole build a
/// TPC-H plan took a debug build past the 2 MiB stack of the thread polling it (a stack
/// overflow aborts the process, after the product was committed).
fn unparsed(plan: &datafusion::logical_expr::LogicalPlan) -> Option<String> {
    std::thread::scope(|scope| {
        let unparse = || datafusion::sql::unparser::plan_to_sql(plan).ok().map(|s| s.to_string());
        std::thread::Builder::new().stack_size(64 << 20).spawn_scoped(scope, unparse).ok()?.join().ok().flatten()
    })
}

/// With the `substrait` feature, stores the optimized plan as Substrait protobuf bytes, a
/// blob named by its sha256 (a plan the producer cannot express records none).
#[cfg(feature = "substrait")]
async fn substrait_blob(session: &Session, product: &CompiledProduct) -> Result<Option<String>, KilnError> {
    let state = session.substrate.context().state();
    let Ok(plan) = datafusion_substrait::logical_plan::producer::to_substrait_plan(&product.plan, &state) else {
        return Ok(None);
    };
    let bytes = prost::Message::encode_to_vec(plan.as_ref());
    Ok(Some(session.store.put_blob(&bytes).await?))
}

#[cfg(not(feature = "substrait"))]
async fn substrait_blob(_: &Session, _: &CompiledProduct) -> Result<Option<String>, KilnError> {
    Ok(None)
}

/// A run's telemetry events: sent from anywhere (emitting is synchronous), written by a
/// task as they queue up, each batch as one numbered part (object stores cannot append),
/// joined into `events.jsonl` when the run ends.
pub(crate) struct Events {
    run_id: String,
    queue: UnboundedSender<TelemetryEvent>,
    writer: JoinHandle<Result<(), ArtifactError>>,
}

impl Events {
    pub(crate) fn start(store: ArtifactStore, run_id: &str) -> Self {
        let (queue, rx) = unbounded_channel();
        let writer = tokio::spawn(write_events(store, run_id.to_owned(), rx));
        Self { run_id: run_id.to_owned(), queue, writer }
    }

    /// A new event of `kind` in this run.
    pub(crate) fn event(&self, kind: &str) -> TelemetryEvent {
        TelemetryEvent::new(&self.run_id, kind)
    }

    pub(crate) fn emit(&self, event: TelemetryEvent) {
        // The writer only stops when the queue closes (in `finish`).
        let _ = self.queue.send(event);
    }

    /// Waits for every event to be written and joined; a failure is a warning (the run's
    /// results do not depend on its telemetry).
    pub(crate) async fn finish(self, observer: &dyn Observer) {
        drop(self.queue);
        match self.writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => observer.event(Event::Warning(format!("cannot record telemetry events: {e}"))),
            Err(e) => observer.event(Event::Warning(format!("the telemetry writer failed: {e}"))),
        }
    }
}

/// Writes a run's events as they arrive: everything queued at once becomes one part; when
/// the queue closes, the parts are joined into `events.jsonl`. Returns the first error.
async fn write_events(
    store: ArtifactStore,
    run_id: String,
    mut queue: UnboundedReceiver<TelemetryEvent>,
) -> Result<(), ArtifactError> {
    let mut seq = 0u64;
    let mut first_error = None;
    while let Some(event) = queue.recv().await {
        let mut lines = Vec::new();
        for e in std::iter::once(event).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
            match e.to_line() {
                Ok(line) => lines.extend(line),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Err(e) = store.put_event_part(&run_id, seq, lines).await {
            first_error.get_or_insert(e);
        }
        seq += 1;
    }
    store.finish_events(&run_id).await?;
    first_error.map_or(Ok(()), Err)
}

/// Appends `plan`'s operators and their metrics (summed over partitions), depth first.
pub(crate) fn operator_metrics(plan: &Arc<dyn ExecutionPlan>, depth: usize, out: &mut Vec<OperatorMetrics>) {
    let metrics = plan.metrics();
    let get = |f: &dyn Fn(&MetricsSet) -> Option<usize>| metrics.as_ref().and_then(f).map(|v| v as u64);
    out.push(OperatorMetrics {
        depth,
        operator: plan.name().to_owned(),
        output_rows: get(&|m| m.output_rows()),
        output_bytes: get(&|m| m.sum(|x| matches!(x.value(), MetricValue::OutputBytes(_))).map(|v| v.as_usize())),
        elapsed_compute_ns: get(&|m| m.elapsed_compute()),
        spill_count: get(&|m| m.spill_count()),
        spilled_bytes: get(&|m| m.spilled_bytes()),
    });
    for child in plan.children() {
        operator_metrics(child, depth + 1, out);
    }
}
