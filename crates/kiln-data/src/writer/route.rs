//! Where rows go: partition values grouped per batch and named as Hive directories, tier
//! 1's routing of each directory's rows to one writer, and the pipelining that keeps the
//! plan computing while the writers encode.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use super::spec::{Target, WriteSpec, conform};
use crate::{DataError, Result};

/// Batches the writer has not taken yet, per output partition: the plan computes the next
/// batches while the writer encodes the current one.
pub(crate) const PIPELINE_DEPTH: usize = 2;

/// Tier 1 with `PARTITIONED BY`: one task per input stream groups each batch's rows by
/// partition values and sends each group to the writer that owns its directory; a
/// directory is owned by writer `k % writers` for the k-th directory seen. A batch that
/// cannot be grouped (it breaks the contract) goes whole to writer 0, whose conform
/// reports the error.
pub(crate) fn route_by_key(
    streams: Vec<SendableRecordBatchStream>,
    spec: &Arc<WriteSpec>,
    target: &Arc<Target>,
    writers: usize,
) -> Vec<SendableRecordBatchStream> {
    type Batch = datafusion::error::Result<RecordBatch>;
    let Some(schema) = streams.first().map(|s| s.schema()) else { return Vec::new() };
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..writers.max(1)).map(|_| tokio::sync::mpsc::channel::<Batch>(PIPELINE_DEPTH)).unzip();
    let owners: Arc<std::sync::Mutex<HashMap<Vec<Option<String>>, usize>>> = Arc::default();
    for mut stream in streams {
        let (senders, owners, spec, target) =
            (senders.clone(), Arc::clone(&owners), Arc::clone(spec), Arc::clone(target));
        tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                let Ok(raw) = batch else {
                    let _ = senders[0].send(batch).await;
                    return;
                };
                let groups = conform(raw.clone(), &spec).and_then(|b| {
                    group_rows(&b, &target)?
                        .into_iter()
                        .map(|(key, rows)| {
                            let part = take_record_batch(&b, &rows).map_err(|e| DataError::Internal(e.to_string()))?;
                            Ok((key, part))
                        })
                        .collect::<Result<Vec<_>>>()
                });
                let Ok(groups) = groups else {
                    let _ = senders[0].send(Ok(raw)).await;
                    return;
                };
                for (key, part) in groups {
                    let owner = match owners.lock() {
                        Ok(mut owners) => {
                            let next = owners.len() % senders.len();
                            *owners.entry(key).or_insert(next)
                        }
                        Err(_) => 0,
                    };
                    if senders[owner].send(Ok(part)).await.is_err() {
                        return; // a writer stopped (an error)
                    }
                }
            }
        });
    }
    drop(senders);
    receivers.into_iter().map(|rx| channel_stream(Arc::clone(&schema), rx)).collect()
}

/// The batches arriving on `rx`, as a stream of `schema`.
fn channel_stream(
    schema: SchemaRef,
    rx: tokio::sync::mpsc::Receiver<datafusion::error::Result<RecordBatch>>,
) -> SendableRecordBatchStream {
    let batches = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, batches))
}

/// Runs `stream` on its own task, handing its batches round-robin to `lanes` streams
/// through channels of [`PIPELINE_DEPTH`], so computing and encoding overlap (memory: that
/// many batches more per lane). An error goes to the lane whose turn it is, and ends all.
pub(crate) fn pipelined(mut stream: SendableRecordBatchStream, lanes: usize) -> Vec<SendableRecordBatchStream> {
    let schema = stream.schema();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..lanes.max(1)).map(|_| tokio::sync::mpsc::channel(PIPELINE_DEPTH)).unzip();
    tokio::spawn(async move {
        let mut k = 0;
        while let Some(batch) = stream.next().await {
            let failed = batch.is_err();
            if senders[k % senders.len()].send(batch).await.is_err() || failed {
                break; // a writer stopped (an error), or the plan failed: stop computing
            }
            k += 1;
        }
    });
    receivers.into_iter().map(|rx| channel_stream(Arc::clone(&schema), rx)).collect()
}

/// The partition values of each row, grouped: one (values as text, NULL as `None`; row
/// indices) per distinct key, in order of first appearance. Rows are compared in Arrow's
/// row format; only each group's first row is rendered as text.
pub(crate) fn group_rows(batch: &RecordBatch, target: &Target) -> Result<Vec<(Vec<Option<String>>, UInt32Array)>> {
    let fail = |e: ArrowError| DataError::Internal(format!("partition values: {e}"));
    let columns: Vec<ArrayRef> = target.partition_cols.iter().map(|&i| Arc::clone(batch.column(i))).collect();
    let fields = columns.iter().map(|c| SortField::new(c.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(fail)?;
    let rows = converter.convert_columns(&columns).map_err(fail)?;
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
    for row in 0..rows.num_rows() {
        let slot = *index.entry(rows.row(row).data()).or_insert_with(|| {
            groups.push((row, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(row as u32);
    }
    let options = FormatOptions::default();
    let formatters = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(fail)?;
    Ok(groups
        .into_iter()
        .map(|(first, members)| {
            let values = columns
                .iter()
                .zip(&formatters)
                .map(|(c, f)| c.is_valid(first).then(|| f.value(first).to_string()))
                .collect();
            (values, UInt32Array::from(members))
        })
        .collect())
}

/// Hive's escaping of a partition value in a directory name; NULL is Hive's default
/// partition name.
pub(crate) fn hive_segment(column: &str, value: Option<&str>) -> String {
    const SPECIAL: &[char] = &['"', '#', '%', '\'', '*', '/', ':', '=', '?', '\\', '{', '[', ']', '^', '\x7f'];
    let Some(value) = value else { return format!("{column}=__HIVE_DEFAULT_PARTITION__") };
    let mut out = format!("{column}=");
    for c in value.chars() {
        if c.is_control() || SPECIAL.contains(&c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}
