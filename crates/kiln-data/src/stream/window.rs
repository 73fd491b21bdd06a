//! Windowed aggregation over a stream, run by DataFusion's own `AggregateExec` in three
//! modes (ARCHITECTURE.md, "Streaming"):
//!
//! - each micro-batch goes through `Partial` (grouped by window start and keys), giving
//!   accumulator state per group;
//! - the state of open windows — one Arrow batch, one row per (window, key) — is merged
//!   with each new partial batch by `PartialReduce`;
//! - [`WindowAggregate::close`] takes the rows of windows the watermark has passed
//!   (`start + size <= watermark`) through `Final` and returns them ordered by window
//!   start; the other rows stay as state.
//!
//! Any aggregate function works: DataFusion's accumulators do the work, so the emitted
//! values equal a batch `GROUP BY` over the same events. The state is plain Arrow, which
//! is what a checkpoint stores ([`WindowAggregate::state`], [`WindowAggregate::restore`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::program::WindowProgram;

/// Units of a timestamp per millisecond (seconds: 0, treated as 1/1000 by callers
/// that divide; windows are whole milliseconds).
pub fn units_per_ms(unit: datafusion::arrow::datatypes::TimeUnit) -> i64 {
    use datafusion::arrow::datatypes::TimeUnit;
    match unit {
        TimeUnit::Second | TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1_000_000,
    }
}

/// The aggregation of a windowed view, taken apart from a planned query.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Group expressions over the input batches; `window` is the one giving the window
    /// start (a timestamp).
    pub group_by: PhysicalGroupBy,
    pub aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    pub filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The schema of the input batches.
    pub input_schema: SchemaRef,
    /// Index of the window start among the group expressions.
    pub window: usize,
    /// The window's length, in the window start column's unit.
    pub size: i64,
}

impl WindowSpec {
    /// [`WindowSpec::from_plan`] for a view's plan and its [`WindowProgram`]: the window
    /// start is the program's group expression, which must be a timestamp; the window's
    /// length is converted to that timestamp's unit. `None` when the plan does not
    /// aggregate or that group expression is not a timestamp.
    pub fn for_view(plan: &Arc<dyn ExecutionPlan>, window: &WindowProgram) -> Option<(Self, Arc<dyn ExecutionPlan>)> {
        let (mut spec, input) = Self::from_plan(plan, window.group_index, window.size_ms)?;
        let (expr, _) = spec.group_by.expr().get(window.group_index)?;
        let DataType::Timestamp(unit, _) = expr.data_type(&spec.input_schema).ok()? else { return None };
        spec.size = window.size_ms.checked_mul(units_per_ms(unit))?;
        Some((spec, input))
    }

    /// Units of the window start column per millisecond.
    pub fn units_per_ms(&self) -> i64 {
        match self.group_by.expr().get(self.window).map(|(e, _)| e.data_type(&self.input_schema)) {
            Some(Ok(DataType::Timestamp(unit, _))) => units_per_ms(unit),
            _ => 1,
        }
    }

    /// The aggregation of `plan` (its topmost `AggregateExec`, seen through a
    /// `Final`/`Partial` pair as DataFusion plans it) and the plan below it (the stateless
    /// part), or `None` when the plan does not aggregate.
    pub fn from_plan(
        plan: &Arc<dyn ExecutionPlan>,
        window: usize,
        size: i64,
    ) -> Option<(Self, Arc<dyn ExecutionPlan>)> {
        let mut node = Arc::clone(plan);
        loop {
            if let Some(agg) = node.downcast_ref::<AggregateExec>() {
                let agg = match agg.mode() {
                    AggregateMode::Final | AggregateMode::FinalPartitioned => {
                        // Down to the Partial below the exchange.
                        let mut below = Arc::clone(agg.input());
                        loop {
                            if let Some(p) = below.downcast_ref::<AggregateExec>() {
                                break p.clone();
                            }
                            below = Arc::clone(below.children().first()?);
                        }
                    }
                    _ => agg.clone(),
                };
                let spec = WindowSpec {
                    group_by: agg.group_expr().clone(),
                    aggr_expr: agg.aggr_expr().to_vec(),
                    filter_expr: agg.filter_expr().to_vec(),
                    input_schema: agg.input_schema(),
                    window,
                    size,
                };
                return Some((spec, Arc::clone(agg.input())));
            }
            node = Arc::clone(node.children().first()?);
        }
    }
}

/// The running aggregation of open windows (see the module docs).
#[derive(Debug)]
pub struct WindowAggregate {
    spec: WindowSpec,
    /// Partial state of the open windows, one row per (window, key); `None` when empty.
    state: Option<RecordBatch>,
    task: Arc<TaskContext>,
}

impl WindowAggregate {
    pub fn new(spec: WindowSpec, task: Arc<TaskContext>) -> Self {
        Self { spec, state: None, task }
    }

    /// The partial state of the open windows (for a checkpoint).
    pub fn state(&self) -> Option<&RecordBatch> {
        self.state.as_ref()
    }

    /// Restores the state a checkpoint stored.
    pub fn restore(&mut self, state: Option<RecordBatch>) {
        self.state = state.filter(|s| s.num_rows() > 0);
    }

    /// The state as an Arrow IPC file (what a checkpoint stores); `None` when empty.
    pub fn state_ipc(&self) -> DfResult<Option<Vec<u8>>> {
        let Some(state) = &self.state else { return Ok(None) };
        let mut out = Vec::new();
        let mut writer = datafusion::arrow::ipc::writer::FileWriter::try_new(&mut out, &state.schema())?;
        writer.write(state)?;
        writer.finish()?;
        drop(writer);
        Ok(Some(out))
    }

    /// Restores the state from an Arrow IPC file [`WindowAggregate::state_ipc`] wrote.
    pub fn restore_ipc(&mut self, bytes: bytes::Bytes) -> DfResult<()> {
        let reader = datafusion::arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        self.restore(Some(concat_batches(&schema, &batches)?));
        Ok(())
    }

    /// Bytes held by the open windows' state.
    pub fn state_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, RecordBatch::get_array_memory_size)
    }

    /// Open (window, key) groups.
    pub fn open_groups(&self) -> usize {
        self.state.as_ref().map_or(0, RecordBatch::num_rows)
    }

    fn stage(
        &self,
        mode: AggregateMode,
        batches: Vec<RecordBatch>,
        schema: SchemaRef,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let source = MemorySourceConfig::try_new_exec(&[batches], schema, None)?;
        let group_by = match mode {
            AggregateMode::Partial => self.spec.group_by.clone(),
            _ => self.spec.group_by.as_final(),
        };
        Ok(Arc::new(AggregateExec::try_new(
            mode,
            group_by,
            self.spec.aggr_expr.clone(),
            self.spec.filter_expr.clone(),
            source,
            Arc::clone(&self.spec.input_schema),
        )?))
    }

    async fn run(&self, plan: Arc<dyn ExecutionPlan>) -> DfResult<Option<RecordBatch>> {
        let schema = plan.schema();
        let batches = collect(plan, Arc::clone(&self.task)).await?;
        let batch = concat_batches(&schema, &batches)?;
        Ok((batch.num_rows() > 0).then_some(batch))
    }

    /// Adds a batch of input rows (the stateless part's output) to the open windows.
    pub async fn push(&mut self, batch: RecordBatch) -> DfResult<()> {
        self.push_all(vec![batch]).await
    }

    /// Adds the batches of one micro-batch to the open windows (one partial aggregation
    /// and one merge with the state for all of them).
    pub async fn push_all(&mut self, batches: Vec<RecordBatch>) -> DfResult<()> {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return Ok(());
        }
        let partial = self.stage(AggregateMode::Partial, batches, Arc::clone(&self.spec.input_schema))?;
        let state_schema = partial.schema();
        let Some(partial) = self.run(partial).await? else { return Ok(()) };
        let mut inputs = vec![partial];
        inputs.extend(self.state.take());
        let reduce = self.stage(AggregateMode::PartialReduce, inputs, state_schema)?;
        self.state = self.run(reduce).await?;
        Ok(())
    }

    /// Closes every window whose end (`start + size`) is at or before `watermark` (in the
    /// window column's unit): their final rows, ordered by window start (then as grouped).
    pub async fn close(&mut self, watermark: i64) -> DfResult<Option<RecordBatch>> {
        let Some(state) = self.state.take() else { return Ok(None) };
        let starts = cast(state.column(self.spec.window), &DataType::Int64)?;
        let starts = starts
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("window start is not a timestamp".into()))?;
        let closing: BooleanArray =
            starts.iter().map(|s| Some(s.is_some_and(|s| s.saturating_add(self.spec.size) <= watermark))).collect();
        let open = datafusion::arrow::compute::not(&closing)?;
        let kept = filter_record_batch(&state, &open)?;
        self.state = (kept.num_rows() > 0).then_some(kept);
        let done = filter_record_batch(&state, &closing)?;
        if done.num_rows() == 0 {
            return Ok(None);
        }
        let final_stage = self.stage(AggregateMode::Final, vec![done], state.schema())?;
        let Some(out) = self.run(final_stage).await? else { return Ok(None) };
        // Window-end order (ends are starts plus one size), stable within a window.
        let column =
            SortColumn { values: Arc::clone(out.column(self.spec.window)), options: Some(SortOptions::default()) };
        let order = lexsort_to_indices(&[column], None)?;
        Ok(Some(take_record_batch(&out, &order)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::prelude::SessionContext;

    const QUERY: &str = "SELECT date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01') AS w, user,
        count(*) AS n, sum(amount) AS total, max(amount) AS top, count(DISTINCT amount) AS kinds
        FROM events GROUP BY 1, 2";

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("user", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, true),
        ]))
    }

    /// Events with timestamps in [0, 60 s), shuffled within `disorder` ms of their place.
    fn events(n: usize, seed: u64, disorder: i64) -> Vec<(i64, String, Option<f64>)> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        (0..n)
            .map(|i| {
                let base = (i as i64) * 60_000 / n as i64;
                let ts = (base - (next() as i64 % disorder.max(1))).max(0);
                let amount = if next() % 7 == 0 { None } else { Some((next() % 50) as f64 / 2.0) };
                (ts, format!("u{}", next() % 4), amount)
            })
            .collect()
    }

    fn batch(rows: &[(i64, String, Option<f64>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    async fn table_text(ctx: &SessionContext, batches: Vec<RecordBatch>) -> Vec<String> {
        let df = ctx.read_batches(batches).unwrap();
        let sorted = df.sort_by(vec![datafusion::prelude::col("w"), datafusion::prelude::col("user")]).unwrap();
        let out = sorted.collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The oracle: out-of-order events pushed in micro-batches while the watermark (max
    /// event time minus the allowed disorder) closes windows give, in all, exactly a batch
    /// GROUP BY of the same events; windows come out in window order.
    #[tokio::test]
    async fn windows_equal_a_batch_group_by() {
        for (seed, batch_rows, disorder) in [(1, 7, 900), (2, 50, 3_000), (3, 1, 1), (4, 333, 9_999)] {
            let all = events(1_000, seed, disorder);
            let ctx = SessionContext::new();
            ctx.register_batch("events", batch(&all)).unwrap();
            let expected = ctx.sql(QUERY).await.unwrap().collect().await.unwrap();

            let plan = ctx.sql(QUERY).await.unwrap().create_physical_plan().await.unwrap();
            let (spec, _) = WindowSpec::from_plan(&plan, 0, 10_000).unwrap();
            let mut agg = WindowAggregate::new(spec, ctx.task_ctx());
            let mut emitted = Vec::new();
            let mut max_ts = i64::MIN;
            let mut last_window = i64::MIN;
            for chunk in all.chunks(batch_rows) {
                agg.push(batch(chunk)).await.unwrap();
                max_ts = max_ts.max(chunk.iter().map(|r| r.0).max().unwrap());
                if let Some(out) = agg.close(max_ts - disorder).await.unwrap() {
                    let w = cast(out.column(0), &DataType::Int64).unwrap();
                    let w = w.as_any().downcast_ref::<Int64Array>().unwrap();
                    assert!(w.values().first().is_some_and(|f| *f > last_window), "windows come out once, in order");
                    last_window = *w.values().last().unwrap();
                    emitted.push(out);
                }
            }
            if let Some(out) = agg.close(i64::MAX).await.unwrap() {
                emitted.push(out);
            }
            assert_eq!(agg.open_groups(), 0);
            // The partial aggregate's output carries the plan's final schema only after the
            // projection; compare by value.
            let emitted: Vec<RecordBatch> = emitted
                .into_iter()
                .map(|b| RecordBatch::try_new(expected[0].schema(), b.columns().to_vec()).unwrap())
                .collect();
            assert_eq!(table_text(&ctx, emitted).await, table_text(&ctx, expected).await, "seed {seed}");
        }
    }

    /// The state is plain Arrow: stored and restored midway, the result is the same.
    #[tokio::test]
    async fn state_round_trips() {
        let all = events(400, 9, 500);
        let ctx = SessionContext::new();
        ctx.register_batch("events", batch(&all)).unwrap();
        let plan = ctx.sql(QUERY).await.unwrap().create_physical_plan().await.unwrap();
        let (spec, _) = WindowSpec::from_plan(&plan, 0, 10_000).unwrap();
        let mut straight = WindowAggregate::new(spec.clone(), ctx.task_ctx());
        let mut first = WindowAggregate::new(spec.clone(), ctx.task_ctx());
        for chunk in all[..200].chunks(33) {
            straight.push(batch(chunk)).await.unwrap();
            first.push(batch(chunk)).await.unwrap();
        }
        let mut restored = WindowAggregate::new(spec, ctx.task_ctx());
        restored.restore(first.state().cloned());
        for chunk in all[200..].chunks(33) {
            straight.push(batch(chunk)).await.unwrap();
            restored.push(batch(chunk)).await.unwrap();
        }
        let a = straight.close(i64::MAX).await.unwrap().unwrap();
        let b = restored.close(i64::MAX).await.unwrap().unwrap();
        assert_eq!(a, b);
    }
}
