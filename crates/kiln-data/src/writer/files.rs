//! One data file's life (opened, finished with its footer size and column statistics),
//! and what the writer checks and writes once every file is done: footers read back
//! through object_store and compared with the contract, and the `_metadata` sidecars.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use kiln_artifact::{ColumnStats, FileEntry};
use kiln_contracts::EvolutionPolicy;
use kiln_contracts::compat::{CheckOptions, check};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;

use super::spec::WriteSpec;
use crate::warehouse::Warehouse;
use crate::{DataError, Result};

/// Every written file's footer, read back through object_store (what a reader sees).
pub(crate) async fn read_footers(
    wh: &Warehouse,
    files: &[FileEntry],
    spec: &WriteSpec,
) -> Result<Vec<ParquetMetaData>> {
    let mut footers = Vec::with_capacity(files.len());
    for file in files {
        let metadata = read_back_metadata(wh, file)
            .await
            .map_err(DataError::parquet(format!("product `{}`: cannot read back {}", spec.product, file.path)))?;
        footers.push(metadata);
    }
    Ok(footers)
}

/// The write-time contract gate: the schema a reader would get from each file (its
/// footer, ARROW:schema applied) must satisfy the contract exactly, nullability
/// included. Runs before the manifest exists, so a failure commits nothing.
pub(crate) fn verify_files(
    files: &[FileEntry],
    footers: &[ParquetMetaData],
    spec: &WriteSpec,
    file_schema: &Schema,
) -> Result<()> {
    let options = CheckOptions { policy: EvolutionPolicy::Strict, nullability_is_proven: true };
    for (file, footer) in files.iter().zip(footers) {
        let file_metadata = footer.file_metadata();
        let schema = parquet_to_arrow_schema(file_metadata.schema_descr(), file_metadata.key_value_metadata())
            .map_err(DataError::parquet(format!("product `{}`: cannot read back {}", spec.product, file.path)))?;
        let verdict = check(&schema, file_schema, options);
        if !verdict.is_ok() {
            return Err(DataError::ContractBroken {
                product: spec.product.clone(),
                file: file.path.clone(),
                violations: verdict.violations.iter().map(ToString::to_string).collect(),
            });
        }
    }
    Ok(())
}

/// Above this many row groups in a build, no `_metadata` sidecar is written (its size
/// grows with row groups × columns, and every reader that opens it loads all of it).
pub const SIDECAR_MAX_ROW_GROUPS: usize = 10_000;

/// Writes `_common_metadata` (the schema, no row groups) and `_metadata` (every file's row
/// groups, each column chunk pointing at its file relative to the build directory) into
/// the build directory, as Dask, Spark and PyArrow's `parquet_dataset` read them.
/// Returns the sidecars written (`_metadata` is left out above
/// [`SIDECAR_MAX_ROW_GROUPS`]).
pub(crate) async fn write_sidecars(
    wh: &Warehouse,
    dir: &str,
    files: &[FileEntry],
    footers: &[ParquetMetaData],
    spec: &WriteSpec,
) -> Result<Vec<String>> {
    use datafusion::parquet::file::metadata::{FileMetaData, ParquetMetaDataBuilder, ParquetMetaDataWriter};
    let Some(first) = footers.first() else { return Ok(Vec::new()) };
    let fail = |what: &str| DataError::parquet(format!("product `{}`: writing {what}", spec.product));
    let meta = first.file_metadata();
    let file_metadata = |rows: i64| {
        FileMetaData::new(
            meta.version(),
            rows,
            meta.created_by().map(str::to_owned),
            meta.key_value_metadata().cloned(),
            meta.schema_descr_ptr(),
            meta.column_orders().cloned(),
        )
    };
    let encode = |metadata: &ParquetMetaData, what: &str| -> Result<Vec<u8>> {
        let mut bytes = b"PAR1".to_vec();
        ParquetMetaDataWriter::new(&mut bytes, metadata).finish().map_err(fail(what))?;
        Ok(bytes)
    };
    let mut written = Vec::new();
    let common = ParquetMetaDataBuilder::new(file_metadata(0)).build();
    let path = format!("{dir}/_common_metadata");
    wh.store()
        .put(&wh.path(&path), encode(&common, "_common_metadata")?.into())
        .await
        .map_err(DataError::store(format!("cannot write {path}")))?;
    written.push(path);
    let row_groups: usize = footers.iter().map(ParquetMetaData::num_row_groups).sum();
    if row_groups <= SIDECAR_MAX_ROW_GROUPS {
        let rows = files.iter().map(|f| f.rows as i64).sum();
        let mut builder = ParquetMetaDataBuilder::new(file_metadata(rows));
        for (file, footer) in files.iter().zip(footers) {
            let relative = file.path.strip_prefix(&format!("{dir}/")).unwrap_or(&file.path).to_owned();
            for group in footer.row_groups() {
                let columns = group
                    .columns()
                    .iter()
                    .map(|c| c.clone().into_builder().set_file_path(relative.clone()).build())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(fail("_metadata"))?;
                builder = builder.add_row_group(
                    group.clone().into_builder().set_column_metadata(columns).build().map_err(fail("_metadata"))?,
                );
            }
        }
        let path = format!("{dir}/_metadata");
        let bytes = encode(&builder.build(), "_metadata")?;
        wh.store()
            .put(&wh.path(&path), bytes.into())
            .await
            .map_err(DataError::store(format!("cannot write {path}")))?;
        written.push(path);
    }
    Ok(written)
}

/// A file's footer metadata, read back through object_store: the file's tail (more if
/// the footer is larger), decoded.
pub(crate) async fn read_back_metadata(wh: &Warehouse, file: &FileEntry) -> Result<ParquetMetaData, ParquetError> {
    let path = wh.path(&file.path);
    let size = file.bytes;
    let fetch = |from: u64| {
        let (store, path) = (Arc::clone(wh.store()), path.clone());
        async move { store.get_range(&path, from..size).await.map_err(|e| ParquetError::External(Box::new(e))) }
    };
    let mut reader = ParquetMetaDataReader::new();
    let tail = fetch(size.saturating_sub(64 * 1024)).await?;
    match reader.try_parse_sized(&tail, size) {
        Ok(()) => {}
        Err(ParquetError::NeedMoreData(needed)) => {
            let tail = fetch(size.saturating_sub(needed as u64)).await?;
            reader.try_parse_sized(&tail, size)?;
        }
        Err(e) => return Err(e),
    }
    reader.finish()
}

/// Rows reach the Parquet writer in chunks of this many, on a grid from the file's first
/// row. The writer cuts pages where its mini-batches of each `write` end, so handing it the
/// plan's batches as they come made a file's bytes depend on `batch_size`, the number of
/// partitions, memory pressure and product concurrency; on the grid they depend only on the
/// file's rows and the write options (tested in kiln-cli's example tests). A multiple of
/// the writer's default mini-batch (1,024 rows).
pub(crate) const WRITE_CHUNK_ROWS: usize = 8192;

/// A data file being written.
pub(crate) struct OpenFile {
    pub(crate) writer: AsyncArrowWriter<BufWriter>,
    pub(crate) relative: String,
    /// Rows given to [`OpenFile::write`], including those still pending.
    pub(crate) rows: u64,
    /// The start of the next chunk, when fewer than [`WRITE_CHUNK_ROWS`] rows have come.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl OpenFile {
    /// Writes `batch` on the chunk grid (slices of it when it holds whole chunks, one
    /// concatenation for a chunk that straddles batches).
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> std::result::Result<(), ParquetError> {
        let mut offset = 0;
        let n = batch.num_rows();
        if self.pending_rows > 0 {
            let head = (WRITE_CHUNK_ROWS - self.pending_rows).min(n);
            self.pending.push(batch.slice(0, head));
            self.pending_rows += head;
            offset = head;
            if self.pending_rows < WRITE_CHUNK_ROWS {
                self.rows += n as u64;
                return Ok(());
            }
            self.flush().await?;
        }
        while n - offset >= WRITE_CHUNK_ROWS {
            self.writer.write(&batch.slice(offset, WRITE_CHUNK_ROWS)).await?;
            offset += WRITE_CHUNK_ROWS;
        }
        if offset < n {
            self.pending.push(batch.slice(offset, n - offset));
            self.pending_rows = n - offset;
        }
        self.rows += n as u64;
        Ok(())
    }

    /// Writes the pending rows (a whole chunk, or the file's last rows).
    async fn flush(&mut self) -> std::result::Result<(), ParquetError> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        match pending.as_slice() {
            [] => Ok(()),
            [one] => self.writer.write(one).await,
            [first, ..] => {
                let chunk = datafusion::arrow::compute::concat_batches(&first.schema(), &pending)?;
                self.writer.write(&chunk).await
            }
        }
    }
}

pub(crate) fn open_file(
    wh: &Warehouse,
    dir: &str,
    partition: usize,
    seq: usize,
    schema: &SchemaRef,
    spec: &WriteSpec,
) -> Result<OpenFile> {
    let relative = format!("{dir}/{}.parquet", spec.file_name(partition, seq));
    let upload = BufWriter::new(Arc::clone(wh.store()), wh.path(&relative));
    let writer = AsyncArrowWriter::try_new(upload, Arc::clone(schema), Some(spec.properties.clone()))
        .map_err(DataError::parquet(format!("cannot start {relative}")))?;
    Ok(OpenFile { writer, relative, rows: 0, pending: Vec::new(), pending_rows: 0 })
}

pub(crate) async fn finish_file(
    wh: &Warehouse,
    file: OpenFile,
    partition: Vec<Option<String>>,
    schema: &Schema,
    spec: &WriteSpec,
) -> Result<FileEntry> {
    let mut file = file;
    let finishing = format!("product `{}`: cannot finish {}", spec.product, file.relative);
    file.flush().await.map_err(DataError::parquet(finishing.clone()))?;
    let OpenFile { writer, relative, rows, .. } = file;
    let meta = writer.close().await.map_err(DataError::parquet(finishing))?;
    let path = wh.path(&relative);
    crate::failpoint("after_file");
    let head = wh.store().head(&path).await.map_err(DataError::store(format!("cannot stat {relative}")))?;
    // The footer's length is the 4 bytes before the closing magic (page indexes sit
    // before the footer, so the writer's byte count alone cannot give it).
    let tail = wh
        .store()
        .get_range(&path, head.size.saturating_sub(8)..head.size)
        .await
        .map_err(DataError::store(format!("cannot read the footer of {relative}")))?;
    let footer_bytes = tail.get(..4).map_or(0, |b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    Ok(FileEntry {
        path: relative,
        rows,
        bytes: head.size,
        row_groups: meta.num_row_groups() as u32,
        partition,
        footer_bytes,
        columns: column_stats(&meta, schema),
        delta_stats: Some(super::stats::delta_stats(&meta, schema, rows)),
    })
}

/// Per top-level column: NULL count and min/max over the row groups' statistics, as text.
fn column_stats(meta: &ParquetMetaData, schema: &Schema) -> BTreeMap<String, ColumnStats> {
    let options = FormatOptions::default();
    let parquet_schema = meta.file_metadata().schema_descr();
    let mut out = BTreeMap::new();
    for field in schema.fields() {
        let Ok(converter) = StatisticsConverter::try_new(field.name(), schema, parquet_schema) else { continue };
        let nulls = converter.row_group_null_counts(meta.row_groups().iter()).map_or(0, |n| n.iter().flatten().sum());
        let extreme = |values: Option<ArrayRef>, want: std::cmp::Ordering| -> Option<String> {
            let (values, best) = super::stats::extreme(&values?, want)?;
            let formatter = ArrayFormatter::try_new(values.as_ref(), &options).ok()?;
            Some(formatter.value(best).to_string())
        };
        let min = extreme(converter.row_group_mins(meta.row_groups().iter()).ok(), std::cmp::Ordering::Less);
        let max = extreme(converter.row_group_maxes(meta.row_groups().iter()).ok(), std::cmp::Ordering::Greater);
        out.insert(field.name().clone(), ColumnStats { nulls, min, max });
    }
    out
}
