//! The dataset writer: plan output partitions -> Parquet files -> a manifest to commit.
//!
//! Each output partition of the plan is consumed by its own task, so the writer runs as
//! parallel as the plan. Memory is bounded by one open row group per partition (the
//! `max_row_group_size` of the Parquet properties) plus the object_store upload buffer;
//! nothing is collected. Files are named `part-<partition>-<seq>.parquet` inside the build's
//! private directory, rolled at `max_rows_per_file`. Files carry `created_by = "kiln"` and
//! no timestamps, so the same batches produce the same bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, make_comparator};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use kiln_artifact::{ColumnStats, FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestTotals};
use kiln_contracts::EvolutionPolicy;
use kiln_contracts::compat::{CheckOptions, check};
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
    /// Tier 3: the (column, ascending) keys every partition's rows must follow (NULLs last
    /// ascending, first descending, as the canonical sort puts them), checked row by row
    /// while writing and across partitions in file order.
    pub verify_order: Vec<(String, bool)>,
    /// Read every written file's footer back and check its schema (ARROW:schema round
    /// trip included) against `schema` before returning: the write-time contract gate.
    pub verify_contract: bool,
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
    let order = OrderCheck::keys(&spec)?;
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let (wh, spec, progress, dir) = (warehouse.clone(), Arc::clone(&spec), Arc::clone(&progress), dir.clone());
            let order = order.clone();
            tokio::spawn(async move { write_partition(&wh, stream, i, &dir, &spec, order, &progress).await })
        })
        .collect();
    let mut files = Vec::new();
    let mut previous: Option<(RecordBatch, String)> = None;
    for task in tasks {
        let (written, bounds) = task
            .await
            .map_err(|e| DataError::Config(format!("product `{}`: writer task failed: {e}", spec.product)))??;
        // Files are read in path order, so partition p's first row follows p-1's last.
        if let (Some(keys), Some((first, last))) = (&order, bounds) {
            if let Some((before, file)) = &previous {
                keys.check_pair(before, &first, &spec, written.first().map_or(file.as_str(), |f| f.path.as_str()))?;
            }
            previous = Some((last, written.last().map(|f| f.path.clone()).unwrap_or_default()));
        }
        files.extend(written);
    }
    if files.is_empty() {
        // An empty result still gets one (empty) file so readers know its schema.
        let entry = finish_file(warehouse, open_file(warehouse, &dir, 0, 0, &spec)?, &spec).await?;
        files.push(entry);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if spec.verify_contract {
        verify_files(warehouse, &files, &spec).await?;
    }
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
        fingerprints: None,
        content: None,
    })
}

/// The write-time contract gate: the schema a reader would get from each file (its
/// footer, read back through object_store) must satisfy the contract exactly, nullability
/// included. Runs before the manifest exists, so a failure commits nothing.
async fn verify_files(wh: &Warehouse, files: &[FileEntry], spec: &WriteSpec) -> Result<()> {
    let options = CheckOptions { policy: EvolutionPolicy::Strict, nullability_is_proven: true };
    for file in files {
        let schema = read_back_schema(wh, file)
            .await
            .map_err(DataError::parquet(format!("product `{}`: cannot read back {}", spec.product, file.path)))?;
        let verdict = check(&schema, &spec.schema, options);
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

/// The Arrow schema a reader derives from a file's footer: fetch the file's tail through
/// object_store (more if the footer is larger), decode the metadata, apply ARROW:schema.
async fn read_back_schema(wh: &Warehouse, file: &FileEntry) -> Result<Schema, ParquetError> {
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
    let metadata = reader.finish()?;
    let file_metadata = metadata.file_metadata();
    parquet_to_arrow_schema(file_metadata.schema_descr(), file_metadata.key_value_metadata())
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
    let path = wh.path(&relative);
    let head = wh.store().head(&path).await.map_err(DataError::store(format!("cannot stat {relative}")))?;
    // The footer's length is the 4 bytes before the closing magic.
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
        footer_bytes,
        columns: column_stats(&meta, &spec.schema),
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
            let values = values?;
            let compare = make_comparator(values.as_ref(), values.as_ref(), SortOptions::default()).ok()?;
            let best = (0..values.len())
                .filter(|&i| values.is_valid(i))
                .reduce(|a, b| if compare(b, a) == want { b } else { a })?;
            let formatter = ArrayFormatter::try_new(values.as_ref(), &options).ok()?;
            Some(formatter.value(best).to_string())
        };
        let min = extreme(converter.row_group_mins(meta.row_groups().iter()).ok(), std::cmp::Ordering::Less);
        let max = extreme(converter.row_group_maxes(meta.row_groups().iter()).ok(), std::cmp::Ordering::Greater);
        out.insert(field.name().clone(), ColumnStats { nulls, min, max });
    }
    out
}

/// The tier-3 order check: the sort key columns as comparable rows.
#[derive(Debug, Clone)]
struct OrderCheck {
    columns: Vec<usize>,
    fields: Vec<SortField>,
    described: String,
}

impl OrderCheck {
    fn keys(spec: &WriteSpec) -> Result<Option<Self>> {
        if spec.verify_order.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (name, asc) in &spec.verify_order {
            let (i, field) = spec.schema.column_with_name(name).ok_or_else(|| {
                DataError::Config(format!("product `{}`: ORDER BY column `{name}` is not in the schema", spec.product))
            })?;
            columns.push(i);
            let options = SortOptions { descending: !asc, nulls_first: !asc };
            fields.push(SortField::new_with_options(field.data_type().clone(), options));
        }
        Ok(Some(Self { columns, fields, described: spec.sort_keys.join(", ") }))
    }

    fn converter(&self) -> Result<RowConverter> {
        RowConverter::new(self.fields.clone()).map_err(|e| DataError::Config(format!("order check: {e}")))
    }

    fn rows(&self, converter: &RowConverter, batch: &RecordBatch) -> Result<Rows> {
        let columns: Vec<ArrayRef> = self.columns.iter().map(|&i| Arc::clone(batch.column(i))).collect();
        converter.convert_columns(&columns).map_err(|e| DataError::Config(format!("order check: {e}")))
    }

    fn broken(&self, spec: &WriteSpec, file: &str, row: u64) -> DataError {
        DataError::OrderBroken {
            product: spec.product.clone(),
            file: file.to_owned(),
            row,
            keys: self.described.clone(),
        }
    }

    /// `later`'s first row must not sort before `earlier`'s last row (1-row batches).
    fn check_pair(&self, earlier: &RecordBatch, later: &RecordBatch, spec: &WriteSpec, file: &str) -> Result<()> {
        let converter = self.converter()?;
        let (a, b) = (self.rows(&converter, earlier)?, self.rows(&converter, later)?);
        if a.num_rows() > 0 && b.num_rows() > 0 && a.row(a.num_rows() - 1) > b.row(0) {
            return Err(self.broken(spec, file, 0));
        }
        Ok(())
    }
}

/// The running state of one partition's order check.
struct OrderState {
    keys: OrderCheck,
    converter: RowConverter,
    last: Option<OwnedRow>,
    first_batch: Option<RecordBatch>,
    last_batch: Option<RecordBatch>,
}

impl OrderState {
    /// Checks `batch` (whose first row is row `at` of `file`) against itself and the rows
    /// before it.
    fn check(&mut self, batch: &RecordBatch, spec: &WriteSpec, file: &str, at: u64) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let rows = self.keys.rows(&self.converter, batch)?;
        if let Some(last) = &self.last
            && last.row() > rows.row(0)
        {
            return Err(self.keys.broken(spec, file, at));
        }
        for i in 1..n {
            if rows.row(i - 1) > rows.row(i) {
                return Err(self.keys.broken(spec, file, at + i as u64));
            }
        }
        self.last = Some(rows.row(n - 1).owned());
        if self.first_batch.is_none() {
            self.first_batch = Some(batch.slice(0, 1));
        }
        self.last_batch = Some(batch.slice(n - 1, 1));
        Ok(())
    }
}

/// A partition's files and, under an order check, its first and last rows.
type Written = (Vec<FileEntry>, Option<(RecordBatch, RecordBatch)>);

async fn write_partition(
    wh: &Warehouse,
    mut stream: SendableRecordBatchStream,
    partition: usize,
    dir: &str,
    spec: &WriteSpec,
    order: Option<OrderCheck>,
    progress: &WriteProgress,
) -> Result<Written> {
    let mut done = Vec::new();
    let mut current: Option<OpenFile> = None;
    let mut order = match order {
        Some(keys) => {
            let converter = keys.converter()?;
            Some(OrderState { keys, converter, last: None, first_batch: None, last_batch: None })
        }
        None => None,
    };
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
            let slice = batch.slice(offset, take);
            if let Some(order) = order.as_mut() {
                order.check(&slice, spec, &file.relative, file.rows)?;
            }
            file.writer
                .write(&slice)
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
    let bounds = order.and_then(|o| o.first_batch.zip(o.last_batch));
    Ok((done, bounds))
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;

    fn schema(nullable: bool) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, nullable)]))
    }

    fn spec(schema: SchemaRef, max_rows_per_file: usize) -> WriteSpec {
        WriteSpec {
            product: "p".into(),
            build_id: "b".into(),
            run_id: "r".into(),
            schema_fp: kiln_contracts::schema_fingerprint(&schema),
            schema,
            max_rows_per_file,
            properties: WriterProperties::builder().set_created_by("kiln".into()).build(),
            ordering_tier: 2,
            sort_keys: vec![],
            verify_order: vec![],
            verify_contract: true,
        }
    }

    fn stream(values: Vec<Option<i64>>, chunk: usize) -> SendableRecordBatchStream {
        let schema = schema(true);
        let batches: Vec<_> = values
            .chunks(chunk)
            .map(|c| {
                Ok(RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(c.to_vec()))]).unwrap())
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches)))
    }

    #[tokio::test]
    async fn rolls_files_per_partition_and_accounts_every_row() {
        let wh = Warehouse::memory();
        let streams = vec![stream((0..2500).map(Some).collect(), 300), stream((0..700).map(Some).collect(), 700)];
        let m = write_dataset(&wh, streams, Arc::new(spec(schema(false), 1000)), Arc::default()).await.unwrap();
        let layout: Vec<(String, u64)> = m.files.iter().map(|f| (f.path.clone(), f.rows)).collect();
        assert_eq!(
            layout,
            [
                ("p/builds/r/part-00000-00000.parquet".to_owned(), 1000),
                ("p/builds/r/part-00000-00001.parquet".to_owned(), 1000),
                ("p/builds/r/part-00000-00002.parquet".to_owned(), 500),
                ("p/builds/r/part-00001-00000.parquet".to_owned(), 700),
            ]
        );
        assert_eq!((m.totals.rows_written, m.totals.rows_read, m.totals.files), (3200, 3200, 4));
        assert!(wh.current("p").await.unwrap().is_none(), "nothing is visible before commit");
        wh.commit(&m).await.unwrap();
        assert_eq!(wh.current("p").await.unwrap().unwrap(), m);
    }

    #[tokio::test]
    async fn manifests_carry_column_statistics_and_footer_sizes() {
        let wh = Warehouse::memory();
        let values: Vec<Option<i64>> = (0..2500).map(|v| (v % 7 != 0).then_some(v - 100)).collect();
        let m =
            write_dataset(&wh, vec![stream(values.clone(), 300)], Arc::new(spec(schema(true), 1000)), Arc::default())
                .await
                .unwrap();
        // Per file, computed here from the values each file holds.
        for (k, file) in m.files.iter().enumerate() {
            let held: Vec<Option<i64>> = values[k * 1000..((k + 1) * 1000).min(2500)].to_vec();
            let present: Vec<i64> = held.iter().flatten().copied().collect();
            let want = ColumnStats {
                nulls: held.iter().filter(|v| v.is_none()).count() as u64,
                min: present.iter().min().map(ToString::to_string),
                max: present.iter().max().map(ToString::to_string),
            };
            assert_eq!(file.columns["v"], want, "{}", file.path);
            let size = file.bytes;
            let tail = wh.store().get_range(&wh.path(&file.path), size - 8..size).await.unwrap();
            assert_eq!(&tail[4..], b"PAR1");
            assert!(file.footer_bytes > 0 && file.footer_bytes < size, "{}", file.footer_bytes);
        }
    }

    fn tier3(mut s: WriteSpec) -> WriteSpec {
        s.ordering_tier = 3;
        s.sort_keys = vec!["v ASC".into()];
        s.verify_order = vec![("v".into(), true)];
        s
    }

    #[tokio::test]
    async fn tier_three_verifies_the_order_in_and_across_partitions() {
        let wh = Warehouse::memory();
        // Sorted, NULLs last, across batches and files: accepted.
        let mut sorted: Vec<Option<i64>> = (0..900).map(Some).collect();
        sorted.extend([None, None]);
        write_dataset(&wh, vec![stream(sorted, 250)], Arc::new(tier3(spec(schema(true), 400))), Arc::default())
            .await
            .unwrap();
        // One row out of order in the second batch: the row is named.
        let mut bad: Vec<Option<i64>> = (0..20).map(Some).collect();
        bad.swap(13, 14);
        let e = write_dataset(&wh, vec![stream(bad, 10)], Arc::new(tier3(spec(schema(true), 100))), Arc::default())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "product `p`: p/builds/r/part-00000-00000.parquet: row 14 breaks the ORDER BY (v ASC) of ordering tier 3"
        );
        // Each partition sorted, but the second starts below the first's end.
        let streams = vec![stream((0..10).map(Some).collect(), 5), stream((5..15).map(Some).collect(), 5)];
        let e =
            write_dataset(&wh, streams, Arc::new(tier3(spec(schema(true), 100))), Arc::default()).await.unwrap_err();
        assert!(e.to_string().contains("part-00001-00000.parquet: row 0 breaks the ORDER BY"), "{e}");
    }

    #[tokio::test]
    async fn not_null_is_enforced_on_the_data() {
        let wh = Warehouse::memory();
        let err = write_dataset(
            &wh,
            vec![stream(vec![Some(1), None, None], 3)],
            Arc::new(spec(schema(false), 10)),
            Arc::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "product `p`: column `v` is declared NOT NULL but the query produced 2 NULL value(s)"
        );
    }

    #[tokio::test]
    async fn read_back_gate_compares_the_footer_schema_with_the_contract() {
        let wh = Warehouse::memory();
        let written =
            write_dataset(&wh, vec![stream(vec![Some(1), None], 2)], Arc::new(spec(schema(true), 10)), Arc::default())
                .await
                .unwrap();
        let stricter = spec(schema(false), 10);
        let err = verify_files(&wh, &written.files, &stricter).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "product `p`: p/builds/r/part-00000-00000.parquet breaks the declared columns:\n  - v: nullable where NOT NULL was promised"
        );
        verify_files(&wh, &written.files, &spec(schema(true), 10)).await.unwrap();
    }
}
