//! One materialized view's pipeline over its stream (see the module docs of
//! [`crate::stream`]): read a micro-batch, set late events aside, run the stateless part,
//! feed the window aggregate, advance the watermark, close windows, and checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, collect_partitioned};
use kiln_artifact::identity::{checkpoint_id, side_build_id};
use kiln_artifact::{
    BuildFingerprints, CheckpointStats, ContentVersions, KilnCommit, Manifest, SourcePosition, StreamCheckpoint,
    TelemetryEvent, ViewStatus,
};

use super::clock::Watermark;
use super::late::{event_ms, late_mask, late_rows};
use super::program::{LateEvents, ViewProgram};
use super::window::{WindowAggregate, WindowSpec, units_per_ms};
use crate::checked::Rejected;
use crate::feed::{MicroBatchSource, MicroBatchTable};
use crate::layout::{ExistingData, WriteLayout};
use crate::warehouse::Warehouse;
use crate::writer::{BuildIds, WriteSpec, merge_existing, write_dataset};
use crate::{DataError, Result};

/// The view's own dataset: its name, the schema of its files and their layout.
#[derive(Debug, Clone)]
pub struct ViewDataset {
    pub name: String,
    pub schema: SchemaRef,
    pub schema_fp: String,
    pub layout: WriteLayout,
}

/// Everything a [`ViewRunner`] starts from (the facade assembles it: the control plane
/// compiled the program and planned the view, the facade decided whether the committed
/// checkpoint is taken up).
#[derive(Debug)]
pub struct ViewSetup {
    pub dataset: ViewDataset,
    pub program: ViewProgram,
    /// The stream's source and the table the view's plan reads it through.
    pub source: MicroBatchSource,
    pub table: Arc<MicroBatchTable>,
    /// The view's physical plan (one partition: a micro-batch is small, and a view's
    /// throughput per core is what matters), executed per micro-batch, and its context.
    pub plan: Arc<dyn ExecutionPlan>,
    pub task: Arc<TaskContext>,
    /// Records are parsed into batches of this many rows.
    pub batch_size: usize,
    /// The view's fingerprints and definition (its build id as of its stream's
    /// definition): recorded in every checkpoint, and what a later run compares.
    pub fps: BuildFingerprints,
    pub definition: String,
    /// Whether this view writes the stream's rejected records (the first view of a
    /// stream, by name; the others count them).
    pub owns_rejects: bool,
    pub run_id: String,
    /// The session's Parquet options, under the layout's.
    pub parquet: TableParquetOptions,
    /// The committed checkpoint to continue from (made by the same definition), if any.
    pub resume: Option<Manifest>,
    /// The view's committed version, continued or not: what its next commit is made on.
    pub base: Option<Manifest>,
    /// Where this run starts, for the reports.
    pub started: String,
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
pub struct ViewRunner {
    dataset: ViewDataset,
    program: ViewProgram,
    source: MicroBatchSource,
    table: Arc<MicroBatchTable>,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    batch_size: usize,
    fps: BuildFingerprints,
    definition: String,
    owns_rejects: bool,
    run_id: String,
    parquet: TableParquetOptions,
    window: Option<Windowed>,
    /// Index of the event-time column in the stream's schema, and its unit per ms.
    event_time: Option<(usize, i64)>,
    watermark: Watermark,
    position: SourcePosition,
    /// The committed manifest this run continues (`None`: the first checkpoint replaces).
    current: Option<Manifest>,
    /// The view's committed version: what the next checkpoint commits on top of.
    base: Option<Manifest>,
    /// The side datasets this view writes (`<view>__late`, `<stream>__rejected`).
    sides: BTreeMap<String, SideTable>,
    pending: Pending,
    totals: StreamCheckpoint,
    checkpoints: u64,
    /// Events at the last progress report.
    reported_events: u64,
    /// When the source may be polled again (after a poll found nothing new).
    next_poll: Option<Instant>,
    started: String,
}

/// A side dataset of a view, as this run knows it.
struct SideTable {
    schema: SchemaRef,
    /// Its committed version.
    committed: Option<Manifest>,
    /// Whether this run adds to it (else its first commit replaces it: a run that does not
    /// continue the view's checkpoint starts its side datasets over too).
    continues: bool,
}

impl std::fmt::Debug for ViewRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewRunner").field("view", &self.dataset.name).field("position", &self.position).finish()
    }
}

impl ViewRunner {
    /// Takes the view apart for the loop and takes up the committed checkpoint in
    /// `setup.resume` (its position, clocks, watermark, window state, totals); side
    /// datasets a killed run committed but did not publish are published now.
    pub async fn start(setup: ViewSetup, warehouse: &Warehouse) -> Result<Self> {
        let ViewSetup {
            dataset,
            program,
            source,
            table,
            plan,
            task,
            batch_size,
            fps,
            definition,
            owns_rejects,
            run_id,
            parquet,
            resume,
            base,
            started,
        } = setup;
        let internal = |m: &str| DataError::Internal(format!("view `{}`: {m}", dataset.name));
        let window = match &program.window {
            None => None,
            Some(w) => {
                let (spec, stateless) =
                    WindowSpec::for_view(&plan, w).ok_or_else(|| internal("its plan has no window aggregate"))?;
                let units_per_ms = spec.units_per_ms();
                Some(Windowed {
                    agg: WindowAggregate::new(spec, Arc::clone(&task)),
                    stateless,
                    size_ms: w.size_ms,
                    slide_ms: w.slide_ms,
                    units_per_ms,
                })
            }
        };
        let schema = Arc::clone(source.schema());
        let (event_time, delay_ms) = match &program.stream.event_time {
            Some(e) => {
                let index = schema.index_of(&e.column).map_err(|_| internal("its stream has no event-time column"))?;
                let unit = match schema.field(index).data_type() {
                    DataType::Timestamp(unit, _) => units_per_ms(*unit),
                    _ => 1,
                };
                (Some((index, unit)), e.delay_ms)
            }
            None => (None, 0),
        };
        let watermark = Watermark::new(delay_ms, program.stream.idle_timeout);
        let mut sides = BTreeMap::new();
        let mut side_names = Vec::new();
        if program.late_events == LateEvents::Table {
            side_names.push((format!("{}__late", dataset.name), super::late_schema(&schema)));
        }
        if owns_rejects {
            side_names.push((format!("{}__rejected", program.stream.name), crate::checked::rejects_schema()));
        }
        for (name, side_schema) in side_names {
            let committed = warehouse.current(&name).await?;
            sides.insert(name, SideTable { schema: side_schema, committed, continues: resume.is_some() });
        }
        let mut run = Self {
            position: source.start(),
            dataset,
            program,
            source,
            table,
            plan,
            task,
            batch_size,
            fps,
            definition,
            owns_rejects,
            run_id,
            parquet,
            window,
            event_time,
            watermark,
            current: None,
            base,
            sides,
            pending: Pending::default(),
            totals: StreamCheckpoint::default(),
            checkpoints: 0,
            reported_events: 0,
            next_poll: None,
            started,
        };
        if let Some(manifest) = resume {
            run.resume(warehouse, manifest).await?;
        }
        run.reported_events = run.totals.events;
        Ok(run)
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.dataset.name
    }

    /// Takes up the checkpoint `manifest` commits.
    async fn resume(&mut self, warehouse: &Warehouse, manifest: Manifest) -> Result<()> {
        let checkpoint = manifest.stream.clone().unwrap_or_default();
        if let Some(position) = manifest.positions.get(&self.program.stream.name) {
            self.position = position.clone();
        }
        self.watermark.restore(&checkpoint.partitions, checkpoint.watermark_ms);
        if let (Some(path), Some(w)) = (&checkpoint.state, &mut self.window) {
            let bytes = warehouse.get(path).await?;
            w.agg.restore_ipc(bytes).map_err(DataError::exec(format!("view `{}`", self.dataset.name)))?;
        }
        self.totals = checkpoint;
        // A run killed between its checkpoint and the side datasets' commits.
        self.publish_sides(warehouse, &manifest).await?;
        self.current = Some(manifest);
        Ok(())
    }

    fn exec_error(&self, e: datafusion::error::DataFusionError) -> DataError {
        DataError::Execution { context: format!("view `{}`", self.dataset.name), source: e }
    }

    /// Reads and processes one micro-batch; `false` when the stream had nothing new (or
    /// its `poll_interval` has not passed since it last had nothing new).
    pub async fn step(&mut self) -> Result<bool> {
        if self.next_poll.is_some_and(|t| Instant::now() < t) {
            self.advance().await?;
            return Ok(false);
        }
        let Some(micro) = self.source.next_batch(&self.position, self.batch_size).await? else {
            self.next_poll = Some(Instant::now() + self.program.stream.poll_interval);
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
                self.watermark.observe(partition, max, now);
            }
            match (&self.window, self.watermark.current()) {
                (Some(w), Some(watermark)) => {
                    let late = late_mask(&ms, w.size_ms, w.slide_ms, watermark);
                    let n = late.true_count();
                    if n > 0 {
                        self.totals.late += n as u64;
                        if self.program.late_events == LateEvents::Table {
                            let rows = late_rows(&batch, &late, watermark).map_err(|e| self.exec_error(e))?;
                            self.pending.late.push(rows);
                        }
                        let on_time: BooleanArray =
                            datafusion::arrow::compute::not(&late).map_err(|e| self.exec_error(e.into()))?;
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
    async fn advance(&mut self) -> Result<()> {
        let Some(watermark) = self.watermark.advance() else { return Ok(()) };
        let Some(w) = &mut self.window else { return Ok(()) };
        let closed = w.agg.close(watermark.saturating_mul(w.units_per_ms)).await;
        let Some(closed) = closed.map_err(|e| self.exec_error(e))? else { return Ok(()) };
        let rows = self.above(closed).await.map_err(|e| self.exec_error(e))?;
        self.totals.emitted += rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        self.pending.emitted.extend(rows);
        Ok(())
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

    /// Commits what was produced since the last checkpoint: the emitted rows into a new
    /// build directory of the view, the open windows' state next to them
    /// (`_state.arrow`), late events and rejected records into new builds of
    /// `<view>__late` / `<stream>__rejected`, then the view's manifest (the one commit
    /// point: all files so far, the source position, per-partition event times, the
    /// watermark, the state, the side datasets' manifests); the side datasets' pointers
    /// follow. Returns the checkpoint's event, or `None` when there was nothing to commit.
    pub async fn checkpoint(&mut self, warehouse: &Warehouse) -> Result<Option<TelemetryEvent>> {
        if self.pending.batches == 0 && self.current.is_some() && self.pending.emitted.is_empty() {
            return Ok(None);
        }
        let feed = self.program.stream.name.clone();
        let number = self.position.batches;
        let position = serde_json::to_string(&self.position).unwrap_or_default();
        let build_id = checkpoint_id(&self.definition, &position);
        let pending = std::mem::take(&mut self.pending);

        // The emitted rows, into a new build directory.
        let ids = BuildIds { build_id: build_id.clone(), run_id: self.run_id.clone(), batch: Some(number) };
        let dataset = &self.dataset;
        let spec = WriteSpec::new(
            &dataset.name,
            ids,
            (Arc::clone(&dataset.schema), dataset.schema_fp.clone()),
            dataset.layout.clone(),
            &self.parquet,
        )?;
        let spec = Arc::new(spec);
        let mut manifest = match &self.current {
            // Nothing emitted since the last checkpoint: no data file, the same file list
            // under a new build (whose directory holds the state).
            Some(current) if pending.emitted.is_empty() => Manifest {
                build_id: build_id.clone(),
                run_id: self.run_id.clone(),
                build_dir: warehouse.scoped(&spec.build_dir()),
                ..current.clone()
            },
            _ => {
                let rows = batches_stream(Arc::clone(&dataset.schema), pending.emitted);
                let new = write_dataset(warehouse, vec![rows], Arc::clone(&spec), Arc::default()).await?;
                merge_existing(new, self.current.as_ref(), ExistingData::Append)?
            }
        };

        // The open windows' state, next to them.
        let mut checkpoint = self.totals.clone();
        checkpoint.watermark_ms = self.watermark.current();
        checkpoint.partitions = self.watermark.partitions();
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

        // Late events and rejects: written now, committed by the view's commit.
        manifest.side = BTreeMap::new();
        if !pending.late.is_empty() {
            let name = format!("{}__late", dataset.name);
            self.write_side(warehouse, &mut manifest, &name, pending.late, &build_id, number).await?;
        }
        if !pending.rejects.is_empty() {
            let batch = crate::checked::rejects_batch(&pending.rejects).map_err(|e| self.exec_error(e))?;
            let name = format!("{feed}__rejected");
            self.write_side(warehouse, &mut manifest, &name, vec![batch], &build_id, number).await?;
        }

        // A side dataset's table exists from the view's first checkpoint on (empty until
        // its first row), so readers find it.
        let unborn: Vec<String> = self
            .sides
            .iter()
            .filter(|(name, side)| side.committed.is_none() && !manifest.side.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in unborn {
            self.write_side(warehouse, &mut manifest, &name, Vec::new(), &build_id, number).await?;
        }

        manifest.fingerprints = Some(self.fps.clone());
        manifest.content = Some(ContentVersions { rows: build_id.clone(), columns: Default::default() });
        manifest.positions.insert(feed, self.position.clone());
        manifest.stream = Some(checkpoint);
        let manifest = warehouse.commit(&manifest, self.base.as_ref(), &self.dataset.schema).await?;
        self.base = Some(manifest.clone());
        crate::failpoint("after_checkpoint");
        self.publish_sides(warehouse, &manifest).await?;
        // Past `compact_after` files, the small ones become files of the target size.
        let mut manifest = manifest;
        if crate::compact::due(&manifest, &self.dataset.layout)
            && let Some(done) = crate::compact::compact(
                warehouse,
                &self.task,
                &manifest,
                Arc::clone(&self.dataset.schema),
                &self.dataset.layout,
                &self.parquet,
                &self.run_id,
                Some(number),
            )
            .await?
        {
            manifest = done.manifest;
            self.base = Some(manifest.clone());
        }
        let event = TelemetryEvent {
            product: Some(self.dataset.name.clone()),
            build_id: Some(manifest.build_id.clone()),
            checkpoint: Some(CheckpointStats {
                build_dir: manifest.build_dir.clone(),
                records: self.position.records,
                batches: self.position.batches,
                watermark_ms: self.watermark.current(),
                rows_emitted: self.totals.emitted,
                late: self.totals.late,
                state_rows: manifest.stream.as_ref().map_or(0, |c| c.state_rows),
            }),
            ..TelemetryEvent::new(&self.run_id, "checkpoint")
        };
        self.current = Some(manifest);
        self.checkpoints += 1;
        Ok(Some(event))
    }

    /// Writes `batches` into a new build of side dataset `name` (`<view>__late`,
    /// `<stream>__rejected`) and puts its commit — the files it adds, the position — in
    /// the view's `manifest`, which commits it.
    async fn write_side(
        &self,
        warehouse: &Warehouse,
        manifest: &mut Manifest,
        name: &str,
        batches: Vec<RecordBatch>,
        build_id: &str,
        number: u64,
    ) -> Result<()> {
        let Some(side) = self.sides.get(name) else {
            return Err(DataError::Internal(format!("view `{}` writes no side dataset `{name}`", self.dataset.name)));
        };
        let ids =
            BuildIds { build_id: side_build_id(build_id, name), run_id: self.run_id.clone(), batch: Some(number) };
        let spec = WriteSpec::derived(name, ids, &side.schema, self.dataset.layout.files.max_rows, &self.parquet)?;
        let rows = batches_stream(Arc::clone(&side.schema), batches);
        let new = write_dataset(warehouse, vec![rows], Arc::new(spec), Arc::default()).await?;
        let kept = if side.continues { side.committed.as_ref() } else { None };
        let mut new = merge_existing(new, kept, ExistingData::Append)?;
        new.fingerprints = Some(self.fps.clone());
        new.positions.insert(self.program.stream.name.clone(), self.position.clone());
        let before = side.committed.iter().flat_map(|m| &m.files).map(|f| f.path.as_str()).collect();
        manifest.side.insert(name.to_owned(), KilnCommit::of(&new, &before));
        Ok(())
    }

    /// Commits the side datasets' commits the view's committed `manifest` carries, where
    /// their tables do not have them yet.
    async fn publish_sides(&mut self, warehouse: &Warehouse, manifest: &Manifest) -> Result<()> {
        for (name, record) in &manifest.side {
            let Some(side) = self.sides.get_mut(name) else { continue };
            if side.committed.as_ref().map(|m| &m.build_id) == Some(&record.build_id) {
                continue;
            }
            crate::failpoint("before_side_publish");
            let full = record.over(side.committed.as_ref());
            let committed = warehouse.commit(&full, side.committed.as_ref(), &side.schema).await?;
            crate::failpoint("after_side_commit");
            side.committed = Some(committed);
            side.continues = true;
        }
        Ok(())
    }

    /// The view's progress; `elapsed` seconds since the last report give the rate.
    pub async fn status(&mut self, elapsed: f64) -> ViewStatus {
        let events = self.totals.events;
        let rate = (events - self.reported_events.min(events)) as f64 / elapsed.max(1e-9);
        self.reported_events = events;
        let lag_records = match &self.source {
            MicroBatchSource::Log(log) => match crate::log::LogTopic::open(&log.warehouse, &log.topic).await {
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
        let watermark_ms = self.watermark.current();
        ViewStatus {
            view: self.dataset.name.clone(),
            stream: self.program.stream.name.clone(),
            events,
            events_per_second: rate,
            watermark_ms,
            watermark: watermark_ms.map(kiln_artifact::time::rfc3339_ms),
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

/// `batches` as a stream of `schema`.
fn batches_stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches.into_iter().map(Ok))))
}
