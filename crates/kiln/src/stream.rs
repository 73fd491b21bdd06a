//! `kiln stream`: runs a project's materialized views over their streams, micro-batch by
//! micro-batch, with checkpoints that make the output exactly-once.
//!
//! Each view is a pipeline over its stream's micro-batch source (kiln_data::ingest: log,
//! HTTP or Kafka; one read position per view):
//!
//! 1. read the next micro-batch (records, the source partition of each batch, the
//!    position after it); records that do not conform, or have no event time, go to
//!    `<stream>__rejected` (or fail the run, per the stream's `on_error`);
//! 2. *late* events are set aside: an event is late when one of its windows has already
//!    been emitted, i.e. the earliest window containing it ends at or before the
//!    watermark. A late event is dropped as a whole (counted; with
//!    `late_events = 'table'` written to `<view>__late`), even when a later HOP window of
//!    it is still open, so every emitted window holds exactly the events that were not
//!    late, and the result equals a batch `GROUP BY` over the stream minus the late
//!    events;
//! 3. the view's stateless part (filters, projections, functions, the HOP explode) runs
//!    over the rest, planned once by DataFusion over the stream's table (which reads the
//!    batch bound when it executes), and its rows enter the window aggregate
//!    (kiln_data::window); a view without an aggregate appends those rows instead;
//! 4. the watermark advances: per source partition, the greatest event time read minus the
//!    stream's allowed lateness; the stream's is the least over partitions that have
//!    sent records within `idle_timeout` (all of them idle: the greatest), never moving
//!    back. Windows that end at or before it close: their final rows go through the
//!    operators above the aggregate (the view's projection, HAVING) and are buffered,
//!    in window-end order, until the next checkpoint.
//!
//! A checkpoint (every `--checkpoint-interval`, and when the run ends, by idleness or by
//! SIGINT/SIGTERM) writes the buffered rows into a new build directory of the view, the
//! open windows' state next to them (`_state.arrow`, Arrow IPC), the late events and
//! rejected records into new builds of `<view>__late` / `<stream>__rejected`, and then
//! commits the view's manifest: all files so far, the source position, per-partition
//! event times, the watermark, the state file (`Manifest::stream`) and the side datasets'
//! manifests (`Manifest::side`). That manifest is the one commit point: a process killed
//! anywhere restarts from the last one, re-reads from its position with its state, and
//! emits exactly what the uninterrupted run would have (late-event decisions depend on
//! the watermark, which depends only on the records read, as long as no partition goes
//! idle). The side datasets' own pointers are switched after it, and again on restart
//! when a run was killed in between (`kiln gc` keeps the files a view's manifest lists
//! for them).
//!
//! Rejected records of a stream read by several views are written by the first of them
//! (by name); the others count them.
//!
//! Materialization boundaries (the only places rows are held): one micro-batch's rows
//! after the stateless part (what one aggregation step takes), and the emitted window rows,
//! late events and rejects between two checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{ExecutionPlan, collect_partitioned};
use kiln_artifact::plan::sha256_hex;
use kiln_artifact::{BuildFingerprints, ContentVersions, Manifest, SourcePosition, StreamCheckpoint};
use kiln_control::dag::NodeKind;
use kiln_control::{CompiledProduct, CompiledStream};
use kiln_data::checked::Rejected;
use kiln_data::window::{WindowAggregate, WindowSpec};
use kiln_data::{ExistingData, MicroBatchSource, MicroBatchTable, WriteProgress};
use serde::Serialize;

use crate::KilnError;
use crate::engine::{BuildOptions, Event, Need, Observer, Session};

/// What `kiln stream` is asked to do.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub build: BuildOptions,
    /// Stop (after a final checkpoint) once no stream has new records.
    pub until_idle: bool,
    /// How often a checkpoint is taken; zero: after every micro-batch.
    pub checkpoint_interval: Duration,
    /// How long the loop sleeps when no stream had new records (each stream's own
    /// `poll_interval` decides when its source is polled again).
    pub poll_interval: Duration,
    /// How often progress is reported.
    pub progress_interval: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            build: BuildOptions::default(),
            until_idle: false,
            checkpoint_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(50),
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// One view's progress (live, and in the final report).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ViewStatus {
    pub view: String,
    pub stream: String,
    /// Events read since the view started (all runs).
    pub events: u64,
    /// Events per second over the last progress interval.
    pub events_per_second: f64,
    /// The watermark (ms since the epoch; RFC 3339 in `watermark`).
    pub watermark_ms: Option<i64>,
    pub watermark: Option<String>,
    /// Records in the stream not read yet (log streams).
    pub lag_records: Option<u64>,
    pub open_windows: usize,
    pub state_bytes: usize,
    pub late: u64,
    pub rejected: u64,
    /// Rows emitted (all runs).
    pub emitted: u64,
    /// Checkpoints committed by this run.
    pub checkpoints: u64,
    /// Where this run started: from the committed checkpoint, or why from the stream's
    /// beginning.
    pub started: String,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// `--until-idle`: no stream had new records.
    Idle,
    /// SIGINT / SIGTERM (or the caller's stop flag).
    Signal,
}

/// The outcome of `kiln stream`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub run_id: String,
    pub views: Vec<ViewStatus>,
    pub stopped: Stopped,
}

/// Runs every selected materialized view until `stop` is set (or, with `until_idle`,
/// until no stream has new records), then takes a final checkpoint. See the module docs.
pub async fn stream(
    dir: &std::path::Path,
    options: &StreamOptions,
    observer: &dyn Observer,
    stop: Arc<AtomicBool>,
) -> Result<StreamReport, KilnError> {
    let mut session = Session::open(dir, &options.build, Need::Versions, observer).await?;
    // Problems elsewhere in the project (a product's source not generated yet, a file
    // that does not parse) do not stop views that compiled; a view that did not is an
    // error below.
    for problem in &session.problems {
        observer.event(Event::Warning(problem.to_string()));
    }
    let run_id = crate::engine::new_run_id();
    let mut runs = start_views(&mut session, &run_id).await?;

    let mut last_checkpoint = Instant::now();
    let mut last_progress = Instant::now();
    let stopped = loop {
        if stop.load(Ordering::Relaxed) {
            break Stopped::Signal;
        }
        let mut any = false;
        for run in &mut runs {
            any |= run.step().await?;
        }
        let due = options.checkpoint_interval.is_zero() || last_checkpoint.elapsed() >= options.checkpoint_interval;
        if due {
            for run in &mut runs {
                run.checkpoint(&session).await?;
            }
            last_checkpoint = Instant::now();
        }
        if last_progress.elapsed() >= options.progress_interval {
            let elapsed = last_progress.elapsed().as_secs_f64();
            let mut statuses = Vec::new();
            for run in &mut runs {
                statuses.push(run.status(elapsed).await);
            }
            observer.event(Event::StreamProgress(statuses));
            last_progress = Instant::now();
        }
        if !any {
            if options.until_idle {
                break Stopped::Idle;
            }
            let until = Instant::now() + options.poll_interval;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20).min(options.poll_interval)).await;
            }
        }
    };
    let mut views = Vec::new();
    let elapsed = last_progress.elapsed().as_secs_f64();
    for run in &mut runs {
        run.checkpoint(&session).await?;
        views.push(run.status(elapsed).await);
    }
    let report = StreamReport { run_id, views, stopped };
    // The run's record: its report, and one event per checkpoint (written as they commit).
    let summary = serde_json::to_vec_pretty(&report).map_err(|e| KilnError::Usage(format!("stream summary: {e}")))?;
    session.store.put_run_file(&report.run_id, "stream_summary.json", summary).await?;
    session.store.finish_events(&report.run_id).await?;
    Ok(report)
}

/// Plans every selected view and takes up its checkpoint (see [`ViewRun::start`]).
async fn start_views(session: &mut Session, run_id: &str) -> Result<Vec<ViewRun>, KilnError> {
    let graph = Arc::clone(&session.graph);
    let views: Vec<usize> = session
        .order
        .iter()
        .copied()
        .filter(|&i| session.selected.contains(&i) && graph.nodes[i].kind == NodeKind::View)
        .collect();
    if views.is_empty() {
        return Err(KilnError::Usage("no materialized views to run (CREATE MATERIALIZED VIEW ... AS ...)".into()));
    }
    let mut runs = Vec::new();
    let mut reject_owners = std::collections::BTreeSet::new();
    let events_seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for i in views {
        let name = graph.nodes[i].name.clone();
        if let Some(e) = session.failed.get(&i) {
            return Err(KilnError::Product { product: name, message: e.clone() });
        }
        session.ensure_compiled(i).await.map_err(|message| KilnError::Product { product: name.clone(), message })?;
        let Some(product) = session.compiled.get(&i).cloned() else {
            return Err(KilnError::Product { product: name, message: "not compiled".into() });
        };
        let feed = product.ingests.clone().unwrap_or_default();
        let (Some(stream), Some((source, table))) =
            (session.substrate.stream(&feed).cloned(), session.substrate.micro_batch_source(&feed))
        else {
            return Err(KilnError::Product { product: name, message: format!("`{feed}` is not a stream") });
        };
        let (source, table) = (source.clone(), Arc::clone(table));
        if let Some(d) = graph.get(&feed) {
            session.versions.insert(d, source.version());
        }
        let Some((fps, definition)) = session.identity(i) else {
            return Err(KilnError::Product { product: name, message: "not compiled".into() });
        };
        let owns_rejects = stream.reject && reject_owners.insert(feed.clone());
        let run = ViewRun::start(
            session,
            product,
            stream,
            (source, table),
            (fps, definition),
            owns_rejects,
            (run_id.to_owned(), Arc::clone(&events_seq)),
        )
        .await?;
        runs.push(run);
    }

    Ok(runs)
}

/// The event time of each source partition, as far as read.
#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    /// Greatest event time read (ms).
    max_ms: i64,
    /// When a record of the partition was last read.
    seen: Instant,
}

/// A windowed view's aggregation.
struct Windowed {
    agg: WindowAggregate,
    /// The plan below the aggregate (the stateless part).
    stateless: Arc<dyn ExecutionPlan>,
    size_ms: i64,
    slide_ms: i64,
    /// Units of the window start column per ms.
    units_per_ms: i64,
}

/// What was produced since the last checkpoint.
#[derive(Default)]
struct Pending {
    emitted: Vec<RecordBatch>,
    late: Vec<RecordBatch>,
    rejects: Vec<Rejected>,
    /// Micro-batches read since the last checkpoint.
    batches: u64,
}

/// One view's pipeline (see the module docs).
struct ViewRun {
    product: CompiledProduct,
    stream: CompiledStream,
    source: MicroBatchSource,
    table: Arc<MicroBatchTable>,
    fps: BuildFingerprints,
    definition: String,
    run_id: String,
    task: Arc<TaskContext>,
    /// The session's batch size (records are parsed into batches of it).
    batch_size: usize,
    /// The view's whole plan (executed per micro-batch when it does not aggregate).
    plan: Arc<dyn ExecutionPlan>,
    window: Option<Windowed>,
    /// Index of the event-time column in the stream's schema, and its unit per ms.
    event_time: Option<(usize, i64)>,
    delay_ms: i64,
    position: SourcePosition,
    clocks: BTreeMap<i32, PartitionClock>,
    watermark_ms: Option<i64>,
    /// The committed manifest this run continues (`None`: the first checkpoint replaces).
    current: Option<Manifest>,
    late_table: bool,
    owns_rejects: bool,
    pending: Pending,
    totals: StreamCheckpoint,
    checkpoints: u64,
    /// Events at the last progress report.
    reported_events: u64,
    /// When the source may be polled again (after a poll found nothing new).
    next_poll: Option<Instant>,
    started: String,
    /// The run's next event part number (shared by its views).
    events_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl ViewRun {
    /// Plans the view once and resumes from its committed checkpoint when that was made
    /// by the same definition; otherwise it starts from the stream's beginning.
    async fn start(
        session: &Session,
        product: CompiledProduct,
        stream: CompiledStream,
        (source, table): (MicroBatchSource, Arc<MicroBatchTable>),
        (fps, definition): (BuildFingerprints, String),
        owns_rejects: bool,
        (run_id, events_seq): (String, Arc<std::sync::atomic::AtomicU64>),
    ) -> Result<Self, KilnError> {
        let substrate = &session.substrate;
        let exec_err = |e: datafusion::error::DataFusionError| {
            KilnError::Data(kiln_data::DataError::Execution { context: format!("view `{}`", product.name), source: e })
        };
        // One partition per micro-batch: a micro-batch is small, and a view's throughput
        // per core is what matters (several views run side by side).
        let state = substrate.context().state();
        let batch_size = state.config().batch_size();
        let config = state.config().clone().with_target_partitions(1);
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(state).with_config(config).build();
        let plan = state.query_planner().create_physical_plan(&product.plan, &state).await.map_err(exec_err)?;
        let task = Arc::new(TaskContext::from(&state));
        let window = match product.windows.first() {
            Some(w) if product.windows.len() == 1 => {
                let (size_ms, slide_ms) = (w.size_ms.unwrap_or(1), w.slide_ms.unwrap_or(1));
                let (spec, stateless) =
                    WindowSpec::from_window_plan(&plan, size_ms).ok_or_else(|| KilnError::Product {
                        product: product.name.clone(),
                        message: "cannot find the window among the aggregate's groups".into(),
                    })?;
                let units_per_ms = spec.units_per_ms();
                Some(Windowed {
                    agg: WindowAggregate::new(spec, Arc::clone(&task)),
                    stateless,
                    size_ms,
                    slide_ms,
                    units_per_ms,
                })
            }
            _ => None,
        };
        let schema = Arc::clone(source.schema());
        let (event_time, delay_ms) = match &stream.event_time {
            Some((column, delay)) => {
                let index = schema.index_of(column).map_err(|e| KilnError::Usage(e.to_string()))?;
                let unit = match schema.field(index).data_type() {
                    DataType::Timestamp(unit, _) => kiln_data::window::units_per_ms(*unit),
                    _ => 1,
                };
                (Some((index, unit)), *delay)
            }
            None => (None, 0),
        };
        let warehouse = substrate.warehouse();
        let committed = warehouse.current(&product.name).await?;
        let continues = committed.as_ref().is_some_and(|m| m.fingerprints.as_ref() == Some(&fps) && m.stream.is_some());
        let started = match committed.as_ref().and_then(|m| m.fingerprints.as_ref().map(|f| (m, f))) {
            None if committed.is_none() => "first run: from the beginning of the stream".to_owned(),
            None => "no checkpoint: from the beginning of the stream".to_owned(),
            Some((m, _)) if continues => format!("resumed from checkpoint {}", short(&m.build_id)),
            Some((_, old)) => {
                format!("definition changed ({}): from the beginning of the stream, replacing", changed(old, &fps))
            }
        };
        let late_table = matches!(product_option(session, &product.name, "late_events").as_deref(), Some("table"));
        let mut run = Self {
            position: source.start(),
            product,
            stream,
            source,
            table,
            fps,
            definition,
            run_id,
            task,
            batch_size,
            plan,
            window,
            event_time,
            delay_ms,
            clocks: BTreeMap::new(),
            watermark_ms: None,
            current: None,
            late_table,
            owns_rejects,
            pending: Pending::default(),
            totals: StreamCheckpoint::default(),
            checkpoints: 0,
            reported_events: 0,
            next_poll: None,
            started,
            events_seq,
        };
        if continues && let Some(manifest) = committed {
            run.resume(session, manifest).await?;
        }
        run.reported_events = run.totals.events;
        Ok(run)
    }

    /// Takes up the checkpoint `manifest` commits.
    async fn resume(&mut self, session: &Session, manifest: Manifest) -> Result<(), KilnError> {
        let feed = &self.stream.name;
        let checkpoint = manifest.stream.clone().unwrap_or_default();
        if let Some(position) = manifest.positions.get(feed) {
            self.position = position.clone();
        }
        let now = Instant::now();
        self.clocks =
            checkpoint.partitions.iter().map(|(&p, &max_ms)| (p, PartitionClock { max_ms, seen: now })).collect();
        self.watermark_ms = checkpoint.watermark_ms;
        if let (Some(path), Some(w)) = (&checkpoint.state, &mut self.window) {
            let bytes = session.substrate.warehouse().get(path).await?;
            w.agg.restore_ipc(bytes).map_err(|e| self.exec_error(e))?;
        }
        self.totals = checkpoint;
        // A run killed between its checkpoint and the side datasets' pointers.
        publish_sides(session.substrate.warehouse(), &manifest).await?;
        self.current = Some(manifest);
        Ok(())
    }

    fn exec_error(&self, e: datafusion::error::DataFusionError) -> KilnError {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("view `{}`", self.product.name), source: e })
    }

    /// Reads and processes one micro-batch; `false` when the stream had nothing new (or
    /// its `poll_interval` has not passed since it last had nothing new).
    async fn step(&mut self) -> Result<bool, KilnError> {
        if self.next_poll.is_some_and(|t| Instant::now() < t) {
            self.advance().await?;
            return Ok(false);
        }
        let Some(micro) = self.source.next_batch(&self.position, self.batch_size).await? else {
            self.next_poll = Some(Instant::now() + self.stream.poll_interval);
            // Idle partitions may let the watermark advance.
            self.advance().await?;
            return Ok(false);
        };
        self.next_poll = None;
        let rejected = micro.rejects.len() as u64;
        self.totals.rejected += rejected;
        if self.owns_rejects {
            self.pending.rejects.extend(micro.rejects);
        }
        let mut kept = Vec::with_capacity(micro.batches.len());
        let now = Instant::now();
        for (batch, partition) in micro.batches.into_iter().zip(micro.partitions) {
            let Some((index, units)) = self.event_time else {
                kept.push(batch);
                continue;
            };
            let ms = event_ms(batch.column(index), units).map_err(|e| self.exec_error(e))?;
            if let Some(max) = ms.iter().flatten().max() {
                let clock = self.clocks.entry(partition).or_insert(PartitionClock { max_ms: i64::MIN, seen: now });
                clock.max_ms = clock.max_ms.max(max);
                clock.seen = now;
            }
            match (&self.window, self.watermark_ms) {
                (Some(w), Some(watermark)) => {
                    let late: BooleanArray = ms
                        .iter()
                        .map(|t| Some(t.is_some_and(|t| earliest_end(t, w.size_ms, w.slide_ms) <= watermark)))
                        .collect();
                    let n = late.true_count();
                    if n > 0 {
                        self.totals.late += n as u64;
                        if self.late_table {
                            let rows = late_rows(&batch, &late, watermark).map_err(|e| self.exec_error(e))?;
                            self.pending.late.push(rows);
                        }
                        let on_time = datafusion::arrow::compute::not(&late).map_err(|e| self.exec_error(e.into()))?;
                        kept.push(filter_record_batch(&batch, &on_time).map_err(|e| self.exec_error(e.into()))?);
                    } else {
                        kept.push(batch);
                    }
                }
                _ => kept.push(batch),
            }
        }
        self.totals.events += micro.records - rejected;
        self.table.bind(kept);
        let input = match &self.window {
            Some(w) => Arc::clone(&w.stateless),
            None => Arc::clone(&self.plan),
        };
        let output = collect_partitioned(input, Arc::clone(&self.task)).await;
        self.table.bind(Vec::new());
        let output: Vec<RecordBatch> = output.map_err(|e| self.exec_error(e))?.into_iter().flatten().collect();
        match &mut self.window {
            Some(w) => w.agg.push_all(output).await.map_err(|e| self.exec_error(e))?,
            None => {
                self.totals.emitted += output.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                self.pending.emitted.extend(output);
            }
        }
        self.position = micro.position;
        self.pending.batches += 1;
        self.advance().await?;
        Ok(true)
    }

    /// Moves the watermark to what the partitions' clocks allow and emits the windows it
    /// closes.
    async fn advance(&mut self) -> Result<(), KilnError> {
        let Some(candidate) = self.candidate_watermark() else { return Ok(()) };
        if self.watermark_ms.is_some_and(|w| w >= candidate) {
            return Ok(());
        }
        self.watermark_ms = Some(candidate);
        let Some(w) = &mut self.window else { return Ok(()) };
        let closed = w.agg.close(candidate.saturating_mul(w.units_per_ms)).await;
        let Some(closed) = closed.map_err(|e| self.exec_error(e))? else { return Ok(()) };
        let rows = self.above(closed).await.map_err(|e| self.exec_error(e))?;
        self.totals.emitted += rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        self.pending.emitted.extend(rows);
        Ok(())
    }

    /// The watermark the clocks allow: the least partition watermark among partitions
    /// that are not idle; when all are idle, the greatest.
    fn candidate_watermark(&self) -> Option<i64> {
        let idle = self.stream.idle_timeout;
        let marks = |active: bool| {
            self.clocks
                .values()
                .filter(move |c| !active || c.seen.elapsed() < idle)
                .map(|c| c.max_ms.saturating_sub(self.delay_ms))
        };
        marks(true).min().or_else(|| marks(false).max())
    }

    /// Runs the operators above the aggregate (the view's projection, HAVING, ...) over
    /// the final rows of closed windows.
    async fn above(&self, closed: RecordBatch) -> datafusion::error::Result<Vec<RecordBatch>> {
        let mut replaced = false;
        let plan = Arc::clone(&self.plan).transform_down(|node| {
            if replaced || node.downcast_ref::<AggregateExec>().is_none() {
                return Ok(Transformed::no(node));
            }
            replaced = true;
            let rows = RecordBatch::try_new(node.schema(), closed.columns().to_vec())?;
            let source = MemorySourceConfig::try_new_exec(&[vec![rows]], node.schema(), None)?;
            Ok(Transformed::new(source as Arc<dyn ExecutionPlan>, true, TreeNodeRecursion::Jump))
        })?;
        Ok(collect_partitioned(plan.data, Arc::clone(&self.task)).await?.into_iter().flatten().collect())
    }

    /// Commits what was produced since the last checkpoint (see the module docs).
    async fn checkpoint(&mut self, session: &Session) -> Result<(), KilnError> {
        if self.pending.batches == 0 && self.current.is_some() && self.pending.emitted.is_empty() {
            return Ok(());
        }
        let substrate = &session.substrate;
        let warehouse = substrate.warehouse();
        let feed = self.stream.name.clone();
        let number = self.position.batches;
        let offsets = serde_json::to_string(&self.position).unwrap_or_default();
        let build_id = sha256_hex(format!("kiln.stream.v1\n{}\n{offsets}\n", self.definition).as_bytes());
        let pending = std::mem::take(&mut self.pending);

        // The emitted rows, into a new build directory.
        let spec =
            Arc::new(crate::engine::write_spec(substrate, &self.product, &build_id, &self.run_id, Some(number))?);
        let mut manifest = match &self.current {
            // Nothing emitted since the last checkpoint: no data file, the same file list
            // under a new build (whose directory holds the state).
            Some(current) if pending.emitted.is_empty() => Manifest {
                build_id: build_id.clone(),
                run_id: self.run_id.clone(),
                build_dir: spec.build_dir(),
                ..current.clone()
            },
            _ => {
                let rows: datafusion::execution::SendableRecordBatchStream =
                    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        Arc::clone(&self.product.schema),
                        futures::stream::iter(pending.emitted.into_iter().map(Ok)),
                    ));
                let progress = Arc::new(WriteProgress::default());
                let new = kiln_data::write_dataset(warehouse, vec![rows], Arc::clone(&spec), progress).await?;
                kiln_data::merge_existing(new, self.current.as_ref(), ExistingData::Append)?
            }
        };

        // The open windows' state, next to them.
        let mut checkpoint = self.totals.clone();
        checkpoint.watermark_ms = self.watermark_ms;
        checkpoint.partitions = self.clocks.iter().map(|(&p, c)| (p, c.max_ms)).collect();
        checkpoint.state = None;
        checkpoint.state_rows = 0;
        checkpoint.state_bytes = 0;
        if let Some(w) = &self.window
            && let Some(bytes) = w.agg.state_ipc().map_err(|e| self.exec_error(e))?
        {
            let path = format!("{}/_state.arrow", manifest.build_dir);
            checkpoint.state_rows = w.agg.open_groups() as u64;
            checkpoint.state_bytes = bytes.len() as u64;
            warehouse.put(&path, bytes).await?;
            checkpoint.state = Some(path);
        }

        // Late events and rejects: written now, committed by the view's manifest.
        manifest.side = self.current.as_ref().map(|m| m.side.clone()).unwrap_or_default();
        if !pending.late.is_empty() {
            let name = format!("{}__late", self.product.name);
            self.write_side(session, &mut manifest, &name, pending.late, &build_id, number).await?;
        }
        if !pending.rejects.is_empty() {
            let batch = kiln_data::checked::rejects_batch(&pending.rejects).map_err(|e| self.exec_error(e))?;
            let name = format!("{feed}__rejected");
            self.write_side(session, &mut manifest, &name, vec![batch], &build_id, number).await?;
        }

        manifest.fingerprints = Some(self.fps.clone());
        manifest.content = Some(ContentVersions { rows: build_id.clone(), columns: Default::default() });
        manifest.positions.insert(feed, self.position.clone());
        manifest.stream = Some(checkpoint);
        warehouse.commit(&manifest).await?;
        kiln_data::failpoint("after_checkpoint");
        publish_sides(warehouse, &manifest).await?;
        let event = serde_json::json!({
            "event": "checkpoint",
            "view": self.product.name,
            "build_id": manifest.build_id,
            "build_dir": manifest.build_dir,
            "records": self.position.records,
            "batches": self.position.batches,
            "watermark_ms": self.watermark_ms,
            "rows_emitted": self.totals.emitted,
            "late": self.totals.late,
            "state_rows": manifest.stream.as_ref().map_or(0, |c| c.state_rows),
            "unix_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        });
        let seq = self.events_seq.fetch_add(1, Ordering::Relaxed);
        session.store.put_event_part(&self.run_id, seq, format!("{event}\n").into_bytes()).await?;
        self.current = Some(manifest);
        self.checkpoints += 1;
        Ok(())
    }

    /// Writes `batches` into a new build of side dataset `name` (`<view>__late`,
    /// `<stream>__rejected`) and puts its manifest — the files so far, the position — in
    /// the view's `manifest`, which commits it.
    async fn write_side(
        &self,
        session: &Session,
        manifest: &mut Manifest,
        name: &str,
        batches: Vec<RecordBatch>,
        build_id: &str,
        number: u64,
    ) -> Result<(), KilnError> {
        let Some(schema) = batches.first().map(RecordBatch::schema) else { return Ok(()) };
        let side_id = sha256_hex(format!("{build_id}\n{name}\n").as_bytes());
        let ids = (side_id.as_str(), self.run_id.as_str(), Some(number));
        let spec =
            crate::engine::side_write_spec(&session.substrate, name, &schema, ids, self.product.max_rows_per_file)?;
        let spec = Arc::new(spec);
        let rows: datafusion::execution::SendableRecordBatchStream =
            Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema,
                futures::stream::iter(batches.into_iter().map(Ok)),
            ));
        let warehouse = session.substrate.warehouse();
        let new = kiln_data::write_dataset(warehouse, vec![rows], spec, Arc::default()).await?;
        let mut new = kiln_data::merge_existing(new, manifest.side.get(name), ExistingData::Append)?;
        new.fingerprints = Some(self.fps.clone());
        new.positions.insert(self.stream.name.clone(), self.position.clone());
        manifest.side.insert(name.to_owned(), new);
        Ok(())
    }

    async fn status(&mut self, elapsed: f64) -> ViewStatus {
        let events = self.totals.events;
        let rate = (events - self.reported_events.min(events)) as f64 / elapsed.max(1e-9);
        self.reported_events = events;
        let lag_records = match &self.source {
            MicroBatchSource::Log(log) => match kiln_data::log::LogTopic::open(&log.warehouse, &log.topic).await {
                Ok(Some(topic)) => topic.end_offsets().await.ok().map(|ends| {
                    ends.iter()
                        .map(|(p, end)| {
                            end.saturating_sub(
                                self.position.offsets.get(&(*p as i32)).copied().unwrap_or(0).max(0) as u64
                            )
                        })
                        .sum()
                }),
                _ => None,
            },
            _ => None,
        };
        ViewStatus {
            view: self.product.name.clone(),
            stream: self.stream.name.clone(),
            events,
            events_per_second: rate,
            watermark_ms: self.watermark_ms,
            watermark: self.watermark_ms.and_then(rfc3339),
            lag_records,
            open_windows: self.window.as_ref().map_or(0, |w| w.agg.open_groups()),
            state_bytes: self.window.as_ref().map_or(0, |w| w.agg.state_bytes()),
            late: self.totals.late,
            rejected: self.totals.rejected,
            emitted: self.totals.emitted,
            checkpoints: self.checkpoints,
            started: self.started.clone(),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Which fingerprints differ between a committed checkpoint's definition and this one.
fn changed(old: &BuildFingerprints, new: &BuildFingerprints) -> String {
    let mut what = Vec::new();
    for (name, a, b) in [
        ("query", &old.query_fp, &new.query_fp),
        ("schema", &old.schema_fp, &new.schema_fp),
        ("settings", &old.runtime_fp, &new.runtime_fp),
        ("functions", &old.func_fp, &new.func_fp),
    ] {
        if a != b {
            what.push(name.to_owned());
        }
    }
    if old.upstream != new.upstream {
        let streams: Vec<String> = new.upstream.keys().map(|s| format!("stream `{s}`")).collect();
        what.push(streams.join(", "));
    }
    what.join(", ")
}

/// Makes the side datasets a view checkpoint committed visible (their pointers), where
/// they are not already.
async fn publish_sides(warehouse: &kiln_data::Warehouse, manifest: &Manifest) -> Result<(), KilnError> {
    for (name, side) in &manifest.side {
        let visible = warehouse.current(name).await?;
        if visible.as_ref().map(|m| &m.build_id) != Some(&side.build_id) {
            kiln_data::failpoint("before_side_publish");
            warehouse.commit(side).await?;
            kiln_data::failpoint("after_side_commit");
        }
    }
    Ok(())
}

/// A view option's value, from its definition.
fn product_option(session: &Session, view: &str, key: &str) -> Option<String> {
    let i = session.graph.get(view)?;
    let (file, index) = session.graph.nodes[i].def;
    match session.project.files.get(file)?.statement(index).ok()? {
        kiln_control::dialect::Statement::View(def) => def.options.get(key).map(|(v, _)| v.to_owned()),
        _ => None,
    }
}

/// Event times in ms (floor), NULL kept.
fn event_ms(column: &dyn Array, units_per_ms: i64) -> datafusion::error::Result<Int64Array> {
    let raw = cast(column, &DataType::Int64)?;
    let raw = raw
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("event time is not a timestamp".into()))?;
    let seconds = matches!(column.data_type(), DataType::Timestamp(TimeUnit::Second, _));
    Ok(raw
        .iter()
        .map(|v| v.map(|v| if seconds { v.saturating_mul(1_000) } else { v.div_euclid(units_per_ms.max(1)) }))
        .collect())
}

/// The end of the earliest window (epoch-aligned, starts at multiples of `slide`, length
/// `size`) that contains `t` (all in ms).
fn earliest_end(t: i64, size: i64, slide: i64) -> i64 {
    let first_start = (t - size).div_euclid(slide) * slide + slide;
    first_start + size
}

/// The schema of `<view>__late`: the stream's columns and `kiln_watermark`, the
/// watermark the event was late against.
pub fn late_schema(stream: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> =
        stream.fields().iter().map(|f| f.as_ref().clone().with_metadata(Default::default())).collect();
    fields.push(Field::new("kiln_watermark", DataType::Timestamp(TimeUnit::Millisecond, None), false));
    Arc::new(Schema::new(fields))
}

/// The late rows of `batch` with the watermark they were late against.
fn late_rows(batch: &RecordBatch, late: &BooleanArray, watermark: i64) -> datafusion::error::Result<RecordBatch> {
    let rows = filter_record_batch(batch, late)?;
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(TimestampMillisecondArray::from(vec![watermark; rows.num_rows()])));
    Ok(RecordBatch::try_new(late_schema(&rows.schema()), columns)?)
}

/// `ms` since the epoch as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: i64) -> Option<String> {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = crate::engine::civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1_000 % 60, rem % 1_000);
    Some(format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z"))
}

#[cfg(test)]
mod tests {
    use super::earliest_end;

    #[test]
    fn earliest_window_ends() {
        // TUMBLE 10: [0,10), [10,20), ...
        assert_eq!(earliest_end(0, 10, 10), 10);
        assert_eq!(earliest_end(9, 10, 10), 10);
        assert_eq!(earliest_end(10, 10, 10), 20);
        assert_eq!(earliest_end(-1, 10, 10), 0);
        // HOP slide 2 size 10: 15 is in [6,16) .. [14,24); the earliest ends at 16.
        assert_eq!(earliest_end(15, 10, 2), 16);
        assert_eq!(earliest_end(16, 10, 2), 18);
        // HOP slide 3 size 10: 15 is in [6,16), [9,19), [12,22), [15,25).
        assert_eq!(earliest_end(15, 10, 3), 16);
    }
}
