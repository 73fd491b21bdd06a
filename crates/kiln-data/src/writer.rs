//! The dataset writer: plan output partitions -> Parquet files -> a manifest to commit.
//!
//! Each output partition of the plan is consumed by its own task, so the writer runs as
//! parallel as the plan. Memory is bounded by one open row group per partition (the
//! `max_row_group_size` of the Parquet properties) plus the object_store upload buffer;
//! nothing is collected. Files are named `part-<partition>-<seq>.parquet` inside the build's
//! private directory, rolled at `max_rows_per_file`. Files carry `created_by = "kiln"` and
//! no timestamps, so the same batches produce the same bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use kiln_artifact::{FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestTotals};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;

use crate::warehouse::Warehouse;
use crate::{DataError, Result};

/// Everything the writer needs to know about one product build.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    pub product: String,
    pub build_id: String,
    pub run_id: String,
    /// The schema of the files: the product's contract (or the plan's schema when the
    /// product declares no columns). Batches are conformed to it.
    pub schema: SchemaRef,
    pub schema_fp: String,
    pub max_rows_per_file: usize,
    pub properties: WriterProperties,
    /// 1, 2 or 3 (see the brief's determinism tiers).
    pub ordering_tier: u8,
    pub sort_keys: Vec<String>,
}

/// Live counters a caller can poll to draw progress.
#[derive(Debug, Default)]
pub struct WriteProgress {
    pub rows: AtomicU64,
    pub files: AtomicU64,
}

/// Writes every stream into the build directory of `spec` and returns the manifest to
/// commit with [`Warehouse::commit`]. Nothing is visible to readers until that commit.
pub async fn write_dataset(
    warehouse: &Warehouse,
    streams: Vec<SendableRecordBatchStream>,
    spec: Arc<WriteSpec>,
    progress: Arc<WriteProgress>,
) -> Result<Manifest> {
    let dir = Warehouse::build_dir(&spec.product, &spec.run_id);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let (wh, spec, progress, dir) = (warehouse.clone(), Arc::clone(&spec), Arc::clone(&progress), dir.clone());
            tokio::spawn(async move { write_partition(&wh, stream, i, &dir, &spec, &progress).await })
        })
        .collect();
    let mut files = Vec::new();
    for task in tasks {
        let written = task
            .await
            .map_err(|e| DataError::Config(format!("product `{}`: writer task failed: {e}", spec.product)))??;
        files.extend(written);
    }
    if files.is_empty() {
        // An empty result still gets one (empty) file so readers know its schema.
        let entry = finish_file(warehouse, open_file(warehouse, &dir, 0, 0, &spec)?, &spec).await?;
        files.push(entry);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let rows_written = files.iter().map(|f| f.rows).sum();
    let totals = ManifestTotals {
        files: files.len() as u64,
        rows_written,
        bytes: files.iter().map(|f| f.bytes).sum(),
        rows_read: rows_written,
        rows_rejected: 0,
    };
    Ok(Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        product: spec.product.clone(),
        build_id: spec.build_id.clone(),
        run_id: spec.run_id.clone(),
        build_dir: dir,
        schema_fp: spec.schema_fp.clone(),
        ordering_tier: spec.ordering_tier,
        sort_keys: spec.sort_keys.clone(),
        files,
        totals,
    })
}

struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    relative: String,
    rows: u64,
}

fn open_file(wh: &Warehouse, dir: &str, partition: usize, seq: usize, spec: &WriteSpec) -> Result<OpenFile> {
    let relative = format!("{dir}/part-{partition:05}-{seq:05}.parquet");
    let upload = BufWriter::new(Arc::clone(wh.store()), wh.path(&relative));
    let writer = AsyncArrowWriter::try_new(upload, Arc::clone(&spec.schema), Some(spec.properties.clone()))
        .map_err(DataError::parquet(format!("cannot start {relative}")))?;
    Ok(OpenFile { writer, relative, rows: 0 })
}

async fn finish_file(wh: &Warehouse, file: OpenFile, spec: &WriteSpec) -> Result<FileEntry> {
    let OpenFile { writer, relative, rows } = file;
    let meta = writer
        .close()
        .await
        .map_err(DataError::parquet(format!("product `{}`: cannot finish {relative}", spec.product)))?;
    let head =
        wh.store().head(&wh.path(&relative)).await.map_err(DataError::store(format!("cannot stat {relative}")))?;
    Ok(FileEntry { path: relative, rows, bytes: head.size, row_groups: meta.num_row_groups() as u32 })
}

async fn write_partition(
    wh: &Warehouse,
    mut stream: SendableRecordBatchStream,
    partition: usize,
    dir: &str,
    spec: &WriteSpec,
    progress: &WriteProgress,
) -> Result<Vec<FileEntry>> {
    let mut done = Vec::new();
    let mut current: Option<OpenFile> = None;
    let max = spec.max_rows_per_file.max(1);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(DataError::exec(format!("product `{}`", spec.product)))?;
        let batch = conform(batch, spec)?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let file = match current.as_mut() {
                Some(f) => f,
                None => current.insert(open_file(wh, dir, partition, done.len(), spec)?),
            };
            let take = (max - file.rows as usize).min(batch.num_rows() - offset);
            file.writer
                .write(&batch.slice(offset, take))
                .await
                .map_err(DataError::parquet(format!("product `{}`: cannot write {}", spec.product, file.relative)))?;
            file.rows += take as u64;
            offset += take;
            progress.rows.fetch_add(take as u64, Ordering::Relaxed);
            if file.rows as usize >= max
                && let Some(full) = current.take()
            {
                done.push(finish_file(wh, full, spec).await?);
                progress.files.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(last) = current.take() {
        done.push(finish_file(wh, last, spec).await?);
        progress.files.fetch_add(1, Ordering::Relaxed);
    }
    Ok(done)
}

/// Conforms a batch to the product schema: casts between physical encodings of the same
/// logical type (e.g. Utf8 -> Utf8View) and enforces NOT NULL on the data. This is the
/// write-time half of the contract gate for nullability.
pub fn conform(batch: RecordBatch, spec: &WriteSpec) -> Result<RecordBatch> {
    let target = &spec.schema;
    if batch.schema().fields() == target.fields() {
        return RecordBatch::try_new(Arc::clone(target), batch.columns().to_vec())
            .map_err(|e| DataError::Config(format!("product `{}`: {e}", spec.product)));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for (field, column) in target.fields().iter().zip(batch.columns()) {
        let column = if column.data_type() == field.data_type() {
            Arc::clone(column)
        } else {
            cast(column, field.data_type()).map_err(|e| DataError::Conform {
                product: spec.product.clone(),
                column: field.name().clone(),
                from: column.data_type().to_string(),
                to: field.data_type().to_string(),
                reason: e.to_string(),
            })?
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(DataError::NullInNotNull {
                product: spec.product.clone(),
                column: field.name().clone(),
                nulls: column.null_count(),
            });
        }
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(target), columns)
        .map_err(|e| DataError::Config(format!("product `{}`: {e}", spec.product)))
}
