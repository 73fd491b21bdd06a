//! The tables micro-batch sources are registered as: [`MicroBatchTable`], bound to one
//! micro-batch at a time (views and ingest products are planned over it once), and
//! [`StreamTable`], the source followed as an unbounded table (`kiln query` over a
//! stream). Both scan through [`MicroBatchExec`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, PlanProperties};

use super::source::MicroBatchSource;

/// The table a micro-batch source is registered as: it holds the current micro-batch,
/// which the engine binds before executing. Its scan ([`MicroBatchExec`]) reads the
/// batches bound *when it executes*, so a stream's plan is made once and executed per
/// micro-batch.
#[derive(Debug)]
pub struct MicroBatchTable {
    name: String,
    schema: SchemaRef,
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl MicroBatchTable {
    pub fn new(name: String, schema: SchemaRef) -> Self {
        Self { name, schema, batches: Arc::default() }
    }

    /// Makes `batches` what the next execution reads.
    pub fn bind(&self, batches: Vec<RecordBatch>) {
        if let Ok(mut b) = self.batches.lock() {
            *b = batches;
        }
    }
}

impl fmt::Display for MicroBatchTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "micro-batch source `{}`", self.name)
    }
}

#[async_trait]
impl TableProvider for MicroBatchTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let feed = Feed::Bound { name: self.name.clone(), batches: Arc::clone(&self.batches) };
        Ok(Arc::new(MicroBatchExec::try_new(feed, &self.schema, projection)?))
    }
}

/// A stream read as an unbounded table (`kiln query` over a stream): its scan
/// ([`MicroBatchExec`] following the source) reads the source from its beginning,
/// micro-batch after micro-batch, and waits (the stream is `Pending`) while nothing is
/// new, so `SELECT ... LIMIT n` returns once n records have arrived and a plain `SELECT`
/// follows the stream until interrupted. DataFusion rejects what cannot run over
/// unbounded input (an aggregate, a sort). Records that do not conform follow the
/// stream's `on_error`: `fail` ends the query naming the record, `reject` skips them (the
/// views' runs set them aside).
#[derive(Debug)]
pub struct StreamTable {
    source: MicroBatchSource,
    poll_interval: Duration,
}

impl StreamTable {
    pub fn new(source: MicroBatchSource, poll_interval: Duration) -> Self {
        Self { source, poll_interval }
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.source.schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let feed = Feed::Follow { source: self.source.clone(), poll_interval: self.poll_interval };
        Ok(Arc::new(MicroBatchExec::try_new(feed, self.source.schema(), projection)?))
    }
}

/// Where a [`MicroBatchExec`] takes its batches from.
#[derive(Debug, Clone)]
enum Feed {
    /// The batches bound to a [`MicroBatchTable`] when the plan executes (bounded).
    Bound { name: String, batches: Arc<Mutex<Vec<RecordBatch>>> },
    /// The source itself, from its beginning, waiting while nothing is new (unbounded).
    Follow { source: MicroBatchSource, poll_interval: Duration },
}

/// The scan of a micro-batch source: one partition, fed as [`Feed`] says.
#[derive(Debug)]
pub struct MicroBatchExec {
    feed: Feed,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl MicroBatchExec {
    fn try_new(feed: Feed, schema: &SchemaRef, projection: Option<&Vec<usize>>) -> DfResult<Self> {
        let schema = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(schema),
        };
        let boundedness = match feed {
            Feed::Bound { .. } => Boundedness::Bounded,
            Feed::Follow { .. } => Boundedness::Unbounded { requires_infinite_memory: false },
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            boundedness,
        );
        Ok(Self { feed, projection: projection.cloned(), properties: Arc::new(properties) })
    }

    /// The batches a following scan reads: the source's micro-batches from its start;
    /// while none is new it sleeps `poll` (the stream is pending); a read error ends it.
    fn follow(source: MicroBatchSource, poll: Duration) -> impl futures::Stream<Item = DfResult<RecordBatch>> {
        /// Records are read in batches of the usual size whatever the session's (a query
        /// that follows a stream runs with tiny batches so its rows show as they arrive).
        const READ_BATCH: usize = 8192;
        let start = (source.start(), source, std::collections::VecDeque::new(), false);
        futures::stream::unfold(start, move |(mut position, source, mut pending, done)| async move {
            loop {
                if done {
                    return None;
                }
                if let Some(batch) = pending.pop_front() {
                    return Some((Ok(batch), (position, source, pending, false)));
                }
                match source.next_batch(&position, READ_BATCH).await {
                    Ok(Some(micro)) => {
                        position = micro.position;
                        pending.extend(micro.batches);
                    }
                    Ok(None) => tokio::time::sleep(poll).await,
                    Err(e) => {
                        let e = datafusion::error::DataFusionError::External(Box::new(e));
                        return Some((Err(e), (position, source, pending, true)));
                    }
                }
            }
        })
    }
}

impl DisplayAs for MicroBatchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.feed {
            Feed::Bound { name, .. } => write!(f, "MicroBatchExec: source={name}"),
            Feed::Follow { source, .. } => write!(f, "MicroBatchExec: follows stream={}", source.name()),
        }
    }
}

impl ExecutionPlan for MicroBatchExec {
    fn name(&self) -> &str {
        "MicroBatchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let projection = self.projection.clone();
        let project = move |batch: DfResult<RecordBatch>| match (&projection, batch) {
            (Some(p), Ok(b)) => b.project(p).map_err(Into::into),
            (_, batch) => batch,
        };
        let batches: futures::stream::BoxStream<'static, DfResult<RecordBatch>> = match &self.feed {
            Feed::Bound { batches, .. } => {
                let bound = batches.lock().map(|b| b.clone()).unwrap_or_default();
                Box::pin(futures::stream::iter(bound.into_iter().map(Ok)))
            }
            Feed::Follow { source, poll_interval } => Box::pin(Self::follow(source.clone(), *poll_interval)),
        };
        let schema = self.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::StreamExt::map(batches, project))))
    }
}
