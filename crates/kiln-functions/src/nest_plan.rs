//! Physical planning for the nest operator ([`crate::nest`]): one aggregation phase, and
//! aggregate output the memory pool can account for.
//!
//! [`NestPlan`] is a physical optimizer rule that runs after DataFusion's own, with two
//! rewrites:
//!
//! - **One phase for `array_agg`.** A partial `array_agg` reduces nothing: its state is
//!   every value of the group, so Partial → hash repartition → FinalPartitioned builds the
//!   lists twice, holds both copies, and repartitions lists instead of rows. When every
//!   aggregate of a grouped `AggregateExec` pair is Kiln's `array_agg`, the pair becomes one
//!   `SinglePartitioned` aggregate over rows hash-partitioned on the group keys. When the
//!   input already is hash-partitioned on a subset of the group keys (a join on the order
//!   key feeding `GROUP BY o_orderkey, o_orderdate`), rows equal on every group key are
//!   already in one partition and the repartition goes too. Output schema, rows and lists
//!   are unchanged (the accumulator breaks ties by value, so lists do not depend on how
//!   rows reach it).
//! - **Compacted aggregate output.** DataFusion's grouped aggregation emits all groups as
//!   one batch and hands it on in `batch_size` slices that share its buffers; a sort or
//!   join above accounts every slice as the whole buffer (the example's `orders_nested` at
//!   SF 1: 11.7 GB reserved by a process at 3.4 GiB RSS, so any pool refused it). A
//!   [`CompactExec`] above each grouped final aggregate copies a slice into its own buffers
//!   when the buffers it holds are more than twice what it uses, so what is reserved is
//!   what is held.
//!
//! Written here rather than taken from DataFusion: DataFusion 55 has neither (its
//! `CombinePartialFinalAggregate` only merges a pair with nothing between them, and the
//! sort's reservation is `get_record_batch_memory_size` of each slice).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, MutableArrayData, RecordBatch, RecordBatchOptions, make_array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::nest::KilnArrayAgg;

/// The rule (module docs).
#[derive(Debug, Default)]
pub struct NestPlan;

impl PhysicalOptimizerRule for NestPlan {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan.transform_up(|node| Ok(one_phase(&node)?.map_or(Transformed::no(node), Transformed::yes)))?;
        plan.data
            .transform_up(|node| {
                let compact = node
                    .downcast_ref::<AggregateExec>()
                    .is_some_and(|a| !matches!(a.mode(), AggregateMode::Partial) && !a.group_expr().expr().is_empty());
                Ok(if compact {
                    Transformed::yes(Arc::new(CompactExec::new(node)) as _)
                } else {
                    Transformed::no(node)
                })
            })
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kiln_nest_plan"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `Final[Partitioned](Repartition(Partial(input)))` with only Kiln `array_agg`s as one
/// `SinglePartitioned` aggregate; `None` when `node` is not such a pair.
fn one_phase(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(last) = node.downcast_ref::<AggregateExec>() else { return Ok(None) };
    if !matches!(last.mode(), AggregateMode::FinalPartitioned) {
        return Ok(None);
    }
    let Some(repartition) = last.input().downcast_ref::<RepartitionExec>() else { return Ok(None) };
    let Partitioning::Hash(_, partitions) = repartition.partitioning() else { return Ok(None) };
    let Some(first) = repartition.input().downcast_ref::<AggregateExec>() else { return Ok(None) };
    let group_by = first.group_expr();
    let only_nest =
        !first.aggr_expr().is_empty() && first.aggr_expr().iter().all(|a| a.fun().inner().is::<KilnArrayAgg>());
    if !matches!(first.mode(), AggregateMode::Partial)
        || !group_by.is_single()
        || group_by.expr().is_empty()
        || !only_nest
    {
        return Ok(None);
    }
    let input = Arc::clone(first.input());
    let keys: Vec<_> = group_by.input_exprs();
    let input = if hashed_on_subset(input.output_partitioning(), &keys) {
        input
    } else {
        Arc::new(RepartitionExec::try_new(input, Partitioning::Hash(keys, *partitions))?)
    };
    let single = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        group_by.clone(),
        first.aggr_expr().to_vec(),
        first.filter_expr().to_vec(),
        input,
        first.input_schema(),
    )?
    .with_limit_options(last.limit_options());
    // The pair's output must be this one's exactly (names included), or leave it be.
    if single.schema() != last.schema() {
        return Ok(None);
    }
    Ok(Some(Arc::new(single)))
}

/// Whether `partitioning` is a hash on columns that are all among `keys`: rows equal on
/// every key then always share a partition.
fn hashed_on_subset(partitioning: &Partitioning, keys: &[Arc<dyn PhysicalExpr>]) -> bool {
    let Partitioning::Hash(exprs, _) = partitioning else { return false };
    let column = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().cloned();
    let keys: Vec<Column> = keys.iter().filter_map(column).collect();
    !exprs.is_empty() && exprs.iter().all(|e| column(e).is_some_and(|c| keys.contains(&c)))
}

/// Copies each batch whose buffers are more than twice what it uses into its own buffers
/// (module docs); others pass through untouched.
#[derive(Debug)]
pub struct CompactExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl CompactExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self { input, properties }
    }
}

/// Bytes of slack before a batch counts as holding more than it uses.
const SLACK: usize = 1 << 20;

/// `batch` in buffers of its own when the ones it shares are more than twice its size.
pub fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    let mut used = 0;
    for column in batch.columns() {
        used += used_bytes(column.as_ref())?;
    }
    if get_record_batch_memory_size(&batch) <= 2 * used + SLACK {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            let data = c.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(batch.schema(), columns, &options)?)
}

/// The bytes `array` uses: its own range of its buffers, and of its children's. (Arrow's
/// `get_slice_memory_size` counts a sliced list's child whole, which is the waste to find.)
fn used_bytes(array: &dyn Array) -> Result<usize> {
    let nulls = array.nulls().map_or(0, |n| n.len().div_ceil(8));
    Ok(match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let (start, end) = (list.value_offsets()[0] as usize, list.value_offsets()[list.len()] as usize);
            nulls + (list.len() + 1) * 4 + used_bytes(list.values().slice(start, end - start).as_ref())?
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let (start, end) = (list.value_offsets()[0] as usize, list.value_offsets()[list.len()] as usize);
            nulls + (list.len() + 1) * 8 + used_bytes(list.values().slice(start, end - start).as_ref())?
        }
        DataType::Map(..) => {
            let map = array.as_map();
            let (start, end) = (map.value_offsets()[0] as usize, map.value_offsets()[map.len()] as usize);
            nulls + (map.len() + 1) * 4 + used_bytes(&map.entries().slice(start, end - start))?
        }
        DataType::Struct(_) => {
            let mut sum = nulls;
            for column in array.as_struct().columns() {
                sum += used_bytes(column.as_ref())?;
            }
            sum
        }
        _ => array.to_data().get_slice_memory_size()?,
    })
}

impl DisplayAs for CompactExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CompactExec")
    }
}

impl ExecutionPlan for CompactExec {
    fn name(&self) -> &str {
        "CompactExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(input))),
            Err(c) => internal_err!("CompactExec takes one child, got {}", c.len()),
        }
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, input.map(|b| b.and_then(compact)))))
    }
}
