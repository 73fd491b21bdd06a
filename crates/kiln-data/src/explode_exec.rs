//! `ExplodeExec`: the execution operator behind Kiln's SQL `UNNEST` joins.
//!
//! For each input row it evaluates the UNNEST arguments (lists or maps), explodes them
//! together with [`kiln_explode`] (zipped: row j of a parent takes element j of each list,
//! shorter lists padded with NULL) and emits the input row's columns followed by the
//! element columns (a map contributes key and value) and, when asked, the element index.
//!
//! Semantics (brief §4): output order within a partition is (input row, idx); with
//! `keep_empty` an empty or NULL list yields one row with NULL elements and a NULL idx
//! (`LEFT JOIN UNNEST(...) ON TRUE`), otherwise such rows vanish (inner semantics);
//! NULL elements are kept with their idx.
//!
//! Streaming: one input batch is exploded at a time and its output is emitted in slices of
//! at most the session's batch size, so memory is bounded by one input batch's expansion.
//! Partitioning and the input's orderings are preserved: the input columns keep their
//! positions in the output.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use kiln_explode::{ExplodeOptions, explode_columns};

/// How the UNNEST was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub struct ExplodeMode {
    /// `LEFT JOIN UNNEST(...) ON TRUE`: keep empty and NULL lists as one padded row.
    pub keep_empty: bool,
    /// `WITH OFFSET` (Some(0)) or `WITH ORDINALITY` (Some(1)): emit the element index.
    pub idx_base: Option<i64>,
}

/// Explodes the lists (or maps) computed by `args` for each input row. See the module docs.
#[derive(Debug, Clone)]
pub struct ExplodeExec {
    input: Arc<dyn ExecutionPlan>,
    /// Input columns passed through, in output order.
    carried: Vec<usize>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    mode: ExplodeMode,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ExplodeExec {
    /// `schema` is the `carried` input fields followed by one field per list argument (two
    /// per map argument) and, with an index, an Int64 field.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        carried: Vec<usize>,
        args: Vec<Arc<dyn PhysicalExpr>>,
        mode: ExplodeMode,
        schema: SchemaRef,
    ) -> Result<Self> {
        let input_width = carried.len();
        if let Some(&bad) = carried.iter().find(|&&i| i >= input.schema().fields().len()) {
            return Err(DataFusionError::Internal(format!("ExplodeExec: carried column {bad} out of range")));
        }
        let produced: usize = args
            .iter()
            .map(|a| {
                Ok(match a.data_type(input.schema().as_ref())? {
                    DataType::Map(..) => 2,
                    _ => 1,
                })
            })
            .sum::<Result<usize>>()?;
        let expected = input_width + produced + usize::from(mode.idx_base.is_some());
        if schema.fields().len() != expected {
            return Err(DataFusionError::Internal(format!(
                "ExplodeExec: schema has {} fields, expected {expected}",
                schema.fields().len()
            )));
        }
        // Input orderings stay valid when the carried columns keep their indices (the
        // arguments come last in the input, so that is the usual case).
        let input_props = input.properties();
        let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
        let prefix = carried.iter().enumerate().all(|(k, &i)| k == i);
        if prefix
            && let Some(ordering) = input_props.output_ordering()
            && ordering.iter().all(|s| s.expr.downcast_ref::<Column>().is_some_and(|c| c.index() < carried.len()))
        {
            eq.add_orderings([ordering.iter().cloned()]);
        }
        let properties = PlanProperties::new(
            eq,
            input_props.output_partitioning().clone(),
            input_props.emission_type,
            input_props.boundedness,
        );
        Ok(Self {
            input,
            carried,
            args,
            mode,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn mode(&self) -> ExplodeMode {
        self.mode
    }
}

impl DisplayAs for ExplodeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let args: Vec<String> = self.args.iter().map(|a| a.to_string()).collect();
        write!(f, "ExplodeExec: args=[{}]", args.join(", "))?;
        if self.mode.keep_empty {
            write!(f, ", keep_empty")?;
        }
        if let Some(base) = self.mode.idx_base {
            write!(f, ", idx_base={base}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ExplodeExec {
    fn name(&self) -> &str {
        "ExplodeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for arg in &self.args {
            if f(arg)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!("ExplodeExec has one child, got {}", children.len())));
        }
        let input = children.swap_remove(0);
        match options.children_properties {
            ChildrenPropertiesMode::Keep => {
                Ok(Arc::new(Self { input, metrics: ExecutionPlanMetricsSet::new(), ..Self::clone(&self) }))
            }
            ChildrenPropertiesMode::Recompute => Ok(Arc::new(Self::try_new(
                input,
                self.carried.clone(),
                self.args.clone(),
                self.mode,
                Arc::clone(&self.schema),
            )?)),
        }
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size().max(1);
        let input = self.input.execute(partition, context)?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let job = Arc::new(Job {
            carried: self.carried.clone(),
            args: self.args.clone(),
            mode: self.mode,
            schema: Arc::clone(&self.schema),
            batch_size,
        });
        let stream = input.flat_map(move |batch| {
            let out = batch.and_then(|b| {
                let _timer = metrics.elapsed_compute().timer();
                let out = job.explode(&b)?;
                metrics.record_output(out.iter().map(RecordBatch::num_rows).sum());
                Ok(out)
            });
            futures::stream::iter(match out {
                Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct Job {
    carried: Vec<usize>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    mode: ExplodeMode,
    schema: SchemaRef,
    batch_size: usize,
}

impl Job {
    fn explode(&self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let lists: Vec<ArrayRef> =
            self.args.iter().map(|a| a.evaluate(batch)?.into_array(rows)).collect::<Result<_>>()?;
        let refs: Vec<&dyn Array> = lists.iter().map(|a| a.as_ref()).collect();
        let options = ExplodeOptions {
            keep_empty: self.mode.keep_empty,
            with_idx: self.mode.idx_base.is_some(),
            idx_base: self.mode.idx_base.unwrap_or(0),
            with_flags: false,
        };
        let carry: Vec<ArrayRef> = self.carried.iter().map(|&i| Arc::clone(batch.column(i))).collect();
        let chunks = explode_columns(&carry, &refs, &options, self.batch_size)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let carried = carry.len();
        chunks
            .into_iter()
            .map(|chunk| {
                let mut columns = Vec::with_capacity(self.schema.fields().len());
                let mut produced = chunk.into_iter();
                columns.extend(produced.by_ref().take(carried));
                for list in &lists {
                    let Some(values) = produced.next() else { break };
                    if matches!(list.data_type(), DataType::Map(..)) {
                        let entries = values.as_struct();
                        columns.extend([Arc::clone(entries.column(0)), Arc::clone(entries.column(1))]);
                    } else {
                        columns.push(values);
                    }
                }
                columns.extend(produced); // the index
                Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
            })
            .collect()
    }
}
